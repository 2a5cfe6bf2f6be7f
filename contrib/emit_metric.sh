# shellcheck shell=bash
# cfn-metrics shell shim: `source` this file instead of the old lib/metrics.sh.
#
# It defines emit_metric (both call forms) and the legacy convenience wrappers, each of which
# runs cfn-emit and returns its status. It sets no shell options and no variables of yours:
# everything it needs lives in function-local variables.
#
#   emit_metric METRIC VALUE [UNIT] [TAGS_JSON]   legacy form (unit "count", tags {})
#   emit_metric AGENT_ID METRIC VALUE             sharded form
#
# Records go where cfn-emit sends them: $METRICS_FILE when set (single-file mode, as the old
# library), else the agent's shard in $CFN_METRICS_DIR (default /dev/shm). Set CFN_EMIT to
# the cfn-emit binary to use if it is not on PATH.

emit_metric() {
    "${CFN_EMIT:-cfn-emit}" "$@"
}

# A JSON string literal for $1 (escapes backslash, quote and control characters).
_cfn_json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    printf '"%s"' "$s"
}

# $1 as a JSON number when it is one (the old library wrote these tags unquoted), else as a
# JSON string, so a stray word never produces invalid JSON.
_cfn_json_num() {
    local v=$1 n
    n=${v#-}
    case $n in
        '' | [!0-9]* | *[!0-9] | *.*.* | *[!0-9.]*) _cfn_json_str "$v" ;;
        *) printf '%s' "$v" ;;
    esac
}

# emit_coordination_time DURATION_MS [AGENT_COUNT] [PHASE]
emit_coordination_time() {
    emit_metric "coordination.time" "$1" "milliseconds" \
        "{\"phase\":$(_cfn_json_str "${3:-coordination}"),\"agent_count\":$(_cfn_json_num "${2:-1}")}"
}

# emit_agent_count COUNT [STATUS]
emit_agent_count() {
    emit_metric "coordination.agents" "$1" "count" \
        "{\"status\":$(_cfn_json_str "${2:-active}")}"
}

# emit_delivery_rate RATE_PERCENT [TOTAL] [DELIVERED]
emit_delivery_rate() {
    emit_metric "coordination.delivery_rate" "$1" "percent" \
        "{\"total\":$(_cfn_json_num "${2:-0}"),\"delivered\":$(_cfn_json_num "${3:-0}"),\"target\":90}"
}

# emit_message_count COUNT [DIRECTION] [AGENT_ID]
emit_message_count() {
    emit_metric "coordination.messages" "$1" "count" \
        "{\"direction\":$(_cfn_json_str "${2:-sent}"),\"agent\":$(_cfn_json_str "${3:-unknown}")}"
}

# emit_consensus_score SCORE [VALIDATOR_COUNT] [PHASE]
emit_consensus_score() {
    emit_metric "consensus.score" "$1" "percent" \
        "{\"validators\":$(_cfn_json_num "${2:-0}"),\"phase\":$(_cfn_json_str "${3:-validation}"),\"target\":90}"
}

# emit_confidence_score SCORE [AGENT_ID] [ITERATION]
emit_confidence_score() {
    emit_metric "agent.confidence" "$1" "percent" \
        "{\"agent\":$(_cfn_json_str "${2:-unknown}"),\"iteration\":$(_cfn_json_num "${3:-1}"),\"target\":75}"
}
