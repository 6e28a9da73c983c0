//! End-to-end latency from registration to router visibility, through NATS
//! JetStream, at a steady block rate; the same pipeline without NATS (the
//! workers' in-process broadcasts feeding the router from one thread that
//! polls them, sleeping 50 us when all are empty) runs first in the same
//! process as the baseline.
//!
//! ```sh
//! cargo run --release -p kvblocks-nats --example latency                  # 4 workers, 10,000 blocks/s, 5 s
//! cargo run --release -p kvblocks-nats --example latency -- --rate 20000 --seconds 10 --window-us 500
//! ```
//!
//! Options: `--url` (127.0.0.1:4222), `--workers N` (4), `--rate BLOCKS/S`
//! in all (10000), `--seconds S` (5), `--window-us W`: the events
//! manager's batching window (1000), `--tick-us T`: how often each worker
//! registers and flushes (1000).
//!
//! Each worker is a thread with its own block manager (4096 blocks, LRU)
//! whose store emits events to its events manager. Every tick it registers
//! the blocks it owes at the target rate, as chains of up to 8 new blocks
//! released at once (so the pool fills and evictions add removals), noting
//! the instant just before `register_blocks`, and calls
//! `EventsManager::flush(now)`. The latency of a block is the time from that
//! instant to the moment the router applied the batch storing it (the
//! consumer's observer). It includes the batching window and the tick.
//! The stream is created for the run and deleted after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvblocks::events::{EventsManager, KvCacheEvents, KvbmCacheEvents};
use kvblocks::{BlockManager, SequenceHash};
use kvblocks_nats::{
    connect, ConsumerConfig, EventConsumer, NatsPublisher, PublisherConfig, StreamSettings,
    Subjects,
};
use kvblocks_router::{IndexBatch, Router};

#[derive(Clone)]
struct Gpu;

const BLOCK_SIZE: usize = 16;

struct Args {
    url: String,
    workers: usize,
    rate: f64,
    seconds: f64,
    window: Duration,
    tick: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "127.0.0.1:4222".into(),
        workers: 4,
        rate: 10_000.0,
        seconds: 5.0,
        window: Duration::from_micros(1000),
        tick: Duration::from_micros(1000),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--url" => args.url = value,
            "--workers" => args.workers = number(&value)?.max(1.0) as usize,
            "--rate" => args.rate = number(&value)?.max(1.0),
            "--seconds" => args.seconds = number(&value)?.max(0.1),
            "--window-us" => args.window = Duration::from_micros(number(&value)? as u64),
            "--tick-us" => args.tick = Duration::from_micros(number(&value)?.max(10.0) as u64),
            other => return Err(format!("unknown option {other} (see the example's docs)")),
        }
    }
    Ok(args)
}

/// Registration instants by block key, and the latencies measured.
#[derive(Default)]
struct Clock {
    registered: Mutex<HashMap<u64, Instant>>,
    latencies: Mutex<Vec<Duration>>,
}

impl Clock {
    fn observe(&self, batch: &KvbmCacheEvents) {
        let now = Instant::now();
        let mut registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        let mut latencies = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        for part in batch.events.by_kind() {
            let KvCacheEvents::Create(blocks) = part.as_ref() else {
                continue;
            };
            for block in blocks {
                if let Some(at) = registered.remove(&block.hash.current_sequence_hash()) {
                    latencies.push(now - at);
                }
            }
        }
    }
}

/// One worker's serving loop at `rate` blocks/s for `run` time.
fn serve(
    worker: u64,
    manager: &BlockManager<Gpu>,
    events: &EventsManager,
    clock: &Clock,
    rate: f64,
    run: Duration,
    tick: Duration,
) -> u64 {
    let start = Instant::now();
    let mut done = 0u64;
    let mut next = 0u64;
    while start.elapsed() < run {
        let owed = (start.elapsed().as_secs_f64() * rate) as u64;
        while done < owed {
            let len = (owed - done).min(8) as usize;
            let mut chain: Vec<SequenceHash> = Vec::with_capacity(len);
            for i in 0..len {
                let content = worker << 48 | next;
                next += 1;
                chain.push(match i {
                    0 => SequenceHash::root(content),
                    _ => chain[i - 1].extend(content),
                });
            }
            let Some(fresh) = manager.allocate_blocks(len) else {
                break;
            };
            let staged = fresh
                .into_iter()
                .zip(&chain)
                .filter_map(|(block, &key)| block.stage(key, BLOCK_SIZE).ok())
                .collect();
            {
                let now = Instant::now();
                let mut registered = clock.registered.lock().unwrap_or_else(|p| p.into_inner());
                for key in &chain {
                    registered.insert(key.current_sequence_hash(), now);
                }
            }
            drop(manager.register_blocks(staged));
            done += len as u64;
        }
        events.flush(Instant::now());
        std::thread::sleep(tick);
    }
    events.flush_all();
    done
}

struct Outcome {
    blocks: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, outcome: &mut Outcome) {
    outcome.latencies.sort_unstable();
    let l = &outcome.latencies;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<28} {:>8.0} blocks/s  {:>7} samples  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  max {:>6.2} ms",
        outcome.blocks as f64 / outcome.elapsed.as_secs_f64(),
        l.len(),
        ms(percentile(l, 0.50)),
        ms(percentile(l, 0.90)),
        ms(percentile(l, 0.99)),
        ms(percentile(l, 0.999)),
        ms(l.last().copied().unwrap_or_default()),
    );
}

fn managers(
    args: &Args,
    sinks: &[Option<Arc<kvblocks_nats::NatsSink>>],
) -> Vec<(Arc<EventsManager>, Arc<BlockManager<Gpu>>)> {
    (0..args.workers)
        .map(|w| {
            let mut builder = EventsManager::builder()
                .instance_id(w as u128)
                .block_size(BLOCK_SIZE as u32)
                .broadcast_capacity(1 << 16)
                .batching(kvblocks::events::BatchingConfig::default().with_window(args.window));
            if let Some(Some(sink)) = sinks.get(w) {
                builder = builder.sink(sink.clone());
            }
            let events = Arc::new(builder.build());
            let manager = Arc::new(
                BlockManager::<Gpu>::builder()
                    .block_count(4096)
                    .block_size(BLOCK_SIZE)
                    .event_manager(Arc::clone(&events))
                    .build()
                    .expect("a manager"),
            );
            (events, manager)
        })
        .collect()
}

fn run_workers(
    args: &Args,
    workers: &[(Arc<EventsManager>, Arc<BlockManager<Gpu>>)],
    clock: &Arc<Clock>,
) -> (u64, Duration) {
    let run = Duration::from_secs_f64(args.seconds);
    let rate = args.rate / args.workers as f64;
    let start = Instant::now();
    let blocks = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .iter()
            .enumerate()
            .map(|(w, (events, manager))| {
                let clock = Arc::clone(clock);
                scope.spawn(move || serve(w as u64, manager, events, &clock, rate, run, args.tick))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    (blocks, start.elapsed())
}

/// The baseline: the workers' broadcasts feed the router on one thread.
fn in_process(args: &Args) -> Outcome {
    let clock = Arc::new(Clock::default());
    let workers = managers(args, &[]);
    let router = Router::new();
    let stop = AtomicBool::new(false);
    let mut receivers: Vec<_> = workers
        .iter()
        .map(|(events, _)| events.subscribe())
        .collect();
    let (blocks, elapsed) = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let mut idle = true;
                for rx in &mut receivers {
                    while let Ok(batch) = rx.try_recv() {
                        idle = false;
                        let _ = router.apply(&IndexBatch::from_kvblocks(&batch));
                        clock.observe(&batch);
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        });
        let outcome = run_workers(args, &workers, &clock);
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        outcome
    });
    let latencies = std::mem::take(&mut *clock.latencies.lock().unwrap_or_else(|p| p.into_inner()));
    Outcome {
        blocks,
        elapsed,
        latencies,
    }
}

async fn through_nats(args: &Args) -> Result<(Outcome, String), Box<dyn std::error::Error>> {
    let tag = format!(
        "{}_{}",
        std::process::id(),
        kvblocks::events::epoch_from_clock() % 1_000_000_000
    );
    let subjects = Subjects::new(&format!("kvblat.{tag}.ev"), &format!("kvblat.{tag}.snap"))?;
    let settings = StreamSettings::new(&format!("KVBLAT_{tag}"), subjects)?;
    let client = connect(&args.url).await?;
    let clock = Arc::new(Clock::default());
    let router = Arc::new(Router::new());
    let mut config = ConsumerConfig::new(settings.clone(), &format!("lat_{tag}"));
    let observer_clock = Arc::clone(&clock);
    config.observer = Some(Arc::new(move |batch| observer_clock.observe(batch)));
    let consumer = EventConsumer::start(client.clone(), config, Arc::clone(&router)).await?;
    let mut publishers = Vec::new();
    for _ in 0..args.workers {
        publishers.push(
            NatsPublisher::start(client.clone(), PublisherConfig::new(settings.clone())).await?,
        );
    }
    let sinks: Vec<_> = publishers.iter().map(|p| Some(p.sink())).collect();
    let workers = managers(args, &sinks);
    let (blocks, elapsed) = {
        let (args_workers, clock_run) = (&workers, Arc::clone(&clock));
        tokio::task::block_in_place(|| run_workers(args, args_workers, &clock_run))
    };
    let expected = blocks;
    let deadline = Instant::now() + Duration::from_secs(30);
    while (clock
        .latencies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len() as u64)
        < expected
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut dropped = 0;
    for publisher in publishers {
        dropped += publisher.close(Duration::from_secs(5)).await.dropped();
    }
    let stats = consumer.stats();
    drop(consumer);
    let _ = async_nats::jetstream::new(client)
        .delete_stream(&settings.name)
        .await;
    let latencies = std::mem::take(&mut *clock.latencies.lock().unwrap_or_else(|p| p.into_inner()));
    let note = format!(
        "  NATS: {} batches applied, {} gaps, {} publisher drops, {} of {} blocks seen by the router",
        stats.applied, stats.gaps, dropped, latencies.len(), expected
    );
    Ok((
        Outcome {
            blocks,
            elapsed,
            latencies,
        },
        note,
    ))
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    println!(
        "{} workers, {} blocks/s in all, {} s, batching window {} us, tick {} us; load average before: {}",
        args.workers,
        args.rate,
        args.seconds,
        args.window.as_micros(),
        args.tick.as_micros(),
        load()
    );
    let mut baseline = in_process(&args);
    report("in-process broadcast", &mut baseline);
    let (mut nats, note) = through_nats(&args).await?;
    report("NATS JetStream", &mut nats);
    println!("{note}");
    let ms = |o: &Outcome, p| percentile(&o.latencies, p).as_secs_f64() * 1e3;
    println!(
        "NATS adds {:.2} ms at p50 and {:.2} ms at p99; load average after: {}",
        ms(&nats, 0.5) - ms(&baseline, 0.5),
        ms(&nats, 0.99) - ms(&baseline, 0.99),
        load()
    );
    Ok(())
}
