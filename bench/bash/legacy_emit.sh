#!/usr/bin/env bash
# A faithful bash implementation of the legacy single-file library, for comparison only:
# the record is built with jq, appended under `flock -x -w 5` on a separate lock file, then
# sync(1) flushes it to disk.
set -euo pipefail
metric=$1 value=$2 unit=${3:-count} tags=${4:-"{}"}
file=${METRICS_FILE:-/dev/shm/cfn-metrics.jsonl}
lock=${METRICS_LOCK_FILE:-/var/lock/cfn-metrics.lock}
ts=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
json=$(jq -n --arg ts "$ts" --arg metric "$metric" --arg val "$value" --arg unit "$unit" --argjson tags "$tags" \
    '{timestamp: $ts, metric: $metric, value: ($val | tonumber), unit: $unit, tags: $tags}')
{
    if flock -x -w 5 200; then
        echo "$json" >>"$file"
        sync
    else
        exit 1
    fi
} 200>"$lock"
