//! A binary min-heap of slot numbers that can remove any slot in O(log n).
//!
//! The heap stores slots only; their keys live with the caller, who passes
//! a key function to every operation, and every slot's index inside its heap
//! lives in a position array the caller shares between several heaps (a slot
//! sits in at most one). The item vector is allocated once, for every slot,
//! so no operation allocates. Nothing here knows about eviction.

/// Min-heap of slots under a caller-supplied key.
pub(crate) struct SlotHeap {
    items: Vec<u32>,
}

impl SlotHeap {
    /// An empty heap able to hold `slots` slots without reallocating.
    pub(crate) fn with_capacity(slots: usize) -> Self {
        Self {
            items: Vec::with_capacity(slots),
        }
    }

    /// Number of slots in the heap.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The slot with the smallest key, if any.
    #[inline]
    pub(crate) fn peek(&self) -> Option<u32> {
        self.items.first().copied()
    }

    /// Adds `slot`. The caller guarantees it is in no heap sharing `at`.
    pub(crate) fn push<K: Ord>(&mut self, slot: u32, at: &mut [u32], key: impl Fn(u32) -> K) {
        self.items.push(slot);
        let last = self.items.len() - 1;
        at[slot as usize] = last as u32;
        self.sift_up(last, at, &key);
    }

    /// Removes `slot`. The caller guarantees it is in this heap.
    pub(crate) fn remove<K: Ord>(&mut self, slot: u32, at: &mut [u32], key: impl Fn(u32) -> K) {
        let index = at[slot as usize] as usize;
        debug_assert_eq!(self.items[index], slot);
        let last = self.items.len() - 1;
        self.items.swap(index, last);
        self.items.pop();
        if index < last {
            at[self.items[index] as usize] = index as u32;
            self.sift_down(index, at, &key);
            self.sift_up(index, at, &key);
        }
    }

    fn sift_up<K: Ord>(&mut self, mut index: usize, at: &mut [u32], key: &impl Fn(u32) -> K) {
        let slot = self.items[index];
        let slot_key = key(slot);
        while index > 0 {
            let parent = (index - 1) / 2;
            if key(self.items[parent]) <= slot_key {
                break;
            }
            self.items[index] = self.items[parent];
            at[self.items[index] as usize] = index as u32;
            index = parent;
        }
        self.items[index] = slot;
        at[slot as usize] = index as u32;
    }

    fn sift_down<K: Ord>(&mut self, mut index: usize, at: &mut [u32], key: &impl Fn(u32) -> K) {
        let len = self.items.len();
        let slot = self.items[index];
        let slot_key = key(slot);
        loop {
            let left = 2 * index + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && key(self.items[right]) < key(self.items[left]) {
                right
            } else {
                left
            };
            if key(self.items[child]) >= slot_key {
                break;
            }
            self.items[index] = self.items[child];
            at[self.items[index] as usize] = index as u32;
            index = child;
        }
        self.items[index] = slot;
        at[slot as usize] = index as u32;
    }

    /// How many slots fit without reallocating (tests only).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.items.capacity()
    }

    /// The slots in heap order (validation and invariant checks).
    pub(crate) fn slots(&self) -> &[u32] {
        &self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_key_order_after_arbitrary_removals() {
        let keys = [50u64, 10, 40, 30, 20, 60, 0, 70];
        let mut at = vec![0u32; keys.len()];
        let mut heap = SlotHeap::with_capacity(keys.len());
        let key = |s: u32| keys[s as usize];
        for slot in 0..keys.len() as u32 {
            heap.push(slot, &mut at, key);
        }
        heap.remove(4, &mut at, key); // key 20
        heap.remove(6, &mut at, key); // key 0, the top
        let mut order = Vec::new();
        while let Some(slot) = heap.peek() {
            heap.remove(slot, &mut at, key);
            order.push(keys[slot as usize]);
        }
        assert_eq!(order, vec![10, 30, 40, 50, 60, 70]);
        assert_eq!(heap.len(), 0);
    }
}
