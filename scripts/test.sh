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
# Steps 2-4 run the tests of the `kvblocks-checks` crate, which depends on
# kvblocks alone, so each checker builds about 20 crates rather than the 96
# of kvblocks' dev dependencies; each builds in its own target directory, so
# the normal build is not invalidated. SKIP_MIRI=1 skips step 4 (for quick
# local runs). Each step prints the seconds since the start.
#
# kvblocks-nats' tests need a NATS server with JetStream on 127.0.0.1:4222.
# If nothing listens there, this script starts one (installing Debian's
# `nats-server` package if the binary is missing) with a temporary store,
# and stops it at exit; a server that was already running is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }

listening() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }

NATS_PID=""
NATS_DIR=""
stop_nats() {
    if [[ -n "$NATS_PID" ]]; then
        kill "$NATS_PID" 2>/dev/null || true
        wait "$NATS_PID" 2>/dev/null || true
    fi
    if [[ -n "$NATS_DIR" ]]; then
        rm -rf "$NATS_DIR"
    fi
}
trap stop_nats EXIT

if listening; then
    step "nats-server: using the one on 127.0.0.1:4222"
else
    step "nats-server: starting one with JetStream on 127.0.0.1:4222"
    if ! command -v nats-server >/dev/null 2>&1 && [[ ! -x /usr/sbin/nats-server ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server
    fi
    NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
    NATS_DIR=$(mktemp -d)
    "$NATS_BIN" -js -a 127.0.0.1 -p 4222 -sd "$NATS_DIR" >"$NATS_DIR/log" 2>&1 &
    NATS_PID=$!
    for _ in $(seq 100); do
        listening && break
        sleep 0.1
    done
    listening || { cat "$NATS_DIR/log"; echo "nats-server did not start" >&2; exit 1; }
fi

step "workspace tests"
cargo test --locked

step "kvblocks with feature prometheus"
cargo build --locked -p kvblocks --features prometheus --example metrics_server
cargo test --locked -p kvblocks --features prometheus --doc metrics::prometheus
cargo test --locked -p kvblocks --features prometheus --lib --test prometheus_scrape

step "shuttle"
CARGO_TARGET_DIR=target/shuttle RUSTFLAGS="--cfg shuttle" \
    cargo test --locked --release -p kvblocks-checks --test shuttle_races

step "loom"
CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
    cargo test --locked --release -p kvblocks-checks --test loom_races -- --test-threads=1

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
miri_pass() {
    local borrows=$1
    MIRIFLAGS="$borrows" cargo +nightly miri test --locked -p kvblocks-checks "${MIRI_TESTS[@]}"
    MIRIFLAGS="$borrows" cargo +nightly miri test --locked -p kvblocks-checks --test concurrency \
        manager_dropped_while_threads_still_release_their_blocks
    # A panicking policy may strand slots by design (a leak, never unsound).
    MIRIFLAGS="$borrows -Zmiri-ignore-leaks" \
        cargo +nightly miri test --locked -p kvblocks-checks --test policy_panics
}
# Build once, then run both borrow models at the same time (Miri interprets
# on one core; the machine has two), each into its own log.
cargo +nightly miri test --locked -p kvblocks-checks --no-run "${MIRI_TESTS[@]}" \
    --test concurrency --test policy_panics
MIRI_LOGS=$(mktemp -d)
miri_pass "" >"$MIRI_LOGS/stacked" 2>&1 &
STACKED=$!
miri_pass "-Zmiri-tree-borrows" >"$MIRI_LOGS/tree" 2>&1 &
TREE=$!
status=0
wait "$STACKED" || status=1
wait "$TREE" || status=1
step "miri (stacked borrows)"
cat "$MIRI_LOGS/stacked"
step "miri -Zmiri-tree-borrows"
cat "$MIRI_LOGS/tree"
rm -rf "$MIRI_LOGS"
exit "$status"
