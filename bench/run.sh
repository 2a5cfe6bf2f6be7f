#!/usr/bin/env bash
# Side-by-side benchmarks: cfn-metrics vs a hello-world floor, bash, jq and Miller, in one run
# on one machine. Writes bench/results.md (the README quotes it). Needs: hyperfine, jq,
# miller, GNU time (Debian packages hyperfine, jq, miller, time).
#
#   bash bench/run.sh            # everything (about 10 minutes on 2 cores)
#   BENCH_QUICK=1 bash bench/run.sh   # smaller data and fewer runs, to check the script
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

for tool in hyperfine jq mlr /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install hyperfine jq miller time)" >&2; exit 1; }
done

quick=${BENCH_QUICK:-0}
runs=300; lines_small=1000000; lines_big=5000000; burst_agents=500; burst_emits=20; legacy_emits=2
if [ "$quick" = 1 ]; then runs=30; lines_small=100000; lines_big=300000; burst_agents=50; burst_emits=4; legacy_emits=1; fi

# The binaries as installed (contrib/build-release.sh: static), and in the same build the
# benchmark helpers (xtask).
bash contrib/build-release.sh --with-xtask --quiet >/dev/null
mkdir -p target/bench
rustc -O -o target/bench/hello bench/hello.rs
rustc -O -C target-feature=+crt-static -o target/bench/hello-static bench/hello.rs
B=$root/target/dist
X=$root/target/dist/dev/xtask
work=$(mktemp -d "${TMPDIR:-/tmp}/cfn-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
out=bench/results.md
{
    echo "# Benchmark results"
    echo
    echo "Run by \`bash bench/run.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -m), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo);"
    echo "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)."
    echo
} >"$out"

say() { echo "$@" | tee -a "$out"; }
median_ms() { jq -r --arg n "$2" '.results[] | select(.command == $n) | (.median * 1000)' "$1"; }
mean_ms() { jq -r --arg n "$2" '.results[] | select(.command == $n) | (.mean * 1000)' "$1"; }

# ---------------------------------------------------------------------------------------
say "## cfn-emit: cost per call (one process per metric)"
say
mkdir -p "$work/shm"
export CFN_METRICS_DIR=$work/shm CFN_SHARDS=16
hyperfine -N --warmup 30 --runs "$runs" --export-json "$work/emit.json" --style none \
    -n /bin/true /bin/true \
    -n hello-world "$root/target/bench/hello" \
    -n hello-world-static "$root/target/bench/hello-static" \
    -n cfn-emit "$B/cfn-emit agent-42 coordination.time 150" \
    -n bash-sharded "bash $root/bench/bash/sharded_emit.sh agent-42 coordination.time 150" \
    -n bash-legacy-jq "env METRICS_FILE=$work/legacy.jsonl METRICS_LOCK_FILE=$work/legacy.lock bash $root/bench/bash/legacy_emit.sh coordination.time 150" \
    >/dev/null
floor=$(median_ms "$work/emit.json" /bin/true)
ours=$(median_ms "$work/emit.json" cfn-emit)
say "| emitter | median ms | mean ms | vs /bin/true | cfn-emit is faster by |"
say "|---|---:|---:|---:|---:|"
for n in /bin/true hello-world hello-world-static cfn-emit bash-sharded bash-legacy-jq; do
    m=$(median_ms "$work/emit.json" $n); a=$(mean_ms "$work/emit.json" $n)
    say "$(awk -v n="$n" -v m="$m" -v a="$a" -v f="$floor" -v o="$ours" 'BEGIN { printf "| %s | %.3f | %.3f | %.2fx | %s |", n, m, a, m / f, (n ~ /^(\/bin\/true|hello-world|hello-world-static|cfn-emit)$/) ? "" : sprintf("%.1fx", m / o) }')"
done
say
say "(hyperfine -N, $runs runs each, warm page cache, shards on $(df --output=fstype "$work" | tail -1).)"
say

# ---------------------------------------------------------------------------------------
say "## cfn-emit --stdin: records per second through one process"
say
n_stdin=$lines_small
awk -v n="$n_stdin" 'BEGIN { for (i = 0; i < n; i++) printf "task_duration_ms %d milliseconds\n", i % 5000 }' >"$work/stdin.txt"
awk -v n="$n_stdin" 'BEGIN { for (i = 0; i < n; i++) printf "{\"agent\":\"agent-%d\",\"metric\":\"coordination.time\",\"value\":%d}\n", i % 500, i % 9973 }' >"$work/stdin.jsonl"
rm -rf "$work/shm"/*
hyperfine --warmup 1 --runs 5 --export-json "$work/stdin.json" --style none \
    --prepare "rm -f $work/shm/cfn-metrics-*.jsonl" \
    -n "METRIC VALUE lines, one agent" "$B/cfn-emit --stdin --agent agent-1 < $work/stdin.txt" \
    -n "JSONL records, 500 agents over 16 shards" "$B/cfn-emit --stdin < $work/stdin.jsonl" \
    >/dev/null
say "| input ($n_stdin records) | median s | records/s |"
say "|---|---:|---:|"
jq -r --argjson n "$n_stdin" '.results[] | "| \(.command) | \(.median * 1000 | round / 1000) | \($n / .median | floor) |"' "$work/stdin.json" | tee -a "$out"
say

# ---------------------------------------------------------------------------------------
say "## cfn-emit --stdin as a long-lived stream: CPU per record at 1, 100 and 10,000 records/s"
say
say '```'
"$X" bench-stream --bin "$B" $([ "$quick" = 1 ] && echo --quick) | tee -a "$out"
say '```'
say
say "(Target: at most 20 us per record; the floor is one flock, one lstat, one write and one"
say "unlock per record, plus the read that wakes the process.)"
say

# ---------------------------------------------------------------------------------------
say "## Records kept in a burst: $burst_agents concurrent agents"
say
burst() { # name emits-per-agent command-prefix...
    local name=$1 per=$2; shift 2
    rm -rf "$work/burst"; mkdir -p "$work/burst"
    local start=$(date +%s.%N)
    for a in $(seq 1 "$burst_agents"); do
        ( for i in $(seq 1 "$per"); do CFN_METRICS_DIR=$work/burst METRICS_FILE=${LEGACY_FILE:-} METRICS_LOCK_FILE=$work/burst/legacy.lock "$@" "agent-$a" "$i" >/dev/null 2>&1 || true; done ) &
    done
    wait
    local secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    local kept=$(cat "$work/burst"/*.jsonl 2>/dev/null | grep -c '"value"' || true)
    local total=$((burst_agents * per))
    say "$(awk -v n="$name" -v k="$kept" -v t="$total" -v s="$secs" 'BEGIN { printf "| %s | %d | %d | %d (%.1f%%) | %s |", n, t, k, t - k, 100 * (t - k) / t, s }')"
}
cfn_emit_burst() { "$B/cfn-emit" "$1" burst.seq "$2"; }
sharded_burst() { bash "$root/bench/bash/sharded_emit.sh" "$1" burst.seq "$2"; }
legacy_burst() { bash "$root/bench/bash/legacy_emit.sh" burst.seq "$2"; }
export -f cfn_emit_burst sharded_burst legacy_burst
export B root
say "| emitter | emitted | kept | lost | wall s |"
say "|---|---:|---:|---:|---:|"
burst "cfn-emit" "$burst_emits" bash -c 'cfn_emit_burst "$@"' _
burst "bash sharded (flock -n)" "$burst_emits" bash -c 'sharded_burst "$@"' _
LEGACY_FILE=$work/burst/legacy.jsonl burst "bash legacy (jq, flock -w 5, sync)" "$legacy_emits" bash -c 'legacy_burst "$@"' _
say
say "(The legacy library runs $legacy_emits emits per agent instead of $burst_emits: at ~25 ms per call the full burst takes minutes.)"
say

# ---------------------------------------------------------------------------------------
say "## cfn-agg: aggregation throughput and peak memory"
say
"$X" gen-data --lines "$lines_small" >"$work/small.jsonl"
"$X" gen-data --lines "$lines_big" >"$work/big.jsonl"
measure() { # label lines command...
    local label=$1 n=$2; shift 2
    local best=999999 mem=0
    local reps=3; [ "${SLOW:-0}" = 1 ] && reps=1
    for _ in $(seq 1 $reps); do
        /usr/bin/time -f "%e %M" -o "$work/time.txt" bash -c "$*" >/dev/null
        read -r s m <"$work/time.txt"
        best=$(awk -v a="$best" -v b="$s" 'BEGIN { print (b < a) ? b : a }')
        [ "$m" -gt "$mem" ] && mem=$m
    done
    say "$(awk -v l="$label" -v n="$n" -v s="$best" -v m="$mem" 'BEGIN { printf "| %s | %d | %.2f | %s | %.0f |", l, n, s, (s > 0 ? sprintf("%.0f", n / s) : "(< 10 ms)"), m / 1024 }')"
}
say "| command | lines | best s | lines/s | peak MB |"
say "|---|---:|---:|---:|---:|"
measure "wc -l (floor)" "$lines_small" wc -l "$work/small.jsonl"
measure "cat FILE \| wc -l (floor)" "$lines_small" "cat $work/small.jsonl | wc -l"
measure "cfn-agg FILE" "$lines_small" "$B/cfn-agg" "$work/small.jsonl"
measure "cfn-cat FILE \\| cfn-agg" "$lines_small" "$B/cfn-cat $work/small.jsonl | $B/cfn-agg"
measure "cfn-agg --by agent FILE" "$lines_small" "$B/cfn-agg" --by agent "$work/small.jsonl"
SLOW=1 measure "jq -s (group_by, sorted nearest rank)" "$lines_small" jq -s -c -f bench/agg.jq "$work/small.jsonl"
SLOW=1 measure "mlr --ijsonl stats1 -a count,mean,min,max,p50,p95,p99 -g metric" "$lines_small" mlr --ijsonl --ojsonl stats1 -a count,mean,min,max,p50,p95,p99 -f value -g metric "$work/small.jsonl"
measure "wc -l (floor)" "$lines_big" wc -l "$work/big.jsonl"
measure "cfn-agg FILE" "$lines_big" "$B/cfn-agg" "$work/big.jsonl"
measure "cfn-cat FILE \\| cfn-agg" "$lines_big" "$B/cfn-cat $work/big.jsonl | $B/cfn-agg"
measure "cfn-agg --by agent FILE" "$lines_big" "$B/cfn-agg" --by agent "$work/big.jsonl"
say
say "(jq and Miller run once, on the smaller set only: both hold every value in memory.)"
say

# ---------------------------------------------------------------------------------------
say "## cfn-agg against the floor of reading the data once"
say
rm -rf "$work/shards2m"
"$X" gen-hot --dir "$work/shards2m" --agents 500 --secs "$([ "$quick" = 1 ] && echo 400 || echo 4000)"
shard_lines=$(cat "$work/shards2m"/*.jsonl | wc -l)
hyperfine --warmup 2 --runs 10 --export-json "$work/floor.json" --style none \
    -n "cat FILE | wc -l" "bash -c 'cat $work/small.jsonl | wc -l'" \
    -n "cfn-agg FILE" "$B/cfn-agg $work/small.jsonl" \
    -n "cfn-agg --threads 1 FILE" "$B/cfn-agg --threads 1 $work/small.jsonl" \
    -n "cat shards | wc -l" "bash -c 'cat $work/shards2m/*.jsonl | wc -l'" \
    -n "cfn-agg SHARD_DIR" "$B/cfn-agg $work/shards2m" \
    -n "cfn-agg --threads 1 SHARD_DIR" "$B/cfn-agg --threads 1 $work/shards2m" \
    >/dev/null
file_floor=$(median_ms "$work/floor.json" "cat FILE | wc -l")
shard_floor=$(median_ms "$work/floor.json" "cat shards | wc -l")
say "| command | input | median ms | vs reading it once |"
say "|---|---|---:|---:|"
for n in "cat FILE | wc -l" "cfn-agg FILE" "cfn-agg --threads 1 FILE" "cat shards | wc -l" "cfn-agg SHARD_DIR" "cfn-agg --threads 1 SHARD_DIR"; do
    m=$(median_ms "$work/floor.json" "$n")
    case $n in *FILE*) f=$file_floor; what="$lines_small realistic lines" ;; *) f=$shard_floor; what="16 shards, $shard_lines lines" ;; esac
    say "$(awk -v n="$n" -v w="$what" -v m="$m" -v f="$f" 'BEGIN { gsub(/\|/, "\\|", n); printf "| %s | %s | %.1f | %.2fx |", n, w, m, m / f }')"
done
say
say "(Targets: 2x for one file, 1x for the shards. The records are parsed on every core and"
say "folded in input order on one, so the output is the single-threaded one byte for byte;"
say "the fold, not the parsing, is what is left above the floor.)"
say

# ---------------------------------------------------------------------------------------
say "## The statistic: accuracy against the exact answer"
say
say "Worst rank error over p0.1, p1, p10, p25, p50, p75, p90, p95, p99, p99.9 (and where it is"
say "worst), one group of n values, and ten parts of 100k merged through --with-digest states."
say
if [ "$quick" = 1 ]; then acc_max=100000; else acc_max=10000000; fi
"$X" accuracy --max "$acc_max" | tee -a "$out"
say

# ---------------------------------------------------------------------------------------
say "## The statistic: peak memory (bounds: 64 MB, 64 MB, 16 MB)"
say
g_lines=3000000; one_lines=50000000; adv_lines=20000000
if [ "$quick" = 1 ]; then g_lines=300000; one_lines=2000000; adv_lines=1000000; fi
mem_case() { # label lines generator-args... -- cfn-agg-args...
    local label=$1 n=$2; shift 2
    local gen=() agg=()
    while [ "$1" != -- ]; do gen+=("$1"); shift; done; shift
    agg=("$@")
    "$X" gen-groups --lines "$n" "${gen[@]}" |
        /usr/bin/time -f "%e %M" -o "$work/time.txt" "$B/cfn-agg" "${agg[@]}" >/dev/null
    read -r s m <"$work/time.txt"
    say "$(awk -v l="$label" -v n="$n" -v s="$s" -v m="$m" 'BEGIN { printf "| %s | %d | %.2f | %.0f |", l, n, s, m / 1024 }')"
}
say "| input | lines | s | peak MB |"
say "|---|---:|---:|---:|"
measure_by_agent_line=$(grep -F "cfn-agg --by agent FILE | $lines_big" "$out" | tail -1 || true)
[ -n "$measure_by_agent_line" ] && say "| 5M realistic lines by agent and metric (10,000 groups), from the table above | $lines_big | $(echo "$measure_by_agent_line" | awk -F'|' '{print $4}') | $(echo "$measure_by_agent_line" | awk -F'|' '{print $6}') |"
mem_case "all-distinct values in 10,000 groups" "$g_lines" --groups 10000 -- --by agent
mem_case "one group, all-distinct values" "$one_lines" --groups 1 --
mem_case "adversarial: 10,000 groups of 2,000 values, 1,000 distinct each" "$adv_lines" --groups 10000 --distinct 1000 -- --by agent
say

# ---------------------------------------------------------------------------------------
say "## The 30-second analysis window: 500 agents x 30 s in 16 hot shards"
say
rm -rf "$work/hot"
"$X" gen-hot --dir "$work/hot" --agents 500 --secs 30
records=$(cat "$work/hot"/*.jsonl | wc -l)
hyperfine --warmup 5 --runs 50 --export-json "$work/window.json" --style none \
    -n "cfn-cat --since 30s | cfn-agg" "CFN_METRICS_DIR=$work/hot $B/cfn-cat --since 30s | $B/cfn-agg" \
    -n "cat shards | jq (bash design)" "cat $work/hot/*.jsonl | jq -s -c -f bench/agg.jq" \
    >/dev/null
say "| pipeline ($records records) | median ms | mean ms |"
say "|---|---:|---:|"
jq -r '.results[] | "| \(.command | gsub("\\|"; "\\|")) | \(.median * 1000 * 10 | round / 10) | \(.mean * 1000 * 10 | round / 10) |"' "$work/window.json" | tee -a "$out"
say

# The analysis job with silence rules beside the same job with threshold rules only: the
# presence lines and the state's 500 agents are all it adds (target: within 10%).
say "### The analysis run with silence rules (500 agents), beside threshold rules only"
say
mkdir -p "$work/st1" "$work/st2"
hyperfine --warmup 5 --runs 50 --ignore-failure --export-json "$work/silence.json" --style none \
    -n "threshold rules only" "CFN_METRICS_DIR=$work/hot $B/cfn-cat --since 30s | $B/cfn-agg | $B/cfn-alert --state $work/st1/s.json --firing-prom $work/st1/a.prom >/dev/null" \
    -n "with silence rules" "CFN_METRICS_DIR=$work/hot $B/cfn-cat --since 30s | $B/cfn-agg --presence | $B/cfn-alert --state $work/st2/s.json --rule 'silent agent-* 5m' --firing-prom $work/st2/a.prom >/dev/null" \
    >/dev/null
say "| analysis run ($records records, 500 agents) | median ms | mean ms | vs threshold only |"
say "|---|---:|---:|---:|"
jq -r '(.results[0].median) as $base | .results[] | "| \(.command) | \(.median * 1000 * 10 | round / 10) | \(.mean * 1000 * 10 | round / 10) | \(.median / $base * 100 | round / 100)x |"' "$work/silence.json" | tee -a "$out"
say

# ---------------------------------------------------------------------------------------
say "## JSON parser for the aggregation loop"
say
say '```'
"$X" bench-parse --file "$work/small.jsonl" | tee -a "$out"
say '```'
say

# ---------------------------------------------------------------------------------------
say "## cfn-serve: 20 clients polling every 100 ms while a writer appends"
say
rm -rf "$work/serve"; "$X" gen-hot --dir "$work/serve" --agents 500 --secs 600
say '```'
"$X" bench-serve --bin "$B" --dir "$work/serve" --secs "$([ "$quick" = 1 ] && echo 3 || echo 15)" | tee -a "$out"
say '```'
say
if [ "$quick" != 1 ] && [ -d /dev/shm ]; then
    say "## cfn-serve over a day of shards (6,000,000 records on tmpfs)"
    say
    big=$(mktemp -d /dev/shm/cfn-bench-day.XXXXXX)
    "$X" gen-data --lines 6000000 --span 24h | CFN_METRICS_DIR="$big" "$B/cfn-emit" --stdin
    say '```'
    "$X" bench-serve --bin "$B" --dir "$big" --big | tee -a "$out"
    say '```'
    rm -rf "$big"
fi
say "## cfn-serve over 30,000 stray shard-named files"
say
bash bench/stray.sh "$B" "$out" "$([ "$quick" = 1 ] && echo 3000 || echo 30000)"
say
# ---------------------------------------------------------------------------------------
say "## Cold storage: upload to S3 before deletion"
say
bash bench/cold.sh "$B" "$out" "$([ "$quick" = 1 ] && echo 32 || echo 256)"
say
echo "bench: wrote $out"
