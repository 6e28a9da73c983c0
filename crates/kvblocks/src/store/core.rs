//! The single-threaded state machine of a store: slot records, the hash index,
//! the reset pool and the eviction policy, moved together so they always agree.
//!
//! Every method runs under the store lock (see [`super::Store`]) and does a
//! bounded amount of work per slot, without allocating. It never creates or
//! drops guards; callers turn the slot numbers it hands out into guards.

use std::sync::Arc;

use super::index::HashIndex;
use super::refcount::RefCounts;
use super::slot::{SlotRecord, SlotState, NO_SLOT};
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

/// Slot records, index, reset pool and policy.
pub(crate) struct StoreCore {
    slots: Vec<SlotRecord>,
    index: HashIndex,
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
            slots: vec![SlotRecord::FREE; block_count],
            index: HashIndex::with_capacity(block_count),
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
    /// evictions. `evicted` receives each evicted hash; `take` each slot.
    pub(crate) fn allocate(
        &mut self,
        count: usize,
        refs: &RefCounts,
        mut evicted: Option<&mut Vec<SequenceHash>>,
        mut take: impl FnMut(u32),
    ) -> bool {
        if count > self.available() {
            return false;
        }
        let from_reset = count.min(self.free.len());
        for _ in 0..from_reset {
            if let Some(slot) = self.free.pop() {
                self.slots[slot as usize].state = SlotState::Outstanding;
                take(slot);
            }
        }
        for _ in from_reset..count {
            let Some(slot) = self.policy.evict() else {
                break;
            };
            let hash = self.forget(slot, refs);
            if let Some(evicted) = evicted.as_deref_mut() {
                evicted.push(hash);
            }
            self.slots[slot as usize].state = SlotState::Outstanding;
            take(slot);
        }
        self.outstanding += count;
        self.counters.allocations += count as u64;
        self.counters.allocations_from_reset += from_reset as u64;
        true
    }

    /// Drops an inactive slot's registration: index, policy, generation.
    /// Returns the hash it held. The caller gives the slot a new state.
    fn forget(&mut self, slot: u32, refs: &RefCounts) -> SequenceHash {
        let hash = self.slots[slot as usize].hash();
        self.index.remove(hash, slot);
        self.policy.on_forget(slot, hash);
        refs.next_generation(slot);
        self.counters.evictions += 1;
        hash
    }

    /// An outstanding slot (mutable or staged guard dropped) goes back to reset.
    pub(crate) fn release_outstanding(&mut self, slot: u32, was_staged: bool) {
        debug_assert_eq!(self.slots[slot as usize].state, SlotState::Outstanding);
        self.slots[slot as usize].state = SlotState::Reset;
        self.free.push(slot);
        self.outstanding -= 1;
        self.counters.staged_exits += u64::from(was_staged);
    }

    /// Pins a resident primary for one more handle, resurrecting it if
    /// inactive; returns the slot's generation.
    #[inline]
    fn acquire_primary(&mut self, slot: u32, refs: &RefCounts) -> u32 {
        self.policy.on_hit(slot);
        self.pin_primary(slot, refs)
    }

    /// Pins a resident primary without telling the policy it was used.
    #[inline]
    fn pin_primary(&mut self, slot: u32, refs: &RefCounts) -> u32 {
        let record = &mut self.slots[slot as usize];
        if record.state == SlotState::Inactive {
            record.state = SlotState::Active;
            self.policy.on_reacquire(slot);
            self.active += 1;
        }
        refs.increment(slot)
    }

    /// The primary slot holding `hash`, if resident.
    #[inline]
    fn lookup(&self, hash: SequenceHash) -> Option<u32> {
        let slots = &self.slots;
        self.index.get(hash, |s| slots[s as usize].hash())
    }

    /// Registers a staged slot under `hash`, applying the duplication policy.
    pub(crate) fn register(
        &mut self,
        slot: u32,
        hash: SequenceHash,
        duplication: BlockDuplicationPolicy,
        refs: &RefCounts,
    ) -> Registered {
        debug_assert_eq!(self.slots[slot as usize].state, SlotState::Outstanding);
        self.outstanding -= 1;
        self.counters.staged_exits += 1;
        self.counters.registrations += 1;
        let slots = &self.slots;
        let existing = self
            .index
            .insert_if_absent(hash, slot, |s| slots[s as usize].hash());
        let duplicate_of = match (existing, duplication) {
            (None, _) => NO_SLOT,
            (Some(primary), BlockDuplicationPolicy::Reject) => {
                let generation = self.acquire_primary(primary, refs);
                self.slots[slot as usize].state = SlotState::Reset;
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
                let _ = self.acquire_primary(primary, refs);
                self.counters.duplicates += 1;
                primary
            }
        };
        let record = &mut self.slots[slot as usize];
        record.set_hash(hash);
        record.duplicate_of = duplicate_of;
        record.state = SlotState::Active;
        self.active += 1;
        let generation = refs.increment(slot);
        if duplicate_of == NO_SLOT {
            self.policy.on_register(slot, hash);
        }
        Registered { slot, generation }
    }

    /// The last handle on `slot` was dropped: if nothing re-pinned it since,
    /// a primary becomes inactive and a duplicate returns to reset (releasing
    /// its pin on the primary).
    pub(crate) fn release_if_unused(&mut self, slot: u32, refs: &RefCounts) {
        let record = self.slots[slot as usize];
        if record.state != SlotState::Active || refs.count(slot) != 0 {
            return;
        }
        self.active -= 1;
        if record.is_primary() {
            self.slots[slot as usize].state = SlotState::Inactive;
            self.policy.on_release(slot);
            return;
        }
        self.slots[slot as usize].state = SlotState::Reset;
        self.slots[slot as usize].duplicate_of = NO_SLOT;
        refs.next_generation(slot);
        self.free.push(slot);
        let primary = record.duplicate_of;
        if refs.decrement(primary) {
            self.release_if_unused(primary, refs);
        }
    }

    /// Resolves the longest resident prefix of `hashes`, pinning each hit.
    pub(crate) fn match_prefix(
        &mut self,
        hashes: &[SequenceHash],
        refs: &RefCounts,
        mut hit: impl FnMut(u32, u32, SequenceHash),
    ) -> usize {
        let mut found = 0;
        for &hash in hashes {
            let Some(slot) = self.lookup(hash) else {
                break;
            };
            let generation = self.acquire_primary(slot, refs);
            hit(slot, generation, hash);
            found += 1;
        }
        self.counters.match_hashes_requested += hashes.len() as u64;
        self.counters.match_blocks_returned += found as u64;
        found
    }

    /// Pins the resident primary of `hash`, if any, without touching the
    /// policy's notion of use when `touch` is false. Counted as a scan.
    pub(crate) fn scan_one(
        &mut self,
        hash: SequenceHash,
        touch: bool,
        refs: &RefCounts,
    ) -> Option<Registered> {
        self.counters.scan_hashes_requested += 1;
        let slot = self.lookup(hash)?;
        let generation = if touch {
            self.acquire_primary(slot, refs)
        } else {
            self.pin_primary(slot, refs)
        };
        self.counters.scan_blocks_returned += 1;
        Some(Registered { slot, generation })
    }

    /// Pins the resident primary of `hash` for a match that does not stop at
    /// misses (counted as a match).
    pub(crate) fn match_one(&mut self, hash: SequenceHash, refs: &RefCounts) -> Option<Registered> {
        self.counters.match_hashes_requested += 1;
        let slot = self.lookup(hash)?;
        let generation = self.acquire_primary(slot, refs);
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
        refs: &RefCounts,
    ) -> Option<Registered> {
        let record = self.slots[slot as usize];
        let same = refs.generation(slot) == generation
            && matches!(record.state, SlotState::Active | SlotState::Inactive)
            && record.hash() == hash;
        let slot = if same { slot } else { self.lookup(hash)? };
        let generation = if self.slots[slot as usize].is_primary() {
            self.acquire_primary(slot, refs)
        } else {
            refs.increment(slot)
        };
        Some(Registered { slot, generation })
    }

    /// Evicts every inactive slot to the reset pool; returns their hashes' count.
    pub(crate) fn drain_inactive(
        &mut self,
        refs: &RefCounts,
        mut evicted: impl FnMut(SequenceHash),
    ) {
        while let Some(slot) = self.policy.evict() {
            let hash = self.forget(slot, refs);
            self.slots[slot as usize].state = SlotState::Reset;
            self.free.push(slot);
            evicted(hash);
        }
    }

    /// Whether `hash` has a resident primary (no pin, no policy update).
    pub(crate) fn contains(&self, hash: SequenceHash) -> bool {
        self.lookup(hash).is_some()
    }

    /// Bytes of bookkeeping this core holds per slot (records, index, reset pool).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<SlotRecord>()
            + self.index.allocation_size()
            + self.free.capacity() * std::mem::size_of::<u32>()
    }

    /// Walks every structure and checks they agree (O(slots)).
    pub(crate) fn validate(&self, refs: &RefCounts) -> Result<(), String> {
        let mut counts = StateCounts::default();
        let mut primaries = 0usize;
        for (slot, record) in self.slots.iter().enumerate() {
            let slot = slot as u32;
            let count = refs.count(slot);
            match record.state {
                SlotState::Reset => counts.reset += 1,
                SlotState::Outstanding => counts.outstanding += 1,
                SlotState::Active => counts.active += 1,
                SlotState::Inactive => counts.inactive += 1,
            }
            let registered = matches!(record.state, SlotState::Active | SlotState::Inactive);
            if registered && record.is_primary() {
                primaries += 1;
                if self.lookup(record.hash()) != Some(slot) {
                    return Err(format!("slot {slot} is a primary missing from the index"));
                }
            }
            if record.state == SlotState::Inactive && count != 0 {
                return Err(format!("inactive slot {slot} has {count} handles"));
            }
            if !registered && count != 0 {
                return Err(format!("unregistered slot {slot} has {count} handles"));
            }
            if record.state == SlotState::Active && !record.is_primary() {
                let primary = self.slots[record.duplicate_of as usize];
                if primary.state != SlotState::Active || primary.hash() != record.hash() {
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
        if primaries != self.index.len() {
            return Err(format!(
                "{} index entries for {primaries} resident primaries",
                self.index.len()
            ));
        }
        Ok(())
    }
}
