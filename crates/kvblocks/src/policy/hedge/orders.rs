//! [`Orders`]: one structure over the evictable blocks that can answer for
//! two eviction orders at once, each in O(1).
//!
//! Evictable blocks sit in three intrusive lists in release order, as
//! [`super::super::Lineage`] keeps them, with leaves split by use:
//!
//! - `once`: leaves (no resident child) not reused since registration;
//! - `twice`: leaves reused at least once: found again while evictable
//!   (reacquired), so the hits of the request that registered a block (or
//!   of requests that overlap it) count as one use, as LRU-K's correlated
//!   reference period has them; or registered again while a fixed-size
//!   memory of blocks that left (`hedge/ghosts.rs`, twice as many entries
//!   as slots) remembers it, as LRU-K's retained history has it;
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

use super::super::list::{Links, List, NIL};
use super::super::tree::BlockTree;
use super::ghosts::Ghosts;
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

/// What a slot's hooks read and write, in one word (8 bytes a slot, so
/// the hot per-slot state of a large pool stays small): the release stamp
/// above bit 3, then the reuse bit, then the place.
#[derive(Clone, Copy)]
struct Meta(u64);

impl Meta {
    /// Not registered, or pinned: no stamp, not reused.
    const PINNED: Meta = Meta(Place::Pinned as u64);
    const REUSED: u64 = 1 << 2;
    const STAMP_SHIFT: u32 = 3;

    #[inline]
    fn stamp(self) -> u64 {
        self.0 >> Self::STAMP_SHIFT
    }

    #[inline]
    fn place(self) -> Place {
        match self.0 & 3 {
            0 => Place::Once,
            1 => Place::Twice,
            2 => Place::Inner,
            _ => Place::Pinned,
        }
    }

    /// Found again after a release (or remembered by the ghosts).
    #[inline]
    fn reused(self) -> bool {
        self.0 & Self::REUSED != 0
    }

    #[inline]
    fn with_stamp(self, stamp: u64) -> Meta {
        Meta(stamp << Self::STAMP_SHIFT | self.0 & 7)
    }

    #[inline]
    fn with_place(self, place: Place) -> Meta {
        Meta(self.0 & !3 | place as u64)
    }

    #[inline]
    fn with_reused(self, reused: bool) -> Meta {
        Meta(self.0 & !Self::REUSED | u64::from(reused) << 2)
    }
}

/// The lists and the block tree.
pub(crate) struct Orders {
    /// The resident blocks' tree; `None` in a miniature cache that samples
    /// keys, whose blocks' parents are seldom in the sample.
    tree: Option<BlockTree>,
    links: Links,
    /// `once`, `twice`, `inner`, indexed by [`Place`].
    lists: [List; 3],
    meta: Vec<Meta>,
    clock: u64,
    /// Blocks that left, as LRU-K's retained history: one that registers
    /// again is on its second use.
    ghosts: Ghosts,
    /// Once-first protects a reused leaf for this many releases after its
    /// own: eight pools' worth of turnover. (One pool protects too little
    /// against scans whose reuse distance passes the pool; unbounded, too
    /// long: on the switching test, 1x / 8x / 16x keep 2,544 / 5,372 /
    /// 5,592 scan-phase hits and 888 / 1,708 / 1,676 frequency-phase hits.)
    protection: u64,
}

impl Orders {
    /// Orders over slots `0..slots`, leaf-first if `tree` (else every
    /// block counts as a leaf).
    pub(crate) fn new(slots: usize, tree: bool) -> Self {
        Self {
            tree: tree.then(|| BlockTree::new(slots)),
            links: Links::new(slots),
            lists: [List::new(), List::new(), List::new()],
            meta: vec![Meta::PINNED; slots],
            clock: 0,
            protection: 8 * slots as u64,
            ghosts: Ghosts::new(2 * slots),
        }
    }

    /// Resident children of `slot` (none without a tree).
    #[inline]
    fn children(&self, slot: u32) -> u32 {
        self.tree.as_ref().map_or(0, |tree| tree.children(slot))
    }

    /// The list an evictable `slot` belongs in now.
    #[inline]
    fn class(&self, slot: u32) -> Place {
        if self.children(slot) > 0 {
            Place::Inner
        } else if self.meta[slot as usize].reused() {
            Place::Twice
        } else {
            Place::Once
        }
    }

    #[inline]
    fn unlink(&mut self, slot: u32) {
        let meta = &mut self.meta[slot as usize];
        let place = meta.place();
        *meta = meta.with_place(Place::Pinned);
        if place != Place::Pinned {
            self.lists[place as usize].remove(&mut self.links, slot);
        }
    }

    /// Moves an evictable `slot` to the list its children call for; a slot
    /// that became a leaf goes first, no newer than that list's front.
    fn reclassify(&mut self, slot: u32) {
        let from = self.meta[slot as usize].place();
        let wanted = self.class(slot);
        if from == Place::Pinned || from == wanted {
            return;
        }
        self.lists[from as usize].remove(&mut self.links, slot);
        let list = &mut self.lists[wanted as usize];
        let stamp = if wanted == Place::Inner {
            // Gained a child: to the back of the last resort, fresh stamp.
            list.push_back(&mut self.links, slot);
            self.clock += 1;
            self.clock
        } else {
            let front = list.front();
            list.push_front(&mut self.links, slot);
            let own = self.meta[slot as usize].stamp();
            if front == NIL {
                own
            } else {
                own.min(self.meta[front as usize].stamp())
            }
        };
        let meta = &mut self.meta[slot as usize];
        *meta = meta.with_stamp(stamp).with_place(wanted);
    }

    /// `slot` now holds `hash`, whose fixed-seed hash is `fingerprint`
    /// (what the ghosts file it under).
    #[inline]
    pub(crate) fn on_register(&mut self, slot: u32, hash: SequenceHash, fingerprint: u64) {
        let reused = self.ghosts.take(fingerprint);
        let meta = &mut self.meta[slot as usize];
        *meta = meta.with_place(Place::Pinned).with_reused(reused);
        if let Some(parent) = self
            .tree
            .as_mut()
            .and_then(|tree| tree.register(slot, hash))
        {
            self.reclassify(parent);
        }
    }

    /// Appends `slot` to its list with a fresh stamp.
    #[inline]
    pub(crate) fn on_release(&mut self, slot: u32) {
        self.clock += 1;
        let place = self.class(slot);
        let meta = &mut self.meta[slot as usize];
        *meta = meta.with_stamp(self.clock).with_place(place);
        self.lists[place as usize].push_back(&mut self.links, slot);
    }

    /// An evictable slot is found again: a use after a release, so it is
    /// reused from now on. (Hits on a pinned slot need no hook: one that
    /// was never released is still in the use that registered it, as
    /// LRU-K's correlated reference period has it, and one that was got
    /// here first.)
    #[inline]
    pub(crate) fn on_reacquire(&mut self, slot: u32) {
        let meta = &mut self.meta[slot as usize];
        *meta = meta.with_reused(true);
        self.unlink(slot);
    }

    /// The next victim under `order`, without changing anything.
    #[inline]
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
                Order::OnceFirst
                    if self.clock - self.meta[t as usize].stamp() > self.protection =>
                {
                    t
                }
                Order::OnceFirst => o,
                Order::LeafLru if self.meta[t as usize].stamp() < self.meta[o as usize].stamp() => {
                    t
                }
                Order::LeafLru => o,
            },
        };
        let victim = if leaf == NIL { inner.front() } else { leaf };
        (victim != NIL).then_some(victim)
    }

    #[inline]
    pub(crate) fn evict(&mut self, order: Order) -> Option<u32> {
        let victim = self.peek(order)?;
        self.unlink(victim);
        Some(victim)
    }

    /// The slot leaves (evicted, or discarded while pinned); `fingerprint`
    /// as at its registration.
    #[inline]
    pub(crate) fn forget(&mut self, slot: u32, fingerprint: u64) {
        self.ghosts.insert(fingerprint);
        self.unlink(slot);
        let meta = &mut self.meta[slot as usize];
        *meta = meta.with_reused(false);
        if let Some(parent) = self.tree.as_mut().and_then(|tree| tree.forget(slot)) {
            self.reclassify(parent);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lists.iter().map(List::len).sum()
    }

    /// Every list sorted by stamp, every slot in the list its place and
    /// its class say, the tree's child counts right.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(tree) = &self.tree {
            tree.check()?;
        }
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
                let meta = self.meta[s];
                if meta.place() != place || self.class(slot) != place {
                    return Err(format!(
                        "orders: slot {slot} in {place:?} list is placed {:?}, belongs in {:?}",
                        meta.place(),
                        self.class(slot)
                    ));
                }
                if place != Place::Inner && meta.stamp() < last {
                    return Err(format!(
                        "orders: {place:?} list out of release order at slot {slot}"
                    ));
                }
                last = meta.stamp();
                count += 1;
                if count > list.len() {
                    return Err(format!("orders: {place:?} list longer than its count"));
                }
                slot = self.links.next(slot);
            }
            let tally = self.meta.iter().filter(|m| m.place() == place).count();
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
