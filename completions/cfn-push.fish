complete -c cfn-push -l api-key-file -d 'Read the API key from FILE (else DD_API_KEY / NEW_RELIC_API_KEY)' -r -F
complete -c cfn-push -l endpoint -d 'Replace the API\'s scheme, host and port (the path stays), e.g. http://127.0.0.1:8080; for otlp the base URL that /v1/metrics is appended to' -r
complete -c cfn-push -l otlp-protocol -d 'OTLP encoding: http/protobuf (default) or http/json (else $OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, $OTEL_EXPORTER_OTLP_PROTOCOL)' -r -f -a "http/protobuf\t''
http/json\t''"
complete -c cfn-push -l service-name -d 'OTLP resource attribute service.name (default $OTEL_SERVICE_NAME, else cfn-metrics)' -r
complete -c cfn-push -l otlp-points -d 'OTLP point types: exponential histograms (which a backend adds up across hosts; built from cfn-agg --with-digest states), summaries, or both (the summaries then named METRIC.summary). Aggregates without a state are sent as summaries' -r -f -a "histogram\t''
summary\t''
both\t''"
complete -c cfn-push -l otlp-scale -d 'The exponential histograms\' scale (Prometheus\' schema): bucket bounds grow by 2^(2^-N), -4 to 8; 6 gives buckets 1.09% wide' -r
complete -c cfn-push -l otlp-max-buckets -d 'Most buckets of each sign per exponential histogram; past it the scale drops (counts are never lost)' -r
complete -c cfn-push -l region -d 'New Relic region (default $NEW_RELIC_REGION, else us)' -r -f -a "us\t''
eu\t''"
complete -c cfn-push -l prefix -d 'Metric name prefix' -r
complete -c cfn-push -l tag -d 'Extra tag on every series; repeatable (KEY:VALUE is read too)' -r
complete -c cfn-push -l window -d 'The window the aggregates cover (cfn-agg --window), sent as the interval of counts' -r
complete -c cfn-push -l http-timeout -d 'Timeout of each HTTP request (default: 10s for cfn-alert, 15s for cfn-push, 60s for S3 in cfn-archive and cfn-cat, where it is the longest silence: a long body that keeps coming is never cut)' -r
complete -c cfn-push -l retries -d 'Retries after a 408, 429, 5xx or network error' -r
complete -c cfn-push -l max-payload -d 'Largest payload before compression, in bytes (default: the vendor\'s limit)' -r
complete -c cfn-push -l dry-run -d 'Print the payloads that would be sent (without keys) instead of sending'
complete -c cfn-push -l strict -d 'Stop at the first malformed input line (exit 65) instead of skipping it'
complete -c cfn-push -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cfn-push -s V -l version -d 'Print version'
