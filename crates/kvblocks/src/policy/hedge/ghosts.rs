//! [`Ghosts`]: which blocks left recently, for once-first's retained
//! history (a block that registers again while remembered is on its second
//! use).
//!
//! Presence only, as small as it can be: a 32-bit tag per entry, four
//! entries to a 16-byte set (four sets to a cache line), sets a power of
//! two, sized once. A set is a FIFO: an insert shifts its tags back one
//! way and drops the last; a `take` closes the gap it leaves, so the
//! entries that leave first are always the oldest. A probe reads one set,
//! never allocates, and costs the same whatever the keys (crafted keys can
//! only make a policy guess wrong, never make it slow).
//!
//! The caller hands in a 64-bit hash of the key under a fixed seed
//! ([`super::Hedge`] computes it once per registration and also samples
//! with it), so a replay repeats exactly. The set comes from its low bits
//! and the tag from bits 16-47, which the sampler (bits 48 and up) does
//! not read.

/// Ways per set.
const WAYS: usize = 4;

/// Block hashes to "left recently", oldest-first replacement per set.
pub(super) struct Ghosts {
    /// Tags per set, newest first (0: empty, always after the used ways).
    sets: Vec<[u32; WAYS]>,
    /// `sets.len() - 1`.
    mask: usize,
}

impl Ghosts {
    /// A memory of about `entries` blocks (at least one set).
    pub(super) fn new(entries: usize) -> Self {
        let sets = (entries / WAYS).max(1).next_power_of_two();
        Self {
            sets: vec![[0; WAYS]; sets],
            mask: sets - 1,
        }
    }

    /// The set and nonzero tag of a key hashed as `hash`.
    #[inline]
    fn locate(&self, hash: u64) -> (usize, u32) {
        ((hash as usize) & self.mask, (hash >> 16) as u32 | 1)
    }

    /// Remembers the key hashed as `hash` as the newest of its set.
    #[inline]
    pub(super) fn insert(&mut self, hash: u64) {
        let (index, tag) = self.locate(hash);
        let set = &mut self.sets[index];
        *set = [tag, set[0], set[1], set[2]];
    }

    /// Forgets the key hashed as `hash`; whether it was remembered.
    #[inline]
    pub(super) fn take(&mut self, hash: u64) -> bool {
        let (index, tag) = self.locate(hash);
        let set = &mut self.sets[index];
        let Some(way) = set.iter().position(|&t| t == tag) else {
            return false;
        };
        set.copy_within(way + 1.., way);
        set[WAYS - 1] = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_recent_keys_and_forgets_the_oldest_of_a_full_set() {
        // One set; odd tags, so `| 1` leaves them apart.
        let key = |tag: u64| tag << 16;
        let mut ghosts = Ghosts::new(4);
        for tag in [1, 3, 5, 7, 9, 11] {
            ghosts.insert(key(tag));
        }
        // The four newest stay; each is taken once.
        assert!(!ghosts.take(key(1)) && !ghosts.take(key(3)));
        assert!(ghosts.take(key(7)));
        assert!(!ghosts.take(key(7)));
        // The gap closed: one more insert drops nothing still remembered.
        ghosts.insert(key(13));
        assert!([5, 9, 11, 13].iter().all(|&tag| ghosts.take(key(tag))));
        assert_eq!(ghosts.sets[0], [0; WAYS]);
    }

    #[test]
    fn keys_in_other_sets_do_not_push_each_other_out() {
        let mut ghosts = Ghosts::new(64);
        assert_eq!(ghosts.mask, 15);
        for hash in 0..16u64 {
            ghosts.insert(hash | 0xABCD_0000);
        }
        assert!((0..16u64).all(|hash| ghosts.take(hash | 0xABCD_0000)));
    }
}
