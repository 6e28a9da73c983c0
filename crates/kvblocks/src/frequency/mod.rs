//! Frequency tracking: how often each sequence hash was used lately, for the
//! frequency-tiered eviction policy ([`MultiLru`](crate::policy::MultiLru))
//! and for anyone holding a [`BlockRegistry`](crate::BlockRegistry).
//!
//! This module owns the [`FrequencyTracker`] trait, the lock-free TinyLFU
//! count-min sketch behind [`TinyLFUTracker`], the size presets of
//! [`FrequencyTrackingCapacity`] and the [`NoOpTracker`]. It never decides
//! what a count means for eviction, and it never touches a tracker itself:
//! the registry and the managers built with it do (see below).
//!
//! # When a tracker is touched
//!
//! A tracker is given to the registry
//! ([`BlockRegistryBuilder::frequency_tracker`](crate::BlockRegistryBuilder::frequency_tracker));
//! every manager built with that registry then touches it, as kvbm-logical
//! 1.6.1 does, after releasing its locks:
//!
//! - once per block a match returns (`match_blocks`, `match_blocks_scattered`,
//!   and `scan_matches` with `touch`), active or resurrected from the cache;
//! - once per block registered under a hash no tier held and no
//!   registration handle named (a *new* registration: an offload copy of a
//!   block another tier holds, a duplicate copy or a deduplicated
//!   registration is not a new use);
//! - by [`BlockRegistry::match_sequence_hash`](crate::BlockRegistry::match_sequence_hash)
//!   with `touch` set, when it finds the hash, and by
//!   [`BlockRegistry::touch`](crate::BlockRegistry::touch).
//!
//! Without a tracker none of this runs: each site is one `Option` check.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use kvblocks::frequency::{FrequencyTracker, FrequencyTrackingCapacity};
//! use kvblocks::{BlockManager, BlockRegistry, SequenceHash};
//! #[derive(Clone)] struct Gpu;
//!
//! let tracker = FrequencyTrackingCapacity::Small.create_tracker();
//! let registry = BlockRegistry::builder().frequency_tracker(tracker.clone()).build();
//! let manager = BlockManager::<Gpu>::builder().block_count(8).block_size(4)
//!     .registry(registry.clone()).build()?;
//!
//! let hash = SequenceHash::root(7);
//! let staged = manager.allocate_blocks(1).unwrap().pop().unwrap().stage(hash, 4)?;
//! drop(manager.register_block(staged));      // a new registration: one use
//! drop(manager.match_blocks(&[hash]));       // a hit: another
//! assert_eq!(tracker.count(hash.as_u128()), 2);
//! assert_eq!(registry.count(hash), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod settings;
mod sketch;

use std::sync::Arc;

pub use settings::{
    DecayPolicy, FixedDecayPolicy, TinyLFUSettings, TinyLFUSettingsBuilder, TinyLFUSettingsError,
    TinyLFUSketch,
};
pub use sketch::TinyLFUTracker;

/// A key a [`FrequencyTracker`] can count: anything with a well-spread
/// 64-bit digest.
///
/// kvbm-logical 1.6.1 asks its keys for an xxh3 hash under a secret; this
/// crate's sketch mixes the key itself, so a key only hands over its bits.
pub trait SketchKey: Copy + Send + Sync + 'static {
    /// The key's bits folded to 64 (they need not be well spread: the sketch
    /// mixes them).
    fn sketch_bits(&self) -> u64;
}

impl SketchKey for u64 {
    #[inline]
    fn sketch_bits(&self) -> u64 {
        *self
    }
}

impl SketchKey for u128 {
    #[inline]
    fn sketch_bits(&self) -> u64 {
        // Both halves matter: a positional lineage hash keeps its position in
        // a few high bits.
        (*self as u64) ^ ((*self >> 64) as u64).rotate_left(23)
    }
}

/// Counts uses of keys, approximately; shared by every thread (`&self`).
///
/// The registry holds an `Arc<dyn FrequencyTracker<u128>>` and passes
/// [`SequenceHash::as_u128`](crate::SequenceHash::as_u128) keys.
///
/// An implementation MUST NOT call a manager or the registry: the
/// frequency-tiered policy calls `count` under a pool shard's lock, and
/// both methods run on every match, so they should cost nanoseconds.
pub trait FrequencyTracker<K: SketchKey = u128>: Send + Sync {
    /// Records one use of `key`.
    fn touch(&self, key: K);
    /// The estimated number of recent uses of `key` (0 to 15 for a TinyLFU
    /// sketch, which saturates and halves its counts now and then).
    fn count(&self, key: K) -> u32;
    /// Records one use of each key, as calling [`touch`](Self::touch) for
    /// each would (the default does just that); one call, so a tracker can
    /// share its bookkeeping across the batch. The managers touch a match's
    /// hits this way. (Not in kvbm-logical; provided, so a tracker written
    /// for kvbm-logical's trait needs no change.)
    fn touch_all(&self, keys: &mut dyn Iterator<Item = K>) {
        for key in keys {
            self.touch(key);
        }
    }
}

/// A tracker that counts nothing: every count is 0.
pub struct NoOpTracker<K: SketchKey = u128> {
    _key: std::marker::PhantomData<fn(K)>,
}

impl<K: SketchKey> NoOpTracker<K> {
    /// The tracker.
    pub fn new() -> Self {
        Self {
            _key: std::marker::PhantomData,
        }
    }
}

impl<K: SketchKey> Default for NoOpTracker<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: SketchKey> FrequencyTracker<K> for NoOpTracker<K> {
    fn touch(&self, _key: K) {}
    fn count(&self, _key: K) -> u32 {
        0
    }
}

/// Size presets for a [`TinyLFUTracker`] (kvbm-logical's names and sizes).
///
/// The size is the number of distinct hashes the sketch tells apart well;
/// the sketch takes 2 bytes per entry (as kvbm-logical's does) and halves
/// its counts every 10 x size recorded uses.
///
/// ```
/// use kvblocks::frequency::FrequencyTrackingCapacity;
/// let tracker = FrequencyTrackingCapacity::Small.create_tracker();
/// assert_eq!(FrequencyTrackingCapacity::Small.size(), 1 << 18);
/// assert_eq!(tracker.heap_bytes(), 2 << 18);
/// assert_eq!(FrequencyTrackingCapacity::default(), FrequencyTrackingCapacity::Medium);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FrequencyTrackingCapacity {
    /// 2^18 (262,144) entries: 512 KiB.
    Small,
    /// 2^21 (2,097,152) entries: 4 MiB. The default.
    #[default]
    Medium,
    /// 2^24 (16,777,216) entries: 32 MiB.
    Large,
}

impl FrequencyTrackingCapacity {
    /// Every preset, smallest first.
    pub const ALL: [FrequencyTrackingCapacity; 3] = [Self::Small, Self::Medium, Self::Large];

    /// The number of entries.
    pub fn size(&self) -> usize {
        match self {
            Self::Small => 1 << 18,
            Self::Medium => 1 << 21,
            Self::Large => 1 << 24,
        }
    }

    /// A new [`TinyLFUTracker`] of this size.
    pub fn create_tracker(&self) -> Arc<TinyLFUTracker<u128>> {
        Arc::new(TinyLFUTracker::new(self.size()))
    }
}
