//! Eviction policies: which inactive (cached, unpinned) block to give up when
//! the reset pool runs dry.
//!
//! Every policy implements [`EvictionPolicy`] over slot numbers `0..block_count`
//! and keeps its own per-slot state in arrays sized once at construction, so
//! no operation allocates after start-up. The store calls a policy only while
//! it holds its lock, in the order the contracts below describe; a policy never
//! sees a slot in a state the contract rules out, and never calls back.
//!
//! Pick one with [`EvictionPolicyKind`] on the manager builder. One file per
//! policy: [`Lru`], [`LruK`], [`Hedge`], [`Lineage`], [`TinyLfu`], [`S3Fifo`],
//! [`Sieve`], [`PrefixAware`], and [`MultiLru`] (frequency-tiered LRU over the
//! registry's frequency tracker, chosen with
//! [`with_multi_lru_backend`](crate::manager::BlockManagerBuilder::with_multi_lru_backend)
//! since it needs that tracker).

mod heap;
mod hedge;
mod history;
mod lineage;
mod list;
mod lru;
mod lru_k;
mod multi_lru;
mod prefix;
mod s3fifo;
mod sieve;
#[cfg(test)]
mod test_utils;
mod tinylfu;
mod tree;

use std::fmt;
use std::str::FromStr;

pub use hedge::{Hedge, EXPERT_NAMES as HEDGE_EXPERTS};
pub use lineage::Lineage;
pub use lru::Lru;
pub use lru_k::LruK;
pub use multi_lru::{MultiLru, MultiLruThresholds, ThresholdError};
pub use prefix::PrefixAware;
pub use s3fifo::S3Fifo;
pub use sieve::Sieve;
pub use tinylfu::TinyLfu;

use crate::SequenceHash;

/// An eviction order over slots.
///
/// Slot life as a policy sees it: `on_register` (the slot now holds the
/// primary copy of a hash; it is pinned), then any number of
/// `on_release` / `on_reacquire` pairs (evictable / pinned again), with
/// `on_hit` whenever a match or a deduplicated registration finds it, until
/// `evict` returns it, followed by `on_forget`.
///
/// A policy of your own plugs in through the builder:
///
/// ```
/// use kvblocks::{BlockManager, EvictionPolicy};
///
/// /// Evicts the most recently released block first.
/// struct Newest(Vec<u32>);
///
/// impl EvictionPolicy for Newest {
///     fn name(&self) -> &'static str { "newest" }
///     fn on_release(&mut self, slot: u32) { self.0.push(slot) }
///     fn on_reacquire(&mut self, slot: u32) { self.0.retain(|&s| s != slot) }
///     fn evict(&mut self) -> Option<u32> { self.0.pop() }
///     fn len(&self) -> usize { self.0.len() }
/// }
///
/// #[derive(Clone)] struct Gpu;
/// let manager = BlockManager::<Gpu>::builder().block_count(8).block_size(4)
///     .custom_eviction_policy(|slots| Newest(Vec::with_capacity(slots)))
///     .build()?;
/// assert_eq!(manager.eviction_policy_name(), "newest");
/// # Ok::<(), kvblocks::BuildError>(())
/// ```
pub trait EvictionPolicy: Send + 'static {
    /// Short stable name (used by `kvsim` and in metrics).
    fn name(&self) -> &'static str;

    /// The slot became the resident primary copy of `hash`, pinned by its
    /// registering holder.
    ///
    /// The caller guarantees the slot is not currently registered with this
    /// policy. The default does nothing.
    fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        let _ = (slot, hash);
    }

    /// A lookup found the slot (it may be pinned or evictable). Called before
    /// `on_reacquire` when the hit resurrects an evictable slot. The default
    /// does nothing.
    fn on_hit(&mut self, slot: u32) {
        let _ = slot;
    }

    /// Whether [`on_hit`](Self::on_hit) does anything. A policy that
    /// returns `false` lets the store pin an *active* block for a match
    /// without taking any lock (hits on evictable blocks still reach
    /// `on_reacquire` under it). The default, `true`, is always correct.
    fn observes_hits(&self) -> bool {
        true
    }

    /// The slot's last holder let go: it is now evictable.
    ///
    /// The caller guarantees the slot is registered and not already evictable.
    /// The policy MUST make it a candidate of a later `evict`.
    fn on_release(&mut self, slot: u32);

    /// An evictable slot was matched and is pinned again.
    ///
    /// The caller guarantees the slot is evictable. The policy MUST NOT return
    /// it from `evict` until the next `on_release`.
    fn on_reacquire(&mut self, slot: u32);

    /// Chooses a victim among the evictable slots, stops tracking it as
    /// evictable and returns it; `None` if and only if none is evictable.
    ///
    /// The caller follows every returned slot with `on_forget`.
    fn evict(&mut self) -> Option<u32>;

    /// The slot no longer holds `hash` (it was evicted or drained). The default
    /// does nothing.
    fn on_forget(&mut self, slot: u32, hash: SequenceHash) {
        let _ = (slot, hash);
    }

    /// A pinned slot leaves its registration without ever becoming evictable
    /// again: its last holder dropped it with evict-on-release set
    /// ([`ImmutableBlock::set_evict_on_reset`](crate::ImmutableBlock::set_evict_on_reset)).
    ///
    /// The caller guarantees the slot is registered with this policy and not
    /// evictable. The policy MUST stop tracking it, as after `evict` and
    /// `on_forget`. The default calls [`on_forget`](Self::on_forget), which
    /// is right for a policy that tracks nothing about pinned slots beyond
    /// what `on_forget` clears.
    fn on_discard(&mut self, slot: u32, hash: SequenceHash) {
        self.on_forget(slot, hash);
    }

    /// The slot [`evict`](Self::evict) would return next, without changing
    /// anything; `None` if none is evictable or the policy cannot tell
    /// cheaply (the default).
    ///
    /// A hint, O(1): a manager with several pool shards compares when the
    /// shards' next victims were released, to evict from the shard whose
    /// victims are oldest (one order over the whole pool, approximately).
    /// Without it the store dates a shard by its last victim instead.
    fn peek_victim(&self) -> Option<u32> {
        None
    }

    /// Number of evictable slots.
    fn len(&self) -> usize;

    /// Whether no slot is evictable.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Walks the policy's own structures and reports the first broken
    /// invariant (a dangling list link, a count that disagrees with its
    /// list, ...). O(slots): for tests and debugging.
    ///
    /// The store calls it from its own check (so a manager's
    /// `check_invariants` covers every policy) with the shard's lock held and
    /// no hook running. An implementation MUST NOT change any state; the
    /// default checks nothing.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The policies a manager can be built with.
///
/// ```
/// use kvblocks::EvictionPolicyKind;
/// let kind: EvictionPolicyKind = "lineage".parse()?;
/// assert_eq!(kind, EvictionPolicyKind::Lineage);
/// assert!(EvictionPolicyKind::ALL.iter().any(|k| k.name() == "s3fifo"));
/// # Ok::<(), kvblocks::policy::UnknownPolicy>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvictionPolicyKind {
    /// Least recently released first ([`Lru`]).
    Lru,
    /// LRU-2: blocks used once first, then by second-to-last use ([`LruK`]).
    LruK,
    /// Leaf-first LRU, as a radix-tree cache evicts ([`Lineage`]).
    Lineage,
    /// Frequency-aware: W-TinyLFU style, count-min sketch with aging ([`TinyLfu`]).
    TinyLfu,
    /// S3-FIFO: small, main and ghost FIFO queues ([`S3Fifo`]).
    S3Fifo,
    /// SIEVE: one FIFO with visited bits and a moving hand ([`Sieve`]).
    Sieve,
    /// This crate's own prefix-cache policy ([`PrefixAware`]).
    PrefixAware,
    /// Adaptive: leaf-first LRU or once-first (LRU-2-like), whichever
    /// scores more hits in a miniature simulation of recent traffic
    /// ([`Hedge`]).
    Hedge,
}

impl EvictionPolicyKind {
    /// Every policy, in the order reports list them.
    pub const ALL: &'static [EvictionPolicyKind] = &[
        EvictionPolicyKind::Lru,
        EvictionPolicyKind::LruK,
        EvictionPolicyKind::Lineage,
        EvictionPolicyKind::TinyLfu,
        EvictionPolicyKind::S3Fifo,
        EvictionPolicyKind::Sieve,
        EvictionPolicyKind::PrefixAware,
        EvictionPolicyKind::Hedge,
    ];

    /// The policy's stable name, as [`FromStr`] reads it.
    pub const fn name(self) -> &'static str {
        match self {
            EvictionPolicyKind::Lru => "lru",
            EvictionPolicyKind::LruK => "lru2",
            EvictionPolicyKind::Lineage => "lineage",
            EvictionPolicyKind::TinyLfu => "tinylfu",
            EvictionPolicyKind::S3Fifo => "s3fifo",
            EvictionPolicyKind::Sieve => "sieve",
            EvictionPolicyKind::PrefixAware => "prefix",
            EvictionPolicyKind::Hedge => "hedge",
        }
    }

    /// Builds the policy for `slots` slots.
    pub(crate) fn build(self, slots: usize) -> AnyPolicy {
        match self {
            EvictionPolicyKind::Lru => AnyPolicy::Lru(Lru::new(slots)),
            EvictionPolicyKind::LruK => AnyPolicy::LruK(LruK::new(slots)),
            EvictionPolicyKind::Lineage => AnyPolicy::Lineage(Lineage::new(slots)),
            EvictionPolicyKind::TinyLfu => AnyPolicy::TinyLfu(TinyLfu::new(slots)),
            EvictionPolicyKind::S3Fifo => AnyPolicy::S3Fifo(S3Fifo::new(slots)),
            EvictionPolicyKind::Sieve => AnyPolicy::Sieve(Sieve::new(slots)),
            EvictionPolicyKind::PrefixAware => AnyPolicy::PrefixAware(PrefixAware::new(slots)),
            EvictionPolicyKind::Hedge => AnyPolicy::Hedge(Hedge::new(slots)),
        }
    }
}

impl fmt::Display for EvictionPolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A policy name that [`EvictionPolicyKind`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown eviction policy {name:?} (known: {known})")]
pub struct UnknownPolicy {
    /// The name given.
    pub name: String,
    /// The known names, comma separated.
    pub known: String,
}

impl FromStr for EvictionPolicyKind {
    type Err = UnknownPolicy;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let wanted = name.trim().to_ascii_lowercase();
        EvictionPolicyKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.name() == wanted)
            .ok_or_else(|| UnknownPolicy {
                name: name.to_string(),
                known: EvictionPolicyKind::ALL
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Static dispatch over the built-in policies, plus a boxed escape hatch for
/// user policies; the store holds one of these.
// One per pool shard, inside the shard's lock: its size costs nothing, while
// boxing the largest policies would add a pointer chase to every hook.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AnyPolicy {
    Lru(Lru),
    LruK(LruK),
    Lineage(Lineage),
    TinyLfu(TinyLfu),
    S3Fifo(S3Fifo),
    Sieve(Sieve),
    PrefixAware(PrefixAware),
    MultiLru(MultiLru),
    Hedge(Hedge),
    Custom(Box<dyn EvictionPolicy>),
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $body:expr) => {
        match $self {
            AnyPolicy::Lru($p) => $body,
            AnyPolicy::LruK($p) => $body,
            AnyPolicy::Lineage($p) => $body,
            AnyPolicy::TinyLfu($p) => $body,
            AnyPolicy::S3Fifo($p) => $body,
            AnyPolicy::Sieve($p) => $body,
            AnyPolicy::PrefixAware($p) => $body,
            AnyPolicy::MultiLru($p) => $body,
            AnyPolicy::Hedge($p) => $body,
            AnyPolicy::Custom($p) => $body,
        }
    };
}

impl EvictionPolicy for AnyPolicy {
    fn name(&self) -> &'static str {
        dispatch!(self, p => p.name())
    }
    // Always: registration calls it on every block, and the split's calls
    // would otherwise make it a call there (`BENCHMARKS.md`, "One thread
    // with the default shards").
    #[inline(always)]
    fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        dispatch!(self, p => p.on_register(slot, hash))
    }
    #[inline]
    fn on_hit(&mut self, slot: u32) {
        dispatch!(self, p => p.on_hit(slot))
    }
    fn observes_hits(&self) -> bool {
        dispatch!(self, p => p.observes_hits())
    }
    #[inline]
    fn on_release(&mut self, slot: u32) {
        dispatch!(self, p => p.on_release(slot))
    }
    #[inline]
    fn on_reacquire(&mut self, slot: u32) {
        dispatch!(self, p => p.on_reacquire(slot))
    }
    #[inline]
    fn evict(&mut self) -> Option<u32> {
        dispatch!(self, p => p.evict())
    }
    #[inline]
    fn on_forget(&mut self, slot: u32, hash: SequenceHash) {
        dispatch!(self, p => p.on_forget(slot, hash))
    }
    fn on_discard(&mut self, slot: u32, hash: SequenceHash) {
        dispatch!(self, p => p.on_discard(slot, hash))
    }
    #[inline]
    fn peek_victim(&self) -> Option<u32> {
        dispatch!(self, p => p.peek_victim())
    }
    #[inline]
    fn len(&self) -> usize {
        dispatch!(self, p => p.len())
    }
    fn check(&self) -> Result<(), String> {
        dispatch!(self, p => p.check())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_from_its_name() {
        for kind in EvictionPolicyKind::ALL {
            assert_eq!(kind.name().parse::<EvictionPolicyKind>(), Ok(*kind));
            assert_eq!(kind.build(4).name(), kind.name());
        }
        let err = "belady".parse::<EvictionPolicyKind>().unwrap_err();
        assert!(err.to_string().contains("lru"));
    }
}
