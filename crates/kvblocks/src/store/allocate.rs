//! Allocation across pool shards: which shards give how many slots.
//!
//! The contract is the single pool's: all or nothing, and the reset pools
//! before any eviction. With one shard that is one locked call. With several,
//! each thread starts at its own rotating shard (so two threads rarely want
//! the same lock) and:
//!
//! 1. takes the whole request from the first shard whose reset pool, by its
//!    lock-free hints (a mask of shards with free slots, and a count per
//!    shard), holds enough;
//! 2. else, if no shard's hint shows a free slot, evicts the whole request
//!    from the first shard, from its starting one on, whose lock is free and
//!    which can supply it (waiting for the starting shard only if every lock
//!    is taken): shards take turns, so the policy's order holds within each
//!    shard and the shards age alike, and two threads step around each other
//!    instead of queueing on one lock;
//! 3. else locks every shard (in order) and serves the request exactly:
//!    free slots from every shard first, then evictions.
//!
//! Hints can be stale under concurrency, so "reset pool first" is exact for
//! one thread and best effort across threads. Evicted slots still have index
//! entries: the caller removes them ([`Store::forget_evicted`]) before
//! handing the slots out.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::Store;
use crate::SequenceHash;

/// The shard this thread starts its next allocation at: a per-thread cursor
/// that advances by one per allocation, first set from the thread's arrival
/// order so that concurrent threads start far apart.
fn next_start(shards: usize) -> usize {
    static THREADS: AtomicUsize = AtomicUsize::new(0);
    crate::sync::thread_local! {
        static CURSOR: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    CURSOR.with(|cursor| {
        let mut next = cursor.get();
        if next == usize::MAX {
            // Thread k starts at k times the golden ratio around the ring.
            // (Under the model checker every thread starts at shard 0, so a
            // failing schedule replays and threads meet on the same locks.)
            let arrival = if cfg!(shuttle) {
                0
            } else {
                THREADS.fetch_add(1, Ordering::Relaxed) as u64
            };
            let turn = arrival.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            next = ((turn * shards as u64) >> 32) as usize;
        }
        cursor.set(next.wrapping_add(1));
        next % shards
    })
}

impl Store {
    /// Allocates `count` slots, all or nothing, handing each to `take`: the
    /// ones from reset pools first, then the evicted ones. Returns how many
    /// came from reset pools, or `None` (nothing changed) if fewer are
    /// available.
    pub(crate) fn allocate_slots(
        self: &Arc<Self>,
        count: usize,
        mut take: impl FnMut(u32),
    ) -> Option<usize> {
        let shards = self.shard_count();
        if shards == 1 {
            let mut core = self.lock_shard(0);
            if core.available() < count {
                return None;
            }
            let from_reset = core.take_free(count, self, &mut take);
            core.evict(count - from_reset, self, &mut take);
            core.keep_alive(self);
            return Some(from_reset);
        }
        let start = next_start(shards);
        let order = (0..shards).map(|i| (start + i) % shards);
        // 1. One shard's reset pool holds the whole request.
        let free_mask = self.free_mask();
        if free_mask != 0 {
            for shard in order.clone() {
                if free_mask & (1 << shard) != 0 && self.free_hint(shard) >= count {
                    let mut core = self.lock_shard(shard);
                    if core.free_len() >= count {
                        core.take_free(count, self, &mut take);
                        core.keep_alive(self);
                        return Some(count);
                    }
                }
            }
        } else {
            // 2. No free slot anywhere: evict from the first free-to-lock
            // shard that can supply the request.
            let unlocked = order.clone().find_map(|shard| self.try_lock_shard(shard));
            let mut core = unlocked.unwrap_or_else(|| self.lock_shard(start));
            if core.free_len() == 0 && core.available() >= count {
                core.evict(count, self, &mut take);
                core.keep_alive(self);
                return Some(0);
            }
        }
        // 3. Exactly, with every shard locked.
        let mut cores = self.lock_all();
        if cores.iter().map(|c| c.available()).sum::<usize>() < count {
            return None;
        }
        let mut from_reset = 0;
        for shard in order.clone() {
            from_reset += cores[shard].take_free(count - from_reset, self, &mut take);
        }
        let mut taken = from_reset;
        for shard in order {
            taken += cores[shard].evict(count - taken, self, &mut take);
        }
        for core in &mut cores {
            core.keep_alive(self);
        }
        Some(from_reset)
    }

    /// Second half of an allocation: removes the index entries of the
    /// slots it evicted (reporting their hashes to `evicted`), before the
    /// slots are handed out. Takes the index writer's lock, no shard lock.
    pub(crate) fn forget_evicted(
        &self,
        slots: impl Iterator<Item = u32> + Clone,
        mut evicted: impl FnMut(SequenceHash),
    ) {
        if slots.clone().next().is_none() {
            return;
        }
        for slot in slots.clone() {
            self.index.warm(self.records.hash(slot));
        }
        let mut writer = self.writer.lock();
        for slot in slots {
            let hash = self.records.hash(slot);
            self.index.remove(&mut writer, hash, slot);
            evicted(hash);
        }
        self.index.settle(&mut writer);
    }
}
