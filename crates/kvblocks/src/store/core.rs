//! The locked state machine of one pool shard: its reset pool, its eviction
//! policy, its state tallies and the states of its slots, moved together so
//! they always agree.
//!
//! A store splits its slots into contiguous shards (one unless the builder
//! asks for more, see [`super::Store`]); every method here runs under its
//! shard's lock, touches only that shard's slots, and does a bounded amount
//! of work per slot without allocating. The records, the index and the
//! handle counts live in the [`Store`] itself, because lock-free matches read
//! them.
//!
//! Index writes need the index writer's lock as well, taken after the shard
//! lock: registration holds both, while an allocation evicts here and removes
//! the victims' entries after unlocking, so the second half of an eviction
//! overlaps other threads' work. Until then a victim's entry is *stale* (it
//! names a slot that is no longer registered); every locked lookup checks the
//! slot it finds ([`is_registered_primary`]), and registration takes a stale
//! entry over. Nothing here creates or drops guards; callers turn the slot
//! numbers it hands out into guards.

use std::sync::Arc;

use super::index::IndexWriter;
use super::slot::{SlotState, NO_SLOT};
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

/// One shard: reset pool, policy and tallies for slots `base..base + len`.
pub(crate) struct StoreCore {
    /// First slot of the shard; the policy numbers slots from here.
    base: u32,
    /// The reset pool, used as a stack.
    free: Vec<u32>,
    policy: AnyPolicy,
    outstanding: usize,
    active: usize,
    /// The store's own `Arc`, held while any slot of this shard is live
    /// (outstanding or active), so guards can point at the store without
    /// owning it.
    keepalive: Option<Arc<Store>>,
    pub(crate) counters: Counters,
}

impl StoreCore {
    /// A shard of `len` free slots from `base`, evicted by `policy` (which
    /// numbers them `0..len`).
    pub(crate) fn new(base: u32, len: u32, policy: AnyPolicy) -> Self {
        Self {
            base,
            // Reversed so the first allocation hands out base, base + 1, ...
            free: (base..base + len).rev().collect(),
            policy,
            outstanding: 0,
            active: 0,
            keepalive: None,
            counters: Counters::default(),
        }
    }

    /// The policy's number for `slot`.
    #[inline(always)]
    fn local(&self, slot: u32) -> u32 {
        slot - self.base
    }

    /// Makes sure the store stays alive while slots are live; call after any
    /// operation that may have handed out guards, before unlocking.
    #[inline]
    pub(crate) fn keep_alive(&mut self, store: &Arc<Store>) {
        if self.keepalive.is_none() && self.outstanding + self.active > 0 {
            self.keepalive = Some(Arc::clone(store));
        }
    }

    /// The keepalive, once no slot is live; drop it after unlocking.
    #[inline]
    pub(crate) fn take_keepalive_if_idle(&mut self) -> Option<Arc<Store>> {
        if self.outstanding + self.active == 0 {
            self.keepalive.take()
        } else {
            None
        }
    }

    /// Slots in each state.
    pub(crate) fn state_counts(&self) -> StateCounts {
        StateCounts {
            reset: self.free.len(),
            outstanding: self.outstanding,
            active: self.active,
            inactive: self.policy.len(),
        }
    }

    /// Slots an allocation could take from this shard now (reset + inactive).
    #[inline]
    pub(crate) fn available(&self) -> usize {
        self.free.len() + self.policy.len()
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
                take(slot);
            }
        }
        self.outstanding += count;
        self.counters.allocations += count as u64;
        self.counters.allocations_from_reset += count as u64;
        count
    }

    /// Evicts up to `max` inactive slots and hands them to `take`; returns
    /// how many. Their index entries are stale until the caller removes them
    /// ([`Store::forget_evicted`]), which it must do before handing them out.
    pub(crate) fn evict(&mut self, max: usize, store: &Store, mut take: impl FnMut(u32)) -> usize {
        let mut count = 0;
        while count < max {
            let Some(local) = self.policy.evict() else {
                break;
            };
            let slot = self.base + local;
            self.forget(slot, store);
            store.records.set_state(slot, SlotState::Outstanding);
            take(slot);
            count += 1;
        }
        self.outstanding += count;
        self.counters.allocations += count as u64;
        count
    }

    /// Drops an evicted slot's registration from the policy and starts its
    /// next generation; its index entry is now stale. The caller gives the
    /// slot a new state and removes the entry.
    fn forget(&mut self, slot: u32, store: &Store) {
        let local = self.local(slot);
        self.policy.on_forget(local, store.records.hash(slot));
        store.refs.next_generation(slot);
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
    /// resurrecting it if inactive, and tells the policy it was used;
    /// returns the slot's generation.
    #[inline]
    pub(crate) fn acquire_primary(&mut self, slot: u32, store: &Store) -> u32 {
        self.policy.on_hit(self.local(slot));
        self.pin_primary(slot, store)
    }

    /// Pins a resident primary without telling the policy it was used.
    #[inline]
    fn pin_primary(&mut self, slot: u32, store: &Store) -> u32 {
        if store.records.state(slot) == SlotState::Inactive {
            store.records.set_state(slot, SlotState::Active);
            let local = self.local(slot);
            self.policy.on_reacquire(local);
            self.active += 1;
        }
        store.refs.increment(slot)
    }

    /// Pins `slot` if it is this shard's registered primary of `hash`
    /// (`touch`: as a use the policy hears of); its generation, else `None`.
    #[inline]
    pub(crate) fn acquire_if_primary_of(
        &mut self,
        slot: u32,
        hash: SequenceHash,
        touch: bool,
        store: &Store,
    ) -> Option<u32> {
        if !is_registered_primary(slot, hash, store) {
            return None;
        }
        Some(if touch {
            self.acquire_primary(slot, store)
        } else {
            self.pin_primary(slot, store)
        })
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
            self.acquire_primary(slot, store)
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
        self.register_common(slot, NO_SLOT, store);
        self.policy.on_register(self.local(slot), hash);
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

    /// The last handle on `slot` was dropped: if nothing re-pinned it since,
    /// a primary becomes inactive and a duplicate returns to reset. Returns
    /// the primary whose pin such a duplicate held: the caller releases it
    /// (it may live in another shard).
    #[must_use]
    pub(crate) fn release_if_unused(&mut self, slot: u32, store: &Store) -> Option<u32> {
        let records = &store.records;
        if records.state(slot) != SlotState::Active || store.refs.count(slot) != 0 {
            return None;
        }
        self.active -= 1;
        let primary = records.duplicate_of(slot);
        if primary == NO_SLOT {
            records.set_state(slot, SlotState::Inactive);
            let local = self.local(slot);
            self.policy.on_release(local);
            return None;
        }
        records.set_state(slot, SlotState::Reset);
        records.set_duplicate_of(slot, NO_SLOT);
        store.refs.next_generation(slot);
        self.free.push(slot);
        Some(primary)
    }

    /// Evicts every inactive slot to the reset pool, index entries included.
    pub(crate) fn drain_inactive(&mut self, store: &Store, writer: &mut IndexWriter) {
        while let Some(local) = self.policy.evict() {
            let slot = self.base + local;
            self.forget(slot, store);
            store.index.remove(writer, store.records.hash(slot), slot);
            store.records.set_state(slot, SlotState::Reset);
            self.free.push(slot);
        }
        store.index.settle(writer);
    }

    /// Bytes of bookkeeping this shard holds (the reset pool).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.free.capacity() * std::mem::size_of::<u32>()
    }

    /// Walks this shard's slots and checks they agree with its tallies and
    /// the index; returns how many registered primaries it holds. Call with
    /// every shard locked, the index writer held, and no allocation between
    /// its two halves.
    pub(crate) fn validate(
        &self,
        slots: std::ops::Range<u32>,
        store: &Store,
        writer: &IndexWriter,
    ) -> Result<usize, String> {
        self.policy
            .check()
            .map_err(|e| format!("policy {}: {e}", self.policy.name()))?;
        let records = &store.records;
        let mut counts = StateCounts::default();
        let mut primaries = 0usize;
        for slot in slots {
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
