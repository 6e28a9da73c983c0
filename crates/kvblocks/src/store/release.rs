//! Releasing: what a guard's drop does to its slot.
//!
//! Two ways out: an outstanding slot (a dropped `MutableBlock` or
//! `CompleteBlock`) goes back to its shard's reset pool, and a strong handle
//! (a dropped `ImmutableBlock`, or a batch of them) is released by the one
//! routine here, [`Store::release_handles`]. Releasing a handle that is not
//! the last takes no lock (see [`super::refcount`]); the last release of a
//! primary makes it inactive, of a duplicate copy returns it to reset and
//! releases the pin the copy held on its primary.
//!
//! Both return the [`Keepalive`] of any shard they left without live slots:
//! they borrow the store, so they must not drop what may be its last `Arc`
//! (see [`super::shard`]). Releasing handles also returns what the registry
//! must hear of ([`Released`]). Nothing here allocates, except on the rare
//! evict-on-release of a block whose hash has a registration handle.

use std::sync::Arc;

use super::shard::{Keepalive, ShardCursor};
use super::state::LastRelease;
use super::Store;
use crate::registry::RegistryShared;
use crate::SequenceHash;

/// What a release hands back to the guard that made it: the store's `Arc`
/// if a shard went idle, and the hashes the registry must hear of (a primary
/// with a registration handle left its registration on evict-on-release).
#[must_use = "call `finish` after the last use of the store"]
pub(crate) struct Released {
    keepalive: Keepalive,
    /// The registry (taken while the store was surely alive) and the hashes.
    lost: Option<(Arc<RegistryShared>, Vec<SequenceHash>)>,
}

impl Released {
    /// Tells the registry, then drops the keepalive (which may free the
    /// store). Call once nothing borrows the store.
    #[inline]
    pub(crate) fn finish(self) {
        if let Some((registry, hashes)) = self.lost {
            for hash in hashes {
                registry.presence_lost(hash);
            }
        }
        drop(self.keepalive);
    }
}

impl Store {
    /// A mutable or staged guard was dropped: its slot goes back to reset.
    #[inline]
    pub(crate) fn release_outstanding(&self, slot: u32, was_staged: bool) -> Keepalive {
        let mut shard = self.lock_slot(slot);
        shard.release_outstanding(slot, was_staged, self);
        shard.unlock()
    }

    /// Releases one strong handle on `slot`: [`release_handles`] of one slot
    /// (same outcomes), with the common cases of a guard's drop inlined: a
    /// handle that is not the last, and the last handle of a primary that
    /// stays cached. The rare outcomes go through `release_handles`.
    ///
    /// [`release_handles`]: Self::release_handles
    #[inline]
    pub(crate) fn release_handle(&self, slot: u32) -> Released {
        if self.refs.decrement_if_shared(slot) {
            return Released {
                keepalive: Keepalive::NONE,
                lost: None,
            };
        }
        let mut shard = self.lock_slot(slot);
        let last = if self.refs.decrement(slot) {
            shard.release_if_unused(slot, self)
        } else {
            LastRelease::Kept
        };
        match last {
            LastRelease::Kept => Released {
                keepalive: shard.unlock(),
                lost: None,
            },
            LastRelease::Discarded { noted } => {
                // Taken while the shard lock keeps the store alive.
                let lost = noted.map(|hash| (Arc::clone(&self.registry), vec![hash]));
                Released {
                    keepalive: shard.unlock(),
                    lost,
                }
            }
            LastRelease::Duplicate { primary } => {
                // The copy's pin on its primary, by the general routine.
                let keepalive = shard.unlock();
                let mut released = self.release_handles([primary]);
                released.keepalive.merge(keepalive);
                released
            }
        }
    }

    /// Releases one strong handle on each of `slots`, taking each shard's
    /// lock once per run of slots in it (and not at all for handles that are
    /// not the last).
    #[inline]
    pub(crate) fn release_handles(&self, slots: impl IntoIterator<Item = u32>) -> Released {
        let mut cursor = ShardCursor::new(self);
        let mut lost: Option<(Arc<RegistryShared>, Vec<SequenceHash>)> = None;
        for slot in slots {
            let mut last = self.release_one(slot, &mut cursor);
            if let LastRelease::Duplicate { primary } = last {
                // A duplicate copy's pin on its primary; a primary holds no
                // pin itself, so this ends here.
                last = self.release_one(primary, &mut cursor);
                debug_assert!(
                    !matches!(last, LastRelease::Duplicate { .. }),
                    "a primary pinned another slot"
                );
            }
            if let LastRelease::Discarded { noted: Some(hash) } = last {
                // Taken while the shard lock keeps the store alive.
                let (_, hashes) =
                    lost.get_or_insert_with(|| (Arc::clone(&self.registry), Vec::new()));
                hashes.push(hash);
            }
        }
        Released {
            keepalive: cursor.finish(),
            lost,
        }
    }

    /// Releases one handle on `slot`; what its last release did, if it was
    /// the last.
    #[inline(always)]
    fn release_one(&self, slot: u32, cursor: &mut ShardCursor<'_>) -> LastRelease {
        if self.refs.decrement_if_shared(slot) {
            return LastRelease::Kept;
        }
        // Possibly the last handle: decide under the slot's shard lock, where
        // a resurrecting match would have to add its handle too.
        let shard = cursor.get_slot(slot);
        if self.refs.decrement(slot) {
            shard.release_if_unused(slot, self)
        } else {
            LastRelease::Kept
        }
    }
}
