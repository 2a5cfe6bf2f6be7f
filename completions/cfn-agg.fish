complete -c cfn-agg -l by -d 'Group also by `agent` or `tag:NAME`; repeatable. Records always group by metric' -r
complete -c cfn-agg -l quantiles -d 'Quantiles to compute, comma-separated, each in [0, 1]' -r
complete -c cfn-agg -l exact-limit -d 'Most values a group keeps as they are; past it, a table of counts while it has at most 1,024 distinct values (still exact), else a t-digest' -r
complete -c cfn-agg -l window -d 'Only records within this duration before --now' -r
complete -c cfn-agg -l now -d 'The time to act as of (default: now): a duration back from now (1h) or RFC 3339' -r
complete -c cfn-agg -l bucket -d 'One aggregate per group per time bucket of this size, with bucket_start' -r
complete -c cfn-agg -l metric -d 'Only these metrics (exact or glob); repeatable' -r
complete -c cfn-agg -l format -d 'Output format' -r -f -a "jsonl\t'One aggregate per line (contract section 4)'
table\t'An aligned table for a terminal'"
complete -c cfn-agg -l presence-tag -d 'With --presence, also a line per value of tag KEY (a job or task id); repeatable, at most 8 (implies --presence)' -r
complete -c cfn-agg -l threads -d 'Threads that parse and fold records (0: one per core). The input is folded in blocks of 1 MiB merged in input order, so the output is the same for any number' -r
complete -c cfn-agg -l with-digest -d 'Add each group\'s mergeable state (`state`) so --merge can combine runs'
complete -c cfn-agg -l merge -d 'Input is aggregate lines written with --with-digest: combine them'
complete -c cfn-agg -l strict -d 'Stop at the first malformed input line (exit 65) instead of skipping it'
complete -c cfn-agg -l presence -d 'After the aggregates, one presence line per agent seen (contract section 10): first and last record, count, whether it said it was done, the gaps between its records. cfn-alert\'s silence rules need them (cfn-analyze passes it)'
complete -c cfn-agg -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cfn-agg -s V -l version -d 'Print version'
