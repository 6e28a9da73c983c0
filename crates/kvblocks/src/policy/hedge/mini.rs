//! [`Mini`]: one eviction order running alone over a sample of the
//! traffic, as a miniature cache (Waldspurger et al., ATC'17), so that
//! [`super::Hedge`] can compare orders without the bias of judging each by
//! the cache the other one built.
//!
//! A miniature cache holds keys, sized once, never allocating: a table from
//! key to mini slot, an [`Orders`] over the mini slots, and a free list. It
//! sees the sampled references in the order the store reports them and
//! says which were hits. The sample is every `rate`-th block of each chain
//! (see [`super::Hedge`]), so each sampled block but a chain's first comes
//! with a sampled ancestor `rate` blocks up, its parent here: the
//! miniature links it there in its orders' tree ([`Orders::link`]), so
//! both orders are leaf-first inside it as in the real cache. It
//! remembers each resident key's table hash and
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
    /// A miniature cache of `slots` slots evicting by `order`.
    pub(super) fn new(order: Order, slots: usize) -> Self {
        Self {
            orders: Orders::new(slots, false),
            order,
            // Twice the entries ever held: hashbrown never reallocates then.
            table: HashTable::with_capacity(2 * slots),
            keys: vec![SequenceHash::default(); slots],
            hashes: vec![(0, 0); slots],
            free: (0..slots as u32).rev().collect(),
        }
    }

    /// The mini slot holding `key` (hashed as `hash`), if resident.
    #[inline]
    fn find(&self, key: SequenceHash, hash: u64) -> Option<u32> {
        let keys = &self.keys;
        self.table.find(hash, |&s| keys[s as usize] == key).copied()
    }

    /// Slots of this miniature cache.
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.keys.len()
    }

    /// References `key` (hashed as `hash` by the shared hasher, as
    /// `fingerprint` by the fixed-seed one), whose sampled ancestor is
    /// `parent` (with its hash): finds it, or registers it under `parent`
    /// if that is resident (evicting if full). Whether it was resident (a
    /// hit).
    pub(super) fn reference(
        &mut self,
        key: SequenceHash,
        hash: u64,
        fingerprint: u64,
        parent: Option<(SequenceHash, u64)>,
    ) -> bool {
        if let Some(slot) = self.find(key, hash) {
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
        if let Some(parent) = parent.and_then(|(key, hash)| self.find(key, hash)) {
            // (A stale ancestor key may name the key itself: no link then.)
            if parent != slot {
                self.orders.link(slot, parent);
            }
        }
        false
    }

    /// The table, the lists, the free list and the tree agree.
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
