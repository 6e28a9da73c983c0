//! A manager that starts as one pool and splits into pool shards when
//! threads contend (the default with LRU): the split keeps every guard, the
//! counts, the registered set and LRU's eviction order, and two threads that
//! contend make it split by themselves.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use kvblocks::{
    BlockDuplicationPolicy, BlockManager, ImmutableBlock, MetricsSnapshot, SequenceHash,
};

#[derive(Clone)]
struct Tier;

const BLOCK_SIZE: usize = 4;

/// A manager of `blocks` slots that splits into `shards` later (or has them
/// from the start).
fn manager(
    blocks: usize,
    shards: usize,
    split_later: bool,
    duplication: BlockDuplicationPolicy,
) -> BlockManager<Tier> {
    let builder = BlockManager::<Tier>::builder()
        .block_count(blocks)
        .block_size(BLOCK_SIZE)
        .duplication_policy(duplication)
        .pool_shards(shards);
    let builder = if split_later {
        builder.testing_split_on_contention()
    } else {
        builder
    };
    builder.build().unwrap()
}

/// Block `i` of chain `c`.
fn chain(c: u64, len: usize) -> Vec<SequenceHash> {
    let mut hashes = vec![SequenceHash::root(c)];
    for i in 1..len as u64 {
        let next = hashes[hashes.len() - 1].extend(c << 16 | i);
        hashes.push(next);
    }
    hashes
}

/// Matches `hashes` and registers the rest in fresh blocks; the handles.
fn serve(manager: &BlockManager<Tier>, hashes: &[SequenceHash]) -> Vec<ImmutableBlock<Tier>> {
    let mut held = manager.match_blocks(hashes);
    let misses = &hashes[held.len()..];
    let Some((blocks, _)) = manager.allocate_blocks_with_evictions(misses.len()) else {
        return held;
    };
    let staged = blocks
        .into_iter()
        .zip(misses)
        .map(|(b, h)| b.stage(*h, BLOCK_SIZE).unwrap())
        .collect();
    held.extend(manager.register_blocks(staged));
    held
}

/// The pool sizes and counters that a split must not change.
fn counts(m: &MetricsSnapshot) -> [u64; 6] {
    [
        m.reset_pool_size,
        m.inflight_mutable,
        m.inflight_immutable,
        m.inactive_pool_size,
        m.allocations,
        m.evictions,
    ]
}

#[test]
fn a_default_lru_manager_starts_as_one_pool_and_splits_once() {
    let manager = BlockManager::<Tier>::builder()
        .block_count(65_536)
        .block_size(16)
        .build()
        .unwrap();
    assert_eq!(manager.pool_shards(), 1);
    assert!(kvblocks::testing::split_pool(&manager));
    assert_eq!(manager.pool_shards(), 16);
    assert!(!kvblocks::testing::split_pool(&manager), "splits once");
    manager.check_invariants().unwrap();

    let explicit = BlockManager::<Tier>::builder()
        .block_count(65_536)
        .block_size(16)
        .pool_shards(16)
        .build()
        .unwrap();
    assert_eq!(explicit.pool_shards(), 16);
    assert!(!kvblocks::testing::split_pool(&explicit), "split at build");
    let lineage = BlockManager::<Tier>::builder()
        .block_count(65_536)
        .block_size(16)
        .with_lineage_backend()
        .build()
        .unwrap();
    assert!(
        !kvblocks::testing::split_pool(&lineage),
        "one pool for good"
    );
    assert_eq!(lineage.pool_shards(), 1);
}

/// Every kind of guard held across the split keeps working, the counts do
/// not move, and everything comes back once the guards are gone.
#[test]
fn a_split_keeps_every_guard_and_count() {
    for duplication in [
        BlockDuplicationPolicy::Allow,
        BlockDuplicationPolicy::Reject,
    ] {
        let manager = manager(64, 4, true, duplication);
        // Registered and held: two chains across the would-be shards.
        let mut held = serve(&manager, &chain(1, 20));
        held.extend(serve(&manager, &chain(2, 20)));
        // Registered and released (evictable): a third chain.
        drop(serve(&manager, &chain(3, 10)));
        // Duplicates of chain 1's first blocks (copies under Allow).
        let copies: Vec<_> = manager
            .allocate_blocks(3)
            .unwrap()
            .into_iter()
            .zip(chain(1, 3))
            .map(|(b, h)| manager.register_block(b.stage(h, BLOCK_SIZE).unwrap()))
            .collect();
        let mutable = manager.allocate_blocks(2).unwrap();
        let staged = manager
            .allocate_block()
            .unwrap()
            .stage(SequenceHash::root(77), BLOCK_SIZE)
            .unwrap();
        let weak = held[5].downgrade();
        let before = counts(&manager.metrics());
        manager.check_invariants().unwrap();

        assert!(kvblocks::testing::split_pool(&manager));
        assert_eq!(manager.pool_shards(), 4);
        manager.check_invariants().unwrap();
        assert_eq!(counts(&manager.metrics()), before, "{duplication:?}");
        for hash in chain(1, 20).into_iter().chain(chain(3, 10)) {
            assert!(manager.contains(hash));
        }
        assert_eq!(manager.match_blocks(&chain(3, 10)).len(), 10);
        let again = weak.upgrade().expect("held blocks stay upgradable");
        assert_eq!(again.block_id(), held[5].block_id());
        let registered = manager.register_block(staged);
        assert_eq!(registered.sequence_hash(), SequenceHash::root(77));
        manager.check_invariants().unwrap();

        drop((held, copies, mutable, again, registered));
        assert_eq!(manager.available_blocks(), 64);
        manager.check_invariants().unwrap();
        manager.reset_inactive_pool().unwrap();
        assert_eq!(manager.metrics().reset_pool_size, 64);
    }
}

/// Right after a split the shards evict in exactly the one pool's order.
#[test]
fn a_split_keeps_the_one_pools_eviction_order() {
    let split = manager(256, 8, true, BlockDuplicationPolicy::Reject);
    let one_pool = manager(256, 1, false, BlockDuplicationPolicy::Reject);
    for m in [&split, &one_pool] {
        // Fill the pool, release in an order unrelated to the slots, and
        // touch some chains again so the order is not the registration's.
        let mut all = Vec::new();
        for c in 0..16 {
            all.push(serve(m, &chain(c, 16)));
        }
        for c in [5, 11, 2, 14, 0, 7, 9, 3, 15, 1, 12, 6, 10, 4, 13, 8] {
            drop(std::mem::take(&mut all[c]));
        }
        for c in [3, 12, 0, 9] {
            drop(serve(m, &chain(c, 8)));
        }
    }
    assert!(kvblocks::testing::split_pool(&split));
    assert_eq!(split.pool_shards(), 8);
    let evictions = |m: &BlockManager<Tier>| {
        let mut order = Vec::new();
        let mut taken = Vec::new();
        while let Some((blocks, evicted)) = m.allocate_blocks_with_evictions(8) {
            order.extend(evicted);
            taken.extend(blocks);
        }
        order
    };
    let expected = evictions(&one_pool);
    assert_eq!(expected.len(), 256);
    assert_eq!(evictions(&split), expected);
}

/// Two threads serving from one default manager contend for its one pool
/// until it splits; the split happens while they run, and nothing is lost.
#[test]
fn two_threads_that_contend_split_a_default_manager() {
    let manager = Arc::new(
        BlockManager::<Tier>::builder()
            .block_count(4096)
            .block_size(BLOCK_SIZE)
            .build()
            .unwrap(),
    );
    assert_eq!(manager.pool_shards(), 1);
    let start = Arc::new(Barrier::new(2));
    // Bounded by time, not by a sleep: each thread stops once the split is
    // seen (or, if the scheduler never lets them overlap, at the deadline,
    // and the assertion below fails).
    let deadline = Instant::now() + Duration::from_secs(120);
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let manager = Arc::clone(&manager);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut request = 0u64;
                while manager.pool_shards() == 1 && Instant::now() < deadline {
                    for _ in 0..64 {
                        let c = (t << 32) | (request % 300);
                        drop(serve(&manager, &chain(c, 24)));
                        request += 1;
                    }
                }
                // Keep serving for a while after the split.
                for _ in 0..2_000 {
                    let c = (t << 32) | (request % 300);
                    drop(serve(&manager, &chain(c, 24)));
                    request += 1;
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(manager.pool_shards(), 4, "the threads' contention split it");
    manager.check_invariants().unwrap();
    let m = manager.metrics();
    assert_eq!((m.inflight_mutable, m.inflight_immutable), (0, 0));
    assert_eq!(manager.available_blocks(), 4096);
}

/// One thread alone never splits a default manager, however long it runs.
#[test]
fn one_thread_alone_never_splits() {
    let manager = BlockManager::<Tier>::builder()
        .block_count(4096)
        .block_size(BLOCK_SIZE)
        .build()
        .unwrap();
    for request in 0..3_000u64 {
        drop(serve(&manager, &chain(request % 400, 24)));
        // Other callers' locks (a metrics read, as a scrape would) are not
        // contention either: they run on this thread between requests.
        if request % 100 == 0 {
            let _ = manager.metrics();
        }
    }
    assert_eq!(manager.pool_shards(), 1);
    manager.check_invariants().unwrap();
}

/// The blocks a one-pool store hands out before it splits come from every
/// future shard in turn (runs of 16), so what stays registered from before
/// the split (shared prompts) does not all land in the first shard, whose
/// lock both threads would then take to reuse it (that made two threads
/// with the defaults 0.3-0.5x slower than with `pool_shards(16)`).
#[test]
fn blocks_handed_out_before_a_split_spread_over_the_future_shards() {
    const SHARDS: usize = 16;
    const SHARD_LEN: usize = 256;
    let manager = manager(
        SHARDS * SHARD_LEN,
        SHARDS,
        true,
        BlockDuplicationPolicy::Allow,
    );
    let held: Vec<_> = (0..SHARDS as u64)
        .flat_map(|c| serve(&manager, &chain(c + 1, 16)))
        .collect();
    assert!(kvblocks::testing::split_pool(&manager));
    assert_eq!(manager.pool_shards(), SHARDS);
    let mut per_shard = [0usize; SHARDS];
    for block in &held {
        per_shard[block.block_id() / SHARD_LEN] += 1;
    }
    assert_eq!(per_shard, [16; SHARDS], "one request's run per shard");
    manager.check_invariants().unwrap();
}
