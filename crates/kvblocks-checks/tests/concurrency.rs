//! Several threads sharing one manager and a set of shared prefixes: the
//! serving loop of a real engine (match, allocate misses, stage, register,
//! hold, drop) with clones and weak upgrades mixed in. At the end every
//! invariant holds and no block is lost.
//!
//! Along the way each thread checks what it holds: a pinned block cannot be
//! evicted, so every block it holds names one hash only, and a scan of a
//! matched hash finds the very block the match pinned (a lock-free match
//! that pinned a reused slot would fail that). The runs use one pool shard
//! and several, whose allocations mix the one-shard and all-shard paths.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::thread;

use kvblocks::{
    BlockDuplicationPolicy, BlockManager, EvictionPolicyKind, ImmutableBlock, SequenceHash,
};

#[path = "../../kvblocks/tests/common/mod.rs"]
mod common;
use common::Rng;

#[derive(Clone)]
struct Tier;

const THREADS: usize = if cfg!(miri) { 2 } else { 4 };
const REQUESTS: usize = if cfg!(miri) { 25 } else { 3_000 };
const BLOCKS: usize = 96;

/// A request: one of 8 shared 4-block prompts, then up to 4 private blocks.
fn request_chain(rng: &mut Rng, thread: usize, request: usize) -> Vec<SequenceHash> {
    let prompt = rng.below(8);
    let mut chain = vec![SequenceHash::root(prompt + 1)];
    for i in 1..4 {
        let next = chain[i - 1].extend(prompt * 100 + i as u64);
        chain.push(next);
    }
    for i in 0..rng.below(5) {
        let private = ((thread as u64) << 40) | ((request as u64) << 8) | i;
        let next = chain[chain.len() - 1].extend(private);
        chain.push(next);
    }
    chain
}

/// Matches `chain`, allocates and registers the misses. `verify`: also scan
/// the matched hashes and check the scan finds the blocks the match pinned.
fn serve(
    manager: &BlockManager<Tier>,
    chain: &[SequenceHash],
    verify: bool,
) -> Option<Vec<ImmutableBlock<Tier>>> {
    let mut held = manager.match_blocks(chain);
    for (block, hash) in held.iter().zip(chain) {
        assert_eq!(
            block.sequence_hash(),
            *hash,
            "matches come back in chain order"
        );
    }
    if verify {
        // The matched blocks are pinned, so they are still the resident
        // primaries of their hashes (no policy update: `touch` is false).
        let found = manager.scan_matches(&chain[..held.len()], false);
        assert_eq!(found.len(), held.len(), "a pinned block stays resident");
        for block in &held {
            assert_eq!(
                found[&block.sequence_hash()].block_id(),
                block.block_id(),
                "a match pinned the resident primary of its hash"
            );
        }
    }
    let misses = &chain[held.len()..];
    let blocks = manager.allocate_blocks(misses.len())?;
    let staged = blocks
        .into_iter()
        .zip(misses)
        .map(|(block, hash)| {
            block
                .stage(*hash, manager.block_size())
                .expect("right size")
        })
        .collect();
    held.extend(manager.register_blocks(staged));
    Some(held)
}

/// Every block held at once names a single hash (a pinned slot is never
/// reused), whatever request it came from.
fn check_held(in_flight: &[Vec<ImmutableBlock<Tier>>]) {
    let mut hash_of: HashMap<usize, SequenceHash> = HashMap::new();
    for block in in_flight.iter().flatten() {
        let hash = *hash_of
            .entry(block.block_id())
            .or_insert(block.sequence_hash());
        assert_eq!(
            hash,
            block.sequence_hash(),
            "block {} held under two hashes",
            block.block_id()
        );
    }
}

/// `shards`: what the builder is asked for (`pool_shards`).
fn run(kind: EvictionPolicyKind, duplication: BlockDuplicationPolicy, shards: usize) {
    run_with(Some(kind), duplication, shards)
}

/// [`run`] with a built-in policy, or (`None`) the frequency-tiered LRU
/// over a registry whose tracker every thread touches.
fn run_with(kind: Option<EvictionPolicyKind>, duplication: BlockDuplicationPolicy, shards: usize) {
    let builder = BlockManager::<Tier>::builder()
        .block_count(BLOCKS)
        .block_size(16)
        .duplication_policy(duplication)
        .pool_shards(shards);
    let builder = match kind {
        Some(kind) => builder.eviction_policy(kind),
        None => builder
            .registry(
                kvblocks::BlockRegistry::builder()
                    .frequency_tracker(Arc::new(kvblocks::frequency::TinyLFUTracker::<u128>::new(
                        1024,
                    )))
                    .build(),
            )
            .with_multi_lru_backend_custom_thresholds(1, 2, 4),
    };
    let manager = Arc::new(builder.build().unwrap());
    let shard_len = BLOCKS.div_ceil(shards).next_power_of_two();
    assert_eq!(manager.pool_shards(), BLOCKS.div_ceil(shard_len));
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let manager = Arc::clone(&manager);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9 + t as u64 * 7919);
                let mut in_flight: Vec<Vec<ImmutableBlock<Tier>>> = Vec::new();
                let mut weak = Vec::new();
                let mut served = 0usize;
                start.wait();
                for request in 0..REQUESTS {
                    let chain = request_chain(&mut rng, t, request);
                    let verify = rng.below(4) == 0;
                    if let Some(held) = serve(&manager, &chain, verify) {
                        served += 1;
                        if rng.below(4) == 0 {
                            weak.push(held[rng.below(held.len() as u64) as usize].downgrade());
                        }
                        if rng.below(3) == 0 {
                            let copy = held.clone();
                            in_flight.push(copy);
                        }
                        in_flight.push(held);
                        if verify {
                            check_held(&in_flight);
                        }
                    }
                    while in_flight.len() > 3 {
                        let victim = rng.below(in_flight.len() as u64) as usize;
                        let blocks = in_flight.swap_remove(victim);
                        if rng.below(2) == 0 {
                            manager.release_blocks(blocks);
                        }
                    }
                    if let Some(w) = weak.pop() {
                        if let Some(strong) = w.upgrade() {
                            assert_eq!(strong.sequence_hash(), w.sequence_hash());
                        }
                    }
                }
                served
            })
        })
        .collect();
    let served: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(
        served > THREADS * REQUESTS / 2,
        "most requests fit: {served}"
    );
    manager.check_invariants().unwrap();
    let m = manager.metrics();
    assert_eq!(
        m.inflight_mutable + m.inflight_immutable,
        0,
        "every guard dropped"
    );
    assert_eq!(manager.available_blocks(), BLOCKS, "no block lost");
    assert!(
        m.match_blocks_returned > 0 && m.evictions > 0,
        "the run exercised hits and evictions: {m:?}"
    );
    assert!(manager.reset_inactive_pool().is_ok());
}

#[test]
fn threads_sharing_prefixes_lose_no_block_under_lru() {
    run(EvictionPolicyKind::Lru, BlockDuplicationPolicy::Allow, 1);
}

#[test]
fn threads_sharing_prefixes_lose_no_block_under_lineage_with_reject() {
    run(
        EvictionPolicyKind::Lineage,
        BlockDuplicationPolicy::Reject,
        1,
    );
}

#[test]
fn threads_sharing_prefixes_lose_no_block_under_every_policy() {
    for &kind in EvictionPolicyKind::ALL {
        run(kind, BlockDuplicationPolicy::Allow, 1);
    }
    run_with(None, BlockDuplicationPolicy::Allow, 1);
    run_with(None, BlockDuplicationPolicy::Reject, 4);
}

#[test]
fn threads_sharing_prefixes_lose_no_block_with_pool_shards() {
    // 96 blocks: 4 shards asked for gives 3 of 32 slots, 8 gives 6 of 16.
    for (kind, duplication, shards) in [
        (EvictionPolicyKind::Lru, BlockDuplicationPolicy::Allow, 4),
        (EvictionPolicyKind::Lru, BlockDuplicationPolicy::Reject, 4),
        (
            EvictionPolicyKind::Lineage,
            BlockDuplicationPolicy::Reject,
            4,
        ),
        (
            EvictionPolicyKind::TinyLfu,
            BlockDuplicationPolicy::Allow,
            8,
        ),
    ] {
        run(kind, duplication, shards);
    }
}

#[test]
fn manager_dropped_while_threads_still_release_their_blocks() {
    let rounds = if cfg!(miri) { 3 } else { 50 };
    for round in 0..rounds {
        let manager = BlockManager::<Tier>::builder()
            .block_count(64)
            .block_size(16)
            .build()
            .unwrap();
        let per_thread: Vec<Vec<ImmutableBlock<Tier>>> = (0..THREADS as u64)
            .map(|t| {
                let chain: Vec<SequenceHash> = (0..8u64)
                    .scan(None, |parent: &mut Option<SequenceHash>, i| {
                        let next = match parent {
                            None => SequenceHash::root(round << 8 | t),
                            Some(p) => p.extend(i),
                        };
                        *parent = Some(next);
                        Some(next)
                    })
                    .collect();
                serve(&manager, &chain, true).expect("room for every thread")
            })
            .collect();
        let weak = per_thread[0][0].downgrade();
        let start = Arc::new(Barrier::new(THREADS + 1));
        let workers: Vec<_> = per_thread
            .into_iter()
            .map(|held| {
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    start.wait();
                    let copies = held.clone();
                    drop(held);
                    drop(copies);
                })
            })
            .collect();
        start.wait();
        drop(manager);
        for worker in workers {
            worker.join().unwrap();
        }
        // The weak handle kept the store; the cached block is still there.
        assert!(weak.upgrade().is_some());
    }
}
