#!/usr/bin/env bash
# Load test of POST /adapters/activation next to POST /products, against one release
# server on one store, one after the other (BENCHMARKS.md).
# Usage: scripts/load/adapters.sh [STORE] [DURATION] [CONNECTIONS]
#   STORE: a directory (embedded, default: a fresh temp dir) or a mongodb:// URI.
# Needs wrk (Debian package `wrk`).
set -euo pipefail
cd "$(dirname "$0")/../.."
store="${1:-}"
duration="${2:-20s}"
connections="${3:-64}"
source scripts/load/common.sh
work="$(mktemp -d "${TMPDIR:-/tmp}/pinv-load.XXXXXX")"
[[ -n "$store" ]] || store="$work/data"
# PINV_BIN: measure that binary (e.g. an older build, to compare) instead of building one.
bin="$work/pinv"
cp "$(pinv_bin)" "$bin"
port="$(free_port)"
export PINV_STORE="$store" PINV_BIND="127.0.0.1:$port" PINV_MONGODB_DATABASE="pinv_load_$$"
RUST_LOG="${RUST_LOG:-warn}" "$bin" serve >"$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
wait_ready "$port"
export PINV_TOKEN="$("$bin" token --source billing --source activation --ttl 1h)"
export PINV_TEMPLATE="$work/seed-template.json" PINV_ACTIVATION="$work/activation.json"
python3 scripts/load/seed_template.py docs/examples/seed-adi-request.json >"$PINV_TEMPLATE"
python3 - tests/fixtures/adapters/activation.json >"$PINV_ACTIVATION" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
subs = a["ActivateSubscriberResellerRequest"]["SubscriberReseller"]
del subs[1:]
subs[0]["subscriberNumber"] = "__NUMBER__"
print(json.dumps(a, ensure_ascii=False, separators=(",", ":")))
PY
echo "== POST /products (seed document, $connections connections, $duration)"
post_load -t2 -c"$connections" -d"$duration" --latency -s scripts/load/post.lua "http://127.0.0.1:$port"
echo "== POST /adapters/activation (one subscriber per request, $connections connections, $duration)"
post_load -t2 -c"$connections" -d"$duration" --latency -s scripts/load/adapters.lua "http://127.0.0.1:$port"
echo "stored products: $(total_products "http://127.0.0.1:$port" "$PINV_TOKEN")"
