//! [`BlockTree`]: the tree of resident blocks, for the policies that evict
//! leaves first (`Lineage`, `PrefixAware`).
//!
//! A [`SequenceHash`] names its parent by position and a fragment of the
//! parent's sequence hash, so a table of `(position, fragment) -> slot` over
//! resident blocks finds the parent without the caller's help. This module
//! owns that table, each slot's link to its parent and its count of resident
//! children; it knows nothing of eviction.
//!
//! The links themselves ([`ParentLinks`]) serve any tree whose owner finds
//! the parents. A link remembers the parent's epoch (bumped whenever a slot
//! registers or is forgotten), so a parent slot that was reused in between is
//! not mistaken for the block the link was made to: its children become
//! roots.

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::keyhash::KeyHasher;
use crate::SequenceHash;

/// A slot's key: `(position, its sequence hash cut to a child's fragment width)`.
type Key = (u64, u64);

/// No key: the slot is not registered here.
const NO_KEY: Key = (u64::MAX, 0);

/// The table hash of `key`: seeded, every bit of the fragment and the
/// position mixed in (see [`crate::keyhash`] for why).
#[inline(always)]
fn key_hash(hasher: KeyHasher, key: Key) -> u64 {
    hasher.hash(key.1, key.0)
}

/// The key under which a child at `hash.position() + 1` finds `hash`'s block.
fn own_key(hash: SequenceHash) -> Key {
    let position = hash.position();
    (
        position,
        hash.parent_fragment_for_child_position(position + 1),
    )
}

/// The key of `hash`'s parent, or `None` for a root.
fn parent_key(hash: SequenceHash) -> Option<Key> {
    let position = hash.position();
    (position > 0).then(|| (position - 1, hash.parent_fragment()))
}

/// "No parent".
const NONE: u32 = u32::MAX;

/// A slot's place in the tree.
#[derive(Clone, Copy)]
struct Link {
    /// Parent slot, or [`NONE`] for a root or an orphan.
    parent: u32,
    /// The parent's `epoch` when the link was made.
    parent_epoch: u32,
    /// Bumped whenever this slot starts or stops holding a block.
    epoch: u32,
    /// Resident children linked to this slot.
    children: u32,
}

/// Each slot's link to its parent slot and its count of linked children,
/// for trees whose owner finds the parents: [`BlockTree`] by key, Hedge's
/// miniature caches by their sample.
///
/// A link remembers the parent's epoch, so a parent slot that holds
/// another block since is not mistaken for the one linked to: its
/// children become roots.
pub(crate) struct ParentLinks {
    links: Vec<Link>,
}

impl ParentLinks {
    /// Slots `0..slots`, none linked.
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            links: vec![
                Link {
                    parent: NONE,
                    parent_epoch: 0,
                    epoch: 0,
                    children: 0,
                };
                slots
            ],
        }
    }

    /// Resident children linked to `slot`.
    #[inline]
    pub(crate) fn children(&self, slot: u32) -> u32 {
        self.links[slot as usize].children
    }

    /// `slot`'s parent, if it still holds the block the link was made to.
    pub(crate) fn parent(&self, slot: u32) -> Option<u32> {
        let link = self.links[slot as usize];
        (link.parent != NONE && self.links[link.parent as usize].epoch == link.parent_epoch)
            .then_some(link.parent)
    }

    /// `slot` starts holding a block: a new epoch, no parent, no child.
    pub(crate) fn reset(&mut self, slot: u32) {
        let link = &mut self.links[slot as usize];
        link.epoch = link.epoch.wrapping_add(1);
        link.parent = NONE;
        link.children = 0;
    }

    /// Links `slot` under `parent` (whose child count grows).
    pub(crate) fn link(&mut self, slot: u32, parent: u32) {
        let parent_epoch = self.links[parent as usize].epoch;
        let link = &mut self.links[slot as usize];
        link.parent = parent;
        link.parent_epoch = parent_epoch;
        self.links[parent as usize].children += 1;
    }

    /// `slot` stops holding its block: unlinks it and returns its live
    /// parent (whose child count just dropped), if any.
    pub(crate) fn detach(&mut self, slot: u32) -> Option<u32> {
        let parent = self.parent(slot);
        if let Some(parent) = parent {
            let link = &mut self.links[parent as usize];
            link.children = link.children.saturating_sub(1);
        }
        self.reset(slot);
        parent
    }

    /// Checks every slot's child count against the parent links that name
    /// it (O(slots); for a policy's `check`).
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut children = vec![0u32; self.links.len()];
        for slot in 0..self.links.len() as u32 {
            if let Some(parent) = self.parent(slot) {
                children[parent as usize] += 1;
            }
        }
        for (slot, &count) in children.iter().enumerate() {
            let counted = self.children(slot as u32);
            if counted != count {
                return Err(format!(
                    "tree: slot {slot} counts {counted} children, has {count}"
                ));
            }
        }
        Ok(())
    }
}

/// The tree of registered slots: `(position, fragment) -> slot`, parent links
/// and child counts.
pub(crate) struct BlockTree {
    keys: Vec<Key>,
    links: ParentLinks,
    by_key: HashTable<u32>,
    /// Hashes `keys` for `by_key`, with this tree's own random seed.
    hasher: KeyHasher,
}

impl BlockTree {
    /// A tree for slots `0..slots`. The table is sized for twice the slots, so
    /// clearing tombstones rehashes in place and never grows (see `store::index`).
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            keys: vec![NO_KEY; slots],
            links: ParentLinks::new(slots),
            by_key: HashTable::with_capacity(slots.saturating_mul(2)),
            hasher: KeyHasher::random(),
        }
    }

    /// Records that `slot` now holds `hash`, links it under its resident
    /// parent and returns that parent (whose child count just grew), if any.
    pub(crate) fn register(&mut self, slot: u32, hash: SequenceHash) -> Option<u32> {
        let parent = self.find_parent(slot, hash);
        self.links.reset(slot);
        let parent = parent?;
        self.links.link(slot, parent);
        Some(parent)
    }

    /// Forgets `slot` and returns its live parent (whose child count just
    /// dropped), if any.
    pub(crate) fn forget(&mut self, slot: u32) -> Option<u32> {
        self.forget_key(slot);
        self.links.detach(slot)
    }

    /// Resident children linked to `slot`.
    #[inline]
    pub(crate) fn children(&self, slot: u32) -> u32 {
        self.links.children(slot)
    }

    /// `slot`'s parent, if it still holds the block the link was made to.
    #[cfg(test)]
    pub(crate) fn parent(&self, slot: u32) -> Option<u32> {
        self.links.parent(slot)
    }

    /// Records `slot`'s key and returns the slot of its resident parent, if
    /// any. One probe to find the parent, one to insert; a key already
    /// present (a fragment collision) keeps its first slot.
    fn find_parent(&mut self, slot: u32, hash: SequenceHash) -> Option<u32> {
        let hasher = self.hasher;
        let keys = &self.keys;
        let parent = parent_key(hash).and_then(|pk| {
            self.by_key
                .find(key_hash(hasher, pk), |&s| keys[s as usize] == pk)
                .copied()
        });
        let key = own_key(hash);
        self.keys[slot as usize] = key;
        let keys = &self.keys;
        if let Entry::Vacant(vacant) = self.by_key.entry(
            key_hash(hasher, key),
            |&s| keys[s as usize] == key,
            |&s| key_hash(hasher, keys[s as usize]),
        ) {
            vacant.insert(slot);
        }
        parent.filter(|&p| p != slot)
    }

    /// Removes `slot`'s key from the table.
    fn forget_key(&mut self, slot: u32) {
        let key = self.keys[slot as usize];
        if let Ok(entry) = self
            .by_key
            .find_entry(key_hash(self.hasher, key), |&s| s == slot)
        {
            entry.remove();
        }
        self.keys[slot as usize] = NO_KEY;
    }

    /// Checks every slot's child count against the parent links that name
    /// it (O(slots); for a policy's `check`).
    pub(crate) fn check(&self) -> Result<(), String> {
        self.links.check()
    }

    /// Bytes the table reserves (tests check it never grows).
    #[cfg(test)]
    pub(crate) fn allocation_size(&self) -> usize {
        self.by_key.allocation_size()
    }

    /// Entries in the table (validation).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_utils::low_bits_cycling_chains;
    use super::*;
    use crate::keyhash::adversarial::{hashbrown_buckets, longest_probe};
    use proptest::prelude::*;

    #[test]
    fn a_child_finds_its_resident_parent_and_loses_it_once_forgotten() {
        let mut tree = BlockTree::new(4);
        let root = SequenceHash::root(5);
        let child = root.extend(6);
        assert_eq!(tree.register(0, root), None);
        assert_eq!(tree.register(1, child), Some(0));
        assert_eq!(tree.children(0), 1);
        assert_eq!(tree.forget(0), None);
        assert_eq!(tree.parent(1), None, "a forgotten parent is no parent");
        assert_eq!(tree.register(2, child.extend(7)), Some(1));
        assert_eq!(tree.register(3, root.extend(9)), None, "parent forgotten");
        assert_eq!(tree.len(), 3);
        assert_eq!(tree.forget(2), Some(1));
        assert_eq!(tree.children(1), 0);
    }

    #[test]
    fn a_reused_parent_slot_is_not_the_old_parent() {
        let mut tree = BlockTree::new(3);
        let a = SequenceHash::root(1);
        tree.register(0, a);
        tree.register(1, a.extend(2));
        tree.forget(0);
        tree.register(0, SequenceHash::root(3));
        assert_eq!(tree.parent(1), None);
        assert_eq!(tree.forget(1), None);
        assert_eq!(tree.children(0), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Whatever low bits the sequence hashes share, the tree's keys
        /// spread over its table: the longest linear probe of a table as
        /// large as the tree's (hashbrown's buckets for twice the slots, so
        /// load 1/4 at most) stays short, and every block still finds its
        /// parent. (The old one-multiply hash: over 1,000.)
        #[test]
        fn keys_sharing_low_bits_keep_probes_short_and_parents_found(
            seed in any::<u64>(),
            hasher_seed in any::<[u64; 2]>(),
            bits in 8u32..=40,
            patterns in 1u64..=16,
        ) {
            let (chains, len) = (128, 32);
            let hashes = low_bits_cycling_chains(seed, chains, len, bits, patterns);
            let mut tree = BlockTree::new(hashes.len());
            tree.hasher = KeyHasher::with_seed(hasher_seed);
            let probe_hashes = hashes.iter().map(|&h| key_hash(tree.hasher, own_key(h)));
            let longest = longest_probe(probe_hashes, hashbrown_buckets(2 * hashes.len()));
            prop_assert!(longest <= 48, "longest probe {longest} for {} keys", hashes.len());

            // The model: the first slot registered under a key keeps it.
            let mut model = std::collections::HashMap::new();
            for (slot, &hash) in hashes.iter().enumerate() {
                let parent = tree.register(slot as u32, hash);
                let expected = parent_key(hash).and_then(|key| model.get(&key).copied());
                prop_assert_eq!(parent, expected);
                model.entry(own_key(hash)).or_insert(slot as u32);
            }
            let chained = (0..hashes.len()).filter(|&s| s % len != 0);
            prop_assert!(chained.filter(|&s| tree.parent(s as u32).is_some()).count() > hashes.len() * 9 / 10);
            prop_assert_eq!(tree.len(), model.len());
        }
    }
}
