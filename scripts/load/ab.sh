#!/usr/bin/env bash
# Compares the CPU per POST of two builds run side by side (BENCHMARKS.md, round 14).
# Usage: scripts/load/ab.sh BIN_A BIN_B [ROUNDS] [DURATION] [CONNECTIONS]
#   (defaults: 6 rounds of 10s, 32 connections to each server)
# Runs.sh measures one build at a time, and on this VM the same build moves by 25% from one
# run to the next (the host's load comes and goes). Here both builds serve at once, each on a
# fresh embedded store with its own wrk, so whatever the host does in a round it does to both:
# each round gives the ratio B/A of the two servers' CPU per stored product, and the median of
# the rounds' ratios is the comparison. Which build's wrk starts first alternates by round.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $# -ge 2 ]] || { sed -n 2,4p "$0" >&2; exit 2; }
rounds="${3:-6}"
duration="${4:-10s}"
connections="${5:-32}"
source scripts/load/common.sh
work="$(mktemp -d "${TMPDIR:-/tmp}/pinv-ab.XXXXXX")"
cp "$1" "$work/pinv-a"
cp "$2" "$work/pinv-b"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'cleanup; rm -rf "$work"' EXIT
export PINV_TEMPLATE="$work/seed-template.json"
python3 scripts/load/seed_template.py docs/examples/seed-adi-request.json >"$PINV_TEMPLATE"
export PINV_TOKEN="$("$work/pinv-a" token --source billing --ttl 1h)"

# start NAME: a server of build NAME on a fresh store; sets port_NAME and pid_NAME.
start() {
  local port
  port="$(free_port)"
  rm -rf "$work/data-$1"
  PINV_STORE="$work/data-$1" PINV_BIND="127.0.0.1:$port" RUST_LOG="${RUST_LOG:-info}" \
    "$work/pinv-$1" serve >"$work/server-$1.log" 2>&1 &
  pids+=($!)
  printf -v "pid_$1" '%s' $!
  printf -v "port_$1" '%s' "$port"
}

# load NAME: wrk against build NAME's server, its report in $work/wrk-NAME.
load() {
  local port_var="port_$1"
  post_load -t1 -c"$connections" -d"$duration" -s scripts/load/post.lua \
    "http://127.0.0.1:${!port_var}" >"$work/wrk-$1"
}

hz="$(getconf CLK_TCK)"
ratios=()
for round in $(seq 1 "$rounds"); do
  # One after the other: a port is free until its server binds it, so two servers started
  # together could be given the same one, and both loads would then reach the first.
  start a
  wait_ready "$port_a"
  start b
  wait_ready "$port_b"
  declare -A ticks products
  for n in a b; do
    pid_var="pid_$n" port_var="port_$n"
    ticks[$n]="$(cpu_ticks "${!pid_var}")"
    products[$n]="$(total_products "http://127.0.0.1:${!port_var}" "$PINV_TOKEN")"
  done
  if (( round % 2 )); then order=(a b); else order=(b a); fi
  load "${order[0]}" &
  first=$!
  load "${order[1]}" &
  second=$!
  wait "$first"
  wait "$second"
  line="round $round:"
  declare -A per
  for n in a b; do
    pid_var="pid_$n" port_var="port_$n"
    t=$(( $(cpu_ticks "${!pid_var}") - ticks[$n] ))
    stored=$(( $(total_products "http://127.0.0.1:${!port_var}" "$PINV_TOKEN") - products[$n] ))
    if (( stored <= 0 )); then
      echo "round $round: build $n stored nothing; the end of its log:" >&2
      tail -n 5 "$work/server-$n.log" >&2
      exit 1
    fi
    per[$n]="$(awk -v t="$t" -v hz="$hz" -v n="$stored" 'BEGIN { printf "%.1f", t / hz / n * 1e6 }')"
    line+=" $n ${per[$n]} us per POST ($stored POSTs),"
  done
  ratio="$(awk -v a="${per[a]}" -v b="${per[b]}" 'BEGIN { printf "%.3f", b / a }')"
  ratios+=("$ratio")
  echo "$line B/A $ratio"
  cleanup
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END {
  m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
  printf "B/A CPU per POST: median %.3f, range %.3f-%.3f over %d rounds\n", m, r[1], r[NR], NR
}'
