#!/usr/bin/env bash
# Runs every test of PINV. README's test command; CI calls it through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked
