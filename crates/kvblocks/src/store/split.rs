//! Splitting a one-pool store into pool shards, once, when threads contend.
//!
//! Pool shards let threads allocate and release at the same time, but a
//! thread alone pays for them: dating releases, choosing the shard with the
//! oldest victims, switching locks (`BENCHMARKS.md`, "One thread with the
//! default shards"). So a store built to *split on contention* (the default
//! for LRU) starts with every slot in shard 0, where one thread runs exactly
//! the one-pool code, and splits into its shards the first time threads are
//! seen waiting for shard 0's lock. Its reset pool hands slots out in runs
//! of 16 from each future shard in turn
//! ([`ShardState::new_spread`](super::state::ShardState::new_spread)), so
//! the blocks that stay registered from before the split (a workload's
//! shared prompts) are spread over the shards, as in a store split from the
//! start, rather than all in shard 0. How it decides to split:
//!
//! - every shard lock taken while the store is one pool counts how often it
//!   found the lock taken ([`Store::note_contention`]); the count starts
//!   over every [`WINDOW`] allocated slots, so a rare wait (a metrics
//!   scrape) never adds up to a split;
//! - an allocation that sees [`SPLIT_AFTER`] waits in the current window
//!   splits the store before it allocates ([`Store::split`]).
//!
//! The split takes every shard lock, builds each shard's state (reset pool,
//! policy, release dates: the only allocation, once), hands each slot to
//! the shard its number names, and publishes the new layout. Evictable
//! slots are handed over oldest first, dated one tick apart in that order,
//! so the shards' oldest-first eviction continues the one pool's order
//! exactly; active primaries are registered with their new shard's policy,
//! outstanding slots and duplicate copies are only counted. Nothing in the
//! registered set changes, so no event is emitted.
//!
//! A path that reads a slot's shard before locking it may read the layout
//! from before the split: every such path checks the layout again under the
//! lock ([`Store::lock_slot`], [`super::shard::ShardCursor::get_slot`], the
//! registration chunks), where it cannot change any more.

use std::sync::Arc;

use super::shard::ShardGuard;
use super::state::ShardState;
use super::{shard_in, try_vec, OutOfMemory, Store};
use crate::policy::AnyPolicy;
use crate::store::slot::SlotState;
use crate::sync::Ordering;

/// The layout of a store that has not split: `slot >> 32` is 0 for every
/// slot number, so every slot is in shard 0.
pub(crate) const UNSPLIT: u32 = 32;

/// Waits for a shard lock, within one window, that make a store split. Few:
/// a wait costs far more than what a split costs one thread (a wait often
/// means the lock's holder was preempted, and then the other thread waits
/// for a whole time slice), so a store errs towards splitting; yet a thread
/// alone never waits, and a metrics scrape now and then stays under it.
pub(crate) const SPLIT_AFTER: u32 = 8;

/// Allocated slots per contention window (a power of two): the count of
/// waits starts over after each.
pub(crate) const WINDOW: u64 = 1 << 16;

/// How a store splits: the shards' length and a maker of their policies.
pub(crate) struct SplitPlan {
    shard_len: usize,
    make_policy: Box<dyn FnMut(usize) -> AnyPolicy + Send>,
}

impl SplitPlan {
    /// Shards of `shard_len` slots (a power of two; the last one the rest),
    /// each evicted by a policy from `make_policy`.
    pub(crate) fn new(
        shard_len: usize,
        make_policy: Box<dyn FnMut(usize) -> AnyPolicy + Send>,
    ) -> Self {
        debug_assert!(shard_len.is_power_of_two());
        Self {
            shard_len,
            make_policy,
        }
    }

    /// Every shard's state, holding none of its slots yet.
    fn build(&mut self, block_count: usize) -> Result<Vec<ShardState>, OutOfMemory> {
        let mut parts = Vec::new();
        for base in (0..block_count).step_by(self.shard_len) {
            let len = self.shard_len.min(block_count - base);
            let free = try_vec(len, 0u32)?;
            let released = try_vec(len, 0u32)?;
            let policy = (self.make_policy)(len);
            parts.push(ShardState::empty(
                base as u32,
                len as u32,
                free,
                released,
                policy,
            ));
        }
        Ok(parts)
    }
}

impl Store {
    /// A shard lock was found taken: counted while the store is one pool
    /// and able to split.
    #[inline]
    pub(crate) fn note_contention(&self) {
        if self.layout() == UNSPLIT {
            // ORDERING: Relaxed; a heuristic.
            self.contended.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether threads waited often enough in this window to split.
    #[inline(always)]
    pub(crate) fn split_due(&self) -> bool {
        // ORDERING: Relaxed; a heuristic.
        self.contended.load(Ordering::Relaxed) >= SPLIT_AFTER
    }

    /// Starts a new contention window when an allocation took the shard's
    /// allocation count from `before` past a multiple of [`WINDOW`] to `after`.
    #[inline(always)]
    pub(crate) fn age_contention(&self, before: u64, after: u64) {
        if (before ^ after) >= WINDOW && self.contended.load(Ordering::Relaxed) != 0 {
            // ORDERING: Relaxed; a heuristic (a wait counted meanwhile may
            // be lost, which only delays a split).
            self.contended.store(0, Ordering::Relaxed);
        }
    }

    /// Splits a one-pool store into its shards (see the module docs);
    /// `false` if it cannot: it has split already, was not built to, or the
    /// shards' tables cannot be allocated (then it stays one pool for good).
    pub(crate) fn split(self: &Arc<Self>) -> bool {
        let Some(mut plan) = self.plan.lock().take() else {
            return false;
        };
        let mut cores = self.lock_all();
        let evictable = cores[0].state_counts().inactive;
        let built = plan.build(self.block_count).and_then(|parts| {
            let order = try_vec(evictable, 0u32)?;
            Ok((parts, order))
        });
        let Ok((parts, mut order)) = built else {
            // The caller's `Arc` outlives this drop (see `shard`).
            drop(Store::unlock_all(cores));
            return false;
        };
        order.clear();
        let mut parts = parts.into_iter();
        let pool = match parts.next() {
            Some(first) => std::mem::replace(&mut *cores[0], first),
            None => unreachable!("a store has at least one slot"),
        };
        for (core, part) in cores.iter_mut().skip(1).zip(parts) {
            // An empty state, holding no slot and no keepalive.
            drop(std::mem::replace(&mut **core, part));
        }
        let layout = plan.shard_len.trailing_zeros();
        let pool = pool.dismantle(&mut order, self);
        self.hand_out(&mut cores, layout, &order, &pool.free);
        cores[0].counters.add(&pool.counters);
        if let Some(keepalive) = pool.keepalive {
            // Shard 0 keeps it if still live; its unlock returns it if not.
            cores[0].set_keepalive(keepalive);
        }
        // ORDERING: Relaxed; every shard lock is held (see the module docs).
        self.layout.store(layout, Ordering::Relaxed);
        // The caller's `Arc` outlives this drop (see `shard`).
        drop(Store::unlock_all(cores));
        true
    }

    /// Hands every slot of the store to the shard `layout` names for it:
    /// the evictable ones in `order` (oldest first), the reset ones in
    /// `free` (the pool's stack order), then the live ones.
    fn hand_out(&self, cores: &mut [ShardGuard<'_>], layout: u32, order: &[u32], free: &[u32]) {
        let now = self.clock();
        let oldest = now.wrapping_sub(order.len() as u32);
        for (age, &slot) in order.iter().enumerate() {
            let date = oldest.wrapping_add(age as u32);
            cores[shard_in(layout, slot)].adopt_evictable(slot, date, self);
        }
        for &slot in free {
            cores[shard_in(layout, slot)].adopt_free(slot);
        }
        for slot in 0..self.block_count as u32 {
            match self.records.state(slot) {
                SlotState::Outstanding => cores[shard_in(layout, slot)].adopt_outstanding(),
                SlotState::Active => cores[shard_in(layout, slot)].adopt_active(slot, self),
                SlotState::Reset | SlotState::Inactive => {}
            }
        }
    }
}
