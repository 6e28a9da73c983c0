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

/// Fingerprint to value, oldest-first replacement within a set.
pub(crate) struct History {
    /// Fingerprint per entry (0: empty).
    tags: Vec<u64>,
    values: Vec<u64>,
    /// Insertion stamp per entry (replacement order within a set).
    stamps: Vec<u32>,
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
            tags: vec![0; sets * WAYS],
            values: vec![0; sets * WAYS],
            stamps: vec![0; sets * WAYS],
            stamp: 0,
            set_mask: sets - 1,
            hasher: KeyHasher::with_seed(SEED),
        }
    }

    /// The key's set (first entry) and nonzero fingerprint.
    #[inline]
    fn locate(&self, key: SequenceHash) -> (usize, u64) {
        let hash = self.hasher.hash_u128(key.as_u128());
        let set = (hash as usize) & self.set_mask;
        (set * WAYS, (hash >> 16) | 1)
    }

    /// Remembers `value` for `key`, replacing what it held or the set's
    /// oldest entry.
    pub(crate) fn insert(&mut self, key: SequenceHash, value: u64) {
        let (base, tag) = self.locate(key);
        let ways = base..base + WAYS;
        let way = ways
            .clone()
            .find(|&i| self.tags[i] == tag)
            .or_else(|| ways.clone().find(|&i| self.tags[i] == 0))
            .unwrap_or_else(|| {
                ways.max_by_key(|&i| self.stamp.wrapping_sub(self.stamps[i]))
                    .unwrap_or(base)
            });
        self.stamp = self.stamp.wrapping_add(1);
        self.tags[way] = tag;
        self.values[way] = value;
        self.stamps[way] = self.stamp;
    }

    /// Forgets `key`; the value it held, if remembered.
    pub(crate) fn take(&mut self, key: SequenceHash) -> Option<u64> {
        let (base, tag) = self.locate(key);
        let way = (base..base + WAYS).find(|&i| self.tags[i] == tag)?;
        self.tags[way] = 0;
        Some(self.values[way])
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
