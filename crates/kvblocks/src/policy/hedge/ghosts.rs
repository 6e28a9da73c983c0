//! [`Ghosts`]: which blocks left recently, for once-first's retained
//! history (a block that registers again while remembered is on its second
//! use).
//!
//! Presence only, as small as it can be: a 16-bit tag per entry, eight
//! entries to a 16-byte set (four sets to a cache line), sets a power of
//! two, sized once: 4 bytes a slot for twice as many entries as slots.
//! (A tag of 15 useful bits in a set of eight makes one probe in about
//! 4,000 a false "left recently": a wrong guess, not a wrong eviction.) A set is a FIFO: an insert shifts its tags back one
//! way and drops the last; a `take` closes the gap it leaves, so the
//! entries that leave first are always the oldest. A probe reads one set,
//! never allocates, and costs the same whatever the keys (crafted keys can
//! only make a policy guess wrong, never make it slow).
//!
//! The caller hands in a 64-bit hash of the key under a fixed seed
//! ([`super::Hedge`] computes it once per registration and also samples
//! with it), so a replay repeats exactly. The set comes from its low bits
//! and the tag from bits 16-31, which the sampler (bits 48 and up) does
//! not read.

/// Ways per set.
const WAYS: usize = 8;

/// Block hashes to "left recently", oldest-first replacement per set.
pub(super) struct Ghosts {
    /// Tags per set, newest first (0: empty, always after the used ways).
    sets: Vec<[u16; WAYS]>,
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
    fn locate(&self, hash: u64) -> (usize, u16) {
        ((hash as usize) & self.mask, (hash >> 16) as u16 | 1)
    }

    /// Remembers the key hashed as `hash` as the newest of its set.
    #[inline]
    pub(super) fn insert(&mut self, hash: u64) {
        let (index, tag) = self.locate(hash);
        let set = &mut self.sets[index];
        set.copy_within(..WAYS - 1, 1);
        set[0] = tag;
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
        let mut ghosts = Ghosts::new(WAYS);
        let tags: Vec<u64> = (0..WAYS as u64 + 2).map(|i| 2 * i + 1).collect();
        for &tag in &tags {
            ghosts.insert(key(tag));
        }
        // The newest `WAYS` stay; each is taken once.
        assert!(!ghosts.take(key(tags[0])) && !ghosts.take(key(tags[1])));
        assert!(ghosts.take(key(tags[4])));
        assert!(!ghosts.take(key(tags[4])));
        // The gap closed: one more insert drops nothing still remembered.
        ghosts.insert(key(101));
        let kept = tags[2..].iter().filter(|&&t| t != tags[4]).chain([&101]);
        assert!(kept.into_iter().all(|&tag| ghosts.take(key(tag))));
        assert_eq!(ghosts.sets[0], [0; WAYS]);
    }

    #[test]
    fn keys_in_other_sets_do_not_push_each_other_out() {
        let mut ghosts = Ghosts::new(16 * WAYS);
        assert_eq!(ghosts.mask, 15);
        for hash in 0..16u64 {
            ghosts.insert(hash | 0xABCD_0000);
        }
        assert!((0..16u64).all(|hash| ghosts.take(hash | 0xABCD_0000)));
    }
}
