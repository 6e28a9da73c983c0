//! Resolving hashes to pinned slots: prefix matches, scattered matches,
//! scans, weak upgrades and presence checks.
//!
//! A serving step matches every request's prompt, and the blocks it finds are
//! often pinned by other requests already. Pinning such a block only adds a
//! handle to a count that is already non-zero, which the handle-count
//! protocol allows without a lock ([`super::refcount`]); finding it needs
//! only the lock-free side of the index ([`super::index`]). So a prefix match
//! walks its hashes lock-free while they resolve to active blocks, and from
//! the first block it cannot pin that way (an evictable block to resurrect, a
//! policy that wants every hit, or an index that was being changed) it goes
//! on under the lock of each found slot's shard, keeping a lock across runs of
//! slots in the same shard.
//!
//! # Why a lock-free hit is a real hit
//!
//! The index may hand back a slot that was evicted and reused since its bucket
//! was read. The pin is therefore a compare-exchange on the slot's whole
//! handle word (generation and count), after checking the record:
//!
//! 1. read the word (`Acquire`): a count of zero means evictable or free, so
//!    leave it to the locked path; a non-zero count at generation `g` means the
//!    slot is registered and cannot be evicted while the count stays non-zero;
//! 2. read the record's hash and primary link (`Acquire`): registration wrote
//!    them before its `Release` increment, so they are at least generation
//!    `g`'s; a later write would come after an eviction, which bumps the
//!    generation first;
//! 3. add the handle only if the word still shows generation `g` with a
//!    non-zero count;
//! 4. check the record again: pinned, it cannot change, so this check is
//!    exact. Step 3 alone would do if generations never repeated, but they
//!    are 32 bits wide: a thread descheduled between 2 and 3 while the slot
//!    went through 2^32 registrations would be fooled. On a mismatch the
//!    handle is released again and the lookup goes on under the lock.
//!
//! Under a shard lock the found slot is checked exactly instead
//! ([`super::state::is_registered_primary`]): a stale entry is a miss.

use std::sync::Arc;

use super::index::Probe;
use super::shard::ShardCursor;
use super::state::{is_registered_primary, Registered};
use super::Store;
use crate::SequenceHash;

/// What a lock-free pin did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockFreePin {
    /// The slot is pinned for the caller, at this generation.
    Pinned(u32),
    /// Nothing changed: the slot is not an active primary of the hash.
    Declined,
    /// A handle was added to the slot, but the slot turned out to hold
    /// another block (its generation wrapped around while this thread
    /// waited). The caller must release that handle, holding no lock.
    Stray,
}

impl Store {
    /// Pins `slot` for a match of `hash` if it is an active primary holding
    /// `hash`, without any lock.
    #[inline]
    pub(super) fn pin_if_active(&self, slot: u32, hash: SequenceHash) -> LockFreePin {
        let Some(generation) = self.refs.live_generation(slot) else {
            return LockFreePin::Declined;
        };
        if self.records.hash(slot) != hash || !self.records.is_primary(slot) {
            return LockFreePin::Declined;
        }
        if !self.refs.try_increment_live(slot, generation) {
            return LockFreePin::Declined;
        }
        // Pinned, the record cannot change any more, so this check is exact.
        // It fails only if the 32-bit generation wrapped around between the
        // check above and the pin (2^32 evictions of this one slot).
        if self.records.hash(slot) == hash && self.records.is_primary(slot) {
            LockFreePin::Pinned(generation)
        } else {
            LockFreePin::Stray
        }
    }

    /// The slot the index names for `hash`, if any (unconfirmed; asks the
    /// index under its writer's lock if the lock-free read was unsure).
    #[inline]
    fn candidate(&self, hash: SequenceHash) -> Option<u32> {
        let records = &self.records;
        match self.index.find(hash, |s| records.hash(s)) {
            Probe::Candidate(slot) => Some(slot),
            Probe::Miss => None,
            Probe::Unsure => {
                let writer = self.writer.lock();
                self.index.get(&writer, hash, |s| records.hash(s))
            }
        }
    }

    /// Pins the resident primary of `hash` under its shard's lock (taken
    /// through `cursor`); `touch` tells the policy of the use.
    #[inline]
    fn pin_locked(
        &self,
        hash: SequenceHash,
        touch: bool,
        cursor: &mut ShardCursor<'_>,
    ) -> Option<Registered> {
        let slot = self.candidate(hash)?;
        let generation = cursor
            .get_slot(slot)
            .pin_if_primary_of(slot, hash, touch, self)?;
        Some(Registered { slot, generation })
    }

    /// Resolves the longest resident prefix of `hashes`, pinning each hit and
    /// handing `(slot, generation, hash)` to `hit`; returns the hit count.
    pub(crate) fn match_prefix(
        self: &Arc<Self>,
        hashes: &[SequenceHash],
        mut hit: impl FnMut(u32, u32, SequenceHash),
    ) -> usize {
        let records = &self.records;
        let mut found = 0;
        if !self.policy_observes_hits {
            for &hash in hashes {
                let slot = match self.index.find(hash, |s| records.hash(s)) {
                    Probe::Miss => {
                        self.matches.add_match(hashes.len(), found);
                        return found;
                    }
                    Probe::Candidate(slot) => slot,
                    Probe::Unsure => break,
                };
                match self.pin_if_active(slot, hash) {
                    LockFreePin::Pinned(generation) => hit(slot, generation, hash),
                    LockFreePin::Declined => break,
                    LockFreePin::Stray => {
                        // The caller's `Arc` outlives this drop (see `shard`).
                        self.release_handles([slot]).finish();
                        break;
                    }
                }
                found += 1;
            }
        }
        if found < hashes.len() {
            let mut cursor = ShardCursor::new(self);
            for &hash in &hashes[found..] {
                let Some(r) = self.pin_locked(hash, true, &mut cursor) else {
                    break;
                };
                hit(r.slot, r.generation, hash);
                found += 1;
            }
            drop(cursor.finish());
        }
        self.matches.add_match(hashes.len(), found);
        found
    }

    /// Pins the resident primary of each hash independently (a miss does
    /// not stop the walk); `hit` gets `(index, slot, generation)`. `touch`
    /// tells the policy of the uses; `as_match` counts the walk as a match
    /// (else as a scan).
    pub(crate) fn pin_each(
        self: &Arc<Self>,
        hashes: &[SequenceHash],
        touch: bool,
        as_match: bool,
        mut hit: impl FnMut(usize, Registered),
    ) {
        let mut cursor = ShardCursor::new(self);
        let mut found = 0;
        for (i, &hash) in hashes.iter().enumerate() {
            if let Some(r) = self.pin_locked(hash, touch, &mut cursor) {
                hit(i, r);
                found += 1;
            }
        }
        drop(cursor.finish());
        if as_match {
            self.matches.add_match(hashes.len(), found);
        } else {
            self.matches.add_scan(hashes.len(), found);
        }
    }

    /// A new handle for a weak handle's block: its own slot if that still
    /// holds `hash` at `generation`, else whichever slot is now the resident
    /// primary of `hash`.
    pub(crate) fn upgrade(
        self: &Arc<Self>,
        slot: u32,
        generation: u32,
        hash: SequenceHash,
    ) -> Option<Registered> {
        if self.refs.try_increment_live(slot, generation) {
            // Pinned: the record is stable now, so this check is exact (it
            // fails only after the generation wrapped around).
            if self.records.hash(slot) == hash {
                return Some(Registered { slot, generation });
            }
            self.release_handles([slot]).finish();
        }
        let mut cursor = ShardCursor::new(self);
        let registered = match cursor
            .get_slot(slot)
            .upgrade_same(slot, generation, hash, self)
        {
            Some(generation) => Some(Registered { slot, generation }),
            None => self.pin_locked(hash, true, &mut cursor),
        };
        // The caller's `Arc` outlives this drop (see `shard`).
        drop(cursor.finish());
        registered
    }

    /// Whether `hash` has a resident primary (no pin, no policy update).
    pub(crate) fn contains(&self, hash: SequenceHash) -> bool {
        self.candidate(hash).is_some_and(|slot| {
            let _shard = self.lock_slot(slot);
            is_registered_primary(slot, hash, self)
        })
    }
}
