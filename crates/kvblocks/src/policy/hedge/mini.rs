//! [`Mini`]: one eviction order running alone over a sample of the
//! traffic, as a miniature cache (Waldspurger et al., ATC'17), so that
//! [`super::Hedge`] can compare orders without the bias of judging each by
//! the cache the other one built.
//!
//! A miniature cache holds keys, sized once, never allocating: a table from
//! key to mini slot, an [`Orders`] over the mini slots, and a free list. It
//! sees the sampled references in the order the store reports them and
//! says which were hits. A sampled block's parent is seldom sampled, so
//! the leaf-first rule would rarely apply inside it: it keeps a block tree
//! only when the sample is every key, and otherwise compares the two
//! orders on reuse alone. It remembers each resident key's table hash and
//! fingerprint, so an eviction hashes nothing.

use hashbrown::HashTable;

use super::orders::{Order, Orders};
use crate::SequenceHash;

/// A miniature cache under one order.
pub(super) struct Mini {
    orders: Orders,
    order: Order,
    /// Mini slot by key.
    table: HashTable<u32>,
    /// Key per mini slot (meaningful while resident).
    keys: Vec<SequenceHash>,
    /// Per mini slot: the key's table hash and its fixed-seed fingerprint
    /// (kept, so an eviction hashes nothing).
    hashes: Vec<(u64, u64)>,
    /// Never-used mini slots.
    free: Vec<u32>,
}

impl Mini {
    /// A miniature cache of `slots` slots evicting by `order`, leaf-first
    /// if `tree` (worth it only when every key is in the sample).
    pub(super) fn new(order: Order, slots: usize, tree: bool) -> Self {
        Self {
            orders: Orders::new(slots, tree),
            order,
            // Twice the entries ever held: hashbrown never reallocates then.
            table: HashTable::with_capacity(2 * slots),
            keys: vec![SequenceHash::default(); slots],
            hashes: vec![(0, 0); slots],
            free: (0..slots as u32).rev().collect(),
        }
    }

    /// Slots of this miniature cache.
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.keys.len()
    }

    /// References `key` (hashed as `hash` by the shared hasher, as
    /// `fingerprint` by the fixed-seed one): finds it, or registers it
    /// (evicting if full). Whether it was resident (a hit).
    pub(super) fn reference(&mut self, key: SequenceHash, hash: u64, fingerprint: u64) -> bool {
        let keys = &self.keys;
        if let Some(&slot) = self.table.find(hash, |&s| keys[s as usize] == key) {
            self.orders.on_reacquire(slot);
            self.orders.on_release(slot);
            return true;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                // Every mini slot is evictable between references.
                let Some(victim) = self.orders.evict(self.order) else {
                    return false;
                };
                let (old_hash, old_fingerprint) = self.hashes[victim as usize];
                if let Ok(entry) = self.table.find_entry(old_hash, |&s| s == victim) {
                    entry.remove();
                }
                self.orders.forget(victim, old_fingerprint);
                victim
            }
        };
        self.keys[slot as usize] = key;
        self.hashes[slot as usize] = (hash, fingerprint);
        let hashes = &self.hashes;
        self.table
            .insert_unique(hash, slot, |&s| hashes[s as usize].0);
        self.orders.on_register(slot, key, fingerprint);
        self.orders.on_release(slot);
        false
    }

    /// The table, the lists and the free list agree.
    pub(super) fn check(&self) -> Result<(), String> {
        self.orders.check()?;
        let resident = self.keys.len() - self.free.len();
        if self.table.len() != resident || self.orders.len() != resident {
            return Err(format!(
                "hedge: miniature {:?} holds {resident} keys, table {}, lists {}",
                self.order,
                self.table.len(),
                self.orders.len()
            ));
        }
        Ok(())
    }
}
