//! The block store's soundness checks, in a crate of their own: no code,
//! only tests (`tests/`).
//!
//! - `shuttle_races.rs`: randomized and PCT schedules of the store's races
//!   (`RUSTFLAGS="--cfg shuttle"`);
//! - `loom_races.rs`: exhaustive schedules with weak memory of the smallest
//!   races (`RUSTFLAGS="--cfg loom"`);
//! - `regressions.rs`, `lifecycle.rs`, `store_lifetime.rs`,
//!   `shadow_memory.rs`, `concurrency.rs`, `policy_panics.rs`: guard
//!   lifetimes, the store audit's regressions, a shadow of the KV memory per
//!   slot under threads, panicking policies; run by `cargo test` and, under
//!   Stacked and Tree Borrows, by Miri.
//!
//! They live here rather than in `kvblocks/tests` so that each checker
//! builds kvblocks and its few dependencies only: `scripts/test.sh` runs
//! every one of them.
