//! What emitting events costs the serving loop, before the store emits by
//! itself: the LRU serving loop of `benches/core.rs` (32-block requests, 16
//! of one of 64 shared prompts, held for 8 requests), run without events and
//! with the events it would emit derived from its own registrations and
//! evictions (`allocate_blocks_with_evictions`), pushed through a real
//! `EventEmitter`, flushed through the batcher to the built-in broadcast
//! every 64 requests (as a 1 ms tick would at ~60k requests/s), side by side.
//! Figures in BENCHMARKS.md ("Event emission").

use std::collections::VecDeque;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kvblocks::events::EventsManager;
use kvblocks::{
    BlockManager, EvictionPolicyKind, ImmutableBlock, LogicalLayoutHandle, SequenceHash,
};

#[derive(Clone)]
struct Gpu;

fn requests() -> Vec<Vec<SequenceHash>> {
    (0..4096u64)
        .map(|r| {
            let mut keys = vec![SequenceHash::root(r.wrapping_mul(2654435761) % 64 + 1)];
            for i in 1..32u64 {
                let salt = if i < 16 { 0xabc ^ i } else { (r << 20) | i };
                let next = keys[keys.len() - 1].extend(salt);
                keys.push(next);
            }
            keys
        })
        .collect()
}

fn serving_loop(c: &mut Criterion) {
    let requests = requests();
    let mut group = c.benchmark_group("serving_loop_lru");
    group.throughput(Throughput::Elements(32));
    for emit in [false, true] {
        let m = BlockManager::<Gpu>::builder()
            .block_count(65_536)
            .block_size(16)
            .eviction_policy(EvictionPolicyKind::Lru)
            .build()
            .expect("valid configuration");
        let events = EventsManager::builder()
            .instance_id(1)
            .block_size(16)
            .build();
        let mut rx = events.subscribe();
        let emitter = events.emitter();
        let mut window: VecDeque<Vec<ImmutableBlock<Gpu>>> = VecDeque::new();
        let mut next = 0usize;
        group.bench_function(
            if emit {
                "with_events"
            } else {
                "without_events"
            },
            |b| {
                b.iter(|| {
                    let hashes = &requests[next % requests.len()];
                    next += 1;
                    let mut held = m.match_blocks(hashes);
                    let hits = held.len();
                    let misses = &hashes[hits..];
                    let (fresh, evicted) = m
                        .allocate_blocks_with_evictions(misses.len())
                        .expect("room");
                    let staged = fresh
                        .into_iter()
                        .zip(misses)
                        .map(|(b, h)| b.stage(*h, 16).expect("size"))
                        .collect();
                    held.extend(m.register_blocks(staged));
                    if emit {
                        emitter.removed(LogicalLayoutHandle::G1, &evicted);
                        let parent = hits.checked_sub(1).map(|p| hashes[p]);
                        emitter.stored(LogicalLayoutHandle::G1, parent, misses);
                        if next % 64 == 0 {
                            events.flush(Instant::now());
                            while rx.try_recv().is_ok() {}
                        }
                    }
                    window.push_back(held);
                    if window.len() > 8 {
                        window.pop_front();
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, serving_loop);
criterion_main!(benches);
