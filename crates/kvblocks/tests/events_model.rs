//! The event model against a plain model of a registered set.
//!
//! A simulated store (a `BTreeSet` per tier) registers chains, evicts and
//! resets, and reports every change through a real `EventEmitter`; the real
//! `EventsManager` batches and numbers the stream; consumers replay it with
//! `RegisteredSet`. Whatever the batching, the flush timing, the lag of a
//! consumer or the snapshots taken on the way, the replayed set must be the
//! simulated store's set, exactly (invariant 5 of the design notes). The
//! manager-driven version of this test comes when the store emits.

use std::collections::{BTreeSet, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use kvblocks::events::{
    BatchingConfig, BroadcastReceiver, EventEmitter, EventsManager, PowerOfTwoPolicy, RecvError,
    RegisteredSet, ReplayError, TierSnapshot, WorkerSnapshot,
};
use kvblocks::{LogicalLayoutHandle, SequenceHash};
use proptest::prelude::*;

const TIERS: [LogicalLayoutHandle; 2] = [LogicalLayoutHandle::G1, LogicalLayoutHandle::G2];

/// The store the events describe.
#[derive(Default)]
struct Store {
    tiers: [BTreeSet<SequenceHash>; 4],
}

impl Store {
    fn set(&self, tier: LogicalLayoutHandle) -> &BTreeSet<SequenceHash> {
        &self.tiers[tier.index()]
    }

    fn snapshot_tiers(&self) -> Vec<TierSnapshot> {
        TIERS
            .iter()
            .map(|&tier| TierSnapshot {
                tier,
                hashes: self.set(tier).iter().copied().collect(),
            })
            .collect()
    }

    /// Registers the chain `root, ..` of `len` blocks; emits the new primaries.
    fn register(
        &mut self,
        emitter: &EventEmitter,
        tier: LogicalLayoutHandle,
        root: u64,
        len: usize,
    ) {
        let mut chain = vec![SequenceHash::root(root)];
        while chain.len() < len {
            let next = chain[chain.len() - 1].extend(root * 1000 + chain.len() as u64);
            chain.push(next);
        }
        let set = &mut self.tiers[tier.index()];
        let fresh: Vec<_> = chain.iter().copied().filter(|h| set.insert(*h)).collect();
        emitter.stored(tier, None, &fresh);
    }

    /// Evicts every `stride`-th block of `tier`, children first.
    fn evict(&mut self, emitter: &EventEmitter, tier: LogicalLayoutHandle, stride: usize) {
        let set = &mut self.tiers[tier.index()];
        let victims: Vec<_> = set.iter().copied().step_by(stride.max(1)).collect();
        for victim in &victims {
            set.remove(victim);
        }
        emitter.removed(tier, &victims);
    }

    fn clear(&mut self, emitter: &EventEmitter, tier: LogicalLayoutHandle) {
        self.tiers[tier.index()].clear();
        emitter.cleared(tier);
    }
}

/// A consumer that follows the broadcast, reloading from a snapshot when it lags.
struct Consumer {
    rx: BroadcastReceiver,
    set: RegisteredSet,
    resyncs: usize,
}

impl Consumer {
    fn new(events: &EventsManager) -> Self {
        Self {
            rx: events.subscribe(),
            set: RegisteredSet::new(),
            resyncs: 0,
        }
    }

    fn drain(&mut self, events: &EventsManager) -> Result<(), ReplayError> {
        loop {
            match self.rx.try_recv() {
                Ok(batch) => match self.set.apply(&batch) {
                    // Batches the snapshot already reflects.
                    Err(ReplayError::Duplicate { .. }) => {}
                    other => other?,
                },
                Err(RecvError::Lagged { .. }) => {
                    let snapshot = events.snapshot().expect("built with track_registered");
                    self.set = RegisteredSet::from_snapshot(&snapshot);
                    self.resyncs += 1;
                }
                Err(RecvError::Empty | RecvError::Closed) => return Ok(()),
            }
        }
    }
}

fn assert_same(store: &Store, set: &RegisteredSet, context: &str) {
    for tier in TIERS {
        let expected: Vec<_> = store.set(tier).iter().copied().collect();
        assert_eq!(set.sorted(tier), expected, "{context}: tier {tier}");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Register { tier: usize, root: u64, len: usize },
    Evict { tier: usize, stride: usize },
    Clear { tier: usize },
    Flush { advance_ms: u64 },
    Check,
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..12u64, 1..10usize).prop_map(|(tier, root, len)| Op::Register { tier, root, len }),
        3 => (0..2usize, 1..4usize).prop_map(|(tier, stride)| Op::Evict { tier, stride }),
        1 => (0..2usize).prop_map(|tier| Op::Clear { tier }),
        3 => (0..8u64).prop_map(|advance_ms| Op::Flush { advance_ms }),
        2 => Just(Op::Check),
        1 => Just(Op::Snapshot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Invariant 5 against the model: replaying the stream reproduces the
    /// store's registered set at every check, for any batching and timing;
    /// a consumer that lags reloads from a snapshot and still ends exact; a
    /// snapshot taken at a barrier plus the batches after it is exact too.
    #[test]
    fn replaying_the_stream_reproduces_the_registered_set(
        ops in proptest::collection::vec(op(), 1..80),
        max_batch in 1..12usize,
        window_ms in 1..6u64,
        slow_capacity in 1..4usize,
        mixed in any::<bool>(),
    ) {
        let events = EventsManager::builder()
            .instance_id(9)
            .block_size(16)
            .epoch(3)
            .batching(BatchingConfig::default()
                .with_max_size(NonZeroUsize::new(max_batch).unwrap())
                .with_window(Duration::from_millis(window_ms))
                .with_mixed_kinds(mixed))
            .broadcast_capacity(4096)
            .track_registered(true)
            .build();
        let emitter = events.emitter();
        let mut exact = Consumer::new(&events);
        // A second manager-independent view: a small ring that lags.
        let slow_sink = kvblocks::events::BroadcastSink::new(slow_capacity);
        events.add_sink(Arc::new(slow_sink.clone()));
        let mut slow = Consumer { rx: slow_sink.subscribe(), set: RegisteredSet::new(), resyncs: 0 };
        let mut from_barrier: Option<(WorkerSnapshot, BroadcastReceiver)> = None;

        let mut store = Store::default();
        let t0 = Instant::now();
        let mut now = t0;
        for op in &ops {
            match *op {
                Op::Register { tier, root, len } => store.register(&emitter, TIERS[tier], root, len),
                Op::Evict { tier, stride } => store.evict(&emitter, TIERS[tier], stride),
                Op::Clear { tier } => store.clear(&emitter, TIERS[tier]),
                Op::Flush { advance_ms } => {
                    now += Duration::from_millis(advance_ms);
                    events.flush(now);
                }
                Op::Check => {
                    events.flush_all();
                    exact.drain(&events).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    assert_same(&store, &exact.set, "exact consumer");
                    slow.drain(&events).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    assert_same(&store, &slow.set, "lagging consumer");
                }
                Op::Snapshot => {
                    if from_barrier.is_none() {
                        let rx = events.subscribe();
                        let ticket = emitter.snapshot_barrier(store.snapshot_tiers()).unwrap();
                        let snapshot = events.take_snapshot(ticket).expect("ticket is fresh");
                        from_barrier = Some((snapshot, rx));
                    }
                }
            }
        }
        events.flush_all();
        exact.drain(&events).map_err(|e| TestCaseError::fail(e.to_string()))?;
        assert_same(&store, &exact.set, "exact consumer at the end");
        slow.drain(&events).map_err(|e| TestCaseError::fail(e.to_string()))?;
        assert_same(&store, &slow.set, "lagging consumer at the end");
        prop_assert_eq!(exact.resyncs, 0);
        if let Some((snapshot, mut rx)) = from_barrier {
            let mut set = RegisteredSet::from_snapshot(&snapshot);
            while let Ok(batch) = rx.try_recv() {
                match set.apply(&batch) {
                    Err(ReplayError::Duplicate { .. }) => {}
                    other => other.map_err(|e| TestCaseError::fail(e.to_string()))?,
                }
            }
            assert_same(&store, &set, "snapshot barrier plus later batches");
        }
        let stats = events.stats();
        prop_assert_eq!(stats.sink_errors, 0);
        prop_assert_eq!(stats.events_emitted, stats.events_published);
    }
}

#[test]
fn lag_is_reported_and_counted_never_silent() {
    let events = EventsManager::builder()
        .broadcast_capacity(2)
        .batching(BatchingConfig::default().with_max_size(NonZeroUsize::new(1).unwrap()))
        .build();
    let mut rx = events.subscribe();
    let emitter = events.emitter();
    let hashes: Vec<_> = (0..5).map(SequenceHash::root).collect();
    emitter.stored(LogicalLayoutHandle::G1, None, &hashes);
    assert_eq!(events.flush_all(), 5);
    assert_eq!(rx.try_recv(), Err(RecvError::Lagged { missed: 3 }));
    assert_eq!(rx.try_recv().map(|b| b.position.seq), Ok(3));
    assert_eq!(events.stats().broadcast_lagged, 3);
}

#[test]
fn a_sparse_policy_announces_and_withdraws_the_same_blocks() {
    let events = EventsManager::builder()
        .power_of_two(PowerOfTwoPolicy::with_range(2, 8))
        .build();
    let mut rx = events.subscribe();
    let emitter = events.emitter();
    let mut chain = vec![SequenceHash::root(1)];
    while chain.len() < 12 {
        let next = chain[chain.len() - 1].extend(chain.len() as u64);
        chain.push(next);
    }
    emitter.stored(LogicalLayoutHandle::G1, None, &chain);
    emitter.removed(LogicalLayoutHandle::G1, &chain[..5]);
    events.flush_all();
    let mut set = RegisteredSet::new();
    while let Ok(batch) = rx.try_recv() {
        set.apply(&batch).expect("exactly once");
    }
    assert_eq!(set.sorted(LogicalLayoutHandle::G1), {
        let mut kept = vec![chain[8]];
        kept.sort();
        kept
    });
    let stats = events.stats();
    assert_eq!(
        (stats.events_emitted, stats.events_filtered),
        (3 + 2, 9 + 3)
    );
}

/// Threads change one shared set under one lock (as a store's shards do
/// under theirs) and emit under it, while another thread flushes: the
/// buffer's order is the order of the changes, so re-registering a hash
/// right after another thread removed it replays correctly.
#[test]
fn emitting_under_the_store_lock_orders_changes_across_threads() {
    let events = Arc::new(
        EventsManager::builder()
            .broadcast_capacity(1 << 20)
            .batching(BatchingConfig::default().with_max_size(NonZeroUsize::new(7).unwrap()))
            .build(),
    );
    let mut rx = events.subscribe();
    let store = Arc::new(Mutex::new(HashSet::new()));
    let threads = 3;
    let start = Arc::new(Barrier::new(threads + 1));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..threads as u64)
        .map(|t| {
            let (events, store, start) =
                (Arc::clone(&events), Arc::clone(&store), Arc::clone(&start));
            std::thread::spawn(move || {
                let emitter = events.emitter();
                start.wait();
                for i in 0..3000u64 {
                    // Every thread toggles the same 16 hashes.
                    let hash = SequenceHash::root((i * 7 + t) % 16);
                    let mut set = store.lock().unwrap();
                    if set.insert(hash) {
                        emitter.stored(LogicalLayoutHandle::G1, None, &[hash]);
                    } else {
                        set.remove(&hash);
                        emitter.removed(LogicalLayoutHandle::G1, &[hash]);
                    }
                }
            })
        })
        .collect();
    let flusher = {
        let (events, start, done) = (Arc::clone(&events), Arc::clone(&start), Arc::clone(&done));
        std::thread::spawn(move || {
            start.wait();
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                events.try_flush(Instant::now());
                std::thread::yield_now();
            }
        })
    };
    for worker in workers {
        worker.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    flusher.join().unwrap();
    events.flush_all();
    let mut replayed = RegisteredSet::new();
    while let Ok(batch) = rx.try_recv() {
        replayed.apply(&batch).expect("exactly once, in order");
    }
    let mut expected: Vec<_> = store.lock().unwrap().iter().copied().collect();
    expected.sort();
    assert_eq!(replayed.sorted(LogicalLayoutHandle::G1), expected);
}

#[test]
fn a_restart_starts_a_new_epoch_that_the_consumer_follows() {
    let mut set = RegisteredSet::new();
    for (epoch, roots) in [(5u64, [1u64, 2]), (6, [3, 4])] {
        let events = EventsManager::builder().epoch(epoch).build();
        let mut rx = events.subscribe();
        let hashes: Vec<_> = roots.iter().map(|&r| SequenceHash::root(r)).collect();
        events
            .emitter()
            .stored(LogicalLayoutHandle::G1, None, &hashes);
        events.shutdown();
        while let Ok(batch) = rx.try_recv() {
            set.apply(&batch).expect("in order");
        }
    }
    assert_eq!(
        set.sorted(LogicalLayoutHandle::G1),
        vec![SequenceHash::root(3), SequenceHash::root(4)],
        "the old incarnation's blocks are gone"
    );
    let stale = kvblocks::events::KvbmCacheEvents {
        events: kvblocks::events::KvCacheEvents::Clear,
        instance_id: 0,
        tier: LogicalLayoutHandle::G1,
        block_size: 0,
        position: kvblocks::events::StreamPosition { epoch: 5, seq: 9 },
    };
    assert!(matches!(
        set.apply(&stale),
        Err(ReplayError::StaleEpoch { current: 6, .. })
    ));
}
