//! Router figures for BENCHMARKS.md ("Cluster router").
//!
//! - `apply/churn_2048`: block events applied per second on one core: a
//!   worker stores a fresh 1024-block chain and removes another, against an
//!   index of 64 workers holding 1M distinct blocks.
//! - `overlap_scores/128_blocks_64_workers_1M`: one query of a 128-block
//!   request over the same index.
//! - After criterion: the query's latency percentiles with the index idle and
//!   while another thread applies churn as fast as it can, and the index's
//!   bytes per (block, worker) pair (skipped if `KVROUTER_SKIP_LATENCY` is set),
//!   beside the floor of a query on this machine: 128 independent random
//!   reads from an array as large as the index. Each query is timed twice
//!   over: with the request's hashes read from the stored prompts (cold, in
//!   memory) and with them copied out just before (hot, as a caller that has
//!   just hashed the request's tokens holds them).
//!   `KVROUTER_APPLY_SLICE` sets how many block events the writer applies
//!   between two chances for waiting queries (default 32).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use kvblocks::{LogicalLayoutHandle::G1, SequenceHash};
use kvblocks_router::{IndexBatch, OverlapScores, Router, WorkerId};

const WORKERS: u64 = 64;
/// Prompts in the index (8192: 1M distinct blocks); `KVROUTER_PROMPTS` overrides.
fn prompts_count() -> u64 {
    std::env::var("KVROUTER_PROMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8192)
}
const PROMPT_BLOCKS: usize = 128;
const CHURN_CHAINS: u64 = 256;
const CHURN_BLOCKS: usize = 1024;

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn chain(seed: u64, len: usize) -> Vec<SequenceHash> {
    let mut keys = vec![SequenceHash::root(mix(seed))];
    while keys.len() < len {
        let next = keys[keys.len() - 1].extend(mix(seed ^ keys.len() as u64));
        keys.push(next);
    }
    keys
}

fn keys_of(chain: &[SequenceHash]) -> Vec<u64> {
    chain.iter().map(|h| h.current_sequence_hash()).collect()
}

fn stored(worker: u64, blocks: Vec<u64>) -> IndexBatch {
    IndexBatch::stored(WorkerId(u128::from(worker)), G1, blocks)
}

fn removed(worker: u64, blocks: Vec<u64>) -> IndexBatch {
    IndexBatch::removed(WorkerId(u128::from(worker)), G1, blocks)
}

/// Block events per slice of a batch (`Router::new`'s 32 unless
/// `KVROUTER_APPLY_SLICE` says otherwise).
fn apply_slice() -> usize {
    std::env::var("KVROUTER_APPLY_SLICE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

/// 64 workers, 8192 prompts of 128 blocks (1M distinct blocks); prompt `p`
/// is held by `1 + p % 4` workers, the first whole, each next one half as far.
fn populated() -> (Router, Vec<Vec<SequenceHash>>) {
    let router = Router::with_apply_slice(apply_slice());
    let prompts: Vec<_> = (0..prompts_count())
        .map(|p| chain(p, PROMPT_BLOCKS))
        .collect();
    for (p, prompt) in prompts.iter().enumerate() {
        let p = p as u64;
        for i in 0..=(p % 4) {
            let worker = (p * 7 + i * 13) % WORKERS;
            let len = PROMPT_BLOCKS >> i;
            router
                .apply(&stored(worker, keys_of(&prompt[..len])))
                .expect("unsequenced");
        }
    }
    (router, prompts)
}

/// Store batches of fresh 1024-block chains, each paired with its removal.
fn churn() -> Vec<(IndexBatch, IndexBatch)> {
    (0..CHURN_CHAINS)
        .map(|c| {
            let keys = keys_of(&chain(1 << 40 | c, CHURN_BLOCKS));
            let worker = c % WORKERS;
            (stored(worker, keys.clone()), removed(worker, keys))
        })
        .collect()
}

fn bench(
    c: &mut Criterion,
    router: &Router,
    prompts: &[Vec<SequenceHash>],
    churn: &[(IndexBatch, IndexBatch)],
) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(2 * CHURN_BLOCKS as u64));
    let mut next = 0;
    group.bench_function("churn_2048", |b| {
        b.iter(|| {
            let (store, remove) = &churn[next % churn.len()];
            next += 1;
            router.apply(black_box(store)).expect("unsequenced");
            router.apply(black_box(remove)).expect("unsequenced");
        })
    });
    group.finish();

    let mut group = c.benchmark_group("overlap_scores");
    group.throughput(Throughput::Elements(PROMPT_BLOCKS as u64));
    let mut out = OverlapScores::default();
    let mut q = 0u64;
    group.bench_function("128_blocks_64_workers_1M", |b| {
        b.iter(|| {
            q = q.wrapping_add(0x9e37_79b9);
            let prompt = &prompts[(q % prompts.len() as u64) as usize];
            router.overlap_scores_into(prompt.iter().map(|h| h.current_sequence_hash()), &mut out);
            black_box(out.scores.len())
        })
    });
    group.finish();
}

fn percentiles(mut samples: Vec<u64>) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    format!(
        "p50 {:.2} us, p90 {:.2} us, p99 {:.2} us, p99.9 {:.2} us, max {:.2} us",
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0)
    )
}

/// Where a query's block hashes are when it starts.
#[derive(Clone, Copy)]
enum Request {
    /// Read from the bench's 8,192 stored prompts (16 MB), usually from
    /// memory: the figure every earlier table in BENCHMARKS.md gives.
    Cold,
    /// Copied out just before, as a router's caller that has just hashed
    /// the request's tokens holds them.
    Hot,
}

fn query_latencies(
    router: &Router,
    prompts: &[Vec<SequenceHash>],
    queries: usize,
    request: Request,
) -> Vec<u64> {
    let mut out = OverlapScores::default();
    let mut samples = Vec::with_capacity(queries);
    let mut hashes: Vec<u64> = Vec::with_capacity(PROMPT_BLOCKS);
    for q in 0..queries as u64 {
        let prompt = &prompts[(mix(q) % prompts.len() as u64) as usize];
        let start = match request {
            Request::Cold => {
                let start = Instant::now();
                router.overlap_scores_into(
                    prompt.iter().map(|h| h.current_sequence_hash()),
                    &mut out,
                );
                start
            }
            Request::Hot => {
                hashes.clear();
                hashes.extend(prompt.iter().map(|h| h.current_sequence_hash()));
                let start = Instant::now();
                router.overlap_scores_into(hashes.iter().copied(), &mut out);
                start
            }
        };
        samples.push(start.elapsed().as_nanos() as u64);
        black_box(out.scores.len());
    }
    samples
}

/// Entries of 16 bytes in the floor's array: the index's bytes, rounded
/// down to a power of two.
fn floor_entries(index_bytes: usize) -> usize {
    let entries = (index_bytes / 16).max(1);
    1 << (usize::BITS - 1 - entries.leading_zeros())
}

/// The floor under any table that reads one random cache line per block:
/// `queries` rounds of 128 independent 16-byte reads at random places of an
/// array of `entries` (a power of two), the places worked out first so that
/// nothing holds the reads back. On a large index a query cannot be faster
/// than this on the same machine at the same minute.
fn memory_floor(entries: usize, queries: usize) -> Vec<u64> {
    let table: Vec<[u64; 2]> = (0..entries as u64).map(|i| [mix(i), i]).collect();
    let mut samples = Vec::with_capacity(queries);
    let mut places = [0usize; 128];
    for q in 0..queries as u64 {
        let start = Instant::now();
        for (j, place) in places.iter_mut().enumerate() {
            *place = (mix(q << 7 | j as u64) as usize) & (entries - 1);
        }
        let sum = places
            .iter()
            .fold(0u64, |sum, &at| sum.wrapping_add(table[at][0]));
        samples.push(start.elapsed().as_nanos() as u64);
        black_box(sum);
    }
    samples
}

fn latency(
    router: Arc<Router>,
    prompts: &[Vec<SequenceHash>],
    churn: Arc<Vec<(IndexBatch, IndexBatch)>>,
) {
    let metrics = router.metrics();
    println!(
        "index: {} workers, {} table entries, {} (block, worker) pairs, {} bytes = {:.1} bytes per pair, {:.1} per distinct block",
        metrics.workers,
        metrics.table_entries,
        metrics.held_pairs,
        metrics.memory_bytes,
        metrics.memory_bytes as f64 / metrics.held_pairs as f64,
        metrics.memory_bytes as f64 / metrics.table_entries as f64,
    );
    let queries = 200_000;
    let entries = floor_entries(metrics.memory_bytes);
    println!(
        "floor, 128 random reads from {} MB:                     {}",
        (entries * 16) >> 20,
        percentiles(memory_floor(entries, queries))
    );
    for (request, name) in [(Request::Cold, "cold"), (Request::Hot, "hot")] {
        println!(
            "overlap_scores, 128 blocks, idle index, {name} request:   {}",
            percentiles(query_latencies(&router, prompts, queries, request))
        );
    }
    for (request, name) in [(Request::Cold, "cold"), (Request::Hot, "hot")] {
        let (samples, writer_rate) = under_writes(&router, &churn, || {
            query_latencies(&router, prompts, queries, request)
        });
        println!(
            "overlap_scores, 128 blocks, under writes, {name} request: {}",
            percentiles(samples)
        );
        println!("  meanwhile the writer applied {writer_rate:.1} M block events/s");
    }
}

/// Runs `queries` while another thread applies churn as fast as it can;
/// the queries' result and the writer's rate in M block events/s.
fn under_writes<T>(
    router: &Arc<Router>,
    churn: &Arc<Vec<(IndexBatch, IndexBatch)>>,
    queries: impl FnOnce() -> T,
) -> (T, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let applied = Arc::new(AtomicU64::new(0));
    let writer = {
        let (router, churn, stop, applied) = (
            Arc::clone(router),
            Arc::clone(churn),
            Arc::clone(&stop),
            Arc::clone(&applied),
        );
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (store, remove) = &churn[i % churn.len()];
                router.apply(store).expect("unsequenced");
                router.apply(remove).expect("unsequenced");
                applied.fetch_add(2 * CHURN_BLOCKS as u64, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let start = Instant::now();
    let result = queries();
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");
    let rate = applied.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64() / 1e6;
    (result, rate)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let (router, prompts) = populated();
    let churn = churn();
    bench(&mut c, &router, &prompts, &churn);
    c.final_summary();
    if std::env::var_os("KVROUTER_SKIP_LATENCY").is_none() {
        latency(Arc::new(router), &prompts, Arc::new(churn));
    }
}
