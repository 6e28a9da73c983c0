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
//!   group oldest first, as LRU-2 and 2Q order them (a parent left a leaf
//!   by its evicted tail counts from when it became a leaf, so a chain is
//!   not unravelled at once). A block counts as used
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
//! ATC'17, spatial sampling) over a fixed sample of the blocks. Each
//! miniature has `slots / rate` slots, `rate` a power of two near
//! `slots / 1024`: 1 up to 1,024 slots, else between 4 and 64. A
//! registration of a sampled block, or a match that finds it evictable
//! (`on_reacquire`), is a reference to both miniatures, a hit there if the
//! key is resident. Hits on a block some request still pins are the same
//! use as that request's, as once-first counts uses, so Hedge does not
//! observe hits at all and the store pins active blocks for a match
//! without its lock, as under LRU. The order whose miniature scores more
//! hits, decayed per sampled reference with a half-life of two miniature
//! pools, leads; a challenger must beat the leader by 5% and by a few
//! hits, so near ties do not flap.
//!
//! **The sample is every `rate`-th block of each chain** (*stride
//! sampling*): a block's *phase* is its parent's plus one, modulo `rate`
//! (a block registered without a resident parent, a chain's first, draws
//! its phase from its key's hash under a fixed seed, so a replay repeats
//! exactly), and phase 0 is sampled. So a chain shrinks by `rate` in the
//! sample as the pool does in the miniature, every block has the same
//! chance to be sampled, and each sampled block below a chain's first has
//! a sampled ancestor `rate` blocks up (Hedge keeps each slot's nearest
//! sampled ancestor): the miniature links them into its own tree and both
//! orders are leaf-first inside it, as in the real cache. Sampling keys
//! independently (the first version here) leaves a sampled block's parent
//! out of the sample: its miniatures saw reuse but not chains, and on the
//! agentic mix they preferred once-first by 8-16% where the real cache
//! does better with leaf-first LRU by up to 11 points (Hedge lost up to
//! 7.9 points there). Sampling whole chains (a block sampled with its
//! parent) is too lumpy where traffic hangs off a few roots, and a chain
//! longer than the miniature empties it (`BENCHMARKS.md`).
//!
//! # Cost
//!
//! The real cache pays what leaf-first LRU pays (a parent table probe per
//! registration and forget, list moves) plus a stamp compare per eviction,
//! one fixed-seed hash per registration and forget, which files the key
//! in the ghosts (`hedge/ghosts.rs`: 2 bytes an entry, one 16-byte set
//! read per registration and written per forget) and seeds a chain's
//! phase; one reference in `rate` also goes through both miniatures (a
//! table probe and the same list moves each, and on a miss a second probe
//! for the parent). Everything is sized in
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

/// Seed of the fingerprint hash, which seeds chains' phases and files keys
/// in the ghosts (digits of pi: any dense constant will do).
const SAMPLER_SEED: [u64; 2] = [0x243F_6A88_85A3_08D3, 0x1319_8A2E_0370_7344];

/// A slot's phase (low 6 bits: `rate` is at most 64) and the slot of its
/// nearest sampled proper ancestor (the other 26 bits; all ones if none
/// was resident, or if that slot is past 2^26 - 2). The ancestor's key in
/// `keys` is the block's parent in the miniatures. The ancestor slot may
/// have changed blocks since; then the miniature links under a wrong key
/// or none: a wrong guess about the miniature's tree, never a wrong
/// eviction in the real cache.
#[derive(Clone, Copy)]
struct Sample(u32);

impl Sample {
    const PHASE_BITS: u32 = 6;
    const NO_ANCESTOR: u32 = u32::MAX >> Self::PHASE_BITS;
    /// Phase 0 (sampled), no ancestor.
    const ROOT: Sample = Sample(u32::MAX << Self::PHASE_BITS);

    #[inline]
    fn new(phase: u8, ancestor: Option<u32>) -> Self {
        let ancestor = ancestor
            .filter(|&a| a < Self::NO_ANCESTOR)
            .unwrap_or(Self::NO_ANCESTOR);
        Sample(ancestor << Self::PHASE_BITS | u32::from(phase))
    }

    #[inline]
    fn phase(self) -> u8 {
        (self.0 & ((1 << Self::PHASE_BITS) - 1)) as u8
    }

    #[inline]
    fn sampled(self) -> bool {
        self.phase() == 0
    }

    #[inline]
    fn ancestor(self) -> Option<u32> {
        let ancestor = self.0 >> Self::PHASE_BITS;
        (ancestor != Self::NO_ANCESTOR).then_some(ancestor)
    }
}

/// Follows whichever of leaf-first LRU and once-first scores more hits in
/// its miniature cache.
pub struct Hedge {
    orders: Orders,
    /// Index of the expert that evicts.
    leader: usize,
    /// Per slot, in one word: the block's phase in its chain, modulo
    /// `rate` (phase 0 is sampled), and its nearest sampled proper
    /// ancestor's slot (see [`Sample`]).
    sample: Vec<Sample>,
    /// Each sampled slot's key (the store names only the slot on a hit).
    keys: Vec<SequenceHash>,
    minis: [Mini; EXPERTS],
    /// Decayed miniature hits per expert.
    score: [f64; EXPERTS],
    /// Factor applied to every score per sampled reference.
    decay: f64,
    /// `rate - 1`: phases count modulo `rate`.
    phase_mask: u8,
    /// Fingerprints keys, for chains' first phases and the ghosts: fixed,
    /// so that a replay repeats exactly.
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
            sample: vec![Sample::ROOT; slots],
            keys: vec![SequenceHash::default(); slots],
            minis: ORDERS.map(|order| Mini::new(order, mini)),
            score: [0.0; EXPERTS],
            decay: 0.5f64.powf(1.0 / (2 * mini) as f64),
            phase_mask: (rate - 1) as u8,
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

    /// `key`'s fixed-seed hash: the ghosts and a chain's first phase read it.
    #[inline]
    fn fingerprint(&self, key: SequenceHash) -> u64 {
        self.sampler.hash_u128(key.as_u128())
    }

    /// One reference to a sampled key whose nearest sampled ancestor is in
    /// slot `ancestor`: both miniature caches see it, the scores move and
    /// the leader may change.
    fn reference(&mut self, key: SequenceHash, fingerprint: u64, ancestor: Option<u32>) {
        let hash = self.hasher.hash_u128(key.as_u128());
        let parent = ancestor.map(|a| {
            let key = self.keys[a as usize];
            (key, self.hasher.hash_u128(key.as_u128()))
        });
        for (mini, score) in self.minis.iter_mut().zip(&mut self.score) {
            let hit = mini.reference(key, hash, fingerprint, parent);
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
        let sample = match self.orders.on_register(slot, hash, fingerprint) {
            Some(parent) => {
                let up = self.sample[parent as usize];
                let ancestor = if up.sampled() {
                    Some(parent)
                } else {
                    up.ancestor()
                };
                Sample::new((up.phase() + 1) & self.phase_mask, ancestor)
            }
            // A chain's first block: a phase from the key's high bits.
            None => Sample::new((fingerprint >> 48) as u8 & self.phase_mask, None),
        };
        self.sample[slot as usize] = sample;
        if sample.sampled() {
            self.keys[slot as usize] = hash;
            self.reference(hash, fingerprint, sample.ancestor());
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
        let sample = self.sample[slot as usize];
        if sample.sampled() {
            let key = self.keys[slot as usize];
            self.reference(key, self.fingerprint(key), sample.ancestor());
        }
        self.orders.on_reacquire(slot);
    }

    #[inline]
    fn evict(&mut self) -> Option<u32> {
        self.orders.evict(ORDERS[self.leader])
    }

    fn on_forget(&mut self, slot: u32, hash: SequenceHash) {
        // `sample[slot]` is stale from here and rewritten at registration.
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
