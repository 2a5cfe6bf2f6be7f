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
# lines on stderr. When the cfn-emit behind it fails (a lock timeout: 75; an I/O error: 74),
# the next emit_metric returns that status and a new cfn-emit takes over with the same flags
# (so the agent given at open is kept); cfn_emit_close returns the first failure (65 if a
# line was rejected). A cfn-emit that cannot run at all (78, 2) is not restarted: emit_metric
# then calls cfn-emit directly, with the flags given at open, and returns its status.
# Opening defines the coprocess variables _CFN_EMIT and _CFN_EMIT_PID and the shim's own
# _CFN_EMIT_OPEN_* variables; closing removes them.

# Sets variable $1 to a JSON string literal for $2 (escapes backslash, quote and every
# control character). (Its own locals are named so no caller's variable is shadowed.)
_cfn_json_str() {
    local __cfn_str=$2 __cfn_i __cfn_o __cfn_c __cfn_u
    __cfn_str=${__cfn_str//\\/\\\\}
    __cfn_str=${__cfn_str//\"/\\\"}
    __cfn_str=${__cfn_str//$'\n'/\\n}
    __cfn_str=${__cfn_str//$'\r'/\\r}
    __cfn_str=${__cfn_str//$'\t'/\\t}
    if [[ $__cfn_str == *[[:cntrl:]]* ]]; then
        for __cfn_i in {1..31} 127; do
            printf -v __cfn_o '%03o' "$__cfn_i"
            printf -v __cfn_c "\\$__cfn_o"
            printf -v __cfn_u '\\u%04x' "$__cfn_i"
            __cfn_str=${__cfn_str//"$__cfn_c"/$__cfn_u}
        done
    fi
    printf -v "$1" '"%s"' "$__cfn_str"
}

# Sets variable $1 to $2 as a JSON number when it is one (the old library wrote these tags
# unquoted), else as a JSON string, so a stray word never produces invalid JSON: `007` is
# not a JSON number (leading zero), so it stays the string "007".
_cfn_json_num() {
    if [[ $2 =~ ^-?(0|[1-9][0-9]*)(\.[0-9]+)?$ ]]; then
        printf -v "$1" '%s' "$2"
    else
        _cfn_json_str "$1" "$2"
    fi
}

emit_metric() {
    if [ -n "${_CFN_EMIT_OPEN_PID:-}" ]; then
        local _status _report=
        # Statuses the coprocess reports when a cfn-emit inside it ended (never blocks).
        while read -r -t 0 -u "$_CFN_EMIT_OPEN_OUT" 2>/dev/null &&
            read -r -u "$_CFN_EMIT_OPEN_OUT" _status; do
            [ "$_status" = 0 ] && continue
            _report=$_status
            : "${_CFN_EMIT_OPEN_FAILED:=$_status}"
            case $_status in 2 | 64 | 78) _CFN_EMIT_OPEN_DIRECT=1 ;; esac
        done
        if [ -z "${_CFN_EMIT_OPEN_DIRECT:-}" ] && ! kill -0 "$_CFN_EMIT_OPEN_PID" 2>/dev/null; then
            # Killed from outside: writing to it now would kill this shell (SIGPIPE).
            wait "$_CFN_EMIT_OPEN_PID" 2>/dev/null
            _status=$?
            _report=${_report:-$_status}
            : "${_CFN_EMIT_OPEN_FAILED:=$_status}"
            _CFN_EMIT_OPEN_DIRECT=1
        fi
        if [ -n "${_CFN_EMIT_OPEN_DIRECT:-}" ]; then
            "${CFN_EMIT:-cfn-emit}" "${_CFN_EMIT_OPEN_ARGS[@]}" "$@"
            _status=$?
            return "${_report:-$_status}"
        fi
        # The arguments as a JSON array: cfn-emit --stdin applies the same call-form rule.
        local _line='[' _sep='' _arg _q
        for _arg in "$@"; do
            _cfn_json_str _q "$_arg"
            _line+=$_sep$_q
            _sep=,
        done
        printf '%s]\n' "$_line" >&"$_CFN_EMIT_OPEN_IN"
        return "${_report:-0}"
    fi
    "${CFN_EMIT:-cfn-emit}" "$@"
}

cfn_emit_open() {
    [ -n "${_CFN_EMIT_OPEN_PID:-}" ] && return 0
    # The coprocess outlives a failed cfn-emit: it reports the status on its stdout and starts
    # a new one on the same input, so no write from this shell ever meets a closed pipe. A
    # cfn-emit that cannot run (usage, configuration) is not restarted; the rest of the input
    # is read and dropped while emit_metric, told by the status, calls cfn-emit directly.
    coproc _CFN_EMIT {
        while :; do
            "${CFN_EMIT:-cfn-emit}" --stdin "$@" >/dev/null
            _rc=$?
            printf '%s\n' "$_rc"
            case $_rc in
                0) exit 0 ;;
                2 | 64 | 78) while IFS= read -r _; do :; done; exit "$_rc" ;;
            esac
            # Otherwise a new cfn-emit reads on; at the end of input it exits 0 at once.
        done
    }
    _CFN_EMIT_OPEN_PID=$_CFN_EMIT_PID
    # Our own copies: bash unsets the coproc variables as soon as the coprocess ends.
    exec {_CFN_EMIT_OPEN_IN}>&"${_CFN_EMIT[1]}" {_CFN_EMIT_OPEN_OUT}<&"${_CFN_EMIT[0]}"
    _CFN_EMIT_OPEN_ARGS=("$@")
    _CFN_EMIT_OPEN_FAILED=
    _CFN_EMIT_OPEN_DIRECT=
}

cfn_emit_close() {
    [ -n "${_CFN_EMIT_OPEN_PID:-}" ] || return 0
    local _pid=$_CFN_EMIT_OPEN_PID _status _rc
    exec {_CFN_EMIT_OPEN_IN}>&-
    [ -n "${_CFN_EMIT[1]:-}" ] && exec {_CFN_EMIT[1]}>&-
    wait "$_pid" 2>/dev/null
    _rc=$?
    while read -r -u "$_CFN_EMIT_OPEN_OUT" _status 2>/dev/null; do
        [ "$_status" != 0 ] && : "${_CFN_EMIT_OPEN_FAILED:=$_status}"
    done
    exec {_CFN_EMIT_OPEN_OUT}<&-
    _rc=${_CFN_EMIT_OPEN_FAILED:-$_rc}
    unset _CFN_EMIT _CFN_EMIT_PID _CFN_EMIT_OPEN_PID _CFN_EMIT_OPEN_IN _CFN_EMIT_OPEN_OUT \
        _CFN_EMIT_OPEN_ARGS _CFN_EMIT_OPEN_FAILED _CFN_EMIT_OPEN_DIRECT
    return "$_rc"
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
