#!/usr/bin/env bash
# POST /products throughput with 0, 1 and 10 hub subscribers, and delivery latency from
# commit to listener (BENCHMARKS.md, "Hub"). Release binary, fresh embedded store per case.
# Usage: scripts/load/hub.sh [DURATION] [CONNECTIONS] [SUBSCRIBER COUNTS...]
# Needs wrk. The listener is examples/hub_listener.rs (204 to every event, latency stats).
set -euo pipefail
cd "$(dirname "$0")/../.."
duration="${1:-20s}"
connections="${2:-64}"
counts=("${@:3}")
[[ ${#counts[@]} -gt 0 ]] || counts=(0 1 10)
source scripts/load/common.sh
# PROFILE=debug measures a debug build (only to compare the cases when a release build is
# out of reach; its numbers are not the targets').
profile="${PROFILE:-release}"
if [[ $profile == release ]]; then
  cargo build --release --quiet --bin pinv --example hub_listener
else
  cargo build --quiet --bin pinv --example hub_listener
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/pinv-hub-load.XXXXXX")"
target="${CARGO_TARGET_DIR:-target}/$profile"
# PINV_BIN: measure that binary (e.g. an older build, to compare) instead of the one just built.
pinv="${PINV_BIN:-$target/pinv}"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
export PINV_TEMPLATE="$work/seed-template.json"
python3 scripts/load/seed_template.py docs/examples/seed-adi-request.json >"$PINV_TEMPLATE"
for n in "${counts[@]}"; do
  port="$(free_port)"; lport="$(free_port)"
  "$target/examples/hub_listener" "$lport" & lpid=$!; pids+=("$lpid")
  PINV_STORE="$work/data-$n" PINV_BIND="127.0.0.1:$port" RUST_LOG=warn "$pinv" serve \
    >"$work/server-$n.log" 2>&1 & pid=$!; pids+=("$pid")
  wait_ready "$port"
  export PINV_TOKEN="$("$pinv" token --source billing --ttl 1h)"
  hubs=()
  for _ in $(seq 1 "$n"); do
    hubs+=("$(curl -sf -H "Authorization: Bearer $PINV_TOKEN" -H 'Content-Type: application/json' \
      -d "{\"callback\": \"http://127.0.0.1:$lport/events\"}" \
      "http://127.0.0.1:$port/tmf-api/productInventory/v5/hub" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')")
  done
  echo "=== $n subscriber(s)"
  ticks_before="$(cpu_ticks "$pid")"
  post_load -t2 -c"$connections" -d"$duration" --latency -s scripts/load/post.lua "http://127.0.0.1:$port" \
    | grep -E "Requests/sec|50%|99%|requests in"
  if [[ $n -gt 0 ]]; then
    start=$(date +%s)
    for _ in $(seq 1 180); do
      pending=0
      for h in "${hubs[@]}"; do
        p=$(curl -sf -H "Authorization: Bearer $PINV_TOKEN" "http://127.0.0.1:$port/tmf-api/productInventory/v5/hub/$h" \
          | python3 -c 'import json,sys; print(json.load(sys.stdin)["deliveryStatus"]["pendingCount"])')
        pending=$((pending + p))
      done
      [[ $pending -eq 0 ]] && break
      sleep 1
    done
    echo "outbox drained $(( $(date +%s) - start )) s after wrk ended (pending left: $pending)"
    echo "delivery latency (eventTime to listener): $(curl -sf "http://127.0.0.1:$lport/stats")"
  fi
  # The server's CPU from the start of the load until its events are delivered, per stored
  # product: what a POST costs with its deliveries, a figure that moves less with the
  # machine's load than POSTs per second do.
  ticks="$(( $(cpu_ticks "$pid") - ticks_before ))"
  products="$(total_products "http://127.0.0.1:$port" "$PINV_TOKEN")"
  echo "server CPU per stored product, deliveries included: $(( ticks * 1000000 / $(getconf CLK_TCK) / products )) us ($products products)"
  kill "$pid" "$lpid"; wait "$pid" "$lpid" 2>/dev/null || true
done
