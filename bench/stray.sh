#!/usr/bin/env bash
# cfn-serve's dashboard over a hot directory with 30,000 stray shard-named files (empty files
# of ours, as a careless or hostile neighbour leaves them), side by side with the same
# request over the real shards alone: the floor. Each request has its own query string, so
# the one-second response cache never answers it.
#
#   bash bench/stray.sh BIN_DIR OUT_FILE [STRAY_FILES]
set -euo pipefail
B=$1
out=$2
stray=${3:-30000}
X=$(dirname "$B")/release/xtask
work=$(mktemp -d "${TMPDIR:-/tmp}/cfn-stray.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
say() { echo "$@" | tee -a "$out"; }

port_of() { # LOG -> the port cfn-serve says it listens on
    for _ in $(seq 300); do
        port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$1")
        [ -n "$port" ] && { echo "$port"; return; }
        sleep 0.1
    done
    echo "cfn-serve did not start" >&2; exit 1
}

for d in clean stray; do
    "$X" gen-hot --dir "$work/$d" --agents 500 --secs 600 >/dev/null
done
for n in $(seq 100 $((100 + stray - 1))); do : >"$work/stray/cfn-metrics-$n.jsonl"; done
"$B/cfn-serve" --listen 127.0.0.1:0 --dir "$work/clean" >/dev/null 2>"$work/clean.log" &
"$B/cfn-serve" --listen 127.0.0.1:0 --dir "$work/stray" >/dev/null 2>"$work/stray.log" &
stray_pid=$!
clean=$(port_of "$work/clean.log")
dirty=$(port_of "$work/stray.log")
say '```'
# Medians of 30 distinct requests against each server.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for port in "$clean" "$dirty"; do
    for n in $(seq 30); do
        curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/api/dashboard?range=1h&n=$n"
    done | median >"$work/$port.median"
done
c=$(cat "$work/$clean.median"); s=$(cat "$work/$dirty.median")
ms() { awk "BEGIN{printf \"%.1f\", $1*1000}"; }
say "dashboard request, 1 h, 16 shards:                       median $(ms "$c") ms (the floor)"
say "dashboard request, 1 h, 16 shards + $stray stray files:  median $(ms "$s") ms ($(awk "BEGIN{printf \"%.2f\", $s/$c}")x the floor; target 100 ms)"
# The refresher looks at every file once a second: its cost while nobody asks.
ticks() { awk '{print $14 + $15}' "/proc/$stray_pid/stat"; }
t0=$(ticks); sleep 10; t1=$(ticks)
say "idle server with the stray files: $(awk "BEGIN{printf \"%.1f\", ($t1 - $t0) / $(getconf CLK_TCK) / 10 * 100}")% of a core (one look a second)"
say '```'
