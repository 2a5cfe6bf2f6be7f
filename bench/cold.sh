#!/usr/bin/env bash
# Cold storage upload throughput: cfn-archive prune --upload vs `aws s3 cp` (PyPI awscli),
# the same file to the same loopback S3 server (moto_server, PyPI moto[server]), side by
# side with hyperfine. Called by bench/run.sh with the binaries' directory and the results
# file; skips with a reason when moto_server or aws is missing.
#
#   bash bench/cold.sh target/dist bench/results.md [SIZE_MIB]
set -euo pipefail
bin=$1 out=$2 size_mib=${3:-256}
say() { echo "$@" | tee -a "$out"; }
for tool in moto_server aws hyperfine jq; do
    command -v "$tool" >/dev/null || { say "(cold storage benchmark skipped: $tool is missing; pip install 'moto[server]' awscli)"; exit 0; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/cfn-cold.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_server -p "$port" >"$work/moto.log" 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_SHARED_CREDENTIALS_FILE=/nonexistent AWS_CONFIG_FILE=/nonexistent
ep=http://127.0.0.1:$port
for _ in $(seq 50); do curl -s -o /dev/null "$ep" && break; sleep 0.2; done
aws --endpoint-url "$ep" s3 mb s3://bench-cold >/dev/null
# Incompressible, like a gzipped day file.
head -c $((size_mib << 20)) /dev/urandom >"$work/day.gz"
mkdir -p "$work/hot" "$work/arch"
"$bin/cfn-archive" --dir "$work/hot" --archive-dir "$work/arch" sync >/dev/null
# Each cfn-archive run gets the file back and its objects removed (they are named for their
# content, under host=…/dt=…/, and found again by content otherwise), so every run uploads.
prepare="aws --endpoint-url $ep s3 rm s3://bench-cold/cfn/ --recursive --only-show-errors; cp $work/day.gz $work/arch/cfn-metrics-20200101-0.jsonl.gz"
hyperfine --warmup 1 --runs 5 --export-json "$work/cold.json" --style none \
    -n "aws s3 cp" --prepare "aws --endpoint-url $ep s3 rm s3://bench-cold/aws/day.gz --only-show-errors" \
    "aws --endpoint-url $ep s3 cp $work/day.gz s3://bench-cold/aws/day.gz --only-show-errors" \
    -n "cfn-archive prune --upload" --prepare "$prepare" \
    "$bin/cfn-archive --dir $work/hot --archive-dir $work/arch prune --keep 30d --upload s3://bench-cold/cfn/ --endpoint $ep" \
    >/dev/null 2>&1
med() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .median' "$work/cold.json"; }
aws_s=$(med "aws s3 cp")
cfn_s=$(med "cfn-archive prune --upload")
say "| uploader ($size_mib MiB, loopback moto_server) | median s | MB/s | vs aws s3 cp |"
say "|---|---:|---:|---:|"
awk -v a="$aws_s" -v c="$cfn_s" -v m="$size_mib" 'BEGIN {
    printf "| aws s3 cp (8 MiB parts, 10 threads) | %.2f | %.0f | 1.00x |\n", a, m*1.048576/a
    printf "| cfn-archive prune --upload (16 MiB parts, up to 8 in flight, the file read twice: its MD5 for the object name, then the parts hashed on the way; three LISTs and a HEAD before, a HEAD after) | %.2f | %.0f | %.2fx |\n", c, m*1.048576/c, c/a
}' | tee -a "$out"
