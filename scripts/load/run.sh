#!/usr/bin/env bash
# Load test of POST /products against the release binary (BENCHMARKS.md).
# Usage: scripts/load/run.sh [STORE] [DURATION] [CONNECTIONS]
#   STORE: a directory (embedded, default: a fresh temp dir) or a mongodb:// URI.
# Needs wrk (Debian package `wrk`). Prints wrk's report, the server's peak RSS, its CPU time
# per stored product, and that CPU time divided by the CPU time of one serde_json parse +
# serialisation of the same body (scripts/load/json_round_trip.rs), a ratio that moves less with
# the machine and its load than requests per second. PERF_RECORD=1 also records a perf
# profile (call graphs) of the server during the run into perf.data: frame-pointer call
# graphs by default (build with RUSTFLAGS="-C force-frame-pointers=yes"); for any other build,
# PERF_CALL_GRAPH=--call-graph=dwarf PERF_FREQ=199 (DWARF stacks are large: sample less often).
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
cargo build --release --quiet --bin json-round-trip
port="$(free_port)"
export PINV_STORE="$store" PINV_BIND="127.0.0.1:$port" PINV_MONGODB_DATABASE="pinv_load_$$"
RUST_LOG="${RUST_LOG:-info}" "$bin" serve >"$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
wait_ready "$port"
export PINV_TOKEN="$("$bin" token --source billing --ttl 1h)"
# The request template: the example request with __ID__ where every request needs its own
# value (event id, local id, CircuitID), which post.lua fills in.
export PINV_TEMPLATE="$work/seed-template.json"
python3 scripts/load/seed_template.py docs/examples/seed-adi-request.json >"$PINV_TEMPLATE"
# User and system ticks apart, and those of the embedded store's writer thread (0 on MongoDB).
split_ticks() {
  local writer=0 t
  for t in /proc/$pid/task/*; do
    [[ "$(cat "$t/comm" 2>/dev/null)" == pinv-redb-write ]] && writer="$(awk '{print $14 + $15}' "$t/stat")"
  done
  echo "$(awk '{print $14, $15}' "/proc/$pid/stat") $writer"
}
# The yardstick, measured before the load while the machine is quiet: measured after it, it
# met the kernel still writing the server's pages back and read up to 60% high.
round_trip_us="$("${CARGO_TARGET_DIR:-target}/release/json-round-trip" "$PINV_TEMPLATE")"
before_products="$(total_products "http://127.0.0.1:$port" "$PINV_TOKEN")"
before_ticks="$(cpu_ticks "$pid")"
before_split="$(split_ticks)"
# Bytes the server asked the kernel to write (rchar/wchar: every write(2), pwrite(2), send(2) included);
# write_bytes: what reached the block layer (the store's pages, after the page cache).
io_field() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$pid/io"; }
before_disk="$(io_field write_bytes)"
# Commits: the embedded store fsyncs once per group commit, so POSTs per fdatasync is the
# mean batch size (PERF_STAT=1; needs perf and its syscall tracepoints).
if [[ "${PERF_STAT:-}" == 1 ]]; then
  perf stat -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_pwrite64 -p "$pid" -o "$work/perf-stat" -- sleep "${duration%s}" >/dev/null 2>&1 &
  stat_pid=$!
fi
if [[ "${PERF_RECORD:-}" == 1 ]]; then
  perf record -F "${PERF_FREQ:-999}" ${PERF_CALL_GRAPH:--g} -p "$pid" -o perf.data -- sleep "${duration%s}" >/dev/null 2>&1 &
  perf_pid=$!
fi
peak=0
( while kill -0 $pid 2>/dev/null; do
    rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    echo "$rss" > "$work/hwm"; sleep 1
  done ) &
post_load -t2 -c"$connections" -d"$duration" --latency -s scripts/load/post.lua "http://127.0.0.1:$port"
after_ticks="$(cpu_ticks "$pid")"
after_split="$(split_ticks)"
after_disk="$(io_field write_bytes)"
[[ -z "${perf_pid:-}" ]] || wait "$perf_pid"
if [[ -n "${stat_pid:-}" ]]; then
  wait "$stat_pid"
  grep -E "fdatasync|pwrite64" "$work/perf-stat" || true
fi
echo "server peak RSS (VmHWM): $(( $(cat "$work/hwm") / 1024 )) MiB"
products="$(total_products "http://127.0.0.1:$port" "$PINV_TOKEN")"
echo "stored products: $products"
hz="$(getconf CLK_TCK)"
stored=$(( products - before_products ))
awk -v d=$(( after_disk - before_disk )) -v n="$stored" 'BEGIN { printf "bytes written to disk: %.1f KiB per POST\n", d / n / 1024 }'
awk -v t=$(( after_ticks - before_ticks )) -v hz="$hz" -v n="$stored" -v rt="$round_trip_us" 'BEGIN {
  per = t / hz / n * 1e6
  printf "server CPU: %.1f s for %d products = %.0f us per POST\n", t / hz, n, per
  printf "one serde_json parse + serialise of the body: %.1f us; ratio %.1f\n", rt, per / rt
}'
awk -v b="$before_split" -v a="$after_split" -v hz="$hz" -v n="$stored" 'BEGIN {
  split(b, x); split(a, y)
  printf "of which user %.0f us, system %.0f us; the store writer thread %.0f us\n", (y[1] - x[1]) / hz / n * 1e6, (y[2] - x[2]) / hz / n * 1e6, (y[3] - x[3]) / hz / n * 1e6
}'
