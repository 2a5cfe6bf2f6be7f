complete -c cfn-emit -l done -d 'Say that agent ID finished: one record of metric cfn.agent.done (value 1, with any --tag), after which readers do not expect it to report (it is "done", not "silent")' -r
complete -c cfn-emit -l agent -d 'The emitting agent (chooses the shard)' -r
complete -c cfn-emit -l unit -d 'The unit, e.g. milliseconds, percent, count, mb' -r
complete -c cfn-emit -l tag -d 'A tag; repeatable' -r
complete -c cfn-emit -l tags -d 'Tags as a JSON object, e.g. \'{"phase":"consensus"}\'' -r
complete -c cfn-emit -l dir -d 'Write to the shards in DIR instead of $CFN_METRICS_DIR' -r -F
complete -c cfn-emit -l shards -d 'Number of shards instead of $CFN_SHARDS' -r
complete -c cfn-emit -l file -d 'Append to this single file instead of the shards (like $METRICS_FILE)' -r -F
complete -c cfn-emit -l timestamp -d 'Use this time instead of now (RFC 3339 or epoch seconds), for replaying data' -r
complete -c cfn-emit -l stdin -d 'Read many records from stdin (JSONL records or `METRIC VALUE [UNIT]` lines) and write them in as few locked writes as possible'
complete -c cfn-emit -l strict -d 'Stop at the first malformed input line (exit 65) instead of skipping it'
complete -c cfn-emit -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cfn-emit -s V -l version -d 'Print version'
