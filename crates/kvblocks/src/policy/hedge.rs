//! [`Hedge`]: an eviction policy that learns online which of two orders
//! suits the traffic, and evicts by that one.
//!
//! # The experts
//!
//! Both experts are leaf-first (a block whose child is resident waits, as
//! in [`super::Lineage`], because a match stops at the first miss):
//!
//! - **leaf-first LRU**: the leaf released longest ago. Right when the next
//!   request most likely continues a recent one (multi-turn chat, agentic
//!   sessions).
//! - **once-first**: leaves used once before any leaf used twice, each
//!   group oldest first, as LRU-2 and 2Q order them. A block counts as used
//!   twice when a request finds it after its first user released it, so
//!   the hits of the request that registered it, or of requests running
//!   alongside, are one use (LRU-K's correlated reference period), or when
//!   it registers again while a fixed-size history of blocks that left
//!   remembers it (LRU-K's retained information). A used-twice leaf idle
//!   for eight pools' worth of releases loses its protection. Right
//!   when one-off documents or a stream of rarely repeated prompts would
//!   flush the blocks that are really reused (scans, frequency skew).
//!
//! One structure (`hedge/orders.rs`) answers for both in O(1): the
//! evictable leaves in two release-ordered lists (used once, used twice),
//! the inner blocks in a third. Leaf-first LRU compares the two fronts;
//! once-first takes the first list's front while it has one. Following
//! either costs the same and a switch moves nothing.
//!
//! # Choosing the leader: miniature simulations
//!
//! Judging an expert on the real cache is biased: its view of blocks the
//! leader kept or threw away is not what it would have built alone. (A first
//! version here blamed every expert whose would-be victim came back, LeCaR
//! style; the experts ended with nearly equal blame.) So each order also
//! runs alone as a *miniature cache* (`hedge/mini.rs`; Waldspurger et al.,
//! ATC'17, spatial sampling) over a fixed sample of the keys: a block is
//! sampled when its key's hash under a fixed seed falls in one bucket of
//! `rate` (so a replay repeats exactly). Each miniature has `slots / rate`
//! slots, `rate` a power of two near `slots / 1024`: 1 up to 1,024 slots,
//! else between 4 and 64. A registration of a sampled block, or a match
//! that finds it evictable (`on_reacquire`), is a reference to both
//! miniatures, a hit there if the key is resident. Hits on a block some
//! request still pins are the same use as that request's, as once-first
//! counts uses, so Hedge does not observe hits at all and the store pins
//! active blocks for a match without its lock, as under LRU. A miniature
//! keeps a block tree only when it samples every key (`rate` 1): in a
//! sample of at most one key in four, a block's parent is seldom there. The
//! order whose miniature scores more hits, decayed per sampled reference
//! with a half-life of two miniature pools, leads; a challenger must beat
//! the leader by 5% and by a few hits, so near ties do not flap.
//!
//! Sampling whole chains instead (a block sampled with its resident
//! parent, a hit counted only below a hit, as a prefix match counts) was
//! tried: on the Mooncake synthetic trace, whose traffic hangs off a few
//! shared roots, a sample of roots is too lumpy, and it lost 0.2-1.8 points
//! against sampling keys at three of four pool sizes (`BENCHMARKS.md`).
//! Sampling keys has its own blind spot: a miniature sees reuse, not
//! chains, and on the agentic mix it prefers once-first where the chained
//! real cache does better with leaf-first LRU.
//!
//! # Cost
//!
//! The real cache pays what leaf-first LRU pays (a parent table probe per
//! registration and forget, list moves) plus a stamp compare per eviction,
//! one fixed-seed hash per registration and forget, which both picks the
//! sample and files the key in the ghosts (`hedge/ghosts.rs`: 2 bytes an
//! entry, one 16-byte set read per registration and written per forget);
//! one reference in `rate` also goes through both miniatures (a table
//! probe and the same list moves each). Everything is sized in
//! [`Hedge::new`]; no hook allocates. `BENCHMARKS.md` ("Adaptive
//! eviction", "Replay cost per block") has the cost against LRU's, before
//! and after these cuts.
//!
//! The cuts (what callgrind showed on `kvsim replay`): Hedge no longer
//! observes hits (each match of an active block took the shard lock and
//! a policy call); the ghosts replace a 20-byte history entry with its own
//! hash (2.6 MB at 40,000 slots, now 256 KB); the sampled miniatures keep
//! no tree; the place, reuse bit and stamp of a slot share one 8-byte word
//! instead of three arrays.

mod ghosts;
mod mini;
mod orders;
#[cfg(test)]
mod tests;

use self::mini::Mini;
use self::orders::{Order, Orders};
use super::EvictionPolicy;
use crate::keyhash::KeyHasher;
use crate::SequenceHash;

/// Number of experts.
const EXPERTS: usize = 2;

/// The experts' orders and names, in index order.
const ORDERS: [Order; EXPERTS] = [Order::LeafLru, Order::OnceFirst];

/// Expert names, in index order (what [`Hedge::leader`] returns).
pub const EXPERT_NAMES: [&str; EXPERTS] = ["lineage", "once-first"];

/// A challenger leads once its decayed hits exceed the leader's by this
/// factor ...
const SWITCH_MARGIN: f64 = 1.05;

/// ... and by at least this many decayed hits.
const SWITCH_MIN_LEAD: f64 = 4.0;

/// Miniature pools aim at this many slots (fewer when the pool is smaller).
const MINI_SLOTS: usize = 1024;

/// At least one key in this many is left out of the sample (pools of
/// more than this many slots), so the miniatures cost a fraction of a hook.
const MIN_RATE: usize = 4;

/// At most one key in this many is sampled.
const MAX_RATE: usize = 64;

/// Seed of the fingerprint hash, which picks the sample and files keys in
/// the ghosts (digits of pi: any dense constant will do).
const SAMPLER_SEED: [u64; 2] = [0x243F_6A88_85A3_08D3, 0x1319_8A2E_0370_7344];

/// Follows whichever of leaf-first LRU and once-first scores more hits in
/// its miniature cache.
pub struct Hedge {
    orders: Orders,
    /// Index of the expert that evicts.
    leader: usize,
    /// Whether each slot's block is in the sample (read on every hit, so
    /// one byte a slot).
    sampled: Vec<bool>,
    /// Each sampled slot's key (the store names only the slot on a hit).
    keys: Vec<SequenceHash>,
    minis: [Mini; EXPERTS],
    /// Decayed miniature hits per expert.
    score: [f64; EXPERTS],
    /// Factor applied to every score per sampled reference.
    decay: f64,
    /// Keys whose sampling hash has these bits clear are sampled.
    sample_mask: u64,
    /// Fingerprints keys, to pick the sample and for the ghosts: fixed, so
    /// that a replay repeats exactly.
    sampler: KeyHasher,
    /// Hashes keys for the miniature tables (random seed, flooding).
    hasher: KeyHasher,
    /// Leader changes so far.
    switches: u64,
}

impl Hedge {
    /// A policy for slots `0..slots`, led by leaf-first LRU until the
    /// miniature caches say otherwise.
    pub fn new(slots: usize) -> Self {
        let rate = if slots <= MINI_SLOTS {
            1
        } else {
            (slots / MINI_SLOTS)
                .clamp(MIN_RATE, MAX_RATE)
                .next_power_of_two()
        };
        let mini = (slots / rate).max(1);
        let hasher = KeyHasher::random();
        Self {
            orders: Orders::new(slots, true),
            leader: 0,
            sampled: vec![false; slots],
            keys: vec![SequenceHash::default(); slots],
            // A sample of one key in `rate` seldom holds a block's parent
            // with it: the miniatures keep a tree only if it holds every key.
            minis: ORDERS.map(|order| Mini::new(order, mini, rate == 1)),
            score: [0.0; EXPERTS],
            decay: 0.5f64.powf(1.0 / (2 * mini) as f64),
            // The sample uses the sampling hash's high bits.
            sample_mask: (rate as u64 - 1) << 48,
            sampler: KeyHasher::with_seed(SAMPLER_SEED),
            hasher,
            switches: 0,
        }
    }

    /// The leading expert's name (one of [`EXPERT_NAMES`]).
    pub fn leader(&self) -> &'static str {
        EXPERT_NAMES[self.leader]
    }

    /// How many times the leader changed.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// `key`'s fixed-seed hash: the sample and the ghosts read it.
    #[inline]
    fn fingerprint(&self, key: SequenceHash) -> u64 {
        self.sampler.hash_u128(key.as_u128())
    }

    /// One reference to a sampled key: both miniature caches see it, the
    /// scores move and the leader may change.
    fn reference(&mut self, key: SequenceHash, fingerprint: u64) {
        let hash = self.hasher.hash_u128(key.as_u128());
        for (mini, score) in self.minis.iter_mut().zip(&mut self.score) {
            let hit = mini.reference(key, hash, fingerprint);
            *score = *score * self.decay + f64::from(u8::from(hit));
        }
        let challenger = 1 - self.leader;
        let (lead, other) = (self.score[self.leader], self.score[challenger]);
        if other > lead * SWITCH_MARGIN && other - lead > SWITCH_MIN_LEAD {
            self.leader = challenger;
            self.switches += 1;
        }
    }
}

impl EvictionPolicy for Hedge {
    fn name(&self) -> &'static str {
        "hedge"
    }

    fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        let fingerprint = self.fingerprint(hash);
        self.orders.on_register(slot, hash, fingerprint);
        let sampled = fingerprint & self.sample_mask == 0;
        self.sampled[slot as usize] = sampled;
        if sampled {
            self.keys[slot as usize] = hash;
            self.reference(hash, fingerprint);
        }
    }

    /// Hits on pinned blocks are not needed (see `on_reacquire`), so the
    /// store pins active blocks for a match without its lock, as for LRU.
    fn observes_hits(&self) -> bool {
        false
    }

    #[inline]
    fn on_release(&mut self, slot: u32) {
        self.orders.on_release(slot);
    }

    /// A use after a release: the block counts as reused, and a sampled
    /// one is a reference to the miniatures. (Hits on a pinned block are
    /// the same use as the one pinning it, as LRU-K's correlated reference
    /// period has them.)
    fn on_reacquire(&mut self, slot: u32) {
        if self.sampled[slot as usize] {
            let key = self.keys[slot as usize];
            self.reference(key, self.fingerprint(key));
        }
        self.orders.on_reacquire(slot);
    }

    #[inline]
    fn evict(&mut self) -> Option<u32> {
        self.orders.evict(ORDERS[self.leader])
    }

    fn on_forget(&mut self, slot: u32, hash: SequenceHash) {
        // `sampled[slot]` is stale from here and rewritten at registration.
        self.orders.forget(slot, self.fingerprint(hash));
    }

    fn on_discard(&mut self, slot: u32, hash: SequenceHash) {
        self.orders.forget(slot, self.fingerprint(hash));
    }

    #[inline]
    fn peek_victim(&self) -> Option<u32> {
        self.orders.peek(ORDERS[self.leader])
    }

    fn len(&self) -> usize {
        self.orders.len()
    }

    fn check(&self) -> Result<(), String> {
        self.orders.check()?;
        if self.leader >= EXPERTS || self.score.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(format!(
                "hedge: leader {} with scores {:?}",
                self.leader, self.score
            ));
        }
        self.minis.iter().try_for_each(Mini::check)
    }
}
