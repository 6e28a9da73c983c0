//! [`Orders`]: one structure over the evictable blocks that can answer for
//! two eviction orders at once, each in O(1).
//!
//! Evictable blocks sit in four intrusive lists in release order, as
//! [`super::super::Lineage`] keeps them, with leaves split by use:
//!
//! - `once`: leaves (no resident child) not reused since registration,
//!   that were leaves when released;
//! - `bared`: the same, but released with a child and left a leaf when
//!   their last child went (the inside of a chain whose tail was evicted);
//! - `twice`: leaves reused at least once: found again while evictable
//!   (reacquired), so the hits of the request that registered a block (or
//!   of requests that overlap it) count as one use, as LRU-K's correlated
//!   reference period has them; or registered again while a fixed-size
//!   memory of blocks that left (`hedge/ghosts.rs`, twice as many entries
//!   as slots) remembers it, as LRU-K's retained history has it;
//! - `inner`: blocks with a resident child, the last resort of both orders.
//!
//! [`Order::LeafLru`] takes the oldest of the leaf fronts (by release
//! stamp): leaf-first LRU, what `Lineage` does. [`Order::OnceFirst`] takes
//! a leaf used once while there is one: blocks used once leave before any
//! block used twice, as LRU-2 and 2Q order them. Among the leaves used
//! once, a bared parent waits behind every leaf released before it was
//! bared: evicting a chain's tail does not unravel the rest of the chain
//! at once, as a single `once` list with bared parents at its front did.
//! (Alone on the Mooncake trace at 10,981 blocks, that version lost 1.3
//! points to leaf-first LRU where this one gains 2.0; taking over from
//! leaf-first LRU after 2,000 of Hedge's 7,100 sampled references, it
//! ended at 39.9% where this one ends at 44.6%.) A reused leaf released
//! more than eight pools' worth of clock ticks ago (eight times the slot
//! count; the clock counts releases and barings) has outlived its
//! protection and goes first. Without that limit,
//! blocks reused long ago would outlive every newcomer for good (LRU-2's
//! known flaw, which its retained history softens and 2Q's bounded queue
//! avoids). Both read the same lists,
//! so following either costs the same, and switching costs nothing.
//!
//! Every list stays sorted by release stamp (`check` verifies it): a parent
//! whose last child leaves rejoins the front of its list (`bared` or
//! `twice`) with a stamp no newer than that front's or `once`'s, as
//! `Lineage` puts it first; `bared` also keeps the clock at which each
//! entry joined, newest at the front, for once-first. Without a keyed tree
//! (the miniature caches) the owner links each slot to its parent
//! ([`Orders::link`]). This module knows nothing of learning;
//! [`super::Hedge`] decides which order evicts.

use super::super::list::{Links, List, NIL};
use super::super::tree::{BlockTree, ParentLinks};
use super::ghosts::Ghosts;
use crate::SequenceHash;

/// The eviction orders [`Orders`] can follow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Order {
    /// Leaf-first LRU.
    LeafLru,
    /// Leaves used once first (oldest first, a bared parent as of when it
    /// was bared), then leaves used twice.
    OnceFirst,
}

/// Where a slot is: pinned (or not registered), or in one of the lists.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    Once = 0,
    Twice = 1,
    Inner = 2,
    Bared = 3,
    Pinned = 4,
}

/// What a slot's hooks read and write, in one word (8 bytes a slot, so
/// the hot per-slot state of a large pool stays small): the release stamp
/// above bit 4, then the reuse bit, then the place (3 bits).
#[derive(Clone, Copy)]
struct Meta(u64);

impl Meta {
    /// Not registered, or pinned: no stamp, not reused.
    const PINNED: Meta = Meta(Place::Pinned as u64);
    const PLACE: u64 = 7;
    const REUSED: u64 = 1 << 3;
    const STAMP_SHIFT: u32 = 4;

    #[inline]
    fn stamp(self) -> u64 {
        self.0 >> Self::STAMP_SHIFT
    }

    #[inline]
    fn place(self) -> Place {
        match self.0 & Self::PLACE {
            0 => Place::Once,
            1 => Place::Twice,
            2 => Place::Inner,
            3 => Place::Bared,
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
        Meta(stamp << Self::STAMP_SHIFT | self.0 & (Self::REUSED | Self::PLACE))
    }

    #[inline]
    fn with_place(self, place: Place) -> Meta {
        Meta(self.0 & !Self::PLACE | place as u64)
    }

    #[inline]
    fn with_reused(self, reused: bool) -> Meta {
        Meta(self.0 & !Self::REUSED | (u64::from(reused) * Self::REUSED))
    }
}

/// The tree over the slots: the resident blocks' own, found by key, or one
/// whose owner links the slots (a miniature cache, whose tree joins sampled
/// blocks to sampled ancestors).
enum Tree {
    Keyed(BlockTree),
    Linked(ParentLinks),
}

/// The lists and the block tree.
pub(crate) struct Orders {
    /// Which slots have resident children.
    tree: Tree,
    links: Links,
    /// `once`, `twice`, `inner`, `bared`, indexed by [`Place`].
    lists: [List; 4],
    meta: Vec<Meta>,
    /// Per slot in `bared`: the clock when it joined (low 32 bits; ages
    /// compare modulo 2^32).
    bared_at: Vec<u32>,
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
    /// Orders over slots `0..slots`, with the blocks' own tree if `tree`
    /// (else the owner links slots through [`Orders::link`]).
    pub(crate) fn new(slots: usize, tree: bool) -> Self {
        Self {
            tree: if tree {
                Tree::Keyed(BlockTree::new(slots))
            } else {
                Tree::Linked(ParentLinks::new(slots))
            },
            links: Links::new(slots),
            lists: [List::new(), List::new(), List::new(), List::new()],
            meta: vec![Meta::PINNED; slots],
            bared_at: vec![0; slots],
            clock: 0,
            protection: 8 * slots as u64,
            ghosts: Ghosts::new(2 * slots),
        }
    }

    /// Whether `slot` has a resident child.
    #[inline]
    fn has_children(&self, slot: u32) -> bool {
        match &self.tree {
            Tree::Keyed(tree) => tree.children(slot) > 0,
            Tree::Linked(links) => links.children(slot) > 0,
        }
    }

    /// Without a keyed tree: links a newly registered `slot` under
    /// `parent` (the owner's choice of parent).
    pub(crate) fn link(&mut self, slot: u32, parent: u32) {
        let Tree::Linked(links) = &mut self.tree else {
            debug_assert!(false, "orders: link with a keyed tree");
            return;
        };
        links.link(slot, parent);
        self.reclassify(parent);
    }

    /// The list an evictable `slot` belongs in at release (a leaf used
    /// once that loses its last child later goes to `bared` instead).
    #[inline]
    fn class(&self, slot: u32) -> Place {
        if self.has_children(slot) {
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

    /// How long ago (in clock ticks, modulo 2^32) the clock read `stamp`'s
    /// low 32 bits.
    #[inline]
    fn ago(&self, stamp: u32) -> u32 {
        (self.clock as u32).wrapping_sub(stamp)
    }

    /// The release stamp at the front of `place`'s list (`u64::MAX` if
    /// the list is empty).
    #[inline]
    fn front_stamp(&self, place: Place) -> u64 {
        let front = self.lists[place as usize].front();
        if front == NIL {
            u64::MAX
        } else {
            self.meta[front as usize].stamp()
        }
    }

    /// Moves an evictable `slot` to the list its children call for; a slot
    /// that became a leaf goes first, no newer than that list's front (and,
    /// to `bared`, no newer than `once`'s front: leaf-first LRU takes it
    /// next, as `Lineage` does).
    fn reclassify(&mut self, slot: u32) {
        let from = self.meta[slot as usize].place();
        let mut wanted = self.class(slot);
        if wanted == Place::Once && from != Place::Once {
            wanted = Place::Bared;
        }
        if from == Place::Pinned || from == wanted {
            return;
        }
        self.lists[from as usize].remove(&mut self.links, slot);
        let stamp = if wanted == Place::Inner {
            // Gained a child: to the back of the last resort, fresh stamp.
            self.lists[wanted as usize].push_back(&mut self.links, slot);
            self.clock += 1;
            self.clock
        } else {
            let mut stamp = self.meta[slot as usize].stamp();
            stamp = stamp.min(self.front_stamp(wanted));
            if wanted == Place::Bared {
                stamp = stamp.min(self.front_stamp(Place::Once));
                // The clock counts barings too, so a bared parent joins
                // after every leaf released so far.
                self.clock += 1;
                self.bared_at[slot as usize] = self.clock as u32;
            }
            self.lists[wanted as usize].push_front(&mut self.links, slot);
            stamp
        };
        let meta = &mut self.meta[slot as usize];
        *meta = meta.with_stamp(stamp).with_place(wanted);
    }

    /// `slot` now holds `hash`, whose fixed-seed hash is `fingerprint`
    /// (what the ghosts file it under).
    /// Returns the slot's resident parent, if there is a tree and one.
    #[inline]
    pub(crate) fn on_register(
        &mut self,
        slot: u32,
        hash: SequenceHash,
        fingerprint: u64,
    ) -> Option<u32> {
        let reused = self.ghosts.take(fingerprint);
        let meta = &mut self.meta[slot as usize];
        *meta = meta.with_place(Place::Pinned).with_reused(reused);
        let parent = match &mut self.tree {
            Tree::Keyed(tree) => tree.register(slot, hash),
            Tree::Linked(_) => None,
        };
        if let Some(parent) = parent {
            self.reclassify(parent);
        }
        parent
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
        let [once, twice, inner, bared] = &self.lists;
        let (mut once, twice) = (once.front(), twice.front());
        if bared.len() > 0 {
            let stamp = |slot: u32| self.meta[slot as usize].stamp();
            once = match order {
                // Leaf-first LRU: the older front; a bared parent's stamp is
                // no newer than `once`'s front when it joined.
                Order::LeafLru if once == NIL || stamp(bared.front()) <= stamp(once) => {
                    bared.front()
                }
                Order::LeafLru => once,
                // Once-first: the parent bared longest ago, unless a leaf
                // in `once` was released before that.
                Order::OnceFirst
                    if once == NIL
                        || self.ago(self.bared_at[bared.back() as usize])
                            > self.ago(stamp(once) as u32) =>
                {
                    bared.back()
                }
                Order::OnceFirst => once,
            };
        }
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
        let parent = match &mut self.tree {
            Tree::Keyed(tree) => tree.forget(slot),
            Tree::Linked(links) => links.detach(slot),
        };
        if let Some(parent) = parent {
            self.reclassify(parent);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lists.iter().map(List::len).sum()
    }

    /// Every list sorted by stamp (`bared` also by the clock it joined at,
    /// newest first), every slot in the list its place and its class say,
    /// the tree's child counts right.
    pub(crate) fn check(&self) -> Result<(), String> {
        match &self.tree {
            Tree::Keyed(tree) => tree.check()?,
            Tree::Linked(links) => links.check()?,
        }
        for (list, place) in
            self.lists
                .iter()
                .zip([Place::Once, Place::Twice, Place::Inner, Place::Bared])
        {
            let mut count = 0;
            let mut slot = list.front();
            let mut last = 0;
            let mut joined = 0;
            while slot != NIL {
                let s = slot as usize;
                let meta = self.meta[s];
                let class = match self.class(slot) {
                    Place::Once if place == Place::Bared => Place::Bared,
                    class => class,
                };
                if meta.place() != place || class != place {
                    return Err(format!(
                        "orders: slot {slot} in {place:?} list is placed {:?}, belongs in {class:?}",
                        meta.place(),
                    ));
                }
                if place != Place::Inner && meta.stamp() < last {
                    return Err(format!(
                        "orders: {place:?} list out of release order at slot {slot}"
                    ));
                }
                if place == Place::Bared {
                    if self.ago(self.bared_at[s]) < joined {
                        return Err(format!("orders: bared list out of order at slot {slot}"));
                    }
                    joined = self.ago(self.bared_at[s]);
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
