//! [`BlockManager`]: the public face of a store — allocation, registration,
//! prefix matching and pool introspection for one tier.
//!
//! Owns the translation between slot numbers and guards; the state machine
//! itself lives in the store. A batch call takes each lock it needs once per
//! run of slots in one pool shard.

mod builder;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

pub use crate::frequency::FrequencyTrackingCapacity;
pub use builder::{
    BlockManagerBuilder, BlockManagerBuilderError, BlockManagerConfigBuilder, BuildError,
    DEFAULT_MAX_POOL_SHARDS, MAX_BLOCK_COUNT, MAX_BLOCK_SIZE, MAX_POOL_SHARDS,
};

use crate::blocks::{CompleteBlock, ImmutableBlock, MutableBlock, RegisterError};
use crate::frequency::FrequencyTracker;
use crate::metrics::MetricsSnapshot;
use crate::registry::BlockRegistry;
use crate::store::{Store, StoreRef};
use crate::{BlockDuplicationPolicy, BlockMetadata, ManagerId, SequenceHash};

/// `reset_inactive_pool` found blocks still held outside the pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResetError {
    /// Some slots are still held by guards, so the reset pool is not full.
    #[error("reset pool holds {actual} of {expected} blocks; the rest are still held by guards")]
    BlockCountMismatch {
        /// The manager's block count.
        expected: usize,
        /// Blocks in the reset pool after draining the inactive pool.
        actual: usize,
    },
}

/// kvbm-logical's name for [`ResetError`].
pub type BlockManagerResetError = ResetError;

/// Manages the slots of one storage tier `T`.
///
/// Cheap to share: wrap it in an `Arc`; every method takes `&self`.
///
/// ```
/// use kvblocks::{BlockManager, hash::TokenBlockSequence};
/// #[derive(Clone)] struct Gpu;
///
/// let manager = BlockManager::<Gpu>::builder().block_count(8).block_size(4).build()?;
/// let prompt = TokenBlockSequence::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9], 4, None);
/// let hashes = prompt.sequence_hashes();              // two full blocks
///
/// // First request: nothing cached, compute both blocks and register them.
/// assert!(manager.match_blocks(&hashes).is_empty());
/// let staged: Vec<_> = manager.allocate_blocks(2).unwrap().into_iter()
///     .zip(prompt.blocks())
///     .map(|(block, tokens)| block.complete(tokens))
///     .collect::<Result<_, _>>()?;
/// let held = manager.register_blocks(staged);
/// drop(held);                                          // cached in the inactive pool
///
/// // Second request with the same prompt: both blocks come back from the cache.
/// assert_eq!(manager.match_blocks(&hashes).len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BlockManager<T> {
    store: Arc<Store>,
    registry: BlockRegistry,
    /// The registry's frequency tracker, if any (kept here so a match pays
    /// one `Option` check without it; see [`crate::frequency`]).
    tracker: Option<Arc<dyn FrequencyTracker<u128>>>,
    _tier: PhantomData<fn() -> T>,
}

impl<T: BlockMetadata> BlockManager<T> {
    /// A builder; `block_count` and `block_size` are required.
    pub fn builder() -> BlockManagerBuilder<T> {
        BlockManagerBuilder::default()
    }

    /// The store (for the crate's test hooks).
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Marks the point in this manager's event stream where its registered
    /// set is what it is now, for a consumer that resyncs from a snapshot:
    /// pass the ticket to
    /// [`EventsManager::take_snapshot`](crate::events::EventsManager::take_snapshot)
    /// (outside any manager call). `None` if the manager reports no events.
    pub fn snapshot_barrier(&self) -> Option<crate::events::SnapshotTicket> {
        self.store.snapshot_barrier()
    }

    /// The tier this manager's events name.
    pub fn logical_layout(&self) -> crate::LogicalLayoutHandle {
        self.store.events.tier()
    }

    /// The registry this manager shares with other tiers (its own if it was
    /// built without one).
    pub fn block_registry(&self) -> &BlockRegistry {
        &self.registry
    }

    /// This manager's process-unique id.
    pub fn id(&self) -> ManagerId {
        self.store.id
    }

    /// Allocates `count` writable blocks, all or nothing: from the reset pool
    /// first, then by evicting inactive blocks. `None` if fewer than `count`
    /// are available; nothing is evicted then.
    pub fn allocate_blocks(&self, count: usize) -> Option<Vec<MutableBlock<T>>> {
        self.allocate(count, None)
    }

    /// One writable block: [`allocate_blocks`](Self::allocate_blocks)`(1)`
    /// without the vector (a request's next block during decode).
    pub fn allocate_block(&self) -> Option<MutableBlock<T>> {
        let store = &self.store;
        let mut slot = None;
        let from_reset = store.allocate_slots(1, |s| slot = Some(s))?;
        let slot = slot?;
        if from_reset == 0 {
            // Evicted: its stale index entry goes before it is handed out.
            store.forget_evicted(std::iter::once(slot), |_| {});
        }
        store.events.flush_if_wanted();
        Some(MutableBlock::new(StoreRef::new(store), slot))
    }

    /// Like [`allocate_blocks`](Self::allocate_blocks), also returning the
    /// hashes of the blocks it evicted.
    ///
    /// Each reported hash was registered in a slot this call evicted. While
    /// other threads use the manager, a reported hash may already be
    /// registered again elsewhere by the time the call returns (another
    /// thread computed the same block meanwhile): check
    /// [`contains`](Self::contains) if that matters.
    pub fn allocate_blocks_with_evictions(
        &self,
        count: usize,
    ) -> Option<(Vec<MutableBlock<T>>, Vec<SequenceHash>)> {
        let mut evicted = Vec::new();
        let blocks = self.allocate(count, Some(&mut evicted))?;
        Some((blocks, evicted))
    }

    fn allocate(
        &self,
        count: usize,
        evicted: Option<&mut Vec<SequenceHash>>,
    ) -> Option<Vec<MutableBlock<T>>> {
        if count > self.store.block_count {
            return None;
        }
        let store = &self.store;
        let handle = StoreRef::new(store);
        let mut blocks = Vec::with_capacity(count);
        let from_reset =
            store.allocate_slots(count, |slot| blocks.push(MutableBlock::new(handle, slot)))?;
        // The evicted slots' stale index entries go before the blocks are
        // handed out.
        let victims = blocks[from_reset..].iter().map(|b| b.block_id() as u32);
        match evicted {
            Some(evicted) => store.forget_evicted(victims, |h| evicted.push(h)),
            None => store.forget_evicted(victims, |_| {}),
        }
        store.events.flush_if_wanted();
        Some(blocks)
    }

    /// Registers a staged block, making it matchable.
    ///
    /// If the hash is already registered, the manager's
    /// [`BlockDuplicationPolicy`] decides: `Allow` keeps this block as a
    /// duplicate copy, `Reject` frees it and returns the existing block.
    ///
    /// # Panics
    ///
    /// If another manager allocated `block` (a programming error, like an
    /// index out of bounds); neither manager changes. Use
    /// [`try_register_block`](Self::try_register_block) to get the block back
    /// in an error instead.
    #[track_caller]
    pub fn register_block(&self, block: CompleteBlock<T>) -> ImmutableBlock<T> {
        match self.try_register_block(block) {
            Ok(registered) => registered,
            Err(err) => panic!("register_block: {err}"),
        }
    }

    /// Registers a batch of staged blocks, taking each lock once per run of
    /// blocks; handles come back in input order.
    ///
    /// # Panics
    ///
    /// If any block came from another manager (nothing is registered then).
    /// Use [`try_register_blocks`](Self::try_register_blocks) to get the batch
    /// back in an error instead.
    #[track_caller]
    pub fn register_blocks(&self, blocks: Vec<CompleteBlock<T>>) -> Vec<ImmutableBlock<T>> {
        match self.try_register_blocks(blocks) {
            Ok(registered) => registered,
            Err(err) => panic!("register_blocks: {err}"),
        }
    }

    /// [`register_block`](Self::register_block), with a guard from another
    /// manager handed back instead of a panic.
    ///
    /// # Errors
    ///
    /// [`RegisterError::ForeignManager`] with the block inside if another
    /// manager allocated it; nothing changes in either manager.
    pub fn try_register_block(
        &self,
        block: CompleteBlock<T>,
    ) -> Result<ImmutableBlock<T>, RegisterError<CompleteBlock<T>>> {
        if !block.belongs_to(&self.store) {
            let (id, owner) = (block.block_id(), block.owner());
            return Err(self.foreign(block, id, owner));
        }
        let (handle, slot, hash) = block.into_parts();
        let store = &self.store;
        store.prepare_registration(slot, hash);
        let (registered, new_primary) = store.register_slot(slot, hash);
        store.events.flush_if_wanted();
        if let (Some(tracker), true) = (&self.tracker, new_primary) {
            self.registry
                .shared
                .touch_new_registrations(&**tracker, store, &[hash]);
        }
        Ok(ImmutableBlock::from_registered(handle, registered, hash))
    }

    /// [`register_blocks`](Self::register_blocks), with a batch holding a
    /// guard from another manager handed back instead of a panic.
    ///
    /// # Errors
    ///
    /// [`RegisterError::ForeignManager`] with the whole batch inside if any
    /// block came from another manager; nothing is registered then.
    pub fn try_register_blocks(
        &self,
        blocks: Vec<CompleteBlock<T>>,
    ) -> Result<Vec<ImmutableBlock<T>>, RegisterError<Vec<CompleteBlock<T>>>> {
        if let Some(foreign) = blocks.iter().find(|b| !b.belongs_to(&self.store)) {
            let (id, owner) = (foreign.block_id(), foreign.owner());
            return Err(self.foreign(blocks, id, owner));
        }
        let store = &self.store;
        for block in &blocks {
            store.prepare_registration(block.block_id() as u32, block.sequence_hash());
        }
        let handle = StoreRef::new(store);
        let mut registered = Vec::with_capacity(blocks.len());
        let staged = blocks.into_iter().map(|block| {
            let (_, slot, hash) = block.into_parts();
            (slot, hash)
        });
        let mut new_primaries = Vec::new();
        let tracking = self.tracker.is_some();
        store.register_slots(staged, |outcome, hash, new| {
            registered.push(ImmutableBlock::from_registered(handle, outcome, hash));
            if tracking && new {
                new_primaries.push(hash);
            }
        });
        store.events.flush_if_wanted();
        if let Some(tracker) = &self.tracker {
            self.registry
                .shared
                .touch_new_registrations(&**tracker, store, &new_primaries);
        }
        Ok(registered)
    }

    fn foreign<B>(&self, block: B, block_id: usize, owner: ManagerId) -> RegisterError<B> {
        RegisterError::ForeignManager {
            block_id,
            owner,
            manager: self.store.id,
            block,
        }
    }

    /// The longest resident prefix of `hashes`, in order: stops at the first
    /// hash that is neither active nor inactive. Inactive hits are resurrected
    /// (pinned again).
    pub fn match_blocks(&self, hashes: &[SequenceHash]) -> Vec<ImmutableBlock<T>> {
        let store = &self.store;
        let handle = StoreRef::new(store);
        let mut matched = Vec::with_capacity(hashes.len());
        store.match_prefix(hashes, |slot, generation, hash| {
            let registered = crate::store::Registered { slot, generation };
            matched.push(ImmutableBlock::from_registered(handle, registered, hash));
        });
        if let Some(tracker) = &self.tracker {
            touch_all(&**tracker, &hashes[..matched.len()]);
        }
        matched
    }

    /// Looks up every hash without stopping at misses; the result is aligned
    /// with `hashes` (`None` for a miss). Counted as a match.
    pub fn match_blocks_scattered(
        &self,
        hashes: &[SequenceHash],
    ) -> Vec<Option<ImmutableBlock<T>>> {
        let store = &self.store;
        let handle = StoreRef::new(store);
        let mut matched: Vec<Option<ImmutableBlock<T>>> = Vec::with_capacity(hashes.len());
        matched.resize_with(hashes.len(), || None);
        store.pin_each(hashes, true, true, |i, r| {
            matched[i] = Some(ImmutableBlock::from_registered(handle, r, hashes[i]));
        });
        if let Some(tracker) = &self.tracker {
            let hits = hashes.iter().zip(&matched).filter(|(_, b)| b.is_some());
            touch_all(&**tracker, hits.map(|(h, _)| h));
        }
        matched
    }

    /// Every resident block among `hashes`, without stopping at misses.
    /// `touch` tells the eviction policy about the use (as a match would).
    pub fn scan_matches(
        &self,
        hashes: &[SequenceHash],
        touch: bool,
    ) -> HashMap<SequenceHash, ImmutableBlock<T>> {
        let store = &self.store;
        let handle = StoreRef::new(store);
        // Each distinct hash is looked up (and counted) once.
        let mut seen = HashSet::with_capacity(hashes.len());
        let unique: Vec<SequenceHash> =
            hashes.iter().copied().filter(|h| seen.insert(*h)).collect();
        let mut found = HashMap::with_capacity(unique.len());
        store.pin_each(&unique, touch, false, |i, r| {
            found.insert(
                unique[i],
                ImmutableBlock::from_registered(handle, r, unique[i]),
            );
        });
        if let (Some(tracker), true) = (&self.tracker, touch) {
            touch_all(&**tracker, found.keys());
        }
        found
    }

    /// Drops a batch of handles, taking each pool shard's lock once per run
    /// of blocks in it: what dropping the `Vec` does, minus one lock per
    /// block that goes inactive. Handles from another manager are simply
    /// dropped.
    ///
    /// ```
    /// # use kvblocks::{BlockManager, SequenceHash};
    /// # #[derive(Clone)] struct Gpu;
    /// let manager = BlockManager::<Gpu>::builder().block_count(4).block_size(4).build()?;
    /// let root = SequenceHash::root(1);
    /// let staged = manager.allocate_blocks(2).unwrap().into_iter()
    ///     .zip([root, root.extend(2)])
    ///     .map(|(b, h)| b.stage(h, 4))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// let request = manager.register_blocks(staged);
    /// manager.release_blocks(request);           // both cached, one lock
    /// assert_eq!(manager.metrics().inactive_pool_size, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release_blocks(&self, blocks: Vec<ImmutableBlock<T>>) {
        let store = &self.store;
        // Another manager's handles are dropped after unlocking: dropping one
        // takes its own store's locks, and holding both could deadlock.
        let mut foreign = Vec::new();
        let slots = blocks
            .into_iter()
            .filter_map(|block| match block.into_slot_of(store) {
                Ok(slot) => Some(slot),
                Err(other) => {
                    foreign.push(other);
                    None
                }
            });
        // This manager's `Arc` keeps the store alive past this drop.
        store.release_handles(slots).finish();
        drop(foreign);
    }

    /// Evicts every inactive block to the reset pool.
    ///
    /// # Errors
    ///
    /// [`ResetError::BlockCountMismatch`] if guards still hold some slots
    /// (the inactive pool is drained anyway).
    pub fn reset_inactive_pool(&self) -> Result<(), ResetError> {
        let store = &self.store;
        let reset = store.drain_inactive();
        store.events.flush_if_wanted();
        if reset == store.block_count {
            Ok(())
        } else {
            Err(ResetError::BlockCountMismatch {
                expected: store.block_count,
                actual: reset,
            })
        }
    }

    /// Blocks an allocation could hand out now (reset + inactive).
    pub fn available_blocks(&self) -> usize {
        self.store.available()
    }

    /// Slots managed (fixed at build time).
    pub fn total_blocks(&self) -> usize {
        self.store.block_count
    }

    /// Tokens per block (fixed at build time).
    pub fn block_size(&self) -> usize {
        self.store.block_size
    }

    /// Pool shards in use now: as built, except that a manager built to
    /// split on contention (the default with LRU) reports 1 until it has
    /// split (see [`BlockManagerBuilder::pool_shards`]).
    pub fn pool_shards(&self) -> usize {
        self.store.shard_count()
    }

    /// The duplication policy (fixed at build time).
    pub fn duplication_policy(&self) -> BlockDuplicationPolicy {
        self.store.duplication
    }

    /// The eviction policy's name.
    pub fn eviction_policy_name(&self) -> &'static str {
        self.store.policy_name()
    }

    /// Whether `hash` is resident (active or inactive). Does not pin it and
    /// does not count as a use.
    pub fn contains(&self, hash: SequenceHash) -> bool {
        self.store.contains(hash)
    }

    /// Counters and gauges, summed over pool shards (each read under its own
    /// lock; see [`MetricsSnapshot`] for what that means under concurrency).
    pub fn metrics(&self) -> MetricsSnapshot {
        crate::metrics::snapshot(&self.store)
    }

    /// Heap bytes of bookkeeping (slot records, hash index, reset pool, handle
    /// counts; not the policy's own arrays).
    pub fn bookkeeping_bytes(&self) -> usize {
        self.store.heap_bytes()
    }

    /// Walks every slot and checks that records, index, pools, handle
    /// counts and the eviction policy's own structures agree. O(block
    /// count): for tests and debugging.
    ///
    /// Call it on a quiet manager: it takes every lock, but handles that are
    /// not the last are cloned and dropped without any lock, and an
    /// allocation removes its victims' index entries after unlocking, so a
    /// check that runs while other threads work may report a disagreement
    /// that is not one.
    ///
    /// # Errors
    ///
    /// A description of the first disagreement found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let store = &self.store;
        let counts = store.validate()?;
        let sum = counts.reset + counts.outstanding + counts.active + counts.inactive;
        if sum != store.block_count {
            return Err(format!(
                "{counts:?} sums to {sum}, not {}",
                store.block_count
            ));
        }
        Ok(())
    }
}

/// One use of each hash, in the tracker (called with no lock held).
fn touch_all<'a>(
    tracker: &dyn FrequencyTracker<u128>,
    hashes: impl IntoIterator<Item = &'a SequenceHash>,
) {
    tracker.touch_all(&mut hashes.into_iter().map(|h| h.as_u128()));
}

impl<T> fmt::Debug for BlockManager<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockManager")
            .field("id", &self.store.id)
            .field("block_count", &self.store.block_count)
            .field("block_size", &self.store.block_size)
            .finish()
    }
}
