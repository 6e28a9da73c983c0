//! The hash index: sequence hash -> primary slot.
//!
//! Owns one open-addressing table of bare `u32` slot numbers. The key of an
//! entry is not stored in the table: it is read back from the slot record, so
//! an entry costs 4 bytes plus a control byte. The table is sized once (for
//! twice the slots, see [`HashIndex::with_capacity`]) and never grows, so
//! steady state allocates nothing.
//!
//! It never decides what is registered; [`super::core::StoreCore`] does.

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::SequenceHash;

/// Folds a 128-bit lineage key to 64 bits.
///
/// The key is already the output of xxh3, but its low word holds the parent
/// fragment (all zeros for a root block) and its high word the mode and
/// position, so neither half alone spreads well: mix both with one multiply.
#[inline(always)]
pub(crate) fn fold(hash: SequenceHash) -> u64 {
    let raw = hash.as_u128();
    let folded = (raw as u64) ^ ((raw >> 64) as u64).rotate_left(29);
    folded.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Sequence hash -> slot, for primaries only.
pub(crate) struct HashIndex {
    table: HashTable<u32>,
}

impl HashIndex {
    /// An index able to hold `capacity` entries without ever allocating.
    ///
    /// Removals leave tombstones that hashbrown clears by rehashing, in place
    /// while the table is at most half full and by growing otherwise, so the
    /// table is sized for twice the entries it can hold.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            table: HashTable::with_capacity(capacity.saturating_mul(2)),
        }
    }

    /// The slot registered under `hash`; `key_of` reads a slot's key.
    #[inline]
    pub(crate) fn get(
        &self,
        hash: SequenceHash,
        key_of: impl Fn(u32) -> SequenceHash,
    ) -> Option<u32> {
        self.table
            .find(fold(hash), |&slot| key_of(slot) == hash)
            .copied()
    }

    /// Adds `slot` under `hash` unless `hash` is present; returns the slot
    /// already registered under it, if any. One probe either way.
    #[inline]
    pub(crate) fn insert_if_absent(
        &mut self,
        hash: SequenceHash,
        slot: u32,
        key_of: impl Fn(u32) -> SequenceHash,
    ) -> Option<u32> {
        match self
            .table
            .entry(fold(hash), |&s| key_of(s) == hash, |&s| fold(key_of(s)))
        {
            Entry::Occupied(entry) => Some(*entry.get()),
            Entry::Vacant(entry) => {
                entry.insert(slot);
                None
            }
        }
    }

    /// Removes the entry naming `slot` under `hash`; returns whether there was
    /// one. Compares slot numbers only, so it reads no other slot's record.
    #[inline]
    pub(crate) fn remove(&mut self, hash: SequenceHash, slot: u32) -> bool {
        match self.table.find_entry(fold(hash), |&s| s == slot) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Bytes the table reserves (for the memory report).
    pub(crate) fn allocation_size(&self) -> usize {
        self.table.allocation_size()
    }
}
