complete -c cfn-serve -l listen -d 'Address to listen on' -r
complete -c cfn-serve -l dir -d 'Hot shard directory instead of $CFN_METRICS_DIR' -r -F
complete -c cfn-serve -l archive-dir -d 'Archive directory for ranges older than the hot shards (default $CFN_ARCHIVE_DIR)' -r -F
complete -c cfn-serve -l alert-state -d 'The state file cfn-alert keeps (--state), for the firing alerts' -r -F
complete -c cfn-serve -l alerts-log -d 'The alerts log (default $CFN_ALERTS_FILE)' -r -F
complete -c cfn-serve -l window -d 'The window /metrics aggregates' -r
complete -c cfn-serve -l threads -d 'Requests computed at once (others wait for a slot; reading requests never does)' -r
complete -c cfn-serve -l max-connections -d 'Open connections at most; further ones are answered 503 at once' -r
complete -c cfn-serve -l index-span -d 'How far back the rollup index reaches; older ranges are read from the records' -r
complete -c cfn-serve -l index-max-metrics -d 'Most metrics given rollups (a day of one metric\'s rollups takes up to about 200 KB); queries that touch the others read the records' -r
complete -c cfn-serve -l index-tags -d 'Tag keys given rollups by value (comma-separated, `phase,model`), so a `tag=KEY=VALUE` filter over a long range is answered from them; at most 1,000 values a key. Other keys get them too without being named (--index-auto-tags); named ones are dropped last when the budget is short' -r
complete -c cfn-serve -l index-auto-tags -d 'Tag keys met in the records, not named in --index-tags, given rollups by value: the first N keys met, each while it has at most 1,000 values, within --index-dims-budget (dropped first when it is short). 0: only the named keys' -r
complete -c cfn-serve -l index-dims-budget -d 'Memory the rollups by agent and by tag value may take (bytes; K, M, G, KiB, MiB, GiB); past it the agent rollups are dropped first, then the tags\', and the queries they answered read the records. 0 turns them off' -r
complete -c cfn-serve -l buckets -d 'Histogram bounds for the metrics matching a glob, in the metric\'s unit (`coordination.*=10,50,100,500`); repeatable, the first match wins. Default bounds depend on the unit (ms, s, bytes, kb, mb, percent, ratio; else counts)' -r
complete -c cfn-serve -l histogram-by -d 'Label the /metrics histograms with this group key: agent or tag:NAME (repeatable; none by default, to keep series counts small)' -r
complete -c cfn-serve -l histogram-max-series -d 'Most histogram series on /metrics over all metrics and label values; records of new series past it are counted in cfn_serve_series_limit_dropped_records_total instead' -r
complete -c cfn-serve -l native-schema -d 'The resolution of the native (exponential) buckets the protobuf exposition carries: bucket bounds grow by 2^(2^-N), -4 to 8. The default, 6, gives buckets 1.09% wide' -r
complete -c cfn-serve -l native-max-buckets -d 'Most native buckets of each sign per series; a value that would need more lowers that series\' resolution (buckets merged in pairs), and no count is ever lost' -r
complete -c cfn-serve -l allowed-host -d 'Another name clients may use in the Host header (a reverse proxy\'s name, say); repeatable. Loopback names and the listen address are always accepted' -r
complete -c cfn-serve -l silent-after -d 'When an agent counts as silent (/api/agents, the agents panel, cfn_agents on /metrics): DURATION, auto (3 x its own p99 gap, at least 1m; 5m until it has 10 gaps), or GLOB=DURATION|auto for the agents a glob matches; repeatable, the first match wins; default auto' -r
complete -c cfn-serve -l expect-within -d 'An agent silent for longer is not expected any more ("gone")' -r
complete -c cfn-serve -l no-last-seen -d 'Leave agents matching GLOB out of cfn_agent_last_seen_timestamp_seconds on /metrics (cardinality); they are still counted in cfn_agents. Repeatable' -r
complete -c cfn-serve -l snapshot-dir -d 'Keep snapshots of the index in DIR (made 0700 if missing; the service\'s own, never the agents\' directory): written on SIGTERM or SIGINT and when an hour closes, the newest two kept. At start the newest valid one is loaded and only what was appended since is read, instead of every record of the span' -r -F
complete -c cfn-serve -l snapshot-every -d 'How often a snapshot is written besides at stop: when each period of this length closes (the default, when each hour closes). What a SIGKILL can cost a restart is reading what was appended since the last one' -r
complete -c cfn-serve -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cfn-serve -s V -l version -d 'Print version'
