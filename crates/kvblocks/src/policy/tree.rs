//! [`ParentIndex`]: finds the resident parent of a registering block, for the
//! policies that keep the block tree (`Lineage`, `PrefixAware`).
//!
//! A [`SequenceHash`] names its parent by position and a fragment of the
//! parent's sequence hash, so a table of `(position, fragment) -> slot` over
//! resident blocks finds the parent without the caller's help. This module
//! owns that table and each slot's key in it; it knows nothing of eviction.

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::SequenceHash;

/// A slot's key: `(position, its sequence hash cut to a child's fragment width)`.
type Key = (u64, u64);

/// No key: the slot is not registered here.
const NO_KEY: Key = (u64::MAX, 0);

fn key_hash(key: Key) -> u64 {
    (key.1 ^ key.0.rotate_left(40)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
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

/// `(position, fragment) -> slot` over the registered slots.
pub(crate) struct ParentIndex {
    keys: Vec<Key>,
    by_key: HashTable<u32>,
}

impl ParentIndex {
    /// An index for slots `0..slots`. Sized for twice the slots, so clearing
    /// tombstones rehashes in place and never grows (see `store::index`).
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            keys: vec![NO_KEY; slots],
            by_key: HashTable::with_capacity(slots.saturating_mul(2)),
        }
    }

    /// Records that `slot` now holds `hash` and returns the slot of its
    /// resident parent, if any. One probe to find the parent, one to insert;
    /// a key already present (a fragment collision) keeps its first slot.
    pub(crate) fn register(&mut self, slot: u32, hash: SequenceHash) -> Option<u32> {
        let keys = &self.keys;
        let parent = parent_key(hash).and_then(|pk| {
            self.by_key
                .find(key_hash(pk), |&s| keys[s as usize] == pk)
                .copied()
        });
        let key = own_key(hash);
        self.keys[slot as usize] = key;
        let keys = &self.keys;
        if let Entry::Vacant(vacant) = self.by_key.entry(
            key_hash(key),
            |&s| keys[s as usize] == key,
            |&s| key_hash(keys[s as usize]),
        ) {
            vacant.insert(slot);
        }
        parent.filter(|&p| p != slot)
    }

    /// Forgets `slot`'s key.
    pub(crate) fn forget(&mut self, slot: u32) {
        let key = self.keys[slot as usize];
        if let Ok(entry) = self.by_key.find_entry(key_hash(key), |&s| s == slot) {
            entry.remove();
        }
        self.keys[slot as usize] = NO_KEY;
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
    use super::*;

    #[test]
    fn a_child_finds_its_resident_parent_and_loses_it_once_forgotten() {
        let mut index = ParentIndex::new(4);
        let root = SequenceHash::root(5);
        let child = root.extend(6);
        assert_eq!(index.register(0, root), None);
        assert_eq!(index.register(1, child), Some(0));
        index.forget(0);
        assert_eq!(index.register(2, child.extend(7)), Some(1));
        assert_eq!(index.register(3, root.extend(9)), None, "parent forgotten");
        assert_eq!(index.len(), 3);
    }
}
