//! LRU-K with K = 2 (O'Neil, O'Neil and Weikum, SIGMOD'93): evict the block
//! whose second most recent use lies furthest in the past.
//!
//! # The algorithm
//!
//! Every block keeps the times of its last two *uncorrelated* references on
//! a logical clock that advances by one per reference (a registration or a
//! hit). The victim is the evictable block with the largest backward
//! 2-distance: first the blocks used only once (their 2-distance is
//! infinite), oldest last use first, as the paper's subsidiary LRU orders
//! them; then the blocks used twice or more, oldest second-to-last use
//! first. A block read once by a scan therefore leaves before any block
//! that proved itself twice, however long ago.
//!
//! # Correlated references
//!
//! A hit that comes within the *correlated reference period* of the
//! block's previous reference belongs to the same use: a request that
//! registers a block and then finds it again (a deduplicated registration),
//! or the next requests of a burst that arrive while the block is still
//! warm. Such a hit only moves the last-use time; it does not make the
//! block a twice-used one. The period is counted in clock ticks (block
//! references), `slots / 16` by default ([`LruK::with_period`] sets it): a
//! block that comes back before a sixteenth of the pool has been referenced
//! again is still in the use that brought it in.
//!
//! # Mapping onto a block manager
//!
//! References are `on_register` (the first use) and `on_hit`; release and
//! reacquire only move a slot in and out of the evictable set. Evictable
//! slots sit in one binary min-heap keyed by `(class, time)`, so every hook
//! is O(log n) in the evictable count with no allocation after
//! [`LruK::new`] (about 65 bytes per slot with the history).
//!
//! # Retained history
//!
//! As the paper's retained information period, a block that leaves
//! (`on_forget` / `on_discard`) leaves its last reference time in a
//! fixed-size history (`super::history`, as many entries as slots). A block
//! registered while the history remembers it is on its second use, with
//! the remembered time as its second-to-last. Without it, a block once
//! evicted could only come back as used-once, and blocks that were used
//! twice long ago would stay ahead of every newcomer for good.

use super::heap::SlotHeap;
use super::history::History;
use super::EvictionPolicy;
use crate::SequenceHash;

/// Never referenced (the slot is not registered).
const NEVER: u64 = u64::MAX;

/// Heap keys of twice-used blocks sit above every once-used block's key.
const TWICE: u64 = 1 << 63;

/// Where a slot is, as this policy sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Not registered.
    Absent,
    /// Registered and pinned.
    Pinned,
    /// Registered and in the heap.
    Evictable,
}

/// LRU-2 over evictable slots.
pub struct LruK {
    /// Last reference time per slot, [`NEVER`] if absent.
    last: Vec<u64>,
    /// Second-to-last uncorrelated reference time, [`NEVER`] if used once.
    penultimate: Vec<u64>,
    state: Vec<State>,
    /// Each evictable slot's index in `heap`.
    at: Vec<u32>,
    heap: SlotHeap,
    /// The logical clock: references so far.
    clock: u64,
    /// Correlated reference period, in clock ticks.
    period: u64,
    /// Last reference times of blocks that left (retained information).
    history: History,
}

/// A slot's heap key: once-used blocks first by last use, then twice-used
/// ones by second-to-last use.
#[inline]
fn order_key(last: &[u64], penultimate: &[u64], slot: u32) -> u64 {
    let penultimate = penultimate[slot as usize];
    if penultimate == NEVER {
        last[slot as usize]
    } else {
        TWICE | penultimate
    }
}

impl LruK {
    /// A policy for slots `0..slots` with the default correlated reference
    /// period, `slots / 16` ticks (at least 1).
    pub fn new(slots: usize) -> Self {
        Self::with_period(slots, (slots as u64 / 16).max(1))
    }

    /// A policy for slots `0..slots` whose hits within `period` references
    /// of a block's previous reference count as the same use (0: every hit
    /// counts).
    pub fn with_period(slots: usize, period: u64) -> Self {
        Self {
            last: vec![NEVER; slots],
            penultimate: vec![NEVER; slots],
            state: vec![State::Absent; slots],
            at: vec![0; slots],
            heap: SlotHeap::with_capacity(slots),
            clock: 0,
            period,
            history: History::new(2 * slots),
        }
    }

    /// The correlated reference period, in references.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// Whether `slot` has been used at least twice (uncorrelated).
    #[cfg(test)]
    pub(crate) fn used_twice(&self, slot: u32) -> bool {
        self.penultimate[slot as usize] != NEVER
    }

    fn push(&mut self, slot: u32) {
        let (last, penultimate) = (&self.last, &self.penultimate);
        self.heap
            .push(slot, &mut self.at, |s| order_key(last, penultimate, s));
    }

    fn remove(&mut self, slot: u32) {
        let (last, penultimate) = (&self.last, &self.penultimate);
        self.heap
            .remove(slot, &mut self.at, |s| order_key(last, penultimate, s));
    }

    fn forget(&mut self, slot: u32, hash: SequenceHash) {
        if self.last[slot as usize] != NEVER {
            self.history.insert(hash, self.last[slot as usize]);
        }
        if self.state[slot as usize] == State::Evictable {
            self.remove(slot);
        }
        self.state[slot as usize] = State::Absent;
        self.last[slot as usize] = NEVER;
        self.penultimate[slot as usize] = NEVER;
    }
}

impl EvictionPolicy for LruK {
    fn name(&self) -> &'static str {
        "lru2"
    }

    fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        self.clock += 1;
        let s = slot as usize;
        self.last[s] = self.clock;
        // A block back from the history keeps its previous use, unless that
        // use is within the correlated period of this one.
        self.penultimate[s] = match self.history.take(hash) {
            Some(before) if self.clock - before > self.period => before,
            _ => NEVER,
        };
        self.state[s] = State::Pinned;
    }

    fn on_hit(&mut self, slot: u32) {
        let s = slot as usize;
        if self.state[s] == State::Absent {
            return;
        }
        self.clock += 1;
        let evictable = self.state[s] == State::Evictable;
        if evictable {
            // The key changes: take it out and put it back.
            self.remove(slot);
        }
        if self.clock - self.last[s] > self.period {
            self.penultimate[s] = self.last[s];
        }
        self.last[s] = self.clock;
        if evictable {
            self.push(slot);
        }
    }

    fn on_release(&mut self, slot: u32) {
        self.state[slot as usize] = State::Evictable;
        self.push(slot);
    }

    fn on_reacquire(&mut self, slot: u32) {
        self.remove(slot);
        self.state[slot as usize] = State::Pinned;
    }

    fn evict(&mut self) -> Option<u32> {
        let slot = self.heap.peek()?;
        self.remove(slot);
        self.state[slot as usize] = State::Pinned;
        Some(slot)
    }

    fn on_forget(&mut self, slot: u32, hash: SequenceHash) {
        self.forget(slot, hash);
    }

    fn on_discard(&mut self, slot: u32, hash: SequenceHash) {
        self.forget(slot, hash);
    }

    fn peek_victim(&self) -> Option<u32> {
        self.heap.peek()
    }

    fn len(&self) -> usize {
        self.heap.len()
    }

    fn check(&self) -> Result<(), String> {
        let key = |s: u32| order_key(&self.last, &self.penultimate, s);
        let items = self.heap.slots();
        for (index, &slot) in items.iter().enumerate() {
            let s = slot as usize;
            if self.state[s] != State::Evictable {
                return Err(format!(
                    "lru2: slot {slot} in the heap is {:?}",
                    self.state[s]
                ));
            }
            if self.at[s] as usize != index {
                return Err(format!(
                    "lru2: slot {slot} at {index}, recorded {}",
                    self.at[s]
                ));
            }
            if index > 0 && key(items[(index - 1) / 2]) > key(slot) {
                return Err(format!("lru2: heap order broken above slot {slot}"));
            }
        }
        let evictable = self
            .state
            .iter()
            .filter(|&&st| st == State::Evictable)
            .count();
        if evictable != items.len() {
            return Err(format!(
                "lru2: {evictable} evictable slots, {} in the heap",
                items.len()
            ));
        }
        for (slot, &st) in self.state.iter().enumerate() {
            let (last, penultimate) = (self.last[slot], self.penultimate[slot]);
            let ok = match st {
                State::Absent => last == NEVER && penultimate == NEVER,
                _ => last <= self.clock && (penultimate == NEVER || penultimate < last),
            };
            if !ok {
                return Err(format!(
                    "lru2: slot {slot} ({st:?}) has times {penultimate}/{last} at clock {}",
                    self.clock
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_utils::{check_random_sequences, evict_all, register_all, roots};

    #[test]
    fn blocks_used_once_leave_before_blocks_used_twice() {
        let hashes = roots(4);
        let mut policy = LruK::with_period(4, 0);
        register_all(&mut policy, &hashes, &[0, 1, 2, 3]);
        // Slot 0 is used again (the oldest, but now used twice); slots 1-3
        // only once, so they go first in their order of use.
        policy.on_hit(0);
        policy.on_reacquire(0);
        policy.on_release(0);
        assert_eq!(policy.peek_victim(), Some(1));
        assert_eq!(evict_all(&mut policy, &hashes), vec![1, 2, 3, 0]);
    }

    #[test]
    fn twice_used_blocks_leave_by_their_second_to_last_use() {
        let hashes = roots(3);
        let mut policy = LruK::with_period(3, 0);
        for slot in 0..3 {
            policy.on_register(slot, hashes[slot as usize]);
        }
        // Second uses in order 2, 1, 0 after first uses 0, 1, 2: the
        // second-to-last uses are the registrations, so 0 goes first even
        // though its last use is the newest.
        for slot in [2, 1, 0] {
            policy.on_hit(slot);
            policy.on_release(slot);
        }
        assert_eq!(evict_all(&mut policy, &hashes), vec![0, 1, 2]);
    }

    #[test]
    fn a_hit_within_the_correlated_period_does_not_count_as_a_second_use() {
        let hashes = roots(3);
        let mut policy = LruK::with_period(3, 10);
        policy.on_register(0, hashes[0]);
        policy.on_hit(0); // same use: one tick later
        assert!(!policy.used_twice(0));
        policy.on_release(0);
        for slot in [1, 2] {
            policy.on_register(slot, hashes[slot as usize]);
            policy.on_release(slot);
        }
        // Still used once, and its last use (the hit) is older than 1 and 2.
        assert_eq!(evict_all(&mut policy, &hashes), vec![0, 1, 2]);

        let mut policy = LruK::with_period(3, 2);
        policy.on_register(0, hashes[0]);
        for slot in [1, 2] {
            policy.on_register(slot, hashes[slot as usize]);
        }
        policy.on_hit(0); // three ticks later: a new use
        assert!(policy.used_twice(0));
    }

    #[test]
    fn a_hit_on_an_evictable_block_moves_it_in_the_order() {
        let hashes = roots(2);
        let mut policy = LruK::with_period(2, 0);
        register_all(&mut policy, &hashes, &[0, 1]);
        policy.on_hit(0); // evictable, not reacquired (a lookup that let go)
        policy.check().unwrap();
        assert_eq!(evict_all(&mut policy, &hashes), vec![1, 0]);
    }

    #[test]
    fn lru2_agrees_with_the_model_on_random_hook_sequences() {
        check_random_sequences(LruK::new);
        check_random_sequences(|slots| LruK::with_period(slots, 0));
    }
}
