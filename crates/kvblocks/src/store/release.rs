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
//! (see [`super::shard`]). Nothing here allocates.

use super::shard::{Keepalive, ShardCursor};
use super::Store;

impl Store {
    /// A mutable or staged guard was dropped: its slot goes back to reset.
    #[inline]
    pub(crate) fn release_outstanding(&self, slot: u32, was_staged: bool) -> Keepalive {
        let mut shard = self.lock_shard(self.shard_of(slot));
        shard.release_outstanding(slot, was_staged, self);
        shard.unlock()
    }

    /// Releases one strong handle on each of `slots`, taking each shard's
    /// lock once per run of slots in it (and not at all for handles that are
    /// not the last).
    #[inline]
    pub(crate) fn release_handles(&self, slots: impl IntoIterator<Item = u32>) -> Keepalive {
        let mut cursor = ShardCursor::new(self);
        for slot in slots {
            if let Some(primary) = self.release_one(slot, &mut cursor) {
                // A duplicate copy's pin on its primary; a primary holds no
                // pin itself, so this ends here.
                let none = self.release_one(primary, &mut cursor);
                debug_assert!(none.is_none(), "a primary pinned another slot");
            }
        }
        cursor.finish()
    }

    /// Releases one handle on `slot`; returns the primary whose pin the
    /// slot held, if the slot was a duplicate copy that is now free.
    #[inline(always)]
    fn release_one(&self, slot: u32, cursor: &mut ShardCursor<'_>) -> Option<u32> {
        if self.refs.decrement_if_shared(slot) {
            return None;
        }
        // Possibly the last handle: decide under the slot's shard lock, where
        // a resurrecting match would have to add its handle too.
        let shard = cursor.get(self.shard_of(slot));
        if self.refs.decrement(slot) {
            shard.release_if_unused(slot, self)
        } else {
            None
        }
    }
}
