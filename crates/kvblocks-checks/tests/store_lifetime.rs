//! Guards keep their store alive without an `Arc` each: the store frees
//! itself exactly when the manager and the last guard are gone, whichever
//! goes last. Checked with a counting allocator: live heap bytes return to
//! the baseline, and guards keep working after the manager is dropped.
//! Only the test's own thread is counted: everything here runs on it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

use kvblocks::{BlockDuplicationPolicy, BlockManager, SequenceHash};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted: only the test's own
    /// thread (the harness's main thread allocates while tests run).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Adds `bytes` to the live count if the calling thread is counted.
fn count(bytes: isize) {
    // `try_with`: a thread being torn down has no thread-locals left.
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        LIVE.fetch_add(bytes, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged and only
// counts the bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: the caller's contract is passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Clone)]
struct Tier;

fn build() -> BlockManager<Tier> {
    BlockManager::builder()
        .block_count(64)
        .block_size(4)
        .build()
        .unwrap()
}

/// One test function so no other test allocates concurrently.
#[test]
fn store_is_freed_when_the_manager_and_the_last_guard_are_gone() {
    COUNTED.with(|counted| counted.set(true));
    // What a thread allocates once for itself on first use (under Miri, the
    // list of thread-local destructors lives on the heap until the thread
    // exits) is not the store's: one round trip before the baseline.
    {
        let manager = build();
        let staged = manager.allocate_blocks(1).unwrap().pop().unwrap();
        let held = manager.register_block(staged.stage(SequenceHash::root(9), 4).unwrap());
        let weak = held.downgrade();
        drop((manager, held));
        drop(weak.upgrade());
    }
    let baseline = LIVE.load(Ordering::SeqCst);

    // Manager dropped first, guards later.
    let manager = build();
    let hash = SequenceHash::root(1);
    let staged = manager
        .allocate_blocks(1)
        .unwrap()
        .pop()
        .unwrap()
        .stage(hash, 4)
        .unwrap();
    let held = manager.register_block(staged);
    let mutable = manager.allocate_blocks(3).unwrap();
    let weak = held.downgrade();
    drop(manager);
    let clone = held.clone();
    assert_eq!(clone.use_count(), 2);
    assert_eq!(clone.block_size(), 4);
    drop((held, clone));
    let again = weak
        .upgrade()
        .expect("the store is alive while a weak handle holds it");
    drop(again);
    drop(mutable);
    assert!(
        LIVE.load(Ordering::SeqCst) > baseline,
        "the weak handle keeps the store"
    );
    drop(weak);
    assert_eq!(
        LIVE.load(Ordering::SeqCst),
        baseline,
        "store freed after the last guard"
    );

    // Guards dropped first, manager later.
    let manager = build();
    let blocks = manager.allocate_blocks(2).unwrap();
    drop(blocks);
    drop(manager);
    assert_eq!(
        LIVE.load(Ordering::SeqCst),
        baseline,
        "store freed with the manager"
    );

    // A staged block outliving its manager.
    let manager = build();
    let staged = manager
        .allocate_blocks(1)
        .unwrap()
        .pop()
        .unwrap()
        .stage(hash, 4)
        .unwrap();
    drop(manager);
    let back = staged.reset();
    drop(back);
    assert_eq!(LIVE.load(Ordering::SeqCst), baseline);

    // Every shard count and both duplication policies: the store is freed
    // whatever order the guards go in, also after a registration folded a
    // shard's only live slot into a primary in another shard (defect 5 of
    // the store audit: that shard kept its keepalive forever).
    for shards in [1, 2, 4, 8] {
        for duplication in [
            BlockDuplicationPolicy::Allow,
            BlockDuplicationPolicy::Reject,
        ] {
            every_guard_order_frees_the_store(shards, duplication);
            assert_eq!(
                LIVE.load(Ordering::SeqCst),
                baseline,
                "{shards} shards, {duplication:?}: the store leaked"
            );
        }
    }

    // A store that split while guards were out (its keepalive moved from
    // the one pool to the shards that hold live slots).
    for manager_first in [true, false] {
        a_split_store_is_freed(manager_first);
        assert_eq!(
            LIVE.load(Ordering::SeqCst),
            baseline,
            "split store, manager first {manager_first}: the store leaked"
        );
    }

    // Steady state: a long churn of registrations and evictions (removals
    // leave hash-table tombstones) must not grow any structure.
    // (Under Miri, one policy per path the store takes on a hit: LRU pins
    // active blocks lock-free, S3-FIFO observes hits under the shard lock.
    // The policies' own code is safe Rust; building all eight under Miri
    // took minutes of the CI budget.)
    let kinds: &[kvblocks::EvictionPolicyKind] = if cfg!(miri) {
        &[
            kvblocks::EvictionPolicyKind::Lru,
            kvblocks::EvictionPolicyKind::S3Fifo,
        ]
    } else {
        kvblocks::EvictionPolicyKind::ALL
    };
    for kind in kinds {
        churn_does_not_grow(*kind);
    }
}

fn churn_does_not_grow(kind: kvblocks::EvictionPolicyKind) {
    // (Under Miri, a small pool: building a large one is slow there.)
    let manager = BlockManager::<Tier>::builder()
        .block_count(if cfg!(miri) { 64 } else { 1024 })
        .block_size(4)
        .eviction_policy(kind)
        .build()
        .unwrap();
    let chain_of = |request: u64| {
        let mut chain = vec![SequenceHash::root(request % 7)];
        for i in 1..8 {
            let next = chain[chain.len() - 1].extend(if i < 4 { i } else { request << 8 | i });
            chain.push(next);
        }
        chain
    };
    let serve = |request: u64| {
        let chain = chain_of(request);
        let mut held = manager.match_blocks(&chain);
        let misses = &chain[held.len()..];
        let staged = manager
            .allocate_blocks(misses.len())
            .unwrap()
            .into_iter()
            .zip(misses)
            .map(|(b, h)| b.stage(*h, 4).unwrap())
            .collect();
        held.extend(manager.register_blocks(staged));
    };
    // (Under Miri, a short churn: it checks soundness, not steady state.)
    let (settle, total) = if cfg!(miri) {
        (20, 60)
    } else {
        (2_000, 40_000)
    };
    for request in 0..settle {
        serve(request);
    }
    let settled = LIVE.load(Ordering::SeqCst);
    for request in settle..total {
        serve(request);
    }
    assert_eq!(
        LIVE.load(Ordering::SeqCst),
        settled,
        "{}: bookkeeping grew under churn",
        kind.name()
    );
}

/// Registers one hash in two slots of different shards (the second slot the
/// only live one of its shard), then drops the manager and every guard.
fn every_guard_order_frees_the_store(shards: usize, duplication: BlockDuplicationPolicy) {
    for manager_first in [true, false] {
        let manager = BlockManager::<Tier>::builder()
            .block_count(16)
            .block_size(4)
            .pool_shards(shards)
            .duplication_policy(duplication)
            .build()
            .unwrap();
        let per_shard = 16 / manager.pool_shards();
        let mut blocks: Vec<Option<_>> = manager
            .allocate_blocks(16)
            .unwrap()
            .into_iter()
            .map(Some)
            .collect();
        blocks.sort_by_key(|b| b.as_ref().map(|b| b.block_id()));
        let hash = SequenceHash::root(42);
        let mut take = |slot: usize| blocks[slot].take().unwrap().stage(hash, 4).unwrap();
        let first = manager.register_block(take(0));
        // The first slot of the last shard (with one shard, any other slot).
        let second_slot = (16 - per_shard).max(1);
        let staged = take(second_slot);
        // Free every other slot, so `second_slot`'s shard has one live slot.
        blocks.clear();
        let second = manager.register_block(staged);
        assert_eq!(second.sequence_hash(), hash);
        let weak = second.downgrade();
        if manager_first {
            drop(manager);
            drop((second, first));
        } else {
            drop((first, second));
            manager.check_invariants().unwrap();
            drop(manager);
        }
        drop(weak);
    }
}

/// Guards on slots of the last shard only (so the one pool's first shard
/// is idle after the split), then a split, then the manager and the guards
/// dropped in either order.
fn a_split_store_is_freed(manager_first: bool) {
    let manager = BlockManager::<Tier>::builder()
        .block_count(16)
        .block_size(4)
        .pool_shards(4)
        .testing_split_on_contention()
        .build()
        .unwrap();
    let mut blocks = manager.allocate_blocks(16).unwrap();
    blocks.sort_by_key(|b| b.block_id());
    let last = blocks.split_off(12);
    drop(blocks);
    let mut last = last.into_iter();
    let held = manager.register_block(
        last.next()
            .unwrap()
            .stage(SequenceHash::root(7), 4)
            .unwrap(),
    );
    let mutable: Vec<_> = last.collect();
    assert!(kvblocks::testing::split_pool(&manager));
    let weak = held.downgrade();
    if manager_first {
        drop(manager);
        drop((held, mutable));
    } else {
        drop((held, mutable));
        manager.check_invariants().unwrap();
        drop(manager);
    }
    drop(weak);
}
