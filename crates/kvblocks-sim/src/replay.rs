//! Drives the real [`kvblocks::BlockManager`] through a prepared trace.
//!
//! One run = one policy x one capacity. The manager is built with
//! `block_count(capacity)`, `block_size(512)` (a token count the manager
//! only checks, matching the trace's blocks), duplicate `Reject` and the
//! policy under test. For each arrival, after the schedule's releases:
//!
//! 1. `match_blocks(chain)` pins the longest resident prefix: the hits.
//! 2. `allocate_blocks_with_evictions(misses)` takes a slot for every block
//!    past the prefix, evicting per policy. `None` means the pool cannot
//!    supply them: the request is rejected and its hits are dropped.
//! 3. Each slot is staged with its missing key and `register_blocks` makes
//!    them shareable. Under `Reject`, a key that is still resident (a deeper
//!    block whose parent was evicted) hands back the resident block and the
//!    fresh slot returns to the reset pool.
//! 4. The request holds hits + registered blocks, root first, until the
//!    schedule releases it. Dropping them root first is what a plain `Vec`
//!    does, and it is the order the policies see.
//!
//! This module must not second-guess the manager: whatever it does is what
//! is measured. Evictions are the lengths of the eviction lists the
//! manager returns.

use std::time::Instant;

use kvblocks::{BlockDuplicationPolicy, BlockManager, EvictionPolicyKind, ImmutableBlock};

use crate::prepare::PreparedTrace;
use crate::stats::RunStats;
use crate::BLOCK_TOKENS;

/// The largest pool a replay builds, in blocks: 16,777,216 (2^24), 8.6
/// billion tokens of 512-token blocks, far past any trace's working set. A
/// manager that large takes 1.3-2 GB depending on the policy
/// (BENCHMARKS.md, "kvsim limits"); the builder's own limit (`u32::MAX -
/// 1` blocks, slot numbers being `u32`) is far more than a machine holds, so
/// the command line checks against this one.
pub const MAX_CAPACITY: usize = 1 << 24;

/// Tier marker of the replayed manager.
#[derive(Debug, Clone, Copy)]
pub struct SimTier;

/// A replay that could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The manager refused its configuration (e.g. a capacity of zero).
    #[error("cannot build a block manager with {capacity} blocks for policy {policy}: {message}")]
    Build {
        /// Blocks asked for.
        capacity: usize,
        /// Policy asked for.
        policy: String,
        /// The manager's error.
        message: String,
    },
}

/// The manager a run replays through.
fn build(
    policy: EvictionPolicyKind,
    capacity: usize,
    pool_shards: usize,
) -> Result<BlockManager<SimTier>, ReplayError> {
    BlockManager::<SimTier>::builder()
        .block_count(capacity)
        .block_size(BLOCK_TOKENS as usize)
        .pool_shards(pool_shards)
        .duplication_policy(BlockDuplicationPolicy::Reject)
        .eviction_policy(policy)
        .build()
        .map_err(|err| ReplayError::Build {
            capacity,
            policy: policy.name().to_string(),
            message: err.to_string(),
        })
}

/// The pool shards a run at `capacity` asking for `pool_shards` gets: the
/// builder rounds the request so every shard holds a power of two of
/// blocks. Builds (and drops) the manager to ask it, so it also checks the
/// configuration before any replay. The policy does not change the count.
pub fn pool_shards_used(capacity: usize, pool_shards: usize) -> Result<usize, ReplayError> {
    Ok(build(EvictionPolicyKind::Lru, capacity, pool_shards)?.pool_shards())
}

/// Replays `trace` through a fresh manager with `capacity` blocks and
/// eviction policy `policy`. `progress` is called every 1024 requests with
/// the number just done.
pub fn run(
    trace: &PreparedTrace,
    policy: EvictionPolicyKind,
    capacity: usize,
    progress: impl FnMut(u64),
) -> Result<RunStats, ReplayError> {
    run_sharded(trace, policy, capacity, 1, progress)
}

/// [`run`] with the manager's pool split into about `pool_shards` shards
/// (`BlockManagerBuilder::pool_shards`).
pub fn run_sharded(
    trace: &PreparedTrace,
    policy: EvictionPolicyKind,
    capacity: usize,
    pool_shards: usize,
    mut progress: impl FnMut(u64),
) -> Result<RunStats, ReplayError> {
    let manager = build(policy, capacity, pool_shards)?;
    let block_size = manager.block_size();

    let chains = &trace.chains;
    // held[r]: the blocks request r pins, dropped (root first) on release.
    let mut held: Vec<Vec<ImmutableBlock<SimTier>>> = Vec::new();
    held.resize_with(chains.len(), Vec::new);
    let mut stats = RunStats {
        pool_shards: manager.pool_shards(),
        ..RunStats::default()
    };
    let start = Instant::now();

    for j in 0..chains.len() {
        for &i in trace.schedule.before(j) {
            drop(std::mem::take(&mut held[i as usize]));
        }

        let keys = chains.keys(j);
        let mut blocks = manager.match_blocks(keys);
        let hits = blocks.len();
        let misses = &keys[hits..];
        let served = if misses.is_empty() {
            true
        } else if let Some((fresh, evicted)) = manager.allocate_blocks_with_evictions(misses.len())
        {
            stats.evictions += evicted.len() as u64;
            let staged: Vec<_> = fresh
                .into_iter()
                .zip(misses)
                .map(|(block, &key)| match block.stage(key, block_size) {
                    Ok(complete) => complete,
                    Err(_) => {
                        panic!("staging a fresh block with the manager's own block size failed")
                    }
                })
                .collect();
            blocks.extend(manager.register_blocks(staged));
            true
        } else {
            false
        };
        stats.record(&trace.requests[j], keys.len(), hits, served);
        if served {
            held[j] = blocks;
        } else {
            drop(blocks);
        }
        if j % 1024 == 1023 {
            progress(1024);
        }
    }
    progress(chains.len() as u64 % 1024);
    stats.elapsed = start.elapsed();
    drop(held);
    Ok(stats)
}
