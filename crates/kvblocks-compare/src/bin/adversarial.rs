//! The serving loop with adversarial keys against well-mixed keys, per
//! library and eviction policy, measured interleaved so that a noisy machine
//! moves both alike.
//!
//! Adversarial keys (`KeyShape::LowBitsCycling`): the low 20 bits of every
//! sequence hash take one of 16 values. A table that takes its bucket from a
//! key's low bits alone piles them into a few probe runs.
//!
//! Per policy and library: two managers and two clients (mixed keys, low-bit
//! keys), each warmed up untimed until its pool is full; then `REPS` rounds,
//! each timing `REQUESTS` requests on one and then on the other (the order
//! alternates by round). Reported: the median time per block of each, and
//! the median and range of the per-round ratio low bits / mixed (the goal is
//! at most 1.5x).
//!
//! Run: `cargo run --release -p kvblocks-compare --bin adversarial [-- REQUESTS REPS]`
//! (`KVCOMPARE_ONLY=kvblocks` or `kvbm` runs one library.)

use std::time::Instant;

use kvblocks_compare::{
    selected, Eviction, KeyShape, Kvblocks, Kvbm, ServingLoop, ServingSpec, Subject,
};

/// Requests served untimed first (4,096 x 16 unique blocks = one full pool).
const WARM_UP_REQUESTS: usize = 4_096;

/// One client and its manager (the client's handles drop first).
struct Loop<S: Subject> {
    client: ServingLoop<S>,
    manager: S,
}

impl<S: Subject> Loop<S> {
    fn new(eviction: Eviction, keys: KeyShape) -> Self {
        let spec = ServingSpec {
            keys,
            ..ServingSpec::STANDARD
        };
        let mut this = Loop {
            client: ServingLoop::new(&spec, 0),
            manager: S::build(spec.block_count, spec.block_size, eviction),
        };
        this.serve(WARM_UP_REQUESTS);
        this.client.reset_stats();
        this
    }

    /// Nanoseconds per block over `requests` requests.
    fn serve(&mut self, requests: usize) -> f64 {
        let start = Instant::now();
        for _ in 0..requests {
            self.client.step(&self.manager);
        }
        let blocks = requests * self.client.blocks_per_request();
        start.elapsed().as_nanos() as f64 / blocks as f64
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn measure<S: Subject>(eviction: Eviction, requests: usize, reps: usize) {
    if !S::supports(eviction) || !selected(S::NAME) {
        return;
    }
    let mut mixed = Loop::<S>::new(eviction, KeyShape::Mixed);
    let mut low = Loop::<S>::new(eviction, KeyShape::LowBitsCycling);
    let (mut mixed_ns, mut low_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..reps {
        let (m, l) = if round % 2 == 0 {
            let m = mixed.serve(requests);
            (m, low.serve(requests))
        } else {
            let l = low.serve(requests);
            (mixed.serve(requests), l)
        };
        mixed_ns.push(m);
        low_ns.push(l);
        ratios.push(l / m);
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    println!(
        "| {} | {} | {:.1} | {:.1} | **{:.2}x** ({lo:.2}-{hi:.2}) | {:.1}% / {:.1}% |",
        eviction.name(),
        S::NAME,
        median(&mut mixed_ns),
        median(&mut low_ns),
        median(&mut ratios),
        mixed.client.hit_rate() * 100.0,
        low.client.hit_rate() * 100.0,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let requests: usize = args.next().map_or(8_000, |a| a.parse().expect("REQUESTS"));
    let reps: usize = args.next().map_or(9, |a| a.parse().expect("REPS"));
    println!(
        "| policy | library | mixed ns/block | low bits ns/block | low bits / mixed, median (range) | hit rate mixed / low bits |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for eviction in [Eviction::Lru, Eviction::Lineage, Eviction::Prefix] {
        measure::<Kvblocks>(eviction, requests, reps);
        measure::<Kvbm>(eviction, requests, reps);
    }
}
