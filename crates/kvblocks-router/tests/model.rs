//! The router against a plain model: simulated workers (a set per tier)
//! publish through real events managers; batches reach the router in order,
//! or are lost, duplicated, or cut off by a worker's restart or removal; the
//! router recovers from gaps with snapshots. After every delivery, its
//! overlap scores must be exactly what the workers' sets give.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;

use kvblocks::events::{BatchingConfig, BroadcastReceiver, EventsManager, RecvError};
use kvblocks::{LogicalLayoutHandle, SequenceHash};
use kvblocks_router::{ApplyError, ApplyOutcome, IndexBatch, Router, WorkerId};
use proptest::prelude::*;

const TIERS: [LogicalLayoutHandle; 2] = [LogicalLayoutHandle::G1, LogicalLayoutHandle::G2];

fn chain(root: u64, len: usize) -> Vec<SequenceHash> {
    let mut hashes = vec![SequenceHash::root(root)];
    while hashes.len() < len {
        let next = hashes[hashes.len() - 1].extend(root * 1000 + hashes.len() as u64);
        hashes.push(next);
    }
    hashes
}

struct Worker {
    id: u128,
    epoch: u64,
    events: EventsManager,
    rx: BroadcastReceiver,
    sets: [BTreeSet<SequenceHash>; 2],
}

impl Worker {
    fn start(id: u128, epoch: u64, max_batch: usize, mixed: bool) -> Self {
        let events = EventsManager::builder()
            .instance_id(id)
            .block_size(16)
            .epoch(epoch)
            .track_registered(true)
            .broadcast_capacity(1 << 16)
            .batching(
                BatchingConfig::default()
                    .with_max_size(NonZeroUsize::new(max_batch).unwrap())
                    .with_mixed_kinds(mixed),
            )
            .build();
        let rx = events.subscribe();
        Self {
            id,
            epoch,
            events,
            rx,
            sets: Default::default(),
        }
    }

    fn register(&mut self, tier: usize, root: u64, len: usize) {
        let fresh: Vec<_> = chain(root, len)
            .into_iter()
            .filter(|h| self.sets[tier].insert(*h))
            .collect();
        self.events.emitter().stored(TIERS[tier], None, &fresh);
    }

    fn evict(&mut self, tier: usize, stride: usize) {
        let victims: Vec<_> = self.sets[tier].iter().copied().step_by(stride).collect();
        for victim in &victims {
            self.sets[tier].remove(victim);
        }
        self.events.emitter().removed(TIERS[tier], &victims);
    }

    fn clear(&mut self, tier: usize) {
        self.sets[tier].clear();
        self.events.emitter().cleared(TIERS[tier]);
    }

    /// Flushes and feeds the router: `lose` drops the n-th batch (never the
    /// last: a loss is only detectable by what follows it), `repeat`
    /// delivers it twice. Gaps are closed with a snapshot. Returns whether
    /// the router knows the worker afterwards.
    fn deliver(
        &mut self,
        router: &Router,
        lose: Option<usize>,
        repeat: Option<usize>,
    ) -> Result<bool, TestCaseError> {
        self.events.flush_all();
        let mut batches = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(batch) => batches.push(batch),
                Err(RecvError::Empty) => break,
                Err(other) => return Err(TestCaseError::fail(format!("receiver: {other}"))),
            }
        }
        let count = batches.len();
        for (n, batch) in batches.into_iter().enumerate() {
            if lose == Some(n) && n + 1 < count {
                continue;
            }
            let index_batch = IndexBatch::from_kvblocks(&batch);
            let times = if repeat == Some(n) { 2 } else { 1 };
            for time in 0..times {
                match router.apply(&index_batch) {
                    Ok(ApplyOutcome::Applied) => prop_assert_eq!(time, 0),
                    Ok(ApplyOutcome::Duplicate) => {}
                    Err(ApplyError::Gap { expected, got, .. }) => {
                        prop_assert!(got > expected);
                        let snapshot = self.events.snapshot().expect("tracked");
                        router
                            .apply_snapshot(&snapshot)
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    }
                    Err(other) => return Err(TestCaseError::fail(other.to_string())),
                }
            }
        }
        Ok(router.worker_status(WorkerId(self.id)).is_some())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        worker: usize,
        tier: usize,
        root: u64,
        len: usize,
    },
    Evict {
        worker: usize,
        tier: usize,
        stride: usize,
    },
    Clear {
        worker: usize,
        tier: usize,
    },
    Deliver {
        worker: usize,
        lose: Option<usize>,
        repeat: Option<usize>,
    },
    Restart {
        worker: usize,
    },
    Remove {
        worker: usize,
    },
    Query {
        root: u64,
        len: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let worker = 0..3usize;
    prop_oneof![
        6 => (worker.clone(), 0..2usize, 0..8u64, 1..12usize).prop_map(|(worker, tier, root, len)| Op::Register { worker, tier, root, len }),
        2 => (worker.clone(), 0..2usize, 1..4usize).prop_map(|(worker, tier, stride)| Op::Evict { worker, tier, stride }),
        1 => (worker.clone(), 0..2usize).prop_map(|(worker, tier)| Op::Clear { worker, tier }),
        5 => (worker.clone(), proptest::option::weighted(0.2, 1..4usize), proptest::option::weighted(0.2, 1..4usize))
            .prop_map(|(worker, lose, repeat)| Op::Deliver { worker, lose, repeat }),
        1 => worker.clone().prop_map(|worker| Op::Restart { worker }),
        1 => worker.prop_map(|worker| Op::Remove { worker }),
        4 => (0..8u64, 1..14usize).prop_map(|(root, len)| Op::Query { root, len }),
    ]
}

/// What the router should show: each worker's sets as of its last delivery.
type Expected = BTreeMap<u128, [BTreeSet<SequenceHash>; 2]>;

fn check_query(
    router: &Router,
    expected: &Expected,
    hashes: &[SequenceHash],
) -> Result<(), TestCaseError> {
    let scores = router.overlap_scores(hashes);
    let mut want = Vec::new();
    for (&id, sets) in expected {
        for (tier, set) in sets.iter().enumerate() {
            let held = hashes.iter().take_while(|h| set.contains(h)).count() as u32;
            if held > 0 {
                want.push((WorkerId(id), TIERS[tier], held));
            }
        }
    }
    let mut got: Vec<_> = scores
        .scores
        .iter()
        .filter(|s| s.worker.0 < 1000)
        .map(|s| (s.worker, s.tier, s.blocks))
        .collect();
    got.sort();
    want.sort();
    prop_assert_eq!(got, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn overlap_scores_match_the_workers_sets_through_loss_restarts_and_removals(
        ops in proptest::collection::vec(op(), 1..60),
        max_batch in 1..6usize,
        mixed in any::<bool>(),
        pad_past_64_slots in any::<bool>(),
    ) {
        let router = Router::with_apply_slice(3);
        if pad_past_64_slots {
            // 62 bystanders take slots 0..62, so the workers' slots straddle word 0 and 1.
            for id in 1000..1062u128 {
                let batch = IndexBatch {
                    worker: WorkerId(id),
                    position: None,
                    events: vec![kvblocks_router::IndexEvent::Stored {
                        tier: LogicalLayoutHandle::G1,
                        parent: None,
                        blocks: vec![id as u64],
                    }],
                };
                router.apply(&batch).unwrap();
            }
        }
        let mut workers: Vec<Worker> = (0..3).map(|w| Worker::start(w as u128 + 1, 1, max_batch, mixed)).collect();
        let mut expected = Expected::new();
        for op in &ops {
            match *op {
                Op::Register { worker, tier, root, len } => workers[worker].register(tier, root, len),
                Op::Evict { worker, tier, stride } => workers[worker].evict(tier, stride),
                Op::Clear { worker, tier } => workers[worker].clear(tier),
                Op::Deliver { worker, lose, repeat } => {
                    let w = &mut workers[worker];
                    if w.deliver(&router, lose, repeat)? {
                        expected.insert(w.id, w.sets.clone());
                    }
                }
                Op::Restart { worker } => {
                    let (id, epoch) = (workers[worker].id, workers[worker].epoch);
                    workers[worker] = Worker::start(id, epoch + 1, max_batch, mixed);
                    // The new incarnation says hello, so the router learns of the restart.
                    workers[worker].clear(0);
                }
                Op::Remove { worker } => {
                    let id = workers[worker].id;
                    match router.remove_worker(WorkerId(id)) {
                        Ok(_) => {}
                        Err(ApplyError::UnknownWorker(_)) => prop_assert!(!expected.contains_key(&id)),
                        Err(other) => return Err(TestCaseError::fail(other.to_string())),
                    }
                    expected.remove(&id);
                }
                Op::Query { root, len } => check_query(&router, &expected, &chain(root, len))?,
            }
        }
        for w in &mut workers {
            if !w.deliver(&router, None, None)? {
                // Removed and silent since: only a snapshot reintroduces it.
                router.apply_snapshot(&w.events.snapshot().expect("tracked")).unwrap();
            }
            expected.insert(w.id, w.sets.clone());
        }
        for root in 0..8 {
            check_query(&router, &expected, &chain(root, 14))?;
        }
        let metrics = router.metrics();
        let pairs: usize = expected.values().flat_map(|sets| sets.iter().map(BTreeSet::len)).sum();
        let bystanders = if pad_past_64_slots { 62 } else { 0 };
        prop_assert_eq!(metrics.held_pairs, (pairs + bystanders) as u64);
        for w in &workers {
            let status = router.worker_status(WorkerId(w.id)).expect("delivered");
            prop_assert!(!status.in_gap);
            prop_assert_eq!(status.next.map(|p| p.epoch), Some(w.epoch));
            prop_assert_eq!(status.blocks[0] as usize, w.sets[0].len());
            prop_assert_eq!(status.blocks[1] as usize, w.sets[1].len());
        }
    }
}

#[test]
fn ties_go_to_the_least_loaded_worker() {
    let router = Router::new();
    let prompt = chain(5, 4);
    for id in [1u128, 2, 3] {
        let events = EventsManager::builder().instance_id(id).epoch(1).build();
        let mut rx = events.subscribe();
        events.emitter().stored(
            LogicalLayoutHandle::G1,
            None,
            &prompt[..if id == 3 { 1 } else { 4 }],
        );
        events.flush_all();
        router
            .apply(&IndexBatch::from_kvblocks(&rx.try_recv().unwrap()))
            .unwrap();
    }
    router.set_load(WorkerId(1), 10);
    router.set_load(WorkerId(2), 3);
    let best = router.best_worker(&prompt).unwrap();
    assert_eq!(
        (best.worker, best.overlap_blocks, best.load),
        (WorkerId(2), 4, 3)
    );
    router.add_load(WorkerId(2), 20);
    assert_eq!(router.best_worker(&prompt).unwrap().worker, WorkerId(1));
    router.set_load(WorkerId(3), 1);
    router.add_worker(WorkerId(9));
    assert_eq!(
        router
            .best_worker(&chain(77, 3))
            .map(|b| (b.worker, b.overlap_blocks)),
        Some((WorkerId(9), 0)),
        "with no overlap anywhere, the idle worker wins"
    );
}
