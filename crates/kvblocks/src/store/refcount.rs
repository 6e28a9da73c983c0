//! Per-slot strong counts and generations, readable without any lock.
//!
//! "The lock" below is the lock of the slot's pool shard (see [`super`]).
//!
//! One `AtomicU64` per slot: the low 32 bits count live [`ImmutableBlock`]
//! handles, the high 32 bits are the slot's generation, bumped whenever the
//! slot stops holding a registered hash. Cloning or dropping a handle that is
//! not the last one touches only this word; the lock is needed only when a
//! count may cross zero:
//!
//! - 0 -> 1 happens only under the lock (a match, a registration, a
//!   slow-path upgrade), never from a clone, because a clone needs a live handle;
//! - 1 -> 0 happens only under the lock too: a drop that sees a count
//!   above one decrements by compare-exchange without the lock; one that sees
//!   the last handle takes the lock, decrements, and releases the slot if the
//!   count reached zero (a match may have added a handle meanwhile). So the
//!   race between a last drop and a resurrecting match resolves under the
//!   lock, and a slot's count is never zero while a guard still uses it.
//!
//! A [`WeakBlock`] upgrade, and a match of an active block, may skip the lock
//! when the count is non-zero and the generation is the one it saw: a single
//! compare-exchange on the whole word checks both, so a slot that was reused
//! in between cannot be mistaken.
//!
//! [`ImmutableBlock`]: crate::ImmutableBlock
//! [`WeakBlock`]: crate::WeakBlock

use crate::sync::{fence, AtomicU64, Ordering};

const COUNT_MASK: u64 = 0xFFFF_FFFF;

/// The per-slot words.
pub(crate) struct RefCounts {
    words: Box<[AtomicU64]>,
    /// Generations wrap at `generation_mask + 1`: 2^32, or fewer in tests
    /// that need a wrap quickly.
    generation_mask: u64,
}

impl RefCounts {
    /// Words for `slots` slots, all at count 0 and generation 0, whose
    /// generations wrap after `2^generation_bits` (32 outside tests).
    pub(crate) fn new(slots: usize, generation_bits: u32) -> Result<Self, super::OutOfMemory> {
        debug_assert!((1..=32).contains(&generation_bits));
        Ok(Self {
            words: super::try_boxed(slots, || AtomicU64::new(0))?,
            generation_mask: u64::MAX >> (64 - generation_bits.clamp(1, 32)),
        })
    }

    /// Live handles on `slot`.
    #[inline]
    pub(crate) fn count(&self, slot: u32) -> u32 {
        // ORDERING: Acquire; exact under the lock, and sees lock-free pins.
        (self.words[slot as usize].load(Ordering::Acquire) & COUNT_MASK) as u32
    }

    /// The slot's generation.
    #[inline]
    pub(crate) fn generation(&self, slot: u32) -> u32 {
        // ORDERING: Acquire; read under the lock.
        (self.words[slot as usize].load(Ordering::Acquire) >> 32) as u32
    }

    /// Adds a handle and returns the slot's generation. Callers either hold
    /// the lock or a live handle. `Release`, so a lock-free reader that
    /// sees the new count also sees the record written before it.
    #[inline]
    pub(crate) fn increment(&self, slot: u32) -> u32 {
        // ORDERING: AcqRel. Release publishes the record written before a
        // registration to lock-free readers that Acquire the count.
        let old = self.words[slot as usize].fetch_add(1, Ordering::AcqRel);
        if old & COUNT_MASK == COUNT_MASK {
            // More than 4 billion handles on one block: a leak loop. Like
            // `Arc`, stop rather than wrap into the generation bits.
            std::process::abort();
        }
        (old >> 32) as u32
    }

    /// Removes a handle if it is not the last one; returns whether it did.
    /// The last handle is removed with [`RefCounts::decrement`] under the lock.
    #[inline]
    pub(crate) fn decrement_if_shared(&self, slot: u32) -> bool {
        let word = &self.words[slot as usize];
        // ORDERING: Relaxed; only a starting guess for the CAS below.
        let mut current = word.load(Ordering::Relaxed);
        while current & COUNT_MASK > 1 {
            // ORDERING: Release on success, paired with the Acquire fence of
            // the last release; the failure value is only re-examined.
            match word.compare_exchange_weak(
                current,
                current - 1,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
        false
    }

    /// Removes a handle; returns `true` if it was the last one. Called under
    /// the lock, so a count reaches zero only there.
    #[inline]
    pub(crate) fn decrement(&self, slot: u32) -> bool {
        // ORDERING: Release, then an Acquire fence if this was the last
        // handle: every holder's use of the block happens before its release.
        let old = self.words[slot as usize].fetch_sub(1, Ordering::Release);
        debug_assert!(
            old & COUNT_MASK != 0,
            "handle count underflow on slot {slot}"
        );
        if old & COUNT_MASK == 1 {
            fence(Ordering::Acquire);
            true
        } else {
            false
        }
    }

    /// The slot's generation if it has a live handle now (`Acquire`: the
    /// record as registered is visible after this).
    #[inline]
    pub(crate) fn live_generation(&self, slot: u32) -> Option<u32> {
        // ORDERING: Acquire, paired with the Release of the registration's
        // increment: the record as registered is visible after this.
        let word = self.words[slot as usize].load(Ordering::Acquire);
        (word & COUNT_MASK != 0).then_some((word >> 32) as u32)
    }

    /// Adds a handle if `slot` is still at `generation` with a live handle.
    #[inline]
    pub(crate) fn try_increment_live(&self, slot: u32, generation: u32) -> bool {
        let word = &self.words[slot as usize];
        // ORDERING: Relaxed; only a starting guess for the CAS below.
        let mut current = word.load(Ordering::Relaxed);
        loop {
            let count = current & COUNT_MASK;
            if (current >> 32) as u32 != generation || count == 0 || count == COUNT_MASK {
                return false;
            }
            // ORDERING: Acquire on success: a CAS reads the latest value, so
            // it synchronises with the last Release on the word and the
            // caller's record check after the pin is exact. Failure values are
            // only re-examined (Relaxed).
            match word.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// Starts a new generation. The caller holds the lock and the count is 0.
    #[inline]
    pub(crate) fn next_generation(&self, slot: u32) {
        let word = &self.words[slot as usize];
        let mask = self.generation_mask;
        // ORDERING: Release, so a lock-free reader that sees the new
        // generation also sees the record changes made before it. With a
        // zero count no lock-free operation can change the word meanwhile,
        // so the update succeeds at once.
        let bump = |w: u64| Some(((((w >> 32) + 1) & mask) << 32) | (w & COUNT_MASK));
        let old = word.fetch_update(Ordering::Release, Ordering::Relaxed, bump);
        debug_assert_eq!(
            old.unwrap_or(0) & COUNT_MASK,
            0,
            "generation bumped on a held slot {slot}"
        );
    }

    /// Bytes per slot.
    pub(crate) const BYTES_PER_SLOT: usize = std::mem::size_of::<AtomicU64>();
}
