//! The locked state machine of a store: the reset pool, the eviction policy,
//! the state tallies and the slot records' states, moved together so they
//! always agree.
//!
//! Every method runs under the store lock (see [`super::Store`]) and does a
//! bounded amount of work per slot, without allocating. The records, the
//! index and the handle counts live in the [`Store`] itself, because
//! lock-free matches read them. Index writes need the index writer's own lock
//! as well, taken after this one: registration holds both, while an
//! allocation evicts here and removes the victims' entries after unlocking,
//! so the second half of an eviction overlaps other threads' work. Until
//! then a victim's entry is *stale* (it names a slot that is no longer
//! registered); every lookup here checks the slot it finds, and registration
//! overwrites a stale entry for its key. It never creates or drops guards;
//! callers turn the slot numbers it hands out into guards.

use std::sync::Arc;

use super::index::{IndexWriter, Insert, Probe};
use super::slot::{SlotState, NO_SLOT};
use super::Store;
use crate::policy::{AnyPolicy, EvictionPolicy};
use crate::{BlockDuplicationPolicy, SequenceHash};

/// Event counters kept under the lock (plain integers: the lock orders them).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) allocations: u64,
    pub(crate) allocations_from_reset: u64,
    pub(crate) evictions: u64,
    pub(crate) registrations: u64,
    pub(crate) duplicates: u64,
    pub(crate) dedups: u64,
    pub(crate) staged_exits: u64,
    pub(crate) match_hashes_requested: u64,
    pub(crate) match_blocks_returned: u64,
    pub(crate) scan_hashes_requested: u64,
    pub(crate) scan_blocks_returned: u64,
}

/// How many slots sit in each state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateCounts {
    pub(crate) reset: usize,
    pub(crate) outstanding: usize,
    pub(crate) active: usize,
    pub(crate) inactive: usize,
}

/// The outcome of registering one staged slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Registered {
    /// The slot the caller's new handle names.
    pub(crate) slot: u32,
    /// That slot's generation.
    pub(crate) generation: u32,
}

/// Reset pool, policy and tallies.
pub(crate) struct StoreCore {
    /// The reset pool, used as a stack.
    free: Vec<u32>,
    policy: AnyPolicy,
    outstanding: usize,
    active: usize,
    /// The store's own `Arc`, held while any slot is live (outstanding or
    /// active), so guards can point at the store without owning it.
    keepalive: Option<Arc<Store>>,
    pub(crate) counters: Counters,
}

impl StoreCore {
    /// A store of `block_count` free slots evicted by `policy`.
    pub(crate) fn new(block_count: usize, policy: AnyPolicy) -> Self {
        Self {
            // Reversed so the first allocation hands out slot 0, 1, 2, ...
            free: (0..block_count as u32).rev().collect(),
            policy,
            outstanding: 0,
            active: 0,
            keepalive: None,
            counters: Counters::default(),
        }
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

    /// Slots an allocation could hand out now (reset + inactive).
    #[inline]
    pub(crate) fn available(&self) -> usize {
        self.free.len() + self.policy.len()
    }

    /// The policy's name.
    pub(crate) fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// Hands out `count` slots, all or nothing: reset pool first, then
    /// evictions; `take` receives each slot. Returns how many came from the
    /// reset pool (the rest were evicted and still have index entries: the
    /// caller removes them with [`Store::forget_evicted`] before handing the
    /// slots out), or `None` if fewer than `count` are available.
    pub(crate) fn allocate(
        &mut self,
        count: usize,
        store: &Store,
        mut take: impl FnMut(u32),
    ) -> Option<usize> {
        if count > self.available() {
            return None;
        }
        let from_reset = count.min(self.free.len());
        for _ in 0..from_reset {
            if let Some(slot) = self.free.pop() {
                store.records.set_state(slot, SlotState::Outstanding);
                take(slot);
            }
        }
        for _ in from_reset..count {
            let Some(slot) = self.policy.evict() else {
                break;
            };
            self.forget(slot, store);
            store.records.set_state(slot, SlotState::Outstanding);
            take(slot);
        }
        self.outstanding += count;
        self.counters.allocations += count as u64;
        self.counters.allocations_from_reset += from_reset as u64;
        Some(from_reset)
    }

    /// Drops an evicted slot's registration from the policy and starts its
    /// next generation; its index entry is now stale. The caller gives the
    /// slot a new state and removes the entry.
    fn forget(&mut self, slot: u32, store: &Store) {
        self.policy.on_forget(slot, store.records.hash(slot));
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

    /// Pins a resident primary for one more handle, resurrecting it if
    /// inactive; returns the slot's generation.
    #[inline]
    fn acquire_primary(&mut self, slot: u32, store: &Store) -> u32 {
        self.policy.on_hit(slot);
        self.pin_primary(slot, store)
    }

    /// Pins a resident primary without telling the policy it was used.
    #[inline]
    fn pin_primary(&mut self, slot: u32, store: &Store) -> u32 {
        if store.records.state(slot) == SlotState::Inactive {
            store.records.set_state(slot, SlotState::Active);
            self.policy.on_reacquire(slot);
            self.active += 1;
        }
        store.refs.increment(slot)
    }

    /// The primary slot holding `hash`, if resident. Exact under the lock:
    /// a stale entry is a miss, and a lock-free miss the index is unsure of
    /// is asked again under the index writer's lock.
    #[inline]
    fn lookup(&self, hash: SequenceHash, store: &Store) -> Option<u32> {
        let records = &store.records;
        let slot = match store.index.find(hash, |s| records.hash(s)) {
            Probe::Candidate(slot) => slot,
            Probe::Miss => return None,
            Probe::Unsure => {
                let writer = store.writer.lock();
                store.index.get(&writer, hash, |s| records.hash(s))?
            }
        };
        is_registered_primary(slot, hash, store).then_some(slot)
    }

    /// Registers a staged slot under `hash`, applying the duplication policy.
    /// The slot's record already holds `hash` (see [`Store::prepare_registration`]).
    pub(crate) fn register(
        &mut self,
        slot: u32,
        hash: SequenceHash,
        duplication: BlockDuplicationPolicy,
        store: &Store,
        writer: &mut IndexWriter,
    ) -> Registered {
        let records = &store.records;
        debug_assert_eq!(records.state(slot), SlotState::Outstanding);
        debug_assert!(records.hash(slot) == hash);
        self.outstanding -= 1;
        self.counters.staged_exits += 1;
        self.counters.registrations += 1;
        let existing = match store
            .index
            .insert_if_absent(writer, hash, slot, |s| records.hash(s))
        {
            Insert::Added => None,
            Insert::Present(existing) if is_registered_primary(existing, hash, store) => {
                Some(existing)
            }
            Insert::Present(stale) => {
                // An evicted slot whose entry its allocator has not removed
                // yet: this registration takes the entry over.
                store.index.replace(writer, hash, stale, slot);
                None
            }
        };
        let duplicate_of = match (existing, duplication) {
            (None, _) => NO_SLOT,
            (Some(primary), BlockDuplicationPolicy::Reject) => {
                let generation = self.acquire_primary(primary, store);
                records.set_state(slot, SlotState::Reset);
                self.free.push(slot);
                self.counters.dedups += 1;
                return Registered {
                    slot: primary,
                    generation,
                };
            }
            (Some(primary), BlockDuplicationPolicy::Allow) => {
                // The copy pins its primary, so a live duplicate always has a
                // resident primary to be matched instead of it.
                let _ = self.acquire_primary(primary, store);
                self.counters.duplicates += 1;
                primary
            }
        };
        records.set_duplicate_of(slot, duplicate_of);
        records.set_state(slot, SlotState::Active);
        self.active += 1;
        let generation = store.refs.increment(slot);
        if duplicate_of == NO_SLOT {
            self.policy.on_register(slot, hash);
        }
        Registered { slot, generation }
    }

    /// The last handle on `slot` was dropped: if nothing re-pinned it since,
    /// a primary becomes inactive and a duplicate returns to reset (releasing
    /// its pin on the primary).
    pub(crate) fn release_if_unused(&mut self, slot: u32, store: &Store) {
        let records = &store.records;
        if records.state(slot) != SlotState::Active || store.refs.count(slot) != 0 {
            return;
        }
        self.active -= 1;
        let primary = records.duplicate_of(slot);
        if primary == NO_SLOT {
            records.set_state(slot, SlotState::Inactive);
            self.policy.on_release(slot);
            return;
        }
        records.set_state(slot, SlotState::Reset);
        records.set_duplicate_of(slot, NO_SLOT);
        store.refs.next_generation(slot);
        self.free.push(slot);
        if store.refs.decrement(primary) {
            self.release_if_unused(primary, store);
        }
    }

    /// Resolves the longest resident prefix of `hashes`, pinning each hit.
    /// Counts only the hits: the caller counts the hashes requested.
    pub(crate) fn match_prefix(
        &mut self,
        hashes: &[SequenceHash],
        store: &Store,
        mut hit: impl FnMut(u32, u32, SequenceHash),
    ) -> usize {
        let mut found = 0;
        for &hash in hashes {
            let Some(slot) = self.lookup(hash, store) else {
                break;
            };
            let generation = self.acquire_primary(slot, store);
            hit(slot, generation, hash);
            found += 1;
        }
        found
    }

    /// Pins the resident primary of `hash`, if any, without touching the
    /// policy's notion of use when `touch` is false. Counted as a scan.
    pub(crate) fn scan_one(
        &mut self,
        hash: SequenceHash,
        touch: bool,
        store: &Store,
    ) -> Option<Registered> {
        self.counters.scan_hashes_requested += 1;
        let slot = self.lookup(hash, store)?;
        let generation = if touch {
            self.acquire_primary(slot, store)
        } else {
            self.pin_primary(slot, store)
        };
        self.counters.scan_blocks_returned += 1;
        Some(Registered { slot, generation })
    }

    /// Pins the resident primary of `hash` for a match that does not stop at
    /// misses (counted as a match).
    pub(crate) fn match_one(&mut self, hash: SequenceHash, store: &Store) -> Option<Registered> {
        self.counters.match_hashes_requested += 1;
        let slot = self.lookup(hash, store)?;
        let generation = self.acquire_primary(slot, store);
        self.counters.match_blocks_returned += 1;
        Some(Registered { slot, generation })
    }

    /// Re-pins a weak handle's slot if it still holds `hash` at `generation`,
    /// else whichever slot is now the resident primary of `hash`.
    pub(crate) fn upgrade(
        &mut self,
        slot: u32,
        generation: u32,
        hash: SequenceHash,
        store: &Store,
    ) -> Option<Registered> {
        let records = &store.records;
        let same = store.refs.generation(slot) == generation
            && matches!(records.state(slot), SlotState::Active | SlotState::Inactive)
            && records.hash(slot) == hash;
        let slot = if same {
            slot
        } else {
            self.lookup(hash, store)?
        };
        let generation = if records.is_primary(slot) {
            self.acquire_primary(slot, store)
        } else {
            store.refs.increment(slot)
        };
        Some(Registered { slot, generation })
    }

    /// Evicts every inactive slot to the reset pool.
    pub(crate) fn drain_inactive(&mut self, store: &Store, writer: &mut IndexWriter) {
        while let Some(slot) = self.policy.evict() {
            self.forget(slot, store);
            store.index.remove(writer, store.records.hash(slot), slot);
            store.records.set_state(slot, SlotState::Reset);
            self.free.push(slot);
        }
        store.index.settle(writer);
    }

    /// Whether `hash` has a resident primary (no pin, no policy update).
    pub(crate) fn contains(&self, hash: SequenceHash, store: &Store) -> bool {
        self.lookup(hash, store).is_some()
    }

    /// Bytes of bookkeeping this core holds (the reset pool).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.free.capacity() * std::mem::size_of::<u32>()
    }

    /// Walks every structure and checks they agree (O(slots)). Needs no
    /// allocation between its two halves in flight (call when quiescent).
    pub(crate) fn validate(&self, store: &Store, writer: &IndexWriter) -> Result<(), String> {
        let records = &store.records;
        let mut counts = StateCounts::default();
        let mut primaries = 0usize;
        for slot in 0..records.len() as u32 {
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
                if self.lookup(records.hash(slot), store) != Some(slot) {
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
        if primaries != writer.len() {
            return Err(format!(
                "{} index entries for {primaries} resident primaries",
                writer.len()
            ));
        }
        Ok(())
    }
}

/// Whether `slot` is the registered primary of `hash` (exact under the store
/// lock, which every state change takes).
#[inline]
fn is_registered_primary(slot: u32, hash: SequenceHash, store: &Store) -> bool {
    let records = &store.records;
    matches!(records.state(slot), SlotState::Active | SlotState::Inactive)
        && records.is_primary(slot)
        && records.hash(slot) == hash
}
