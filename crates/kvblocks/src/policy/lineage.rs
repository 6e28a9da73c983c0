//! Leaf-first LRU: never evict a block while a resident block extends it.
//!
//! A prefix match stops at the first miss, so a resident child whose parent
//! was evicted can never be matched: evicting the parent wastes the child too.
//! A radix-tree cache (SGLang) avoids that by evicting leaves only; this policy
//! does the same over slot numbers.
//!
//! It learns the tree from registrations: a [`SequenceHash`] names its
//! parent's sequence-hash fragment and position, so a small table of
//! `(position, fragment) -> slot` (`super::tree::ParentIndex`) finds the
//! parent without the caller's help.
//! Evictable slots sit in one of two LRU lists: `leaves` (no resident child)
//! and `inner` (some resident child). Eviction takes the oldest leaf; only if
//! there is none (every evictable block is the parent of a pinned block) does
//! it fall back to the oldest inner block, whose children then become roots.
//!
//! When the last child of an evictable parent goes, the parent becomes a
//! leaf at the *front* of `leaves`: a parent is matched whenever its child
//! is, so it was last used no later than the child just evicted, which was
//! the oldest leaf.

use super::list::{Links, List};
use super::tree::BlockTree;
use super::EvictionPolicy;
use crate::SequenceHash;

/// Where a slot is: pinned, or evictable in one of the two lists.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Pinned,
    Leaf,
    Inner,
}

/// Leaf-first LRU over evictable slots.
pub struct Lineage {
    places: Vec<Place>,
    links: Links,
    leaves: List,
    inner: List,
    tree: BlockTree,
}

impl Lineage {
    /// A policy for slots `0..slots`.
    pub fn new(slots: usize) -> Self {
        Self {
            places: vec![Place::Pinned; slots],
            links: Links::new(slots),
            leaves: List::new(),
            inner: List::new(),
            tree: BlockTree::new(slots),
        }
    }

    /// Moves an evictable `slot` to the list its child count calls for.
    fn reclassify(&mut self, slot: u32, as_oldest: bool) {
        let from = self.places[slot as usize];
        if from == Place::Pinned {
            return;
        }
        let wanted = if self.tree.children(slot) == 0 {
            Place::Leaf
        } else {
            Place::Inner
        };
        if wanted == from {
            return;
        }
        let links = &mut self.links;
        match from {
            Place::Leaf => self.leaves.remove(links, slot),
            _ => self.inner.remove(links, slot),
        }
        let list = match wanted {
            Place::Leaf => &mut self.leaves,
            _ => &mut self.inner,
        };
        if as_oldest {
            list.push_front(links, slot);
        } else {
            list.push_back(links, slot);
        }
        self.places[slot as usize] = wanted;
    }

    #[cfg(test)]
    fn children_of(&self, slot: u32) -> u32 {
        self.tree.children(slot)
    }
}

impl EvictionPolicy for Lineage {
    fn name(&self) -> &'static str {
        "lineage"
    }

    fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        self.places[slot as usize] = Place::Pinned;
        if let Some(parent) = self.tree.register(slot, hash) {
            self.reclassify(parent, false);
        }
    }

    fn observes_hits(&self) -> bool {
        false
    }

    fn on_release(&mut self, slot: u32) {
        let place = if self.tree.children(slot) == 0 {
            Place::Leaf
        } else {
            Place::Inner
        };
        self.places[slot as usize] = place;
        let links = &mut self.links;
        match place {
            Place::Leaf => self.leaves.push_back(links, slot),
            _ => self.inner.push_back(links, slot),
        }
    }

    fn on_reacquire(&mut self, slot: u32) {
        let place = std::mem::replace(&mut self.places[slot as usize], Place::Pinned);
        match place {
            Place::Leaf => self.leaves.remove(&mut self.links, slot),
            Place::Inner => self.inner.remove(&mut self.links, slot),
            Place::Pinned => {}
        }
    }

    fn evict(&mut self) -> Option<u32> {
        let slot = match self.leaves.pop_front(&mut self.links) {
            Some(slot) => slot,
            None => self.inner.pop_front(&mut self.links)?,
        };
        self.places[slot as usize] = Place::Pinned;
        Some(slot)
    }

    fn peek_victim(&self) -> Option<u32> {
        [&self.leaves, &self.inner]
            .into_iter()
            .find(|list| list.len() > 0)
            .map(|list| list.front())
    }

    fn on_forget(&mut self, slot: u32, _hash: SequenceHash) {
        if let Some(parent) = self.tree.forget(slot) {
            self.reclassify(parent, true);
        }
    }

    fn len(&self) -> usize {
        self.leaves.len() + self.inner.len()
    }

    fn check(&self) -> Result<(), String> {
        for (list, place, name) in [
            (&self.leaves, Place::Leaf, "lineage leaves"),
            (&self.inner, Place::Inner, "lineage inner list"),
        ] {
            list.check(&self.links, name, |slot| {
                if self.places[slot as usize] != place {
                    return Err(format!("{name}: slot {slot} is not placed there"));
                }
                if (self.tree.children(slot) == 0) != (place == Place::Leaf) {
                    return Err(format!(
                        "{name}: slot {slot} has the wrong number of children"
                    ));
                }
                Ok(())
            })?;
        }
        let listed = self.places.iter().filter(|p| **p != Place::Pinned).count();
        if listed != self.len() {
            return Err(format!(
                "lineage: {listed} slots placed evictable, {} listed",
                self.len()
            ));
        }
        self.tree.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(len: usize, seed: u64) -> Vec<SequenceHash> {
        let mut hashes = vec![SequenceHash::root(seed)];
        for i in 1..len {
            let next = hashes[i - 1].extend(seed ^ (i as u64) << 8);
            hashes.push(next);
        }
        hashes
    }

    #[test]
    fn evicts_leaves_before_their_parents_even_when_parents_are_older() {
        let mut policy = Lineage::new(8);
        let hashes = chain(3, 7);
        for (slot, hash) in hashes.iter().enumerate() {
            policy.on_register(slot as u32, *hash);
        }
        assert_eq!(policy.children_of(0), 1);
        // Release root first (oldest), then the rest.
        for slot in 0..3 {
            policy.on_release(slot);
        }
        let mut order = Vec::new();
        while let Some(slot) = policy.evict() {
            policy.on_forget(slot, hashes[slot as usize]);
            order.push(slot);
        }
        assert_eq!(order, vec![2, 1, 0]);
        assert_eq!(policy.check(), Ok(()));
    }

    #[test]
    fn falls_back_to_inner_blocks_when_no_leaf_is_evictable() {
        let mut policy = Lineage::new(4);
        let hashes = chain(2, 9);
        policy.on_register(0, hashes[0]);
        policy.on_register(1, hashes[1]);
        policy.on_release(0); // child (slot 1) stays pinned
        assert_eq!(policy.evict(), Some(0));
        policy.on_forget(0, hashes[0]);
        // The orphaned child becomes evictable as a plain leaf later.
        policy.on_release(1);
        assert_eq!(policy.evict(), Some(1));
    }

    #[test]
    fn reused_parent_slot_is_not_confused_with_the_old_parent() {
        let mut policy = Lineage::new(4);
        let a = chain(2, 1);
        let b = chain(1, 2);
        policy.on_register(0, a[0]);
        policy.on_register(1, a[1]);
        policy.on_release(0);
        assert_eq!(policy.evict(), Some(0));
        policy.on_forget(0, a[0]);
        policy.on_register(0, b[0]); // slot 0 now holds an unrelated root
        policy.on_release(1);
        assert_eq!(policy.evict(), Some(1));
        policy.on_forget(1, a[1]);
        assert_eq!(policy.children_of(0), 0);
    }
}
