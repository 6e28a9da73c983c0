//! When the managers touch the registry's frequency tracker: once per block a
//! match returns, once per new registration (not for an offload copy, a
//! duplicate or a deduplicated registration), and never without a tracker.
//! Counted exactly with a metering tracker, as a sketch would hide a double
//! count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kvblocks::frequency::{FrequencyTracker, FrequencyTrackingCapacity};
use kvblocks::{BlockDuplicationPolicy, BlockManager, BlockRegistry, SequenceHash};

mod common;
use common::{chain, register};

#[derive(Clone)]
struct G1;
#[derive(Clone)]
struct G2;

/// Counts every touch per key, exactly.
#[derive(Default)]
struct Metered(Mutex<HashMap<u128, u32>>);

impl FrequencyTracker<u128> for Metered {
    fn touch(&self, key: u128) {
        *self.0.lock().unwrap().entry(key).or_default() += 1;
    }
    fn count(&self, key: u128) -> u32 {
        self.0.lock().unwrap().get(&key).copied().unwrap_or(0)
    }
}

impl Metered {
    fn counts(&self, hashes: &[SequenceHash]) -> Vec<u32> {
        hashes.iter().map(|h| self.count(h.as_u128())).collect()
    }
}

fn tier<T: kvblocks::BlockMetadata>(registry: &BlockRegistry, blocks: usize) -> BlockManager<T> {
    BlockManager::<T>::builder()
        .block_count(blocks)
        .block_size(4)
        .registry(registry.clone())
        .duplication_policy(BlockDuplicationPolicy::Allow)
        .build()
        .unwrap()
}

fn metered_registry() -> (Arc<Metered>, BlockRegistry) {
    let metered = Arc::new(Metered::default());
    let registry = BlockRegistry::builder()
        .frequency_tracker(metered.clone())
        .build();
    (metered, registry)
}

#[test]
fn a_new_registration_is_one_use_and_a_copy_in_another_tier_is_none() {
    let (metered, registry) = metered_registry();
    let (g1, g2) = (tier::<G1>(&registry, 8), tier::<G2>(&registry, 8));
    let hashes = chain(3, 1);

    let in_g1 = register(&g1, &hashes);
    assert_eq!(metered.counts(&hashes), [1, 1, 1]);

    // Offload: G1 still holds the blocks, so G2's registration is no new use.
    let in_g2 = register(&g2, &hashes);
    assert_eq!(metered.counts(&hashes), [1, 1, 1]);

    // A duplicate copy in G1 (Allow) and a single registration of it.
    let dup = register(&g1, &hashes[..1]);
    let staged = g1.allocate_blocks(1).unwrap().pop().unwrap();
    let single = g1.register_block(staged.stage(hashes[1], 4).unwrap());
    assert_eq!(metered.counts(&hashes), [1, 1, 1]);
    drop((dup, single, in_g2));

    // Gone from every tier: registering again is a new use.
    drop(in_g1);
    g1.reset_inactive_pool().unwrap();
    g2.reset_inactive_pool().unwrap();
    let again = g1.register_block(
        g1.allocate_blocks(1)
            .unwrap()
            .pop()
            .unwrap()
            .stage(hashes[0], 4)
            .unwrap(),
    );
    assert_eq!(metered.counts(&hashes), [2, 1, 1]);
    drop(again);
}

#[test]
fn every_returned_block_of_a_match_is_one_use() {
    let (metered, registry) = metered_registry();
    let g1 = tier::<G1>(&registry, 8);
    let hashes = chain(4, 2);
    let held = register(&g1, &hashes[..3]);
    let base = metered.counts(&hashes);
    assert_eq!(base, [1, 1, 1, 0]);

    // Active hits, then hits resurrected from the cache.
    let hits = g1.match_blocks(&hashes);
    assert_eq!(hits.len(), 3);
    drop((held, hits));
    let hits = g1.match_blocks(&hashes[..2]);
    assert_eq!(metered.counts(&hashes), [3, 3, 2, 0]);
    drop(hits);

    // Scattered: the miss in the middle is no use, the hit after it is.
    let probe = [hashes[3], hashes[2], hashes[0]];
    let scattered = g1.match_blocks_scattered(&probe);
    assert_eq!(scattered.iter().filter(|b| b.is_some()).count(), 2);
    assert_eq!(metered.counts(&hashes), [4, 3, 3, 0]);
    drop(scattered);

    // A scan counts only when asked to, once per distinct hash.
    drop(g1.scan_matches(&[hashes[1], hashes[1], hashes[3]], false));
    assert_eq!(metered.counts(&hashes), [4, 3, 3, 0]);
    drop(g1.scan_matches(&[hashes[1], hashes[1], hashes[3]], true));
    assert_eq!(metered.counts(&hashes), [4, 4, 3, 0]);

    // The registry's own lookup, and a direct touch.
    assert!(registry.match_sequence_hash(hashes[2], false).is_some());
    assert!(registry.match_sequence_hash(hashes[2], true).is_some());
    assert!(registry.match_sequence_hash(hashes[3], true).is_none());
    registry.touch(hashes[3]);
    assert_eq!(metered.counts(&hashes), [4, 4, 4, 1]);
    assert_eq!(registry.count(hashes[0]), 4);
}

#[test]
fn a_registry_without_a_tracker_counts_nothing() {
    let registry = BlockRegistry::new();
    assert!(!registry.has_frequency_tracking());
    assert!(registry.frequency_tracker().is_none());
    let g1 = tier::<G1>(&registry, 4);
    let hashes = chain(2, 3);
    let held = register(&g1, &hashes);
    assert_eq!(g1.match_blocks(&hashes).len(), 2);
    registry.touch(hashes[0]);
    assert_eq!(registry.count(hashes[0]), 0);
    drop(held);
}

#[test]
fn a_preset_tracker_counts_uses_through_the_registry() {
    let tracker = FrequencyTrackingCapacity::Small.create_tracker();
    let registry = BlockRegistry::builder()
        .frequency_tracker(tracker.clone())
        .build();
    assert!(registry.has_frequency_tracking());
    let g1 = tier::<G1>(&registry, 8);
    let hashes = chain(3, 4);
    drop(register(&g1, &hashes));
    for _ in 0..4 {
        drop(g1.match_blocks(&hashes[..2]));
    }
    assert_eq!(
        hashes
            .iter()
            .map(|h| registry.count(*h))
            .collect::<Vec<_>>(),
        [5, 5, 1]
    );
    assert_eq!(tracker.count(hashes[0].as_u128()), 5);
}

fn tracked_registry() -> BlockRegistry {
    BlockRegistry::builder()
        .frequency_tracker(Arc::new(kvblocks::frequency::TinyLFUTracker::<u128>::new(
            4096,
        )))
        .build()
}

#[test]
fn bad_multi_lru_configurations_are_typed_errors_that_leave_the_registry_unchanged() {
    use kvblocks::policy::ThresholdError;
    use kvblocks::registry::PresenceError;
    use kvblocks::BuildError;

    let build = |registry: &BlockRegistry, t: Option<[u8; 3]>| {
        let builder = BlockManager::<G1>::builder()
            .block_count(8)
            .block_size(4)
            .registry(registry.clone());
        match t {
            Some([a, b, c]) => builder.with_multi_lru_backend_custom_thresholds(a, b, c),
            None => builder.with_multi_lru_backend(),
        }
        .build()
        .map(|_| ())
    };
    let untracked = BlockRegistry::new();
    assert_eq!(
        build(&untracked, None),
        Err(BuildError::MultiLruWithoutFrequencyTracker)
    );
    let registry = tracked_registry();
    let cases = [
        (
            [3, 3, 9],
            ThresholdError::NotIncreasing {
                thresholds: [3, 3, 9],
            },
        ),
        (
            [9, 3, 12],
            ThresholdError::NotIncreasing {
                thresholds: [9, 3, 12],
            },
        ),
        ([0, 3, 9], ThresholdError::ColdIsZero),
        ([2, 8, 16], ThresholdError::AboveMax { threshold: 16 }),
    ];
    for (thresholds, expected) in cases {
        assert_eq!(
            build(&registry, Some(thresholds)),
            Err(BuildError::MultiLruThresholds(expected))
        );
    }
    // No manager was built: the registry knows no tier.
    for r in [&untracked, &registry] {
        assert_eq!(
            r.try_check_presence::<G1>(&chain(1, 9)),
            Err(PresenceError::TierNotBuilt {
                type_name: std::any::type_name::<G1>()
            })
        );
    }
    assert_eq!(build(&registry, Some([1, 2, 15])), Ok(()));
    assert_eq!(build(&registry, None), Ok(()));
}

#[test]
fn the_frequency_tiered_backend_keeps_often_matched_blocks_over_recent_ones() {
    let registry = tracked_registry();
    let g1 = BlockManager::<G1>::builder()
        .block_count(4)
        .block_size(4)
        .registry(registry.clone())
        .with_multi_lru_backend()
        .build()
        .unwrap();
    assert_eq!(g1.eviction_policy_name(), "multi-lru");
    let hot = chain(1, 10);
    drop(register(&g1, &hot));
    for _ in 0..4 {
        drop(g1.match_blocks(&hot)); // 5 uses: warm
    }
    // Three cold blocks released after the hot one fill the pool.
    let cold = chain(3, 11);
    drop(register(&g1, &cold));
    // Two new blocks evict the two oldest cold ones, not the hot block
    // (LRU would have evicted the hot block first).
    let (fresh, evicted) = g1.allocate_blocks_with_evictions(2).unwrap();
    assert_eq!(evicted, cold[..2]);
    assert!(g1.contains(hot[0]));
    drop(fresh);
    g1.check_invariants().unwrap();
}
