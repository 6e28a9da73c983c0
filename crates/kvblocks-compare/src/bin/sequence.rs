//! The request-layer figures of `BENCHMARKS.md` in one run, both libraries
//! side by side: nanoseconds per decoded token with 256 running requests,
//! microseconds per admitted 2,000-token request, and per-token admission
//! cost at 2k, 32k and 128k prompt tokens. Each figure is the median of
//! `REPS` repetitions (default 7), kvblocks and kvbm alternating, of a
//! median over short samples (see `decode` and `admit`).
//!
//! Run: `cargo run --release -p kvblocks-compare --bin sequence [-- REPS]`
//! (`KVCOMPARE_ONLY=kvblocks` or `kvbm` runs one library.)

use std::time::Instant;

use kvblocks_compare::requests::{DecodeBatch, KvbmRequests, OursRequests, Requests};
use kvblocks_compare::selected;

const BLOCK_SIZE: u32 = 16;

/// ns per token of decode steps of 256 requests in steady state (see
/// `DecodeBatch::warm_up`): the median over `windows` windows of 16 steps
/// (each window crosses one block boundary of every request). Recycling
/// finished requests is not timed.
///
/// Medians of short windows rather than one long run: the machine is shared,
/// and a window in which the process was descheduled is an outlier the median
/// ignores.
fn decode<R: Requests>(windows: usize) -> f64 {
    let mut batch = DecodeBatch::<R>::new(256, 512, 1024, BLOCK_SIZE);
    batch.warm_up();
    let mut samples = Vec::with_capacity(windows);
    for _ in 0..windows {
        let (mut ns, mut tokens) = (0u128, 0usize);
        for _ in 0..16 {
            batch.recycle();
            let start = Instant::now();
            tokens += batch.step();
            ns += start.elapsed().as_nanos();
        }
        samples.push(ns as f64 / tokens as f64);
    }
    median(samples)
}

/// ns per request of building, admitting and prefilling `count` fresh
/// requests of `prompt` tokens: the median request. Prompts are generated
/// and finished requests dropped outside the timing.
fn admit<R: Requests>(prompt: usize, count: usize, pool: usize) -> f64 {
    let manager = R::manager(pool, BLOCK_SIZE as usize);
    let mut samples = Vec::with_capacity(count);
    for n in 0..count as u32 {
        let base = (n + 1).wrapping_mul(2_654_435_761);
        let tokens: Vec<u32> = (0..prompt as u32)
            .map(|i| base ^ i.wrapping_mul(40_503))
            .collect();
        let start = Instant::now();
        let mut seq = R::request(tokens, 16, BLOCK_SIZE);
        R::admit_and_prefill(&mut seq, &manager, 7);
        samples.push(start.elapsed().as_nanos() as f64);
        assert_eq!(R::held_blocks(&seq), prompt.div_ceil(BLOCK_SIZE as usize));
        drop(seq);
    }
    median(samples)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn row(label: &str, unit: &str, reps: usize, ours: &dyn Fn() -> f64, kvbm: &dyn Fn() -> f64) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        if selected("kvblocks") {
            a.push(ours());
        }
        if selected("kvbm") {
            b.push(kvbm());
        }
    }
    let fmt = |xs: &Vec<f64>| {
        if xs.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", median(xs.clone()))
        }
    };
    let ratio = if a.is_empty() || b.is_empty() {
        "-".to_string()
    } else {
        format!("{:.1}x", median(b.clone()) / median(a.clone()))
    };
    println!("| {label} | {} | {} | {ratio} | {unit} |", fmt(&a), fmt(&b));
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(7);
    // A second argument runs only the rows whose label contains it.
    let only = std::env::args().nth(2).unwrap_or_default();
    let row = |label: &str, unit: &str, reps, ours: &dyn Fn() -> f64, kvbm: &dyn Fn() -> f64| {
        if label.contains(only.as_str()) {
            row(label, unit, reps, ours, kvbm);
        }
    };
    println!("| workload | kvblocks | kvbm | kvbm / kvblocks | unit |");
    println!("|---|---:|---:|---:|---|");
    row(
        "decode, 256 running requests",
        "ns per decoded token",
        reps,
        &|| decode::<OursRequests>(200),
        &|| decode::<KvbmRequests>(40),
    );
    row(
        "admit + prefill, 2,000-token prompt",
        "µs per request",
        reps,
        &|| admit::<OursRequests>(2000, 2000, 65_536) / 1e3,
        &|| admit::<KvbmRequests>(2000, 200, 65_536) / 1e3,
    );
    for (label, prompt, count) in [
        ("2k", 2048, 400),
        ("32k", 32_768, 80),
        ("128k", 131_072, 24),
    ] {
        row(
            &format!("admit + prefill, {label}-token prompt"),
            "ns per prompt token",
            reps,
            &|| admit::<OursRequests>(prompt, count, 65_536) / prompt as f64,
            &|| admit::<KvbmRequests>(prompt, count.div_ceil(4), 65_536) / prompt as f64,
        );
    }
}
