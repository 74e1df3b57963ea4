#!/usr/bin/env bash
# POST load on the MongoDB store through a fresh nx-27017, and nx-27017's CPU per POST
# (BENCHMARKS.md, "Issue 9, round 10").
# Usage: scripts/load/nx_cpu.sh [DURATION] [CONNECTIONS]
# Needs nx-27017 in ./.venv (./scripts/test.sh installs it) and wrk. Starts nx-27017 on a
# free port with an empty data directory, runs scripts/load/run.sh against it (PINV_BIN
# measures another build), and prints nx-27017's utime + stime over the whole run (its start
# and idle moments included) divided by the products stored.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration="${1:-15s}"
connections="${2:-64}"
source scripts/load/common.sh
nx_bin="$PWD/.venv/bin/nx-27017"
[[ -x "$nx_bin" ]] || { echo "needs $nx_bin: run ./scripts/test.sh once (it installs nx-27017)" >&2; exit 1; }
work="$(mktemp -d "${TMPDIR:-/tmp}/pinv-nx.XXXXXX")"
port="$(free_port)"
"$nx_bin" --data-dir "$work/data" --host 127.0.0.1 -p "$port" --pid-file "$work/nx.pid" \
  --log-file "$work/nx.log" >"$work/nx.out" 2>&1 &
nx=$!
trap 'kill $nx 2>/dev/null || true; wait $nx 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 150); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  kill -0 "$nx" 2>/dev/null || { cat "$work/nx.out" >&2; exit 1; }
  sleep 0.2
done
before="$(cpu_ticks "$nx")"
scripts/load/run.sh "mongodb://127.0.0.1:$port/?directConnection=true" "$duration" "$connections" | tee "$work/run.out"
after="$(cpu_ticks "$nx")"
products="$(awk '/^stored products:/ {print $3}' "$work/run.out")"
awk -v t=$(( after - before )) -v hz="$(getconf CLK_TCK)" -v n="$products" 'BEGIN {
  printf "nx-27017 CPU: %.1f s for %d products = %.2f ms per POST\n", t / hz, n, t / hz / n * 1000
}'
