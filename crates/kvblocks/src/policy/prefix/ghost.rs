//! The ghost: a fixed-size memory of recently evicted blocks.
//!
//! A block that comes back after eviction is, for the policy, on its second
//! reference even though it is resident for the first time; the ghost is how
//! the policy knows. Each entry holds a 64-bit fingerprint of the evicted
//! [`SequenceHash`] and a tag: the class the block was evicted from and that
//! class's eviction count at the time, so a returning block can tell how
//! *recently*, in its class's own evictions, it was given up.
//!
//! The table is set-associative (four ways), replaced round-robin within a
//! set, so it forgets roughly its oldest entries first. It is sized once in
//! `new` and never grows; lookups and inserts touch one set.

use crate::SequenceHash;

/// Entries per set.
const WAYS: usize = 4;
/// Bits of a tag that hold the eviction count; the top bit holds the class.
const SEQ_BITS: u32 = 31;
const SEQ_MASK: u32 = (1 << SEQ_BITS) - 1;

/// What the ghost remembers of one evicted block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Evicted {
    /// Evicted from the protected class (else from probation or tails).
    pub(super) protected: bool,
    /// The low bits of that class's eviction count when it was evicted.
    pub(super) seq: u32,
}

impl Evicted {
    /// How many evictions from its class came after this one, given the
    /// class's count now (modulo the stored width).
    #[inline]
    pub(super) fn evictions_since(self, count_now: u64) -> u32 {
        (count_now as u32).wrapping_sub(self.seq) & SEQ_MASK
    }
}

/// Set-associative table of evicted-block fingerprints.
pub(super) struct Ghost {
    /// Fingerprints, `WAYS` per set; 0 marks an empty way.
    prints: Vec<u64>,
    /// Class bit and eviction count of each way.
    tags: Vec<u32>,
    /// Next way to overwrite in each set.
    cursor: Vec<u8>,
    set_mask: usize,
}

/// Folds a sequence hash to a nonzero 64-bit fingerprint.
#[inline]
fn fingerprint(hash: SequenceHash) -> u64 {
    let raw = hash.as_u128();
    let mut x = (raw as u64) ^ ((raw >> 64) as u64).rotate_left(23);
    x = (x ^ (x >> 31)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (x ^ (x >> 32)) | 1
}

impl Ghost {
    /// A ghost of about `entries` entries (at least one set).
    pub(super) fn new(entries: usize) -> Self {
        let sets = (entries / WAYS).clamp(1, 1 << 26).next_power_of_two();
        Self {
            prints: vec![0; sets * WAYS],
            tags: vec![0; sets * WAYS],
            cursor: vec![0; sets],
            set_mask: sets - 1,
        }
    }

    #[inline]
    fn set_of(&self, print: u64) -> usize {
        ((print >> 40) as usize) & self.set_mask
    }

    /// Remembers that `hash` was evicted.
    pub(super) fn insert(&mut self, hash: SequenceHash, evicted: Evicted) {
        let print = fingerprint(hash);
        let set = self.set_of(print);
        let base = set * WAYS;
        let way = match self.prints[base..base + WAYS]
            .iter()
            .position(|&p| p == print)
        {
            Some(way) => way,
            None => {
                let way = self.cursor[set] as usize;
                self.cursor[set] = ((way + 1) % WAYS) as u8;
                way
            }
        };
        self.prints[base + way] = print;
        self.tags[base + way] =
            (u32::from(evicted.protected) << SEQ_BITS) | (evicted.seq & SEQ_MASK);
    }

    /// Forgets `hash` and returns what was remembered, if anything.
    pub(super) fn take(&mut self, hash: SequenceHash) -> Option<Evicted> {
        let print = fingerprint(hash);
        let base = self.set_of(print) * WAYS;
        let way = self.prints[base..base + WAYS]
            .iter()
            .position(|&p| p == print)?;
        self.prints[base + way] = 0;
        let tag = self.tags[base + way];
        Some(Evicted {
            protected: tag >> SEQ_BITS == 1,
            seq: tag & SEQ_MASK,
        })
    }

    /// Number of ways (the table's fixed capacity).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.prints.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evicted(seq: u32) -> Evicted {
        Evicted {
            protected: seq % 2 == 1,
            seq,
        }
    }

    #[test]
    fn a_remembered_hash_is_returned_once_with_its_tag() {
        let mut ghost = Ghost::new(16);
        let hash = SequenceHash::root(7).extend(8);
        ghost.insert(hash, evicted(5));
        assert_eq!(ghost.take(SequenceHash::root(7)), None);
        assert_eq!(ghost.take(hash), Some(evicted(5)));
        assert_eq!(ghost.take(hash), None);
    }

    #[test]
    fn a_full_set_forgets_its_oldest_entry_first() {
        let mut ghost = Ghost::new(WAYS); // a single set
        let hashes: Vec<_> = (0..=WAYS as u64).map(SequenceHash::root).collect();
        for (seq, &hash) in hashes.iter().enumerate() {
            ghost.insert(hash, evicted(seq as u32));
        }
        assert_eq!(ghost.take(hashes[0]), None);
        for (seq, &hash) in hashes.iter().enumerate().skip(1) {
            assert_eq!(ghost.take(hash), Some(evicted(seq as u32)));
        }
    }

    /// Keys whose low bits repeat still spread over every set: a ghost as
    /// large as the keys remembers most of them (all in a handful of sets, it
    /// would keep four per set).
    #[test]
    fn keys_sharing_low_bits_spread_over_the_sets() {
        use crate::policy::test_utils::low_bits_cycling_chains;
        for (bits, patterns) in [(20, 16), (32, 1), (12, 4), (40, 2)] {
            let keys = low_bits_cycling_chains(u64::from(bits), 256, 16, bits, patterns);
            let mut ghost = Ghost::new(keys.len() * 2);
            for (seq, &key) in keys.iter().enumerate() {
                ghost.insert(key, evicted(seq as u32));
            }
            let kept = keys.iter().filter(|&&k| ghost.take(k).is_some()).count();
            assert!(
                kept >= keys.len() * 3 / 4,
                "{bits} low bits in {patterns} patterns: kept {kept} of {}",
                keys.len()
            );
        }
    }

    #[test]
    fn churn_never_grows_the_table() {
        let mut ghost = Ghost::new(64);
        let capacity = ghost.capacity();
        for i in 0..10_000u64 {
            ghost.insert(SequenceHash::root(i), evicted(i as u32));
        }
        assert_eq!(ghost.capacity(), capacity);
        assert_eq!(ghost.prints.capacity(), capacity);
    }

    #[test]
    fn evictions_since_wraps_with_the_stored_width() {
        let tag = Evicted {
            protected: false,
            seq: SEQ_MASK,
        };
        assert_eq!(tag.evictions_since(u64::from(SEQ_MASK)), 0);
        assert_eq!(tag.evictions_since(u64::from(SEQ_MASK) + 3), 3);
    }
}
