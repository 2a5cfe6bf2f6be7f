complete -c cfn-top -l window -d 'The window the figures cover: 10s, 30s, 1m, 5m, 15m or 1h' -r
complete -c cfn-top -l metric -d 'Show only metrics matching this name or glob' -r
complete -c cfn-top -l agent -d 'Count only records of agents matching this name or glob' -r
complete -c cfn-top -l alert-state -d 'The alert state file cfn-alert keeps (--state); without it, firing alerts are read from the alerts log ($CFN_ALERTS_FILE)' -r -F
complete -c cfn-top -l interval -d 'How often to read what was appended and redraw' -r
complete -c cfn-top -l width -d 'With --once: the frame\'s width in columns (default: $COLUMNS, else 100)' -r
complete -c cfn-top -l silent-after -d 'When an agent counts as silent: DURATION, auto (3 x its own p99 gap, at least 1m), or GLOB=DURATION|auto; repeatable, the first match wins; default auto' -r
complete -c cfn-top -l expect-within -d 'An agent silent for longer is not expected any more ("gone")' -r
complete -c cfn-top -l now -d 'The time to act as of (default: now): a duration back from now (1h) or RFC 3339' -r
complete -c cfn-top -l once -d 'Print one frame as plain text (no colour, no terminal control) and exit'
complete -c cfn-top -l agents -d 'Start in the agents view (Tab switches): every agent\'s state, silent ones first'
complete -c cfn-top -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cfn-top -s V -l version -d 'Print version'
