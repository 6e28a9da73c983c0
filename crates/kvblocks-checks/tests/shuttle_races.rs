//! Model-checked races (shuttle): run with
//! `CARGO_TARGET_DIR=target/shuttle RUSTFLAGS="--cfg shuttle" cargo test --release -p kvblocks-checks --test shuttle_races`
//! (`SEED=<n>` replays a failure; see [`explore`]). Shuttle treats every
//! atomic as `SeqCst`; `loom_races.rs` checks the memory orderings.
//!
//! The store's lock-free parts are the per-slot handle count, the hash index
//! and the lock-free pin of an active block (matches, and registrations of a
//! hash whose primary is in another pool shard). These tests let shuttle's
//! randomized scheduler interleave them with last drops, resurrecting
//! matches, weak upgrades, evicting allocations that reuse a slot, the
//! window in which an evicted slot's index entry is stale, registrations of
//! one hash on two threads, allocations that lock every shard, and a slot
//! whose generation wraps around under a waiting lock-free match; then
//! check that every handle names the block it claims, that no slot is lost
//! or double-booked, and that the store's invariants hold.
//!
//! The shard an allocation starts at comes from a thread-local cursor that
//! shuttle does not control, so the tests accept any starting shard.
#![cfg(shuttle)]

use std::collections::HashSet;
use std::sync::Arc;

use kvblocks::{BlockDuplicationPolicy, BlockManager, ImmutableBlock, SequenceHash};
use shuttle::scheduler::{PctScheduler, RandomScheduler};
use shuttle::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use shuttle::sync::Mutex;
use shuttle::thread;
use shuttle::{Config, Runner};

#[derive(Clone)]
struct Tier;

const ITERATIONS: usize = 3_000;

/// Runs `test` for `iterations` schedules: half from the uniformly random
/// scheduler, half from PCT (depth 3). PCT keeps a thread descheduled across
/// a long stretch of others' steps (say, between a lock-free index probe and
/// the pin that follows it, while another thread evicts and reuses the slot),
/// which a uniformly random schedule almost never does.
///
/// Both schedulers are seeded from the `SEED` environment variable, or from
/// the clock when it is unset; a failure prints the seed, and running the
/// test again with `SEED=<seed>` replays the same schedules.
fn explore(test: impl Fn() + Clone + Send + Sync + 'static, iterations: usize) {
    let seed = match std::env::var("SEED") {
        Ok(seed) => seed.trim().parse().expect("SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    };
    let report = ReportSeedOnFailure(seed);
    let random = RandomScheduler::new_from_seed(seed, iterations / 2);
    Runner::new(random, Config::new()).run(test.clone());
    let pct = PctScheduler::new_from_seed(seed, 3, iterations / 2);
    Runner::new(pct, Config::new()).run(test);
    drop(report);
}

/// Prints the seed of a failing exploration.
struct ReportSeedOnFailure(u64);

impl Drop for ReportSeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("shuttle exploration failed: replay with SEED={}", self.0);
        }
    }
}

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
    let held = manager.register_blocks(staged);
    (manager, held)
}

#[test]
fn last_drop_racing_a_resurrecting_match_loses_nothing() {
    explore(
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
    explore(
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
    explore(
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

const BOTH_POLICIES: [BlockDuplicationPolicy; 2] = [
    BlockDuplicationPolicy::Allow,
    BlockDuplicationPolicy::Reject,
];

fn manager(
    blocks: usize,
    shards: usize,
    duplication: BlockDuplicationPolicy,
) -> Arc<BlockManager<Tier>> {
    let manager = BlockManager::<Tier>::builder()
        .block_count(blocks)
        .block_size(4)
        .pool_shards(shards)
        .duplication_policy(duplication)
        .build()
        .unwrap();
    assert_eq!(manager.pool_shards(), shards.min(blocks));
    Arc::new(manager)
}

/// Allocates, stages and registers one block per hash.
fn register(manager: &BlockManager<Tier>, hashes: &[SequenceHash]) -> Vec<ImmutableBlock<Tier>> {
    let staged = manager
        .allocate_blocks(hashes.len())
        .unwrap()
        .into_iter()
        .zip(hashes)
        .map(|(b, h)| b.stage(*h, 4).unwrap())
        .collect();
    manager.register_blocks(staged)
}

/// The resident primary of `hash` (a match without touching the policy).
fn primary_of(manager: &BlockManager<Tier>, hash: SequenceHash) -> Option<usize> {
    manager
        .scan_matches(&[hash], false)
        .get(&hash)
        .map(|b| b.block_id())
}

/// Pool sizes add up to the block count, and the invariants hold.
fn check_counts(manager: &BlockManager<Tier>) {
    manager.check_invariants().unwrap();
    let m = manager.metrics();
    assert_eq!(
        m.reset_pool_size + m.inflight_mutable + m.inflight_immutable + m.inactive_pool_size,
        manager.total_blocks() as u64,
        "{m:?}"
    );
}

/// Everything dropped: every slot available again.
fn check_all_back(manager: &BlockManager<Tier>) {
    check_counts(manager);
    let m = manager.metrics();
    assert_eq!((m.inflight_mutable, m.inflight_immutable), (0, 0), "{m:?}");
    assert_eq!(manager.available_blocks(), manager.total_blocks());
}

/// A lock-free match of an active block (`a` in slot `X`) races the last
/// drop of its handle and an allocation that evicts `X`, then registers a
/// different hash `b` there. The matcher may read the index and the handle
/// word before the reuse and compare-exchange after it: it must get `X`
/// under `a` or a miss, never `X` under `b`. With 2 blocks in 2 shards the
/// other slot is pinned, so the allocation evicts across shards.
fn match_racing_slot_reuse(blocks: usize, shards: usize) {
    let a = SequenceHash::root(10);
    let b = SequenceHash::root(11);
    let manager = manager(blocks, shards, BlockDuplicationPolicy::Allow);
    let mut pinned = register(&manager, &[a]);
    // Any other slot is held by a pinned block, so only X can be reused.
    let others: Vec<_> = (1..blocks as u64)
        .map(|i| SequenceHash::root(100 + i))
        .collect();
    pinned.extend(register(&manager, &others));
    let handle = pinned.remove(0);
    let x = handle.block_id();

    let dropper = thread::spawn(move || drop(handle));
    let m = Arc::clone(&manager);
    let reuser = thread::spawn(move || {
        let (mut blocks, evicted) = m.allocate_blocks_with_evictions(1)?;
        let block = blocks.pop().unwrap();
        assert_eq!(block.block_id(), x, "the only slot that can be taken");
        assert_eq!(evicted, vec![a]);
        let reused = m.register_block(block.stage(b, 4).unwrap());
        assert_eq!((reused.block_id(), reused.sequence_hash()), (x, b));
        Some(reused)
    });
    let m = Arc::clone(&manager);
    let matcher = thread::spawn(move || m.match_blocks(&[a]));
    dropper.join().unwrap();
    let reused = reuser.join().unwrap();
    let hits = matcher.join().unwrap();

    assert!(hits.len() <= 1);
    // X is either still `a` when the match pins it (and then cannot be
    // evicted), or evicted first (and then `a` is resident nowhere).
    assert_ne!(
        hits.len() == 1,
        reused.is_some(),
        "exactly one of the match and the reuse wins X"
    );
    if let Some(hit) = hits.first() {
        assert_eq!((hit.block_id(), hit.sequence_hash()), (x, a));
        assert_eq!(primary_of(&manager, a), Some(x), "X really holds a");
        assert!(!manager.contains(b));
        assert_eq!(hit.use_count(), 1, "only the match holds X");
    }
    if let Some(reused) = &reused {
        assert!(!manager.contains(a));
        assert!(manager.match_blocks(&[a]).is_empty());
        assert_eq!(primary_of(&manager, b), Some(reused.block_id()));
        assert_eq!(reused.use_count(), 1, "only the reuser holds X");
    }
    check_counts(&manager);
    let m = manager.metrics();
    assert_eq!(m.inflight_immutable, blocks as u64, "every slot pinned");
    assert_eq!(m.evictions, u64::from(reused.is_some()));
    drop((hits, reused, pinned));
    check_all_back(&manager);
}

#[test]
fn lock_free_match_racing_slot_reuse_never_pins_the_wrong_hash() {
    explore(|| match_racing_slot_reuse(1, 1), ITERATIONS);
}

#[test]
fn lock_free_match_racing_slot_reuse_across_pool_shards() {
    explore(|| match_racing_slot_reuse(2, 2), ITERATIONS);
}

/// A lock-free match of `a` in slot X races a thread that cycles X through
/// four evictions, re-registering `b` there each time, while generations
/// wrap after 4 (instead of 2^32): a matcher descheduled between checking
/// X's record and pinning it sees the generation it read again, with X now
/// holding `b`. It must miss, or pin X while X still holds `a`.
fn match_racing_a_generation_wrap() {
    let (a, b) = (SequenceHash::root(20), SequenceHash::root(21));
    let manager = Arc::new(
        BlockManager::<Tier>::builder()
            .block_count(1)
            .block_size(4)
            .testing_generation_bits(2)
            .build()
            .unwrap(),
    );
    let handle = register(&manager, &[a]).pop().unwrap();
    let m = Arc::clone(&manager);
    let matcher = thread::spawn(move || {
        let hits = m.match_blocks(&[a]);
        if let Some(hit) = hits.first() {
            assert_eq!(hit.sequence_hash(), a);
            assert_eq!(primary_of(&m, a), Some(hit.block_id()), "X holds a");
        }
        hits.len()
    });
    let m = Arc::clone(&manager);
    let cycler = thread::spawn(move || {
        drop(handle);
        let mut last = None;
        for _ in 0..4 {
            drop(last.take());
            let Some(mut fresh) = m.allocate_blocks(1) else {
                return None; // the matcher holds X
            };
            let block = fresh.pop().unwrap();
            last = Some(m.register_block(block.stage(b, 4).unwrap()));
        }
        last
    });
    let hits = matcher.join().unwrap();
    let last = cycler.join().unwrap();
    if let Some(last) = &last {
        assert_eq!(last.sequence_hash(), b);
        assert_eq!(primary_of(&manager, b), Some(last.block_id()));
    }
    assert!(hits <= 1);
    drop(last);
    check_all_back(&manager);
}

#[test]
fn lock_free_match_racing_a_generation_wrap_never_pins_the_wrong_hash() {
    explore(match_racing_a_generation_wrap, ITERATIONS);
}

/// Two threads register the same hash in slots of different pool shards
/// (one slot per shard) while a third matches it: one primary, and the
/// duplication policy decides the other.
fn same_hash_on_two_threads(duplication: BlockDuplicationPolicy) {
    let h = SequenceHash::root(20);
    let manager = manager(2, 2, duplication);
    let mut staged: Vec<_> = manager
        .allocate_blocks(2)
        .unwrap()
        .into_iter()
        .map(|b| b.stage(h, 4).unwrap())
        .collect();
    let mut ids: Vec<usize> = staged.iter().map(|b| b.block_id()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [0, 1], "one slot in each shard");

    let (first, second) = (staged.pop().unwrap(), staged.pop().unwrap());
    let m = Arc::clone(&manager);
    let t1 = thread::spawn(move || m.register_block(first));
    let m = Arc::clone(&manager);
    // The batch path, to mix chunked registration in.
    let t2 = thread::spawn(move || m.register_blocks(vec![second]).pop().unwrap());
    let m = Arc::clone(&manager);
    let matcher = thread::spawn(move || m.match_blocks(&[h]));
    let handles = [t1.join().unwrap(), t2.join().unwrap()];
    let hits = matcher.join().unwrap();

    for handle in &handles {
        assert_eq!(handle.sequence_hash(), h);
    }
    let primary = primary_of(&manager, h).expect("registered and pinned");
    let m = manager.metrics();
    assert_eq!(m.registrations, 2);
    match duplication {
        BlockDuplicationPolicy::Reject => {
            assert_eq!(handles[0].block_id(), primary);
            assert_eq!(handles[1].block_id(), primary, "both name the primary");
            assert_eq!((m.registration_dedups, m.duplicate_blocks), (1, 0));
            assert_eq!((m.inflight_immutable, m.reset_pool_size), (1, 1));
        }
        BlockDuplicationPolicy::Allow => {
            let mut own: Vec<usize> = handles.iter().map(|b| b.block_id()).collect();
            own.sort_unstable();
            assert_eq!(own, [0, 1], "each keeps its own slot");
            assert_eq!((m.registration_dedups, m.duplicate_blocks), (0, 1));
            assert_eq!((m.inflight_immutable, m.reset_pool_size), (2, 0));
        }
    }
    if let Some(hit) = hits.first() {
        assert_eq!(hit.block_id(), primary, "a match finds the primary");
    }
    check_counts(&manager);
    drop(handles);
    drop(hits);
    check_all_back(&manager);
    let m = manager.metrics();
    assert_eq!((m.inactive_pool_size, m.reset_pool_size), (1, 1), "{m:?}");
    assert_eq!(
        primary_of(&manager, h),
        Some(primary),
        "the primary is cached"
    );
    check_all_back(&manager);
}

#[test]
fn same_hash_registered_on_two_threads_in_two_shards_under_allow() {
    explore(
        || same_hash_on_two_threads(BlockDuplicationPolicy::Allow),
        ITERATIONS,
    );
}

#[test]
fn same_hash_registered_on_two_threads_in_two_shards_under_reject() {
    explore(
        || same_hash_on_two_threads(BlockDuplicationPolicy::Reject),
        ITERATIONS,
    );
}

/// `h` lives in slot X (pinned by a handle that is dropped concurrently if
/// `drop_racing`, else already inactive); slot Y is staged with `h` too. A
/// registration of Y races an allocation that can only evict X (and then
/// registers another hash there): between that eviction and the removal of
/// X's index entry, the entry is stale, and the registration must take it
/// over. Whatever the order, `h` stays resident and a match finds the block
/// the registration's handle pins.
fn registration_racing_eviction(
    shards: usize,
    duplication: BlockDuplicationPolicy,
    drop_racing: bool,
) {
    let h = SequenceHash::root(30);
    let other = SequenceHash::root(31);
    let manager = manager(2, shards, duplication);
    let mut old = register(&manager, &[h]);
    let x = old[0].block_id();
    if !drop_racing {
        old.clear();
    }
    let staged = manager
        .allocate_blocks(1)
        .unwrap()
        .pop()
        .unwrap()
        .stage(h, 4)
        .unwrap();
    let y = staged.block_id();
    assert_ne!(x, y);

    let dropper = thread::spawn(move || drop(old));
    let m = Arc::clone(&manager);
    let registrar = thread::spawn(move || m.register_block(staged));
    let m = Arc::clone(&manager);
    let allocator = thread::spawn(move || {
        let (mut blocks, evicted) = m.allocate_blocks_with_evictions(1)?;
        let block = blocks.pop().unwrap();
        let id = block.block_id();
        let reused = m.register_block(block.stage(other, 4).unwrap());
        assert_eq!(reused.block_id(), id);
        Some((reused, evicted))
    });
    dropper.join().unwrap();
    let handle = registrar.join().unwrap();
    let allocated = allocator.join().unwrap();

    assert_eq!(handle.sequence_hash(), h);
    assert!(manager.contains(h), "h is pinned, so resident");
    let matched = manager.match_blocks(&[h]);
    assert_eq!(matched.len(), 1);
    let primary = matched[0].block_id();
    let m = manager.metrics();
    let evicted_x = allocated.as_ref().is_some_and(|(_, e)| !e.is_empty());
    if evicted_x {
        // X was evicted before the registration could pin it: the new
        // block is the primary now.
        let (reused, evicted) = allocated.as_ref().unwrap();
        assert_eq!(evicted, &vec![h]);
        assert_eq!(reused.block_id(), x);
        assert_eq!(handle.block_id(), y);
        assert_eq!(primary, y, "a match of h returns the new block");
        assert_eq!((m.duplicate_blocks, m.registration_dedups), (0, 0));
    } else {
        // The registration pinned X first: h stays in X.
        assert_eq!(primary, x);
        match duplication {
            BlockDuplicationPolicy::Reject => {
                assert_eq!(handle.block_id(), x);
                assert_eq!(m.registration_dedups, 1);
                // Y went back to the reset pool, maybe to the allocator.
                if let Some((reused, _)) = &allocated {
                    assert_eq!(reused.block_id(), y);
                }
            }
            BlockDuplicationPolicy::Allow => {
                assert_eq!(handle.block_id(), y, "a duplicate copy");
                assert_eq!(m.duplicate_blocks, 1);
                assert!(allocated.is_none(), "X and Y both pinned");
            }
        }
    }
    if let Some((reused, _)) = &allocated {
        assert_eq!(primary_of(&manager, other), Some(reused.block_id()));
        assert_ne!(reused.block_id(), primary);
    }
    check_counts(&manager);
    drop((handle, matched, allocated));
    check_all_back(&manager);
    assert!(manager.contains(h), "cached after the last drop");
}

#[test]
fn registration_racing_the_eviction_of_its_hash_in_one_shard() {
    explore(
        || {
            for duplication in BOTH_POLICIES {
                registration_racing_eviction(1, duplication, false);
            }
        },
        ITERATIONS / 2,
    );
}

#[test]
fn registration_racing_the_eviction_of_its_hash_in_another_shard() {
    explore(
        || {
            for duplication in BOTH_POLICIES {
                registration_racing_eviction(2, duplication, false);
            }
        },
        ITERATIONS / 2,
    );
}

#[test]
fn registration_racing_last_drop_and_eviction_of_its_hash() {
    explore(
        || {
            for shards in [1, 2] {
                for duplication in BOTH_POLICIES {
                    registration_racing_eviction(shards, duplication, true);
                }
            }
        },
        ITERATIONS / 4,
    );
}

/// Two threads allocate, register and release in a 4-block pool of two
/// 2-slot shards, with evictable blocks in both: a 3-block request never
/// fits one shard, so it locks every shard; a 2-block one may not either.
/// No slot is handed to both threads at once, a refusal happens only while
/// the other thread holds blocks, a refused allocation changes nothing, and
/// every slot comes back.
#[test]
fn allocations_across_two_shards_are_all_or_nothing_and_lose_no_slot() {
    explore(
        || {
            let manager = manager(4, 2, BlockDuplicationPolicy::Allow);
            let cached: Vec<_> = (0..3).map(|i| SequenceHash::root(40 + i)).collect();
            drop(register(&manager, &cached));
            let before = manager.metrics();
            assert_eq!((before.inactive_pool_size, before.reset_pool_size), (3, 1));

            /// Slots a thread holds (set after allocating, cleared before
            /// releasing), whether each thread is between its allocation
            /// and the end of its release, and how many releases it made.
            struct Shared {
                in_use: Mutex<[bool; 4]>,
                busy: [AtomicBool; 2],
                done: [AtomicUsize; 2],
                evicted: Mutex<Vec<SequenceHash>>,
                registered: Mutex<Vec<SequenceHash>>,
            }
            let shared = Arc::new(Shared {
                in_use: Mutex::new([false; 4]),
                busy: [AtomicBool::new(false), AtomicBool::new(false)],
                done: [AtomicUsize::new(0), AtomicUsize::new(0)],
                evicted: Mutex::new(Vec::new()),
                registered: Mutex::new(Vec::new()),
            });
            let workers: Vec<_> = [(0usize, 3usize), (1, 2)]
                .into_iter()
                .map(|(me, want)| {
                    let manager = Arc::clone(&manager);
                    let shared = Arc::clone(&shared);
                    thread::spawn(move || {
                        let peer = 1 - me;
                        let mut received = 0;
                        for round in 0..2u64 {
                            let peer_busy = shared.busy[peer].load(Ordering::SeqCst);
                            let peer_done = shared.done[peer].load(Ordering::SeqCst);
                            shared.busy[me].store(true, Ordering::SeqCst);
                            let got = manager.allocate_blocks_with_evictions(want);
                            let Some((blocks, evicted)) = got else {
                                // The peer held blocks at some point during
                                // the refused call.
                                let peer_was_busy = peer_busy
                                    || shared.busy[peer].load(Ordering::SeqCst)
                                    || shared.done[peer].load(Ordering::SeqCst) != peer_done;
                                assert!(peer_was_busy, "refused with every slot available");
                                shared.busy[me].store(false, Ordering::SeqCst);
                                continue;
                            };
                            assert_eq!(blocks.len(), want, "all or nothing");
                            assert!(evicted.len() <= want);
                            received += want;
                            {
                                let mut in_use = shared.in_use.lock().unwrap();
                                for block in &blocks {
                                    let slot = &mut in_use[block.block_id()];
                                    assert!(!*slot, "slot {} handed out twice", block.block_id());
                                    *slot = true;
                                }
                            }
                            shared.evicted.lock().unwrap().extend(evicted);
                            // Register one block under a fresh hash, drop the rest.
                            let mut blocks = blocks.into_iter();
                            let first = blocks.next().unwrap();
                            let id = first.block_id();
                            let hash = SequenceHash::root(1000 + (me as u64) * 10 + round);
                            let handle = manager.register_block(first.stage(hash, 4).unwrap());
                            assert_eq!(handle.block_id(), id);
                            shared.registered.lock().unwrap().push(hash);
                            let rest: Vec<_> = blocks.collect();
                            {
                                let mut in_use = shared.in_use.lock().unwrap();
                                in_use[id] = false;
                                for block in &rest {
                                    in_use[block.block_id()] = false;
                                }
                            }
                            drop(rest);
                            drop(handle);
                            shared.busy[me].store(false, Ordering::SeqCst);
                            shared.done[me].fetch_add(1, Ordering::SeqCst);
                        }
                        received
                    })
                })
                .collect();
            let received: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();

            check_all_back(&manager);
            let m = manager.metrics();
            assert_eq!(
                m.allocations - before.allocations,
                received as u64,
                "a refused allocation took nothing"
            );
            let evicted = shared.evicted.lock().unwrap().clone();
            assert_eq!(m.evictions - before.evictions, evicted.len() as u64);
            let unique: HashSet<_> = evicted.iter().collect();
            assert_eq!(unique.len(), evicted.len(), "a hash evicted twice");
            let registered = shared.registered.lock().unwrap().clone();
            for hash in cached.iter().chain(&registered) {
                assert_eq!(
                    manager.contains(*hash),
                    !evicted.contains(hash),
                    "resident unless evicted"
                );
            }
            assert_eq!(
                m.inactive_pool_size as usize,
                cached.len() + registered.len() - evicted.len()
            );
        },
        ITERATIONS,
    );
}

/// The index's home bucket for `hash` in a table of `buckets` buckets: a
/// copy of `store::index::fold` and `HashIndex::home`, used only to pick
/// hashes that collide. If the index hashes differently one day, the test
/// below still passes its assertions but no longer exercises a shift.
fn home_bucket(hash: SequenceHash, buckets: u64) -> u64 {
    let raw = hash.as_u128();
    let folded = (raw as u64) ^ ((raw >> 64) as u64).rotate_left(29);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) & (buckets - 1)
}

/// `a` and `b` share a home bucket, `b` sits one bucket after it. Evicting
/// `a` removes its entry and shifts `b` back, which a lock-free probe for
/// `b` can slip past; it must report that as unsure, not as a miss, and the
/// match must still find `b` (pinned by a handle, so resident throughout).
#[test]
fn lock_free_match_racing_a_removal_that_shifts_its_entry() {
    // 2 slots: the index has 8 buckets.
    let a = SequenceHash::root(50);
    let b = (51..)
        .map(SequenceHash::root)
        .find(|h| home_bucket(*h, 8) == home_bucket(a, 8))
        .unwrap();
    explore(
        move || {
            let manager = manager(2, 1, BlockDuplicationPolicy::Allow);
            // Inserted in this order, so `b` probes past `a`.
            let mut held = register(&manager, &[a, b]);
            let pinned_b = held.pop().unwrap();
            drop(held);
            let b_slot = pinned_b.block_id();

            let m = Arc::clone(&manager);
            let allocator = thread::spawn(move || {
                let (blocks, evicted) = m.allocate_blocks_with_evictions(1).unwrap();
                assert_eq!(evicted, vec![a], "only a is evictable");
                blocks
            });
            let m = Arc::clone(&manager);
            let matcher = thread::spawn(move || m.match_blocks(&[b]));
            let blocks = allocator.join().unwrap();
            let hits = matcher.join().unwrap();

            assert_eq!(hits.len(), 1, "b is pinned, so always matchable");
            assert_eq!(hits[0].block_id(), b_slot);
            assert!(!manager.contains(a));
            assert_eq!(primary_of(&manager, b), Some(b_slot));
            check_counts(&manager);
            drop((blocks, hits, pinned_b));
            check_all_back(&manager);
        },
        ITERATIONS,
    );
}

#[derive(Clone)]
struct Host;

/// The value attached to a registration handle in the tier races.
#[derive(Debug, PartialEq, Eq)]
struct Marker;

/// A registration of `h` in the host tier races the eviction of `h` from the
/// GPU tier, while a third thread watches the host tier's presence. `h` has
/// a registration handle with an attachment. Presence in the host tier moves
/// from false to true once and never back; and if the host registration
/// finished before the eviction began (so some tier held `h` throughout),
/// the handle and its attachment survive the eviction.
fn registration_racing_eviction_in_another_tier() {
    let h = SequenceHash::root(30);
    let registry = kvblocks::BlockRegistry::new();
    let gpu = Arc::new(
        BlockManager::<Tier>::builder()
            .block_count(1)
            .block_size(4)
            .registry(registry.clone())
            .build()
            .unwrap(),
    );
    let host = Arc::new(
        BlockManager::<Host>::builder()
            .block_count(1)
            .block_size(4)
            .registry(registry.clone())
            .build()
            .unwrap(),
    );
    let on_gpu = register(&gpu, &[h]).pop().unwrap();
    on_gpu.registration_handle().attach_unique(Marker).unwrap();
    drop(on_gpu); // inactive on the GPU; the registry keeps the handle

    let host_done = Arc::new(AtomicBool::new(false));
    let (m, done) = (Arc::clone(&host), Arc::clone(&host_done));
    let offload = thread::spawn(move || {
        let block = m.allocate_blocks(1).unwrap().pop().unwrap();
        let held = m.register_block(block.stage(h, 4).unwrap());
        done.store(true, Ordering::SeqCst);
        held
    });
    let (m, done) = (Arc::clone(&gpu), Arc::clone(&host_done));
    let evict = thread::spawn(move || {
        let host_first = done.load(Ordering::SeqCst);
        m.reset_inactive_pool().unwrap();
        host_first
    });
    let r = registry.clone();
    let watch = thread::spawn(move || {
        let mut seen = false;
        for _ in 0..3 {
            let now = r.check_presence::<Host>(&[h])[0].1;
            assert!(now || !seen, "host presence went back to false");
            seen |= now;
        }
    });
    let on_host = offload.join().unwrap();
    let host_first = evict.join().unwrap();
    watch.join().unwrap();

    assert_eq!(registry.check_presence::<Host>(&[h]), vec![(h, true)]);
    assert_eq!(registry.check_presence::<Tier>(&[h]), vec![(h, false)]);
    let kept = registry
        .match_sequence_hash(h, false)
        .and_then(|handle| handle.get::<Marker>().with_unique(|_| ()));
    if host_first {
        assert!(
            kept.is_some(),
            "a tier held the block throughout, yet its handle was dropped"
        );
    }
    drop(on_host);
    gpu.check_invariants().unwrap();
    host.check_invariants().unwrap();
}

#[test]
fn registration_racing_eviction_in_another_tier_keeps_presence_and_handles_right() {
    explore(registration_racing_eviction_in_another_tier, ITERATIONS);
}

/// A manager of 4 slots that starts as one pool and splits into two shards
/// of 2 (slots 0-1 and 2-3) when told to.
fn splitting_manager(duplication: BlockDuplicationPolicy) -> Arc<BlockManager<Tier>> {
    let manager = BlockManager::<Tier>::builder()
        .block_count(4)
        .block_size(4)
        .pool_shards(2)
        .testing_split_on_contention()
        .duplication_policy(duplication)
        .build()
        .unwrap();
    assert_eq!(manager.pool_shards(), 1);
    Arc::new(manager)
}

/// The split moves slots between shards while other threads release the
/// last handle of a block in slot 3 (shard 1 after the split) and match it
/// again, and register a batch whose two slots (1 and 2) were in one pool
/// when the batch began and are in two shards after the split: every call
/// must find its slot's shard as it is when it holds the lock.
fn split_racing_release_match_and_registration(duplication: BlockDuplicationPolicy) {
    let a = SequenceHash::root(40);
    let (b, c, d) = (a.extend(1), a.extend(2), SequenceHash::root(41));
    let manager = splitting_manager(duplication);
    let mut blocks = manager.allocate_blocks(4).unwrap();
    blocks.sort_by_key(|b| b.block_id());
    let mut staged: Vec<_> = blocks
        .into_iter()
        .zip([a, b, c, d])
        .map(|(block, h)| block.stage(h, 4).unwrap())
        .collect();
    let held_d = manager.register_block(staged.pop().unwrap());
    let batch: Vec<_> = staged.drain(1..).collect();
    let held_a = manager.register_block(staged.pop().unwrap());
    assert_eq!((held_a.block_id(), held_d.block_id()), (0, 3));

    let m = Arc::clone(&manager);
    let splitter = thread::spawn(move || kvblocks::testing::split_pool(&m));
    let m = Arc::clone(&manager);
    let releaser = thread::spawn(move || {
        drop(held_d);
        let hits = m.match_blocks(&[d]);
        assert_eq!(hits.len(), 1, "a released block stays cached");
        assert_eq!(hits[0].block_id(), 3);
        hits
    });
    let m = Arc::clone(&manager);
    let registrar = thread::spawn(move || m.register_blocks(batch));
    assert!(splitter.join().unwrap(), "the only split");
    let hits = releaser.join().unwrap();
    let registered = registrar.join().unwrap();

    assert_eq!(manager.pool_shards(), 2);
    let slots: Vec<_> = registered.iter().map(|h| h.block_id()).collect();
    assert_eq!(slots, vec![1, 2]);
    for hash in [a, b, c, d] {
        assert!(manager.contains(hash));
    }
    check_counts(&manager);
    drop(hits);
    // Slot 3 is evictable again, in shard 1's policy.
    let (again, evicted) = manager.allocate_blocks_with_evictions(1).unwrap();
    assert_eq!((again[0].block_id(), evicted), (3, vec![d]));
    drop((again, registered, held_a));
    check_all_back(&manager);
}

#[test]
fn split_racing_release_match_and_registration_under_allow() {
    explore(
        || split_racing_release_match_and_registration(BlockDuplicationPolicy::Allow),
        ITERATIONS,
    );
}

#[test]
fn split_racing_release_match_and_registration_under_reject() {
    explore(
        || split_racing_release_match_and_registration(BlockDuplicationPolicy::Reject),
        ITERATIONS,
    );
}

/// The split races an evicting allocation (which may read the store as one
/// pool and get the lock only after the split) and the last release of
/// another block: the allocation must still find the oldest evictable block
/// (slot 2, in shard 1 after the split), and no slot is lost or counted
/// twice.
fn split_racing_an_evicting_allocation() {
    let hashes: Vec<_> = (0..4).map(|i| SequenceHash::root(50 + i)).collect();
    let manager = splitting_manager(BlockDuplicationPolicy::Reject);
    let mut held = register(&manager, &hashes);
    held.sort_by_key(|h| h.block_id());
    // Slot 2 is evictable; slot 3 becomes so while the split runs.
    drop(held.remove(2));
    let last = held.pop().unwrap();

    let m = Arc::clone(&manager);
    let splitter = thread::spawn(move || kvblocks::testing::split_pool(&m));
    let m = Arc::clone(&manager);
    let allocator = thread::spawn(move || m.allocate_blocks_with_evictions(1));
    let releaser = thread::spawn(move || drop(last));
    assert!(splitter.join().unwrap());
    releaser.join().unwrap();
    let (blocks, evicted) = allocator
        .join()
        .unwrap()
        .expect("a block was evictable throughout");
    assert_eq!(blocks[0].block_id(), 2, "the oldest evictable block");
    assert_eq!(evicted, vec![hashes[2]]);
    check_counts(&manager);
    assert_eq!(manager.metrics().inactive_pool_size, 1);
    drop((blocks, held));
    check_all_back(&manager);
}

#[test]
fn split_racing_an_evicting_allocation_loses_no_slot() {
    explore(split_racing_an_evicting_allocation, ITERATIONS);
}
