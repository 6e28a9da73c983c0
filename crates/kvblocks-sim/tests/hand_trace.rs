//! Tiny hand-made traces whose hit counts are worked out by hand, replayed
//! through the real manager (LRU) and through Belady's bound.

mod common;

use common::hand_trace;
use kvblocks::EvictionPolicyKind;
use kvblocks_sim::schedule::HoldMode;
use kvblocks_sim::{belady, replay};

/// Single-block requests a b c a d b a, 3 slots, released right after use.
///
/// LRU: a b c miss; a hits; d evicts b; b evicts c; a hits -> 2 hits, 2 evictions.
/// Belady: d evicts c (never used again); b and a hit -> 3 hits, 1 eviction.
#[test]
fn single_blocks_lru_and_belady_counts() {
    let trace = hand_trace(
        &[&[1], &[2], &[3], &[1], &[4], &[2], &[1]],
        HoldMode::Window(0),
    );
    let lru = replay::run(&trace, EvictionPolicyKind::Lru, 3, |_| {}).unwrap();
    assert_eq!((lru.block_hits, lru.evictions, lru.rejected), (2, 2, 0));
    assert_eq!(lru.block_refs, 7);
    assert_eq!(lru.requests_with_hit, 2);
    assert_eq!(lru.prefill_tokens_saved, 2 * 512);

    let best = belady::run(&trace, 3, |_| {});
    assert_eq!((best.block_hits, best.evictions, best.rejected), (3, 1, 0));
}

/// [p q] [r] [s] [p q] with 3 slots, released right after use.
///
/// LRU sees p released before q, so s evicts the parent p and the last
/// request matches nothing although q is resident: 0 hits. Belady evicts r
/// (never used again) and hits both blocks.
#[test]
fn evicting_a_parent_wastes_its_child() {
    let trace = hand_trace(&[&[10, 11], &[12], &[13], &[10, 11]], HoldMode::Window(0));
    let lru = replay::run(&trace, EvictionPolicyKind::Lru, 3, |_| {}).unwrap();
    assert_eq!(lru.block_hits, 0);
    assert_eq!(lru.rejected, 0);

    let best = belady::run(&trace, 3, |_| {});
    assert_eq!((best.block_hits, best.evictions), (2, 1));
}

/// [a b] [c d] [a b] with 3 slots and window 1: request 0 is still pinned
/// when request 1 needs 2 slots and only 1 is free, so request 1 is
/// rejected; request 0 is released before request 2, which hits both.
#[test]
fn a_request_that_cannot_fit_is_rejected() {
    let trace = hand_trace(&[&[1, 2], &[3, 4], &[1, 2]], HoldMode::Window(1));
    for stats in [
        replay::run(&trace, EvictionPolicyKind::Lru, 3, |_| {}).unwrap(),
        belady::run(&trace, 3, |_| {}),
    ] {
        assert_eq!(stats.rejected, 1);
        assert_eq!(stats.block_hits, 2);
        assert_eq!(stats.block_refs, 6);
        assert_eq!(stats.requests_with_hit, 1);
    }
}

/// A shared prefix is matched as far as it goes, and no further.
#[test]
fn hits_stop_at_the_first_miss() {
    let trace = hand_trace(
        &[&[1, 2, 3], &[1, 2, 4], &[1, 2, 3, 5]],
        HoldMode::Window(16),
    );
    for policy in EvictionPolicyKind::ALL.iter().copied() {
        let stats = replay::run(&trace, policy, 100, |_| {}).unwrap();
        assert_eq!(stats.block_hits, 2 + 3, "{}", policy.name());
        assert_eq!(stats.evictions, 0);
    }
    assert_eq!(belady::run(&trace, 100, |_| {}).block_hits, 5);
}
