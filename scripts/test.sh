#!/usr/bin/env bash
# Runs every test of the workspace. Used by the README and by .ci/run.
#
# 1. the default members' unit, integration and doc tests;
# 2. the shuttle model-checking tests, which need the store built with
#    `--cfg shuttle` (own target dir, so the normal build is not invalidated).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked
CARGO_TARGET_DIR=target/shuttle RUSTFLAGS="--cfg shuttle" \
    cargo test --locked -p kvblocks --test shuttle_races
