# cfn-metrics: where agents write their metrics (the group-shared hot directory).
# Users in the group cfn-metrics can emit; see /usr/share/doc/cfn-metrics/README.Debian.
if [ -z "${CFN_METRICS_DIR:-}" ] && [ -d /run/cfn-metrics ]; then
    CFN_METRICS_DIR=/run/cfn-metrics
    export CFN_METRICS_DIR
fi
