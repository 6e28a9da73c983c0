//! The block table: for every block key, which holder slots hold it.
//!
//! A holder slot is one (worker, tier) pair, numbered densely from 0. The
//! first 64 slots live in one 64-bit mask stored right beside the key, in an
//! open-addressing table of 16-byte entries (linear probing, backward-shift
//! deletion, no tombstones), so a lookup for a cluster of up to 64 slots is
//! one probe sequence inside one or two cache lines. Slots from 64 on live in
//! a second map keyed by (key, word), which only exists for larger clusters.
//!
//! Memory is proportional to what is held: an entry exists only while some
//! slot holds the block, each further (block, slot) pair costs one bit (or one
//! map entry per 64 slots beyond the first 64), and the table shrinks as
//! entries go, down to no allocation at all when nothing is held. This
//! module never knows about workers, tiers or streams.

use hashbrown::HashMap;
use std::hash::{BuildHasher, Hasher};

/// A block key: the 64-bit chained sequence hash.
pub type BlockKey = u64;

/// Spreads a key over 64 bits (keys from tests or hostile peers may be
/// small integers; a sequence hash is already uniform and loses nothing).
#[inline(always)]
fn mix(key: u64) -> u64 {
    let product = u128::from(key) * 0x9e37_79b9_7f4a_7c15;
    (product as u64) ^ ((product >> 64) as u64)
}

/// Starts loading the cache line of `value` without waiting for it.
///
/// A lookup misses the cache once per block on a large index, and a request's
/// blocks are known up front: prefetching a few blocks ahead overlaps those
/// misses instead of taking them one after the other (BENCHMARKS.md,
/// "Cluster router", before and after).
#[inline(always)]
fn prefetch_read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults and never changes
    // memory; the address comes from a live reference.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
struct Entry {
    key: BlockKey,
    /// Slots 0..64 holding `key`; 0 marks an empty entry.
    bits: u64,
}

/// Smallest non-zero capacity.
const MIN_CAPACITY: usize = 16;

/// Open addressing over `Entry` for slots 0..64.
#[derive(Default)]
struct Masks {
    entries: Vec<Entry>,
    /// `64 - log2(entries.len())`: a key's home is the top bits of its mix.
    shift: u32,
    len: usize,
}

impl Masks {
    #[inline(always)]
    fn home(&self, key: BlockKey) -> usize {
        (mix(key) >> self.shift) as usize
    }

    #[inline]
    fn find(&self, key: BlockKey) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.entries.len() - 1;
        let mut i = self.home(key);
        loop {
            let entry = self.entries[i];
            if entry.bits == 0 {
                return None;
            }
            if entry.key == key {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn get(&self, key: BlockKey) -> u64 {
        self.find(key).map_or(0, |i| self.entries[i].bits)
    }

    /// Asks the CPU to start loading `key`'s home entry.
    #[inline(always)]
    fn prefetch(&self, key: BlockKey) {
        if let Some(entry) = self.entries.get(self.home(key)) {
            prefetch_read(entry);
        }
    }

    /// Sets `bit` for `key`; whether it was newly set.
    fn set(&mut self, key: BlockKey, bit: u64) -> bool {
        if (self.len + 1) * 8 > self.entries.len() * 5 {
            self.resize((self.entries.len() * 2).max(MIN_CAPACITY));
        }
        let mask = self.entries.len() - 1;
        let mut i = self.home(key);
        loop {
            let entry = &mut self.entries[i];
            if entry.bits == 0 {
                *entry = Entry { key, bits: bit };
                self.len += 1;
                return true;
            }
            if entry.key == key {
                let fresh = entry.bits & bit == 0;
                entry.bits |= bit;
                return fresh;
            }
            i = (i + 1) & mask;
        }
    }

    /// Clears `bit` for `key`; whether it was set.
    fn clear(&mut self, key: BlockKey, bit: u64) -> bool {
        let Some(i) = self.find(key) else {
            return false;
        };
        let entry = &mut self.entries[i];
        if entry.bits & bit == 0 {
            return false;
        }
        entry.bits &= !bit;
        if entry.bits == 0 {
            self.delete(i);
            self.shrink_if_sparse();
        }
        true
    }

    /// Empties entry `hole`, shifting later entries of its run back so no
    /// probe sequence is broken.
    fn delete(&mut self, mut hole: usize) {
        let mask = self.entries.len() - 1;
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let entry = self.entries[next];
            if entry.bits == 0 {
                break;
            }
            // `entry` may move to `hole` unless its home lies cyclically in (hole, next].
            let home = self.home(entry.key);
            let stays = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !stays {
                self.entries[hole] = entry;
                hole = next;
            }
        }
        self.entries[hole] = Entry::default();
        self.len -= 1;
    }

    fn shrink_if_sparse(&mut self) {
        if self.len == 0 {
            *self = Self::default();
        } else if self.entries.len() > MIN_CAPACITY && self.len * 8 < self.entries.len() {
            self.resize(self.entries.len() / 2);
        }
    }

    fn resize(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.entries, vec![Entry::default(); capacity]);
        self.shift = 64 - capacity.trailing_zeros();
        let mask = capacity - 1;
        for entry in old.into_iter().filter(|e| e.bits != 0) {
            let mut i = self.home(entry.key);
            while self.entries[i].bits != 0 {
                i = (i + 1) & mask;
            }
            self.entries[i] = entry;
        }
    }

    /// Clears `bits` everywhere, dropping entries left empty; calls
    /// `cleared(bits_removed)` for every entry that had some of them.
    fn clear_everywhere(&mut self, bits: u64, mut cleared: impl FnMut(u64)) {
        if bits == 0 || self.len == 0 {
            return;
        }
        let kept: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| e.bits != 0)
            .filter_map(|e| {
                if e.bits & bits != 0 {
                    cleared(e.bits & bits);
                }
                let rest = e.bits & !bits;
                (rest != 0).then_some(Entry {
                    key: e.key,
                    bits: rest,
                })
            })
            .collect();
        let mut capacity = MIN_CAPACITY;
        while kept.len() * 8 > capacity * 5 / 2 {
            capacity *= 2;
        }
        *self = Self::default();
        if !kept.is_empty() {
            self.resize(capacity);
            self.len = kept.len();
            let mask = capacity - 1;
            for entry in kept {
                let mut i = self.home(entry.key);
                while self.entries[i].bits != 0 {
                    i = (i + 1) & mask;
                }
                self.entries[i] = entry;
            }
        }
    }

    fn bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    #[cfg(test)]
    fn check(&self) {
        let occupied = self.entries.iter().filter(|e| e.bits != 0).count();
        assert_eq!(occupied, self.len);
        for (i, entry) in self.entries.iter().enumerate().filter(|(_, e)| e.bits != 0) {
            assert_eq!(self.find(entry.key), Some(i), "entry {i} unreachable");
        }
    }
}

/// Hasher of the overflow map: the key's mix folded with the word index.
#[derive(Default, Clone, Copy)]
struct MixState;

#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = mix(self.0 ^ u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = mix(self.0 ^ value);
    }

    fn write_u32(&mut self, value: u32) {
        self.0 = mix(self.0 ^ u64::from(value).rotate_left(32));
    }
}

impl BuildHasher for MixState {
    type Hasher = MixHasher;
    fn build_hasher(&self) -> MixHasher {
        MixHasher::default()
    }
}

/// Which slots hold which block.
#[derive(Default)]
pub(crate) struct BlockTable {
    masks: Masks,
    /// Words 1.. of the slot sets (slots 64..), by (key, word).
    overflow: HashMap<(BlockKey, u32), u64, MixState>,
}

impl BlockTable {
    /// Marks `slot` as holding `key`; whether it did not before.
    pub(crate) fn insert(&mut self, key: BlockKey, slot: u32) -> bool {
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        if word == 0 {
            return self.masks.set(key, bit);
        }
        let bits = self.overflow.entry((key, word)).or_insert(0);
        let fresh = *bits & bit == 0;
        *bits |= bit;
        fresh
    }

    /// Marks `slot` as no longer holding `key`; whether it did.
    pub(crate) fn remove(&mut self, key: BlockKey, slot: u32) -> bool {
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        if word == 0 {
            return self.masks.clear(key, bit);
        }
        let Some(bits) = self.overflow.get_mut(&(key, word)) else {
            return false;
        };
        if *bits & bit == 0 {
            return false;
        }
        *bits &= !bit;
        if *bits == 0 {
            self.overflow.remove(&(key, word));
            // `capacity()` counts free places only: a table full of removal
            // marks reports none, so an empty map is freed whatever it says.
            if self.overflow.is_empty() || self.overflow.len() * 8 < self.overflow.capacity() {
                self.overflow.shrink_to(self.overflow.len() * 2);
            }
        }
        true
    }

    /// Starts loading the entry of `key` (slots 0..64) into the cache.
    #[inline(always)]
    pub(crate) fn prefetch(&self, key: BlockKey) {
        self.masks.prefetch(key);
    }

    /// Whether `slot` holds `key`.
    pub(crate) fn holds(&self, key: BlockKey, slot: u32) -> bool {
        self.word(key, slot / 64) & (1u64 << (slot % 64)) != 0
    }

    /// The slots `word * 64 .. word * 64 + 64` that hold `key`, as a mask.
    #[inline]
    pub(crate) fn word(&self, key: BlockKey, word: u32) -> u64 {
        if word == 0 {
            self.masks.get(key)
        } else {
            self.overflow.get(&(key, word)).copied().unwrap_or(0)
        }
    }

    /// Drops every slot in `slots` (one mask per word) from every block;
    /// `cleared(word, bits)` hears, per block, which of them it had.
    pub(crate) fn clear_slots(&mut self, slots: &[u64], mut cleared: impl FnMut(u32, u64)) {
        if let Some(&first) = slots.first() {
            self.masks.clear_everywhere(first, |bits| cleared(0, bits));
        }
        if slots.iter().skip(1).any(|&bits| bits != 0) {
            self.overflow.retain(|&(_, word), bits| {
                let drop = slots.get(word as usize).copied().unwrap_or(0) & *bits;
                if drop != 0 {
                    cleared(word, drop);
                }
                *bits &= !drop;
                *bits != 0
            });
            self.overflow.shrink_to(self.overflow.len() * 2);
        }
    }

    /// Distinct blocks held by some slot below 64, plus overflow words.
    pub(crate) fn entries(&self) -> usize {
        self.masks.len + self.overflow.len()
    }

    /// Heap bytes of the table.
    pub(crate) fn bytes(&self) -> usize {
        self.masks.bytes() + self.overflow.allocation_size()
    }

    #[cfg(test)]
    pub(crate) fn check(&self) {
        self.masks.check();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn the_table_matches_a_set_of_pairs(
            ops in proptest::collection::vec((any::<bool>(), 0..300u64, 0..130u32), 1..2000),
            clear_at in any::<prop::sample::Index>(),
        ) {
            let mut table = BlockTable::default();
            let mut model = BTreeSet::new();
            let clear_at = clear_at.index(ops.len());
            for (i, &(insert, key, slot)) in ops.iter().enumerate() {
                if insert {
                    prop_assert_eq!(table.insert(key, slot), model.insert((key, slot)));
                } else {
                    prop_assert_eq!(table.remove(key, slot), model.remove(&(key, slot)));
                }
                if i == clear_at {
                    let mut slots = vec![0u64; 3];
                    for s in [1u32, 5, 64, 129] {
                        slots[(s / 64) as usize] |= 1 << (s % 64);
                    }
                    table.clear_slots(&slots, |_, _| {});
                    model.retain(|&(_, s)| ![1, 5, 64, 129].contains(&s));
                }
                table.check();
            }
            for key in 0..300u64 {
                for slot in 0..130u32 {
                    prop_assert_eq!(table.holds(key, slot), model.contains(&(key, slot)));
                }
            }
            for (key, slot) in model.clone() {
                table.remove(key, slot);
            }
            prop_assert_eq!(table.entries(), 0);
            prop_assert_eq!(table.bytes(), 0, "nothing held, nothing allocated");
        }
    }
}
