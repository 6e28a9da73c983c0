//! Tiered replay: a trace served from G1 with lower tiers (G2 host, G3 disk,
//! G4 remote) catching what G1 evicts, each tier a real
//! [`kvblocks::BlockManager`] with its own marker type and eviction policy,
//! all sharing one [`kvblocks::BlockRegistry`].
//!
//! This module owns the tiered serving loop and its per-tier counters; the
//! cost of moving blocks is [`crate::cost`], the output [`crate::tier_report`].
//! Like [`crate::replay`], it must not second-guess the managers.
//!
//! # One request
//!
//! After the schedule's releases (as in the single-tier replay):
//!
//! 1. **Lookup.** The chain is walked from its root: at each position the
//!    fastest tier holding the block serves it. G1 runs are matched (and
//!    pinned) with `match_blocks`; a run in a lower tier lasts while that tier
//!    holds the next block and no faster tier does. The walk stops at the
//!    first block no tier holds: everything before it is a hit, per tier.
//! 2. **Allocate.** G1 allocates one slot per block it did not match (the
//!    lower-tier hits to onboard and the misses to compute), evicting per its
//!    policy. If it cannot, the request is rejected (no hit counts, nothing is
//!    onboarded or touched below), exactly as in the single-tier replay.
//! 3. **Onboard and compute.** Each slot is staged with its block's key and
//!    registered in G1; the lower-tier runs are matched there and released
//!    (the copy up counts as a use of the lower copy, which stays).
//! 4. **Offload.** `on-evict`: every block G1 evicted is stored in the next
//!    tier, every block that tier evicts in the one after, and so on; the
//!    last tier's evictions are gone. `write-through`: every block G1 just
//!    registered (computed or onboarded) is stored at once in every lower
//!    tier; evictions anywhere are then gone. A store skips blocks the tier
//!    already holds, asked of the shared registry
//!    ([`BlockRegistry::check_presence`]), which is also how an offload
//!    engine asks "is it already on host?".
//!
//! # Seeing G1's evictions
//!
//! `allocate_blocks_with_evictions` returns the hashes of the blocks it
//! evicted. The replay is single-threaded, so that list is exactly the set
//! of blocks that left G1 (no other thread can register one again in
//! between) and costs nothing extra; G1 only loses blocks by eviction here
//! (no evict-on-release, no reset). An event stream from the store would say
//! the same through a batcher; diffing registered sets would cost a pass
//! over the pool per request. A test (`tests/tiered.rs`) replays with an
//! events manager on the registry and checks that the stores' removals are
//! exactly the evictions counted here, tier by tier.

use std::time::Instant;

use kvblocks::{
    BlockDuplicationPolicy, BlockManager, BlockMetadata, BlockRegistry, EvictionPolicyKind,
    ImmutableBlock, LogicalLayoutHandle, SequenceHash,
};
use serde::Serialize;

use crate::prepare::PreparedTrace;
use crate::stats::RunStats;
use crate::BLOCK_TOKENS;

/// Tier marker of G1 (device memory).
#[derive(Debug, Clone, Copy)]
pub struct G1;
/// Tier marker of G2 (pinned host memory).
#[derive(Debug, Clone, Copy)]
pub struct G2;
/// Tier marker of G3 (local disk).
#[derive(Debug, Clone, Copy)]
pub struct G3;
/// Tier marker of G4 (remote storage).
#[derive(Debug, Clone, Copy)]
pub struct G4;

/// When a block is copied to the lower tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OffloadMode {
    /// When a tier evicts it, into the next tier.
    OnEvict,
    /// When G1 registers it, into every lower tier.
    WriteThrough,
}

impl OffloadMode {
    /// `on-evict` or `write-through`.
    pub fn name(self) -> &'static str {
        match self {
            OffloadMode::OnEvict => "on-evict",
            OffloadMode::WriteThrough => "write-through",
        }
    }
}

/// One tier of a run: which, how large, which policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierSetup {
    /// The tier.
    pub tier: LogicalLayoutHandle,
    /// Blocks it holds.
    pub capacity: usize,
    /// Its eviction policy.
    pub policy: EvictionPolicyKind,
}

/// What one tier did during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TierStats {
    /// Block references of served requests this tier served (the fastest
    /// tier holding the block).
    pub hits: u64,
    /// Prompt tokens those hits cover (the last block of a prompt is
    /// usually partial).
    pub hit_tokens: u64,
    /// Blocks copied from this tier into G1 (0 for G1).
    pub onboarded: u64,
    /// Blocks copied into this tier from above (0 for G1).
    pub offloaded: u64,
    /// Registered blocks this tier evicted to make room.
    pub evictions: u64,
}

/// A tiered run's figures: totals as a single-tier run counts them, and
/// each tier's own.
#[derive(Debug, Clone, PartialEq)]
pub struct TieredStats {
    /// Totals; `block_hits` is the sum over tiers, `evictions` G1's.
    pub total: RunStats,
    /// Per tier, G1 first.
    pub tiers: Vec<(TierSetup, TierStats)>,
}

/// A tiered replay that could not start.
#[derive(Debug, thiserror::Error)]
pub enum TieredError {
    /// The tier list is not G1 followed by slower tiers, each once.
    #[error("tiers must be G1 followed by slower tiers, each once; got {0}")]
    Tiers(String),
    /// A manager refused its configuration.
    #[error("cannot build the {tier} manager with {capacity} blocks: {message}")]
    Build {
        /// The tier.
        tier: LogicalLayoutHandle,
        /// Blocks asked for.
        capacity: usize,
        /// The manager's error.
        message: String,
    },
}

/// One tier's manager.
struct Tier<T> {
    manager: BlockManager<T>,
    registry: BlockRegistry,
}

impl<T: BlockMetadata> Tier<T> {
    fn build(setup: TierSetup, registry: &BlockRegistry) -> Result<Self, TieredError> {
        let manager = BlockManager::<T>::builder()
            .block_count(setup.capacity)
            .block_size(BLOCK_TOKENS as usize)
            .duplication_policy(BlockDuplicationPolicy::Reject)
            .eviction_policy(setup.policy)
            .registry(registry.clone())
            .logical_layout(setup.tier)
            .build()
            .map_err(|err| TieredError::Build {
                tier: setup.tier,
                capacity: setup.capacity,
                message: err.to_string(),
            })?;
        Ok(Self {
            manager,
            registry: registry.clone(),
        })
    }
}

/// What the loop needs of a lower tier, whatever its marker type.
trait LowerTier {
    /// Whether the tier holds `key` now (no use recorded).
    fn holds(&self, key: SequenceHash) -> bool;
    /// Copies `keys` (all held) up: matches them, which counts as a use, and
    /// releases them again.
    fn read(&self, keys: &[SequenceHash]);
    /// Stores the keys it does not hold yet; appends what it evicted for
    /// them to `evicted`; returns how many it stored.
    fn store(&self, keys: &[SequenceHash], evicted: &mut Vec<SequenceHash>) -> u64;
}

impl<T: BlockMetadata> LowerTier for Tier<T> {
    fn holds(&self, key: SequenceHash) -> bool {
        self.manager.contains(key)
    }

    fn read(&self, keys: &[SequenceHash]) {
        let blocks = self.manager.match_blocks(keys);
        debug_assert_eq!(blocks.len(), keys.len(), "a read block was not held");
        drop(blocks);
    }

    fn store(&self, keys: &[SequenceHash], evicted: &mut Vec<SequenceHash>) -> u64 {
        let absent: Vec<SequenceHash> = self
            .registry
            .check_presence::<T>(keys)
            .into_iter()
            .filter_map(|(key, present)| (!present).then_some(key))
            .collect();
        let block_size = self.manager.block_size();
        let mut stored = 0;
        // A lower tier pins nothing between calls, so any batch up to its
        // capacity can be allocated; a larger one goes in capacity-sized
        // chunks, each evicting what the one before stored.
        for chunk in absent.chunks(self.manager.total_blocks()) {
            let Some((fresh, gone)) = self.manager.allocate_blocks_with_evictions(chunk.len())
            else {
                continue;
            };
            evicted.extend(gone);
            let staged: Vec<_> = fresh
                .into_iter()
                .zip(chunk)
                .filter_map(|(block, &key)| block.stage(key, block_size).ok())
                .collect();
            stored += staged.len() as u64;
            drop(self.manager.register_blocks(staged));
        }
        stored
    }
}

fn lower_tier(
    setup: TierSetup,
    registry: &BlockRegistry,
) -> Result<Box<dyn LowerTier>, TieredError> {
    Ok(match setup.tier {
        LogicalLayoutHandle::G1 => {
            return Err(TieredError::Tiers("G1 as a lower tier".to_string()))
        }
        LogicalLayoutHandle::G2 => Box::new(Tier::<G2>::build(setup, registry)?),
        LogicalLayoutHandle::G3 => Box::new(Tier::<G3>::build(setup, registry)?),
        LogicalLayoutHandle::G4 => Box::new(Tier::<G4>::build(setup, registry)?),
    })
}

/// A run of positions `start..end` of a chain served by one lower tier.
struct LowerRun {
    tier: usize,
    start: usize,
    end: usize,
}

/// Tokens of block `position` of a prompt of `input_length` tokens.
fn block_tokens(position: usize, input_length: u64) -> u64 {
    input_length
        .saturating_sub(position as u64 * BLOCK_TOKENS)
        .min(BLOCK_TOKENS)
}

/// Replays `trace` through fresh managers of `setups` (G1 first, then
/// slower tiers, each once) sharing one registry, offloading per `mode`.
/// `progress` is called every 1024 requests with the number just done.
///
/// # Errors
///
/// [`TieredError`] if the tier list is malformed or a manager cannot be built.
pub fn run(
    trace: &PreparedTrace,
    setups: &[TierSetup],
    mode: OffloadMode,
    progress: impl FnMut(u64),
) -> Result<TieredStats, TieredError> {
    run_with_registry(
        trace,
        setups,
        mode,
        &BlockRegistry::builder().build(),
        progress,
    )
}

/// [`run`] with managers built on `registry` (for example one built with an
/// events manager, to watch what the stores report).
///
/// # Errors
///
/// As [`run`].
pub fn run_with_registry(
    trace: &PreparedTrace,
    setups: &[TierSetup],
    mode: OffloadMode,
    registry: &BlockRegistry,
    mut progress: impl FnMut(u64),
) -> Result<TieredStats, TieredError> {
    let ordered = setups.first().map(|s| s.tier) == Some(LogicalLayoutHandle::G1)
        && setups.windows(2).all(|w| w[0].tier < w[1].tier);
    if !ordered {
        let names: Vec<&str> = setups.iter().map(|s| s.tier.name()).collect();
        return Err(TieredError::Tiers(format!("[{}]", names.join(", "))));
    }
    let g1 = Tier::<G1>::build(setups[0], registry)?.manager;
    let lower: Vec<Box<dyn LowerTier>> = setups[1..]
        .iter()
        .map(|&setup| lower_tier(setup, registry))
        .collect::<Result<_, _>>()?;
    let block_size = g1.block_size();

    let chains = &trace.chains;
    let mut held: Vec<Vec<ImmutableBlock<G1>>> = Vec::new();
    held.resize_with(chains.len(), Vec::new);
    let mut total = RunStats {
        pool_shards: g1.pool_shards(),
        ..RunStats::default()
    };
    let mut per_tier = vec![TierStats::default(); setups.len()];
    // Reused buffers: G1's matched runs (start, blocks), lower-tier runs,
    // positions G1 fills, evictions of each offload level.
    let mut g1_runs: Vec<(usize, Vec<ImmutableBlock<G1>>)> = Vec::new();
    let mut runs: Vec<LowerRun> = Vec::new();
    let mut fill: Vec<usize> = Vec::new();
    let mut level: Vec<SequenceHash> = Vec::new();
    let mut next_level: Vec<SequenceHash> = Vec::new();
    let start = Instant::now();

    for j in 0..chains.len() {
        for &i in trace.schedule.before(j) {
            drop(std::mem::take(&mut held[i as usize]));
        }
        let keys = chains.keys(j);
        let request = &trace.requests[j];

        // 1. Lookup: the fastest tier at each position, up to the first miss.
        g1_runs.clear();
        runs.clear();
        let mut p = 0;
        'walk: while p < keys.len() {
            let matched = g1.match_blocks(&keys[p..]);
            if !matched.is_empty() {
                let len = matched.len();
                g1_runs.push((p, matched));
                p += len;
                continue;
            }
            for (k, tier) in lower.iter().enumerate() {
                let mut q = p;
                while q < keys.len()
                    && tier.holds(keys[q])
                    && (q == p
                        || !(g1.contains(keys[q]) || lower[..k].iter().any(|t| t.holds(keys[q]))))
                {
                    q += 1;
                }
                if q > p {
                    runs.push(LowerRun {
                        tier: k,
                        start: p,
                        end: q,
                    });
                    p = q;
                    continue 'walk;
                }
            }
            break;
        }
        let hits = p;

        // 2. Allocate a G1 slot for every block G1 did not match.
        fill.clear();
        let mut covered = g1_runs.iter().map(|(s, b)| (*s, *s + b.len())).peekable();
        let mut pos = 0;
        while pos < keys.len() {
            match covered.peek() {
                Some(&(s, e)) if s == pos => {
                    pos = e;
                    covered.next();
                }
                _ => {
                    fill.push(pos);
                    pos += 1;
                }
            }
        }
        let allocated = if fill.is_empty() {
            Some((Vec::new(), Vec::new()))
        } else {
            g1.allocate_blocks_with_evictions(fill.len())
        };
        let Some((fresh, evicted)) = allocated else {
            g1_runs.clear();
            total.record(request, keys.len(), hits, false);
            if j % 1024 == 1023 {
                progress(1024);
            }
            continue;
        };
        per_tier[0].evictions += evicted.len() as u64;

        // 3. Onboard and compute: register every filled position in G1.
        let staged: Vec<_> = fresh
            .into_iter()
            .zip(&fill)
            .map(|(block, &pos)| match block.stage(keys[pos], block_size) {
                Ok(complete) => complete,
                Err(_) => panic!("staging a fresh block with G1's own block size failed"),
            })
            .collect();
        let mut registered = g1.register_blocks(staged).into_iter();
        let mut blocks = Vec::with_capacity(keys.len());
        let mut matched = std::mem::take(&mut g1_runs).into_iter().peekable();
        let mut pos = 0;
        while pos < keys.len() {
            if matched.peek().is_some_and(|(s, _)| *s == pos) {
                let (_, run) = matched.next().expect("peeked");
                pos += run.len();
                blocks.extend(run);
            } else {
                blocks.extend(registered.next());
                pos += 1;
            }
        }
        held[j] = blocks;
        for run in &runs {
            lower[run.tier].read(&keys[run.start..run.end]);
            let stats = &mut per_tier[run.tier + 1];
            stats.onboarded += (run.end - run.start) as u64;
        }
        // Hits and their tokens, per serving tier.
        let mut tier_of = runs.iter().peekable();
        for position in 0..hits {
            while tier_of.peek().is_some_and(|r| r.end <= position) {
                tier_of.next();
            }
            let tier = match tier_of.peek() {
                Some(r) if r.start <= position => r.tier + 1,
                _ => 0,
            };
            per_tier[tier].hits += 1;
            per_tier[tier].hit_tokens += block_tokens(position, request.input_length);
        }
        total.record(request, keys.len(), hits, true);

        // 4. Offload.
        match mode {
            OffloadMode::OnEvict => {
                level.clear();
                level.extend(evicted);
                for (k, tier) in lower.iter().enumerate() {
                    if level.is_empty() {
                        break;
                    }
                    next_level.clear();
                    per_tier[k + 1].offloaded += tier.store(&level, &mut next_level);
                    per_tier[k + 1].evictions += next_level.len() as u64;
                    std::mem::swap(&mut level, &mut next_level);
                }
            }
            OffloadMode::WriteThrough => {
                level.clear();
                level.extend(fill.iter().map(|&pos| keys[pos]));
                for (k, tier) in lower.iter().enumerate() {
                    next_level.clear();
                    per_tier[k + 1].offloaded += tier.store(&level, &mut next_level);
                    per_tier[k + 1].evictions += next_level.len() as u64;
                }
            }
        }
        if j % 1024 == 1023 {
            progress(1024);
        }
    }
    progress(chains.len() as u64 % 1024);
    total.elapsed = start.elapsed();
    total.evictions = per_tier[0].evictions;
    drop(held);
    Ok(TieredStats {
        total,
        tiers: setups.iter().copied().zip(per_tier).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_tokens_cut_the_last_partial_block() {
        assert_eq!(block_tokens(0, 1100), 512);
        assert_eq!(block_tokens(2, 1100), 76);
        assert_eq!(block_tokens(3, 1100), 0);
    }
}
