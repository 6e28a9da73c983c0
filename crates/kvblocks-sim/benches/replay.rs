//! Replay speed: the whole Mooncake synthetic trace at 4,000 blocks, window
//! 16, once per policy and once through Belady's bound (target: under
//! 0.1 s per replay in release mode). Reads the trace from `shared/traces/`
//! beside the repository and does nothing, with a note, when it is absent.
//!
//! `cargo bench -p kvblocks-sim --bench replay`

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kvblocks::EvictionPolicyKind;
use kvblocks_sim::prepare::PreparedTrace;
use kvblocks_sim::schedule::HoldMode;
use kvblocks_sim::{belady, replay, trace};

fn replay_synthetic(c: &mut Criterion) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/traces/synthetic_trace.jsonl");
    let Ok(loaded) = trace::load(&path) else {
        eprintln!(
            "note: {} is absent; skipping the replay bench",
            path.display()
        );
        return;
    };
    let prepared = PreparedTrace::new(loaded, HoldMode::Window(16));
    let mut group = c.benchmark_group("replay_synthetic_4000");
    group
        .throughput(Throughput::Elements(prepared.chains.total_refs() as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for &policy in EvictionPolicyKind::ALL {
        group.bench_function(policy.name(), |b| {
            b.iter(|| replay::run(&prepared, policy, 4000, |_| {}).unwrap())
        });
    }
    group.bench_function("belady", |b| {
        b.iter(|| belady::run(&prepared, 4000, |_| {}))
    });
    group.finish();
}

criterion_group!(benches, replay_synthetic);
criterion_main!(benches);
