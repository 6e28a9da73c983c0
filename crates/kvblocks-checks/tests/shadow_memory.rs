//! What each pinned slot really holds: a shadow of the physical KV memory.
//!
//! The store never sees block contents; a serving engine writes them into
//! the slot a `MutableBlock` names and trusts that a pinned slot keeps them.
//! Here every slot has a shadow word. A thread that allocates a slot claims
//! it (a second claimant means a slot was handed out twice), writes the hash
//! of what it "computes" into the shadow, stages and registers it; every
//! thread that holds a handle checks the shadow still says the handle's
//! hash. The shadow is written and read with `Relaxed` atomics, so the only
//! ordering between a writer and a later reader is the one the store itself
//! provides.
//!
//! Four threads run long enough for hundreds of thousands of evictions,
//! deduplicated registrations and slot reuses, over one pool and several
//! pool shards, both duplication policies and two eviction policies.

use std::sync::atomic::{AtomicU64, Ordering};
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
const BLOCKS: usize = 128;
/// Requests per thread per configuration.
const REQUESTS: usize = if cfg!(miri) { 20 } else { 12_000 };

/// The engine's memory, as far as this test can see it: per slot, the hash
/// of the content it holds and who is writing it.
struct Shadow {
    content: Vec<AtomicU64>,
    writer: Vec<AtomicU64>,
}

/// What the shadow stores for a hash.
fn tag(hash: SequenceHash) -> u64 {
    let raw = hash.as_u128();
    (raw as u64) ^ ((raw >> 64) as u64).rotate_left(17) | 1
}

impl Shadow {
    fn new() -> Self {
        Self {
            content: (0..BLOCKS).map(|_| AtomicU64::new(0)).collect(),
            writer: (0..BLOCKS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Claims a freshly allocated slot and "computes" `hash` into it.
    fn write(&self, slot: usize, hash: SequenceHash, me: u64) {
        let claimed =
            self.writer[slot].compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed);
        assert_eq!(claimed, Ok(0), "slot {slot} handed to two writers at once");
        self.content[slot].store(tag(hash), Ordering::Relaxed);
    }

    /// The content is final (about to be staged and registered).
    fn finish(&self, slot: usize, me: u64) {
        let released =
            self.writer[slot].compare_exchange(me, 0, Ordering::Relaxed, Ordering::Relaxed);
        assert_eq!(released, Ok(me), "slot {slot} lost its writer");
    }

    /// A handle on `block` is held: the slot must hold the block's content.
    fn check(&self, block: &ImmutableBlock<Tier>) {
        let slot = block.block_id();
        assert_eq!(
            self.writer[slot].load(Ordering::Relaxed),
            0,
            "slot {slot} is being written while pinned"
        );
        assert_eq!(
            self.content[slot].load(Ordering::Relaxed),
            tag(block.sequence_hash()),
            "slot {slot} does not hold the block its handle names"
        );
    }
}

/// One of 24 shared prompts (2-6 blocks) and 0-5 private blocks.
fn chain(rng: &mut Rng, thread: usize, request: usize) -> Vec<SequenceHash> {
    let prompt = rng.next() % 24;
    let mut chain = vec![SequenceHash::root(prompt)];
    for i in 1..2 + prompt % 5 {
        chain.push(chain[chain.len() - 1].extend(prompt << 8 | i));
    }
    for i in 0..rng.next() % 6 {
        let private = (thread as u64) << 48 | (request as u64) << 8 | i;
        chain.push(chain[chain.len() - 1].extend(private));
    }
    chain
}

fn serve(
    manager: &BlockManager<Tier>,
    shadow: &Shadow,
    chain: &[SequenceHash],
    me: u64,
) -> Vec<ImmutableBlock<Tier>> {
    let mut held = manager.match_blocks(chain);
    held.iter().for_each(|b| shadow.check(b));
    let misses = &chain[held.len()..];
    let Some(fresh) = manager.allocate_blocks(misses.len()) else {
        return held; // the pool is pinned by the other threads: skip
    };
    let staged = fresh
        .into_iter()
        .zip(misses)
        .map(|(block, hash)| {
            shadow.write(block.block_id(), *hash, me);
            shadow.finish(block.block_id(), me);
            block.stage(*hash, 4).unwrap()
        })
        .collect();
    let registered = manager.register_blocks(staged);
    registered.iter().for_each(|b| shadow.check(b));
    held.extend(registered);
    held
}

fn run(shards: usize, duplication: BlockDuplicationPolicy, kind: EvictionPolicyKind) -> (u64, u64) {
    let manager = Arc::new(
        BlockManager::<Tier>::builder()
            .block_count(BLOCKS)
            .block_size(4)
            .pool_shards(shards)
            .duplication_policy(duplication)
            .eviction_policy(kind)
            .build()
            .unwrap(),
    );
    let shadow = Arc::new(Shadow::new());
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (manager, shadow, start) = (manager.clone(), shadow.clone(), start.clone());
            thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9 + t as u64 * 7919);
                // Each thread keeps its last two requests pinned, as a
                // scheduler keeps running requests, and rechecks them.
                let mut running: Vec<Vec<ImmutableBlock<Tier>>> = Vec::new();
                start.wait();
                for request in 0..REQUESTS {
                    let chain = chain(&mut rng, t, request);
                    running.push(serve(&manager, &shadow, &chain, t as u64 + 1));
                    if running.len() > 2 {
                        let done = running.remove(0);
                        done.iter().for_each(|b| shadow.check(b));
                        if request % 2 == 0 {
                            manager.release_blocks(done);
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    manager.check_invariants().unwrap();
    assert_eq!(manager.available_blocks(), BLOCKS, "every block back");
    let metrics = manager.metrics();
    (
        metrics.evictions,
        metrics.registration_dedups + metrics.duplicate_blocks,
    )
}

#[test]
fn every_pinned_slot_holds_what_its_handle_names() {
    let mut evictions = 0;
    let mut dedups = 0;
    for shards in [1, 4] {
        for duplication in [
            BlockDuplicationPolicy::Allow,
            BlockDuplicationPolicy::Reject,
        ] {
            for kind in [EvictionPolicyKind::Lru, EvictionPolicyKind::Lineage] {
                let (e, d) = run(shards, duplication, kind);
                evictions += e;
                dedups += d;
            }
        }
    }
    eprintln!("{evictions} evictions, {dedups} deduplicated registrations");
    if !cfg!(miri) {
        assert!(evictions > 200_000, "only {evictions} evictions");
        assert!(dedups > 1_000, "only {dedups} deduplicated registrations");
    }
}
