//! Thread scaling of the shared-prefix serving loop (LRU), 1 vs 2 threads
//! sharing one manager through an `Arc`, for `kvblocks` and `kvbm-logical`.
//!
//! Each thread is an independent client with its own request stream (the same
//! 64 shared prompts, its own unique tails) and its own ring of in-flight
//! requests. Per repetition: a fresh manager, an untimed warm-up that fills the
//! pool (so every later miss evicts), then all threads start together behind a
//! barrier and serve a fixed number of requests each. Throughput is total
//! blocks processed by all threads over the wall time from the first start to
//! the last finish; the median of the repetitions is reported.
//!
//! kvblocks runs three times: with one pool (`pool_shards(1)`), with the pool
//! split into [`SHARDS`] pool shards from the start
//! (`BlockManagerBuilder::pool_shards`), and with the builder's defaults
//! (one pool that splits into 16 shards when threads contend; the row says
//! how many shards the manager had at the end). A last row runs
//! kvblocks on 2 threads with a manager each (nothing shared): the machine's
//! own parallel capacity in that run (about 1.8x on an idle 2-vCPU machine;
//! about 1x if something else holds a core), so the shared figures can be
//! read against it.
//!
//! Run: `cargo run --release -p kvblocks-compare --bin scaling [-- REQUESTS_PER_THREAD REPS]`
//! (`KVSCALING_THREADS=1` or `2` runs one thread count only, for profiling;
//! `KVSCALING_SHARDS=N` one kvblocks configuration, any shard count, 0 for the defaults; `KVCOMPARE_ONLY=kvblocks`
//! or `kvbm` one library.)

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use kvblocks_compare::{selected, Eviction, Kvblocks, Kvbm, ServingLoop, ServingSpec, Subject};

/// Requests each thread serves before timing starts (4,096 x 16 unique blocks
/// = one full pool), so the timed part runs with the pool full.
const WARM_UP_REQUESTS: usize = 4_096;

/// Pool shards of the sharded kvblocks rows.
const SHARDS: usize = 16;

/// One measured configuration.
struct Row {
    library: &'static str,
    /// kvblocks pool shards asked for (0: the defaults; 1 for kvbm, which
    /// has no such setting).
    shards: usize,
    /// Pool shards the last repetition's manager had at its end.
    shards_at_end: usize,
    /// Whether the threads shared one manager (else one manager each).
    shared: bool,
    threads: usize,
    /// Total blocks per second, one entry per repetition, sorted.
    rates: Vec<f64>,
    hit_rate: f64,
}

impl Row {
    fn median(&self) -> f64 {
        self.rates[self.rates.len() / 2]
    }
}

/// Run `reps` repetitions of `threads` clients sharing one fresh manager each.
fn measure<S: Subject>(
    threads: usize,
    requests: usize,
    reps: usize,
    shared: bool,
    shards: usize,
) -> Row {
    let spec = ServingSpec::STANDARD;
    // Pre-build every client's chains once; they are reused by every repetition.
    let mut clients: Vec<ServingLoop<S>> = (0..threads)
        .map(|t| ServingLoop::new(&spec, t as u64))
        .collect();
    let mut rates = Vec::with_capacity(reps);
    let mut hit_rate = 0.0;
    let mut shards_at_end = 1;
    for _ in 0..reps {
        // Shared: one manager for all threads (the figure that matters).
        // Not shared: one manager per thread, the machine's parallel capacity
        // with no contention, as a baseline for the shared figure.
        let managers: Vec<Arc<S>> = (0..if shared { 1 } else { threads })
            .map(|_| {
                Arc::new(S::build_sharded(
                    spec.block_count,
                    spec.block_size,
                    Eviction::Lru,
                    shards,
                ))
            })
            .collect();
        let barrier = Barrier::new(threads);
        let spans: Vec<(Instant, Instant)> = thread::scope(|scope| {
            let workers: Vec<_> = clients
                .iter_mut()
                .enumerate()
                .map(|(t, client)| {
                    let manager = Arc::clone(&managers[t % managers.len()]);
                    let barrier = &barrier;
                    scope.spawn(move || {
                        for _ in 0..WARM_UP_REQUESTS {
                            client.step(&*manager);
                        }
                        client.reset_stats();
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..requests {
                            client.step(&*manager);
                        }
                        (start, Instant::now())
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker panicked"))
                .collect()
        });
        let first = spans
            .iter()
            .map(|s| s.0)
            .min()
            .expect("at least one thread");
        let last = spans
            .iter()
            .map(|s| s.1)
            .max()
            .expect("at least one thread");
        let elapsed = last.duration_since(first).max(Duration::from_nanos(1));
        let blocks = (threads * requests * spec.chain_len()) as f64;
        rates.push(blocks / elapsed.as_secs_f64());
        hit_rate = clients.iter().map(ServingLoop::hit_rate).sum::<f64>() / threads as f64;
        shards_at_end = managers[0].pool_shards();
        // Drop every handle before the manager they came from.
        clients.iter_mut().for_each(ServingLoop::release);
        drop(managers);
    }
    rates.sort_by(f64::total_cmp);
    Row {
        library: S::NAME,
        shards,
        shards_at_end,
        shared,
        threads,
        rates,
        hit_rate,
    }
}

fn arg(index: usize, default: usize) -> usize {
    std::env::args()
        .nth(index)
        .map(|a| a.parse().expect("arguments are positive integers"))
        .unwrap_or(default)
}

fn main() {
    let requests = arg(1, 40_000);
    let reps = arg(2, 7);
    let spec = ServingSpec::STANDARD;
    eprintln!(
        "serving loop, LRU, {} slots, {} blocks/request, {} requests/thread, {} reps",
        spec.block_count,
        spec.chain_len(),
        requests,
        reps
    );
    let mut rows = Vec::new();
    // `KVSCALING_THREADS=1` (or 2) runs one thread count only, for profiling.
    let only_threads: Option<usize> = std::env::var("KVSCALING_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    // `KVSCALING_SHARDS=N` runs one kvblocks configuration only (any N).
    let only_shards: Option<usize> = std::env::var("KVSCALING_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok());
    for threads in [1, 2] {
        if only_threads.is_some_and(|only| only != threads) {
            continue;
        }
        // Interleave the libraries so both see the same background noise.
        if selected(Kvblocks::NAME) {
            let configurations = match only_shards {
                Some(only) => vec![only],
                None => vec![1, SHARDS, 0],
            };
            for shards in configurations {
                rows.push(measure::<Kvblocks>(threads, requests, reps, true, shards));
            }
        }
        if selected(Kvbm::NAME) {
            rows.push(measure::<Kvbm>(threads, requests, reps, true, 1));
        }
    }
    if selected(Kvblocks::NAME) && only_threads.is_none() {
        rows.push(measure::<Kvblocks>(2, requests, reps, false, 1));
    }
    println!(
        "| library | threads | total Mblocks/s (median) | min..max | ns/block (wall / total blocks) | vs 1 thread | hit rate |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let single = rows
            .iter()
            .find(|r| {
                r.library == row.library && r.threads == 1 && r.shared && r.shards == row.shards
            })
            .map_or(f64::NAN, Row::median);
        let manager = if row.shared { "" } else { " (a manager each)" };
        let shards = match row.shards {
            0 => format!(", defaults ({} shards at the end)", row.shards_at_end),
            1 => String::new(),
            shards => format!(", pool_shards({shards})"),
        };
        println!(
            "| {}{}{} | {} | {:.2} | {:.2}..{:.2} | {:.1} | {:.2}x | {:.1}% |",
            row.library,
            shards,
            manager,
            row.threads,
            row.median() / 1e6,
            row.rates[0] / 1e6,
            row.rates[row.rates.len() - 1] / 1e6,
            1e9 / row.median(),
            row.median() / single,
            row.hit_rate * 100.0
        );
    }
}
