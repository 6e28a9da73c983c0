//! The locked state of one pool shard: its reset pool, its eviction policy,
//! its state tallies and the states of its slots, moved together so they
//! always agree.
//!
//! Every method here runs under its shard's lock (see [`super::shard`]),
//! touches only that shard's slots, and does a bounded amount of work per
//! slot without allocating. The records, the index and the handle counts
//! live in the [`Store`] itself, because lock-free matches read them.
//!
//! Index writes need the index writer's lock as well, taken after the shard
//! lock: registration holds both, while an allocation evicts here and removes
//! the victims' entries after unlocking, so the second half of an eviction
//! overlaps other threads' work. Until then a victim's entry is *stale* (it
//! names a slot that is no longer registered); every locked lookup checks the
//! slot it finds ([`is_registered_primary`]), and registration takes a stale
//! entry over. Nothing here creates or drops guards; callers turn the slot
//! numbers it hands out into guards.
//!
//! # The policy may panic
//!
//! A custom [`EvictionPolicy`] is user code. Every method here calls the
//! policy *before* it changes any state of its own for that slot, or after
//! it has finished, and counts a slot as live *before* handing it out. So a
//! hook that panics leaves the tallies agreeing with every guard that exists:
//! the worst it can do is strand the slots it was called for (a leak), never
//! make a live slot look free. A policy that breaks its contract (a victim
//! that is not evictable, no victim while some are) is caught here and
//! reported by a panic, before anything changes.

use std::sync::Arc;

use super::index::IndexWriter;
use super::slot::{flag, SlotState, NO_SLOT};
use super::Store;
use crate::policy::{AnyPolicy, EvictionPolicy};
use crate::{BlockDuplicationPolicy, SequenceHash};

/// Event counters kept under a shard lock (plain integers: the lock orders them).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) allocations: u64,
    pub(crate) allocations_from_reset: u64,
    pub(crate) evictions: u64,
    pub(crate) registrations: u64,
    pub(crate) duplicates: u64,
    pub(crate) dedups: u64,
    pub(crate) staged_exits: u64,
}

impl Counters {
    /// Field-wise sum (for a snapshot over shards).
    pub(crate) fn add(&mut self, other: &Counters) {
        self.allocations += other.allocations;
        self.allocations_from_reset += other.allocations_from_reset;
        self.evictions += other.evictions;
        self.registrations += other.registrations;
        self.duplicates += other.duplicates;
        self.dedups += other.dedups;
        self.staged_exits += other.staged_exits;
    }
}

/// How many slots sit in each state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateCounts {
    pub(crate) reset: usize,
    pub(crate) outstanding: usize,
    pub(crate) active: usize,
    pub(crate) inactive: usize,
}

impl StateCounts {
    /// Field-wise sum (for a snapshot over shards).
    pub(crate) fn add(&mut self, other: &StateCounts) {
        self.reset += other.reset;
        self.outstanding += other.outstanding;
        self.active += other.active;
        self.inactive += other.inactive;
    }
}

/// The outcome of registering one staged slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Registered {
    /// The slot the caller's new handle names.
    pub(crate) slot: u32,
    /// That slot's generation.
    pub(crate) generation: u32,
}

/// What the last release of a slot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastRelease {
    /// Nothing: the slot was pinned again meanwhile, or a primary was cached
    /// (now inactive) as usual.
    Kept,
    /// A duplicate copy went back to reset; the caller releases the pin it
    /// held on this primary (which may live in another shard).
    Duplicate { primary: u32 },
    /// A primary with evict-on-release set left its registration. If its
    /// hash had a registration handle, the registry must hear of it.
    Discarded { noted: Option<SequenceHash> },
}

/// What a one-pool shard held besides its slots, once taken apart by
/// [`ShardState::dismantle`].
pub(crate) struct Dismantled {
    /// Its reset pool, in stack order.
    pub(crate) free: Vec<u32>,
    pub(crate) counters: Counters,
    /// The store's `Arc`, if the shard held it.
    pub(crate) keepalive: Option<Arc<Store>>,
}

/// One shard: reset pool, policy and tallies for slots `base..base + len`.
pub(crate) struct ShardState {
    /// First slot of the shard; the policy numbers slots from here.
    base: u32,
    /// Slots in the shard.
    len: u32,
    /// The reset pool, used as a stack.
    free: Vec<u32>,
    policy: AnyPolicy,
    /// Slots held by `MutableBlock` / `CompleteBlock` guards.
    outstanding: usize,
    /// Registered slots with at least one handle (or being released).
    active: usize,
    /// Registered slots with no handle: the policy's evictable set. Kept
    /// here too, so the policy's `len()` is checked, not trusted.
    inactive: usize,
    /// The store's own `Arc`, held while any slot of this shard is live
    /// (outstanding or active); see [`super::shard`].
    keepalive: Option<Arc<Store>>,
    /// With several shards: each slot's release date (the store's clock when
    /// it last became evictable). Empty with one shard.
    released: Vec<u32>,
    /// With several shards: the release date of the last victim, standing in
    /// for the next one's when the policy cannot tell which that is.
    frontier: u32,
    pub(crate) counters: Counters,
}

impl ShardState {
    /// A shard of `len` free slots from `base`, evicted by `policy` (which
    /// numbers them `0..len`), its reset pool taken from `free`.
    pub(crate) fn new(
        base: u32,
        len: u32,
        free: Vec<u32>,
        released: Vec<u32>,
        policy: AnyPolicy,
    ) -> Self {
        let mut shard = Self::empty(base, len, free, released, policy);
        // Reversed so the first allocation hands out base, base + 1, ...
        shard.free.extend((base..base + len).rev());
        shard
    }

    /// A one-pool shard of all `len` slots of a store that will split into
    /// shards of `shard_len` slots: its reset pool hands out runs of
    /// [`SPREAD_RUN`] slots from each future shard in turn (0..16 from the
    /// first, then 0..16 from the second, ...), so the blocks registered
    /// before a split (a workload's shared prompts, which stay registered)
    /// end up spread over the shards as they are when the store is split
    /// from the start, not all in the first shard, whose lock every thread
    /// would then take to reuse them.
    pub(crate) fn new_spread(len: u32, shard_len: u32, free: Vec<u32>, policy: AnyPolicy) -> Self {
        let mut shard = Self::empty(0, len, free, Vec::new(), policy);
        push_spread(&mut shard.free, len, shard_len);
        shard
    }

    /// A shard of `len` slots from `base` that holds none of them yet: a
    /// split hands them over ([`super::split`]). `free` (its capacity the
    /// reset pool's) and `released` as in [`new`](Self::new).
    pub(crate) fn empty(
        base: u32,
        len: u32,
        mut free: Vec<u32>,
        released: Vec<u32>,
        policy: AnyPolicy,
    ) -> Self {
        free.clear();
        Self {
            base,
            len,
            free,
            policy,
            outstanding: 0,
            active: 0,
            inactive: 0,
            keepalive: None,
            released,
            frontier: 0,
            counters: Counters::default(),
        }
    }

    /// Takes a one-pool shard apart for a split: appends its evictable
    /// slots to `order` in its policy's eviction order (oldest first) and
    /// returns the rest of what it held.
    pub(crate) fn dismantle(mut self, order: &mut Vec<u32>, store: &Store) -> Dismantled {
        while order.len() < self.inactive {
            let slot = self.next_victim(store);
            order.push(slot);
        }
        Dismantled {
            free: std::mem::take(&mut self.free),
            counters: self.counters,
            keepalive: self.keepalive.take(),
        }
    }

    /// A split hands this shard one of its reset slots.
    pub(crate) fn adopt_free(&mut self, slot: u32) {
        debug_assert!(self.local(slot) < self.len);
        self.free.push(slot);
    }

    /// A split hands this shard one of its outstanding slots.
    pub(crate) fn adopt_outstanding(&mut self) {
        self.outstanding += 1;
    }

    /// A split hands this shard one of its active slots (a primary, which
    /// its policy now tracks, or a duplicate copy).
    pub(crate) fn adopt_active(&mut self, slot: u32, store: &Store) {
        if store.records.is_primary(slot) {
            self.policy
                .on_register(self.local(slot), store.records.hash(slot));
        }
        self.active += 1;
    }

    /// A split hands this shard one of its evictable slots, released at
    /// `date`; slots come oldest first, so the policy evicts them in that
    /// order.
    pub(crate) fn adopt_evictable(&mut self, slot: u32, date: u32, store: &Store) {
        let local = self.local(slot);
        self.policy.on_register(local, store.records.hash(slot));
        self.policy.on_release(local);
        if self.dated() {
            self.released[local as usize] = date;
        }
        self.inactive += 1;
    }

    /// Whether slots are dated (the store has several shards).
    #[inline(always)]
    fn dated(&self) -> bool {
        !self.released.is_empty()
    }

    /// Whether any slot is evictable.
    #[inline]
    pub(crate) fn has_evictable(&self) -> bool {
        self.inactive > 0
    }

    /// Whether any slot is registered (active or inactive).
    pub(crate) fn has_registered(&self) -> bool {
        self.active + self.inactive > 0
    }

    /// The release date of the slot this shard would evict next (by the
    /// policy's [`peek_victim`](EvictionPolicy::peek_victim), else the last
    /// victim's date); `None` if slots are not dated.
    #[inline]
    pub(crate) fn next_victim_date(&self) -> Option<u32> {
        if !self.dated() {
            return None;
        }
        Some(match self.policy.peek_victim() {
            Some(local) if (local as usize) < self.released.len() => self.released[local as usize],
            _ => self.frontier,
        })
    }

    /// How many ticks before `now` the next victim was released; `None` if
    /// nothing is evictable.
    #[inline]
    pub(crate) fn next_victim_age(&self, now: u32) -> Option<u32> {
        if self.inactive == 0 {
            return None;
        }
        Some(now.wrapping_sub(self.next_victim_date().unwrap_or(now)))
    }

    /// The policy's number for `slot`.
    #[inline(always)]
    fn local(&self, slot: u32) -> u32 {
        slot - self.base
    }

    /// Whether any slot of the shard is live (outstanding or active).
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.outstanding + self.active > 0
    }

    /// Whether the shard holds the store's `Arc`.
    #[inline]
    pub(crate) fn has_keepalive(&self) -> bool {
        self.keepalive.is_some()
    }

    /// Gives the shard the store's `Arc` (see [`super::shard`]).
    #[inline]
    pub(crate) fn set_keepalive(&mut self, store: Arc<Store>) {
        self.keepalive = Some(store);
    }

    /// The keepalive, once no slot is live; drop it after the last use of
    /// the store.
    #[inline]
    pub(crate) fn take_keepalive_if_idle(&mut self) -> Option<Arc<Store>> {
        if self.is_live() {
            None
        } else {
            self.keepalive.take()
        }
    }

    /// Slots in each state.
    pub(crate) fn state_counts(&self) -> StateCounts {
        StateCounts {
            reset: self.free.len(),
            outstanding: self.outstanding,
            active: self.active,
            inactive: self.inactive,
        }
    }

    /// Slots an allocation could take from this shard now (reset + inactive).
    #[inline]
    pub(crate) fn available(&self) -> usize {
        self.free.len() + self.inactive
    }

    /// Slots in this shard's reset pool.
    #[inline]
    pub(crate) fn free_len(&self) -> usize {
        self.free.len()
    }

    /// The policy's name.
    pub(crate) fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// Whether the policy wants to hear of every hit.
    pub(crate) fn policy_observes_hits(&self) -> bool {
        self.policy.observes_hits()
    }

    /// Hands up to `max` reset slots to `take`; returns how many.
    pub(crate) fn take_free(
        &mut self,
        max: usize,
        store: &Store,
        mut take: impl FnMut(u32),
    ) -> usize {
        let count = max.min(self.free.len());
        for _ in 0..count {
            if let Some(slot) = self.free.pop() {
                store.records.set_state(slot, SlotState::Outstanding);
                self.outstanding += 1;
                self.counters.allocations += 1;
                self.counters.allocations_from_reset += 1;
                take(slot);
            }
        }
        count
    }

    /// Evicts up to `max` inactive slots and hands them to `take`; returns
    /// how many. Their index entries are stale until the caller removes them
    /// ([`Store::forget_evicted`]), which it must do before handing them out.
    ///
    /// # Panics
    ///
    /// If the policy breaks its contract: a victim that is not one of this
    /// shard's evictable slots, or no victim while some are evictable.
    #[inline]
    pub(crate) fn evict(&mut self, max: usize, store: &Store, take: impl FnMut(u32)) -> usize {
        self.evict_until(max, store, take, |_| false)
    }

    /// Evicts up to `max` slots, as [`evict`](Self::evict) does, while the
    /// next victim was released at least `rival` ticks before `now` (`None`:
    /// no rival, evict `max`); returns how many. The first victim is taken
    /// whatever its age: the caller chose this shard as the oldest.
    #[inline]
    pub(crate) fn evict_while_older(
        &mut self,
        max: usize,
        now: u32,
        rival: Option<u32>,
        store: &Store,
        take: impl FnMut(u32),
    ) -> usize {
        match rival {
            None => self.evict(max, store, take),
            Some(rival) => self.evict_until(max, store, take, |shard| {
                shard.next_victim_age(now).map_or(true, |age| age < rival)
            }),
        }
    }

    /// The eviction loop: up to `max` victims, asking `stop` before each one
    /// after the first whether to end there. One loop for both callers, so a
    /// run of victims costs no call per victim.
    #[inline(always)]
    fn evict_until(
        &mut self,
        max: usize,
        store: &Store,
        mut take: impl FnMut(u32),
        mut stop: impl FnMut(&Self) -> bool,
    ) -> usize {
        let mut count = 0;
        while count < max && self.inactive > 0 {
            if count > 0 && stop(self) {
                break;
            }
            let slot = self.next_victim(store);
            let hash = store.records.hash(slot);
            self.unregister(slot, store);
            if self.dated() {
                self.frontier = self.released[self.local(slot) as usize];
            }
            store.records.set_state(slot, SlotState::Outstanding);
            self.outstanding += 1;
            self.counters.allocations += 1;
            take(slot);
            count += 1;
            // Last: the slot is counted and handed out whatever this does.
            self.policy.on_forget(self.local(slot), hash);
        }
        count
    }

    /// The policy's next victim, checked against the contract. The policy no
    /// longer tracks it; nothing else has changed yet.
    #[inline]
    fn next_victim(&mut self, store: &Store) -> u32 {
        let Some(local) = self.policy.evict() else {
            panic!(
                "eviction policy {:?} returned no victim while {} slots are evictable \
                 (EvictionPolicy::evict must return Some while len() > 0)",
                self.policy.name(),
                self.inactive
            );
        };
        let slot = self.base.wrapping_add(local);
        assert!(
            local < self.len && store.records.state(slot) == SlotState::Inactive,
            "eviction policy {:?} returned slot {local}, which is not evictable \
             (EvictionPolicy::evict must return a slot released and not reacquired since)",
            self.policy.name()
        );
        slot
    }

    /// An inactive slot leaves its registration: it is no longer evictable
    /// and its next generation starts (its index entry is now stale). The
    /// caller gives it a new state and removes the entry.
    #[inline]
    fn unregister(&mut self, slot: u32, store: &Store) {
        store.refs.next_generation(slot);
        self.inactive -= 1;
        self.counters.evictions += 1;
    }

    /// An outstanding slot (mutable or staged guard dropped) goes back to reset.
    pub(crate) fn release_outstanding(&mut self, slot: u32, was_staged: bool, store: &Store) {
        debug_assert_eq!(store.records.state(slot), SlotState::Outstanding);
        store.records.set_state(slot, SlotState::Reset);
        self.free.push(slot);
        self.outstanding -= 1;
        self.counters.staged_exits += u64::from(was_staged);
    }

    /// Pins a resident primary of this shard for one more handle,
    /// resurrecting it if inactive; `touch` tells the policy of the use.
    /// Returns the slot's generation.
    #[inline]
    pub(crate) fn pin_primary(&mut self, slot: u32, touch: bool, store: &Store) -> u32 {
        let local = self.local(slot);
        if touch {
            self.policy.on_hit(local);
        }
        if store.records.state(slot) == SlotState::Inactive {
            self.policy.on_reacquire(local);
            store.records.set_state(slot, SlotState::Active);
            self.inactive -= 1;
            self.active += 1;
        }
        store.refs.increment(slot)
    }

    /// Pins `slot` if it is this shard's registered primary of `hash`;
    /// its generation, else `None`.
    #[inline]
    pub(crate) fn pin_if_primary_of(
        &mut self,
        slot: u32,
        hash: SequenceHash,
        touch: bool,
        store: &Store,
    ) -> Option<u32> {
        is_registered_primary(slot, hash, store).then(|| self.pin_primary(slot, touch, store))
    }

    /// Re-pins a slot of this shard a weak handle names, if it still holds
    /// `hash` at `generation`.
    pub(crate) fn upgrade_same(
        &mut self,
        slot: u32,
        generation: u32,
        hash: SequenceHash,
        store: &Store,
    ) -> Option<u32> {
        let records = &store.records;
        let same = store.refs.generation(slot) == generation
            && matches!(records.state(slot), SlotState::Active | SlotState::Inactive)
            && records.hash(slot) == hash;
        if !same {
            return None;
        }
        Some(if records.is_primary(slot) {
            self.pin_primary(slot, true, store)
        } else {
            store.refs.increment(slot)
        })
    }

    /// Makes a staged slot of this shard the registered primary of `hash`
    /// (its index entry is already in place).
    pub(crate) fn finish_primary(
        &mut self,
        slot: u32,
        hash: SequenceHash,
        store: &Store,
    ) -> Registered {
        self.policy.on_register(self.local(slot), hash);
        self.register_common(slot, NO_SLOT, store);
        // Under this lock, after the index entry went in: see
        // `crate::registry` for why this look at the filter is enough.
        let mut flags = store.initial_flags;
        if store.registry.filter.may_hold(hash) {
            flags |= flag::NOTED;
        }
        store.records.reset_flags(slot, flags);
        Registered {
            slot,
            generation: store.refs.increment(slot),
        }
    }

    /// Settles a staged slot of this shard whose hash already has a primary
    /// (which the caller has pinned once, with `primary_generation`): under
    /// `Reject` the slot goes back to reset and the caller's handle names the
    /// primary; under `Allow` the slot becomes a duplicate copy that keeps
    /// the pin on its primary.
    pub(crate) fn finish_duplicate(
        &mut self,
        slot: u32,
        primary: u32,
        primary_generation: u32,
        duplication: BlockDuplicationPolicy,
        store: &Store,
    ) -> Registered {
        match duplication {
            BlockDuplicationPolicy::Reject => {
                debug_assert_eq!(store.records.state(slot), SlotState::Outstanding);
                self.outstanding -= 1;
                self.counters.staged_exits += 1;
                self.counters.registrations += 1;
                self.counters.dedups += 1;
                store.records.set_state(slot, SlotState::Reset);
                self.free.push(slot);
                Registered {
                    slot: primary,
                    generation: primary_generation,
                }
            }
            BlockDuplicationPolicy::Allow => {
                // The copy pins its primary, so a live duplicate always has a
                // resident primary to be matched instead of it.
                self.register_common(slot, primary, store);
                self.counters.duplicates += 1;
                Registered {
                    slot,
                    generation: store.refs.increment(slot),
                }
            }
        }
    }

    /// Outstanding -> active, as a primary (`duplicate_of == NO_SLOT`) or a copy.
    fn register_common(&mut self, slot: u32, duplicate_of: u32, store: &Store) {
        let records = &store.records;
        debug_assert_eq!(records.state(slot), SlotState::Outstanding);
        self.outstanding -= 1;
        self.counters.staged_exits += 1;
        self.counters.registrations += 1;
        records.set_duplicate_of(slot, duplicate_of);
        records.set_state(slot, SlotState::Active);
        self.active += 1;
    }

    /// The last handle on `slot` was released: if nothing pinned it again
    /// since, a primary becomes inactive (or, with evict-on-release set,
    /// leaves its registration) and a duplicate returns to reset.
    #[must_use]
    #[inline(always)]
    pub(crate) fn release_if_unused(&mut self, slot: u32, store: &Store) -> LastRelease {
        let records = &store.records;
        if records.state(slot) != SlotState::Active || store.refs.count(slot) != 0 {
            return LastRelease::Kept;
        }
        let primary = records.duplicate_of(slot);
        if primary != NO_SLOT {
            records.set_state(slot, SlotState::Reset);
            records.set_duplicate_of(slot, NO_SLOT);
            store.refs.next_generation(slot);
            self.active -= 1;
            self.free.push(slot);
            return LastRelease::Duplicate { primary };
        }
        let local = self.local(slot);
        if records.flags(slot) & flag::EVICT_ON_RELEASE != 0 {
            let hash = records.hash(slot);
            self.policy.on_discard(local, hash);
            // The entry goes before the slot is free again: a later owner
            // registering the same hash in this slot must not lose its entry
            // to a late removal. The removal is reported before the writer's
            // lock is released: a registrar in another shard can file the
            // hash as soon as it gets that lock, and its store must follow
            // this removal in the stream.
            let mut writer = store.writer.lock();
            store.index.remove(&mut writer, hash, slot);
            store.index.settle(&mut writer);
            store.events.removed(&[hash]);
            drop(writer);
            store.refs.next_generation(slot);
            let noted = records.take_flags(slot) & flag::NOTED != 0;
            records.set_state(slot, SlotState::Reset);
            self.active -= 1;
            self.free.push(slot);
            self.counters.evictions += 1;
            return LastRelease::Discarded {
                noted: noted.then_some(hash),
            };
        }
        self.policy.on_release(local);
        if self.dated() {
            self.released[local as usize] = store.clock();
        }
        records.set_state(slot, SlotState::Inactive);
        self.active -= 1;
        self.inactive += 1;
        LastRelease::Kept
    }

    /// Registered primaries of this shard, by hash (for a registry count).
    pub(crate) fn for_each_primary(&self, store: &Store, mut f: impl FnMut(SequenceHash)) {
        let records = &store.records;
        for slot in self.base..self.base + self.len {
            if matches!(records.state(slot), SlotState::Active | SlotState::Inactive)
                && records.is_primary(slot)
            {
                f(records.hash(slot));
            }
        }
    }

    /// Evicts every inactive slot to the reset pool, index entries included;
    /// hands each hash to `gone`, with whether the registry must hear of it.
    pub(crate) fn drain_inactive(
        &mut self,
        store: &Store,
        writer: &mut IndexWriter,
        mut gone: impl FnMut(SequenceHash, bool),
    ) {
        while self.inactive > 0 {
            let slot = self.next_victim(store);
            let hash = store.records.hash(slot);
            self.unregister(slot, store);
            gone(hash, store.records.take_flags(slot) & flag::NOTED != 0);
            store.index.remove(writer, hash, slot);
            store.records.set_state(slot, SlotState::Reset);
            self.free.push(slot);
            self.policy.on_forget(self.local(slot), hash);
        }
        store.index.settle(writer);
    }

    /// Bytes of bookkeeping this shard holds (the reset pool, release dates).
    pub(crate) fn heap_bytes(&self) -> usize {
        (self.free.capacity() + self.released.capacity()) * std::mem::size_of::<u32>()
    }

    /// Walks this shard's slots and checks they agree with its tallies, its
    /// policy and the index; returns how many registered primaries it holds.
    /// Call with every shard locked and the index writer held.
    pub(crate) fn validate(&self, store: &Store, writer: &IndexWriter) -> Result<usize, String> {
        self.policy
            .check()
            .map_err(|e| format!("policy {}: {e}", self.policy.name()))?;
        if self.policy.len() != self.inactive {
            return Err(format!(
                "policy {} tracks {} evictable slots, the shard {}",
                self.policy.name(),
                self.policy.len(),
                self.inactive
            ));
        }
        if self.is_live() != self.has_keepalive() {
            return Err(format!(
                "shard at slot {}: live {} but keepalive {}",
                self.base,
                self.is_live(),
                self.has_keepalive()
            ));
        }
        let records = &store.records;
        let mut counts = StateCounts::default();
        let mut primaries = 0usize;
        for slot in self.base..self.base + self.len {
            let count = store.refs.count(slot);
            let state = records.state(slot);
            match state {
                SlotState::Reset => counts.reset += 1,
                SlotState::Outstanding => counts.outstanding += 1,
                SlotState::Active => counts.active += 1,
                SlotState::Inactive => counts.inactive += 1,
            }
            let registered = matches!(state, SlotState::Active | SlotState::Inactive);
            if registered && records.is_primary(slot) {
                primaries += 1;
                let hash = records.hash(slot);
                if store.index.get(writer, hash, |s| records.hash(s)) != Some(slot) {
                    return Err(format!("slot {slot} is a primary missing from the index"));
                }
            }
            if state == SlotState::Inactive && count != 0 {
                return Err(format!("inactive slot {slot} has {count} handles"));
            }
            if !registered && count != 0 {
                return Err(format!("unregistered slot {slot} has {count} handles"));
            }
            if state == SlotState::Active && !records.is_primary(slot) {
                let primary = records.duplicate_of(slot);
                if records.state(primary) != SlotState::Active
                    || records.hash(primary) != records.hash(slot)
                {
                    return Err(format!("duplicate slot {slot} does not pin its primary"));
                }
            }
        }
        if counts != self.state_counts() {
            return Err(format!(
                "state counts {counts:?} disagree with the tallies {:?}",
                self.state_counts()
            ));
        }
        Ok(primaries)
    }
}

/// Whether `slot` is the registered primary of `hash`: exact under the
/// slot's shard lock, which every state change takes.
#[inline]
pub(crate) fn is_registered_primary(slot: u32, hash: SequenceHash, store: &Store) -> bool {
    let records = &store.records;
    matches!(records.state(slot), SlotState::Active | SlotState::Inactive)
        && records.is_primary(slot)
        && records.hash(slot) == hash
}

/// Slots per run of [`ShardState::new_spread`]'s allocation order (one
/// request's worth of blocks stays in one future shard).
pub(crate) const SPREAD_RUN: u32 = 16;

/// Pushes the slots `0..len` onto `free` (a stack: the last pushed is
/// handed out first) so that a one-pool shard that will split into shards
/// of `shard_len` slots hands them out in runs of [`SPREAD_RUN`] from each
/// future shard in turn.
fn push_spread(free: &mut Vec<u32>, len: u32, shard_len: u32) {
    let run = SPREAD_RUN.min(shard_len);
    let shards = len.div_ceil(shard_len);
    for round in (0..shard_len / run).rev() {
        for shard in (0..shards).rev() {
            let start = shard * shard_len + round * run;
            if start < len {
                free.extend((start..(start + run).min(len)).rev());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_order_hands_out_every_slot_once_a_run_per_future_shard_in_turn() {
        for (len, shard_len) in [(64, 16), (100, 32), (65_536, 4_096), (40, 8), (5, 4)] {
            let mut stack = Vec::new();
            push_spread(&mut stack, len, shard_len);
            let order: Vec<u32> = stack.into_iter().rev().collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..len).collect::<Vec<_>>(), "{len} / {shard_len}");
            let run = SPREAD_RUN.min(shard_len) as usize;
            let shards = len.div_ceil(shard_len) as usize;
            // The first runs come from the future shards in turn.
            let firsts: Vec<u32> = order
                .chunks(run)
                .take(shards)
                .map(|r| r[0] / shard_len)
                .collect();
            assert_eq!(
                firsts,
                (0..shards as u32).collect::<Vec<_>>(),
                "{len} / {shard_len}"
            );
        }
    }
}
