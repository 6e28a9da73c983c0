//! Model-checked races (shuttle): run with
//! `RUSTFLAGS="--cfg shuttle" cargo test -p kvblocks --test shuttle_races`.
//!
//! The store's lock-free part is the per-slot handle count: the last drop of a
//! handle decrements it outside the lock and then asks the store to release the
//! slot. These tests let shuttle's randomized scheduler interleave that window
//! with a match that resurrects the same block, a weak upgrade, and an
//! allocation that evicts, then check that no slot is lost or double-booked.
#![cfg(shuttle)]

use std::sync::Arc;

use kvblocks::{BlockManager, SequenceHash};
use shuttle::thread;

#[derive(Clone)]
struct Tier;

const ITERATIONS: usize = 3_000;

fn registered(
    blocks: usize,
    hashes: &[SequenceHash],
) -> (Arc<BlockManager<Tier>>, Vec<kvblocks::ImmutableBlock<Tier>>) {
    let manager = Arc::new(
        BlockManager::<Tier>::builder()
            .block_count(blocks)
            .block_size(4)
            .build()
            .unwrap(),
    );
    let staged = manager
        .allocate_blocks(hashes.len())
        .unwrap()
        .into_iter()
        .zip(hashes)
        .map(|(b, h)| b.stage(*h, 4).unwrap())
        .collect();
    let held = manager.register_blocks(staged).unwrap();
    (manager, held)
}

#[test]
fn last_drop_racing_a_resurrecting_match_loses_nothing() {
    shuttle::check_random(
        || {
            let hash = SequenceHash::root(1);
            let (manager, mut held) = registered(2, &[hash]);
            let handle = held.pop().unwrap();
            let dropper = thread::spawn(move || drop(handle));
            let m = Arc::clone(&manager);
            let matcher = thread::spawn(move || {
                let hits = m.match_blocks(&[hash]);
                assert_eq!(hits.len(), 1, "a registered block is always matchable");
                hits
            });
            dropper.join().unwrap();
            let hits = matcher.join().unwrap();
            assert_eq!(manager.metrics().inflight_immutable, 1);
            manager.check_invariants().unwrap();
            drop(hits);
            assert_eq!(manager.metrics().inactive_pool_size, 1);
            assert_eq!(manager.available_blocks(), 2);
            manager.check_invariants().unwrap();
        },
        ITERATIONS,
    );
}

#[test]
fn last_drop_racing_weak_upgrade_and_evicting_allocation() {
    shuttle::check_random(
        || {
            let hash = SequenceHash::root(2);
            let (manager, mut held) = registered(1, &[hash]);
            let handle = held.pop().unwrap();
            let weak = handle.downgrade();
            let dropper = thread::spawn(move || drop(handle));
            let upgrader = thread::spawn(move || weak.upgrade());
            let m = Arc::clone(&manager);
            let allocator = thread::spawn(move || m.allocate_blocks(1));
            dropper.join().unwrap();
            let upgraded = upgrader.join().unwrap();
            let allocated = allocator.join().unwrap();
            // One slot: the upgrade and the allocation cannot both win it.
            assert!(!(upgraded.is_some() && allocated.is_some()));
            manager.check_invariants().unwrap();
            drop((upgraded, allocated));
            assert_eq!(manager.available_blocks(), 1);
            manager.check_invariants().unwrap();
        },
        ITERATIONS,
    );
}

#[test]
fn clones_dropped_on_two_threads_release_the_block_once() {
    shuttle::check_random(
        || {
            let hash = SequenceHash::root(3);
            let (manager, mut held) = registered(2, &[hash]);
            let a = held.pop().unwrap();
            let b = a.clone();
            let t1 = thread::spawn(move || drop(a));
            let t2 = thread::spawn(move || drop(b));
            t1.join().unwrap();
            t2.join().unwrap();
            let metrics = manager.metrics();
            assert_eq!(
                (metrics.inactive_pool_size, metrics.inflight_immutable),
                (1, 0)
            );
            manager.check_invariants().unwrap();
        },
        ITERATIONS,
    );
}
