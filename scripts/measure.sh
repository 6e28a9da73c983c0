#!/usr/bin/env bash
# Runs every side-by-side comparison of BENCHMARKS.md ("Current figures with
# every layer") in one go, in a fixed order, printing the load before each.
# Takes about five minutes on a quiet 2-vCPU machine; run nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p kvblocks-compare --bins
run() {
    echo "### $1 $(date +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"
    shift
    "$@"
}
run scaling target/release/scaling
run tiers target/release/tiers
run compare cargo bench -q -p kvblocks-compare --bench compare -- --warm-up-time 1 --measurement-time 3
run table target/release/table
run sequence target/release/sequence
run events cargo bench -q -p kvblocks --bench events
run router cargo bench -q -p kvblocks-router --bench router
echo "### done $(date +%H:%M:%S)"
