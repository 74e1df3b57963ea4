#!/usr/bin/env bash
# The inspector in a real browser: starts `pinv serve` on a memory store (a fresh secret), posts the
# seed package (docs/examples/seed-adi-request.json), logs in through the login form and
# loads the ADI part's inspector page in headless Chromium (the Debian package, installed
# with apt-get when missing). Checks the page's text for the merged name, the source
# legend and the history entries; the screenshot goes to target/inspector.png.
# Run by scripts/test.sh; runs alone too (needs root for the install, or chromium present).
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
if [[ -z "$CHROMIUM" ]]; then
    echo "browser_check: installing chromium (apt-get)"
    apt-get install -y --no-install-recommends chromium >/dev/null || {
        apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null
    }
    CHROMIUM="$(command -v chromium)"
fi

cargo build --locked --quiet --bin pinv
PINV="${CARGO_TARGET_DIR:-$PWD/target}/debug/pinv"
work="$(mktemp -d)"
server_pid=""
cleanup() {
    # KEEP=1 shows the server log, to see why a check failed.
    [[ "${KEEP:-}" ]] && cat "$work/server.log" >&2
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
export PINV_STORE=memory PINV_BIND="127.0.0.1:$port"
PINV_JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
export PINV_JWT_SECRET
"$PINV" serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "$base/health/live" >/dev/null 2>&1 && break
    sleep 0.1
done
token="$("$PINV" token --source '*' --ttl 10m)"

answer="$(curl -fsS -X POST "$base/products?as-adi-package=true" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data-binary @docs/examples/seed-adi-request.json)"
id="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["responseData"][0]["value"]["id"])' <<<"$answer")"
name="$(curl -fsS "$base/products/$id" -H "Authorization: Bearer $token" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["name"])')"

# A page that posts the token to the login form, as a person pasting it would.
cat >"$work/login.html" <<HTML
<!doctype html><form method="post" action="$base/ui/login">
<input name="token" value="$token"><input name="next" value="/ui/products/$id"></form>
<script>document.forms[0].submit()</script>
HTML

chrome() {
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$work/profile" --virtual-time-budget=10000 "$@" 2>>"$work/chromium.log"
}
mkdir -p target
chrome --dump-dom "file://$work/login.html" >"$work/page.html"
chrome --screenshot="$PWD/target/inspector.png" --window-size=1400,2400 \
    "file://$work/login.html" >/dev/null

status=0
check() {
    if grep -qF -- "$2" "$work/page.html"; then
        echo "browser_check: ok: $1"
    else
        echo "browser_check: FAILED: $1 ('$2' not on the page)" >&2
        status=1
    fi
}
escaped_name="$(python3 -c 'import html,sys; print(html.escape(sys.argv[1], quote=False))' "$name")"
check "the merged name" "<h1>$escaped_name</h1>"
check "the source legend" 'class="src src-0">billing</span>'
check "the history entries" "revision 1</strong>"
check "the history names the event" "41-1234567"
check "a value marked by its source" 'class="val src-0"'
if [[ $status -ne 0 ]]; then
    echo "browser_check: the page was:" >&2
    head -c 3000 "$work/page.html" >&2
fi
[[ -s target/inspector.png ]] && echo "browser_check: screenshot: target/inspector.png"
exit "$status"
