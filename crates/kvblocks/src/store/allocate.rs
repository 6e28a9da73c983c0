//! Allocation across pool shards: which shards give how many slots.
//!
//! The contract is the single pool's: all or nothing, the reset pools before
//! any eviction, and evictions in the policy's order. With one shard that is
//! one locked call (and, in a store built to split on contention, the place
//! where the split happens once contention was seen: [`super::split`]). With
//! several, each thread starts at its own rotating
//! shard (so two threads rarely want the same lock) and:
//!
//! 1. takes the whole request from the first shard whose reset pool, by its
//!    lock-free hints (a mask of shards with free slots, and a count per
//!    shard), holds enough;
//! 2. else, if no shard's hint shows a free slot, evicts from the shards
//!    whose next victims are oldest: it locks the oldest one (by the shards'
//!    lock-free victim hints) and, while the locked shards cannot supply the
//!    request, the next oldest whose locks are free (up to
//!    [`EVICTION_SHARDS`]); then it evicts one victim at a time from the
//!    locked shard whose next victim was released longest ago, bringing in
//!    an unlocked shard whose hint shows older victims when its lock is free;
//! 3. else locks every shard (in order) and serves the request exactly:
//!    free slots from every shard first, then evictions, oldest first.
//!
//! Ages come from a clock the store advances once per allocation: a shard
//! dates each slot when it becomes evictable, and publishes the date of its
//! next victim (the policy's [`peek_victim`](crate::EvictionPolicy::peek_victim),
//! or its last victim's when the policy cannot tell) at every unlock. Taking
//! victims oldest first across shards keeps LRU's order over the whole pool,
//! where letting shards take turns cost up to 3 points of hit rate on small
//! pools (`BENCHMARKS.md`, "Pool shards and hit rate").
//!
//! Hints can be stale under concurrency, so "reset pool first" and the
//! eviction order are exact for one thread and best effort across threads;
//! all or nothing is exact always (a request is served only from shards
//! whose locked state can supply it). Evicted slots still have index
//! entries: the caller removes them ([`Store::forget_evicted`]) before
//! handing the slots out.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::events::Removals;
use super::shard::ShardGuard;
use super::Store;
use crate::SequenceHash;

/// Locked shards (a `None` is a place not used).
type Held<'a> = [Option<ShardGuard<'a>>];

/// Takes up to `count` reset slots from the locked shards, in order;
/// returns how many.
fn take_free_from(
    held: &mut Held<'_>,
    count: usize,
    store: &Store,
    mut take: impl FnMut(u32),
) -> usize {
    let mut taken = 0;
    for core in held.iter_mut().flatten() {
        taken += core.take_free(count - taken, store, &mut take);
    }
    taken
}

/// The shard this thread starts its next allocation at: a per-thread cursor
/// that advances by one per allocation, first set from the thread's arrival
/// order so that concurrent threads start far apart.
fn next_start(shards: usize) -> usize {
    static THREADS: AtomicUsize = AtomicUsize::new(0);
    #[cfg(not(loom))]
    crate::sync::thread_local! {
        static CURSOR: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    // (loom's macro takes no `const` initialiser.)
    #[cfg(loom)]
    crate::sync::thread_local! {
        static CURSOR: Cell<usize> = Cell::new(usize::MAX);
    }
    CURSOR.with(|cursor| {
        let mut next = cursor.get();
        if next == usize::MAX {
            // Thread k starts at k times the golden ratio around the ring.
            // (Under the model checker every thread starts at shard 0, so a
            // failing schedule replays and threads meet on the same locks.)
            let arrival = if cfg!(any(shuttle, loom)) {
                0
            } else {
                // ORDERING: Relaxed; only spreads threads' starting shards.
                THREADS.fetch_add(1, Ordering::Relaxed) as u64
            };
            let turn = arrival.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            next = ((turn * shards as u64) >> 32) as usize;
        }
        cursor.set(next.wrapping_add(1));
        next % shards
    })
}

/// Most shards an eviction locks before it falls back to locking them all.
const EVICTION_SHARDS: usize = 4;

/// The shards' victim hints, read once per allocation: how long ago each
/// shard's next victim was released, for the shards that had one.
struct VictimAges {
    /// The clock the ages count back from.
    now: u32,
    ages: [u32; super::MAX_POOL_SHARDS],
    /// Shards with an evictable slot at their last unlock, as bits.
    present: u64,
}

impl VictimAges {
    /// Every shard's hint as of now.
    #[inline]
    fn read(store: &Store, now: u32) -> Self {
        let mut ages = [0; super::MAX_POOL_SHARDS];
        let mut present = 0;
        for (k, age) in ages.iter_mut().enumerate().take(store.shard_count()) {
            if let Some(hint) = store.victim_hint(k, now) {
                *age = hint;
                present |= 1 << k;
            }
        }
        Self { now, ages, present }
    }

    /// The shard with the oldest next victim among those not in `excluded`
    /// (ties to the higher index), with its age.
    #[inline]
    fn oldest(&self, excluded: u64) -> Option<(u32, usize)> {
        let mut bits = self.present & !excluded;
        let mut best = None;
        while bits != 0 {
            let k = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if best.map_or(true, |(age, _)| self.ages[k] >= age) {
                best = Some((self.ages[k], k));
            }
        }
        best
    }
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
        if self.shard_count() == 1 && !(self.split_due() && self.split()) {
            let mut core = self.lock_shard(0);
            // Unless the store split while this waited for the lock.
            if self.shard_count() == 1 {
                if core.available() < count {
                    return None;
                }
                let before = core.counters.allocations;
                let from_reset = core.take_free(count, self, &mut take);
                if count > from_reset {
                    if self.events.enabled() {
                        let mut removals = Removals::new(self);
                        core.evict(count - from_reset, self, |slot| {
                            removals.add_slot(slot);
                            take(slot);
                        });
                        removals.push_all();
                    } else {
                        // No removal to report: no buffer to fill (a
                        // one-block allocation would pay more for its setup
                        // than for the eviction).
                        core.evict(count - from_reset, self, &mut take);
                    }
                }
                self.age_contention(before, core.counters.allocations);
                return Some(from_reset);
            }
        }
        let shards = self.shard_count();
        // The clock that dates releases (see `evict_oldest_first`).
        self.tick();
        let start = next_start(shards);
        // 1. One shard's reset pool holds the whole request.
        let free_mask = self.free_mask();
        if free_mask != 0 {
            for shard in (0..shards).map(|i| (start + i) % shards) {
                if free_mask & (1 << shard) != 0 && self.free_hint(shard) >= count {
                    let mut core = self.lock_shard(shard);
                    if core.free_len() >= count {
                        core.take_free(count, self, &mut take);
                        return Some(count);
                    }
                }
            }
        } else {
            // 2. No free slot anywhere: evict from the few shards whose
            // victims are oldest, oldest first.
            let hints = VictimAges::read(self, self.clock());
            if let Some(mut held) = self.lock_oldest_shards(count, &hints) {
                let from_reset = take_free_from(&mut held, count, self, &mut take);
                self.evict_oldest_first(&mut held, count - from_reset, Some(&hints), &mut take);
                return Some(from_reset);
            }
        }
        // 3. Exactly, with every shard locked.
        let mut cores = self.lock_all();
        if cores.iter().map(|c| c.available()).sum::<usize>() < count {
            return None;
        }
        cores.rotate_left(start);
        let mut held: Vec<_> = cores.into_iter().map(Some).collect();
        let from_reset = take_free_from(&mut held, count, self, &mut take);
        self.evict_oldest_first(&mut held, count - from_reset, None, &mut take);
        // The caller's `Arc` outlives this drop (see `shard`).
        drop(Store::unlock_all(held.into_iter().flatten()));
        Some(from_reset)
    }

    /// Locks the shard whose next victim is oldest (by the lock-free
    /// `hints`) and, while the locked shards cannot serve `count` slots, the
    /// next oldest ones whose locks are free, up to [`EVICTION_SHARDS`].
    /// `None` (nothing locked) if that does not reach `count`.
    fn lock_oldest_shards(
        &self,
        count: usize,
        hints: &VictimAges,
    ) -> Option<[Option<ShardGuard<'_>>; EVICTION_SHARDS]> {
        let mut held = [None, None, None, None];
        let mut considered = 0u64;
        let mut available = 0;
        for place in 0..EVICTION_SHARDS {
            // The oldest hint not considered yet.
            let Some((_, shard)) = hints.oldest(considered) else {
                break;
            };
            considered |= 1 << shard;
            let core = if place == 0 {
                self.lock_shard(shard)
            } else {
                match self.try_lock_shard(shard) {
                    Some(core) => core,
                    None => continue,
                }
            };
            available += core.available();
            held[place] = Some(core);
            if available >= count {
                return Some(held);
            }
        }
        // Dropping the guards unlocks them: nothing was taken.
        None
    }

    /// Evicts `count` slots from the locked shards `held` (which can supply
    /// them), each time from the shard whose next victim was released
    /// longest ago: one order over the shards, as a single pool's policy
    /// would evict. While `held` has an empty place, a shard not held whose
    /// hint (in `hints`) shows older victims than any held shard's is
    /// locked too, if its lock is free.
    fn evict_oldest_first<'a>(
        &'a self,
        held: &mut Held<'a>,
        count: usize,
        hints: Option<&VictimAges>,
        mut take: impl FnMut(u32),
    ) {
        let now = hints.map_or_else(|| self.clock(), |hints| hints.now);
        let age = |core: &Option<ShardGuard<'_>>| core.as_ref()?.next_victim_age(now);
        let mut ages = [None; super::MAX_POOL_SHARDS];
        let mut held_mask = 0u64;
        for (i, core) in held.iter().enumerate() {
            ages[i] = age(core);
            if let Some(core) = core {
                held_mask |= 1 << core.index();
            }
        }
        // The oldest shard outside `held`, by its hint.
        let outside = |mask: u64| hints.and_then(|hints| hints.oldest(mask));
        let mut best_outside = if held.iter().any(Option::is_none) {
            outside(held_mask)
        } else {
            None
        };
        let mut removals = Removals::new(self);
        let mut evicted = 0;
        while evicted < count {
            let oldest = (0..held.len())
                .filter_map(|i| ages[i].map(|a| (a, i)))
                .max();
            let place = held.iter().position(Option::is_none);
            if let (Some((out_age, shard)), Some(place)) = (best_outside, place) {
                if oldest.map_or(true, |(held_age, _)| out_age > held_age) {
                    // Bring the older shard in (if its lock is free), then
                    // look again; each shard is considered once.
                    held_mask |= 1 << shard;
                    if let Some(core) = self.try_lock_shard(shard) {
                        ages[place] = core.next_victim_age(now);
                        held[place] = Some(core);
                    }
                    best_outside = if held.iter().any(Option::is_none) {
                        outside(held_mask)
                    } else {
                        None
                    };
                    continue;
                }
            }
            let Some((_, i)) = oldest else {
                debug_assert!(false, "the locked shards held too few evictable slots");
                return;
            };
            // The oldest shard gives victims until its next one is younger
            // than the best of the rest (held, or outside and still able to
            // be brought in): one comparison per run of victims, not per
            // victim.
            let held_rival = (0..held.len())
                .filter(|&k| k != i)
                .filter_map(|k| ages[k])
                .max();
            let outside_rival = best_outside
                .filter(|_| place.is_some())
                .map(|(out_age, _)| out_age);
            let rival = held_rival.max(outside_rival);
            if let Some(core) = held[i].as_mut() {
                evicted += core.evict_while_older(count - evicted, now, rival, self, |slot| {
                    removals.add_slot(slot);
                    take(slot);
                });
            }
            ages[i] = age(&held[i]);
        }
        // Before any of the shards is unlocked.
        removals.push_all();
    }

    /// Second half of an allocation: removes the index entries of the
    /// slots it evicted (reporting their hashes to `evicted`), before the
    /// slots are handed out, then tells the registry of the hashes it must
    /// hear of. Takes the index writer's lock, no shard lock.
    pub(crate) fn forget_evicted(
        self: &Arc<Self>,
        slots: impl Iterator<Item = u32> + Clone,
        mut evicted: impl FnMut(SequenceHash),
    ) {
        if slots.clone().next().is_none() {
            return;
        }
        for slot in slots.clone() {
            self.index.warm(self.records.hash(slot));
        }
        let mut noted = false;
        let mut writer = self.writer.lock();
        for slot in slots.clone() {
            let hash = self.records.hash(slot);
            self.index.remove(&mut writer, hash, slot);
            // The slot is this allocation's now: nobody else reads its flags.
            noted |= self.records.flags(slot) & super::slot::flag::NOTED != 0;
            evicted(hash);
        }
        self.index.settle(&mut writer);
        drop(writer);
        if noted {
            for slot in slots {
                if self.records.take_flags(slot) & super::slot::flag::NOTED != 0 {
                    self.registry.presence_lost(self.records.hash(slot));
                }
            }
        }
    }
}
