//! The block store: every slot of one manager, shared by the manager and all
//! the guards it hands out.
//!
//! A [`Store`] is the thin locked layer over [`core::StoreCore`] (the
//! single-threaded state machine) plus the lock-free per-slot handle counts of
//! [`refcount`]. It owns no tensor memory and never blocks on anything but its
//! one short lock. Batch calls take the lock once per call.

pub(crate) mod core;
mod handle;
mod index;
pub(crate) mod refcount;
pub(crate) mod slot;

use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

pub(crate) use self::handle::StoreRef;

use self::core::StoreCore;
use self::refcount::RefCounts;
use crate::policy::AnyPolicy;
use crate::{BlockDuplicationPolicy, ManagerId};

/// Shared state of one manager.
pub(crate) struct Store {
    core: Mutex<StoreCore>,
    pub(crate) refs: RefCounts,
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
        Self {
            core: Mutex::new(StoreCore::new(block_count, policy)),
            refs: RefCounts::new(block_count),
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
            core.release_outstanding(slot, was_staged);
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
                core.release_if_unused(slot, &self.refs);
            }
            core.take_keepalive_if_idle()
        };
        drop(keepalive);
    }

    /// Records a `CompleteBlock::reset`.
    #[inline]
    pub(crate) fn note_unstaged(&self) {
        self.unstagings.fetch_add(1, Ordering::Relaxed);
    }

    /// Bookkeeping bytes per slot (records, index, reset pool, counts).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.lock().heap_bytes() + self.block_count * RefCounts::BYTES_PER_SLOT
    }
}
