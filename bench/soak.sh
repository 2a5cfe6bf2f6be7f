#!/usr/bin/env bash
# The soak run (`just soak`; not part of the test suite): 500 simulated agents on this machine
# for SOAK_SECONDS (default 180) with the timers' jobs on their schedule, then an account of
# every record, the alerts raised, the CPU time of all cfn processes and the emit latency.
#   450 bash agents emit through contrib/emit_metric.sh (one cfn-emit process per metric);
#   50 TypeScript agents in 5 Node processes emit through the bridge (one cfn-emit --stdin each).
# The analysis runs every 30 s as in production; the archive every SOAK_ARCHIVE_EVERY s
# (default 60, instead of 5 min, so a short run exercises it several times).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${SOAK_SECONDS:-180}
bash_agents=${SOAK_BASH_AGENTS:-450}
node_procs=${SOAK_NODE_PROCS:-5}
node_per=${SOAK_NODE_AGENTS_PER_PROC:-10}
archive_every=${SOAK_ARCHIVE_EVERY:-60}
# call: emit_metric runs one cfn-emit per metric (the legacy form); stream: each bash agent
# opens one cfn-emit --stdin coprocess (cfn_emit_open) and emit_metric hands it lines.
export SOAK_SHIM_MODE=${SOAK_SHIM_MODE:-call}

bash contrib/build-release.sh --quiet >/dev/null
export PATH=$root/target/dist:$root/contrib:$PATH SOAK_ROOT=$root
base=/dev/shm; [ -d /dev/shm ] || base=${TMPDIR:-/tmp}
work=$(mktemp -d "$base/cfn-soak.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CFN_METRICS_DIR=$work/shm CFN_ARCHIVE_DIR=$work/archive CFN_STATE_DIR=$work/state
export CFN_TEXTFILE=$work/state/textfile/cfn.prom CFN_ALERTS_FILE=$work/shm/cfn-alerts.jsonl
export CFN_LOCK_TIMEOUT_MS=10000
mkdir -p "$CFN_METRICS_DIR" "$work/agents"
unset METRICS_FILE

busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
hz=$(getconf CLK_TCK)
start=$(date +%s)
end=$((start + secs))
t_busy0=$(busy_ticks)

echo "soak: $bash_agents bash agents + $((node_procs * node_per)) TypeScript agents for ${secs}s in $work"
for a in $(seq 0 $((bash_agents - 1))); do
    bash bench/soak/agent.sh "$a" "$end" "$work/agents/$a" 2>>"$work/agent-errors.txt" &
done
for p in $(seq 0 $((node_procs - 1))); do
    node bench/soak/agent.mjs $((bash_agents + p * node_per)) "$node_per" $((end * 1000)) >"$work/agents/node-$p.out" 2>>"$work/agent-errors.txt" &
done

# The timers: analysis every 30 s, archive every $archive_every s, timed with GNU time.
timed() { /usr/bin/time -f "%U %S" -a -o "$work/cfn-cpu.txt" "$@"; }
next_archive=$((start + archive_every))
analyses=0 archives=0
while (( $(date +%s) < end )); do
    tick=$(date +%s)
    set +e
    timed cfn-analyze >>"$work/analyze.out" 2>>"$work/analyze.err"; rc=$?
    set -e
    [ "$rc" -le 1 ] || echo "soak: cfn-analyze exited $rc" >&2
    analyses=$((analyses + 1))
    if (( tick >= next_archive )); then
        timed cfn-archive run --hot 24h --keep 30d >/dev/null
        archives=$((archives + 1)); next_archive=$((next_archive + archive_every))
    fi
    now=$(date +%s); next=$((tick + 30)); (( next > end )) && next=$end
    (( next > now )) && sleep $((next - now))
done
wait
t_busy1=$(busy_ticks)
wall=$(( $(date +%s) - start ))
timed cfn-archive sync >/dev/null

# --- The account --------------------------------------------------------------------------
emitted_seq=$(cat "$work"/agents/*.stats "$work"/agents/node-*.out | awk '$1 == "count" { s += $3 } END { print s + 0 }')
emitted_coord=$(cat "$work"/agents/*.stats | awk '$1 == "count" { s += $4 } END { print s + 0 }')
emitted=$((emitted_seq + emitted_coord))
# Every record exactly once in the archive; the hot shards hold only archived records.
cfn-cat "$CFN_ARCHIVE_DIR" >"$work/archived.jsonl"
archived=$(wc -l <"$work/archived.jsonl")
unique=$(jq -r 'select(.metric == "soak.seq") | "\(.agent) \(.value)"' "$work/archived.jsonl" | sort -u | wc -l)
hot=$(cfn-cat | wc -l)
alerts=$(grep -c '"state":"firing"' "$CFN_ALERTS_FILE" 2>/dev/null || true); alerts=${alerts:-0}
resolved=$(grep -c '"state":"resolved"' "$CFN_ALERTS_FILE" 2>/dev/null || true); resolved=${resolved:-0}
emit_cpu=$(cat "$work"/agents/*.stats | awk '$1 == "children" { for (i = 2; i <= 3; i++) { v = $i; sub(/s$/, "", v); split(v, p, "m"); s += p[1] * 60 + p[2] } } END { printf "%.2f", s }')
bridge_cpu=$(cat "$work"/agents/node-*.out | awk '$1 == "bridgecpu" { s += $2 } END { printf "%.2f", s }')
timer_cpu=$(awk '{ s += $1 + $2 } END { printf "%.2f", s }' "$work/cfn-cpu.txt")
total_busy=$(awk -v a="$t_busy0" -v b="$t_busy1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')
cores=$(nproc)
cfn_cpu=$(awk -v a="$emit_cpu" -v b="$bridge_cpu" -v c="$timer_cpu" 'BEGIN { printf "%.2f", a + b + c }')
cat "$work"/agents/*.lat | sort -n >"$work/lat.txt"
lat_p50=$(awk '{ a[NR] = $1 } END { printf "%.2f", a[int(NR * 0.5 + 0.5)] / 1000 }' "$work/lat.txt")
lat_p99=$(awk '{ a[NR] = $1 } END { i = int(NR * 0.99 + 0.999); printf "%.2f", a[i] / 1000 }' "$work/lat.txt")
ts_lat=$(cat "$work"/agents/node-*.out | awk '$1 == "lat" { for (i = 2; i <= NF; i++) print $i }' | sort -n | awk '{ a[NR] = $1 } END { printf "%.1f / %.1f", a[int(NR * 0.5 + 0.5)], a[int(NR * 0.99 + 0.999)] }')
errors=$(wc -l <"$work/agent-errors.txt")

out=bench/soak-results-$SOAK_SHIM_MODE.md
{
    echo "# Soak run"
    echo
    echo "\`SOAK_SHIM_MODE=$SOAK_SHIM_MODE bash bench/soak.sh\` on $(date -u +%Y-%m-%d), $cores cores: $bash_agents bash agents (shell shim, $SOAK_SHIM_MODE mode) + $((node_procs * node_per)) TypeScript agents ($node_procs Node processes, bridge) for ${wall} s, about one metric per agent per second; cfn-analyze every 30 s ($analyses runs), cfn-archive run every ${archive_every} s ($archives runs), then a final sync."
    echo
    echo "| what | figure |"
    echo "|---|---:|"
    echo "| records emitted (soak.seq + coordination.time) | $emitted |"
    echo "| records in the archive after the final sync | $archived |"
    echo "| distinct (agent, seq) soak.seq records in the archive / emitted | $unique / $emitted_seq |"
    echo "| records still hot (all also archived) | $hot |"
    echo "| emit failures reported by agents | $errors |"
    echo "| alerts raised (firing / resolved events) | $alerts / $resolved |"
    echo "| CPU of cfn-emit processes (bash agents; in stream mode their coprocesses) | ${emit_cpu} s |"
    echo "| CPU of the bridges' cfn-emit --stdin children | ${bridge_cpu} s |"
    echo "| CPU of the timer jobs (cfn-analyze, cfn-archive) | ${timer_cpu} s |"
    echo "| all cfn CPU | ${cfn_cpu} s |"
    echo "| all CPU used on the machine (agents, shells, everything) | ${total_busy} s |"
    echo "| cfn share of the CPU used | $(awk -v c="$cfn_cpu" -v t="$total_busy" 'BEGIN { printf "%.1f%%", 100 * c / t }') |"
    echo "| cfn share of the machine ($cores cores x ${wall} s) | $(awk -v c="$cfn_cpu" -v w="$wall" -v n="$cores" 'BEGIN { printf "%.1f%%", 100 * c / (w * n) }') |"
    echo "| emit latency, bash shim (p50 / p99) | ${lat_p50} / ${lat_p99} ms |"
    echo "| emit call, TypeScript bridge (p50 / p99) | ${ts_lat} µs |"
} >"$out"
cat "$out"
[ "$unique" -eq "$emitted_seq" ] && [ "$archived" -eq "$emitted" ] || { echo "soak: RECORDS LOST OR DUPLICATED" >&2; exit 1; }
