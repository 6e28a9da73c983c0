//! [`ImmutableBlock`] (a registered, shared, pinning handle) and [`WeakBlock`]
//! (a non-pinning one).
//!
//! Handle counts live in the store's per-slot atomic words: clone and drop
//! cost one atomic operation unless the count crosses zero, which takes the
//! lock of the slot's pool shard (see `store::refcount`). This module never moves a slot
//! between pools itself; it asks the store.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::LifecyclePinRef;
use crate::registry::BlockRegistrationHandle;
use crate::store::slot::flag::{EVICT_ON_RELEASE, NOTED};
use crate::store::{Registered, Store, StoreRef};
use crate::BlockMetadata;
use crate::{BlockId, SequenceHash};

/// A registered block. Cheap to clone; while any clone lives, the slot is
/// pinned and cannot be evicted.
///
/// # Drop behaviour
///
/// Dropping the last clone moves a primary block to the inactive pool, where
/// it stays matchable until evicted; a duplicate copy (see
/// [`BlockDuplicationPolicy::Allow`](crate::BlockDuplicationPolicy::Allow))
/// goes straight back to the reset pool.
///
/// ```
/// # use kvblocks::{BlockManager, SequenceHash};
/// #[derive(Clone)] struct Gpu;
/// let manager = BlockManager::<Gpu>::builder().block_count(4).block_size(4).build()?;
/// let hash = SequenceHash::root(7);
/// let staged = manager.allocate_blocks(1).unwrap().pop().unwrap().stage(hash, 4)?;
/// let block = manager.register_block(staged);
/// let shared = block.clone();
/// assert_eq!(block.use_count(), 2);
/// drop((block, shared));                          // cached, not freed
/// assert_eq!(manager.match_blocks(&[hash]).len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ImmutableBlock<T> {
    store: StoreRef,
    slot: u32,
    generation: u32,
    hash: SequenceHash,
    _tier: PhantomData<fn() -> T>,
}

impl<T> ImmutableBlock<T> {
    /// Wraps a handle the store has already counted.
    #[inline]
    pub(crate) fn from_registered(
        store: StoreRef,
        registered: Registered,
        hash: SequenceHash,
    ) -> Self {
        Self {
            store,
            slot: registered.slot,
            generation: registered.generation,
            hash,
            _tier: PhantomData,
        }
    }

    /// Gives up this handle's count without running `Drop`; the caller takes
    /// over releasing it. Returns the slot and whether it names `store`.
    pub(crate) fn into_slot_of(self, store: &Arc<Store>) -> Result<u32, Self> {
        if self.store.is(store) {
            let slot = self.slot;
            std::mem::forget(self);
            Ok(slot)
        } else {
            Err(self)
        }
    }

    /// The physical slot.
    pub fn block_id(&self) -> BlockId {
        self.slot as BlockId
    }

    /// The hash the block is registered under.
    pub fn sequence_hash(&self) -> SequenceHash {
        self.hash
    }

    /// Tokens per block in this handle's manager.
    pub fn block_size(&self) -> usize {
        self.store.get().block_size
    }

    /// Live strong handles on this slot (this one included).
    pub fn use_count(&self) -> usize {
        self.store.get().refs.count(self.slot) as usize
    }

    /// A handle that does not pin the block.
    pub fn downgrade(&self) -> WeakBlock<T> {
        let store = self.store.get();
        // A registration handle that exists lives as long as this weak
        // handle names the block (see `BlockRegistrationHandle`).
        let handle = (store.records.flags(self.slot) & NOTED != 0)
            .then(|| store.registry.existing_handle(self.hash))
            .flatten();
        WeakBlock {
            store: self.store.to_arc(),
            slot: self.slot,
            generation: self.generation,
            hash: self.hash,
            _handle: handle,
            _tier: PhantomData,
        }
    }

    /// The manager this handle belongs to.
    pub fn manager_id(&self) -> crate::ManagerId {
        self.store.get().id
    }

    /// The registry's handle for this block's hash, shared with every tier
    /// that holds the block (made on first use; see [`BlockRegistrationHandle`]).
    pub fn registration_handle(&self) -> BlockRegistrationHandle {
        self.store.get().registry.handle(self.hash)
    }

    /// Whether this block's last release evicts it instead of caching it in
    /// the inactive pool (for any holder; the manager's default is
    /// [`with_default_reset_on_release`](crate::manager::BlockManagerBuilder::with_default_reset_on_release)).
    /// A duplicate copy always goes back to the reset pool.
    pub fn set_evict_on_reset(&self, value: bool) {
        let records = &self.store.get().records;
        if value {
            records.set_flags(self.slot, EVICT_ON_RELEASE);
        } else {
            records.clear_flags(self.slot, EVICT_ON_RELEASE);
        }
    }

    /// A type-erased handle that keeps this block alive (for queues that
    /// hold blocks of several tiers).
    pub fn pin(&self) -> LifecyclePinRef
    where
        T: BlockMetadata,
    {
        LifecyclePinRef::new(Arc::new(self.clone()))
    }
}

impl<T> Clone for ImmutableBlock<T> {
    #[inline]
    fn clone(&self) -> Self {
        self.store.get().refs.increment(self.slot);
        Self {
            store: self.store,
            slot: self.slot,
            generation: self.generation,
            hash: self.hash,
            _tier: PhantomData,
        }
    }
}

impl<T> Drop for ImmutableBlock<T> {
    #[inline]
    fn drop(&mut self) {
        let released = self.store.get().release_handle(self.slot);
        // Last, once the store is no longer borrowed: it may free the store.
        released.finish();
    }
}

impl<T> fmt::Debug for ImmutableBlock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImmutableBlock")
            .field("block_id", &self.slot)
            .field("sequence_hash", &self.hash)
            .finish()
    }
}

/// A registered block that is not pinned: it may be evicted while this
/// handle lives.
///
/// # Drop behaviour
///
/// Dropping it has no effect on the block.
///
/// ```
/// # use kvblocks::{BlockManager, SequenceHash};
/// #[derive(Clone)] struct Gpu;
/// let manager = BlockManager::<Gpu>::builder().block_count(1).block_size(4).build()?;
/// let staged = manager.allocate_blocks(1).unwrap().pop().unwrap()
///     .stage(SequenceHash::root(3), 4)?;
/// let weak = manager.register_block(staged).downgrade();   // strong handle dropped: inactive
/// assert!(weak.upgrade().is_some());                          // resurrected from the cache
/// let _fresh = manager.allocate_blocks(1).unwrap();           // evicts it
/// assert!(weak.upgrade().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WeakBlock<T> {
    store: Arc<Store>,
    slot: u32,
    generation: u32,
    hash: SequenceHash,
    /// The block's registration handle, if it had one when this weak handle
    /// was made: kept alive while the weak handle names the block.
    _handle: Option<BlockRegistrationHandle>,
    _tier: PhantomData<fn() -> T>,
}

impl<T> WeakBlock<T> {
    /// A strong handle, if the hash is still registered (active, or inactive
    /// and then resurrected). If the original slot was evicted but the same
    /// hash was registered again elsewhere, the handle names that slot.
    pub fn upgrade(&self) -> Option<ImmutableBlock<T>> {
        let store = &self.store;
        let registered = store.upgrade(self.slot, self.generation, self.hash)?;
        Some(ImmutableBlock::from_registered(
            StoreRef::new(store),
            registered,
            self.hash,
        ))
    }

    /// The hash of the block this handle names.
    pub fn sequence_hash(&self) -> SequenceHash {
        self.hash
    }

    /// The slot the block was in when this handle was made.
    pub fn block_id(&self) -> BlockId {
        self.slot as BlockId
    }
}

impl<T> Clone for WeakBlock<T> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            slot: self.slot,
            generation: self.generation,
            hash: self.hash,
            _handle: self._handle.clone(),
            _tier: PhantomData,
        }
    }
}

impl<T> fmt::Debug for WeakBlock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakBlock")
            .field("block_id", &self.slot)
            .field("sequence_hash", &self.hash)
            .finish()
    }
}
