//! The store's smallest races under loom, which explores every interleaving
//! *and* every outcome the memory orderings allow (shuttle, in
//! `shuttle_races.rs`, treats every atomic as `SeqCst`, so only loom tests an
//! ordering choice). Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p kvblocks-checks --release --test loom_races -- --test-threads=1`;
//! `LOOM_MAX_PREEMPTIONS` bounds the search (`scripts/test.sh` uses 3).
//!
//! Each model builds its own manager inside `loom::model`, so every atomic
//! and lock of the store is loom's.
#![cfg(loom)]

use std::sync::Arc;

use kvblocks::{BlockManager, ImmutableBlock, SequenceHash};
use loom::thread;

#[derive(Clone)]
struct Tier;

fn manager(blocks: usize) -> Arc<BlockManager<Tier>> {
    Arc::new(
        BlockManager::<Tier>::builder()
            .block_count(blocks)
            .block_size(4)
            .build()
            .unwrap(),
    )
}

fn register(m: &BlockManager<Tier>, hash: SequenceHash) -> ImmutableBlock<Tier> {
    let block = m.allocate_blocks(1).unwrap().pop().unwrap();
    m.register_block(block.stage(hash, 4).unwrap())
}

/// The last drop of a block races a match that resurrects it: the match
/// either pins the still-active block lock-free or resurrects it under the
/// lock, and the block ends inactive once both are done.
#[test]
fn last_drop_against_a_resurrecting_match() {
    loom::model(|| {
        let m = manager(2);
        let hash = SequenceHash::root(1);
        let held = register(&m, hash);
        let dropper = thread::spawn(move || drop(held));
        let matched = m.match_blocks(&[hash]);
        dropper.join().unwrap();
        assert_eq!(matched.len(), 1, "the block is resident throughout");
        assert_eq!(matched[0].sequence_hash(), hash);
        assert_eq!(matched[0].use_count(), 1);
        drop(matched);
        let metrics = m.metrics();
        assert_eq!(
            (metrics.inflight_immutable, metrics.inactive_pool_size),
            (0, 1)
        );
        m.check_invariants().unwrap();
    });
}

/// A match of an evictable block races an allocation that evicts it and
/// registers another hash in the same slot: whatever the match returns
/// pins a slot that really holds the hash it asked for.
#[test]
fn match_against_slot_reuse() {
    loom::model(|| {
        let m = manager(1);
        let (old, new) = (SequenceHash::root(1), SequenceHash::root(2));
        drop(register(&m, old)); // inactive
        let m2 = Arc::clone(&m);
        let reuser = thread::spawn(move || {
            let block = m2.allocate_blocks(1)?.pop()?;
            Some(m2.register_block(block.stage(new, 4).unwrap()))
        });
        let matched = m.match_blocks(&[old]);
        let reused = reuser.join().unwrap();
        match (matched.first(), &reused) {
            (Some(hit), None) => assert_eq!(hit.sequence_hash(), old),
            (None, Some(block)) => assert_eq!(block.sequence_hash(), new),
            (hit, block) => panic!("one slot, two owners: {hit:?} and {block:?}"),
        }
        drop((matched, reused));
        m.check_invariants().unwrap();
    });
}

/// Two keys share a probe run; evicting the first shifts the second's
/// entry back while a lock-free match of the second walks the run. The
/// second stays registered throughout, so the match must find it.
#[test]
fn match_against_a_shifting_removal() {
    let blocks = 2;
    loom::model(move || {
        let m = manager(blocks);
        // Keys whose index home is the same bucket (found by search).
        let first = SequenceHash::root(0);
        let home = kvblocks::testing::index_home_bucket(&m, first);
        let second = (1..)
            .map(SequenceHash::root)
            .find(|h| kvblocks::testing::index_home_bucket(&m, *h) == home)
            .unwrap();
        let a = register(&m, first);
        let b = register(&m, second);
        drop(a); // inactive: the next allocation evicts it
        let m2 = Arc::clone(&m);
        let evictor = thread::spawn(move || m2.allocate_blocks(1).map(|v| v.len()));
        let matched = m.match_blocks(&[second]);
        assert_eq!(evictor.join().unwrap(), Some(1));
        assert_eq!(matched.len(), 1, "a registered block was missed");
        drop((matched, b));
        m.check_invariants().unwrap();
    });
}

/// The manager and the last guard are dropped on two threads at once (with a
/// clone dropped on a third): the store is freed exactly once, by whichever
/// goes last, and no thread touches it after.
#[test]
fn keepalive_against_the_last_guards_drop() {
    loom::model(|| {
        let before = kvblocks::testing::live_stores();
        let m = manager(1);
        let held = register(&m, SequenceHash::root(7));
        let clone = held.clone();
        let m = Arc::try_unwrap(m).unwrap();
        let a = thread::spawn(move || drop(held));
        let b = thread::spawn(move || drop(clone));
        drop(m);
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(kvblocks::testing::live_stores(), before, "store leaked");
    });
}
