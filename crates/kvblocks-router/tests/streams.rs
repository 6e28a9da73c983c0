//! Bad and foreign input: gaps, duplicates, stale epochs, late joiners,
//! stale snapshots, unknown workers and tiers, orphans, and batches in every
//! encoding the router reads. Each is a typed error or a counted recovery,
//! and the index stays exact.

use kvblocks::events::{StreamPosition, TierSnapshot, WorkerSnapshot};
use kvblocks::{
    LogicalLayoutHandle::{self, G1, G2},
    SequenceHash,
};
use kvblocks_router::{ApplyError, ApplyOutcome, IndexBatch, IndexEvent, Router, WorkerId};
use kvblocks_wire::{dynamo, kvbm, vllm};

const W: WorkerId = WorkerId(7);

fn at(epoch: u64, seq: u64) -> Option<StreamPosition> {
    Some(StreamPosition { epoch, seq })
}

fn stored(
    position: Option<StreamPosition>,
    tier: LogicalLayoutHandle,
    parent: Option<u64>,
    blocks: &[u64],
) -> IndexBatch {
    IndexBatch {
        worker: W,
        position,
        events: vec![IndexEvent::Stored {
            tier,
            parent,
            blocks: blocks.to_vec(),
        }],
    }
}

fn removed(position: Option<StreamPosition>, blocks: &[u64]) -> IndexBatch {
    IndexBatch {
        worker: W,
        position,
        events: vec![IndexEvent::Removed {
            tier: G1,
            blocks: blocks.to_vec(),
        }],
    }
}

#[test]
fn a_gap_is_refused_until_replayed_and_counted_once() {
    let router = Router::new();
    assert_eq!(
        router.apply(&stored(at(1, 0), G1, None, &[1])),
        Ok(ApplyOutcome::Applied)
    );
    let gap = router.apply(&stored(at(1, 2), G1, Some(2), &[3]));
    assert_eq!(
        gap,
        Err(ApplyError::Gap {
            worker: W,
            expected: at(1, 1).unwrap(),
            got: at(1, 2).unwrap()
        })
    );
    assert!(
        router.apply(&stored(at(1, 3), G1, Some(3), &[4])).is_err(),
        "still missing batch 1"
    );
    assert!(
        !router.holds(W, G1, 3) && !router.holds(W, G1, 4),
        "refused batches change nothing"
    );
    assert!(router.worker_status(W).unwrap().in_gap);
    // The replay arrives.
    for (seq, key) in [(1, 2u64), (2, 3), (3, 4)] {
        assert_eq!(
            router.apply(&stored(at(1, seq), G1, Some(key - 1), &[key])),
            Ok(ApplyOutcome::Applied)
        );
    }
    assert!(!router.worker_status(W).unwrap().in_gap);
    let counters = router.metrics().counters;
    assert_eq!(
        (
            counters.gaps,
            counters.refused_batches,
            counters.orphan_stores
        ),
        (1, 2, 0)
    );
}

#[test]
fn duplicates_are_ignored_and_counted() {
    let router = Router::new();
    router.apply(&stored(at(1, 0), G1, None, &[1])).unwrap();
    router.apply(&removed(at(1, 1), &[1])).unwrap();
    assert_eq!(
        router.apply(&stored(at(1, 0), G1, None, &[1])),
        Ok(ApplyOutcome::Duplicate)
    );
    assert!(
        !router.holds(W, G1, 1),
        "a replayed store must not resurrect a removed block"
    );
    assert_eq!(router.metrics().counters.duplicates, 1);
}

#[test]
fn a_new_epoch_drops_the_old_incarnation_and_an_old_one_is_refused() {
    let router = Router::new();
    router.apply(&stored(at(1, 0), G1, None, &[1, 2])).unwrap();
    router.apply(&stored(at(1, 1), G2, None, &[9])).unwrap();
    assert_eq!(
        router.apply(&stored(at(2, 0), G1, None, &[5])),
        Ok(ApplyOutcome::Applied)
    );
    assert!(!router.holds(W, G1, 1) && !router.holds(W, G2, 9));
    assert!(router.holds(W, G1, 5));
    assert_eq!(
        router.apply(&removed(at(1, 2), &[5])),
        Err(ApplyError::StaleEpoch {
            worker: W,
            current: 2,
            got: at(1, 2).unwrap()
        })
    );
    assert!(router.holds(W, G1, 5));
    // A restart whose first batches were lost: old blocks still go, then a gap.
    assert!(matches!(
        router.apply(&stored(at(3, 4), G1, None, &[6])),
        Err(ApplyError::Gap { .. })
    ));
    assert!(!router.holds(W, G1, 5));
    let counters = router.metrics().counters;
    assert_eq!((counters.epoch_changes, counters.stale_epochs), (2, 1));
}

#[test]
fn a_late_joiner_needs_a_snapshot_and_stale_snapshots_are_refused() {
    let router = Router::new();
    let expected_start = StreamPosition { epoch: 4, seq: 0 };
    assert_eq!(
        router.apply(&stored(at(4, 10), G1, None, &[1])),
        Err(ApplyError::Gap {
            worker: W,
            expected: expected_start,
            got: at(4, 10).unwrap()
        })
    );
    let snapshot = |seq, hashes: Vec<SequenceHash>| WorkerSnapshot {
        instance_id: W.0,
        block_size: 16,
        position: StreamPosition { epoch: 4, seq },
        tiers: vec![TierSnapshot { tier: G2, hashes }],
    };
    let a = SequenceHash::root(40);
    router.apply_snapshot(&snapshot(11, vec![a])).unwrap();
    assert!(router.holds(W, G2, a.current_sequence_hash()));
    assert_eq!(
        router.apply(&stored(at(4, 10), G1, None, &[1])),
        Ok(ApplyOutcome::Duplicate)
    );
    assert_eq!(
        router.apply(&stored(at(4, 11), G1, None, &[2])),
        Ok(ApplyOutcome::Applied)
    );
    assert!(matches!(
        router.apply_snapshot(&snapshot(5, vec![])),
        Err(ApplyError::StaleSnapshot { .. })
    ));
    assert!(router.holds(W, G1, 2), "a stale snapshot changes nothing");
}

#[test]
fn orphans_are_kept_and_counted_and_unknown_removals_counted() {
    let router = Router::new();
    router
        .apply(&stored(None, G1, Some(99), &[10, 11]))
        .unwrap();
    assert!(
        router.holds(W, G1, 10) && router.holds(W, G1, 11),
        "children of a missing parent stay"
    );
    router.apply(&removed(None, &[12])).unwrap();
    router
        .apply(&IndexBatch {
            worker: WorkerId(8),
            position: None,
            events: vec![IndexEvent::Removed {
                tier: G2,
                blocks: vec![1],
            }],
        })
        .unwrap();
    let counters = router.metrics().counters;
    assert_eq!(
        (
            counters.orphan_stores,
            counters.unknown_removes,
            counters.unsequenced_batches
        ),
        (1, 2, 3)
    );
    assert_eq!(
        router.remove_worker(WorkerId(99)),
        Err(ApplyError::UnknownWorker(WorkerId(99)))
    );
    assert_eq!(router.remove_worker(W), Ok(2));
    assert!(!router.holds(W, G1, 10));
}

#[test]
fn every_encoding_feeds_the_same_index() {
    let root = SequenceHash::root(1);
    let chain = [root, root.extend(2), root.extend(2).extend(3)];
    let keys: Vec<u64> = chain.iter().map(|h| h.current_sequence_hash()).collect();
    let events = kvblocks::events::EventsManager::builder()
        .instance_id(3)
        .block_size(16)
        .epoch(1)
        .build();
    let mut rx = events.subscribe();
    events.emitter().stored(G1, None, &chain);
    events.flush_all();
    let batch = rx.try_recv().unwrap();

    // kvbm-logical's own frame (unsequenced) and our extended one (sequenced).
    let compat = kvbm::decode(&kvbm::encode(&batch, kvbm::KvbmEncoding::Compat).unwrap()).unwrap();
    let extended =
        kvbm::decode(&kvbm::encode(&batch, kvbm::KvbmEncoding::Extended).unwrap()).unwrap();
    // vLLM map style, and Dynamo JSON.
    let vllm_batch = vllm::decode(&vllm::encode(
        &vllm::from_kvblocks(&batch, 0.0),
        vllm::VllmStyle::Map,
    ))
    .unwrap();
    let mut event_id = 0;
    let dynamo_events = dynamo::from_kvblocks(
        &batch,
        3,
        0,
        &mut event_id,
        dynamo::sequence_hash_as_tokens_hash,
    );
    let dynamo_event = dynamo::decode(&dynamo::encode(&dynamo_events[0])).unwrap();

    for (name, index_batch) in [
        ("kvbm compat", IndexBatch::from_kvbm_frame(&compat)),
        ("kvbm extended", IndexBatch::from_kvbm_frame(&extended)),
        (
            "vllm",
            IndexBatch::from_vllm(WorkerId(3), at(1, 0), &vllm_batch).unwrap(),
        ),
        ("dynamo", IndexBatch::from_dynamo(&dynamo_event, Some(1))),
    ] {
        let router = Router::new();
        router
            .apply(&index_batch)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let scores = router.overlap_scores_keys(&keys);
        assert_eq!(scores.scores.len(), 1, "{name}");
        assert_eq!(
            (scores.scores[0].tier, scores.scores[0].blocks),
            (G1, 3),
            "{name}"
        );
        assert_eq!(router.metrics().counters.orphan_stores, 0, "{name}");
    }
}

#[test]
fn a_medium_with_no_tier_is_a_typed_error() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kvblocks-wire/tests/fixtures/vllm_map.msgpack"
    ))
    .unwrap();
    let mut batch = vllm::decode(&bytes).unwrap();
    assert!(IndexBatch::from_vllm(W, None, &batch).is_ok());
    if let vllm::VllmEvent::BlockRemoved(removed) = &mut batch.events[2] {
        removed.medium = Some("TAPE".into());
    }
    assert_eq!(
        IndexBatch::from_vllm(W, None, &batch).map(|_| ()),
        Err(kvblocks_router::UnknownMedium("TAPE".into()))
    );
}
