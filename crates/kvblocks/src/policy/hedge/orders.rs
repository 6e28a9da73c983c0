//! [`Orders`]: one structure over the evictable blocks that can answer for
//! two eviction orders at once, each in O(1).
//!
//! Evictable blocks sit in three intrusive lists in release order, as
//! [`super::super::Lineage`] keeps them, with leaves split by use:
//!
//! - `once`: leaves (no resident child) not reused since registration;
//! - `twice`: leaves reused at least once: hit after their first release,
//!   so the hits of the request that registered a block (or of requests
//!   that overlap it) count as one use, as LRU-K's correlated reference
//!   period has them; or registered again while a fixed-size history
//!   (`policy/history.rs`, twice as many entries as slots) remembers that
//!   the block left recently, as LRU-K's retained history has it;
//! - `inner`: blocks with a resident child, the last resort of both orders.
//!
//! [`Order::LeafLru`] takes the older of the two leaf fronts (by release
//! stamp): leaf-first LRU, what `Lineage` does. [`Order::OnceFirst`] takes
//! the `once` front while there is one: blocks used once leave before any
//! block used twice, as LRU-2 and 2Q order them, except that a reused leaf
//! released more than eight pools' worth of releases ago (eight times the
//! slot count) has outlived its protection and goes first. Without that limit,
//! blocks reused long ago would outlive every newcomer for good (LRU-2's
//! known flaw, which its retained history softens and 2Q's bounded queue
//! avoids). Both read the same lists,
//! so following either costs the same, and switching costs nothing.
//!
//! Every list stays sorted by release stamp (`check` verifies it): a parent
//! whose last child leaves rejoins the front of its list with a stamp no
//! newer than the front's, as `Lineage` puts it first. This module knows
//! nothing of learning; [`super::Hedge`] decides which order evicts.

use super::super::history::History;
use super::super::list::{Links, List, NIL};
use super::super::tree::BlockTree;
use crate::SequenceHash;

/// The eviction orders [`Orders`] can follow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Order {
    /// Leaf-first LRU.
    LeafLru,
    /// Leaves used once first (oldest first), then leaves used twice.
    OnceFirst,
}

/// Where a slot is: pinned (or not registered), or in one of the lists.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    Once = 0,
    Twice = 1,
    Inner = 2,
    Pinned = 3,
}

/// Released at least once since registration.
const RELEASED: u8 = 1;
/// Reused: hit after a release.
const REUSED: u8 = 2;

/// The lists and the block tree.
pub(crate) struct Orders {
    tree: BlockTree,
    links: Links,
    /// `once`, `twice`, `inner`, indexed by [`Place`].
    lists: [List; 3],
    place: Vec<Place>,
    flags: Vec<u8>,
    /// Release stamp per slot.
    stamp: Vec<u64>,
    clock: u64,
    /// Keys of blocks that left, as LRU-K's retained history: one that
    /// registers again is on its second use.
    history: History,
    /// Once-first protects a reused leaf for this many releases after its
    /// own: eight pools' worth of turnover. (One pool protects too little
    /// against scans whose reuse distance passes the pool; unbounded, too
    /// long: on the switching test, 1x / 8x / 16x keep 2,544 / 5,372 /
    /// 5,592 scan-phase hits and 888 / 1,708 / 1,676 frequency-phase hits.)
    protection: u64,
}

impl Orders {
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            tree: BlockTree::new(slots),
            links: Links::new(slots),
            lists: [List::new(), List::new(), List::new()],
            place: vec![Place::Pinned; slots],
            flags: vec![0; slots],
            stamp: vec![0; slots],
            clock: 0,
            protection: 8 * slots as u64,
            history: History::new(2 * slots),
        }
    }

    /// The list an evictable `slot` belongs in now.
    fn class(&self, slot: u32) -> Place {
        if self.tree.children(slot) > 0 {
            Place::Inner
        } else if self.flags[slot as usize] & REUSED != 0 {
            Place::Twice
        } else {
            Place::Once
        }
    }

    fn unlink(&mut self, slot: u32) {
        let place = std::mem::replace(&mut self.place[slot as usize], Place::Pinned);
        if place != Place::Pinned {
            self.lists[place as usize].remove(&mut self.links, slot);
        }
    }

    /// Appends an evictable `slot` to its list with a fresh stamp.
    fn push_newest(&mut self, slot: u32) {
        self.clock += 1;
        self.stamp[slot as usize] = self.clock;
        let place = self.class(slot);
        self.place[slot as usize] = place;
        self.lists[place as usize].push_back(&mut self.links, slot);
    }

    /// Moves an evictable `slot` to the list its children call for; a slot
    /// that became a leaf goes first, no newer than that list's front.
    fn reclassify(&mut self, slot: u32) {
        let from = self.place[slot as usize];
        let wanted = self.class(slot);
        if from == Place::Pinned || from == wanted {
            return;
        }
        self.unlink(slot);
        let list = &mut self.lists[wanted as usize];
        if wanted == Place::Inner {
            // Gained a child: to the back of the last resort, fresh stamp.
            self.clock += 1;
            self.stamp[slot as usize] = self.clock;
            list.push_back(&mut self.links, slot);
        } else {
            let front = list.front();
            if front != NIL {
                let front_stamp = self.stamp[front as usize];
                let own = &mut self.stamp[slot as usize];
                *own = (*own).min(front_stamp);
            }
            list.push_front(&mut self.links, slot);
        }
        self.place[slot as usize] = wanted;
    }

    pub(crate) fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        self.place[slot as usize] = Place::Pinned;
        self.flags[slot as usize] = if self.history.take(hash).is_some() {
            REUSED
        } else {
            0
        };
        if let Some(parent) = self.tree.register(slot, hash) {
            self.reclassify(parent);
        }
    }

    pub(crate) fn on_hit(&mut self, slot: u32) {
        let s = slot as usize;
        if self.flags[s] & RELEASED != 0 && self.flags[s] & REUSED == 0 {
            self.flags[s] |= REUSED;
            if self.place[s] == Place::Once {
                // Hit while evictable and not pinned: a touch.
                self.unlink(slot);
                self.push_newest(slot);
            }
        }
    }

    pub(crate) fn on_release(&mut self, slot: u32) {
        self.flags[slot as usize] |= RELEASED;
        self.push_newest(slot);
    }

    pub(crate) fn on_reacquire(&mut self, slot: u32) {
        self.unlink(slot);
    }

    /// The next victim under `order`, without changing anything.
    pub(crate) fn peek(&self, order: Order) -> Option<u32> {
        let [once, twice, inner] = &self.lists;
        let (once, twice) = (once.front(), twice.front());
        let leaf = match (once, twice) {
            (NIL, NIL) => NIL,
            (NIL, t) => t,
            (o, NIL) => o,
            (o, t) => match order {
                // A reused leaf idle for eight pools' worth of releases has
                // outlived its protection.
                Order::OnceFirst if self.clock - self.stamp[t as usize] > self.protection => t,
                Order::OnceFirst => o,
                Order::LeafLru if self.stamp[t as usize] < self.stamp[o as usize] => t,
                Order::LeafLru => o,
            },
        };
        let victim = if leaf == NIL { inner.front() } else { leaf };
        (victim != NIL).then_some(victim)
    }

    pub(crate) fn evict(&mut self, order: Order) -> Option<u32> {
        let victim = self.peek(order)?;
        self.unlink(victim);
        Some(victim)
    }

    /// The slot leaves (evicted, or discarded while pinned).
    pub(crate) fn forget(&mut self, slot: u32, hash: SequenceHash) {
        self.history.insert(hash, 0);
        self.unlink(slot);
        self.flags[slot as usize] = 0;
        if let Some(parent) = self.tree.forget(slot) {
            self.reclassify(parent);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lists.iter().map(List::len).sum()
    }

    /// Every list sorted by stamp, every slot in the list its place says.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (list, place) in self
            .lists
            .iter()
            .zip([Place::Once, Place::Twice, Place::Inner])
        {
            let mut count = 0;
            let mut slot = list.front();
            let mut last = 0;
            while slot != NIL {
                let s = slot as usize;
                if self.place[s] != place {
                    return Err(format!(
                        "orders: slot {slot} in {place:?} list is {:?}",
                        self.place[s]
                    ));
                }
                if place != Place::Inner && self.stamp[s] < last {
                    return Err(format!(
                        "orders: {place:?} list out of release order at slot {slot}"
                    ));
                }
                last = self.stamp[s];
                count += 1;
                if count > list.len() {
                    return Err(format!("orders: {place:?} list longer than its count"));
                }
                slot = self.links.next(slot);
            }
            let tally = self.place.iter().filter(|&&p| p == place).count();
            if count != list.len() || tally != count {
                return Err(format!(
                    "orders: {place:?} list holds {count}, counts {}, places say {tally}",
                    list.len()
                ));
            }
        }
        Ok(())
    }
}
