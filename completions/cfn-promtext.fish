complete -c cfn-promtext -s o -l output -d 'Write to FILE atomically (temp file in the same directory, fsync, rename)' -r -F
complete -c cfn-promtext -l prefix -d 'Prefix of every metric name' -r
complete -c cfn-promtext -l mode -d 'File mode of the -o file (octal); node_exporter usually runs as another user' -r
complete -c cfn-promtext -l base-units -d 'Convert milliseconds to seconds and kb/mb to bytes, with the _seconds/_bytes suffix'
complete -c cfn-promtext -l strict -d 'Stop at the first malformed input line (exit 65) instead of skipping it'
complete -c cfn-promtext -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cfn-promtext -s V -l version -d 'Print version'
