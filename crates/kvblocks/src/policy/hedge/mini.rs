//! [`Mini`]: one eviction order running alone over a sample of the
//! traffic, as a miniature cache (Waldspurger et al., ATC'17), so that
//! [`super::Hedge`] can compare orders without the bias of judging each by
//! the cache the other one built.
//!
//! A miniature cache holds keys, sized once, never allocating: a table from
//! key to mini slot, an [`Orders`] over the mini slots, and a free list. It
//! sees the sampled references in the order the store reports them and
//! says which were hits. A sampled block's parent is seldom sampled, so
//! the leaf-first rule rarely applies inside it; it compares the two
//! orders on reuse alone.

use hashbrown::HashTable;

use super::orders::{Order, Orders};
use crate::keyhash::KeyHasher;
use crate::SequenceHash;

/// A miniature cache under one order.
pub(super) struct Mini {
    orders: Orders,
    order: Order,
    /// Mini slot by key.
    table: HashTable<u32>,
    /// Key per mini slot (meaningful while resident).
    keys: Vec<SequenceHash>,
    /// Never-used mini slots.
    free: Vec<u32>,
    hasher: KeyHasher,
}

impl Mini {
    /// A miniature cache of `slots` slots evicting by `order`; `hasher`
    /// hashes keys for its table.
    pub(super) fn new(order: Order, slots: usize, hasher: KeyHasher) -> Self {
        Self {
            orders: Orders::new(slots),
            order,
            // Twice the entries ever held: hashbrown never reallocates then.
            table: HashTable::with_capacity(2 * slots),
            keys: vec![SequenceHash::default(); slots],
            free: (0..slots as u32).rev().collect(),
            hasher,
        }
    }

    /// Slots of this miniature cache.
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.keys.len()
    }

    /// References `key` (hashed as `hash` by the shared hasher); whether
    /// it was resident (a hit).
    pub(super) fn reference(&mut self, key: SequenceHash, hash: u64) -> bool {
        self.touch(key, hash)
    }

    /// Finds `key`, or registers it (evicting if full); whether it was
    /// resident.
    fn touch(&mut self, key: SequenceHash, hash: u64) -> bool {
        let keys = &self.keys;
        if let Some(&slot) = self.table.find(hash, |&s| keys[s as usize] == key) {
            self.orders.on_hit(slot);
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
                let old_hash = self.hasher.hash_u128(self.keys[victim as usize].as_u128());
                if let Ok(entry) = self.table.find_entry(old_hash, |&s| s == victim) {
                    entry.remove();
                }
                self.orders.forget(victim, self.keys[victim as usize]);
                victim
            }
        };
        self.keys[slot as usize] = key;
        let (keys, hasher) = (&self.keys, self.hasher);
        self.table.insert_unique(hash, slot, |&s| {
            hasher.hash_u128(keys[s as usize].as_u128())
        });
        self.orders.on_register(slot, key);
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
