//! Frequency trackers side by side, `kvblocks` against `kvbm-logical` 1.6.1,
//! at each `FrequencyTrackingCapacity` preset (issue 7's figures):
//!
//! - **bytes** of the counter table;
//! - **touch** and **count** in ns per call, over a pool of as many
//!   distinct keys as the preset's size, visited in a scrambled order (so
//!   the table's cache misses are paid as a serving node would pay them);
//! - **absent keys** at nominal load: after touching the preset's size of
//!   distinct keys once each, how 100,000 never-touched keys estimate
//!   (mean, and the fractions at 1, 2 and 3 or more);
//! - **match cost**: `match_blocks` of a 16-block chain that is resident
//!   and active, ns per block, in a manager of each library without a
//!   tracker and with a Medium one (the price of tracking on the hot path).
//!
//! The two libraries alternate in rounds (a loaded machine moves both
//! alike); the median of the rounds is printed with the ratio.
//!
//! Run: `cargo run --release -p kvblocks-compare --bin frequency [-- ROUNDS]`

use std::hint::black_box;
use std::time::Instant;

use kvblocks::frequency::{FrequencyTracker as _, FrequencyTrackingCapacity};
use kvbm_logical::tinylfu::FrequencyTracker as _;

/// Calls per timed loop.
const CALLS: usize = 1 << 21;
/// Absent keys probed.
const PROBES: usize = 100_000;

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `n` distinct keys of stream `stream`.
fn keys(n: usize, stream: u64) -> Vec<u128> {
    (0..n as u64)
        .map(|i| {
            let a = mix(i ^ (stream << 56));
            ((a as u128) << 64) | mix(a) as u128
        })
        .collect()
}

/// One library's tracker, as the benchmark drives it.
trait Tracker {
    fn touch(&self, key: u128);
    fn count(&self, key: u128) -> u32;
}

struct Ours(kvblocks::frequency::TinyLFUTracker<u128>);
struct Theirs(kvbm_logical::tinylfu::TinyLFUTracker<u128>);

impl Tracker for Ours {
    #[inline]
    fn touch(&self, key: u128) {
        self.0.touch(key)
    }
    #[inline]
    fn count(&self, key: u128) -> u32 {
        self.0.count(key)
    }
}

impl Tracker for Theirs {
    #[inline]
    fn touch(&self, key: u128) {
        self.0.touch(key)
    }
    #[inline]
    fn count(&self, key: u128) -> u32 {
        self.0.count(key)
    }
}

/// kvbm-logical's table: `max(1, capacity / 4)` words of 8 bytes
/// (`tinylfu.rs`; it has no accessor).
fn kvbm_bytes(capacity: usize) -> usize {
    capacity.div_euclid(4).max(1) * 8
}

/// ns per touch, then per count, over `CALLS` calls cycling through `pool`.
fn time_calls(tracker: &impl Tracker, pool: &[u128], offset: usize) -> (f64, f64) {
    let start = Instant::now();
    for i in 0..CALLS {
        tracker.touch(pool[(offset + i) % pool.len()]);
    }
    let touch = start.elapsed().as_nanos() as f64 / CALLS as f64;
    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..CALLS {
        sum += u64::from(tracker.count(pool[(offset + i) % pool.len()]));
    }
    black_box(sum);
    let count = start.elapsed().as_nanos() as f64 / CALLS as f64;
    (touch, count)
}

/// Mean estimate and fractions >= 1, 2, 3 of absent keys after `capacity`
/// distinct keys were touched once.
fn absent(tracker: &impl Tracker, capacity: usize) -> [f64; 4] {
    for key in keys(capacity, 1) {
        tracker.touch(key);
    }
    let mut sum = 0.0;
    let mut at_least = [0usize; 3];
    for key in keys(PROBES, 2) {
        let c = tracker.count(key);
        sum += f64::from(c);
        for (n, slot) in at_least.iter_mut().enumerate() {
            *slot += usize::from(c as usize > n);
        }
    }
    let f = |n: usize| n as f64 / PROBES as f64;
    [
        sum / PROBES as f64,
        f(at_least[0]),
        f(at_least[1]),
        f(at_least[2]),
    ]
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[derive(Clone, Copy)]
struct Gpu;

/// A manager of `$lib` (4,096 slots, LRU) holding one active chain of 16
/// blocks, over a registry with a Medium tracker or none.
macro_rules! chain_manager {
    ($lib:ident, $tracked:expr) => {{
        let builder = $lib::BlockRegistry::builder();
        let registry = if $tracked {
            builder
                .frequency_tracker(
                    $lib::manager::FrequencyTrackingCapacity::Medium.create_tracker(),
                )
                .build()
        } else {
            builder.build()
        };
        let manager = $lib::BlockManager::<Gpu>::builder()
            .block_count(4096)
            .block_size(16)
            .registry(registry)
            .with_lru_backend()
            .build()
            .expect("valid manager");
        let mut chain = vec![$lib::SequenceHash::new(7, None, 0)];
        for i in 1..16u64 {
            chain.push($lib::SequenceHash::new(7 + i, Some(6 + i), i));
        }
        let staged = manager
            .allocate_blocks(16)
            .expect("room")
            .into_iter()
            .zip(&chain)
            .map(|(b, h)| b.stage(*h, 16).expect("size"))
            .collect();
        let held = manager.register_blocks(staged);
        (manager, chain, held)
    }};
}

/// ns per block of `match_blocks` over `chain`, `per_round` times.
macro_rules! time_match {
    ($setup:expr) => {{
        let (manager, chain, _) = &$setup;
        let per_round = 20_000;
        let start = Instant::now();
        for _ in 0..per_round {
            black_box(manager.match_blocks(chain));
        }
        start.elapsed().as_nanos() as f64 / (per_round * chain.len()) as f64
    }};
}

/// ns per block of `match_blocks` over a resident active chain of 16, each
/// library without and with a Medium tracker; alternating rounds.
fn match_cost(rounds: usize) -> [f64; 4] {
    let ours_plain = chain_manager!(kvblocks, false);
    let ours_tracked = chain_manager!(kvblocks, true);
    let kvbm_plain = chain_manager!(kvbm_logical, false);
    let kvbm_tracked = chain_manager!(kvbm_logical, true);
    let mut samples: [Vec<f64>; 4] = Default::default();
    for _ in 0..rounds {
        samples[0].push(time_match!(ours_plain));
        samples[1].push(time_match!(ours_tracked));
        samples[2].push(time_match!(kvbm_plain));
        samples[3].push(time_match!(kvbm_tracked));
    }
    samples.map(|mut s| median(&mut s))
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    println!("frequency trackers, median of {rounds} alternating rounds, {CALLS} calls each");
    println!(
        "{:<7} {:>10} {:>10} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6}",
        "preset",
        "bytes ours",
        "bytes kvbm",
        "touch us",
        "touch kv",
        "ratio",
        "count us",
        "count kv",
        "ratio"
    );
    let mut quality = Vec::new();
    for preset in FrequencyTrackingCapacity::ALL {
        let size = preset.size();
        let ours = Ours(kvblocks::frequency::TinyLFUTracker::new(size));
        let theirs = Theirs(kvbm_logical::tinylfu::TinyLFUTracker::new(size));
        let pool = {
            let mut pool = keys(size, 3);
            // A scrambled order: neighbours in the pool are far apart in the table.
            let len = pool.len();
            for i in (1..len).rev() {
                pool.swap(i, mix(i as u64) as usize % (i + 1));
            }
            pool
        };
        let (mut ot, mut oc, mut tt, mut tc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let offset = round * 7919;
            let (t, c) = time_calls(&ours, &pool, offset);
            ot.push(t);
            oc.push(c);
            let (t, c) = time_calls(&theirs, &pool, offset);
            tt.push(t);
            tc.push(c);
        }
        let (ot, oc, tt, tc) = (
            median(&mut ot),
            median(&mut oc),
            median(&mut tt),
            median(&mut tc),
        );
        println!(
            "{:<7} {:>10} {:>10} | {:>9.1} {:>9.1} {:>5.1}x | {:>9.1} {:>9.1} {:>5.1}x",
            format!("{preset:?}"),
            ours.0.heap_bytes(),
            kvbm_bytes(size),
            ot,
            tt,
            tt / ot,
            oc,
            tc,
            tc / oc,
        );
        let fresh_ours = Ours(kvblocks::frequency::TinyLFUTracker::new(size));
        let fresh_theirs = Theirs(kvbm_logical::tinylfu::TinyLFUTracker::new(size));
        quality.push((
            preset,
            absent(&fresh_ours, size),
            absent(&fresh_theirs, size),
        ));
    }
    println!();
    println!(
        "absent keys after `size` distinct keys touched once (mean estimate; fraction >= 1, 2, 3)"
    );
    for (preset, o, t) in quality {
        println!(
            "{:<7} ours mean {:>5.2} [{:.5} {:.5} {:.5}]   kvbm mean {:>5.2} [{:.5} {:.5} {:.5}]",
            format!("{preset:?}"),
            o[0],
            o[1],
            o[2],
            o[3],
            t[0],
            t[1],
            t[2],
            t[3]
        );
    }
    println!();
    let [ours_plain, ours_tracked, kvbm_plain, kvbm_tracked] = match_cost(rounds.max(5));
    println!(
        "match_blocks of 16 active blocks, ns per block: without a tracker / with a Medium one"
    );
    println!(
        "  kvblocks {ours_plain:>6.1} / {ours_tracked:>6.1} ({:+.1} ns)   kvbm {kvbm_plain:>6.1} / {kvbm_tracked:>6.1} ({:+.1} ns)",
        ours_tracked - ours_plain,
        kvbm_tracked - kvbm_plain
    );
}
