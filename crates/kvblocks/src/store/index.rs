//! The hash index: sequence hash -> primary slot, readable without the lock.
//!
//! Owns one open-addressing table (linear probing) of 64-bit atomic buckets.
//! A bucket holds a slot number in its low half and the high 32 bits of the
//! key's folded hash (the tag) in its high half. The tag also gives the home
//! bucket, so entries can be moved without reading any record; the full key
//! is not stored, it is read back from the slot record, which a tag match
//! makes rare. The table is sized once, for at least four times the slots
//! (load at most 1/4: short probes and short removal shifts; measured 62 -> 50
//! ns per block in the serving loop against twice the slots), and never
//! grows, so steady state allocates nothing.
//!
//! # One writer, any number of readers
//!
//! Inserts and removals need the [`IndexWriter`], which lives inside the store
//! behind its own lock (`Store::writer`): there is one writer at
//! a time. Readers ([`HashIndex::find`]) take no lock. What makes that sound:
//!
//! - an insert fills an empty bucket and moves nothing, so it can only make a
//!   concurrent reader miss the key being inserted (the insert is then simply
//!   ordered after the read);
//! - a removal shifts the entries after the hole back towards their homes (no
//!   tombstones, so probes stay short forever), and a shifted entry can slip
//!   past a reader. Removals therefore run inside an odd *epoch*
//!   ([`HashIndex::remove`] opens it, [`HashIndex::settle`] closes it once per
//!   batch); a reader that misses checks the epoch was even and unchanged
//!   across its probe, and otherwise reports [`Probe::Unsure`] so the caller
//!   asks again under the lock.
//!
//! A hit is only a candidate: the slot may have been evicted and reused since
//! its bucket was read. Callers confirm it (see [`super::lookup`]).
//!
//! It never decides what is registered; [`super::state::ShardState`] does.

use crate::keyhash::KeyHasher;
use crate::sync::{fence, AtomicU64, Ordering, Padded};
use crate::SequenceHash;

/// A bucket with no entry. Its slot half (`u32::MAX`) is never a slot
/// number (see `MAX_BLOCK_COUNT`).
const EMPTY: u64 = u64::MAX;

/// Buckets of the index of a store of `slots` slots: at least four per slot.
fn bucket_count(slots: usize) -> usize {
    slots.saturating_mul(4).max(8).next_power_of_two()
}

/// The bucket value for `slot` under a key with folded hash `folded`.
#[inline(always)]
fn entry(folded: u64, slot: u32) -> u64 {
    (folded & !0xFFFF_FFFF) | u64::from(slot)
}

/// Whether bucket value `value` may be an entry for a key folded to `folded`.
#[inline(always)]
fn tag_matches(value: u64, folded: u64) -> bool {
    (value ^ folded) >> 32 == 0 && value != EMPTY
}

/// What a lock-free lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// A slot whose record held the key when it was read (unconfirmed).
    Candidate(u32),
    /// No entry for the key.
    Miss,
    /// Removals ran meanwhile: ask again under the lock.
    Unsure,
}

/// What [`HashIndex::insert_if_absent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// The new entry is in.
    Added,
    /// An entry for the key names this slot; nothing changed.
    Present(u32),
}

/// Sequence hash -> slot, for primaries only.
pub(crate) struct HashIndex {
    /// Folds a 128-bit key to the 64 bits a bucket's tag and home come from.
    /// Seeded per index: the key is the output of xxh3, but a client can
    /// grind prompts until their keys share a home (see [`crate::keyhash`]).
    hasher: KeyHasher,
    buckets: Box<[AtomicU64]>,
    mask: usize,
    /// Odd while a batch of removals runs.
    epoch: Padded<AtomicU64>,
}

/// The right to change the index, and what only the writer needs to know.
/// Held behind the store's index writer lock, so one thread writes at a time.
pub(crate) struct IndexWriter {
    entries: usize,
    /// Whether the epoch is odd (a removal batch is open).
    removing: bool,
}

impl HashIndex {
    /// An index for up to `slots` entries, and its writer.
    pub(crate) fn with_capacity(slots: usize) -> Result<(Self, IndexWriter), super::OutOfMemory> {
        let buckets = bucket_count(slots);
        let index = Self {
            hasher: KeyHasher::random(),
            buckets: super::try_boxed(buckets, || AtomicU64::new(EMPTY))?,
            mask: buckets - 1,
            epoch: Padded(AtomicU64::new(0)),
        };
        let writer = IndexWriter {
            entries: 0,
            removing: false,
        };
        Ok((index, writer))
    }

    #[inline(always)]
    fn load(&self, bucket: usize) -> u64 {
        // ORDERING: Acquire, paired with `store`'s Release: an entry's key
        // (the slot record's hash) is visible once the entry is.
        self.buckets[bucket].load(Ordering::Acquire)
    }

    #[inline(always)]
    fn store(&self, bucket: usize, value: u64) {
        // ORDERING: Release, paired with `load`'s Acquire.
        self.buckets[bucket].store(value, Ordering::Release);
    }

    /// `hash` folded to 64 bits: its tag (high half) and so its home.
    #[inline(always)]
    fn fold(&self, hash: SequenceHash) -> u64 {
        self.hasher.hash_u128(hash.as_u128())
    }

    /// The home bucket of `hash` (for tests that need keys sharing a probe run).
    pub(crate) fn home_bucket(&self, hash: SequenceHash) -> usize {
        self.home(self.fold(hash))
    }

    /// The home bucket of an entry or folded hash (from the tag bits).
    #[inline(always)]
    fn home(&self, value: u64) -> usize {
        (value >> 32) as usize & self.mask
    }

    /// Probes for `hash` from its home bucket; `key_of` reads a slot's key.
    /// `Ok(slot)` on a hit, `Err(bucket)` with the empty bucket that ended
    /// the probe on a miss.
    #[inline(always)]
    fn probe(
        &self,
        hash: SequenceHash,
        key_of: impl Fn(u32) -> SequenceHash,
    ) -> Result<u32, usize> {
        let folded = self.fold(hash);
        let mut bucket = self.home(folded);
        // At most a quarter of the buckets hold entries, so an empty one ends the
        // probe within one lap; the bound only guards against a torn view.
        for _ in 0..=self.mask {
            let value = self.load(bucket);
            if value == EMPTY {
                return Err(bucket);
            }
            if tag_matches(value, folded) && key_of(value as u32) == hash {
                return Ok(value as u32);
            }
            bucket = (bucket + 1) & self.mask;
        }
        Err(bucket)
    }

    /// Lock-free lookup of the slot registered under `hash`.
    #[inline]
    pub(crate) fn find(&self, hash: SequenceHash, key_of: impl Fn(u32) -> SequenceHash) -> Probe {
        // ORDERING: Acquire, paired with `settle`'s Release: an even epoch
        // here means every shift of earlier batches is visible.
        let epoch = self.epoch.load(Ordering::Acquire);
        match self.probe(hash, key_of) {
            Ok(slot) => Probe::Candidate(slot),
            Err(_) => {
                // ORDERING: the seqlock's read side: this Acquire fence pairs
                // with the Release fence that opens a removal batch, so a
                // probe that saw a bucket the batch wrote reads the odd epoch
                // below (Relaxed suffices after the fence).
                fence(Ordering::Acquire);
                if epoch & 1 == 0 && self.epoch.load(Ordering::Relaxed) == epoch {
                    Probe::Miss
                } else {
                    Probe::Unsure
                }
            }
        }
    }

    /// Loads the home bucket of `hash`, so a locked operation on it finds
    /// the line cached. Called in a loop before taking a lock, the loads'
    /// misses overlap instead of adding up under the lock.
    #[inline]
    pub(crate) fn warm(&self, hash: SequenceHash) {
        std::hint::black_box(self.load(self.home(self.fold(hash))));
    }

    /// The entry for `hash`, for the writer's lock holder: exact, no
    /// removal can run meanwhile (the slot may still be a stale one, see
    /// [`super::core`]).
    #[inline]
    pub(crate) fn get(
        &self,
        _writer: &IndexWriter,
        hash: SequenceHash,
        key_of: impl Fn(u32) -> SequenceHash,
    ) -> Option<u32> {
        self.probe(hash, key_of).ok()
    }

    /// Adds `slot` under `hash` unless an entry for `hash` is present.
    #[inline]
    pub(crate) fn insert_if_absent(
        &self,
        writer: &mut IndexWriter,
        hash: SequenceHash,
        slot: u32,
        key_of: impl Fn(u32) -> SequenceHash,
    ) -> Insert {
        match self.probe(hash, key_of) {
            Ok(existing) => Insert::Present(existing),
            Err(bucket) => {
                self.store(bucket, entry(self.fold(hash), slot));
                writer.entries += 1;
                Insert::Added
            }
        }
    }

    /// Points the entry for `hash` that names `old` at `new` instead, in
    /// place (readers see one or the other). Returns whether it was found.
    pub(crate) fn replace(
        &self,
        _writer: &mut IndexWriter,
        hash: SequenceHash,
        old: u32,
        new: u32,
    ) -> bool {
        let folded = self.fold(hash);
        let Some(bucket) = self.bucket_of(entry(folded, old)) else {
            return false;
        };
        self.store(bucket, entry(folded, new));
        true
    }

    /// The bucket holding exactly `value` (an entry), probing from its home.
    fn bucket_of(&self, value: u64) -> Option<usize> {
        let mut bucket = self.home(value);
        for _ in 0..=self.mask {
            match self.load(bucket) {
                EMPTY => return None,
                found if found == value => return Some(bucket),
                _ => bucket = (bucket + 1) & self.mask,
            }
        }
        None
    }

    /// Removes the entry naming `slot` under `hash`; returns whether there was
    /// one. Compares slot numbers only, so it reads no record. Opens a
    /// removal epoch if none is open: call [`Self::settle`] after the batch.
    #[inline]
    pub(crate) fn remove(&self, writer: &mut IndexWriter, hash: SequenceHash, slot: u32) -> bool {
        let Some(bucket) = self.bucket_of(entry(self.fold(hash), slot)) else {
            return false;
        };
        if !writer.removing {
            writer.removing = true;
            // ORDERING: the seqlock's write side: the epoch turns odd, then a
            // Release fence orders it before every bucket this batch writes.
            self.epoch.fetch_add(1, Ordering::Relaxed);
            fence(Ordering::Release);
        }
        self.shift_back(bucket);
        writer.entries -= 1;
        true
    }

    /// Fills the hole at `hole` by moving back each later entry of the run
    /// that may live there (its home is not between the hole and itself),
    /// then empties the last hole.
    fn shift_back(&self, mut hole: usize) {
        let mut next = (hole + 1) & self.mask;
        loop {
            let value = self.load(next);
            if value == EMPTY {
                break;
            }
            // Distance from the entry's home to where it sits, and from the
            // hole to it: it may move back iff its home is not after the hole.
            let home = self.home(value);
            let from_home = next.wrapping_sub(home) & self.mask;
            let from_hole = next.wrapping_sub(hole) & self.mask;
            if from_home >= from_hole {
                self.store(hole, value);
                hole = next;
            }
            next = (next + 1) & self.mask;
        }
        self.store(hole, EMPTY);
    }

    /// Closes the removal epoch, if one is open: lock-free misses are
    /// trustworthy again. Call at the end of every batch that may remove.
    #[inline]
    pub(crate) fn settle(&self, writer: &mut IndexWriter) {
        if writer.removing {
            writer.removing = false;
            // ORDERING: Release, paired with `find`'s Acquire at probe start.
            self.epoch.fetch_add(1, Ordering::Release);
        }
    }

    /// Bytes the table holds (for the memory report).
    pub(crate) fn allocation_size(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<AtomicU64>()
    }
}

impl IndexWriter {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries
    }
}

#[cfg(all(test, not(shuttle)))]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Keys for slots, as a record array would hold them.
    struct Keys(Vec<SequenceHash>);

    impl Keys {
        fn key(&self, slot: u32) -> SequenceHash {
            self.0[slot as usize]
        }
    }

    #[test]
    fn insert_find_remove_against_a_map() {
        let slots = 64u32;
        let (index, mut writer) = HashIndex::with_capacity(slots as usize).unwrap();
        // Keys that share home buckets often (small table), with churn that
        // leaves tombstones and empties them again.
        let keys = Keys(
            (0..slots)
                .map(|s| SequenceHash::root(u64::from(s) * 7))
                .collect(),
        );
        let mut model: HashMap<SequenceHash, u32> = HashMap::new();
        let mut state = 0x1234_5678_u64;
        for step in 0..20_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let slot = (state >> 33) as u32 % slots;
            let hash = keys.key(slot);
            if model.remove(&hash).is_some() {
                assert!(index.remove(&mut writer, hash, slot));
            } else {
                let added = index.insert_if_absent(&mut writer, hash, slot, |s| keys.key(s));
                assert_eq!(added, Insert::Added);
                model.insert(hash, slot);
            }
            if step % 5 == 0 {
                index.settle(&mut writer);
            }
            assert_eq!(writer.len(), model.len());
            if step % 97 == 0 {
                index.settle(&mut writer);
                for s in 0..slots {
                    let hash = keys.key(s);
                    let expected = model.get(&hash).copied();
                    assert_eq!(index.get(&writer, hash, |x| keys.key(x)), expected);
                    let probe = index.find(hash, |x| keys.key(x));
                    assert_eq!(probe, expected.map_or(Probe::Miss, Probe::Candidate));
                }
            }
        }
    }

    #[test]
    fn present_keys_are_reported_not_reinserted() {
        let (index, mut writer) = HashIndex::with_capacity(4).unwrap();
        let keys = Keys(vec![SequenceHash::root(1), SequenceHash::root(1)]);
        let first = index.insert_if_absent(&mut writer, keys.key(0), 0, |s| keys.key(s));
        assert_eq!(first, Insert::Added);
        let second = index.insert_if_absent(&mut writer, keys.key(1), 1, |s| keys.key(s));
        assert_eq!(second, Insert::Present(0));
        assert!(index.replace(&mut writer, keys.key(0), 0, 1));
        assert_eq!(
            index.find(keys.key(0), |s| keys.key(s)),
            Probe::Candidate(1)
        );
        assert!(index.replace(&mut writer, keys.key(0), 1, 0));
        assert_eq!(writer.len(), 1);
        assert!(
            !index.remove(&mut writer, keys.key(1), 1),
            "slot 1 was never entered"
        );
        assert!(index.remove(&mut writer, keys.key(0), 0));
        assert_eq!(index.find(keys.key(0), |s| keys.key(s)), Probe::Unsure);
        index.settle(&mut writer);
        assert_eq!(index.find(keys.key(0), |s| keys.key(s)), Probe::Miss);
    }

    /// Keys a client ground so that an unseeded fold (the one this index
    /// used before it was seeded) sends them all to one home bucket: with the
    /// seeded fold they spread like random keys.
    #[test]
    fn keys_ground_against_an_unseeded_fold_spread_over_the_buckets() {
        use crate::keyhash::adversarial::longest_probe;
        let slots = 1024;
        let (index, _writer) = HashIndex::with_capacity(slots).unwrap();
        let buckets = index.buckets.len();
        let unseeded_home = |raw: u128| {
            let folded = (raw as u64) ^ ((raw >> 64) as u64).rotate_left(29);
            (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & (buckets - 1)
        };
        let mut state = 0x5EED_u64;
        let mut ground = Vec::new();
        while ground.len() < slots {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let raw = u128::from(state.wrapping_mul(0xBF58_476D_1CE4_E5B9)) << 64
                | u128::from(state ^ (state >> 31));
            let hash = SequenceHash::from_valid_u128(raw);
            if unseeded_home(hash.as_u128()) == 0 {
                ground.push(hash);
            }
        }
        let old = longest_probe(
            ground.iter().map(|h| unseeded_home(h.as_u128()) as u64),
            buckets,
        );
        assert_eq!(old, slots, "the ground keys all share one home unseeded");
        let new = longest_probe(ground.iter().map(|h| index.home_bucket(*h) as u64), buckets);
        assert!(new <= 48, "longest probe {new} with the seeded fold");
    }

    #[test]
    fn a_miss_during_removals_is_unsure() {
        let (index, _writer) = HashIndex::with_capacity(4).unwrap();
        index.epoch.store(1, Ordering::Relaxed);
        assert_eq!(
            index.find(SequenceHash::root(9), |_| unreachable!()),
            Probe::Unsure
        );
    }
}
