//! [`StoreRef`]: how a guard reaches its store without an `Arc` per guard.
//!
//! Cloning an `Arc<Store>` for every guard would put one shared cache line
//! (the `Arc`'s count) on every allocation, match, clone and drop, bounced
//! between all threads; measured, it made matching an active prefix slower
//! than kvbm-logical and two threads slower than one. Instead, a guard holds a
//! plain pointer, and the store keeps *itself* alive while any guard exists:
//!
//! - every guard owns a *live* slot: outstanding (`MutableBlock`,
//!   `CompleteBlock`) or active with a handle count of at least one
//!   (`ImmutableBlock`);
//! - while any slot of a pool shard is live, that shard holds an `Arc` to its
//!   own store (the keepalive; [`super::shard`] enforces this on every
//!   unlock);
//! - the count of a slot reaches zero only under its shard's lock (a handle
//!   that is not the last is dropped by compare-exchange, the last one under
//!   the lock), and the release that leaves a shard with no live slot takes
//!   the shard's keepalive out under the lock and hands it back to the
//!   guard's `Drop`, which drops it last, once the store is no longer
//!   borrowed.
//!
//! So while a guard exists its store exists, which is what [`StoreRef::get`]
//! relies on.

use std::ptr::NonNull;
use std::sync::Arc;

use super::Store;

/// A guard's pointer to its store.
#[derive(Clone, Copy)]
pub(crate) struct StoreRef(NonNull<Store>);

// SAFETY: `Store` is `Send + Sync` (a mutex and atomics); a `StoreRef` only
// ever hands out `&Store`, so sharing or sending it is as safe as sharing a
// `&Store`.
unsafe impl Send for StoreRef {}
// SAFETY: see `Send` above.
unsafe impl Sync for StoreRef {}

impl StoreRef {
    /// Points at `store`. The caller is about to make a slot live for the
    /// guard that will own this pointer, under the store lock.
    #[inline(always)]
    pub(crate) fn new(store: &Arc<Store>) -> Self {
        // `Arc::as_ptr`, not `&**store`: the pointer must carry the whole
        // allocation's provenance for `to_arc` (a reference's covers only
        // the `Store`, not the counts in front of it).
        let raw = Arc::as_ptr(store).cast_mut();
        match NonNull::new(raw) {
            Some(ptr) => Self(ptr),
            None => unreachable!("an Arc's pointer is never null"),
        }
    }

    /// The store.
    #[inline(always)]
    pub(crate) fn get(&self) -> &Store {
        // SAFETY: only guards hold a `StoreRef`, every guard owns a live slot,
        // and the store keeps an `Arc` to itself while any slot is live (see
        // the module docs), so the pointee is alive for as long as `self` is.
        unsafe { self.0.as_ref() }
    }

    /// A new strong `Arc` to the store (for a `WeakBlock`).
    pub(crate) fn to_arc(self) -> Arc<Store> {
        let raw = self.0.as_ptr().cast_const();
        // SAFETY: `raw` came from `Arc::as_ptr` of an `Arc<Store>` ([`Self::new`]),
        // and the store is alive while the calling guard exists (the module
        // docs), so its strong count is at least one: incrementing it and
        // taking an `Arc` for the new count is sound.
        unsafe {
            Arc::increment_strong_count(raw);
            Arc::from_raw(raw)
        }
    }

    /// Whether this points at `store`.
    #[inline(always)]
    pub(crate) fn is(&self, store: &Arc<Store>) -> bool {
        std::ptr::eq(self.0.as_ptr().cast_const(), Arc::as_ptr(store))
    }
}
