#!/usr/bin/env bash
# Runs every test of the workspace. Used by the README and by .ci/run.
#
# 1. the default members' unit, integration and doc tests, then kvblocks
#    again with its `prometheus` feature (off by default): the exporter's
#    unit and doc tests, the example server, and the scrape test;
# 2. the shuttle model-checking tests (`--cfg shuttle`: randomized and PCT
#    schedules of the store's races);
# 3. the loom model-checking tests (`--cfg loom`: exhaustive schedules and
#    weak-memory outcomes of the smallest races);
# 4. Miri over the tests that exercise the store's raw pointer, under
#    Stacked Borrows and Tree Borrows (installs nightly's miri component if
#    it is missing).
#
# Each model checker builds in its own target directory, so the normal build
# is not invalidated. SKIP_MIRI=1 skips step 4 (for quick local runs).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "workspace tests"
cargo test --locked

step "kvblocks with feature prometheus"
cargo build --locked -p kvblocks --features prometheus --example metrics_server
cargo test --locked -p kvblocks --features prometheus --doc metrics::prometheus
cargo test --locked -p kvblocks --features prometheus --lib --test prometheus_scrape

step "shuttle"
CARGO_TARGET_DIR=target/shuttle RUSTFLAGS="--cfg shuttle" \
    cargo test --locked --release -p kvblocks --test shuttle_races

step "loom"
CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
    cargo test --locked --release -p kvblocks --test loom_races -- --test-threads=1

if [[ "${SKIP_MIRI:-0}" == 1 ]]; then
    step "miri skipped (SKIP_MIRI=1)"
    exit 0
fi

step "miri (installing nightly's miri component if missing)"
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal --component miri,rust-src
fi
cargo +nightly miri setup >/dev/null
# The tests that reach the store through its raw pointer: guard lifetimes,
# the audit's regressions, the shadow memory and a manager dropped while
# threads release (the tests scale themselves down under Miri).
MIRI_TESTS=(--test regressions --test lifecycle --test store_lifetime --test shadow_memory)
for borrows in "" "-Zmiri-tree-borrows"; do
    step "miri ${borrows:-(stacked borrows)}"
    MIRIFLAGS="$borrows" cargo +nightly miri test --locked -p kvblocks "${MIRI_TESTS[@]}"
    MIRIFLAGS="$borrows" cargo +nightly miri test --locked -p kvblocks --test concurrency \
        manager_dropped_while_threads_still_release_their_blocks
    # A panicking policy may strand slots by design (a leak, never unsound).
    MIRIFLAGS="$borrows -Zmiri-ignore-leaks" \
        cargo +nightly miri test --locked -p kvblocks --test policy_panics
done
