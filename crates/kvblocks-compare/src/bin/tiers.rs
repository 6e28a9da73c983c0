//! Two tiers sharing one registry, side by side for `kvblocks` and
//! `kvbm-logical` (issue 7's figures):
//!
//! - **offload loop**: the standard serving loop in G1 (65,536 slots), and
//!   every block G1 registers is registered again in G2 (262,144 slots) and
//!   dropped there at once (an offload copy, cached in G2); both managers
//!   share one registry. Time per G1 block.
//! - **single tier with a shared registry**: the same serving loop in G1
//!   alone, the G2 manager built but idle (what sharing the registry costs a
//!   tier that does not offload). Against the same loop with no second
//!   manager (`kvblocks` only; `kvbm-logical` always has a registry).
//! - **presence**: `check_presence::<G2>` of 128 hashes, all in G2 (a full
//!   G2, 262,144 registered blocks).
//!
//! Each library releases a finished request as it offers: kvblocks with
//! `release_blocks` (one call per request), kvbm-logical by dropping the
//! `Vec` (it has no batch release), as the core benchmark does.
//!
//! The variants alternate in rounds (so a loaded machine moves all alike);
//! the median of the rounds is printed per library with the ratio.
//!
//! Run: `cargo run --release -p kvblocks-compare --bin tiers [-- ROUNDS]`

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Instant;

use kvblocks_compare::workload::{ServingSpec, Triple};

#[derive(Clone, Copy, Debug, Default)]
struct G1;
#[derive(Clone, Copy, Debug, Default)]
struct G2;

const G2_BLOCKS: usize = 4 * 65_536;
const REQUESTS_PER_ROUND: usize = 2_048;

/// What a library must do for the three workloads.
trait Tiers {
    const NAME: &'static str;
    /// Both tiers over one registry; `second` false leaves G2 unused.
    fn new(spec: &ServingSpec, offload: bool) -> Self;
    /// One request of the serving loop (with offload if built so).
    fn serve(&mut self);
    /// Registers `count` distinct blocks straight into G2 and returns their
    /// keys' triples for presence checks (fills G2).
    fn fill_g2(&mut self, triples: &[Triple]);
    /// `check_presence::<G2>` over the first 128 filled blocks; how many hit.
    fn presence(&self, triples: &[Triple]) -> usize;
}

macro_rules! tiers_impl {
    ($name:ident, $lib:ident, $label:expr, $registry:expr, $g1_builder:expr, $release:expr) => {
        struct $name {
            g1: $lib::BlockManager<G1>,
            g2: $lib::BlockManager<G2>,
            registry: $lib::BlockRegistry,
            hashes: Vec<$lib::SequenceHash>,
            chain_len: usize,
            next: usize,
            in_flight: VecDeque<Vec<$lib::ImmutableBlock<G1>>>,
            offload: bool,
        }

        impl Tiers for $name {
            const NAME: &'static str = $label;

            fn new(spec: &ServingSpec, offload: bool) -> Self {
                let registry = $registry;
                let g1 = $g1_builder(spec, &registry);
                let g2 = $lib::BlockManager::<G2>::builder()
                    .block_count(G2_BLOCKS)
                    .block_size(spec.block_size)
                    .registry(registry.clone())
                    .with_lru_backend()
                    .build()
                    .expect("valid G2");
                let hashes = spec
                    .triples(0)
                    .iter()
                    .map(|t| $lib::SequenceHash::new(t.current, t.parent, t.position))
                    .collect();
                Self {
                    g1,
                    g2,
                    registry,
                    hashes,
                    chain_len: spec.chain_len(),
                    next: 0,
                    in_flight: VecDeque::new(),
                    offload,
                }
            }

            fn serve(&mut self) {
                let start = self.next * self.chain_len;
                self.next = (self.next + 1) % (self.hashes.len() / self.chain_len);
                let chain = &self.hashes[start..start + self.chain_len];
                let mut held = self.g1.match_blocks(chain);
                let misses = &chain[held.len()..];
                if !misses.is_empty() {
                    let staged: Vec<_> = self
                        .g1
                        .allocate_blocks(misses.len())
                        .expect("room in G1")
                        .into_iter()
                        .zip(misses)
                        .map(|(b, h)| b.stage(*h, self.g1.block_size()).expect("size"))
                        .collect();
                    held.extend(self.g1.register_blocks(staged));
                    if self.offload {
                        let copies: Vec<_> = self
                            .g2
                            .allocate_blocks(misses.len())
                            .expect("room in G2")
                            .into_iter()
                            .zip(misses)
                            .map(|(b, h)| b.stage(*h, self.g2.block_size()).expect("size"))
                            .collect();
                        $release(&self.g2, self.g2.register_blocks(copies));
                    }
                }
                self.in_flight.push_back(held);
                if self.in_flight.len() > 8 {
                    if let Some(done) = self.in_flight.pop_front() {
                        $release(&self.g1, done);
                    }
                }
            }

            fn fill_g2(&mut self, triples: &[Triple]) {
                for chunk in triples.chunks(1024) {
                    let staged: Vec<_> = self
                        .g2
                        .allocate_blocks(chunk.len())
                        .expect("room in G2")
                        .into_iter()
                        .zip(chunk)
                        .map(|(b, t)| {
                            let hash = $lib::SequenceHash::new(t.current, t.parent, t.position);
                            b.stage(hash, self.g2.block_size()).expect("size")
                        })
                        .collect();
                    drop(self.g2.register_blocks(staged));
                }
            }

            fn presence(&self, triples: &[Triple]) -> usize {
                let hashes: Vec<_> = triples[..128]
                    .iter()
                    .map(|t| $lib::SequenceHash::new(t.current, t.parent, t.position))
                    .collect();
                self.registry
                    .check_presence::<G2>(black_box(&hashes))
                    .iter()
                    .filter(|(_, present)| *present)
                    .count()
            }
        }
    };
}

tiers_impl!(
    KvblocksTiers,
    kvblocks,
    "kvblocks",
    kvblocks::BlockRegistry::new(),
    |spec: &ServingSpec, registry: &kvblocks::BlockRegistry| kvblocks::BlockManager::<G1>::builder(
    )
    .block_count(spec.block_count)
    .block_size(spec.block_size)
    .registry(registry.clone())
    .with_lru_backend()
    .build()
    .expect("valid G1"),
    // A finished request's blocks go back in one call (one lock per shard
    // run instead of one per block).
    |manager: &kvblocks::BlockManager<_>, blocks| manager.release_blocks(blocks)
);

tiers_impl!(
    KvbmTiers,
    kvbm_logical,
    "kvbm",
    kvbm_logical::BlockRegistry::builder().build(),
    |spec: &ServingSpec, registry: &kvbm_logical::BlockRegistry| {
        kvbm_logical::BlockManager::<G1>::builder()
            .block_count(spec.block_count)
            .block_size(spec.block_size)
            .registry(registry.clone())
            .with_lru_backend()
            .build()
            .expect("valid G1")
    },
    // kvbm-logical has no batch release: dropping the `Vec` is its way.
    |_manager: &kvbm_logical::BlockManager<_>, blocks| drop(blocks)
);

/// `kvblocks` G1 alone, built without a registry (its own private one).
fn alone(spec: &ServingSpec) -> (kvblocks::BlockManager<G1>, Vec<kvblocks::SequenceHash>) {
    let g1 = kvblocks::BlockManager::<G1>::builder()
        .block_count(spec.block_count)
        .block_size(spec.block_size)
        .with_lru_backend()
        .build()
        .expect("valid G1");
    let hashes = spec
        .triples(0)
        .iter()
        .map(|t| kvblocks::SequenceHash::new(t.current, t.parent, t.position))
        .collect();
    (g1, hashes)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// ns per G1 block of `REQUESTS_PER_ROUND` requests.
fn round<T: Tiers>(tiers: &mut T, chain_len: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..REQUESTS_PER_ROUND {
        tiers.serve();
    }
    start.elapsed().as_nanos() as f64 / (REQUESTS_PER_ROUND * chain_len) as f64
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(15);
    let spec = ServingSpec::STANDARD;
    let chain_len = spec.chain_len();

    // Warm every loop until its pool is full, then alternate.
    let mut ours_offload = KvblocksTiers::new(&spec, true);
    let mut theirs_offload = KvbmTiers::new(&spec, true);
    let mut ours_shared = KvblocksTiers::new(&spec, false);
    let mut theirs_shared = KvbmTiers::new(&spec, false);
    let (alone_g1, alone_hashes) = alone(&spec);
    let mut alone_ring: VecDeque<Vec<kvblocks::ImmutableBlock<G1>>> = VecDeque::new();
    let mut alone_next = 0usize;
    let mut serve_alone = || {
        let start = alone_next * chain_len;
        alone_next = (alone_next + 1) % (alone_hashes.len() / chain_len);
        let chain = &alone_hashes[start..start + chain_len];
        let mut held = alone_g1.match_blocks(chain);
        let misses = &chain[held.len()..];
        if !misses.is_empty() {
            let staged = alone_g1
                .allocate_blocks(misses.len())
                .expect("room")
                .into_iter()
                .zip(misses)
                .map(|(b, h)| b.stage(*h, spec.block_size).expect("size"))
                .collect();
            held.extend(alone_g1.register_blocks(staged));
        }
        alone_ring.push_back(held);
        if alone_ring.len() > 8 {
            if let Some(done) = alone_ring.pop_front() {
                alone_g1.release_blocks(done);
            }
        }
    };
    for _ in 0..4_096 {
        ours_offload.serve();
        theirs_offload.serve();
        ours_shared.serve();
        theirs_shared.serve();
        serve_alone();
    }
    let mut samples: [Vec<f64>; 5] = Default::default();
    for _ in 0..rounds {
        samples[0].push(round(&mut ours_offload, chain_len));
        samples[1].push(round(&mut theirs_offload, chain_len));
        samples[2].push(round(&mut ours_shared, chain_len));
        samples[3].push(round(&mut theirs_shared, chain_len));
        let start = Instant::now();
        for _ in 0..REQUESTS_PER_ROUND {
            serve_alone();
        }
        samples[4]
            .push(start.elapsed().as_nanos() as f64 / (REQUESTS_PER_ROUND * chain_len) as f64);
    }
    let [a, b, c, d, e] = samples.map(|mut s| median(&mut s));
    println!("| workload | kvblocks | kvbm | kvbm / kvblocks |");
    println!("|---|---:|---:|---:|");
    println!(
        "| offload loop (G1 + copy to G2), ns per G1 block | {a:.1} | {b:.1} | {:.1}x |",
        b / a
    );
    println!(
        "| one tier, registry shared with an idle G2, ns/block | {c:.1} | {d:.1} | {:.1}x |",
        d / c
    );
    println!("| one tier, registry of its own, ns/block | {e:.1} | - | - |");
    println!(
        "(shared registry / own registry, kvblocks: {:+.1}%)",
        100.0 * (c / e - 1.0)
    );

    // Presence: G2 filled with 262,144 registered (inactive) blocks.
    drop((ours_offload, theirs_offload));
    let mut ours = KvblocksTiers::new(&spec, false);
    let mut theirs = KvbmTiers::new(&spec, false);
    let mut seen = std::collections::HashSet::new();
    let fill: Vec<Triple> = spec
        .triples(7)
        .into_iter()
        .filter(|t| seen.insert((t.current, t.position)))
        .take(G2_BLOCKS)
        .collect();
    ours.fill_g2(&fill);
    theirs.fill_g2(&fill);
    let per_call = |f: &dyn Fn() -> usize| {
        let mut rounds_ns = Vec::new();
        for _ in 0..rounds {
            let start = Instant::now();
            for _ in 0..10_000 {
                assert_eq!(black_box(f()), 128);
            }
            rounds_ns.push(start.elapsed().as_nanos() as f64 / 10_000.0);
        }
        median(&mut rounds_ns)
    };
    let (p, q) = (
        per_call(&|| ours.presence(&fill)),
        per_call(&|| theirs.presence(&fill)),
    );
    println!(
        "| check_presence of 128 hashes (all present), ns per call | {p:.0} | {q:.0} | {:.1}x |",
        q / p
    );
    let _ = (KvblocksTiers::NAME, KvbmTiers::NAME);
}
