#!/usr/bin/env bash
# Runs every test of the workspace. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked
