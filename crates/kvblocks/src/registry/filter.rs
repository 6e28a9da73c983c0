//! [`NotedFilter`]: which hashes may have a registration handle, readable
//! without a lock.
//!
//! Registration asks, for every block it files, whether the registry keeps a
//! handle for the block's hash: if so, the slot must tell the registry when
//! it stops holding the hash. Asking the handle table would take a lock per
//! block; this filter answers "certainly not" with one or two loads, and
//! "maybe" for every hash that has a handle (and, rarely, for others that
//! share its counter). It owns counts only: the table decides.

use crate::keyhash::KeyHasher;
use crate::sync::{AtomicU32, AtomicUsize, Ordering};
use crate::SequenceHash;

/// Counters in the filter (a power of two): 64 KiB of counters, so a few
/// thousand live handles leave almost every counter at zero. (Sixteen under
/// the model checkers and Miri, where every manager built would otherwise
/// initialise 16,384 atomics one by one: more "maybe" answers, same results.)
const COUNTERS: usize = if cfg!(any(loom, miri)) { 16 } else { 1 << 14 };

/// A counting filter over the hashes that have a registration handle.
pub(crate) struct NotedFilter {
    /// Handles in the table; zero lets registration skip the counters.
    live: AtomicUsize,
    counters: Box<[AtomicU32]>,
    /// Seeded, so a client cannot pile many hashes onto one counter.
    hasher: KeyHasher,
}

impl NotedFilter {
    pub(crate) fn new() -> Self {
        Self {
            live: AtomicUsize::new(0),
            counters: (0..COUNTERS).map(|_| AtomicU32::new(0)).collect(),
            hasher: KeyHasher::random(),
        }
    }

    #[inline(always)]
    fn counter(&self, hash: SequenceHash) -> &AtomicU32 {
        let index = self.hasher.hash_u128(hash.as_u128()) as usize & (COUNTERS - 1);
        &self.counters[index]
    }

    /// A handle for `hash` now exists (under the table's lock).
    pub(crate) fn add(&self, hash: SequenceHash) {
        // ORDERING: Relaxed. A registration reads these under a shard lock
        // that the adding thread takes after this (see `table`): the lock
        // orders them.
        self.live.fetch_add(1, Ordering::Relaxed);
        self.counter(hash).fetch_add(1, Ordering::Relaxed);
    }

    /// The handle for `hash` is gone (under the table's lock).
    pub(crate) fn remove(&self, hash: SequenceHash) {
        // ORDERING: Relaxed, as in `add`.
        self.counter(hash).fetch_sub(1, Ordering::Relaxed);
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether a handle for `hash` may exist. `false` is certain for a
    /// handle added before the caller took a lock the adder released after
    /// adding it.
    #[inline(always)]
    pub(crate) fn may_hold(&self, hash: SequenceHash) -> bool {
        // ORDERING: Relaxed, as in `add`.
        self.live.load(Ordering::Relaxed) != 0 && self.counter(hash).load(Ordering::Relaxed) != 0
    }

    /// Bytes the filter holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        COUNTERS * std::mem::size_of::<AtomicU32>()
    }
}

#[cfg(all(test, not(any(shuttle, loom))))]
mod tests {
    use super::*;

    #[test]
    fn added_hashes_are_maybe_and_removed_ones_certainly_not() {
        let filter = NotedFilter::new();
        let (a, b) = (SequenceHash::root(1), SequenceHash::root(2));
        assert!(!filter.may_hold(a));
        filter.add(a);
        assert!(filter.may_hold(a));
        filter.add(a);
        filter.remove(a);
        assert!(filter.may_hold(a), "still one handle");
        filter.remove(a);
        assert!(!filter.may_hold(a) && !filter.may_hold(b));
    }
}
