complete -c cfn-alert -l rules -d 'Rules file (TOML); repeatable' -r -F
complete -c cfn-alert -l rule -d 'A rule as a one-liner (see RULES); repeatable' -r
complete -c cfn-alert -l state -d 'Keep alert state in FILE across runs: notify once when an alert starts firing, again every --repeat, and once when it resolves' -r -F
complete -c cfn-alert -l repeat -d 'While an alert keeps firing, notify again this often' -r
complete -c cfn-alert -l log -d 'Append events to FILE (JSONL) under a lock, after the notifications are sent and the state saved (a log that cannot be written is a warning). Keep it where only this service writes: cfn-top and cfn-serve ignore a log whose directory others can write' -r -F
complete -c cfn-alert -l firing-prom -d 'Also write the alerts firing now as a Prometheus gauge cfn_alert_firing (atomically), e.g. into node_exporter\'s textfile directory for dashboards' -r -F
complete -c cfn-alert -l slack-webhook-file -d 'Read the Slack incoming-webhook URL from FILE (else $CFN_SLACK_WEBHOOK_URL)' -r -F
complete -c cfn-alert -l pagerduty-routing-key-file -d 'Read the PagerDuty routing key from FILE (else $CFN_PAGERDUTY_ROUTING_KEY)' -r -F
complete -c cfn-alert -l pagerduty-url -d 'PagerDuty Events API v2 endpoint' -r
complete -c cfn-alert -l webhook-file -d 'Read a generic webhook URL from FILE (else $CFN_WEBHOOK_URL); it receives the event JSON' -r -F
complete -c cfn-alert -l alertmanager -d 'Send the alerts to this Alertmanager (API v2); repeatable, each URL gets every alert' -r
complete -c cfn-alert -l header -d 'An HTTP header for the Alertmanager requests (\'Authorization: Bearer …\'); repeatable. Its value is never printed. On a shared host prefer --header-file: a command line is readable by every user in /proc' -r
complete -c cfn-alert -l header-file -d 'Read Alertmanager headers from FILE, one \'Name: value\' a line (blank lines and lines starting with # are skipped); the file must be readable by its owner only' -r -F
complete -c cfn-alert -l alert-valid-for -d 'How long a firing alert sent to Alertmanager stays firing without being sent again (its endsAt); keep it above the run interval' -r
complete -c cfn-alert -l generator-url -d 'The link Alertmanager shows with each alert (the cfn-serve page, say)' -r
complete -c cfn-alert -l http-timeout -d 'Timeout of each HTTP request (default: 10s for cfn-alert, 15s for cfn-push, 60s for S3 in cfn-archive and cfn-cat, where it is the longest silence: a long body that keeps coming is never cut)' -r
complete -c cfn-alert -l retries -d 'Retries after a 408, 429, 5xx or network error' -r
complete -c cfn-alert -l expect-within -d 'Silence rules: an agent silent for longer than this is not expected any more ("gone": no alert, and an alert on it resolves)' -r
complete -c cfn-alert -l no-last-seen -d 'Leave agents matching GLOB out of cfn_agent_last_seen_timestamp_seconds in --firing-prom (cardinality); they are still watched and counted. Repeatable' -r
complete -c cfn-alert -l now -d 'The time to act as of (default: now): a duration back from now (1h) or RFC 3339' -r
complete -c cfn-alert -l print-rules -d 'Print the effective rules as TOML and exit'
complete -c cfn-alert -l no-resolved -d 'Do not send resolved notices'
complete -c cfn-alert -l dry-run -d 'Evaluate and print without notifying or touching the state'
complete -c cfn-alert -l strict -d 'Stop at the first malformed input line (exit 65) instead of skipping it'
complete -c cfn-alert -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cfn-alert -s V -l version -d 'Print version'
