#!/usr/bin/env bash
# A faithful bash implementation of the sharded design, for comparison only:
# shard = the agent id's trailing digits mod CFN_SHARDS, a timestamp from date(1), and a
# non-blocking `flock -n` on the shard, so a busy shard drops the record (exit 1).
agent=$1 metric=$2 value=$3
dir=${CFN_METRICS_DIR:-/dev/shm}
shards=${CFN_SHARDS:-16}
digits=${agent##*[!0-9]}
shard=$(( 10#${digits:-0} % shards ))
file="$dir/cfn-metrics-$shard.jsonl"
ts=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
line=$(printf '{"timestamp":"%s","agent":"%s","metric":"%s","value":%s}' "$ts" "$agent" "$metric" "$value")
{
    flock -n 9 || exit 1
    printf '%s\n' "$line" >&9
} 9>>"$file"
