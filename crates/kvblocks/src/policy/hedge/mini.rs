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
//! miniature keeps that tree itself (parent links checked by epoch, as
//! `policy/tree.rs` does, and child counts) and tells its orders which
//! slots have children, so both orders are leaf-first inside it as in the
//! real cache. It remembers each resident key's table hash and
//! fingerprint, so an eviction hashes nothing.

use hashbrown::HashTable;

use super::orders::{Order, Orders};
use crate::SequenceHash;

/// No mini slot (a link to no parent).
const NONE: u32 = u32::MAX;

/// A mini slot's place in the miniature's tree.
#[derive(Clone, Copy)]
struct Node {
    /// Parent mini slot, or [`NONE`] ...
    parent: u32,
    /// ... valid while the parent's epoch is still this one.
    parent_epoch: u32,
    /// Bumped whenever the slot changes keys.
    epoch: u32,
    /// Resident children linked here.
    children: u32,
}

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
    /// The tree over the mini slots.
    nodes: Vec<Node>,
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
            nodes: vec![
                Node {
                    parent: NONE,
                    parent_epoch: 0,
                    epoch: 0,
                    children: 0,
                };
                slots
            ],
        }
    }

    /// The mini slot holding `key` (hashed as `hash`), if resident.
    #[inline]
    fn find(&self, key: SequenceHash, hash: u64) -> Option<u32> {
        let keys = &self.keys;
        self.table.find(hash, |&s| keys[s as usize] == key).copied()
    }

    /// `slot`'s parent, if it still holds the key the link was made to.
    fn parent(&self, slot: u32) -> Option<u32> {
        let node = self.nodes[slot as usize];
        (node.parent != NONE && self.nodes[node.parent as usize].epoch == node.parent_epoch)
            .then_some(node.parent)
    }

    /// Unlinks an evicted `slot` from the tree (its children keep stale
    /// links, which its new epoch voids).
    fn unlink(&mut self, slot: u32) {
        if let Some(parent) = self.parent(slot) {
            let node = &mut self.nodes[parent as usize];
            node.children -= 1;
            if node.children == 0 {
                self.orders.set_inner(parent, false);
            }
        }
        let node = &mut self.nodes[slot as usize];
        node.epoch = node.epoch.wrapping_add(1);
        node.parent = NONE;
        node.children = 0;
    }

    /// Links a newly resident `slot` under `parent`.
    fn link(&mut self, slot: u32, parent: u32) {
        let parent_epoch = self.nodes[parent as usize].epoch;
        let node = &mut self.nodes[slot as usize];
        node.parent = parent;
        node.parent_epoch = parent_epoch;
        let node = &mut self.nodes[parent as usize];
        node.children += 1;
        if node.children == 1 {
            self.orders.set_inner(parent, true);
        }
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
                self.unlink(victim);
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
                self.link(slot, parent);
            }
        }
        false
    }

    /// The table, the lists, the free list and the tree agree.
    pub(super) fn check(&self) -> Result<(), String> {
        self.orders.check()?;
        let mut children = vec![0u32; self.nodes.len()];
        for slot in 0..self.nodes.len() as u32 {
            if let Some(parent) = self.parent(slot) {
                children[parent as usize] += 1;
            }
        }
        if let Some(slot) = (0..self.nodes.len()).find(|&s| children[s] != self.nodes[s].children) {
            return Err(format!(
                "hedge: miniature {:?} counts {} children at slot {slot}, links say {}",
                self.order, self.nodes[slot].children, children[slot]
            ));
        }
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
