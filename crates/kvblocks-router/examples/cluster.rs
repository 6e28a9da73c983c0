//! A cluster on one machine: N workers, each a real `kvblocks::BlockManager`
//! with its own events manager, and one `Router` fed by their event streams.
//! Every request is sent to a worker by the router (longest cached prefix,
//! ties by load), at random, or round-robin; the example prints the block
//! hit rate each routing gets.
//!
//! ```sh
//! cargo run --release -p kvblocks-router --example cluster                 # kvsim's built-in workload
//! cargo run --release -p kvblocks-router --example cluster -- \
//!     --trace ../shared/traces/synthetic_trace.jsonl --workers 8 --capacity 2000
//! ```
//!
//! Options: `--workers N` (8), `--capacity BLOCKS` per worker (2000),
//! `--requests N` and `--seed S` for the built-in workload (4000, 1),
//! `--trace FILE` (Mooncake JSONL), `--window W` requests a request holds its
//! blocks for (16, as `kvsim`), `--lag K` requests between two deliveries of
//! events to the router (1).
//!
//! Each worker serves a request as `kvsim replay` does (`kvblocks_sim::replay`):
//! match the longest resident prefix, allocate the misses (evicting LRU),
//! stage and register them, hold them for the next `window` requests. The
//! block store emits the events itself (the manager is built with
//! `event_manager`): a store per new primary, a removal per eviction, each
//! under the lock that orders it; the example only flushes the events
//! manager and hands its broadcast to the router. At the end it checks that
//! the router's view of every worker equals that worker's registered set,
//! block for block.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvblocks::events::{BroadcastReceiver, EventsManager};
use kvblocks::{
    BlockDuplicationPolicy, BlockManager, ImmutableBlock, LogicalLayoutHandle, SequenceHash,
};
use kvblocks_router::{IndexBatch, Router, WorkerId};
use kvblocks_sim::chain::extend_chain;
use kvblocks_sim::schedule::{HoldMode, ReleaseSchedule};
use kvblocks_sim::trace::{self, Request};
use kvblocks_sim::workload::{self, WorkloadConfig};

#[derive(Clone)]
struct Gpu;

const TIER: LogicalLayoutHandle = LogicalLayoutHandle::G1;

struct Args {
    workers: usize,
    capacity: usize,
    requests: usize,
    seed: u64,
    trace: Option<PathBuf>,
    window: usize,
    lag: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        workers: 8,
        capacity: 2000,
        requests: 4000,
        seed: 1,
        trace: None,
        window: 16,
        lag: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--workers" => args.workers = number(value()?)? as usize,
            "--capacity" => args.capacity = number(value()?)? as usize,
            "--requests" => args.requests = number(value()?)? as usize,
            "--seed" => args.seed = number(value()?)?,
            "--trace" => args.trace = Some(PathBuf::from(value()?)),
            "--window" => args.window = number(value()?)? as usize,
            "--lag" => args.lag = number(value()?)?.max(1) as usize,
            other => return Err(format!("unknown option {other} (see the example's docs)")),
        }
    }
    if args.workers == 0 || args.capacity == 0 {
        return Err("--workers and --capacity must be positive".into());
    }
    Ok(args)
}

/// One worker: a block manager whose store reports to an events manager,
/// and the receiver of that manager's broadcast.
struct Worker {
    manager: BlockManager<Gpu>,
    events: Arc<EventsManager>,
    rx: BroadcastReceiver,
}

impl Worker {
    fn new(id: usize, capacity: usize) -> Result<Self, String> {
        let events = Arc::new(
            EventsManager::builder()
                .instance_id(id as u128)
                .block_size(512)
                .epoch(1)
                .broadcast_capacity(1 << 20)
                .build(),
        );
        let manager = BlockManager::<Gpu>::builder()
            .block_count(capacity)
            .block_size(512)
            .duplication_policy(BlockDuplicationPolicy::Reject)
            .logical_layout(TIER)
            .event_manager(Arc::clone(&events))
            .build()
            .map_err(|e| e.to_string())?;
        let rx = events.subscribe();
        Ok(Self {
            manager,
            events,
            rx,
        })
    }

    /// Serves one request: returns the blocks it pins and its hits, or
    /// `None` if the pool cannot take its misses. The store reports what it
    /// registers and evicts.
    fn serve(&self, keys: &[SequenceHash]) -> (Vec<ImmutableBlock<Gpu>>, usize, bool) {
        let mut blocks = self.manager.match_blocks(keys);
        let hits = blocks.len();
        let misses = &keys[hits..];
        if misses.is_empty() {
            return (blocks, hits, true);
        }
        let Some(fresh) = self.manager.allocate_blocks(misses.len()) else {
            return (Vec::new(), hits, false);
        };
        let staged = fresh
            .into_iter()
            .zip(misses)
            .map(|(block, &key)| block.stage(key, 512).expect("the manager's own block size"))
            .collect();
        blocks.extend(self.manager.register_blocks(staged));
        (blocks, hits, true)
    }

    /// Publishes what is buffered and applies it to the router.
    fn deliver(&mut self, router: &Router) -> usize {
        self.events.flush_all();
        let mut batches = 0;
        while let Ok(batch) = self.rx.try_recv() {
            router
                .apply(&IndexBatch::from_kvblocks(&batch))
                .expect("an in-order, lossless stream");
            batches += 1;
        }
        batches
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Routing {
    Router,
    Random,
    RoundRobin,
}

impl Routing {
    fn name(self) -> &'static str {
        match self {
            Routing::Router => "kv-aware router",
            Routing::Random => "random",
            Routing::RoundRobin => "round-robin",
        }
    }
}

struct Outcome {
    refs: u64,
    hits: u64,
    rejected: u64,
    max_share: f64,
    decide: Duration,
    batches: usize,
    exact_pairs: Option<usize>,
    router: kvblocks_router::RouterMetrics,
}

fn run(
    requests: &[Request],
    chains: &[Vec<SequenceHash>],
    schedule: &ReleaseSchedule,
    args: &Args,
    routing: Routing,
) -> Result<Outcome, String> {
    let mut workers = (0..args.workers)
        .map(|w| Worker::new(w, args.capacity))
        .collect::<Result<Vec<_>, _>>()?;
    let router = Router::new();
    for w in 0..args.workers {
        router.add_worker(WorkerId(w as u128));
    }
    let mut held: Vec<(usize, Vec<ImmutableBlock<Gpu>>)> =
        (0..requests.len()).map(|_| (0, Vec::new())).collect();
    let mut in_flight = vec![0i64; args.workers];
    let mut served_by = vec![0u64; args.workers];
    let mut rng = 0x2545_f491_4f6c_dd1du64 ^ args.seed;
    let (mut refs, mut hits, mut rejected, mut batches) = (0u64, 0u64, 0u64, 0usize);
    let mut decide = Duration::ZERO;
    for (j, keys) in chains.iter().enumerate() {
        for &i in schedule.before(j) {
            let (w, blocks) = std::mem::take(&mut held[i as usize]);
            if !blocks.is_empty() {
                workers[w].manager.release_blocks(blocks);
                in_flight[w] -= 1;
                router.add_load(WorkerId(w as u128), -1);
            }
        }
        if j % args.lag == 0 {
            for worker in &mut workers {
                batches += worker.deliver(&router);
            }
        }
        let w = match routing {
            Routing::Router => {
                let start = Instant::now();
                let best = router.best_worker(keys).map_or(0, |b| b.worker.0 as usize);
                decide += start.elapsed();
                best
            }
            Routing::Random => {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % args.workers as u64) as usize
            }
            Routing::RoundRobin => j % args.workers,
        };
        let (blocks, hit, served) = workers[w].serve(keys);
        refs += keys.len() as u64;
        served_by[w] += 1;
        if served {
            hits += hit as u64;
            if !blocks.is_empty() {
                in_flight[w] += 1;
                router.add_load(WorkerId(w as u128), 1);
            }
            held[j] = (w, blocks);
        } else {
            rejected += 1;
        }
    }
    for worker in &mut workers {
        batches += worker.deliver(&router);
    }
    let exact_pairs = (routing == Routing::Router)
        .then(|| check_exact(&workers, &router, chains))
        .transpose()?;
    let mean = requests.len() as f64 / args.workers as f64;
    Ok(Outcome {
        refs,
        hits,
        rejected,
        max_share: served_by.iter().copied().max().unwrap_or(0) as f64 / mean,
        decide,
        batches,
        exact_pairs,
        router: router.metrics(),
    })
}

/// The router's view of every worker, block by block, against the manager.
fn check_exact(
    workers: &[Worker],
    router: &Router,
    chains: &[Vec<SequenceHash>],
) -> Result<usize, String> {
    let mut keys: Vec<SequenceHash> = chains.iter().flatten().copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut held = 0;
    for (w, worker) in workers.iter().enumerate() {
        for &key in &keys {
            let in_manager = worker.manager.contains(key);
            if in_manager != router.holds(WorkerId(w as u128), TIER, key.current_sequence_hash()) {
                return Err(format!(
                    "worker {w}: the router's view of {key:?} differs (manager: {in_manager})"
                ));
            }
            held += usize::from(in_manager);
        }
    }
    Ok(held)
}

fn main() -> Result<(), String> {
    let args = parse_args()?;
    let (name, requests) = match &args.trace {
        Some(path) => {
            let trace = trace::load(path).map_err(|e| e.to_string())?;
            (trace.name.clone(), trace.requests)
        }
        None => {
            let config = WorkloadConfig::new(args.seed, args.requests);
            (config.label(), workload::generate(&config))
        }
    };
    let chains: Vec<Vec<SequenceHash>> = requests
        .iter()
        .map(|r| {
            let mut keys = Vec::with_capacity(r.hash_ids.len());
            extend_chain(&r.hash_ids, &mut keys);
            keys
        })
        .collect();
    let schedule = ReleaseSchedule::build(&requests, HoldMode::Window(args.window));
    let distinct = {
        let mut all: Vec<_> = chains.iter().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    };
    println!(
        "{name}: {} requests, {} block references, {distinct} distinct blocks",
        requests.len(),
        chains.iter().map(Vec::len).sum::<usize>()
    );
    println!(
        "{} workers x {} blocks, LRU, hold window {}, events delivered every {} request(s)\n",
        args.workers, args.capacity, args.window, args.lag
    );
    println!(
        "{:<16} {:>9} {:>9} {:>16}",
        "routing", "hit rate", "rejected", "busiest/mean"
    );
    for routing in [Routing::Router, Routing::Random, Routing::RoundRobin] {
        let outcome = run(&requests, &chains, &schedule, &args, routing)?;
        println!(
            "{:<16} {:>8.1}% {:>9} {:>15.2}x",
            routing.name(),
            100.0 * outcome.hits as f64 / outcome.refs.max(1) as f64,
            outcome.rejected,
            outcome.max_share
        );
        if let Some(pairs) = outcome.exact_pairs {
            let c = outcome.router.counters;
            println!(
                "  router: {} batches, {} block events, {} orphan stores, {:.2} us per routing decision;\n  \
                 its view equals every worker's registered set ({pairs} blocks held, checked one by one)",
                outcome.batches,
                c.block_events,
                c.orphan_stores,
                outcome.decide.as_secs_f64() * 1e6 / requests.len().max(1) as f64,
            );
        }
    }
    Ok(())
}
