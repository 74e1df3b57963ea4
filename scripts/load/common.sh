# Shared by the load scripts (sourced, from the repository's root).

# The secret every load script signs its tokens with.
export PINV_JWT_SECRET="load-test-secret-0123456789abcdef0123456789"

command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }

# A free loopback port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# The pinv binary to measure: $PINV_BIN (an older build, to compare), else a fresh release build.
pinv_bin() {
  if [[ -n "${PINV_BIN:-}" ]]; then
    echo "$PINV_BIN"
  else
    cargo build --release --quiet --bin pinv >&2
    echo "${CARGO_TARGET_DIR:-target}/release/pinv"
  fi
}

# wait_ready PORT [SECONDS]: waits for the server's readiness (60 s by default; a large store
# may rebuild its list index at start); fails loudly when it does not come.
wait_ready() {
  local seconds="${2:-60}"
  for _ in $(seq 1 $(( seconds * 10 ))); do
    curl -sf "http://127.0.0.1:$1/health/ready" >/dev/null && return 0
    sleep 0.1
  done
  echo "the server on port $1 did not become ready within $seconds s" >&2
  return 1
}

# ensure_generated BIN DIR COUNT: fills DIR with COUNT synthetic products (`pinv generate`)
# unless it already holds a store.
ensure_generated() {
  if [[ ! -e "$2/pinv.redb" ]]; then
    PINV_STORE="$2" /usr/bin/time -f "generate: %e s, peak RSS %M KiB" "$1" generate --count "$3" --batch 5000
  fi
}

# cpu_ticks PID: utime + stime of every thread of the process, in clock ticks
# (getconf CLK_TCK a second).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# total_products BASE TOKEN: the store's product count (X-Total-Count of a one-item list).
total_products() {
  curl -sf -H "Authorization: Bearer $2" "$1/products?limit=1" -D - -o /dev/null \
    | tr -d '\r' | awk -F': ' 'tolower($1)=="x-total-count" {print $2}'
}

# post_load ARGS...: wrk with ARGS, its report on stdout; fails loudly when any answer was not
# a success (the Lua scripts no longer look at answers unless PINV_LOAD_CHECK=1).
post_load() {
  local report
  report="$(wrk "$@")"
  echo "$report"
  if grep -q "Non-2xx" <<<"$report"; then
    echo "some requests failed; PINV_LOAD_CHECK=1 prints the first answers" >&2
    return 1
  fi
}
