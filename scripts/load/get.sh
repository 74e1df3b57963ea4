#!/usr/bin/env bash
# GET /products/{id} at 64 connections over random products of a generated store
# (BENCHMARKS.md, "Issue 9, round 3").
# Usage: scripts/load/get.sh DATA_DIR [COUNT] [DURATION] [CONNECTIONS]
#   Fills DATA_DIR with COUNT synthetic products (`pinv generate`) unless it already holds
#   them, serves it, picks 2,000 of them at random and GETs them in random order with wrk.
#   Prints wrk's report and the server's CPU time per GET (utime + stime over the run).
# Needs wrk (Debian package `wrk`).
set -euo pipefail
cd "$(dirname "$0")/../.."
data="${1:?usage: scripts/load/get.sh DATA_DIR [COUNT] [DURATION] [CONNECTIONS]}"
count="${2:-1000000}"
duration="${3:-10s}"
connections="${4:-64}"
source scripts/load/common.sh
# PINV_BIN: measure that binary instead of building one.
bin="$(pinv_bin)"
export PINV_STORE="$data"
ensure_generated "$bin" "$data" "$count"
work="$(mktemp -d "${TMPDIR:-/tmp}/pinv-get.XXXXXX")"
port="$(free_port)"
export PINV_BIND="127.0.0.1:$port"
RUST_LOG="${RUST_LOG:-info}" "$bin" serve >"$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
wait_ready "$port" 300
token="$("$bin" token --source '*' --ttl 1h)"
base="http://127.0.0.1:$port"
# The ids of 2,000 random generated products, found by their circuit (an indexed path).
export PINV_IDS="$work/ids.txt"
python3 - "$base" "$token" "$count" >"$PINV_IDS" <<'PY'
import json, random, sys, urllib.request
base, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for n in random.sample(range(count), min(2000, count)):
    url = f"{base}/products?externalReference.id=.GEN.{n:09d}..ATI.&fields=id"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    for product in json.load(urllib.request.urlopen(req)):
        print(product["id"])
PY
before="$(cpu_ticks "$pid")"
out="$(wrk -t2 -c"$connections" -d"$duration" --latency -s scripts/load/get.lua -H "Authorization: Bearer $token" "$base")"
after="$(cpu_ticks "$pid")"
echo "$out"
requests="$(echo "$out" | awk '/requests in/ {print $1}')"
awk -v t=$(( after - before )) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
  'BEGIN { printf "server CPU per GET: %.1f us\n", t / hz / n * 1e6 }'
echo "server peak RSS (VmHWM): $(( $(awk '/VmHWM/ {print $2}' /proc/$pid/status) / 1024 )) MiB"
