//! S3-FIFO (Yang et al., SOSP'23): a small FIFO, a main FIFO and a ghost
//! FIFO of recently evicted keys.
//!
//! # The algorithm
//!
//! Most keys of a real workload are used once. S3-FIFO lets a new entry prove
//! itself in a *small* FIFO (a tenth of the cache) before it may take space
//! in the *main* FIFO. Each entry carries a two-bit frequency, bumped on every
//! hit (capped at 3) and never moved by one. When an entry reaches the old
//! end of the small queue it moves to main if it was hit there, and is
//! evicted otherwise, leaving its key in the *ghost* queue. A new entry whose
//! key is still in the ghost queue was evicted too early: it goes straight to
//! main. Main is a FIFO with reinsertion (CLOCK-like): an entry at its old end
//! that was hit goes back to the new end with its frequency decremented, one
//! that was not is evicted. An eviction scans the small queue if it holds at
//! least its target share (or main is empty), main otherwise, and goes on
//! until it evicts or empties the queue it scans.
//!
//! # Mapping onto a block manager
//!
//! The queues hold every resident primary block, pinned or not, from
//! registration to eviction, because an entry's place is fixed when it
//! arrives; a block matched, pinned and released again keeps its place and
//! only gains frequency. Registration is the insertion (to main if the
//! block's [`SequenceHash`] is in the ghost, else to small); `on_hit` bumps
//! the frequency whether the block is pinned or evictable. Queue sizes count
//! pinned blocks too, as the paper's sizes count every cached object.
//!
//! Pinned blocks are not candidates. When the scan reaches a pinned block
//! whose frequency sends it on (small to main, or back into main), it goes
//! on as any block would. Otherwise it would be evicted, and instead it is
//! *parked*: unlinked from its queue until its last holder lets go, when it
//! rejoins the new end of the same queue. It was in use when the scan came
//! by, so it gets a fresh turn.
//!
//! Eviction is O(1) amortised: every scan step either evicts, parks a block
//! (paid for by the registration or release that queued it), moves a block
//! from small to main (at most once per registration) or spends one unit of
//! frequency (paid for by a hit). The same count bounds the loop, and since
//! every evictable block is queued, `evict` finds one whenever `len() > 0`.
//!
//! The ghost is a ring of the last evicted 128-bit keys, as many as main's
//! target size, with a hash table (sized once, never grown) for membership.
//! A key enters it in `on_forget`, which the caller runs right after `evict`
//! with the victim's hash. The table hashes keys with its own random seed
//! ([`crate::keyhash`]), so keys that share bits cannot crowd one probe run.

use hashbrown::HashTable;

use super::list::{Links, List};
use super::EvictionPolicy;
use crate::keyhash::KeyHasher;
use crate::SequenceHash;

/// Frequency cap (two bits).
const MAX_FREQ: u8 = 3;

/// Where a slot is, as this policy sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    /// Not registered (never was, or evicted from main).
    Absent,
    /// In the small queue.
    Small,
    /// In the main queue.
    Main,
    /// Pinned and passed by the small queue's scan; rejoins small on release.
    ParkedSmall,
    /// Pinned and passed by the main queue's scan; rejoins main on release.
    ParkedMain,
    /// Evicted from small: its hash enters the ghost at `on_forget`.
    ToGhost,
}

#[derive(Clone, Copy)]
struct Meta {
    place: Place,
    pinned: bool,
    freq: u8,
}

/// A fixed-capacity FIFO of evicted keys with O(1) membership.
struct Ghost {
    /// Keys in insertion order, overwritten round-robin.
    ring: Vec<u128>,
    /// Ring position written next.
    next: usize,
    /// Positions written so far, up to `ring.len()`.
    filled: usize,
    /// Ring positions of the keys currently in the ghost (a key whose ring
    /// entry has no table entry was removed by a ghost hit).
    table: HashTable<u32>,
    /// Hashes keys for `table`.
    hasher: KeyHasher,
}

impl Ghost {
    /// Checks the table against the ring (O(entries)).
    fn check(&self) -> Result<(), String> {
        if self.len() > self.filled || self.filled > self.ring.len() {
            return Err(format!(
                "s3fifo ghost: {} keys, {} positions filled of {}",
                self.len(),
                self.filled,
                self.ring.len()
            ));
        }
        for &position in self.table.iter() {
            if position as usize >= self.filled {
                return Err(format!("s3fifo ghost: position {position} not filled"));
            }
            let key = self.ring[position as usize];
            let found = self.table.find(self.hasher.hash_u128(key), |&p| {
                self.ring[p as usize] == key
            });
            if found != Some(&position) {
                return Err(format!(
                    "s3fifo ghost: a key indexed twice ({found:?}, {position})"
                ));
            }
        }
        Ok(())
    }

    fn new(capacity: usize) -> Self {
        Self {
            ring: vec![0; capacity],
            next: 0,
            filled: 0,
            // Twice the entries ever held: hashbrown then clears tombstones
            // by rehashing in place and never reallocates.
            table: HashTable::with_capacity(2 * capacity),
            hasher: KeyHasher::random(),
        }
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    /// Records `key` as the newest ghost entry, forgetting the oldest if full.
    fn insert(&mut self, key: u128) {
        let capacity = self.ring.len();
        if capacity == 0 {
            return;
        }
        let position = self.next;
        let hasher = self.hasher;
        let hash = move |key: u128| hasher.hash_u128(key);
        if self.filled == capacity {
            let old = self.ring[position];
            let ring = &self.ring;
            if let Ok(entry) = self
                .table
                .find_entry(hash(old), |&p| ring[p as usize] == old)
            {
                if *entry.get() as usize == position {
                    entry.remove();
                }
            }
        } else {
            self.filled += 1;
        }
        // No table entry points at `position` now, so writing it first keeps
        // every entry's key readable for the probe and any rehash below.
        self.ring[position] = key;
        let ring = &self.ring;
        match self
            .table
            .find_entry(hash(key), |&p| ring[p as usize] == key)
        {
            Ok(mut entry) => *entry.get_mut() = position as u32,
            Err(_) => {
                self.table
                    .insert_unique(hash(key), position as u32, |&p| hash(ring[p as usize]));
            }
        }
        self.next = (position + 1) % capacity;
    }

    /// Removes `key`; whether it was there.
    fn remove(&mut self, key: u128) -> bool {
        let ring = &self.ring;
        match self
            .table
            .find_entry(self.hasher.hash_u128(key), |&p| ring[p as usize] == key)
        {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }
}

/// S3-FIFO over resident primaries; only unpinned ones are evicted.
pub struct S3Fifo {
    meta: Vec<Meta>,
    links: Links,
    small: List,
    main: List,
    ghost: Ghost,
    /// The small queue is drained while it holds at least this many blocks.
    small_target: usize,
    /// Evictable slots (all of them are queued).
    evictable: usize,
}

impl S3Fifo {
    /// A policy for slots `0..slots`: small target 10% (at least one),
    /// ghost as large as the rest.
    pub fn new(slots: usize) -> Self {
        let small_target = (slots / 10).max(1);
        Self {
            meta: vec![
                Meta {
                    place: Place::Absent,
                    pinned: false,
                    freq: 0,
                };
                slots
            ],
            links: Links::new(slots),
            small: List::new(),
            main: List::new(),
            ghost: Ghost::new(slots.saturating_sub(small_target).max(1)),
            small_target,
            evictable: 0,
        }
    }

    /// Takes the oldest slot of the small queue through one scan step;
    /// returns it if it was evicted.
    fn step_small(&mut self) -> Option<u32> {
        let slot = self.small.pop_front(&mut self.links)?;
        let meta = &mut self.meta[slot as usize];
        if meta.freq > 0 {
            meta.place = Place::Main;
            self.main.push_back(&mut self.links, slot);
            None
        } else if meta.pinned {
            meta.place = Place::ParkedSmall;
            None
        } else {
            meta.place = Place::ToGhost;
            Some(slot)
        }
    }

    /// Takes the oldest slot of the main queue through one scan step;
    /// returns it if it was evicted.
    fn step_main(&mut self) -> Option<u32> {
        let slot = self.main.pop_front(&mut self.links)?;
        let meta = &mut self.meta[slot as usize];
        if meta.freq > 0 {
            meta.freq -= 1;
            self.main.push_back(&mut self.links, slot);
            None
        } else if meta.pinned {
            meta.place = Place::ParkedMain;
            None
        } else {
            meta.place = Place::Absent;
            Some(slot)
        }
    }

    /// Checks every internal invariant (O(slots)).
    fn check_structures(&self) -> Result<(), String> {
        let mut evictable = 0;
        for (list, place, name) in [
            (&self.small, Place::Small, "s3fifo small queue"),
            (&self.main, Place::Main, "s3fifo main queue"),
        ] {
            list.check(&self.links, name, |slot| {
                let meta = self.meta[slot as usize];
                if meta.place != place || meta.freq > MAX_FREQ {
                    return Err(format!(
                        "{name}: slot {slot} placed {:?}, frequency {}",
                        meta.place, meta.freq
                    ));
                }
                evictable += usize::from(!meta.pinned);
                Ok(())
            })?;
            let tally = self.meta.iter().filter(|m| m.place == place).count();
            if tally != list.len() {
                return Err(format!(
                    "{name}: {tally} slots placed, {} queued",
                    list.len()
                ));
            }
        }
        if evictable != self.evictable {
            return Err(format!(
                "s3fifo: {evictable} evictable slots queued, counts {}",
                self.evictable
            ));
        }
        for (slot, meta) in self.meta.iter().enumerate() {
            if matches!(meta.place, Place::ParkedSmall | Place::ParkedMain) && !meta.pinned {
                return Err(format!("s3fifo: parked slot {slot} is not pinned"));
            }
            if meta.place == Place::ToGhost {
                return Err(format!("s3fifo: slot {slot} evicted but not forgotten"));
            }
        }
        self.ghost.check()
    }
}

impl EvictionPolicy for S3Fifo {
    fn name(&self) -> &'static str {
        "s3fifo"
    }

    fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        let (place, queue) = if self.ghost.remove(hash.as_u128()) {
            (Place::Main, &mut self.main)
        } else {
            (Place::Small, &mut self.small)
        };
        queue.push_back(&mut self.links, slot);
        self.meta[slot as usize] = Meta {
            place,
            pinned: true,
            freq: 0,
        };
    }

    fn on_hit(&mut self, slot: u32) {
        let meta = &mut self.meta[slot as usize];
        meta.freq = (meta.freq + 1).min(MAX_FREQ);
    }

    fn on_release(&mut self, slot: u32) {
        let meta = &mut self.meta[slot as usize];
        meta.pinned = false;
        match meta.place {
            Place::ParkedSmall => {
                meta.place = Place::Small;
                self.small.push_back(&mut self.links, slot);
            }
            Place::ParkedMain => {
                meta.place = Place::Main;
                self.main.push_back(&mut self.links, slot);
            }
            _ => {}
        }
        self.evictable += 1;
    }

    fn on_reacquire(&mut self, slot: u32) {
        // The block keeps its place; the scan parks it if it gets there
        // before the block is released again.
        self.meta[slot as usize].pinned = true;
        self.evictable -= 1;
    }

    fn evict(&mut self) -> Option<u32> {
        if self.evictable == 0 {
            return None;
        }
        // Every evictable slot is queued, so the queues are not both empty.
        // As in the paper, a scan of either queue goes on until it evicts or
        // empties that queue.
        loop {
            if self.small.len() >= self.small_target || self.main.len() == 0 {
                while self.small.len() > 0 {
                    if let Some(slot) = self.step_small() {
                        self.evictable -= 1;
                        return Some(slot);
                    }
                }
            } else {
                while self.main.len() > 0 {
                    if let Some(slot) = self.step_main() {
                        self.evictable -= 1;
                        return Some(slot);
                    }
                }
            }
        }
    }

    fn on_forget(&mut self, slot: u32, hash: SequenceHash) {
        let meta = &mut self.meta[slot as usize];
        if meta.place == Place::ToGhost {
            self.ghost.insert(hash.as_u128());
        }
        meta.place = Place::Absent;
    }

    fn on_discard(&mut self, slot: u32, _hash: SequenceHash) {
        // Pinned: still queued (not yet scanned) or parked. Not an eviction,
        // so the ghost does not remember it.
        let meta = &mut self.meta[slot as usize];
        match meta.place {
            Place::Small => self.small.remove(&mut self.links, slot),
            Place::Main => self.main.remove(&mut self.links, slot),
            _ => {}
        }
        meta.place = Place::Absent;
    }

    fn len(&self) -> usize {
        self.evictable
    }

    fn check(&self) -> Result<(), String> {
        self.check_structures()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyhash::adversarial::{ground_against_xor_fold, hashbrown_buckets, longest_probe};
    use crate::keyhash::KeyHasher;
    use crate::policy::test_utils::{
        check_random_sequences, evict_all, low_bits_cycling_chains, register_all, roots,
    };

    #[test]
    fn ghost_keys_sharing_low_bits_keep_probes_short() {
        for (bits, patterns) in [(20, 16), (32, 1), (12, 4)] {
            let chains = low_bits_cycling_chains(bits.into(), 256, 16, bits, patterns);
            let chains = chains.iter().map(|k| k.as_u128());
            let ground = ground_against_xor_fold(bits.into(), 4_096, bits, patterns);
            for keys in [chains.collect::<Vec<_>>(), ground] {
                let mut ghost = Ghost::new(keys.len());
                ghost.hasher = KeyHasher::with_seed([0x243F_6A88_85A3_08D3, 0x1319_8A2E_0370_7344]);
                let hashes = keys.iter().map(|&k| ghost.hasher.hash_u128(k));
                // As the table is sized: load 1/4 at most. (Old hash: 1,044.)
                let longest = longest_probe(hashes, hashbrown_buckets(2 * keys.len()));
                assert!(longest <= 48, "{bits} bits: longest probe {longest}");
                for &key in &keys {
                    ghost.insert(key);
                }
                assert!(keys.iter().all(|&k| ghost.remove(k)));
                assert_eq!(ghost.len(), 0);
            }
        }
    }

    #[test]
    fn unhit_blocks_leave_from_small_and_hit_ones_move_to_main() {
        let hashes = roots(10);
        let mut fifo = S3Fifo::new(10); // small target 1
        register_all(&mut fifo, &hashes, &[0, 1, 2, 3, 4]);
        fifo.on_hit(0);
        fifo.on_hit(2);
        // 0 moves to main, 1 is evicted; then 2 moves to main, 3 is evicted.
        assert_eq!(fifo.evict(), Some(1));
        fifo.on_forget(1, hashes[1]);
        assert_eq!(fifo.evict(), Some(3));
        fifo.on_forget(3, hashes[3]);
        assert_eq!(fifo.check(), Ok(()));
        // Small still holds 4 (at its target): it goes before main's 0 and 2.
        assert_eq!(evict_all(&mut fifo, &hashes), vec![4, 0, 2]);
    }

    #[test]
    fn main_reinserts_hit_blocks_with_one_less_frequency() {
        let hashes = roots(20);
        let mut fifo = S3Fifo::new(20); // small target 2
        register_all(&mut fifo, &hashes, &[0, 1, 2, 3]);
        for _ in 0..3 {
            fifo.on_hit(0);
        }
        fifo.on_hit(1);
        fifo.on_hit(2);
        // Small [0 1 2 3]: 0, 1, 2 move to main, 3 is evicted.
        assert_eq!(fifo.evict(), Some(3));
        fifo.on_forget(3, hashes[3]);
        // Small is below target: main [0(3) 1(1) 2(1)] is scanned.
        // 0 -> freq 2, 1 -> 0, 2 -> 0, 0 -> 1, then 1 is evicted.
        assert_eq!(fifo.evict(), Some(1));
        fifo.on_forget(1, hashes[1]);
        assert_eq!(evict_all(&mut fifo, &hashes), vec![2, 0]);
    }

    #[test]
    fn a_key_returning_from_the_ghost_goes_straight_to_main() {
        let hashes = roots(10);
        let mut fifo = S3Fifo::new(10);
        register_all(&mut fifo, &hashes, &[0, 1, 2]);
        assert_eq!(fifo.evict(), Some(0));
        fifo.on_forget(0, hashes[0]);
        assert_eq!(fifo.ghost.len(), 1);
        // Hash 0 comes back (in slot 0 again) and lands in main, out of the ghost.
        register_all(&mut fifo, &hashes, &[0]);
        assert_eq!(fifo.ghost.len(), 0);
        assert_eq!(fifo.meta[0].place, Place::Main);
        // Small [1 2] is drained first, then main.
        assert_eq!(evict_all(&mut fifo, &hashes), vec![1, 2, 0]);
    }

    #[test]
    fn main_evictions_do_not_enter_the_ghost() {
        let hashes = roots(10);
        let mut fifo = S3Fifo::new(10);
        register_all(&mut fifo, &hashes, &[0]);
        fifo.on_hit(0);
        register_all(&mut fifo, &hashes, &[1]);
        assert_eq!(fifo.evict(), Some(1)); // 0 moved to main on the way
        fifo.on_forget(1, hashes[1]);
        assert_eq!(fifo.evict(), Some(0)); // evicted from main
        fifo.on_forget(0, hashes[0]);
        assert!(!fifo.ghost.remove(hashes[0].as_u128()));
        assert!(fifo.ghost.remove(hashes[1].as_u128()));
    }

    #[test]
    fn ghost_forgets_its_oldest_key_when_full() {
        let mut ghost = Ghost::new(3);
        for key in 1..=3 {
            ghost.insert(key);
        }
        assert!(ghost.remove(2)); // a ghost hit leaves a stale ring entry
        ghost.insert(4); // overwrites key 1
        ghost.insert(2); // overwrites the stale 2, re-adds it
        ghost.insert(5); // overwrites 3
        assert_eq!(ghost.len(), 3);
        assert!(!ghost.remove(1) && !ghost.remove(3));
        assert!(ghost.remove(4) && ghost.remove(2) && ghost.remove(5));
    }

    #[test]
    fn ghost_churn_never_grows_its_table() {
        let mut ghost = Ghost::new(50);
        // Bytes, not `capacity()`: tombstones lower the latter without any
        // reallocation (and where they fall depends on the random seed).
        let bytes = ghost.table.allocation_size();
        for key in 0..20_000u128 {
            ghost.insert(key % 173);
            if key % 3 == 0 {
                ghost.remove(key % 89);
            }
            assert!(ghost.len() <= 50);
        }
        assert_eq!(ghost.table.allocation_size(), bytes);
    }

    #[test]
    fn pinned_blocks_are_parked_and_rejoin_their_queue_on_release() {
        let hashes = roots(10);
        let mut fifo = S3Fifo::new(10);
        for slot in 0..3 {
            fifo.on_register(slot, hashes[slot as usize]);
        }
        fifo.on_release(1);
        fifo.on_release(2);
        // 0 is pinned and unhit: parked, 1 is evicted.
        assert_eq!(fifo.evict(), Some(1));
        fifo.on_forget(1, hashes[1]);
        assert_eq!(fifo.meta[0].place, Place::ParkedSmall);
        fifo.on_release(0);
        assert_eq!(evict_all(&mut fifo, &hashes), vec![2, 0]);
    }

    #[test]
    fn random_hook_sequences_agree_with_the_model() {
        check_random_sequences(S3Fifo::new);
    }
}
