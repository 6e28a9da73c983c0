//! The block store: every slot of one manager, shared by the manager and all
//! the guards it hands out.
//!
//! A [`Store`] holds what any thread may read without a lock (slot records,
//! the hash index, per-slot handle counts) and two short locks: the store
//! lock over [`core::StoreCore`] (the reset pool, the eviction policy, slot
//! states), and after it, the index writer's lock. It owns no tensor memory
//! and never blocks on anything but those locks. Batch calls take each lock
//! at most once per call; a match whose blocks are all active takes neither
//! ([`lookup`]).

pub(crate) mod core;
mod handle;
mod index;
mod lookup;
pub(crate) mod refcount;
pub(crate) mod slot;
mod striped;

use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

pub(crate) use self::handle::StoreRef;

use self::core::StoreCore;
use self::index::{HashIndex, IndexWriter};
use self::refcount::RefCounts;
use self::slot::Records;
use self::striped::MatchTally;
use crate::policy::{AnyPolicy, EvictionPolicy};
use crate::{BlockDuplicationPolicy, ManagerId, SequenceHash};

/// Shared state of one manager.
pub(crate) struct Store {
    core: Mutex<StoreCore>,
    pub(crate) refs: RefCounts,
    pub(crate) records: Records,
    pub(crate) index: HashIndex,
    /// The index writer. Lock order: the store lock first, then this.
    pub(crate) writer: Mutex<IndexWriter>,
    /// Whether the policy wants every hit (then every match takes the lock).
    policy_observes_hits: bool,
    /// Counts of lock-free matches.
    matches: MatchTally,
    pub(crate) block_size: usize,
    pub(crate) block_count: usize,
    pub(crate) duplication: BlockDuplicationPolicy,
    pub(crate) id: ManagerId,
    /// `CompleteBlock -> MutableBlock` transitions via `reset()` (the only
    /// staged exit that takes no lock; the others are counted under it).
    pub(crate) unstagings: AtomicU64,
}

impl Store {
    /// A store of `block_count` free slots.
    pub(crate) fn new(
        block_count: usize,
        block_size: usize,
        duplication: BlockDuplicationPolicy,
        policy: AnyPolicy,
    ) -> Self {
        let (index, writer) = HashIndex::with_capacity(block_count);
        let policy_observes_hits = policy.observes_hits();
        Self {
            core: Mutex::new(StoreCore::new(block_count, policy)),
            refs: RefCounts::new(block_count),
            records: Records::new(block_count),
            index,
            writer: Mutex::new(writer),
            policy_observes_hits,
            matches: MatchTally::new(),
            block_size,
            block_count,
            duplication,
            id: ManagerId::next(),
            unstagings: AtomicU64::new(0),
        }
    }

    /// Takes the store lock.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, StoreCore> {
        self.core.lock()
    }

    /// A mutable or staged guard was dropped. The caller must not touch the
    /// store after this returns (it may have been freed).
    #[inline]
    pub(crate) fn release_outstanding(&self, slot: u32, was_staged: bool) {
        let keepalive = {
            let mut core = self.lock();
            core.release_outstanding(slot, was_staged, self);
            core.take_keepalive_if_idle()
        };
        drop(keepalive);
    }

    /// A strong handle was dropped. A count above one drops without the lock;
    /// the last handle drops under it (see [`StoreRef`]). The caller must not
    /// touch the store after this returns.
    #[inline]
    pub(crate) fn release_handle(&self, slot: u32) {
        if self.refs.decrement_if_shared(slot) {
            return;
        }
        let keepalive = {
            let mut core = self.lock();
            if self.refs.decrement(slot) {
                core.release_if_unused(slot, self);
            }
            core.take_keepalive_if_idle()
        };
        drop(keepalive);
    }

    /// Second half of an allocation: removes the index entries of the
    /// slots it evicted (reporting their hashes to `evicted`), before the
    /// slots are handed out. Takes the index writer's lock, not the store lock.
    pub(crate) fn forget_evicted(&self, slots: &[u32], mut evicted: impl FnMut(SequenceHash)) {
        if slots.is_empty() {
            return;
        }
        let mut writer = self.writer.lock();
        for &slot in slots {
            let hash = self.records.hash(slot);
            self.index.remove(&mut writer, hash, slot);
            evicted(hash);
        }
        self.index.settle(&mut writer);
    }

    /// Before registering an owned staged slot: writes its hash into the
    /// record and brings the key's index bucket into this core's cache, so
    /// the locked part of the registration does less.
    #[inline]
    pub(crate) fn prepare_registration(&self, slot: u32, hash: SequenceHash) {
        self.records.set_hash(slot, hash);
        let _ = self.index.find(hash, |s| self.records.hash(s));
    }

    /// Records a `CompleteBlock::reset`.
    #[inline]
    pub(crate) fn note_unstaged(&self) {
        self.unstagings.fetch_add(1, Ordering::Relaxed);
    }

    /// `(hashes requested, blocks returned)` by lock-free matches.
    pub(crate) fn lock_free_match_totals(&self) -> (u64, u64) {
        self.matches.totals()
    }

    /// Bookkeeping bytes (records, index, reset pool, counts).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.lock().heap_bytes()
            + self.index.allocation_size()
            + self.block_count * (RefCounts::BYTES_PER_SLOT + Records::BYTES_PER_SLOT)
    }
}
