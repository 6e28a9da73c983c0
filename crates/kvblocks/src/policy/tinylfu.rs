//! W-TinyLFU: recency in a small window, frequency to decide who stays.
//!
//! # The algorithm
//!
//! TinyLFU (Einziger et al.) keeps an approximate access count for every key
//! it has seen, resident or not, in a count-min sketch: four rows of 4-bit
//! counters, one counter per row picked by hashing the key; an access bumps
//! all four, the estimate is their minimum. After every `10 x capacity`
//! recorded accesses all counters are halved, so old popularity fades and the
//! sketch tracks the recent past. W-TinyLFU (as in Caffeine) puts a small LRU
//! *window* (1% of the cache) in front of a segmented LRU *main* area split
//! into *probation* (20%) and *protected* (80%). New entries enter the
//! window; when it overflows, its least recent entry is a *candidate* for
//! main and competes with main's victim (the least recent probation entry):
//! the one with the lower estimated frequency is evicted, the candidate only
//! winning if strictly more frequent. A hit in probation promotes the entry
//! to protected; protected overflow demotes its least recent entry back to
//! probation. Bursts of new keys (a scan) then churn through the window
//! without displacing the frequently used blocks in main.
//!
//! # Mapping onto a block manager
//!
//! The slot count is fixed and a freed slot must always be handed out, so
//! admission cannot refuse anything: it only decides *which* block is
//! evicted. `evict` runs when a new block is about to be registered, i.e.
//! about to enter the window. If the window already holds its share, the new
//! block pushes the window's least recent evictable block out, and that
//! candidate duels main's victim: the loser is evicted, a winning candidate
//! moves to probation. If the window has room, main's victim is evicted.
//! While main is below its share (the cache is filling up), window overflow
//! moves to probation without a duel.
//!
//! The sketch is keyed by the block's [`SequenceHash`] (folded to 64 bits),
//! so a block keeps its frequency across eviction and re-registration: a
//! popular prefix that was evicted wins its duel when it comes back.
//! Registration and every hit count as an access.
//!
//! Pinned blocks belong to a segment (and count towards its size) but sit
//! in no list: each segment keeps one LRU list of its *evictable* blocks in
//! release order (the release is a block's most recent use), so victims are
//! always list fronts and every hook is O(1). Window overflow and protected
//! overflow only move evictable blocks; an overflow held up by pinned blocks
//! is settled when they are released. The sketch is sized in `new` and aging
//! is O(sketch) once every `10 x slots` accesses, O(1) amortised; nothing
//! allocates after construction.

use super::list::{Links, List, NIL};
use super::EvictionPolicy;
use crate::SequenceHash;

/// Rows of the count-min sketch.
const ROWS: usize = 4;
/// 4-bit counters per `u64` word.
const COUNTERS_PER_WORD: usize = 16;
/// Largest 4-bit count.
const MAX_COUNT: u64 = 15;

/// A count-min sketch of 4-bit counters with periodic halving.
struct FrequencySketch {
    /// `ROWS` rows of `row_words` words each.
    table: Vec<u64>,
    row_words: usize,
    /// Counters per row minus one (a power of two minus one).
    counter_mask: u64,
    /// Accesses recorded since the last halving (roughly).
    samples: usize,
    /// Halve every counter when `samples` reaches this.
    sample_size: usize,
}

/// A 64-bit finaliser (splitmix64) spreading any key over all bits.
#[inline]
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Folds a sequence hash to the sketch's 64-bit key.
#[inline]
fn key_of(hash: SequenceHash) -> u64 {
    let raw = hash.as_u128();
    (raw as u64) ^ ((raw >> 64) as u64).rotate_left(29)
}

impl FrequencySketch {
    /// A sketch for a cache of `slots` entries: `4 x slots` counters per row
    /// (8 bytes per slot in all), halved every `10 x slots` accesses.
    fn new(slots: usize) -> Self {
        let counters = slots
            .saturating_mul(4)
            .clamp(64, 1 << 28)
            .next_power_of_two();
        let row_words = counters / COUNTERS_PER_WORD;
        Self {
            table: vec![0; ROWS * row_words],
            row_words,
            counter_mask: counters as u64 - 1,
            samples: 0,
            sample_size: slots.saturating_mul(10).max(16),
        }
    }

    /// `(word, shift)` of `key`'s counter in each row: four 32-bit indexes
    /// cut from two mixed words, masked to the row width.
    #[inline]
    fn cells(&self, key: u64) -> [(usize, u32); ROWS] {
        let a = mix(key);
        let b = mix(a ^ 0x9E37_79B9_7F4A_7C15);
        let raw = [a, a >> 32, b, b >> 32];
        let mut cells = [(0, 0); ROWS];
        for (row, cell) in cells.iter_mut().enumerate() {
            let index = (raw[row] & self.counter_mask) as usize;
            let word = row * self.row_words + index / COUNTERS_PER_WORD;
            *cell = (word, (index % COUNTERS_PER_WORD) as u32 * 4);
        }
        cells
    }

    /// Records one access to `key`.
    fn increment(&mut self, key: u64) {
        let mut added = false;
        for (word, shift) in self.cells(key) {
            if (self.table[word] >> shift) & MAX_COUNT < MAX_COUNT {
                self.table[word] += 1 << shift;
                added = true;
            }
        }
        if added {
            self.samples += 1;
            if self.samples >= self.sample_size {
                self.age();
            }
        }
    }

    /// The estimated access count of `key` (never below the true count since
    /// the last halvings, saturating at 15).
    fn estimate(&self, key: u64) -> u64 {
        self.cells(key)
            .iter()
            .map(|&(word, shift)| (self.table[word] >> shift) & MAX_COUNT)
            .min()
            .unwrap_or(0)
    }

    /// Halves every counter.
    fn age(&mut self) {
        for word in &mut self.table {
            *word = (*word >> 1) & 0x7777_7777_7777_7777;
        }
        self.samples /= 2;
    }
}

/// The segment a resident block belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Segment {
    Window = 0,
    Probation = 1,
    Protected = 2,
    /// Not registered.
    None = 3,
}

#[derive(Clone, Copy)]
struct Meta {
    segment: Segment,
    /// Whether the slot is evictable (and so sits in its segment's list).
    evictable: bool,
}

/// W-TinyLFU over evictable slots; see the module docs.
pub struct TinyLfu {
    sketch: FrequencySketch,
    /// Sketch key of each slot's hash, set at registration.
    keys: Vec<u64>,
    meta: Vec<Meta>,
    links: Links,
    /// Evictable blocks of each segment, least recently released first.
    lists: [List; 3],
    /// Resident blocks (pinned or not) of each segment.
    counts: [usize; 3],
    window_cap: usize,
    main_cap: usize,
    protected_cap: usize,
    evictable: usize,
}

impl TinyLfu {
    /// A policy for slots `0..slots`: window 1% (at least one slot), main
    /// the rest, split 20% probation / 80% protected.
    pub fn new(slots: usize) -> Self {
        let window_cap = (slots / 100).max(1);
        let main_cap = slots.saturating_sub(window_cap);
        Self {
            sketch: FrequencySketch::new(slots),
            keys: vec![0; slots],
            meta: vec![
                Meta {
                    segment: Segment::None,
                    evictable: false,
                };
                slots
            ],
            links: Links::new(slots),
            lists: [List::new(), List::new(), List::new()],
            counts: [0; 3],
            window_cap,
            main_cap,
            protected_cap: main_cap * 8 / 10,
            evictable: 0,
        }
    }

    fn frequency(&self, slot: u32) -> u64 {
        self.sketch.estimate(self.keys[slot as usize])
    }

    /// Moves a slot between segments, keeping lists and counts in step; an
    /// evictable slot joins the back (most recent end) of its new list.
    fn move_to(&mut self, slot: u32, to: Segment) {
        let meta = self.meta[slot as usize];
        if meta.evictable {
            self.lists[meta.segment as usize].remove(&mut self.links, slot);
            self.lists[to as usize].push_back(&mut self.links, slot);
        }
        self.counts[meta.segment as usize] -= 1;
        self.counts[to as usize] += 1;
        self.meta[slot as usize].segment = to;
    }

    /// While main has room, window overflow moves to probation undisputed.
    fn drain_window_overflow(&mut self) {
        while self.counts[Segment::Window as usize] > self.window_cap
            && self.main_len() < self.main_cap
        {
            let slot = self.lists[Segment::Window as usize].front();
            if slot == NIL {
                break;
            }
            self.move_to(slot, Segment::Probation);
        }
    }

    /// Demotes the least recent evictable protected blocks while protected
    /// is over its share.
    fn demote_protected_overflow(&mut self) {
        while self.counts[Segment::Protected as usize] > self.protected_cap {
            let slot = self.lists[Segment::Protected as usize].front();
            if slot == NIL {
                break;
            }
            self.move_to(slot, Segment::Probation);
        }
    }

    fn main_len(&self) -> usize {
        self.counts[Segment::Probation as usize] + self.counts[Segment::Protected as usize]
    }

    /// Main's victim: the least recent evictable probation block, else the
    /// least recent evictable protected one, else [`NIL`].
    fn main_victim(&self) -> u32 {
        let probation = self.lists[Segment::Probation as usize].front();
        if probation != NIL {
            probation
        } else {
            self.lists[Segment::Protected as usize].front()
        }
    }

    /// Checks every internal invariant (O(slots)).
    fn check_structures(&self) -> Result<(), String> {
        let mut listed = 0;
        for (index, list) in self.lists.iter().enumerate() {
            list.check(&self.links, "tinylfu segment", |slot| {
                let meta = self.meta[slot as usize];
                if meta.segment as usize != index || !meta.evictable {
                    return Err(format!(
                        "tinylfu: slot {slot} listed in segment {index}, placed {:?}, evictable {}",
                        meta.segment as usize, meta.evictable
                    ));
                }
                Ok(())
            })?;
            listed += list.len();
            let members = self.meta.iter().filter(|m| m.segment as usize == index);
            let resident = members.clone().count();
            if resident != self.counts[index] {
                return Err(format!(
                    "tinylfu: segment {index} holds {resident} slots, counts {}",
                    self.counts[index]
                ));
            }
            let evictable = members.filter(|m| m.evictable).count();
            if evictable != list.len() {
                return Err(format!(
                    "tinylfu: segment {index} has {evictable} evictable slots, lists {}",
                    list.len()
                ));
            }
        }
        if listed != self.evictable {
            return Err(format!(
                "tinylfu: {listed} evictable slots listed, counts {}",
                self.evictable
            ));
        }
        if let Some(slot) = self
            .meta
            .iter()
            .position(|m| m.segment == Segment::None && m.evictable)
        {
            return Err(format!("tinylfu: slot {slot} is evictable in no segment"));
        }
        Ok(())
    }
}

impl EvictionPolicy for TinyLfu {
    fn name(&self) -> &'static str {
        "tinylfu"
    }

    fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        let key = key_of(hash);
        self.keys[slot as usize] = key;
        self.sketch.increment(key);
        self.meta[slot as usize] = Meta {
            segment: Segment::Window,
            evictable: false,
        };
        self.counts[Segment::Window as usize] += 1;
        self.drain_window_overflow();
    }

    fn on_hit(&mut self, slot: u32) {
        self.sketch.increment(self.keys[slot as usize]);
        let meta = self.meta[slot as usize];
        match meta.segment {
            Segment::Probation => {
                self.move_to(slot, Segment::Protected);
                self.demote_protected_overflow();
            }
            Segment::Window | Segment::Protected if meta.evictable => {
                self.lists[meta.segment as usize].move_to_back(&mut self.links, slot);
            }
            _ => {}
        }
    }

    fn on_release(&mut self, slot: u32) {
        let meta = &mut self.meta[slot as usize];
        meta.evictable = true;
        let segment = meta.segment;
        self.lists[segment as usize].push_back(&mut self.links, slot);
        self.evictable += 1;
        match segment {
            Segment::Window => self.drain_window_overflow(),
            Segment::Protected => self.demote_protected_overflow(),
            _ => {}
        }
    }

    fn on_reacquire(&mut self, slot: u32) {
        let meta = &mut self.meta[slot as usize];
        meta.evictable = false;
        let segment = meta.segment;
        self.lists[segment as usize].remove(&mut self.links, slot);
        self.evictable -= 1;
    }

    fn evict(&mut self) -> Option<u32> {
        let candidate = self.lists[Segment::Window as usize].front();
        let victim = self.main_victim();
        let window_full = self.counts[Segment::Window as usize] >= self.window_cap;
        let slot = match (candidate != NIL, victim != NIL) {
            (true, true) if window_full => {
                if self.frequency(candidate) > self.frequency(victim) {
                    self.move_to(candidate, Segment::Probation);
                    victim
                } else {
                    candidate
                }
            }
            (_, true) => victim,
            (true, false) => candidate,
            (false, false) => return None,
        };
        let segment = self.meta[slot as usize].segment;
        self.lists[segment as usize].remove(&mut self.links, slot);
        self.counts[segment as usize] -= 1;
        self.meta[slot as usize] = Meta {
            segment: Segment::None,
            evictable: false,
        };
        self.evictable -= 1;
        Some(slot)
    }

    fn on_discard(&mut self, slot: u32, _hash: SequenceHash) {
        // Pinned, so in no list: only its segment's count goes.
        let segment = self.meta[slot as usize].segment;
        self.counts[segment as usize] -= 1;
        self.meta[slot as usize] = Meta {
            segment: Segment::None,
            evictable: false,
        };
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
    use crate::policy::test_utils::{
        check_random_sequences, evict_all, low_bits_cycling_chains, register_all, roots,
    };

    /// Keys whose low bits repeat use about as many counters per row as
    /// random keys would (4,096 keys over 16,384 counters: about 3,600).
    #[test]
    fn keys_sharing_low_bits_spread_over_every_row() {
        for (bits, patterns) in [(20, 16), (32, 1), (12, 4), (40, 2)] {
            let keys = low_bits_cycling_chains(u64::from(bits), 256, 16, bits, patterns);
            let sketch = FrequencySketch::new(keys.len());
            let mut used = vec![std::collections::HashSet::new(); ROWS];
            for &key in &keys {
                for (row, cell) in sketch.cells(key_of(key)).into_iter().enumerate() {
                    used[row].insert(cell);
                }
            }
            for (row, cells) in used.iter().enumerate() {
                assert!(
                    cells.len() >= 3_200,
                    "{bits} low bits in {patterns} patterns, row {row}: {} counters",
                    cells.len()
                );
            }
        }
    }

    #[test]
    fn sketch_counts_accesses_and_halves_them_when_aging() {
        let hashes = roots(3);
        let mut sketch = FrequencySketch::new(1000);
        let (hot, warm, cold) = (key_of(hashes[0]), key_of(hashes[1]), key_of(hashes[2]));
        for _ in 0..12 {
            sketch.increment(hot);
        }
        for _ in 0..3 {
            sketch.increment(warm);
        }
        assert_eq!((sketch.estimate(hot), sketch.estimate(warm)), (12, 3));
        assert_eq!(sketch.estimate(cold), 0);
        for _ in 0..10 {
            sketch.increment(hot); // saturates at 15
        }
        assert_eq!(sketch.estimate(hot), 15);
        sketch.age();
        assert_eq!((sketch.estimate(hot), sketch.estimate(warm)), (7, 1));
    }

    #[test]
    fn sketch_ages_itself_after_ten_accesses_per_slot() {
        let mut sketch = FrequencySketch::new(10); // halves every 100 samples
        let keys: Vec<u64> = roots(40).into_iter().map(key_of).collect();
        for i in 0..99 {
            sketch.increment(keys[i % keys.len()]);
        }
        let before = sketch.estimate(keys[0]);
        assert!(before >= 3 && sketch.samples == 99);
        sketch.increment(keys[0]); // the 100th sample halves every counter
        assert_eq!(sketch.estimate(keys[0]), before.div_ceil(2));
        assert_eq!(sketch.samples, 50);
    }

    /// Ten slots: window 1, main 9 (protected 7). Slots 0..=8 are registered
    /// with two hits each (frequency 3) and end up in probation; slot 9 is
    /// registered last and stays in the window.
    fn warm(lfu: &mut TinyLfu, hashes: &[SequenceHash]) {
        for slot in 0..9 {
            lfu.on_register(slot, hashes[slot as usize]);
            lfu.on_hit(slot); // window: no promotion
            lfu.on_hit(slot);
            lfu.on_release(slot);
        }
        register_all(lfu, hashes, &[9]);
        assert_eq!(lfu.check(), Ok(()));
        assert_eq!(lfu.counts, [1, 9, 0]);
    }

    #[test]
    fn new_blocks_lose_their_duel_against_more_frequent_main_blocks() {
        let mut hashes = roots(20);
        let mut lfu = TinyLfu::new(10);
        warm(&mut lfu, &hashes);
        // A scan of one-off blocks churns through the window only.
        for fresh in 10..20 {
            assert_eq!(lfu.evict(), Some(9));
            lfu.on_forget(9, hashes[9]);
            hashes[9] = hashes[fresh];
            register_all(&mut lfu, &hashes, &[9]);
        }
        assert_eq!(lfu.counts, [1, 9, 0]);
    }

    #[test]
    fn a_frequent_block_wins_its_duel_and_moves_to_probation() {
        let hashes = roots(10);
        let mut lfu = TinyLfu::new(10);
        warm(&mut lfu, &hashes);
        for _ in 0..4 {
            lfu.on_hit(9);
        }
        // Slot 9 (frequency 5) beats probation's oldest, slot 0 (frequency 3).
        assert_eq!(lfu.evict(), Some(0));
        assert_eq!(lfu.meta[9].segment, Segment::Probation);
        lfu.on_forget(0, hashes[0]);
        assert_eq!(lfu.check(), Ok(()));
    }

    #[test]
    fn frequency_survives_eviction_and_reregistration() {
        let hashes = roots(10);
        let mut lfu = TinyLfu::new(10);
        // Hash 9 is popular in slot 5, then evicted.
        lfu.on_register(5, hashes[9]);
        for _ in 0..4 {
            lfu.on_hit(5);
        }
        lfu.on_release(5);
        assert_eq!(lfu.evict(), Some(5));
        lfu.on_forget(5, hashes[9]);
        // Back in slot 9 with no hit yet, it beats a frequency-3 victim.
        warm(&mut lfu, &hashes);
        assert_eq!(lfu.evict(), Some(0));
        assert_eq!(lfu.meta[9].segment, Segment::Probation);
    }

    #[test]
    fn probation_hits_promote_to_protected_which_is_evicted_last() {
        let hashes = roots(10);
        let mut lfu = TinyLfu::new(10);
        register_all(&mut lfu, &hashes, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(lfu.counts, [1, 9, 0]);
        lfu.on_hit(0);
        assert_eq!(lfu.meta[0].segment, Segment::Protected);
        // Window (9) ties probation's oldest (1) and loses; then probation
        // drains in release order, protected last.
        assert_eq!(
            evict_all(&mut lfu, &hashes),
            vec![9, 1, 2, 3, 4, 5, 6, 7, 8, 0]
        );
    }

    #[test]
    fn protected_overflow_demotes_its_least_recent_block() {
        let hashes = roots(10);
        let mut lfu = TinyLfu::new(10); // protected share 7
        register_all(&mut lfu, &hashes, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        for slot in 0..8 {
            lfu.on_hit(slot);
        }
        assert_eq!(lfu.counts, [1, 2, 7]);
        assert_eq!(lfu.meta[0].segment, Segment::Probation);
        assert_eq!(lfu.check(), Ok(()));
    }

    #[test]
    fn random_hook_sequences_agree_with_the_model() {
        check_random_sequences(TinyLfu::new);
    }
}
