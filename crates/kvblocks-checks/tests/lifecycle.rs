//! Behaviour of the block lifecycle through the public API, one behaviour per test.

use kvblocks::manager::MAX_POOL_SHARDS;
use kvblocks::{
    BlockDuplicationPolicy, BlockError, BlockManager, BuildError, EvictionPolicyKind,
    RegisterError, SequenceHash,
};

#[derive(Clone)]
struct Gpu;

fn manager(blocks: usize) -> BlockManager<Gpu> {
    BlockManager::builder()
        .block_count(blocks)
        .block_size(4)
        .build()
        .expect("valid configuration")
}

fn chain(len: usize, seed: u64) -> Vec<SequenceHash> {
    let mut hashes = vec![SequenceHash::root(seed)];
    while hashes.len() < len {
        let next = hashes[hashes.len() - 1].extend(seed.wrapping_mul(31) + hashes.len() as u64);
        hashes.push(next);
    }
    hashes
}

fn register_chain(
    m: &BlockManager<Gpu>,
    hashes: &[SequenceHash],
) -> Vec<kvblocks::ImmutableBlock<Gpu>> {
    let blocks = m.allocate_blocks(hashes.len()).expect("room for the chain");
    let staged = blocks
        .into_iter()
        .zip(hashes)
        .map(|(b, h)| b.stage(*h, 4).expect("right size"))
        .collect();
    m.register_blocks(staged)
}

#[test]
fn dropping_last_clone_moves_block_to_inactive() {
    let m = manager(4);
    let held = register_chain(&m, &chain(1, 1));
    let extra = held[0].clone();
    assert_eq!(m.metrics().inflight_immutable, 1);
    drop(held);
    assert_eq!(m.metrics().inactive_pool_size, 0, "a clone still pins it");
    drop(extra);
    let metrics = m.metrics();
    assert_eq!(
        (metrics.inactive_pool_size, metrics.inflight_immutable),
        (1, 0)
    );
    assert_eq!(m.available_blocks(), 4);
    m.check_invariants().unwrap();
}

#[test]
fn match_returns_longest_prefix_and_stops_at_first_miss() {
    let m = manager(8);
    let hashes = chain(4, 2);
    let held = register_chain(&m, &[hashes[0], hashes[1], hashes[3]]);
    let hits = m.match_blocks(&hashes);
    assert_eq!(
        hits.iter().map(|b| b.sequence_hash()).collect::<Vec<_>>(),
        vec![hashes[0], hashes[1]]
    );
    let metrics = m.metrics();
    assert_eq!(
        (
            metrics.match_hashes_requested,
            metrics.match_blocks_returned
        ),
        (4, 2)
    );
    drop((held, hits));
    m.check_invariants().unwrap();
}

#[test]
fn scan_finds_blocks_past_a_miss() {
    let m = manager(8);
    let hashes = chain(4, 3);
    let _held = register_chain(&m, &[hashes[0], hashes[3]]);
    let found = m.scan_matches(&hashes, true);
    assert_eq!(found.len(), 2);
    assert!(found.contains_key(&hashes[3]));
    let scattered = m.match_blocks_scattered(&hashes);
    assert_eq!(
        scattered.iter().map(Option::is_some).collect::<Vec<_>>(),
        [true, false, false, true]
    );
}

#[test]
fn allocation_is_all_or_nothing() {
    let m = manager(4);
    let held = m.allocate_blocks(3).unwrap();
    assert!(m.allocate_blocks(2).is_none());
    assert_eq!(
        m.available_blocks(),
        1,
        "a refused allocation takes nothing"
    );
    assert!(m.allocate_blocks(usize::MAX).is_none());
    drop(held);
    assert_eq!(m.allocate_blocks(4).map(|v| v.len()), Some(4));
}

#[test]
fn allocation_evicts_inactive_blocks_and_reports_them() {
    let m = manager(2);
    let hashes = chain(2, 4);
    drop(register_chain(&m, &hashes));
    let (blocks, evicted) = m.allocate_blocks_with_evictions(1).unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(
        evicted,
        vec![hashes[0]],
        "LRU: the first released goes first"
    );
    assert_eq!(m.metrics().evictions, 1);
    assert!(!m.contains(hashes[0]));
    assert!(m.contains(hashes[1]));
}

#[test]
fn allocate_block_takes_free_slots_first_then_evicts_and_forgets_the_victim() {
    let m = manager(3);
    let hashes = chain(2, 9);
    drop(register_chain(&m, &hashes));
    let free = m.allocate_block().expect("one free slot");
    assert_eq!(m.metrics().evictions, 0, "the free slot goes first");
    let evicted = m.allocate_block().expect("an inactive block to evict");
    assert_eq!(m.metrics().evictions, 1);
    assert!(!m.contains(hashes[0]), "LRU: the first released goes first");
    assert!(m.contains(hashes[1]));
    assert_ne!(free.block_id(), evicted.block_id());
    let last = m.allocate_block().expect("the last inactive block");
    assert!(m.allocate_block().is_none(), "nothing left: None");
    assert_eq!(m.available_blocks(), 0);
    drop((free, evicted, last));
    assert_eq!(m.available_blocks(), 3, "unregistered blocks go back");
}

#[test]
fn lineage_policy_evicts_the_leaf_before_its_older_parent() {
    let m = BlockManager::<Gpu>::builder()
        .block_count(2)
        .block_size(4)
        .with_lineage_backend()
        .build()
        .unwrap();
    let hashes = chain(2, 5);
    drop(register_chain(&m, &hashes));
    let (_blocks, evicted) = m.allocate_blocks_with_evictions(1).unwrap();
    assert_eq!(evicted, vec![hashes[1]]);
}

#[test]
fn wrong_block_size_hands_the_block_back() {
    let m = manager(1);
    let block = m.allocate_blocks(1).unwrap().pop().unwrap();
    let err = block.stage(SequenceHash::root(1), 8).unwrap_err();
    assert!(matches!(
        err,
        BlockError::BlockSizeMismatch {
            expected: 4,
            actual: 8,
            ..
        }
    ));
    let block = err.into_block();
    assert_eq!(block.block_id(), 0);
    drop(block);
    assert_eq!(m.available_blocks(), 1);
}

#[test]
fn block_from_another_manager_is_a_typed_error_and_nothing_is_lost() {
    let a = manager(2);
    let b = manager(2);
    let staged = a
        .allocate_blocks(1)
        .unwrap()
        .pop()
        .unwrap()
        .stage(SequenceHash::root(9), 4)
        .unwrap();
    let err = b.try_register_block(staged).unwrap_err();
    assert!(matches!(
        err,
        RegisterError::ForeignManager { block_id: 0, .. }
    ));
    assert_eq!(b.available_blocks(), 2);
    assert_eq!(
        a.available_blocks(),
        1,
        "the guard is still out, inside the error"
    );
    let staged = err.into_block();
    let registered = a.register_block(staged);
    drop(registered);
    assert_eq!(a.available_blocks(), 2);
    a.check_invariants().unwrap();
    b.check_invariants().unwrap();

    let batch = vec![
        b.allocate_blocks(1)
            .unwrap()
            .pop()
            .unwrap()
            .stage(SequenceHash::root(1), 4)
            .unwrap(),
        a.allocate_blocks(1)
            .unwrap()
            .pop()
            .unwrap()
            .stage(SequenceHash::root(2), 4)
            .unwrap(),
    ];
    let err = b.try_register_blocks(batch).unwrap_err();
    assert_eq!(err.into_block().len(), 2);
    assert_eq!((a.available_blocks(), b.available_blocks()), (2, 2));
}

#[test]
fn reject_policy_frees_the_new_block_and_returns_the_existing_one() {
    let m = BlockManager::<Gpu>::builder()
        .block_count(4)
        .block_size(4)
        .duplication_policy(BlockDuplicationPolicy::Reject)
        .build()
        .unwrap();
    let hash = SequenceHash::root(7);
    let first = register_chain(&m, &[hash]);
    let second = register_chain(&m, &[hash]);
    assert_eq!(first[0].block_id(), second[0].block_id());
    assert_eq!(first[0].use_count(), 2);
    assert_eq!(m.metrics().registration_dedups, 1);
    assert_eq!(m.metrics().reset_pool_size, 3);
    m.check_invariants().unwrap();
}

#[test]
fn allow_policy_keeps_a_duplicate_that_returns_to_reset_on_drop() {
    let m = manager(4);
    let hash = SequenceHash::root(7);
    let first = register_chain(&m, &[hash]);
    let second = register_chain(&m, &[hash]);
    assert_ne!(first[0].block_id(), second[0].block_id());
    assert_eq!(m.metrics().duplicate_blocks, 1);
    drop(first);
    assert_eq!(
        m.metrics().inactive_pool_size,
        0,
        "the duplicate pins the primary"
    );
    drop(second);
    let metrics = m.metrics();
    assert_eq!(
        (metrics.inactive_pool_size, metrics.reset_pool_size),
        (1, 3)
    );
    m.check_invariants().unwrap();
}

#[test]
fn weak_handle_resurrects_a_cached_block_and_fails_after_eviction() {
    let m = manager(1);
    let hash = SequenceHash::root(11);
    let weak = register_chain(&m, &[hash]).pop().unwrap().downgrade();
    let strong = weak.upgrade().expect("inactive blocks can be resurrected");
    assert_eq!(strong.sequence_hash(), hash);
    let fast = weak
        .upgrade()
        .expect("an active block upgrades without the lock");
    drop((strong, fast));
    let evictor = m.allocate_blocks(1).unwrap();
    assert!(weak.upgrade().is_none());
    drop(evictor);
    m.check_invariants().unwrap();
}

#[test]
fn weak_handle_finds_its_hash_registered_again_in_another_slot() {
    let m = manager(2);
    let hash = SequenceHash::root(12);
    let weak = register_chain(&m, &[hash]).pop().unwrap().downgrade();
    let _evictor = m.allocate_blocks(2).unwrap(); // evicts slot 0
    drop(_evictor);
    let again = register_chain(&m, &[hash]);
    let upgraded = weak.upgrade().expect("same hash is registered");
    assert_eq!(upgraded.block_id(), again[0].block_id());
}

#[test]
fn reset_inactive_pool_reports_blocks_still_held() {
    let m = manager(4);
    let held = register_chain(&m, &chain(2, 13));
    drop(register_chain(&m, &chain(1, 14)));
    let err = m.reset_inactive_pool().unwrap_err();
    assert_eq!(
        err,
        kvblocks::ResetError::BlockCountMismatch {
            expected: 4,
            actual: 2
        }
    );
    assert_eq!(m.metrics().inactive_pool_size, 0);
    drop(held);
    assert!(m.reset_inactive_pool().is_ok());
    assert_eq!(m.metrics().reset_pool_size, 4);
}

#[test]
fn complete_block_reset_and_drop_return_the_slot() {
    let m = manager(2);
    let staged = m
        .allocate_blocks(1)
        .unwrap()
        .pop()
        .unwrap()
        .stage(SequenceHash::root(1), 4)
        .unwrap();
    let mutable = staged.reset();
    let staged = mutable.stage(SequenceHash::root(2), 4).unwrap();
    drop(staged);
    let metrics = m.metrics();
    assert_eq!(
        (
            metrics.stagings,
            metrics.inflight_mutable,
            metrics.reset_pool_size
        ),
        (2, 0, 2)
    );
}

#[test]
fn builder_rejects_bad_sizes_with_typed_errors() {
    let build = |count: Option<usize>, size: Option<usize>| {
        let mut b = BlockManager::<Gpu>::builder();
        if let Some(c) = count {
            b = b.block_count(c);
        }
        if let Some(s) = size {
            b = b.block_size(s);
        }
        b.build().map(|_| ()).unwrap_err()
    };
    assert_eq!(build(None, Some(4)), BuildError::MissingBlockCount);
    assert_eq!(build(Some(4), None), BuildError::MissingBlockSize);
    assert_eq!(build(Some(0), Some(4)), BuildError::ZeroBlockCount);
    assert_eq!(build(Some(4), Some(0)), BuildError::ZeroBlockSize);
    assert_eq!(
        build(Some(4), Some(1 << 20)),
        BuildError::BlockSizeTooLarge(1 << 20)
    );
    assert_eq!(
        build(Some(usize::MAX), Some(4)),
        BuildError::TooManyBlocks(usize::MAX)
    );
}

#[test]
fn builder_rejects_bad_pool_shard_counts_and_rounds_the_rest() {
    let shards = |blocks: usize, shards: usize| {
        BlockManager::<Gpu>::builder()
            .block_count(blocks)
            .block_size(4)
            .pool_shards(shards)
            .build()
            .map(|m| m.pool_shards())
    };
    assert_eq!(shards(8, 0), Err(BuildError::ZeroPoolShards));
    assert_eq!(
        shards(1 << 12, MAX_POOL_SHARDS + 1),
        Err(BuildError::TooManyPoolShards(MAX_POOL_SHARDS + 1))
    );
    assert_eq!(shards(1 << 12, MAX_POOL_SHARDS), Ok(MAX_POOL_SHARDS));
    assert_eq!(shards(1024, 16), Ok(16));
    // Shards hold a power of two of slots: 1000 / 3 -> 512-slot shards.
    assert_eq!(shards(1000, 3), Ok(2));
    // Never more shards than slots.
    assert_eq!(shards(3, 8), Ok(3));
}

#[test]
fn every_policy_kind_builds_and_serves() {
    for &kind in EvictionPolicyKind::ALL {
        let m = BlockManager::<Gpu>::builder()
            .block_count(3)
            .block_size(4)
            .eviction_policy(kind)
            .build()
            .unwrap();
        for seed in 0..10 {
            drop(register_chain(&m, &chain(2, seed)));
            m.check_invariants().unwrap();
        }
        assert_eq!(m.eviction_policy_name(), kind.name());
        assert_eq!(m.available_blocks(), 3);
    }
}

/// The manager's check composes with the policy's own: a custom policy's
/// broken invariant fails `check_invariants`, naming what broke.
#[test]
fn check_invariants_reports_what_the_policy_check_finds() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static BROKEN: AtomicBool = AtomicBool::new(false);

    struct Checked(kvblocks::policy::Lru);
    impl kvblocks::EvictionPolicy for Checked {
        fn name(&self) -> &'static str {
            "checked"
        }
        fn on_release(&mut self, slot: u32) {
            self.0.on_release(slot);
        }
        fn on_reacquire(&mut self, slot: u32) {
            self.0.on_reacquire(slot);
        }
        fn evict(&mut self) -> Option<u32> {
            self.0.evict()
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn check(&self) -> Result<(), String> {
            if BROKEN.load(Ordering::Relaxed) {
                return Err("planted breakage".into());
            }
            self.0.check()
        }
    }

    #[derive(Clone)]
    struct Checking;
    let manager = BlockManager::<Checking>::builder()
        .block_count(8)
        .block_size(4)
        .custom_eviction_policy(|slots| Checked(kvblocks::policy::Lru::new(slots)))
        .build()
        .unwrap();
    let staged = manager
        .allocate_blocks(2)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, b)| b.stage(SequenceHash::root(i as u64), 4).unwrap())
        .collect();
    drop(manager.register_blocks(staged));
    assert_eq!(manager.check_invariants(), Ok(()));
    BROKEN.store(true, Ordering::Relaxed);
    let error = manager.check_invariants().unwrap_err();
    assert!(error.contains("planted breakage"), "{error}");
}
