#!/usr/bin/env bash
# Runs every test of PINV. README's test command; CI calls it through .ci/run.
#
# The MongoDB store tests need a wire-protocol server, so plain `cargo test` ignores them
# (`#[ignore = "..."]`). This script installs nx-27017 (a MongoDB wire-protocol server on
# SQLite, from PyPI) into ./.venv when missing, starts it on a free loopback port with a
# fresh database directory, and exports for the tests:
#   PINV_TEST_MONGODB_URI             the server's URI
#   PINV_TEST_MONGODB_ONE_AT_A_TIME   nx-27017's transactions are not isolated from each other
#   PINV_TEST_NX_BIN                  the nx-27017 executable (the outage tests start their own)
# Set PINV_TEST_MONGODB_URI yourself to test against a real MongoDB replica set instead (no
# server is started then).
#
# With no arguments: `cargo test` (the server tests are listed as ignored), then the ignored
# tests that need this server (`-- --ignored`: tests/store_conformance_mongo.rs,
# tests/remerge_mongo.rs, tests/mongo_outage.rs, tests/mongo_round_trips.rs, the API suite's
# mongo_outage, mongo_isolation and hub::two_instances), then the
# black-box API suite again on the embedded and the MongoDB store (PINV_TEST_API_STORE).
# tests/api/mongo_instances.rs stays ignored: it needs a replica set (README, "Tests").
# With arguments they are passed to `cargo test` as they are, with the server running, e.g.
#   ./scripts/test.sh --test remerge_mongo -- --include-ignored
# Last (no arguments only), it fuzzes a debug server against its own /openapi.json with
# schemathesis (also installed into ./.venv; a failure fails the suite), and loads the
# inspector page of the seed package in headless Chromium (scripts/browser_check.sh, which
# installs the Debian package when missing; screenshot in target/inspector.png).
set -euo pipefail
cd "$(dirname "$0")/.."

NX_VERSION="0.8.1"
SCHEMATHESIS_VERSION="4.32.5"
VENV=".venv"
NX_BIN="$PWD/$VENV/bin/nx-27017"

installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("nx-27017"))' 2>/dev/null || true)"
if [[ ! -x "$NX_BIN" || "$installed" != "$NX_VERSION" ]]; then
    echo "test.sh: installing nx-27017==$NX_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "nx-27017==$NX_VERSION"
fi

# Installs a PyPI package into $VENV unless that exact version is there.
ensure_installed() {
    local package="$1" version="$2" have
    have="$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$package'))" 2>/dev/null || true)"
    if [[ "$have" != "$version" ]]; then
        echo "test.sh: installing $package==$version into $VENV"
        [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "$package==$version"
    fi
}

# Fuzzes a debug server on the memory store against its own /openapi.json: every documented
# operation, fixed seed, bounded time. `--checks all` except, for POST /products only,
# positive_data_acceptance (see the config below).
run_schemathesis() {
    ensure_installed schemathesis "$SCHEMATHESIS_VERSION"
    cargo build --locked --bin pinv
    local port token status=0
    port="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    # A throwaway secret: the token only has to work against this one server.
    export PINV_JWT_SECRET="schemathesis-only-secret-$(date +%s%N)-0123456789"
    token="$("${CARGO_TARGET_DIR:-target}/debug/pinv" token --source '*')"
    # JSON Schema cannot state the write path's cross-document rules: a product needs an id
    # or an identity-bearing externalReference (per the merge rules' identity types), a
    # package's parts need exactly one ADI, ACCESS and PORT role (per the rules' role
    # globs) and distinct match keys. Schema-valid bodies that break them are rightly 400,
    # so "schema-valid is accepted" cannot hold for POST /products; every other check,
    # including undocumented status codes and that schema-invalid bodies are refused, does.
    # The TMF637 POST and PATCH store bare products under the same rules.
    # (Checks are chosen here, not with --checks: a command-line choice would override the
    # per-operation one.)
    cat >"$workdir/schemathesis.toml" <<'TOML'
checks.enabled = true

[[operations]]
include-name = "POST /products"
checks.positive_data_acceptance.enabled = false

# The same rules hold for a bare TMF637 product, and for the contribution a patch makes.
[[operations]]
include-name = "POST /tmf-api/productInventory/v5/product"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-name = "PATCH /tmf-api/productInventory/v5/product/{id}"
checks.positive_data_acceptance.enabled = false

# The fuzzer's token may write for every source (`*`), so a TMF write must name its source
# in PINV-Source (400 BAD_HEADER otherwise): optional in the document, because a token for
# one source needs no header.
[[operations]]
include-name = "DELETE /tmf-api/productInventory/v5/product/{id}"
checks.positive_data_acceptance.enabled = false

# A callback must be an http(s) URL with a host the URL parser accepts, and the query a valid
# event query: rules JSON Schema cannot state exactly, so schema-valid strings may be 400.
[[operations]]
include-name = "POST /tmf-api/productInventory/v5/hub"
checks.positive_data_acceptance.enabled = false
TOML
    PINV_STORE=memory PINV_BIND="127.0.0.1:$port" "${CARGO_TARGET_DIR:-target}/debug/pinv" serve >"$workdir/serve.log" 2>&1 &
    serve_pid=$!
    for _ in $(seq 1 150); do
        # Python, not curl: a fresh machine has Python for sure.
        "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
            "http://127.0.0.1:$port/health/live" >/dev/null 2>&1 && break
        sleep 0.2
    done
    (cd "$workdir" && "$OLDPWD/$VENV/bin/schemathesis" --config-file "$workdir/schemathesis.toml" \
        run "http://127.0.0.1:$port/openapi.json" -H "Authorization: Bearer $token" \
        --seed 1 --max-examples 50 --max-time 120 --no-color) || status=$?
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=""
    if [[ "$status" -ne 0 ]]; then
        echo "test.sh: FAILED: schemathesis found problems (server log: $workdir/serve.log)" >&2
        tail -n 50 "$workdir/serve.log" >&2 || true
    fi
    return "$status"
}

workdir="$(mktemp -d "${TMPDIR:-/tmp}/pinv-test-mongo.XXXXXX")"
nx_pid=""
serve_pid=""
cleanup() {
    if [[ -n "$serve_pid" ]] && kill -0 "$serve_pid" 2>/dev/null; then
        kill "$serve_pid" 2>/dev/null || true
    fi
    if [[ -n "$nx_pid" ]] && kill -0 "$nx_pid" 2>/dev/null; then
        kill "$nx_pid" 2>/dev/null || true
        wait "$nx_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

if [[ -n "${PINV_TEST_MONGODB_URI:-}" ]]; then
    echo "test.sh: using the MongoDB server at PINV_TEST_MONGODB_URI"
else
    # A free loopback port: bind port 0, read it, release it.
    port="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"

    "$NX_BIN" --data-dir "$workdir/data" --host 127.0.0.1 -p "$port" \
        --pid-file "$workdir/nx.pid" --log-file "$workdir/nx.log" >"$workdir/nx.out" 2>&1 &
    nx_pid=$!

    # Wait until it answers a ping (not merely accepts TCP), at most 30 s.
    ready=""
    for _ in $(seq 1 150); do
        if ! kill -0 "$nx_pid" 2>/dev/null; then
            break
        fi
        if "$VENV/bin/python" - "$port" <<'EOF' 2>/dev/null; then
import sys
from pymongo import MongoClient
c = MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/?directConnection=true",
                serverSelectionTimeoutMS=500, connectTimeoutMS=500)
c.admin.command("ping")
EOF
            ready=yes
            break
        fi
        sleep 0.2
    done
    if [[ -z "$ready" ]]; then
        echo "test.sh: FAILED: nx-27017 did not start on 127.0.0.1:$port; its output:" >&2
        cat "$workdir/nx.out" "$workdir/nx.log" >&2 2>/dev/null || true
        exit 1
    fi
    echo "test.sh: nx-27017 $NX_VERSION is listening on 127.0.0.1:$port (pid $nx_pid)"

    export PINV_TEST_MONGODB_URI="mongodb://127.0.0.1:$port/?directConnection=true"
    export PINV_TEST_MONGODB_ONE_AT_A_TIME=1
fi
export PINV_TEST_NX_BIN="$NX_BIN"

status=0
cargo test --locked "$@" || status=$?
if [[ $# -eq 0 ]]; then
    echo "test.sh: the tests that need a MongoDB server (ignored above)"
    cargo test --locked --test store_conformance_mongo --test remerge_mongo \
        --test mongo_outage --test mongo_round_trips -- --ignored || status=$?
    cargo test --locked --test api mongo_outage:: -- --ignored || status=$?
    cargo test --locked --test api mongo_isolation:: -- --ignored || status=$?
    cargo test --locked --test api hub::two_instances -- --ignored || status=$?
    # The black-box API suite once more on each persistent store (it ran on the memory
    # store above). Their temp directories go with $workdir.
    for store in embedded mongodb; do
        echo "test.sh: the API suite on the $store store"
        TMPDIR="$workdir" PINV_TEST_API_STORE="$store" cargo test --locked --test api || status=$?
    done
    echo "test.sh: schemathesis against /openapi.json"
    run_schemathesis || status=$?
    echo "test.sh: the inspector page in headless Chromium"
    ./scripts/browser_check.sh || status=$?
fi
exit "$status"
