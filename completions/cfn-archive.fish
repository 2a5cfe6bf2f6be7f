# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_cfn_archive_global_optspecs
    string join \n dir= archive-dir= dry-run json now= h/help V/version
end

function __fish_cfn_archive_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_cfn_archive_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_cfn_archive_using_subcommand
    set -l cmd (__fish_cfn_archive_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -l dir -d 'Hot shard directory instead of $CFN_METRICS_DIR' -r -F
complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -l archive-dir -d 'Archive directory instead of $CFN_ARCHIVE_DIR' -r -F
complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -l now -d 'The time to act as of (default: now): a duration back from now (1h) or RFC 3339' -r
complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -l dry-run -d 'Say what would be done; change nothing'
complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -l json -d 'Print the summary as JSON'
complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -s V -l version -d 'Print version'
complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -f -a "sync" -d 'Copy records appended to the hot shards since the last sync into the archive'
complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -f -a "trim" -d 'Remove from the hot shards records older than --hot that are already archived'
complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -f -a "rotate" -d 'Gzip the archive files of finished UTC days'
complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -f -a "prune" -d 'Delete archive files whose day is older than --keep (after uploading them, with --upload or --exec)'
complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -f -a "run" -d 'sync, trim, rotate and prune, in that order (one timer entry)'
complete -c cfn-archive -n "__fish_cfn_archive_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand sync" -l dir -d 'Hot shard directory instead of $CFN_METRICS_DIR' -r -F
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand sync" -l archive-dir -d 'Archive directory instead of $CFN_ARCHIVE_DIR' -r -F
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand sync" -l now -d 'The time to act as of (default: now): a duration back from now (1h) or RFC 3339' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand sync" -l rebuild-state -d 'Rebuild a lost or corrupt state file from the archive and the hot shards'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand sync" -l dry-run -d 'Say what would be done; change nothing'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand sync" -l json -d 'Print the summary as JSON'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand sync" -s h -l help -d 'Print help'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand trim" -l hot -d 'Keep the records of this last span in the hot shards (older ones go once they are archived)' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand trim" -l trim-grace -d 'Leave records synced less than this ago (real time, not --now) in the hot shards, however old their timestamps, so followers (cfn-serve, cfn-cat --follow, cfn-top) read a replayed record before the trim moves it to the archive. 0 trims at once' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand trim" -l dir -d 'Hot shard directory instead of $CFN_METRICS_DIR' -r -F
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand trim" -l archive-dir -d 'Archive directory instead of $CFN_ARCHIVE_DIR' -r -F
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand trim" -l now -d 'The time to act as of (default: now): a duration back from now (1h) or RFC 3339' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand trim" -l dry-run -d 'Say what would be done; change nothing'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand trim" -l json -d 'Print the summary as JSON'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand trim" -s h -l help -d 'Print help'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l upload -d 'Cold storage at s3://BUCKET/PREFIX/host=HOST/dt=YYYY-MM-DD/ (HOST is $CFN_HOST, else the host name; a {host} in the URL puts host=HOST there instead). prune uploads each file it is about to delete (rotating a plain one first), verifies and records the copy, and only then deletes the file; rotate uploads only with --upload-on-rotate. Each object is named for its content, so late records for a day already uploaded go up as another object beside the first, never over it. Credentials and region as the AWS CLI reads them' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l cold-layout -d 'Where below the prefix each host\'s objects go: hive (host=HOST/dt=YYYY-MM-DD/, which DuckDB, Athena, Trino and Spark prune by) or host (HOST/, the previous layout). Objects of either layout are recognised, so no day goes up twice across a change' -r -f -a "hive\t''
host\t''"
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l exec -d 'Instead of S3: run PROGRAM [ARG]... with the file\'s path as the last argument (no shell); exit 0 means it is safe to delete. End the arguments with \';\'' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l endpoint -d 'The S3 endpoint for this run (MinIO, Ceph, R2, Garage; path-style addressing), instead of $AWS_ENDPOINT_URL' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l multipart-threshold -d 'Files larger than this are uploaded in parts (bytes; K, M, G, KiB, MiB, GiB)' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l part-size -d 'Size of each part of a multipart upload (at least 5MiB, as S3 requires)' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l upload-threads -d 'Parts of a multipart upload in flight at once (memory: about two parts more than this). 0: as many as a sixteenth of the available memory holds, from 2 to 8' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l http-timeout -d 'Timeout of each HTTP request (default: 10s for cfn-alert, 15s for cfn-push, 60s for S3 in cfn-archive and cfn-cat, where it is the longest silence: a long body that keeps coming is never cut)' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l retries -d 'Retries after a 408, 429, 5xx or network error' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l dir -d 'Hot shard directory instead of $CFN_METRICS_DIR' -r -F
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l archive-dir -d 'Archive directory instead of $CFN_ARCHIVE_DIR' -r -F
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l now -d 'The time to act as of (default: now): a duration back from now (1h) or RFC 3339' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l upload-on-rotate -d 'Also upload each day\'s .gz as soon as rotate makes it (the cold copy is a day behind)'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l dry-run -d 'Say what would be done; change nothing'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -l json -d 'Print the summary as JSON'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand rotate" -s h -l help -d 'Print help'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l keep -d 'Keep archive files of days younger than this; older ones are deleted (uploaded first with --upload or --exec)' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l upload -d 'Cold storage at s3://BUCKET/PREFIX/host=HOST/dt=YYYY-MM-DD/ (HOST is $CFN_HOST, else the host name; a {host} in the URL puts host=HOST there instead). prune uploads each file it is about to delete (rotating a plain one first), verifies and records the copy, and only then deletes the file; rotate uploads only with --upload-on-rotate. Each object is named for its content, so late records for a day already uploaded go up as another object beside the first, never over it. Credentials and region as the AWS CLI reads them' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l cold-layout -d 'Where below the prefix each host\'s objects go: hive (host=HOST/dt=YYYY-MM-DD/, which DuckDB, Athena, Trino and Spark prune by) or host (HOST/, the previous layout). Objects of either layout are recognised, so no day goes up twice across a change' -r -f -a "hive\t''
host\t''"
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l exec -d 'Instead of S3: run PROGRAM [ARG]... with the file\'s path as the last argument (no shell); exit 0 means it is safe to delete. End the arguments with \';\'' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l endpoint -d 'The S3 endpoint for this run (MinIO, Ceph, R2, Garage; path-style addressing), instead of $AWS_ENDPOINT_URL' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l multipart-threshold -d 'Files larger than this are uploaded in parts (bytes; K, M, G, KiB, MiB, GiB)' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l part-size -d 'Size of each part of a multipart upload (at least 5MiB, as S3 requires)' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l upload-threads -d 'Parts of a multipart upload in flight at once (memory: about two parts more than this). 0: as many as a sixteenth of the available memory holds, from 2 to 8' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l http-timeout -d 'Timeout of each HTTP request (default: 10s for cfn-alert, 15s for cfn-push, 60s for S3 in cfn-archive and cfn-cat, where it is the longest silence: a long body that keeps coming is never cut)' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l retries -d 'Retries after a 408, 429, 5xx or network error' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l dir -d 'Hot shard directory instead of $CFN_METRICS_DIR' -r -F
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l archive-dir -d 'Archive directory instead of $CFN_ARCHIVE_DIR' -r -F
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l now -d 'The time to act as of (default: now): a duration back from now (1h) or RFC 3339' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l upload-on-rotate -d 'Also upload each day\'s .gz as soon as rotate makes it (the cold copy is a day behind)'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l dry-run -d 'Say what would be done; change nothing'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -l json -d 'Print the summary as JSON'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand prune" -s h -l help -d 'Print help'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l hot -d 'As trim\'s --hot: the span kept in the hot shards' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l trim-grace -d 'Leave records synced less than this ago (real time, not --now) in the hot shards, however old their timestamps, so followers (cfn-serve, cfn-cat --follow, cfn-top) read a replayed record before the trim moves it to the archive. 0 trims at once' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l keep -d 'As prune\'s --keep: the retention of the archive on disk' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l upload -d 'Cold storage at s3://BUCKET/PREFIX/host=HOST/dt=YYYY-MM-DD/ (HOST is $CFN_HOST, else the host name; a {host} in the URL puts host=HOST there instead). prune uploads each file it is about to delete (rotating a plain one first), verifies and records the copy, and only then deletes the file; rotate uploads only with --upload-on-rotate. Each object is named for its content, so late records for a day already uploaded go up as another object beside the first, never over it. Credentials and region as the AWS CLI reads them' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l cold-layout -d 'Where below the prefix each host\'s objects go: hive (host=HOST/dt=YYYY-MM-DD/, which DuckDB, Athena, Trino and Spark prune by) or host (HOST/, the previous layout). Objects of either layout are recognised, so no day goes up twice across a change' -r -f -a "hive\t''
host\t''"
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l exec -d 'Instead of S3: run PROGRAM [ARG]... with the file\'s path as the last argument (no shell); exit 0 means it is safe to delete. End the arguments with \';\'' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l endpoint -d 'The S3 endpoint for this run (MinIO, Ceph, R2, Garage; path-style addressing), instead of $AWS_ENDPOINT_URL' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l multipart-threshold -d 'Files larger than this are uploaded in parts (bytes; K, M, G, KiB, MiB, GiB)' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l part-size -d 'Size of each part of a multipart upload (at least 5MiB, as S3 requires)' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l upload-threads -d 'Parts of a multipart upload in flight at once (memory: about two parts more than this). 0: as many as a sixteenth of the available memory holds, from 2 to 8' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l http-timeout -d 'Timeout of each HTTP request (default: 10s for cfn-alert, 15s for cfn-push, 60s for S3 in cfn-archive and cfn-cat, where it is the longest silence: a long body that keeps coming is never cut)' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l retries -d 'Retries after a 408, 429, 5xx or network error' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l dir -d 'Hot shard directory instead of $CFN_METRICS_DIR' -r -F
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l archive-dir -d 'Archive directory instead of $CFN_ARCHIVE_DIR' -r -F
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l now -d 'The time to act as of (default: now): a duration back from now (1h) or RFC 3339' -r
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l upload-on-rotate -d 'Also upload each day\'s .gz as soon as rotate makes it (the cold copy is a day behind)'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l dry-run -d 'Say what would be done; change nothing'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -l json -d 'Print the summary as JSON'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand run" -s h -l help -d 'Print help'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand help; and not __fish_seen_subcommand_from sync trim rotate prune run help" -f -a "sync" -d 'Copy records appended to the hot shards since the last sync into the archive'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand help; and not __fish_seen_subcommand_from sync trim rotate prune run help" -f -a "trim" -d 'Remove from the hot shards records older than --hot that are already archived'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand help; and not __fish_seen_subcommand_from sync trim rotate prune run help" -f -a "rotate" -d 'Gzip the archive files of finished UTC days'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand help; and not __fish_seen_subcommand_from sync trim rotate prune run help" -f -a "prune" -d 'Delete archive files whose day is older than --keep (after uploading them, with --upload or --exec)'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand help; and not __fish_seen_subcommand_from sync trim rotate prune run help" -f -a "run" -d 'sync, trim, rotate and prune, in that order (one timer entry)'
complete -c cfn-archive -n "__fish_cfn_archive_using_subcommand help; and not __fish_seen_subcommand_from sync trim rotate prune run help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
