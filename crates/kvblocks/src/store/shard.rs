//! Pool shards, their locks, and the keepalive rule.
//!
//! A store splits its slots into contiguous *shards*, each a lock around its
//! [`ShardState`]. This module owns the lock layer: [`Shard`] (one lock and
//! the lock-free hints allocation reads), [`ShardGuard`] (a locked shard),
//! [`ShardCursor`] (a walk over slots that holds at most one shard lock at a
//! time) and [`Keepalive`] (the store's own `Arc`, on its way out of a shard).
//!
//! # The keepalive rule
//!
//! Guards reach their store through a plain pointer (see [`super::handle`]);
//! the store stays alive because *every shard with a live slot holds an
//! `Arc` to its own store*. This module enforces the rule, so no call site
//! has to remember it:
//!
//! - dropping a [`ShardGuard`] gives a shard that has live slots the store's
//!   `Arc` if it has none (upgrading the store's weak self-reference), so
//!   whatever was handed out under the lock is covered;
//! - [`ShardGuard::unlock`] takes the `Arc` back out of a shard that has no
//!   live slot and returns it as a [`Keepalive`].
//!
//! A [`Keepalive`] may be the last `Arc` of the store, so it must be dropped
//! only where nothing borrows the store any more. A method with `&self`
//! (`&Store`) therefore returns it to its caller: dropping it inside would
//! free memory under a live reference argument, which is undefined behaviour
//! even if the reference is never used again. A method with `self:
//! &Arc<Store>` may drop keepalives itself, since its caller's `Arc` keeps
//! the store alive for the whole call. Guards' `Drop` impls are the only
//! callers that hold neither, and they drop what they get back last.
//!
//! Dropping a guard over a shard that has no live slot but still holds its
//! `Arc` is a bug (the `Arc` should have been returned by `unlock`): a debug
//! assertion catches it; a release build keeps the store alive (a leak,
//! never a use after free).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::state::ShardState;
use super::Store;
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

/// One pool shard and the lock-free hint of its reset pool's size, alone on
/// its cache lines.
#[repr(align(128))]
pub(crate) struct Shard {
    /// Its position in the store (its bit in the store's free mask).
    pub(super) index: usize,
    pub(super) state: Mutex<ShardState>,
    /// Reset-pool size as of the last unlock (allocation reads it to keep
    /// "reset pool first" across shards without locking them).
    pub(super) free_hint: AtomicU64,
    /// With several shards: as of the last unlock, whether the shard had an
    /// evictable slot (high half, 0 or 1) and the release date of its next
    /// victim (low half). Allocation reads it to evict from the shard whose
    /// victims are oldest.
    pub(super) victim_hint: AtomicU64,
}

/// The store's own `Arc`, taken out of a shard that has no live slot any
/// more. Drop it only after the last use of the store (see the module docs).
#[must_use = "a keepalive may be the store's last Arc: drop it after the last use of the store"]
pub(crate) struct Keepalive(Option<Arc<Store>>);

impl Keepalive {
    /// Nothing to drop.
    pub(crate) const NONE: Keepalive = Keepalive(None);

    /// Keeps one `Arc` of the two. Dropping the other here is sound: the one
    /// kept holds the store alive.
    #[inline]
    pub(crate) fn merge(&mut self, other: Keepalive) {
        if self.0.is_none() {
            self.0 = other.0;
        }
    }
}

/// A locked shard.
pub(crate) struct ShardGuard<'a> {
    store: &'a Store,
    shard: &'a Shard,
    state: MutexGuard<'a, ShardState>,
}

impl<'a> ShardGuard<'a> {
    /// Shard `shard` of `store`, locked. A lock found taken is counted
    /// (while the store is one pool, see [`super::split`]).
    #[inline]
    pub(super) fn lock(store: &'a Store, shard: &'a Shard) -> Self {
        let state = match shard.state.try_lock() {
            Some(state) => state,
            None => {
                store.note_contention();
                shard.state.lock()
            }
        };
        Self {
            store,
            shard,
            state,
        }
    }

    /// Shard `shard` of `store` if its lock is free now.
    #[inline]
    pub(super) fn try_lock(store: &'a Store, shard: &'a Shard) -> Option<Self> {
        let state = shard.state.try_lock()?;
        Some(Self {
            store,
            shard,
            state,
        })
    }

    /// The shard's position in the store.
    #[inline]
    pub(crate) fn index(&self) -> usize {
        self.shard.index
    }

    /// Unlocks, returning the store's `Arc` if the shard has no live slot
    /// now (drop it after the last use of the store).
    #[inline]
    pub(crate) fn unlock(mut self) -> Keepalive {
        Keepalive(self.state.take_keepalive_if_idle())
    }
}

impl Deref for ShardGuard<'_> {
    type Target = ShardState;
    #[inline(always)]
    fn deref(&self) -> &ShardState {
        &self.state
    }
}

impl DerefMut for ShardGuard<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut ShardState {
        &mut self.state
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        let state = &mut *self.state;
        if state.is_live() && !state.has_keepalive() {
            // Some caller holds the store (its own Arc, or a guard whose
            // shard holds one), so the upgrade succeeds.
            if let Some(store) = self.store.me.upgrade() {
                state.set_keepalive(store);
            }
        }
        debug_assert!(
            std::thread::panicking() || state.is_live() || !state.has_keepalive(),
            "shard {} unlocked with no live slot but still holding its keepalive: \
             the releasing path must call ShardGuard::unlock",
            self.shard.index
        );
        // The hints allocation reads without the lock.
        if let Some(date) = state.next_victim_date() {
            let hint = u64::from(state.has_evictable()) << 32 | u64::from(date);
            // ORDERING: Relaxed; a hint, as below.
            self.shard.victim_hint.store(hint, Ordering::Relaxed);
        }
        let free = state.free_len() as u64;
        let before = self.shard.free_hint.load(Ordering::Relaxed);
        if before != free {
            // ORDERING: Relaxed. Hints only steer which shard an allocation
            // locks first; the locked state decides.
            self.shard.free_hint.store(free, Ordering::Relaxed);
            let bit = 1u64 << self.shard.index;
            if free == 0 {
                self.store.free_mask.fetch_and(!bit, Ordering::Relaxed);
            } else if before == 0 {
                self.store.free_mask.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }
}

/// A walk over slots that may live in different shards: holds at most one
/// shard lock, switching as the walk moves, and collects what the shards it
/// unlocks hand back.
pub(crate) struct ShardCursor<'a> {
    store: &'a Store,
    held: Option<ShardGuard<'a>>,
    keepalive: Keepalive,
}

impl<'a> ShardCursor<'a> {
    /// Nothing locked yet.
    #[inline]
    pub(crate) fn new(store: &'a Store) -> Self {
        Self {
            store,
            held: None,
            keepalive: Keepalive::NONE,
        }
    }

    /// Shard `shard`, locked (unlocking the one held before, if different).
    #[inline(always)]
    pub(crate) fn get(&mut self, shard: usize) -> &mut ShardGuard<'a> {
        if self.held.as_ref().map(ShardGuard::index) != Some(shard) {
            self.unlock();
            self.held = Some(self.store.lock_shard(shard));
        }
        match &mut self.held {
            Some(guard) => guard,
            None => unreachable!("a shard was just locked"),
        }
    }

    /// The shard holding `slot`, locked. While a shard is held the layout
    /// cannot change, so the held one is kept if the slot is in it; a shard
    /// locked here is checked again once locked ([`Store::lock_slot`]).
    #[inline(always)]
    pub(crate) fn get_slot(&mut self, slot: u32) -> &mut ShardGuard<'a> {
        let shard = self.store.shard_of(slot);
        if self.held.as_ref().map(ShardGuard::index) != Some(shard) {
            self.unlock();
            self.held = Some(self.store.lock_slot(slot));
        }
        match &mut self.held {
            Some(guard) => guard,
            None => unreachable!("a shard was just locked"),
        }
    }

    /// Unlocks the held shard, if any.
    #[inline]
    pub(crate) fn unlock(&mut self) {
        if let Some(guard) = self.held.take() {
            self.keepalive.merge(guard.unlock());
        }
    }

    /// Ends the walk: unlocks and returns what the shards handed back.
    #[inline]
    pub(crate) fn finish(mut self) -> Keepalive {
        self.unlock();
        std::mem::replace(&mut self.keepalive, Keepalive::NONE)
    }
}

impl Drop for ShardCursor<'_> {
    fn drop(&mut self) {
        self.unlock();
        if let Some(store) = self.keepalive.0.take() {
            // Dropping it here could free the store under the borrow this
            // cursor was made from; keep it alive instead (a leak).
            debug_assert!(
                std::thread::panicking(),
                "a shard cursor was dropped holding a keepalive: call finish()"
            );
            std::mem::forget(store);
        }
    }
}
