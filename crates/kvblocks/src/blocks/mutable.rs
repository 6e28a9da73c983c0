//! [`MutableBlock`]: a slot the caller may write.
//!
//! Owns exactly one outstanding slot. Never registers anything; drop returns
//! the slot to the reset pool.

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;

use super::{BlockError, CompleteBlock};
use crate::hash::TokenBlock;
use crate::store::StoreRef;
use crate::{BlockId, SequenceHash};

/// A writable slot, fresh from [`BlockManager::allocate_blocks`](crate::BlockManager::allocate_blocks).
///
/// Fill the physical block it names (`block_id()`), then name its content
/// with [`stage`](Self::stage) or [`complete`](Self::complete).
///
/// # Drop behaviour
///
/// Dropping it returns the slot to the reset pool.
///
/// ```
/// # use kvblocks::{BlockManager, SequenceHash};
/// #[derive(Clone)] struct Gpu;
/// let manager = BlockManager::<Gpu>::builder().block_count(2).block_size(4).build()?;
/// let block = manager.allocate_blocks(1).unwrap().pop().unwrap();
/// let wrong = block.stage(SequenceHash::root(1), 8).unwrap_err();  // not the manager's size
/// let block = wrong.into_block();                                    // nothing lost
/// let complete = block.stage(SequenceHash::root(1), 4)?;
/// assert_eq!(complete.sequence_hash(), SequenceHash::root(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MutableBlock<T> {
    pub(crate) store: StoreRef,
    pub(crate) slot: u32,
    _tier: PhantomData<fn() -> T>,
}

impl<T> MutableBlock<T> {
    pub(crate) fn new(store: StoreRef, slot: u32) -> Self {
        Self {
            store,
            slot,
            _tier: PhantomData,
        }
    }

    /// Takes the parts out without running `Drop`.
    pub(crate) fn into_parts(self) -> (StoreRef, u32) {
        let this = ManuallyDrop::new(self);
        (this.store, this.slot)
    }

    /// The physical slot this guard names.
    pub fn block_id(&self) -> BlockId {
        self.slot as BlockId
    }

    /// Tokens per block in this guard's manager.
    pub fn block_size(&self) -> usize {
        self.store.get().block_size
    }

    /// Names the block's content with a precomputed sequence hash.
    ///
    /// # Errors
    ///
    /// [`BlockError::BlockSizeMismatch`] (with this guard inside) if
    /// `block_size` is not the manager's block size.
    pub fn stage(
        self,
        sequence_hash: SequenceHash,
        block_size: usize,
    ) -> Result<CompleteBlock<T>, BlockError<Self>> {
        if block_size != self.store.get().block_size {
            return Err(BlockError::BlockSizeMismatch {
                expected: self.store.get().block_size,
                actual: block_size,
                block: self,
            });
        }
        let (store, slot) = self.into_parts();
        Ok(CompleteBlock::new(store, slot, sequence_hash))
    }

    /// Names the block's content with a full token block's lineage hash.
    ///
    /// # Errors
    ///
    /// [`BlockError::BlockSizeMismatch`] (with this guard inside) if the token
    /// block's length is not the manager's block size.
    pub fn complete(self, token_block: &TokenBlock) -> Result<CompleteBlock<T>, BlockError<Self>> {
        let size = token_block.block_size();
        self.stage(token_block.positional_lineage_hash(), size)
    }
}

impl<T> Drop for MutableBlock<T> {
    fn drop(&mut self) {
        let keepalive = self.store.get().release_outstanding(self.slot, false);
        // Last, once the store is no longer borrowed: it may free the store.
        drop(keepalive);
    }
}

impl<T> fmt::Debug for MutableBlock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutableBlock")
            .field("block_id", &self.slot)
            .finish()
    }
}
