//! [`CompleteBlock`]: a slot whose content is final and named by a hash, not
//! yet registered.
//!
//! Owns one outstanding slot. Only the manager registers it; drop returns the
//! slot to the reset pool.

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::sync::Arc;

use super::MutableBlock;
use crate::store::{Store, StoreRef};
use crate::{BlockId, SequenceHash};

/// A staged block: content final, named by a [`SequenceHash`], not yet
/// visible to matches. Register it with
/// [`BlockManager::register_block`](crate::BlockManager::register_block).
///
/// # Drop behaviour
///
/// Dropping it returns the slot to the reset pool; the content is forgotten.
///
/// ```
/// # use kvblocks::{BlockManager, SequenceHash};
/// #[derive(Clone)] struct Gpu;
/// let manager = BlockManager::<Gpu>::builder().block_count(1).block_size(4).build()?;
/// let complete = manager.allocate_blocks(1).unwrap().pop().unwrap()
///     .stage(SequenceHash::root(9), 4)?;
/// let again = complete.reset();                 // back to a writable block, same slot
/// drop(again);
/// assert_eq!(manager.available_blocks(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CompleteBlock<T> {
    pub(crate) store: StoreRef,
    pub(crate) slot: u32,
    pub(crate) hash: SequenceHash,
    _tier: PhantomData<fn() -> T>,
}

impl<T> CompleteBlock<T> {
    pub(crate) fn new(store: StoreRef, slot: u32, hash: SequenceHash) -> Self {
        Self {
            store,
            slot,
            hash,
            _tier: PhantomData,
        }
    }

    /// Takes the parts out without running `Drop`.
    pub(crate) fn into_parts(self) -> (StoreRef, u32, SequenceHash) {
        let this = ManuallyDrop::new(self);
        (this.store, this.slot, this.hash)
    }

    /// Whether this guard was allocated by `store`.
    pub(crate) fn belongs_to(&self, store: &Arc<Store>) -> bool {
        self.store.is(store)
    }

    /// The manager this guard came from.
    pub(crate) fn owner(&self) -> crate::ManagerId {
        self.store.get().id
    }

    /// The physical slot this guard names.
    pub fn block_id(&self) -> BlockId {
        self.slot as BlockId
    }

    /// Tokens per block in this guard's manager.
    pub fn block_size(&self) -> usize {
        self.store.get().block_size
    }

    /// The hash the block was staged with.
    pub fn sequence_hash(&self) -> SequenceHash {
        self.hash
    }

    /// Forgets the hash and gives the slot back as a writable block.
    pub fn reset(self) -> MutableBlock<T> {
        let (store, slot, _) = self.into_parts();
        store.get().note_unstaged();
        MutableBlock::new(store, slot)
    }
}

impl<T> Drop for CompleteBlock<T> {
    fn drop(&mut self) {
        let keepalive = self.store.get().release_outstanding(self.slot, true);
        // Last, once the store is no longer borrowed: it may free the store.
        drop(keepalive);
    }
}

impl<T> fmt::Debug for CompleteBlock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompleteBlock")
            .field("block_id", &self.slot)
            .field("sequence_hash", &self.hash)
            .finish()
    }
}
