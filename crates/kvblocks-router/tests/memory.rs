//! Memory is proportional to what is held and returns to its baseline when
//! every block is gone, whichever way they go (removals, clears, restarts,
//! worker removal).

use kvblocks::events::StreamPosition;
use kvblocks::LogicalLayoutHandle::{G1, G2};
use kvblocks_router::{IndexBatch, IndexEvent, Router, WorkerId};

fn batch(worker: u128, events: Vec<IndexEvent>) -> IndexBatch {
    IndexBatch {
        worker: WorkerId(worker),
        position: None,
        events,
    }
}

/// Block `b` is held by the 4 workers `b % 80 .. b % 80 + 4` (80 workers,
/// so the slots span two words).
fn holders(b: u64) -> impl Iterator<Item = u128> {
    (0..4).map(move |i| u128::from((b % 80 + i) % 80))
}

fn fill(router: &Router, blocks: u64) {
    for worker in 0..80u128 {
        let keys: Vec<u64> = (0..blocks)
            .filter(|&b| holders(b).any(|w| w == worker))
            .map(|b| b * 0x9e37_79b9 + 1)
            .collect();
        let tier = if worker % 2 == 0 { G1 } else { G2 };
        router
            .apply(&batch(
                worker,
                vec![IndexEvent::Stored {
                    tier,
                    parent: None,
                    blocks: keys,
                }],
            ))
            .unwrap();
    }
}

#[test]
fn memory_returns_to_its_baseline_after_every_kind_of_removal() {
    let router = Router::new();
    fill(&router, 80);
    let mut baseline = None;
    for round in 0..4 {
        // Empty the index.
        for worker in 0..80u128 {
            let tier = if worker % 2 == 0 { G1 } else { G2 };
            let keys: Vec<u64> = (0..80)
                .filter(|&b| holders(b).any(|w| w == worker))
                .map(|b| b * 0x9e37_79b9 + 1)
                .collect();
            router
                .apply(&batch(
                    worker,
                    vec![IndexEvent::Removed { tier, blocks: keys }],
                ))
                .unwrap();
        }
        assert_eq!(router.metrics().held_pairs, 0);
        let empty = router.memory_bytes();
        assert_eq!(*baseline.get_or_insert(empty), empty, "round {round}");
        fill(&router, 100_000);
        let full = router.metrics();
        assert_eq!(full.held_pairs, 400_000);
        let per_pair = (full.memory_bytes - empty) as f64 / full.held_pairs as f64;
        println!(
            "round {round}: {} bytes for {} pairs = {per_pair:.1} bytes per (block, worker)",
            full.memory_bytes - empty,
            full.held_pairs
        );
        // Word 0 entry (16 B at a load between 5/16 and 5/8) plus word 1 entries.
        assert!(per_pair < 40.0, "{per_pair} bytes per pair");
        match round {
            0 => {
                for worker in 0..80u128 {
                    router
                        .apply(&batch(worker, vec![IndexEvent::Cleared { tier: None }]))
                        .unwrap();
                }
            }
            1 => {
                for worker in 0..80u128 {
                    router.remove_worker(WorkerId(worker)).unwrap();
                }
                assert_eq!(router.memory_bytes(), router.metrics().memory_bytes);
                // Back to the baseline's shape: every worker known, nothing held.
                fill(&router, 80);
                continue;
            }
            2 => {
                // Every worker's stream at epoch 1, then each restarts (epoch 2).
                for epoch in [1, 2] {
                    for worker in 0..80u128 {
                        let hello = IndexBatch {
                            worker: WorkerId(worker),
                            position: Some(StreamPosition { epoch, seq: 0 }),
                            events: vec![],
                        };
                        router.apply(&hello).unwrap();
                    }
                }
                assert_eq!(router.metrics().counters.epoch_changes, 80);
            }
            _ => {}
        }
        fill(&router, 80);
    }
}
