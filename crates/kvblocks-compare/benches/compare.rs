//! Criterion benchmarks running identical workloads on `kvblocks` and on
//! `kvbm-logical` 1.6.1, side by side in one run.
//!
//! Each group holds the two libraries next to each other
//! (`<workload>/<eviction>/kvblocks`, `<workload>/<eviction>/kvbm`) so they
//! are measured minutes apart at most on a noisy machine. Throughput is set
//! to the blocks one iteration processes, so criterion prints time per block.
//!
//! - `serving_loop/{lru,lineage,prefix}`: the shared-prefix serving loop over
//!   a 65,536-slot pool (32 blocks per request; see `ServingSpec::STANDARD`).
//!   `prefix` is kvblocks' own policy; kvbm-logical has none, so that group
//!   runs kvblocks alone.
//! - `serving_loop_lowbits/{lru,lineage,prefix}`: the same loop with
//!   adversarial keys, whose low 20 bits cycle through 16 values
//!   (`KeyShape::LowBitsCycling`): what a table hashing only low bits floods on.
//! - `match_active_128`: `match_blocks` on a 128-block prefix that is held
//!   (active); the returned handles are dropped in the loop, as they would be.
//! - `resurrect_128/{lru,lineage}`: match a 128-block prefix that sits in the
//!   inactive pool, then drop it back there.
//! - `drop_active_128/{lru,lineage}`: only the drop of 128 held blocks (the
//!   last handles, so they move to the inactive pool); the match that makes
//!   them active again is set-up, outside the timing.
//!
//! The micro-benchmarks run against a full pool (512 inactive chains of 128
//! blocks, 65,536 slots) so the indexes are as large as in a warm server.
//! Set-up happens lazily inside the first call of each benchmark, so a
//! filter (`-- kvbm`) skips the set-up of the benchmarks it excludes.
//!
//! Run: `cargo bench -p kvblocks-compare --bench compare`

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use kvblocks_compare::{
    Eviction, FullCache, KeyShape, Kvblocks, Kvbm, ServingLoop, ServingSpec, Subject,
};

/// Slots in every benchmark's pool.
const POOL: usize = 65_536;
/// Length of the prefix the micro-benchmarks act on.
const PREFIX: usize = 128;

fn serving<S: Subject>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    eviction: Eviction,
    spec: ServingSpec,
) {
    if !S::supports(eviction) {
        return;
    }
    // Handles are declared first so they drop before their manager.
    let mut state: Option<(ServingLoop<S>, S)> = None;
    group.bench_function(S::NAME, |b| {
        let (client, manager) = state.get_or_insert_with(|| {
            (
                ServingLoop::new(&spec, 0),
                S::build(spec.block_count, spec.block_size, eviction),
            )
        });
        b.iter(|| client.step(manager));
    });
}

fn match_active<S: Subject>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let mut state: Option<(Vec<S::Held>, FullCache<S>)> = None;
    group.bench_function(S::NAME, |b| {
        let (_held, cache) = state.get_or_insert_with(|| {
            let cache = FullCache::<S>::new(POOL, PREFIX, Eviction::Lru);
            let held = cache.manager.match_blocks(cache.target());
            assert_eq!(held.len(), PREFIX);
            (held, cache)
        });
        let (manager, target) = (&cache.manager, cache.target());
        b.iter(|| manager.match_blocks(black_box(target)));
    });
}

fn resurrect<S: Subject>(group: &mut BenchmarkGroup<'_, WallTime>, eviction: Eviction) {
    let mut state: Option<FullCache<S>> = None;
    group.bench_function(S::NAME, |b| {
        let cache = state.get_or_insert_with(|| FullCache::new(POOL, PREFIX, eviction));
        let (manager, target) = (&cache.manager, cache.target());
        assert_eq!(manager.match_blocks(target).len(), PREFIX);
        b.iter(|| manager.match_blocks(black_box(target)));
    });
}

fn drop_active<S: Subject>(group: &mut BenchmarkGroup<'_, WallTime>, eviction: Eviction) {
    let mut state: Option<FullCache<S>> = None;
    group.bench_function(S::NAME, |b| {
        let cache = state.get_or_insert_with(|| FullCache::new(POOL, PREFIX, eviction));
        let (manager, target) = (&cache.manager, cache.target());
        // One set-up per drop: batching several set-ups would make all but
        // the last drop of a batch mere reference-count decrements.
        b.iter_batched(
            || {
                let held = manager.match_blocks(target);
                debug_assert_eq!(held.len(), PREFIX);
                held
            },
            |held| drop(black_box(held)),
            BatchSize::PerIteration,
        );
    });
}

fn bench_serving(c: &mut Criterion) {
    for keys in [KeyShape::Mixed, KeyShape::LowBitsCycling] {
        let spec = ServingSpec {
            keys,
            ..ServingSpec::STANDARD
        };
        let prefix = match keys {
            KeyShape::Mixed => "serving_loop".to_owned(),
            other => format!("serving_loop_{}", other.name()),
        };
        for eviction in [Eviction::Lru, Eviction::Lineage, Eviction::Prefix] {
            let mut group = c.benchmark_group(format!("{prefix}/{}", eviction.name()));
            group.throughput(Throughput::Elements(spec.chain_len() as u64));
            serving::<Kvblocks>(&mut group, eviction, spec);
            serving::<Kvbm>(&mut group, eviction, spec);
            group.finish();
        }
    }
}

fn bench_match_active(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_active_128");
    group.throughput(Throughput::Elements(PREFIX as u64));
    match_active::<Kvblocks>(&mut group);
    match_active::<Kvbm>(&mut group);
    group.finish();
}

fn bench_resurrect(c: &mut Criterion) {
    for eviction in [Eviction::Lru, Eviction::Lineage] {
        let mut group = c.benchmark_group(format!("resurrect_128/{}", eviction.name()));
        group.throughput(Throughput::Elements(PREFIX as u64));
        resurrect::<Kvblocks>(&mut group, eviction);
        resurrect::<Kvbm>(&mut group, eviction);
        group.finish();
    }
}

fn bench_drop_active(c: &mut Criterion) {
    for eviction in [Eviction::Lru, Eviction::Lineage] {
        let mut group = c.benchmark_group(format!("drop_active_128/{}", eviction.name()));
        group.throughput(Throughput::Elements(PREFIX as u64));
        drop_active::<Kvblocks>(&mut group, eviction);
        drop_active::<Kvbm>(&mut group, eviction);
        group.finish();
    }
}

fn config() -> Criterion {
    // 20 benchmarks x ~10 s each keeps a full run near 4-5 minutes.
    Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_serving, bench_match_active, bench_resurrect, bench_drop_active
}
criterion_main!(benches);
