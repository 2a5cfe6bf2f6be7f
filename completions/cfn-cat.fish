complete -c cfn-cat -l endpoint -d 'The S3 endpoint for s3:// inputs (MinIO, Ceph, R2, Garage; path-style addressing), instead of $AWS_ENDPOINT_URL' -r
complete -c cfn-cat -l host -d 'For s3:// inputs: only the objects of this host (its host=HOST segment, or its HOST segment in the earlier layout). With --since/--until, only that host\'s days in range are listed, not the whole prefix' -r
complete -c cfn-cat -l http-timeout -d 'Timeout of each HTTP request (default: 10s for cfn-alert, 15s for cfn-push, 60s for S3 in cfn-archive and cfn-cat, where it is the longest silence: a long body that keeps coming is never cut)' -r
complete -c cfn-cat -l retries -d 'Retries after a 408, 429, 5xx or network error' -r
complete -c cfn-cat -l since -d 'Only records at or after this time: a duration back from now (30s, 5m, 24h, 7d) or an RFC 3339 time' -r
complete -c cfn-cat -l until -d 'Only records before this time (same forms as --since)' -r
complete -c cfn-cat -l metric -d 'Only this metric: an exact name or a glob such as \'coordination.*\'; repeatable' -r
complete -c cfn-cat -l agent -d 'Only this agent (exact or glob); repeatable' -r
complete -c cfn-cat -l interval -d 'With --follow: how often to look for new records' -r
complete -c cfn-cat -l threads -d 'With --sorted: read each input on a thread of its own when this is more than 1 (0: one per core); the output is the same either way' -r
complete -c cfn-cat -l host-tag -d 'For s3:// inputs: add a "host" tag to each record, from the key\'s host=HOST segment (PREFIX/host=HOST/dt=DAY/…, as cfn-archive --upload stores them) or, in the earlier layout, the segment above the file name (PREFIX/HOST/…), so `cfn-agg --by tag:host` gives each host\'s figures. Records are otherwise unchanged'
complete -c cfn-cat -l sorted -d 'Merge the inputs in timestamp order (each shard is already in time order, so this is a k-way merge, not a sort)'
complete -c cfn-cat -s f -l follow -d 'Keep reading as records are appended, picking up new shards and surviving shards renamed or truncated by the archiver'
complete -c cfn-cat -l strict -d 'Stop at the first malformed input line (exit 65) instead of skipping it'
complete -c cfn-cat -l no-seek -d 'Read whole files even with --since (for shards whose records are not in time order, such as replays written with cfn-emit --timestamp)'
complete -c cfn-cat -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cfn-cat -s V -l version -d 'Print version'
