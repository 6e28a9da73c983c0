//! A fixed-size memory of blocks that left the cache: key fingerprint to
//! one `u64` of the policy's choosing (a time, a set of bits).
//!
//! Four-way set associative over `entries` slots rounded up to a power of
//! two, sized once; an insert into a full set replaces its oldest entry, so
//! the table holds roughly the last `entries` keys inserted and never
//! allocates. Fingerprints are 48 bits of a hash under a fixed seed
//! ([`crate::keyhash`]), so a replay repeats exactly: two keys can collide,
//! which costs a policy one wrong guess, never a wrong eviction, and a set
//! holds four entries whatever the keys, so crafted keys cannot make a
//! lookup slow. Nothing here knows about eviction.

use crate::keyhash::KeyHasher;
use crate::SequenceHash;

/// Seed of the fingerprint hash (digits of e: any dense constant will do).
const SEED: [u64; 2] = [0xB7E1_5162_8AED_2A6A, 0xBF71_5880_9CF4_F3C7];

/// Ways per set.
const WAYS: usize = 4;

/// One set: its ways side by side, so a probe touches one or two cache
/// lines rather than one per array.
#[derive(Clone, Copy, Default)]
struct Set {
    /// Fingerprint per way (0: empty).
    tags: [u64; WAYS],
    values: [u64; WAYS],
    /// Insertion stamp per way (replacement order).
    stamps: [u32; WAYS],
}

/// Fingerprint to value, oldest-first replacement within a set.
pub(crate) struct History {
    sets: Vec<Set>,
    stamp: u32,
    /// `sets - 1` (sets are a power of two).
    set_mask: usize,
    hasher: KeyHasher,
}

impl History {
    /// A memory of about `entries` keys (at least one set).
    pub(crate) fn new(entries: usize) -> Self {
        let sets = (entries / WAYS).max(1).next_power_of_two();
        Self {
            sets: vec![Set::default(); sets],
            stamp: 0,
            set_mask: sets - 1,
            hasher: KeyHasher::with_seed(SEED),
        }
    }

    /// The key's set and nonzero fingerprint.
    #[inline]
    fn locate(&self, key: SequenceHash) -> (usize, u64) {
        let hash = self.hasher.hash_u128(key.as_u128());
        ((hash as usize) & self.set_mask, (hash >> 16) | 1)
    }

    /// Remembers `value` for `key`, replacing what it held or the set's
    /// oldest entry.
    pub(crate) fn insert(&mut self, key: SequenceHash, value: u64) {
        let (index, tag) = self.locate(key);
        let stamp = self.stamp;
        let set = &mut self.sets[index];
        let way = (0..WAYS)
            .find(|&w| set.tags[w] == tag)
            .or_else(|| (0..WAYS).find(|&w| set.tags[w] == 0))
            .unwrap_or_else(|| {
                (0..WAYS)
                    .max_by_key(|&w| stamp.wrapping_sub(set.stamps[w]))
                    .unwrap_or(0)
            });
        self.stamp = stamp.wrapping_add(1);
        set.tags[way] = tag;
        set.values[way] = value;
        set.stamps[way] = self.stamp;
    }

    /// Forgets `key`; the value it held, if remembered.
    pub(crate) fn take(&mut self, key: SequenceHash) -> Option<u64> {
        let (index, tag) = self.locate(key);
        let set = &mut self.sets[index];
        let way = (0..WAYS).find(|&w| set.tags[w] == tag)?;
        set.tags[way] = 0;
        Some(set.values[way])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_utils::roots;

    #[test]
    fn remembers_recent_keys_and_forgets_the_oldest_when_full() {
        let keys = roots(64);
        let mut history = History::new(16);
        for (i, &key) in keys.iter().enumerate() {
            history.insert(key, i as u64);
        }
        // The newest key is always kept; the oldest of 64 in 16 entries is not.
        assert_eq!(history.take(keys[63]), Some(63));
        assert_eq!(history.take(keys[63]), None);
        assert_eq!(history.take(keys[0]), None);
        // Re-inserting a remembered key updates it in place.
        history.insert(keys[62], 7);
        assert_eq!(history.take(keys[62]), Some(7));
    }
}
