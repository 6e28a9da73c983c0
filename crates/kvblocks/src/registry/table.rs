//! [`HandleTable`]: the registration handles that exist, one per hash.
//!
//! The table holds a strong reference to every handle in it, so a handle's
//! attachments outlive the clones callers drop. It lets a handle go when no
//! tier holds its block any more and the table's reference is the only one
//! left. Two events can make that so, and both call
//! [`HandleTable::release_if_unused`]: the last clone outside the table is
//! dropped, or a slot whose hash has a handle stops holding it (the store
//! marks such slots *noted* and reports their exits after unlocking).
//!
//! # Why no tier's registration is missed
//!
//! "No tier holds the block" is decided by [`RegistryShared::note_everywhere`],
//! which locks each tier's index writer and then the shard of the slot it
//! finds, and marks the slots it finds noted. A registration racing it
//! reads the [`super::filter::NotedFilter`] under its own shard lock after
//! inserting its index entry under the writer lock; the table added the hash
//! to the filter before it started looking. So either the table's look
//! finds the new slot (and notes it), or the registration's look at the
//! filter comes after the table's lock on that writer or shard, sees the
//! hash, and notes its own slot. Either way a slot that holds the hash is
//! noted, and its exit is reported.
//!
//! Lock order: a table stripe, then a tier's index writer, then its shard
//! locks. Nothing takes a stripe while holding a store lock.

use std::collections::HashMap;
use std::sync::Arc;

use super::handle::{BlockRegistrationHandle, HandleInner};
use super::RegistryShared;
use crate::sync::{Mutex, Padded};
use crate::SequenceHash;

/// Stripes of the table (a power of two), so handles of different hashes
/// rarely wait for each other.
const STRIPES: usize = 16;

/// One stripe: the handles of the hashes that map to it.
type Stripe = Mutex<HashMap<SequenceHash, Arc<HandleInner>>>;

/// The registration handles that exist, by hash.
pub(crate) struct HandleTable {
    stripes: Box<[Padded<Stripe>]>,
}

impl HandleTable {
    pub(crate) fn new() -> Self {
        Self {
            stripes: (0..STRIPES)
                .map(|_| Padded(Mutex::new(HashMap::new())))
                .collect(),
        }
    }

    fn stripe(&self, hash: SequenceHash) -> &Stripe {
        let raw = hash.as_u128();
        let mixed = (raw as u64 ^ (raw >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.stripes[(mixed >> 60) as usize % STRIPES]
    }

    /// The handle of `hash`, if one exists.
    pub(crate) fn existing(&self, hash: SequenceHash) -> Option<BlockRegistrationHandle> {
        let stripe = self.stripe(hash).lock();
        stripe
            .get(&hash)
            .cloned()
            .map(BlockRegistrationHandle::from_inner)
    }

    /// The handle of `hash`, made if it does not exist yet (then every slot
    /// that holds the hash in any tier is noted).
    pub(crate) fn get_or_make(
        &self,
        shared: &Arc<RegistryShared>,
        hash: SequenceHash,
    ) -> BlockRegistrationHandle {
        let mut stripe = self.stripe(hash).lock();
        if let Some(inner) = stripe.get(&hash) {
            return BlockRegistrationHandle::from_inner(Arc::clone(inner));
        }
        let inner = Arc::new(HandleInner::new(hash, Arc::downgrade(shared)));
        // In the filter before looking at the tiers (see the module docs).
        shared.filter.add(hash);
        shared.note_everywhere(hash);
        stripe.insert(hash, Arc::clone(&inner));
        BlockRegistrationHandle::from_inner(inner)
    }

    /// Lets the handle of `hash` go if only the table refers to it and no
    /// tier holds the block (noting the slots that still hold it).
    pub(crate) fn release_if_unused(&self, shared: &RegistryShared, hash: SequenceHash) {
        let released = {
            let mut stripe = self.stripe(hash).lock();
            let unused = stripe
                .get(&hash)
                .is_some_and(|inner| Arc::strong_count(inner) == 1);
            if unused && !shared.note_everywhere(hash) {
                shared.filter.remove(hash);
                stripe.remove(&hash)
            } else {
                None
            }
        };
        // Dropped after the stripe is unlocked: the attachments' own drop
        // code may use the registry.
        drop(released);
    }

    /// [`release_if_unused`](Self::release_if_unused), reached from a
    /// handle's drop.
    pub(crate) fn sweep(&self, shared: &RegistryShared, hash: SequenceHash) {
        self.release_if_unused(shared, hash);
    }

    /// The hashes that have a handle.
    pub(crate) fn hashes(&self) -> Vec<SequenceHash> {
        self.stripes
            .iter()
            .flat_map(|stripe| stripe.lock().keys().copied().collect::<Vec<_>>())
            .collect()
    }
}
