#!/usr/bin/env bash
# Read benchmarks over a large embedded store (BENCHMARKS.md, "Lists and reads").
# Usage: scripts/load/list.sh DATA_DIR [COUNT] [DURATION] [CONNECTIONS]
#   Fills DATA_DIR with COUNT synthetic products (`pinv generate`) unless it already holds
#   them, serves it, and measures with wrk at CONNECTIONS: GET by id, a list with an indexed
#   equality filter, a list with an indexed range; then times single requests (curl) of the
#   lists that read every product: sort, no filter, and a filter on a path not indexed.
# Needs wrk (Debian package `wrk`).
set -euo pipefail
cd "$(dirname "$0")/../.."
data="${1:?usage: scripts/load/list.sh DATA_DIR [COUNT] [DURATION] [CONNECTIONS]}"
count="${2:-1000000}"
duration="${3:-20s}"
connections="${4:-64}"
source scripts/load/common.sh
# PINV_BIN: measure that binary instead of building one.
bin="$(pinv_bin)"
export PINV_STORE="$data"
ensure_generated "$bin" "$data" "$count"
port="$(free_port)"
export PINV_BIND="127.0.0.1:$port"
RUST_LOG=warn "$bin" serve >"$data/../list-bench-server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
wait_ready "$port" 300
token="$("$bin" token --source '*' --ttl 1h)"
base="http://127.0.0.1:$port"
auth="Authorization: Bearer $token"
middle=$(( count / 2 ))
circuit=$(printf '.GEN.%09d..ATI.' "$middle")
upper=$(printf '.GEN.%09d..ATI.' $(( middle + 99 )))
id="$(curl -sf -H "$auth" "$base/products?externalReference.id=$circuit&fields=id" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
run() {
  echo "== $1"
  wrk -t2 -c"$connections" -d"$duration" --latency -H "$auth" "$base$2" | grep -E "Latency|50%|99%|Requests/sec|Non-2xx"
}
run "GET by id" "/tmf-api/productInventory/v5/product/$id"
run "list, indexed equality (1 match)" "/tmf-api/productInventory/v5/product?externalReference.id=$circuit"
run "list, indexed range (100 matches)" "/products?externalReference.id.gte=$circuit&externalReference.id.lte=$upper"
once() {
  echo "== $1 (single requests)"
  for _ in 1 2 3; do
    curl -s -o /dev/null -w "%{http_code} %{time_total}s\n" -H "$auth" "$base$2"
  done
}
once "list, sort=-name over every product, limit 100" "/products?sort=-name,id&limit=100"
once "list, no filter, limit 100 (counts every product)" "/products?limit=100"
once "list, filter on a path not indexed" "/products?name=nobody"
echo "server peak RSS (VmHWM): $(( $(awk '/VmHWM/ {print $2}' /proc/$pid/status) / 1024 )) MiB"
