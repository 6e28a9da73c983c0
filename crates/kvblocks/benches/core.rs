//! Core micro-benchmarks (criterion): the calls a scheduler makes on every
//! step, per block. The side-by-side comparison with kvbm-logical lives in
//! `crates/kvblocks-compare`.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kvblocks::hash::TokenBlockSequence;
use kvblocks::{BlockManager, EvictionPolicyKind, ImmutableBlock, SequenceHash};

#[derive(Clone)]
struct Gpu;

fn manager(blocks: usize, kind: EvictionPolicyKind) -> BlockManager<Gpu> {
    BlockManager::builder()
        .block_count(blocks)
        .block_size(16)
        .eviction_policy(kind)
        .build()
        .expect("valid configuration")
}

fn chain(root: u64, len: usize, salt: u64) -> Vec<SequenceHash> {
    let mut hashes = vec![SequenceHash::root(root)];
    while hashes.len() < len {
        let i = hashes.len() as u64;
        let next = hashes[hashes.len() - 1].extend(salt ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        hashes.push(next);
    }
    hashes
}

fn register(m: &BlockManager<Gpu>, hashes: &[SequenceHash]) -> Vec<ImmutableBlock<Gpu>> {
    let staged = m
        .allocate_blocks(hashes.len())
        .expect("room")
        .into_iter()
        .zip(hashes)
        .map(|(b, h)| b.stage(*h, 16).expect("size"))
        .collect();
    m.register_blocks(staged)
}

/// 32-block requests: 16 blocks of one of 64 shared prompts, 16 private.
fn serving_loop(c: &mut Criterion) {
    let mut group = c.benchmark_group("serving_loop");
    let requests: Vec<Vec<SequenceHash>> = (0..4096u64)
        .map(|r| {
            let prompt = chain(r.wrapping_mul(2654435761) % 64 + 1, 16, 0xabc);
            let mut full = prompt.clone();
            for i in 0..16u64 {
                let next = full[full.len() - 1].extend((r << 20) | i);
                full.push(next);
            }
            full
        })
        .collect();
    group.throughput(Throughput::Elements(32));
    for kind in [EvictionPolicyKind::Lru, EvictionPolicyKind::Lineage] {
        let m = manager(65_536, kind);
        let mut window: VecDeque<Vec<ImmutableBlock<Gpu>>> = VecDeque::new();
        let mut next = 0usize;
        group.bench_function(kind.name(), |b| {
            b.iter(|| {
                let hashes = &requests[next % requests.len()];
                next += 1;
                let mut held = m.match_blocks(hashes);
                let misses = &hashes[held.len()..];
                let staged = m
                    .allocate_blocks(misses.len())
                    .expect("room")
                    .into_iter()
                    .zip(misses)
                    .map(|(b, h)| b.stage(*h, 16).expect("size"))
                    .collect();
                held.extend(m.register_blocks(staged));
                window.push_back(held);
                if window.len() > 8 {
                    window.pop_front();
                }
            })
        });
    }
    group.finish();
}

fn prefix_ops(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefix_128");
    group.throughput(Throughput::Elements(128));
    let m = manager(4096, EvictionPolicyKind::Lru);
    let hashes = chain(7, 128, 1);
    let pinned = register(&m, &hashes);
    group.bench_function("match_active", |b| {
        b.iter(|| black_box(m.match_blocks(&hashes)))
    });
    drop(pinned);
    group.bench_function("resurrect_inactive", |b| {
        b.iter(|| drop(black_box(m.match_blocks(&hashes))))
    });
    group.bench_function("drop_registered", |b| {
        b.iter_batched(|| m.match_blocks(&hashes), drop, BatchSize::SmallInput)
    });
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("hashing");
    let tokens: Vec<u32> = (0..4096u32).map(|t| t.wrapping_mul(2654435761)).collect();
    group.throughput(Throughput::Elements(4096 / 16));
    group.bench_function("sequence_4096_tokens_bs16", |b| {
        b.iter(|| black_box(TokenBlockSequence::from_slice(&tokens, 16, Some(1)).sequence_hashes()))
    });
    group.finish();
}

criterion_group!(benches, serving_loop, prefix_ops, hashing);
criterion_main!(benches);
