#!/usr/bin/env bash
# Instructions per POST /products, counted by callgrind (BENCHMARKS.md): a measure of the
# request path's CPU that does not move with the machine's load, for comparing two builds on a
# day when requests per second and the CPU-time ratio of run.sh are too noisy to tell 5% apart.
# Usage: scripts/load/instructions.sh [POSTS]   (PINV_BIN=path measures another build)
# Runs the release binary under valgrind on a fresh embedded store, sends 50 warm-up POSTs,
# then POSTS (default 300) more one at a time (each a new seed product, as post.lua makes), and
# prints the instructions per POST of the actix workers (parse, validate, plan, merge, encode,
# answer, log line) and of the store's writer thread. One connection, so every commit holds one
# POST: the writer's figure is its cost at a batch of one, higher than under load, where about
# 25 POSTs share a commit (run.sh's PERF_STAT=1). Instructions are not time: lz4 and JSON
# parsing run at a high IPC, the server under load at about half the yardstick's; valgrind has
# no SHA extensions, so the event digest's SHA-256 runs in software here (about 12% of the
# request path's instructions) where the hardware does it in about 1% of the time (perf).
set -euo pipefail
cd "$(dirname "$0")/../.."
posts="${1:-300}"
source scripts/load/common.sh
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
work="$(mktemp -d "${TMPDIR:-/tmp}/pinv-instr.XXXXXX")"
bin="$work/pinv"
cp "$(pinv_bin)" "$bin"
port="$(free_port)"
export PINV_STORE="$work/data" PINV_BIND="127.0.0.1:$port"
RUST_LOG="${RUST_LOG:-info}" valgrind --tool=callgrind --separate-threads=yes \
  --callgrind-out-file="$work/cg.out" "$bin" serve >"$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; [[ -n "${KEEP:-}" ]] || rm -rf "$work"' EXIT
wait_ready "$port" 300
token="$("$bin" token --source billing --ttl 1h)"
python3 scripts/load/seed_template.py docs/examples/seed-adi-request.json >"$work/template.json"
post() { # post FIRST COUNT: COUNT sequential POSTs over one keep-alive connection, all 201.
  python3 - "$port" "$token" "$work/template.json" "$1" "$2" <<'EOF'
import http.client, sys
port, token, template, first, count = sys.argv[1], sys.argv[2], open(sys.argv[3]).read(), int(sys.argv[4]), int(sys.argv[5])
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=120)
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
for n in range(first, first + count):
    conn.request("POST", "/products", template.replace("__ID__", f"instr-{n}").encode(), headers)
    answer = conn.getresponse()
    body = answer.read()
    if answer.status != 201:
        sys.exit(f"POST {n}: {answer.status} {body[:300]!r}")
EOF
}
post 0 50
callgrind_control -z "$pid" >/dev/null 2>&1
post 50 "$posts"
callgrind_control -d "$pid" >/dev/null 2>&1
# One file per thread; each thread's total is its "summary:"/"totals:" line. The writer is the
# thread that runs the group commit.
workers=0 writer=0
for f in "$work"/cg.out.*-*; do
  total="$(awk '/^(summary|totals):/ {print $2; exit}' "$f")"
  [[ -n "$total" ]] || continue
  # grep -c reads to the end: with -q, callgrind_annotate's SIGPIPE would fail the pipe.
  if [[ "$(callgrind_annotate --inclusive=yes "$f" | grep -c 'embedded::apply_batch')" != 0 ]]; then
    writer=$(( writer + total ))
  else
    workers=$(( workers + total ))
  fi
done
# The yardstick in instructions: json-round-trip with 1,400 and with 700 iterations makes 1,540
# and 770 round trips of the body (a tenth more to warm up); the difference leaves out start-up.
cargo build --release --quiet --bin json-round-trip
round_trips() {
  valgrind --tool=callgrind --callgrind-out-file="$work/rt.$1" \
    "${CARGO_TARGET_DIR:-target}/release/json-round-trip" "$work/template.json" "$1" >/dev/null 2>&1
  awk '/^(summary|totals):/ {print $2; exit}' "$work/rt.$1"
}
yardstick=$(( ($(round_trips 1400) - $(round_trips 700)) / 770 ))
awk -v w="$workers" -v s="$writer" -v n="$posts" -v y="$yardstick" 'BEGIN {
  printf "instructions per POST: %.0f on the request path, %.0f in the writer (batches of one), %.0f in all\n", w / n, s / n, (w + s) / n
  printf "one serde_json parse + serialise of the body: %d instructions; request path %.1f of them\n", y, w / n / y
}'
