//! kvblocks: the logical layer of a KV-cache block manager for LLM inference.
//!
//! A serving engine keeps its attention KV cache in fixed-size blocks of a
//! physical pool it owns (GPU memory, host memory, disk). This crate decides
//! which slot of that pool holds which token block, finds cached prefixes so
//! prefill can be skipped, keeps freed blocks as a cache, and evicts when the
//! pool runs dry. It owns no tensor memory.
//!
//! # Lifecycle
//!
//! A slot moves through type-state guards: [`MutableBlock`] (allocated,
//! writable) → [`CompleteBlock`] (content named by a [`SequenceHash`]) →
//! [`ImmutableBlock`] (registered, shared, pinned) → inactive (cached,
//! matchable, evictable) once the last handle drops. [`WeakBlock`] names a
//! block without pinning it. Every guard's drop returns its slot to the right
//! pool, and every failed transition hands the guard back in its error.
//!
//! # Keys
//!
//! Blocks are keyed by the 128-bit positional lineage hash ([`SequenceHash`]),
//! computed from tokens by [`hash`], bit-identical to Dynamo's
//! `dynamo-tokens`. A match walks a chain of keys and stops at the first miss.
//!
//! # Eviction policy
//!
//! When the reset pool is empty, allocation evicts inactive blocks in the
//! order of the manager's [`policy`] (LRU, leaf-first lineage LRU, ...).
//! A registry with a [`frequency`] tracker counts how often each block is
//! used; the frequency-tiered policy evicts the rarely used first.
//!
//! # Requests
//!
//! A scheduler drives one [`SchedulableSequence`] per request: admit it
//! (cached prefix matched, slots for the rest taken, all or nothing; a batch
//! with [`admit_all`]), then per step `schedule_*` (prefill chunk, decode,
//! speculative decode) and `apply_*` with what the model produced. A block
//! is registered, and shared with other requests, as soon as its KV is
//! computed; [`SchedulableSequence::block_table`] is the kernel's block
//! table. The layers below it are [`RequestSequence`], [`BlockSequence`] and
//! the assignment tables of [`sequence`].
//!
//! # Thread safety
//!
//! A manager and all its guards share one store. Matching a prefix whose
//! blocks are active takes no lock (the hash index and the slot records are
//! readable without one, and a handle is added by one compare-exchange that
//! checks the slot's generation); everything else takes short locks, each at
//! most once per batch call. Cloning or dropping an [`ImmutableBlock`] that is
//! not the last handle touches only a per-slot atomic. The pool is split into
//! shards, each with its own lock, so threads sharing a manager through an
//! `Arc` rarely wait for each other: by default an LRU manager starts as one
//! pool (so a thread alone pays nothing for shards) and splits, the first
//! time threads wait for it, into one shard per 1,024 slots (up to 16), which
//! evict from the shard whose next victim is oldest, so the shards keep about one LRU order over the whole pool
//! (`BENCHMARKS.md`: within 0.3 points of hit rate of a single pool). Other
//! policies keep per-block state that one shard cannot see across the others,
//! so they default to one shard;
//! [`pool_shards`](manager::BlockManagerBuilder::pool_shards) overrides either.
//!
//! Locks are taken in one order (registry attachments, registry table
//! stripe, index writer, pool shards in index order). User code runs under a
//! lock in two places only: an eviction policy's hooks (under its shard's
//! lock) and attachment readers and mutators (under the handle's attachment
//! lock; calling back into the same handle's attachments panics instead of
//! deadlocking). Event sinks never run under a store lock.
//!
//! # Events
//!
//! A worker tells a cluster router what it caches through [`events`]: the
//! store reports registrations, removals and resets to an
//! [`EventEmitter`](events::EventEmitter); an
//! [`EventsManager`](events::EventsManager) batches them, numbers every batch
//! (epoch and sequence, so a consumer sees gaps and restarts) and publishes
//! them to sinks, outside the store's locks.
//!
//! # Example
//!
//! ```
//! use kvblocks::{BlockManager, SequenceHash};
//! #[derive(Clone)] struct Gpu;
//!
//! let manager = BlockManager::<Gpu>::builder().block_count(4).block_size(16).build()?;
//! let root = SequenceHash::root(0xabc);
//! let chain = [root, root.extend(0xdef)];
//!
//! let mut staged = Vec::new();
//! for (block, hash) in manager.allocate_blocks(2).unwrap().into_iter().zip(chain) {
//!     staged.push(block.stage(hash, manager.block_size())?);    // Mutable -> Complete
//! }
//! let held = manager.register_blocks(staged);                  // Complete -> Immutable
//! let weak = held[1].downgrade();
//! drop(held);                                                   // -> inactive (cached)
//! assert_eq!(manager.available_blocks(), 4);
//!
//! let hits = manager.match_blocks(&chain);                      // resurrected
//! assert_eq!(hits.len(), 2);
//! assert!(weak.upgrade().is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod blocks;
pub mod events;
pub mod frequency;
pub mod hash;
pub mod integrations;
mod keyhash;
pub mod manager;
pub mod metrics;
pub mod policy;
pub mod registry;
pub mod sequence;
mod store;
mod sync;
pub mod tier;

/// kvbm-logical's name for [`frequency`] (`tinylfu::FrequencyTracker`,
/// `tinylfu::TinyLFUTracker`, ...).
pub use frequency as tinylfu;

/// Hooks for the crate's own model-checking and leak tests; not a stable API.
#[doc(hidden)]
pub mod testing {
    /// Managers' stores alive in this process now (a store outlives its
    /// manager while guards or weak handles hold it).
    pub fn live_stores() -> usize {
        crate::store::live_stores()
    }

    /// The hash index bucket where `hash` starts its probe in `manager`'s
    /// index (to build keys that share a probe run).
    pub fn index_home_bucket<T: crate::BlockMetadata>(
        manager: &crate::BlockManager<T>,
        hash: crate::SequenceHash,
    ) -> usize {
        manager.store().index.home_bucket(hash)
    }

    /// Splits a manager built to split on contention into its pool shards
    /// now, as contention would; `false` if it cannot (already split, or
    /// not built to).
    pub fn split_pool<T: crate::BlockMetadata>(manager: &crate::BlockManager<T>) -> bool {
        manager.store().split()
    }
}

use std::sync::atomic::{AtomicU64, Ordering};

pub use blocks::{
    BlockDuplicationPolicy, BlockError, BlockMetadata, CompleteBlock, ImmutableBlock, LifecyclePin,
    LifecyclePinRef, MutableBlock, RegisterError, WeakBlock,
};
pub use hash::{PositionalLineageHash, SequenceHash};
pub use integrations::{
    admit_all, can_admit_all, AdmitError, ApplyError, DecodeOutcome, NoopDelegate, RequestError,
    RequestSequence, SchedulableSequence, SchedulableSequenceBuilder, ScheduleError,
    SequenceBuildError, SequenceDelegate, SequenceEvent, SequenceState,
};
pub use manager::{BlockManager, BuildError, ResetError};
pub use metrics::MetricsSnapshot;
pub use policy::{EvictionPolicy, EvictionPolicyKind};
pub use registry::{AttachmentError, BlockRegistrationHandle, BlockRegistry, BlockRegistryBuilder};
pub use sequence::{
    zip_assigned, zip_assigned_pending, BlockSequence, BlockSequenceError,
    ExternalBlockAssignments, LogicalBlockAssignmentError, LogicalBlockAssignments,
};
pub use tier::LogicalLayoutHandle;

/// Runs the crate README's example as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// A physical slot index, `0..block_count`.
pub type BlockId = usize;

/// Process-unique identity of a manager (and of the store its guards share).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ManagerId(pub u64);

impl ManagerId {
    /// Never given to a real manager.
    pub const NULL: ManagerId = ManagerId(0);

    pub(crate) fn next() -> ManagerId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ManagerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Anything that can name its block with a [`SequenceHash`] (kvbm-logical's trait name).
pub trait KvbmSequenceHashProvider {
    /// The block's positional lineage hash.
    fn kvbm_sequence_hash(&self) -> SequenceHash;
}

impl KvbmSequenceHashProvider for hash::TokenBlock {
    fn kvbm_sequence_hash(&self) -> SequenceHash {
        self.positional_lineage_hash()
    }
}
