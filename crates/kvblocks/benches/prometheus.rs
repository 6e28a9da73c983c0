//! What one Prometheus scrape of three tiers costs (feature `prometheus`):
//! the tiers of the `metrics_server` example at a serving node's sizes
//! (G1 4096 blocks, G2 16384, G3 65536, so 4, 16 and 16 pool shards), warmed
//! by 20 000 requests, exported by one `MetricsCollector`.
//!
//! - `snapshots`: the three `BlockManager::metrics()` reads alone;
//! - `scrape_text`: encoding the whole registry in the 0.0.4 text format
//!   (what `GET /metrics` does, less the socket);
//! - `scrape_openmetrics`: the same in the OpenMetrics text format.
//!
//! After criterion, the bench alternates the three in rounds and prints the
//! median µs per scrape of each and the ratio to the snapshots alone: the
//! figures BENCHMARKS.md records ("Metrics export"). The serving path is not
//! measured because the exporter adds nothing to it.

#[path = "../examples/metrics_server/workload.rs"]
#[allow(dead_code)]
mod workload;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use kvblocks::metrics::prometheus::MetricsCollector;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

fn setup() -> (workload::Tiers, Registry) {
    let mut tiers = workload::Tiers::new(4096, 0x5eed).expect("build the tiers");
    for _ in 0..20_000 {
        tiers.serve_request().expect("serve a request");
    }
    let collector = MetricsCollector::new();
    tiers.export(&collector).expect("three tiers");
    let mut registry = Registry::default();
    collector.register(&mut registry);
    (tiers, registry)
}

fn snapshots(tiers: &workload::Tiers) -> u64 {
    tiers.g1.metrics().allocations + tiers.g2.metrics().allocations + tiers.g3.metrics().allocations
}

fn scrape_text(registry: &Registry, body: &mut String) -> usize {
    body.clear();
    prometheus_text::encode(body, registry).expect("encode");
    body.len()
}

fn scrape_openmetrics(registry: &Registry, body: &mut String) -> usize {
    body.clear();
    text::encode(body, registry).expect("encode");
    body.len()
}

fn median_us(samples: &mut [Duration], per_round: u32) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6 / f64::from(per_round)
}

fn main() {
    let (tiers, registry) = setup();
    let mut body = String::new();
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(2));
    let mut group = c.benchmark_group("prometheus_3_tiers");
    group.bench_function("snapshots", |b| b.iter(|| black_box(snapshots(&tiers))));
    group.bench_function("scrape_text", |b| {
        b.iter(|| black_box(scrape_text(&registry, &mut body)))
    });
    group.bench_function("scrape_openmetrics", |b| {
        b.iter(|| black_box(scrape_openmetrics(&registry, &mut body)))
    });
    group.finish();
    c.final_summary();

    // Side by side: the three alternated in rounds, so machine load hits all alike.
    const PER_ROUND: u32 = 200;
    let (mut snap, mut txt, mut om) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..101 {
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            black_box(snapshots(&tiers));
        }
        snap.push(t.elapsed());
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            black_box(scrape_text(&registry, &mut body));
        }
        txt.push(t.elapsed());
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            black_box(scrape_openmetrics(&registry, &mut body));
        }
        om.push(t.elapsed());
    }
    let (snap, txt, om) = (
        median_us(&mut snap, PER_ROUND),
        median_us(&mut txt, PER_ROUND),
        median_us(&mut om, PER_ROUND),
    );
    println!(
        "side by side, median µs per scrape of 3 tiers ({} bytes of text):",
        body.len()
    );
    println!("  snapshots only     {snap:8.2} µs  1.00x");
    println!("  scrape, 0.0.4 text {txt:8.2} µs  {:.2}x", txt / snap);
    println!("  scrape, OpenMetrics{om:8.2} µs  {:.2}x", om / snap);
}
