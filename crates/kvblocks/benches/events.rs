//! What emitting events costs the serving loop: the LRU serving loop of
//! `benches/core.rs` (32-block requests, 16 of one of 64 shared prompts,
//! held for 8 requests), run by a manager without events and by one built
//! with an events manager (the store reports every store and removal under
//! its locks), flushed through the batcher to the built-in broadcast every
//! 64 requests (as a 1 ms tick would at ~60k requests/s) and drained by a
//! receiver.
//!
//! The events manager batches one kind at a time (the default, what
//! kvbm-logical's format carries) or, in the third variant, stores and
//! removals together (`BatchingConfig::with_mixed_kinds`).
//!
//! Under load the criterion runs see different machines, so after them
//! the bench alternates the three variants in rounds of 2048 requests and
//! prints the median ns per block of each and their ratios: the figures
//! BENCHMARKS.md records ("Event emission").

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use std::sync::Arc;

use kvblocks::events::{BatchingConfig, BroadcastReceiver, EventsManager};
use kvblocks::{BlockManager, EvictionPolicyKind, ImmutableBlock, SequenceHash};

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

/// How a serving loop reports.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Events {
    /// No events manager.
    Off,
    /// Batches of one kind (the default).
    OneKind,
    /// Stores and removals in one batch.
    Mixed,
}

impl Events {
    fn name(self) -> &'static str {
        match self {
            Events::Off => "without_events",
            Events::OneKind => "with_events",
            Events::Mixed => "with_events_mixed_batches",
        }
    }
}

/// One serving loop, with or without events.
struct Loop {
    manager: BlockManager<Gpu>,
    events: Arc<EventsManager>,
    rx: BroadcastReceiver,
    window: VecDeque<Vec<ImmutableBlock<Gpu>>>,
    next: usize,
    emit: bool,
}

impl Loop {
    fn new(mode: Events) -> Self {
        let emit = mode != Events::Off;
        let events = Arc::new(
            EventsManager::builder()
                .instance_id(1)
                .block_size(16)
                .batching(BatchingConfig::default().with_mixed_kinds(mode == Events::Mixed))
                .build(),
        );
        let rx = events.subscribe();
        let builder = BlockManager::<Gpu>::builder()
            .block_count(65_536)
            .block_size(16)
            .pool_shards(1)
            .eviction_policy(EvictionPolicyKind::Lru);
        let builder = if emit {
            builder.event_manager(Arc::clone(&events))
        } else {
            builder
        };
        let manager = builder.build().expect("valid configuration");
        Self {
            manager,
            events,
            rx,
            window: VecDeque::new(),
            next: 0,
            emit,
        }
    }

    fn serve(&mut self, requests: &[Vec<SequenceHash>]) {
        let hashes = &requests[self.next % requests.len()];
        self.next += 1;
        let m = &self.manager;
        let mut held = m.match_blocks(hashes);
        let misses = &hashes[held.len()..];
        let fresh = m.allocate_blocks(misses.len()).expect("room");
        let staged = fresh
            .into_iter()
            .zip(misses)
            .map(|(b, h)| b.stage(*h, 16).expect("size"))
            .collect();
        held.extend(m.register_blocks(staged));
        if self.emit && self.next % 64 == 0 {
            self.events.flush(Instant::now());
            while let Ok(batch) = self.rx.try_recv() {
                black_box(batch);
            }
        }

        self.window.push_back(held);
        if self.window.len() > 8 {
            self.window.pop_front();
        }
    }
}

fn main() {
    let requests = requests();
    // `KVBLOCKS_PROFILE=with|mixed|without [KVBLOCKS_PROFILE_REQUESTS=n]` serves
    // n requests (default 20,000) with one variant and nothing else: run it
    // under callgrind at two request counts and divide the difference by
    // the blocks between them for instructions per block.
    if let Some(variant) = std::env::var_os("KVBLOCKS_PROFILE") {
        let count = std::env::var("KVBLOCKS_PROFILE_REQUESTS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(20_000usize);
        let mode = if variant == "with" {
            Events::OneKind
        } else if variant == "mixed" {
            Events::Mixed
        } else {
            Events::Off
        };
        let mut serving = Loop::new(mode);
        for _ in 0..count {
            serving.serve(&requests);
        }
        return;
    }
    // `KVBLOCKS_ALTERNATING_ONLY=1` skips criterion (for profiling).
    if std::env::var_os("KVBLOCKS_ALTERNATING_ONLY").is_none() {
        let mut c = Criterion::default().configure_from_args();
        let mut group = c.benchmark_group("serving_loop_lru");
        group.throughput(Throughput::Elements(32));
        for mode in [Events::Off, Events::OneKind, Events::Mixed] {
            let mut serving = Loop::new(mode);
            group.bench_function(mode.name(), |b| b.iter(|| serving.serve(&requests)));
        }
        group.finish();
        c.final_summary();
    }

    let mut loops = [
        Loop::new(Events::Off),
        Loop::new(Events::OneKind),
        Loop::new(Events::Mixed),
    ];
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..31 {
        for (variant, serving) in loops.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..2048 {
                serving.serve(&requests);
            }
            if round > 0 {
                samples[variant].push(start.elapsed().as_nanos() as f64 / (2048.0 * 32.0));
            }
        }
    }
    let median = |s: &mut Vec<f64>| {
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let [without, with, mixed] = samples.each_mut().map(median);
    println!(
        "alternating rounds, median ns per block: without events {without:.1}, with events {with:.1} ({:+.1}%), mixed batches {mixed:.1} ({:+.1}%)",
        100.0 * (with / without - 1.0),
        100.0 * (mixed / without - 1.0)
    );
}
