//! Criterion benchmarks of the request layer (`SchedulableSequence`) of
//! `kvblocks` and of `kvbm-logical` 1.6.1, side by side in one run.
//!
//! - `decode_256`: one decode step (schedule + apply) of each of 256 running
//!   requests (prompts of 512-527 tokens, up to 1,024 output tokens, block
//!   size 16) in steady state: the pool is full of cached blocks of finished
//!   requests, so every new block is taken by eviction. Finished requests
//!   are replaced between steps, outside the timing. Per decoded token.
//! - `admit_2000`: build a request from a fresh 2,000-token prompt (hashing
//!   it), admit it (match, allocate), prefill it in one chunk (stage and
//!   register its 125 blocks). Per request. The pool (65,536 slots) fills
//!   with the inactive blocks of earlier requests, so allocation evicts.
//! - `prompt_scaling/{2k,32k,128k}`: the same for prompts of 2,048, 32,768 and
//!   131,072 tokens. Per prompt token: flat means no quadratic term.
//!
//! Run: `cargo bench -p kvblocks-compare --bench sequence`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use kvblocks_compare::requests::{DecodeBatch, KvbmRequests, OursRequests, Requests};

const BLOCK_SIZE: u32 = 16;
const RUNNING: usize = 256;

fn decode<R: Requests>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let mut state: Option<DecodeBatch<R>> = None;
    group.bench_function(R::NAME, |b| {
        let batch = state.get_or_insert_with(|| {
            let mut batch = DecodeBatch::new(RUNNING, 512, 1024, BLOCK_SIZE);
            batch.warm_up();
            batch
        });
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                batch.recycle();
                let start = Instant::now();
                black_box(batch.step());
                timed += start.elapsed();
            }
            timed
        });
    });
}

fn admit<R: Requests>(group: &mut BenchmarkGroup<'_, WallTime>, prompt: usize, pool: usize) {
    let mut state: Option<(R::Manager, u32)> = None;
    group.bench_function(R::NAME, |b| {
        let (manager, next) =
            state.get_or_insert_with(|| (R::manager(pool, BLOCK_SIZE as usize), 0));
        b.iter_batched(
            || {
                *next += 1;
                let base = next.wrapping_mul(2_654_435_761);
                (0..prompt as u32)
                    .map(|i| base ^ i.wrapping_mul(40_503))
                    .collect::<Vec<u32>>()
            },
            |tokens| {
                let mut seq = R::request(tokens, 16, BLOCK_SIZE);
                R::admit_and_prefill(&mut seq, manager, 7);
                debug_assert_eq!(R::held_blocks(&seq), prompt.div_ceil(BLOCK_SIZE as usize));
                seq
            },
            BatchSize::PerIteration,
        );
    });
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_256");
    group.throughput(Throughput::Elements(RUNNING as u64));
    decode::<OursRequests>(&mut group);
    decode::<KvbmRequests>(&mut group);
    group.finish();
}

fn bench_admit(c: &mut Criterion) {
    let mut group = c.benchmark_group("admit_2000");
    group.throughput(Throughput::Elements(1));
    admit::<OursRequests>(&mut group, 2000, 65_536);
    admit::<KvbmRequests>(&mut group, 2000, 65_536);
    group.finish();
}

fn bench_scaling(c: &mut Criterion) {
    for (name, prompt) in [("2k", 2048), ("32k", 32_768), ("128k", 131_072)] {
        let mut group = c.benchmark_group(format!("prompt_scaling/{name}"));
        group.throughput(Throughput::Elements(prompt as u64));
        group.sample_size(10);
        admit::<OursRequests>(&mut group, prompt, 65_536);
        admit::<KvbmRequests>(&mut group, prompt, 65_536);
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_decode, bench_admit, bench_scaling
}
criterion_main!(benches);
