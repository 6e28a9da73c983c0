//! SIEVE (Zhang et al., NSDI'24): one FIFO queue, a visited bit per entry and
//! a hand that sweeps from the oldest entry toward the newest.
//!
//! # The algorithm
//!
//! New entries join the queue at the newest end and never move on a hit: a
//! hit only sets the entry's *visited* bit. To evict, the hand looks at the
//! entry it points to; a visited entry has its bit cleared and is passed
//! over, the first unvisited one is evicted, and the hand stays where the
//! victim was (it points to the next newer entry), wrapping to the oldest
//! entry when it runs off the newest end. Survivors keep their place, so new
//! entries pile up between the hand and the newest end: an entry that is
//! never hit leaves at the hand's next pass ("quick demotion"), a popular one
//! survives pass after pass ("lazy promotion").
//!
//! # Mapping onto a block manager
//!
//! The queue holds every resident primary block, pinned or not, in
//! registration order, because SIEVE's point is that an entry's place is
//! fixed when it arrives; a block that is matched, pinned and released again
//! keeps its place and only gains a visited bit. Matches (`on_hit`) set the
//! bit whether the block is pinned or evictable.
//!
//! Pinned blocks are not candidates. When the hand reaches one it *parks*
//! it: unlinks it from the queue, leaving its visited bit alone (the hand
//! skipped the block because it was in use, not because it was judged). A
//! parked block rejoins the queue at the newest end when its last holder
//! lets go: it was in use when the hand came by, so it is treated as a block
//! that just arrived, and a bit set by hits before or during the pin still
//! earns it one more pass. Blocks released before the hand reaches them keep
//! their original place. (Clearing the bit at parking instead measured about
//! half a point worse on the Mooncake synthetic trace.)
//!
//! Parking makes eviction O(1) amortised even when most blocks are pinned:
//! every step of the hand clears a visited bit (paid for by the hit that set
//! it), parks a block (paid for by the registration or release that queued
//! it) or evicts. It also bounds the loop: with at least one evictable block
//! in the queue, the hand evicts within two passes; with none, `evict`
//! returns `None` without moving.

use super::list::{Links, List, NIL};
use super::EvictionPolicy;
use crate::SequenceHash;

/// Where a slot is, as this policy sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    /// Not registered (never was, or evicted).
    Absent,
    /// In the queue.
    Queued,
    /// Pinned and passed by the hand: out of the queue until released.
    Parked,
}

#[derive(Clone, Copy)]
struct Meta {
    place: Place,
    pinned: bool,
    visited: bool,
}

/// SIEVE over resident primaries; only unpinned ones are evicted.
pub struct Sieve {
    meta: Vec<Meta>,
    links: Links,
    /// Front is the oldest entry, back the newest.
    queue: List,
    /// The next entry the hand examines; [`NIL`] means the oldest.
    hand: u32,
    /// Evictable slots (all of them are queued).
    evictable: usize,
}

impl Sieve {
    /// A policy for slots `0..slots`.
    pub fn new(slots: usize) -> Self {
        Self {
            meta: vec![
                Meta {
                    place: Place::Absent,
                    pinned: false,
                    visited: false,
                };
                slots
            ],
            links: Links::new(slots),
            queue: List::new(),
            hand: NIL,
            evictable: 0,
        }
    }

    /// Unlinks `slot` from the queue, moving the hand past it first.
    fn unlink(&mut self, slot: u32) {
        if self.hand == slot {
            self.hand = self.links.next(slot);
        }
        self.queue.remove(&mut self.links, slot);
    }

    /// Checks every internal invariant (O(slots)).
    fn check_structures(&self) -> Result<(), String> {
        let mut evictable = 0;
        let mut hand_queued = self.hand == NIL;
        self.queue.check(&self.links, "sieve queue", |slot| {
            let meta = self.meta[slot as usize];
            if meta.place != Place::Queued {
                return Err(format!(
                    "sieve: slot {slot} queued but placed {:?}",
                    meta.place
                ));
            }
            evictable += usize::from(!meta.pinned);
            hand_queued |= slot == self.hand;
            Ok(())
        })?;
        if evictable != self.evictable {
            return Err(format!(
                "sieve: {evictable} evictable slots queued, counts {}",
                self.evictable
            ));
        }
        let tally = self
            .meta
            .iter()
            .filter(|m| m.place == Place::Queued)
            .count();
        if tally != self.queue.len() {
            return Err(format!(
                "sieve: {tally} slots placed in the queue, {} queued",
                self.queue.len()
            ));
        }
        if let Some(slot) = self
            .meta
            .iter()
            .position(|m| m.place == Place::Parked && !m.pinned)
        {
            return Err(format!("sieve: parked slot {slot} is not pinned"));
        }
        if !hand_queued {
            return Err(format!("sieve: the hand {} is off the queue", self.hand));
        }
        Ok(())
    }
}

impl EvictionPolicy for Sieve {
    fn name(&self) -> &'static str {
        "sieve"
    }

    fn on_register(&mut self, slot: u32, _hash: SequenceHash) {
        self.meta[slot as usize] = Meta {
            place: Place::Queued,
            pinned: true,
            visited: false,
        };
        self.queue.push_back(&mut self.links, slot);
    }

    fn on_hit(&mut self, slot: u32) {
        self.meta[slot as usize].visited = true;
    }

    fn on_release(&mut self, slot: u32) {
        let meta = &mut self.meta[slot as usize];
        meta.pinned = false;
        if meta.place == Place::Parked {
            meta.place = Place::Queued;
            self.queue.push_back(&mut self.links, slot);
        }
        self.evictable += 1;
    }

    fn on_reacquire(&mut self, slot: u32) {
        // The block keeps its place; the hand will park it if it gets there
        // before the block is released again.
        self.meta[slot as usize].pinned = true;
        self.evictable -= 1;
    }

    fn evict(&mut self) -> Option<u32> {
        if self.evictable == 0 {
            return None;
        }
        loop {
            let slot = if self.hand == NIL {
                self.queue.front()
            } else {
                self.hand
            };
            // Every evictable slot is queued, so the queue is not empty.
            debug_assert_ne!(slot, NIL);
            let meta = self.meta[slot as usize];
            if meta.pinned {
                self.unlink(slot);
                self.meta[slot as usize].place = Place::Parked;
            } else if meta.visited {
                self.meta[slot as usize].visited = false;
                self.hand = self.links.next(slot);
            } else {
                self.unlink(slot);
                self.meta[slot as usize].place = Place::Absent;
                self.evictable -= 1;
                return Some(slot);
            }
        }
    }

    fn on_forget(&mut self, slot: u32, _hash: SequenceHash) {
        debug_assert_eq!(self.meta[slot as usize].place, Place::Absent);
    }

    fn on_discard(&mut self, slot: u32, _hash: SequenceHash) {
        // Pinned: queued (not yet reached by the hand) or parked.
        if self.meta[slot as usize].place == Place::Queued {
            self.unlink(slot);
        }
        self.meta[slot as usize].place = Place::Absent;
    }

    fn len(&self) -> usize {
        self.evictable
    }

    fn check(&self) -> Result<(), String> {
        self.check_structures()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_utils::{check_random_sequences, evict_all, register_all, roots};

    #[test]
    fn sieve_spares_visited_entries_and_evicts_the_first_unvisited() {
        let hashes = roots(5);
        let mut sieve = Sieve::new(5);
        register_all(&mut sieve, &hashes, &[0, 1, 2, 3, 4]);
        sieve.on_hit(0);
        sieve.on_hit(2);
        assert_eq!(sieve.evict(), Some(1));
        assert_eq!(sieve.evict(), Some(3));
        // The hand passed 0 and 2 and cleared their bits: they go next time round.
        assert_eq!(evict_all(&mut sieve, &hashes), vec![4, 0, 2]);
    }

    #[test]
    fn hand_resumes_where_it_stopped_and_new_entries_wait_behind_it() {
        let hashes = roots(5);
        let mut sieve = Sieve::new(5);
        register_all(&mut sieve, &hashes, &[0, 1, 2, 3]);
        sieve.on_hit(0);
        sieve.on_hit(1);
        assert_eq!(sieve.evict(), Some(2));
        sieve.on_forget(2, hashes[2]);
        // Slot 4 joins at the newest end; the hand is at 3, then 4, then wraps.
        register_all(&mut sieve, &hashes, &[4]);
        sieve.on_hit(3);
        assert_eq!(evict_all(&mut sieve, &hashes), vec![4, 0, 1, 3]);
    }

    #[test]
    fn a_matched_and_released_block_keeps_its_place() {
        let hashes = roots(3);
        let mut sieve = Sieve::new(3);
        register_all(&mut sieve, &hashes, &[0, 1, 2]);
        // A match that pins 0 and lets go without a hit bit (a scan) does
        // not move it, unlike LRU.
        sieve.on_reacquire(0);
        sieve.on_release(0);
        assert_eq!(evict_all(&mut sieve, &hashes), vec![0, 1, 2]);
    }

    #[test]
    fn pinned_entries_met_by_the_hand_are_parked_and_requeued_on_release() {
        let hashes = roots(4);
        let mut sieve = Sieve::new(4);
        for slot in 0..4 {
            sieve.on_register(slot, hashes[slot as usize]);
        }
        sieve.on_hit(0);
        for slot in [1, 2, 3] {
            sieve.on_release(slot);
        }
        // 0 is pinned: the hand parks it (keeping its bit) and evicts 1.
        assert_eq!(sieve.evict(), Some(1));
        sieve.on_forget(1, hashes[1]);
        assert_eq!(sieve.check(), Ok(()));
        // 0 rejoins behind 2 and 3 when released; its bit spares it once.
        sieve.on_release(0);
        assert_eq!(sieve.len(), 3);
        assert_eq!(sieve.evict(), Some(2));
        sieve.on_forget(2, hashes[2]);
        sieve.on_hit(3);
        // The hand passes 3 (clearing it) and 0 (clearing it), wraps, evicts 3.
        assert_eq!(evict_all(&mut sieve, &hashes), vec![3, 0]);
    }

    #[test]
    fn random_hook_sequences_agree_with_the_model() {
        check_random_sequences(Sieve::new);
    }
}
