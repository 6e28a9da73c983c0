//! [`TinyLFUTracker`]: a count-min sketch of 4-bit counters in atomic words,
//! touched and read by any number of threads without a lock.
//!
//! # Layout
//!
//! The table is an array of 64-byte *blocks* (one cache line each) of eight
//! `u64` words, sixteen 4-bit counters per word. A key is mixed to 64 bits;
//! the high half picks its block, and the low 20 bits pick one counter in
//! each of the block's four *rows* (row `r` is words `2r` and `2r + 1`, 32
//! counters): four independent 5-bit choices, so every counter of the table
//! is used and two keys of one block share all four counters only with
//! probability 2^-20. A touch or a count reads one cache line.
//!
//! (kvbm-logical 1.6.1 picks the word and the counter inside it from the
//! same hash bits, so in a table of 2^k words the counter is fixed by the
//! word: one counter in sixteen is ever used and absent keys estimate high.
//! Ours has the same bytes and sixteen times the counters in use;
//! `BENCHMARKS.md`, "Frequency tracker", has both estimates side by side.)
//!
//! # Updates
//!
//! A touch raises only the key's counters that equal the smallest of its
//! four (*conservative update*): the estimate, the minimum, still grows by
//! one, and the other counters, already higher because of other keys, are
//! left alone, which keeps absent keys' estimates low. Counters saturate at
//! 15. Every touch that raised its counters is a *sample*; after `sample_size`
//! samples (10 x capacity) every counter is halved and the sample count with
//! it, so the sketch follows the recent past.
//!
//! # Concurrency
//!
//! A touch reads the key's four words and writes each back with a plain
//! atomic store: the word read, plus one in a nibble that was below 15 in
//! it where the counter rises, so no store ever carries a nibble into its
//! neighbour, whatever raced. What a race can do is lose a count: two
//! touches of keys sharing a word at the same instant both write, and the
//! later write drops the earlier raise; a touch racing the halving may put
//! back that word's unhalved value. Either leaves one counter off by one or
//! one word halved a period late: an estimate stays an estimate. The price
//! of exactness (a compare-exchange per word) was measured at about twice
//! the touch's cost (`BENCHMARKS.md`, "Frequency tracker"). The halving is
//! done by one thread (an atomic flag elects it), word by word with a
//! compare-exchange.
//!
//! # Memory orderings
//!
//! | atomic | operation | ordering | why |
//! |---|---|---|---|
//! | counter words | load, store (touch), compare-exchange (halve), load (count) | `Relaxed` | each word is its own value; nothing else is published through it |
//! | sample count | `fetch_add` / `fetch_sub` | `Relaxed` | a statistic that only decides when to halve |
//! | halving flag | compare-exchange to elect / store to release | `Acquire` / `Release` | one halving at a time; the next one starts after the last finished |
//! | halvings | `fetch_add` / `load` | `Relaxed` | a statistic for tests and monitoring |

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::{DecayPolicy, FrequencyTracker, SketchKey};
use crate::sync::Padded;

/// Words per block (one 64-byte cache line).
const WORDS: usize = 8;
/// Rows per block; each row is two words.
const ROWS: usize = 4;
/// Largest 4-bit count.
const MAX: u64 = 15;
/// Keeps the low three bits of every nibble (halving).
const HALVE_MASK: u64 = 0x7777_7777_7777_7777;

#[derive(Default)]
#[repr(align(64))]
struct Block([AtomicU64; WORDS]);

/// A 64-bit finaliser (splitmix64's): every input bit reaches every output bit.
#[inline]
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A lock-free TinyLFU count-min sketch (see the module docs): `touch` and
/// `count` from any thread, one cache line each.
///
/// ```
/// use kvblocks::frequency::{FrequencyTracker, TinyLFUTracker};
/// let tracker = TinyLFUTracker::<u64>::new(1024);
/// for _ in 0..3 {
///     tracker.touch(42);
/// }
/// assert_eq!(tracker.count(42), 3);
/// assert_eq!(tracker.count(7), 0);
/// for _ in 0..20 {
///     tracker.touch(42);
/// }
/// assert_eq!(tracker.count(42), 15); // 4-bit counters saturate
/// ```
pub struct TinyLFUTracker<K: SketchKey = u128> {
    blocks: Box<[Block]>,
    /// `blocks.len() - 1` (a power of two minus one).
    block_mask: usize,
    /// Samples since the last halving (roughly: halved with the counters).
    samples: Padded<AtomicUsize>,
    sample_size: usize,
    /// A custom rule for when to halve (kvbm-logical's `DecayPolicy`); `None`:
    /// every `sample_size` samples, without a call per touch.
    decay: Option<Box<dyn DecayPolicy>>,
    /// Set while one thread halves.
    halving: AtomicBool,
    halvings: AtomicU64,
    _key: PhantomData<fn(K)>,
}

impl<K: SketchKey> TinyLFUTracker<K> {
    /// A sketch for about `capacity` distinct keys: 2 bytes per entry
    /// (rounded up to a power of two of 64-byte blocks, at least one),
    /// halved every 10 x `capacity` samples.
    pub fn new(capacity: usize) -> Self {
        Self::with_sample_size(capacity, capacity.saturating_mul(10))
    }

    /// A sketch sized for `capacity` keys that halves when `decay` says so
    /// (asked after every sample, with the samples since the last halving),
    /// and then starts counting samples from zero.
    pub fn with_decay_policy(capacity: usize, decay: Box<dyn DecayPolicy>) -> Self {
        Self {
            decay: Some(decay),
            ..Self::with_sample_size(capacity, usize::MAX)
        }
    }

    /// Whether `samples` samples since the last halving call for one.
    #[inline]
    fn due(&self, samples: usize) -> bool {
        match &self.decay {
            None => samples >= self.sample_size,
            Some(decay) => decay.should_decay(samples.min(u32::MAX as usize) as u32),
        }
    }

    /// A sketch sized for `capacity` keys that halves every `sample_size`
    /// samples (at least 1).
    pub fn with_sample_size(capacity: usize, sample_size: usize) -> Self {
        let blocks = capacity
            .saturating_mul(2)
            .div_ceil(std::mem::size_of::<Block>())
            .clamp(1, 1 << 32)
            .next_power_of_two();
        Self {
            blocks: (0..blocks).map(|_| Block::default()).collect(),
            block_mask: blocks - 1,
            samples: Padded(AtomicUsize::new(0)),
            sample_size: sample_size.max(1),
            decay: None,
            halving: AtomicBool::new(false),
            halvings: AtomicU64::new(0),
            _key: PhantomData,
        }
    }

    /// Bytes of the counter table.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.blocks)
    }

    /// Samples between halvings.
    pub fn sample_size(&self) -> usize {
        self.sample_size
    }

    /// Halvings so far.
    pub fn halvings(&self) -> u64 {
        self.halvings.load(Ordering::Relaxed)
    }

    /// The key's block and, per row, `(word, shift)` of its counter.
    #[inline]
    fn cells(&self, key: K) -> (&Block, [(usize, u32); ROWS]) {
        let h = mix(key.sketch_bits());
        let block = &self.blocks[(h >> 32) as usize & self.block_mask];
        let mut cells = [(0, 0); ROWS];
        for (row, cell) in cells.iter_mut().enumerate() {
            let counter = (h >> (5 * row)) as usize & 31;
            *cell = (2 * row + (counter >> 4), (counter & 15) as u32 * 4);
        }
        (block, cells)
    }

    /// Halves every counter and the sample count, unless another thread is
    /// already doing it.
    #[cold]
    fn halve(&self) {
        // ORDERING: Acquire pairs with the Release below: one halving at a time.
        if self
            .halving
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        // ORDERING: Relaxed: the count only decides whether to halve.
        let samples = self.samples.load(Ordering::Relaxed);
        if self.due(samples) {
            for word in self.blocks.iter().flat_map(|b| b.0.iter()) {
                // ORDERING: Relaxed: each word is its own value. The closure
                // never declines, so this cannot fail; a concurrent touch
                // only makes it retry with the new word.
                let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                    Some((w >> 1) & HALVE_MASK)
                });
            }
            // ORDERING: Relaxed (statistic). Samples that came in meanwhile stay.
            let counted = if self.decay.is_some() {
                // A custom rule counts from zero after each halving.
                samples
            } else {
                self.sample_size - self.sample_size / 2
            };
            self.samples.fetch_sub(counted, Ordering::Relaxed);
            self.halvings.fetch_add(1, Ordering::Relaxed);
        }
        // ORDERING: Release pairs with the Acquire above.
        self.halving.store(false, Ordering::Release);
    }

    /// Raises the key's smallest counters; whether it did (a sample).
    #[inline]
    fn raise(&self, key: K) -> bool {
        let (block, cells) = self.cells(key);
        // ORDERING (every load and store of a counter word): Relaxed, see
        // the module table.
        let words = cells.map(|(w, _)| block.0[w].load(Ordering::Relaxed));
        let counts: [u64; ROWS] = std::array::from_fn(|r| (words[r] >> cells[r].1) & MAX);
        let min = counts.iter().copied().min().unwrap_or(MAX);
        if min == MAX {
            return false;
        }
        for r in 0..ROWS {
            // Each row's word is written back, raised where its counter is
            // the minimum (below 15 in the word read, so the add stays in its
            // nibble): no branch on which rows rise, as that branch is a coin
            // toss that mispredicts (measured at twice the touch's cost).
            let (w, shift) = cells[r];
            let raise = u64::from(counts[r] == min) << shift;
            block.0[w].store(words[r] + raise, Ordering::Relaxed);
        }
        true
    }

    /// Counts `raised` samples, halving when they reach the sample size.
    #[inline]
    fn add_samples(&self, raised: usize) {
        // ORDERING: Relaxed (statistic).
        if raised > 0 && self.due(self.samples.fetch_add(raised, Ordering::Relaxed) + raised) {
            self.halve();
        }
    }

    /// Every counter's value summed (tests).
    #[cfg(test)]
    fn total(&self) -> u64 {
        self.blocks
            .iter()
            .flat_map(|b| b.0.iter())
            .map(|w| {
                let w = w.load(Ordering::Relaxed);
                (0..16).map(|i| (w >> (4 * i)) & MAX).sum::<u64>()
            })
            .sum()
    }
}

impl<K: SketchKey> FrequencyTracker<K> for TinyLFUTracker<K> {
    #[inline]
    fn touch(&self, key: K) {
        let raised = self.raise(key);
        self.add_samples(usize::from(raised));
    }

    fn touch_all(&self, keys: &mut dyn Iterator<Item = K>) {
        // One update of the shared sample count per batch, not per key.
        let raised = keys.filter(|&key| self.raise(key)).count();
        self.add_samples(raised);
    }

    #[inline]
    fn count(&self, key: K) -> u32 {
        let (block, cells) = self.cells(key);
        cells
            .iter()
            .map(|&(w, s)| (block.0[w].load(Ordering::Relaxed) >> s) & MAX)
            .min()
            .unwrap_or(0) as u32
    }
}

impl<K: SketchKey> std::fmt::Debug for TinyLFUTracker<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TinyLFUTracker")
            .field("bytes", &self.heap_bytes())
            .field("sample_size", &self.sample_size)
            .field("custom_decay", &self.decay.is_some())
            .field("halvings", &self.halvings())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frequency::FrequencyTrackingCapacity;
    use std::sync::Arc;

    /// Distinct, unrelated keys (a stream apart from `absent_keys`).
    fn keys(n: usize, stream: u64) -> impl Iterator<Item = u128> {
        (0..n as u64).map(move |i| {
            let x = mix(i ^ (stream << 48));
            ((x as u128) << 64) | mix(x) as u128
        })
    }

    #[test]
    fn counts_each_key_exactly_while_the_sketch_is_lightly_loaded() {
        let tracker = TinyLFUTracker::<u128>::new(1 << 12);
        for (n, key) in keys(64, 1).enumerate() {
            for _ in 0..n % 16 {
                tracker.touch(key);
            }
        }
        for (n, key) in keys(64, 1).enumerate() {
            assert_eq!(tracker.count(key), (n % 16).min(15) as u32);
        }
    }

    /// Fractions of 100,000 absent keys estimating at least 1, 2 and 3.
    fn absent_estimates(tracker: &TinyLFUTracker<u128>) -> [f64; 3] {
        let probes = 100_000;
        let mut at_least = [0usize; 3];
        for key in keys(probes, 3) {
            let c = tracker.count(key) as usize;
            for (n, slot) in at_least.iter_mut().enumerate() {
                *slot += usize::from(c > n);
            }
        }
        at_least.map(|n| n as f64 / probes as f64)
    }

    #[test]
    fn absent_keys_rarely_estimate_two_or_more_at_nominal_load() {
        // Nominal load: as many distinct keys touched as the sketch is sized
        // for, each once (below the halving point).
        let capacity = 1 << 16;
        let tracker = TinyLFUTracker::<u128>::new(capacity);
        for key in keys(capacity, 2) {
            tracker.touch(key);
        }
        assert_eq!(tracker.halvings(), 0);
        let [one, two, _] = absent_estimates(&tracker);
        // Measured 0.17 and 0.00004: one counter per entry in each of four
        // rows, and conservative update keeps collisions from stacking.
        // kvbm-logical's sketch of the same bytes is in BENCHMARKS.md
        // ("Frequency tracker").
        assert!(one < 0.25, "absent keys estimating >= 1: {one}");
        assert!(two < 0.002, "absent keys estimating >= 2: {two}");
        // Every key used twice: absent keys still rarely reach the default
        // cold threshold of the frequency-tiered policy (3).
        for key in keys(capacity, 2) {
            tracker.touch(key);
        }
        let [_, _, three] = absent_estimates(&tracker);
        assert!(three < 0.002, "absent keys estimating >= 3: {three}");
    }

    #[test]
    fn every_counter_of_the_table_is_reachable() {
        // One block: 128 counters; enough keys must reach all of them.
        let tracker = TinyLFUTracker::<u64>::with_sample_size(1, usize::MAX);
        assert_eq!(tracker.heap_bytes(), 64);
        for key in 0..4096u64 {
            tracker.touch(key);
        }
        for word in tracker.blocks[0].0.iter() {
            let w = word.load(Ordering::Relaxed);
            for nibble in 0..16 {
                assert_ne!((w >> (4 * nibble)) & MAX, 0, "an unused counter");
            }
        }
    }

    #[test]
    fn halving_halves_counts_after_sample_size_samples() {
        let tracker = TinyLFUTracker::<u128>::with_sample_size(1 << 12, 200);
        let hot = keys(1, 4).next().unwrap();
        for _ in 0..12 {
            tracker.touch(hot);
        }
        assert_eq!(tracker.count(hot), 12);
        let mut others = keys(10_000, 5);
        while tracker.halvings() == 0 {
            tracker.touch(others.next().unwrap());
        }
        assert_eq!(tracker.count(hot), 6);
        assert!(tracker.samples.load(Ordering::Relaxed) <= 100);
        // Repeated halvings fade a key that is no longer used.
        while tracker.halvings() < 4 {
            tracker.touch(others.next().unwrap());
        }
        assert!(tracker.count(hot) <= 1, "count {}", tracker.count(hot));
    }

    #[test]
    fn concurrent_touches_saturate_without_carrying_into_neighbours() {
        let tracker = Arc::new(TinyLFUTracker::<u64>::with_sample_size(64, usize::MAX));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let tracker = Arc::clone(&tracker);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        tracker.touch(42);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // A race may have dropped a raise; fifteen more bring it to 15.
        for _ in 0..15 {
            tracker.touch(42);
        }
        assert_eq!(tracker.count(42), 15);
        // Exactly the key's four counters, each at 15: no carries.
        assert_eq!(tracker.total(), 4 * 15);
    }

    #[test]
    fn concurrent_touches_of_distinct_keys_all_count_and_halving_runs_alongside() {
        let tracker = Arc::new(TinyLFUTracker::<u128>::with_sample_size(1 << 14, 50_000));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let tracker = Arc::clone(&tracker);
                std::thread::spawn(move || {
                    for key in keys(40_000, 10 + t) {
                        tracker.touch(key);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(tracker.halvings() >= 2, "halvings {}", tracker.halvings());
        assert!(tracker.samples.load(Ordering::Relaxed) < 50_000);
        // A key touched after the storm still counts from where it was.
        let fresh = keys(1, 99).next().unwrap();
        let before = tracker.count(fresh);
        tracker.touch(fresh);
        assert!(tracker.count(fresh) > before || before == 15);
    }

    #[test]
    fn a_batch_touch_counts_as_touching_each_key() {
        let (one, batch) = (
            TinyLFUTracker::<u128>::with_sample_size(1 << 12, usize::MAX),
            TinyLFUTracker::<u128>::with_sample_size(1 << 12, usize::MAX),
        );
        let pool: Vec<u128> = keys(120, 6).collect();
        for round in 0..8 {
            let chunk = &pool[round * 10..round * 10 + 40];
            for &key in chunk {
                one.touch(key);
            }
            batch.touch_all(&mut chunk.iter().copied());
        }
        for &key in &pool {
            assert_eq!(one.count(key), batch.count(key));
        }
        // A batch that crosses the sample size halves once, at its end.
        let halving = TinyLFUTracker::<u128>::with_sample_size(1 << 12, 300);
        halving.touch_all(&mut keys(400, 7));
        assert_eq!(halving.halvings(), 1);
    }

    #[test]
    fn presets_have_kvbm_logical_sizes_and_bytes() {
        for preset in FrequencyTrackingCapacity::ALL {
            let tracker = TinyLFUTracker::<u128>::new(preset.size());
            assert_eq!(tracker.heap_bytes(), 2 * preset.size());
            assert_eq!(tracker.sample_size(), 10 * preset.size());
        }
    }
}
