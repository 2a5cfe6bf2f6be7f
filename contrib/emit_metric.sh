# shellcheck shell=bash
# cfn-metrics shell shim: `source` this file instead of the old lib/metrics.sh.
#
# It defines emit_metric (both call forms) and the legacy convenience wrappers, each of which
# runs cfn-emit and returns its status. It sets no shell options and no variables of yours:
# everything it needs lives in function-local variables, and it forks nothing but cfn-emit.
#
#   emit_metric METRIC VALUE [UNIT] [TAGS_JSON]   legacy form (unit "count", tags {})
#   emit_metric AGENT_ID METRIC VALUE             sharded form
#
# Records go where cfn-emit sends them: $METRICS_FILE when set (single-file mode, as the old
# library), else the agent's shard in $CFN_METRICS_DIR (default /dev/shm). Set CFN_EMIT to
# the cfn-emit binary to use if it is not on PATH.
#
# For agents that emit often, one long-lived cfn-emit per shell instead of one per metric:
#   cfn_emit_open [cfn-emit flags, e.g. --agent ID]   starts `cfn-emit --stdin` (a coprocess)
#   emit_metric ...                                   now hands one line to it (no new process)
#   cfn_emit_close                                    flushes, waits, returns cfn-emit's status
# While open, emit_metric returns 0 once the line is handed over; cfn-emit reports rejected
# lines on stderr, and cfn_emit_close returns 65 if any were rejected (75 or 74 for lock or
# I/O failures). Opening defines the coprocess variables _CFN_EMIT and _CFN_EMIT_PID.

# Sets variable $1 to a JSON string literal for $2 (escapes backslash, quote, \n, \r, \t).
# (Its own local is named so no caller's variable can be shadowed by it.)
_cfn_json_str() {
    local __cfn_str=$2
    __cfn_str=${__cfn_str//\\/\\\\}
    __cfn_str=${__cfn_str//\"/\\\"}
    __cfn_str=${__cfn_str//$'\n'/\\n}
    __cfn_str=${__cfn_str//$'\r'/\\r}
    __cfn_str=${__cfn_str//$'\t'/\\t}
    printf -v "$1" '"%s"' "$__cfn_str"
}

# Sets variable $1 to $2 as a JSON number when it is one (the old library wrote these tags
# unquoted), else as a JSON string, so a stray word never produces invalid JSON.
_cfn_json_num() {
    local __cfn_num=${2#-}
    case $__cfn_num in
        '' | [!0-9]* | *[!0-9] | *.*.* | *[!0-9.]*) _cfn_json_str "$1" "$2" ;;
        *) printf -v "$1" '%s' "$2" ;;
    esac
}

emit_metric() {
    if [ -n "${_CFN_EMIT_PID:-}" ] && [ -n "${_CFN_EMIT[1]:-}" ]; then
        # The arguments as a JSON array: cfn-emit --stdin applies the same call-form rule.
        local _line='[' _sep='' _arg _q
        for _arg in "$@"; do
            _cfn_json_str _q "$_arg"
            _line+=$_sep$_q
            _sep=,
        done
        printf '%s]\n' "$_line" >&"${_CFN_EMIT[1]}"
        return
    fi
    "${CFN_EMIT:-cfn-emit}" "$@"
}

cfn_emit_open() {
    [ -n "${_CFN_EMIT_PID:-}" ] && return 0
    coproc _CFN_EMIT { exec "${CFN_EMIT:-cfn-emit}" --stdin "$@" >/dev/null; }
}

cfn_emit_close() {
    [ -n "${_CFN_EMIT_PID:-}" ] || return 0
    local _pid=$_CFN_EMIT_PID _fd=${_CFN_EMIT[1]} _rc
    exec {_fd}>&-
    wait "$_pid"
    _rc=$?
    unset _CFN_EMIT _CFN_EMIT_PID
    return $_rc
}

# emit_coordination_time DURATION_MS [AGENT_COUNT] [PHASE]
emit_coordination_time() {
    local _p _n
    _cfn_json_str _p "${3:-coordination}"
    _cfn_json_num _n "${2:-1}"
    emit_metric "coordination.time" "$1" "milliseconds" "{\"phase\":$_p,\"agent_count\":$_n}"
}

# emit_agent_count COUNT [STATUS]
emit_agent_count() {
    local _s
    _cfn_json_str _s "${2:-active}"
    emit_metric "coordination.agents" "$1" "count" "{\"status\":$_s}"
}

# emit_delivery_rate RATE_PERCENT [TOTAL] [DELIVERED]
emit_delivery_rate() {
    local _t _d
    _cfn_json_num _t "${2:-0}"
    _cfn_json_num _d "${3:-0}"
    emit_metric "coordination.delivery_rate" "$1" "percent" "{\"total\":$_t,\"delivered\":$_d,\"target\":90}"
}

# emit_message_count COUNT [DIRECTION] [AGENT_ID]
emit_message_count() {
    local _dir _a
    _cfn_json_str _dir "${2:-sent}"
    _cfn_json_str _a "${3:-unknown}"
    emit_metric "coordination.messages" "$1" "count" "{\"direction\":$_dir,\"agent\":$_a}"
}

# emit_consensus_score SCORE [VALIDATOR_COUNT] [PHASE]
emit_consensus_score() {
    local _v _p
    _cfn_json_num _v "${2:-0}"
    _cfn_json_str _p "${3:-validation}"
    emit_metric "consensus.score" "$1" "percent" "{\"validators\":$_v,\"phase\":$_p,\"target\":90}"
}

# emit_confidence_score SCORE [AGENT_ID] [ITERATION]
emit_confidence_score() {
    local _a _i
    _cfn_json_str _a "${2:-unknown}"
    _cfn_json_num _i "${3:-1}"
    emit_metric "agent.confidence" "$1" "percent" "{\"agent\":$_a,\"iteration\":$_i,\"target\":75}"
}
