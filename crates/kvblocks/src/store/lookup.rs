//! Prefix matching that pins active blocks without the store lock.
//!
//! A serving step matches every request's prompt, and the blocks it finds are
//! often pinned by other requests already. Pinning such a block only adds a
//! handle to a count that is already non-zero, which the handle-count
//! protocol allows without the lock ([`super::refcount`]); finding it needs
//! only the lock-free side of the index ([`super::index`]). So a match walks
//! its hashes lock-free while they resolve to active blocks, and takes the
//! lock once, for the rest of the walk, at the first block it cannot pin that
//! way (an evictable block to resurrect, a policy that wants every hit, or an
//! index rebuild in flight).
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
//!    non-zero count. If it does, the slot was continuously the registered
//!    primary of the hash it was checked against.

use std::sync::Arc;

use super::index::Probe;
use super::Store;
use crate::SequenceHash;

impl Store {
    /// Pins `slot` for a match of `hash` if it is an active primary holding
    /// `hash`; returns its generation.
    #[inline]
    fn pin_if_active(&self, slot: u32, hash: SequenceHash) -> Option<u32> {
        let generation = self.refs.live_generation(slot)?;
        if self.records.hash(slot) != hash || !self.records.is_primary(slot) {
            return None;
        }
        self.refs
            .try_increment_live(slot, generation)
            .then_some(generation)
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
                let pinned = match self.index.find(hash, |s| records.hash(s)) {
                    Probe::Miss => {
                        self.matches.add(hashes.len(), found);
                        return found;
                    }
                    Probe::Candidate(slot) => self.pin_if_active(slot, hash).map(|gen| (slot, gen)),
                    Probe::Unsure => None,
                };
                let Some((slot, generation)) = pinned else {
                    break;
                };
                hit(slot, generation, hash);
                found += 1;
            }
        }
        if found < hashes.len() {
            let mut core = self.lock();
            found += core.match_prefix(&hashes[found..], self, &mut hit);
            core.keep_alive(self);
        }
        self.matches.add(hashes.len(), found);
        found
    }
}
