#!/usr/bin/env bash
# One simulated bash agent for the soak run: a little work and one emit_metric (the shell
# shim, so one cfn-emit process per metric) about once a second until $2 (epoch seconds).
# Writes its counts, the CPU time of its children (only cfn-emit: sleeping uses `read -t`,
# not a process) and its emit latencies in microseconds to $3.
id=$1 end=$2 out=$3
source "$SOAK_ROOT/contrib/emit_metric.sh"
exec {sleepfd}<> <(:)
# SOAK_SHIM_MODE=stream: one cfn-emit --stdin coprocess per agent instead of one per metric.
[ "${SOAK_SHIM_MODE:-call}" = stream ] && cfn_emit_open
seq=0 coord=0
lat=()
while (( EPOCHSECONDS < end )); do
    work=$(( (RANDOM * 31 + id) % 977 ))           # the agent's "work"
    t0=${EPOCHREALTIME/./}
    if (( seq % 10 == 9 )); then
        value=$(( 50 + work % 400 ))
        (( id == 42 && coord % 6 == 5 )) && value=12000  # a slow round now and then: alerts
        emit_metric "agent-$id" coordination.time "$value" && coord=$((coord + 1))
    fi
    emit_metric "agent-$id" soak.seq "$seq" || echo "agent-$id: emit $seq failed" >&2
    t1=${EPOCHREALTIME/./}
    lat+=($((t1 - t0)))
    seq=$((seq + 1))
    pause=$((850 + RANDOM % 300))   # ms, so about one iteration a second
    printf -v pause '%d.%03d' $((pause / 1000)) $((pause % 1000))
    read -r -t "$pause" -u "$sleepfd" || true
done
if [ "${SOAK_SHIM_MODE:-call}" = stream ]; then
    cfn_emit_close || echo "agent-$id: cfn-emit exited $?" >&2
fi
# `times` must run in this shell (not in a pipeline's subshell) to see its children.
times >"$out.times"
{
    echo "count $id $seq $coord"
    echo "children $(tail -1 "$out.times")"
} >"$out.stats"
printf '%s\n' "${lat[@]}" >"$out.lat"
