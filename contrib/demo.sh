#!/usr/bin/env bash
# The whole cfn-metrics pipeline on a temp dir: the README's first command. Builds the tools
# once (contrib/build-release.sh: the same build the package and the chaos soak use) and puts
# target/dist first on PATH; with CFN_DEMO_NO_BUILD=1 it runs the cfn-* tools already on PATH
# (an installed package, or a test's build). Needs no root: shards, archive and outputs all
# live under a fresh temp dir.
set -euo pipefail

if [ "${CFN_DEMO_NO_BUILD:-0}" != 1 ]; then
    root=$(cd "$(dirname "$0")/.." && pwd)
    echo "== building the tools (release, once; a few minutes on a fresh clone)"
    bash "$root/contrib/build-release.sh"
    export PATH="$root/target/dist:$PATH"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/cfn-demo.XXXXXX")
export CFN_METRICS_DIR="$work/shm" CFN_ARCHIVE_DIR="$work/archive" CFN_ALERTS_FILE="$work/alerts.jsonl"
mkdir -p "$CFN_METRICS_DIR" "$CFN_ARCHIVE_DIR"
echo "== demo directory: $work"

echo "== 50 agents emit through cfn-emit (one process per metric, as bash users call it)"
for a in $(seq 1 50); do
    (
        cfn-emit "agent-$a" coordination.time $((100 + a * 7))
        cfn-emit --agent "agent-$a" --unit mb memory_usage_mb $((200 + a * 3))
        cfn-emit --agent "agent-$a" --unit percent coordination.delivery_rate 9$((a % 10)).5
    ) &
done
wait

echo "== one agent streams 20,000 records through a single cfn-emit --stdin"
awk 'BEGIN { for (i = 0; i < 20000; i++) printf "task_duration_ms %d milliseconds\n", (i * 37) % 5000 }' |
    cfn-emit --stdin --agent agent-7 --tag phase=build

echo "== a slow coordination round that should alert"
cfn-emit --agent agent-42 --unit milliseconds --tag phase=consensus coordination.time 12034

echo "== shards:"
ls -l "$CFN_METRICS_DIR" | sed 's/^/   /'

echo "== cfn-cat --since 30s | cfn-agg --format table"
cfn-cat --since 30s | cfn-agg --format table

if command -v cfn-alert >/dev/null; then
    echo "== cfn-cat --since 30s | cfn-agg | cfn-alert --state ... --log ..."
    set +e
    cfn-cat --since 30s | cfn-agg | cfn-alert --state "$work/alert-state.json" --log "$CFN_ALERTS_FILE"
    echo "   cfn-alert exit status: $? (1 = something is firing)"
    set -e
fi

if command -v cfn-promtext >/dev/null; then
    echo "== cfn-cat --since 30s | cfn-agg | cfn-promtext --base-units -o $work/textfile/cfn.prom"
    mkdir -p "$work/textfile"
    cfn-cat --since 30s | cfn-agg | cfn-promtext --base-units -o "$work/textfile/cfn.prom"
    grep -E '^cfn_coordination_time(_seconds)?_count ' "$work/textfile/cfn.prom" | sed 's/^/   /'
fi

if command -v cfn-archive >/dev/null; then
    echo "== cfn-archive run (sync to disk, trim, rotate, prune)"
    cfn-archive run
    ls -l "$CFN_ARCHIVE_DIR" | sed 's/^/   /'
fi

echo "== done; everything is under $work"
if [ "${CFN_DEMO_NO_BUILD:-0}" != 1 ]; then
    echo "== the tools are in $root/target/dist: export PATH=\"$root/target/dist:\$PATH\" (or: just install)"
fi
