//! Tiered replay through real managers sharing one registry: hand traces
//! whose per-tier counts are worked out by hand, and the bounds any tiered
//! run must respect (an unbounded G2 reaches the infinite cache; tiers never
//! hit less than G1 alone).

mod common;

use common::hand_trace;
use std::sync::Arc;

use kvblocks::events::{BlockChange, EventsManager, KvCacheEvents};
use kvblocks::{BlockRegistry, EvictionPolicyKind, LogicalLayoutHandle};
use kvblocks_sim::prepare::PreparedTrace;
use kvblocks_sim::schedule::HoldMode;
use kvblocks_sim::tiered::{self, OffloadMode, TierSetup, TierStats, TieredStats};
use kvblocks_sim::trace::Trace;
use kvblocks_sim::workload::{self, WorkloadConfig};
use kvblocks_sim::{replay, BLOCK_TOKENS};

use LogicalLayoutHandle::{G1, G2, G3};

fn setup(tier: LogicalLayoutHandle, capacity: usize, policy: EvictionPolicyKind) -> TierSetup {
    TierSetup {
        tier,
        capacity,
        policy,
    }
}

fn lru(tiers: &[(LogicalLayoutHandle, usize)]) -> Vec<TierSetup> {
    tiers
        .iter()
        .map(|&(tier, capacity)| setup(tier, capacity, EvictionPolicyKind::Lru))
        .collect()
}

fn tier(stats: &TieredStats, index: usize) -> TierStats {
    stats.tiers[index].1
}

/// The counters every tiered run must keep consistent.
fn check_accounting(stats: &TieredStats) {
    let hits: u64 = stats.tiers.iter().map(|(_, t)| t.hits).sum();
    assert_eq!(hits, stats.total.block_hits);
    let tokens: u64 = stats.tiers.iter().map(|(_, t)| t.hit_tokens).sum();
    assert_eq!(tokens, stats.total.prefill_tokens_saved);
    assert_eq!(tier(stats, 0).onboarded, 0);
    assert_eq!(tier(stats, 0).offloaded, 0);
    assert_eq!(tier(stats, 0).evictions, stats.total.evictions);
    for (setup, lower) in &stats.tiers[1..] {
        // Every lower-tier hit is onboarded into G1 (rejected requests count neither).
        assert_eq!(lower.onboarded, lower.hits, "{}", setup.tier);
    }
}

fn builtin(requests: usize) -> PreparedTrace {
    let config = WorkloadConfig::new(1, requests);
    PreparedTrace::new(
        Trace {
            name: config.label(),
            requests: workload::generate(&config),
        },
        HoldMode::Window(16),
    )
}

/// [a b] then [c d], then [a b] again; G1 holds 2 blocks, G2 2, released
/// right after use.
///
/// On eviction: [c d] evicts a, b from G1 into G2; the third request finds
/// both in G2 and onboards them (evicting c, d into G2, which evicts a, b).
/// Write-through: [c d] is written to G2 at once and evicts a, b there, so
/// the third request finds nothing.
#[test]
fn on_evict_keeps_what_g1_drops_and_write_through_overwrites_it() {
    let trace = hand_trace(&[&[1, 2], &[3, 4], &[1, 2]], HoldMode::Window(0));
    let tiers = lru(&[(G1, 2), (G2, 2)]);

    let on_evict = tiered::run(&trace, &tiers, OffloadMode::OnEvict, |_| {}).unwrap();
    check_accounting(&on_evict);
    assert_eq!(on_evict.total.block_hits, 2);
    assert_eq!(tier(&on_evict, 0).hits, 0);
    assert_eq!(tier(&on_evict, 1).hits, 2);
    assert_eq!(tier(&on_evict, 1).hit_tokens, 2 * BLOCK_TOKENS);
    assert_eq!(tier(&on_evict, 0).evictions, 4);
    assert_eq!(tier(&on_evict, 1).offloaded, 4);
    assert_eq!(tier(&on_evict, 1).evictions, 2);

    let through = tiered::run(&trace, &tiers, OffloadMode::WriteThrough, |_| {}).unwrap();
    check_accounting(&through);
    assert_eq!(through.total.block_hits, 0);
    assert_eq!(
        tier(&through, 1).offloaded,
        6,
        "every computed block, once each"
    );
    assert_eq!(tier(&through, 1).evictions, 4);

    let alone = replay::run(&trace, EvictionPolicyKind::Lru, 2, |_| {}).unwrap();
    assert_eq!(alone.block_hits, 0);
}

/// [p q], then [r] in a G1 of 2 blocks: LRU evicts the parent p (released
/// first) and keeps its child q. The third request [p q] finds p in G2 and
/// q in G1: the lookup serves each position from the fastest tier holding
/// it, so both hit, where G1 alone matches nothing.
#[test]
fn a_parent_below_and_its_child_in_g1_both_hit() {
    let trace = hand_trace(&[&[10, 11], &[12], &[10, 11]], HoldMode::Window(0));
    let tiers = lru(&[(G1, 2), (G2, 4)]);
    let stats = tiered::run(&trace, &tiers, OffloadMode::OnEvict, |_| {}).unwrap();
    check_accounting(&stats);
    assert_eq!(stats.total.block_hits, 2);
    assert_eq!((tier(&stats, 0).hits, tier(&stats, 1).hits), (1, 1));
    assert_eq!(tier(&stats, 1).onboarded, 1);
    // The onboard took the slot of r, which went down to G2.
    assert_eq!(tier(&stats, 1).offloaded, 2);

    let alone = replay::run(&trace, EvictionPolicyKind::Lru, 2, |_| {}).unwrap();
    assert_eq!(alone.block_hits, 0);
}

/// A block evicted from G2 goes on to G3; the third level serves it.
#[test]
fn evictions_cascade_down_to_the_last_tier() {
    let trace = hand_trace(&[&[1], &[2], &[3], &[1]], HoldMode::Window(0));
    let tiers = lru(&[(G1, 1), (G2, 1), (G3, 1)]);
    let stats = tiered::run(&trace, &tiers, OffloadMode::OnEvict, |_| {}).unwrap();
    check_accounting(&stats);
    // 1 -> G2 (when 2 arrives) -> G3 (when 3 arrives, 2 goes to G2); the
    // onboard of 1 pushes 3 into G2, 2 into G3, and 1 out of G3.
    assert_eq!(tier(&stats, 2).hits, 1);
    assert_eq!(tier(&stats, 2).offloaded, 2);
    assert_eq!(tier(&stats, 2).evictions, 1);
    assert_eq!(stats.total.block_hits, 1);
}

/// With G2 as large as the trace's distinct blocks and a G1 that never
/// rejects a request, nothing computed is ever lost: G1 + G2 hit exactly
/// what an infinite cache hits, whatever the policies and offload mode.
#[test]
fn an_unbounded_g2_reaches_the_infinite_cache_hit_rate() {
    let trace = builtin(1500);
    let refs = trace.chains.total_refs() as u64;
    let infinite = refs - trace.chains.distinct() as u64;
    let g2 = trace.chains.distinct();
    for (g1_policy, g2_policy) in [
        (EvictionPolicyKind::Lru, EvictionPolicyKind::Lru),
        (EvictionPolicyKind::PrefixAware, EvictionPolicyKind::Sieve),
        (EvictionPolicyKind::S3Fifo, EvictionPolicyKind::TinyLfu),
    ] {
        for mode in [OffloadMode::OnEvict, OffloadMode::WriteThrough] {
            let tiers = [setup(G1, 1000, g1_policy), setup(G2, g2, g2_policy)];
            let stats = tiered::run(&trace, &tiers, mode, |_| {}).unwrap();
            check_accounting(&stats);
            assert_eq!(stats.total.rejected, 0);
            assert_eq!(
                stats.total.block_hits,
                infinite,
                "{} + {} {mode:?}",
                g1_policy.name(),
                g2_policy.name()
            );
            assert!((stats.total.block_hit_rate() - trace.infinite_cache_hit_rate()).abs() < 1e-12);
            assert_eq!(tier(&stats, 1).evictions, 0);
        }
    }
}

/// Adding lower tiers never loses hits against G1 alone with the same
/// policy and capacity, for every policy and both offload modes.
#[test]
fn tiers_hit_at_least_as_much_as_g1_alone() {
    let trace = builtin(1500);
    for &policy in EvictionPolicyKind::ALL {
        let alone = replay::run(&trace, policy, 600, |_| {}).unwrap();
        for mode in [OffloadMode::OnEvict, OffloadMode::WriteThrough] {
            let tiers = [
                setup(G1, 600, policy),
                setup(G2, 2400, EvictionPolicyKind::Lru),
            ];
            let stats = tiered::run(&trace, &tiers, mode, |_| {}).unwrap();
            check_accounting(&stats);
            assert_eq!(stats.total.block_refs, alone.block_refs);
            assert!(
                stats.total.block_hits >= alone.block_hits,
                "{} {mode:?}: tiers {} < G1 alone {}",
                policy.name(),
                stats.total.block_hits,
                alone.block_hits
            );
        }
    }
}

#[test]
fn a_tier_list_not_starting_with_g1_or_out_of_order_is_an_error() {
    let trace = hand_trace(&[&[1]], HoldMode::Window(0));
    for tiers in [
        lru(&[(G2, 4)]),
        lru(&[(G1, 4), (G3, 4), (G2, 4)]),
        lru(&[(G1, 4), (G2, 4), (G2, 4)]),
        Vec::new(),
    ] {
        let err = tiered::run(&trace, &tiers, OffloadMode::OnEvict, |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("G1 followed by slower tiers"),
            "{err}"
        );
    }
    let err = tiered::run(&trace, &lru(&[(G1, 0)]), OffloadMode::OnEvict, |_| {}).unwrap_err();
    assert!(err.to_string().contains("G1 manager"), "{err}");
}

/// The same bound on the Mooncake synthetic trace (when it is beside the
/// repository): G1 of 4,000 blocks with an unbounded G2 hits exactly what an
/// infinite cache hits (77,953 of 121,877 references, 64.0%).
#[test]
fn on_the_mooncake_trace_an_unbounded_g2_reaches_the_infinite_cache() {
    let Some(path) = common::synthetic_trace() else {
        return;
    };
    let trace = PreparedTrace::new(
        kvblocks_sim::trace::load(&path).expect("the synthetic trace loads"),
        HoldMode::Window(16),
    );
    let infinite = (trace.chains.total_refs() - trace.chains.distinct()) as u64;
    let tiers = lru(&[(G1, 4000), (G2, trace.chains.distinct())]);
    let stats = tiered::run(&trace, &tiers, OffloadMode::OnEvict, |_| {}).unwrap();
    check_accounting(&stats);
    assert_eq!(stats.total.rejected, 0);
    assert_eq!(stats.total.block_hits, infinite);
    let alone = replay::run(&trace, EvictionPolicyKind::Lru, 4000, |_| {}).unwrap();
    assert!(tier(&stats, 0).hits >= alone.block_hits);
}

/// The evictions the replay reads from `allocate_blocks_with_evictions` are
/// exactly the removals the stores report as events, tier by tier, and the
/// offloads exactly the lower tiers' stores: the cheap way of seeing G1's
/// evictions loses nothing.
#[test]
fn the_evictions_counted_are_the_removals_the_stores_report() {
    let trace = builtin(600);
    for mode in [OffloadMode::OnEvict, OffloadMode::WriteThrough] {
        let events = Arc::new(
            EventsManager::builder()
                .block_size(BLOCK_TOKENS as u32)
                .broadcast_capacity(1 << 16)
                .build(),
        );
        let mut rx = events.subscribe();
        let registry = BlockRegistry::builder()
            .event_manager(events.clone())
            .build();
        let tiers = lru(&[(G1, 300), (G2, 900), (G3, 1200)]);
        let stats = tiered::run_with_registry(&trace, &tiers, mode, &registry, |_| {}).unwrap();
        check_accounting(&stats);
        events.flush_all();
        let mut created = [0u64; 4];
        let mut removed = [0u64; 4];
        while let Ok(batch) = rx.try_recv() {
            let tier = batch.tier.index();
            match &batch.events {
                KvCacheEvents::Create(blocks) => created[tier] += blocks.len() as u64,
                KvCacheEvents::Remove(hashes) => removed[tier] += hashes.len() as u64,
                KvCacheEvents::Mixed(changes) => {
                    for change in changes {
                        match change {
                            BlockChange::Stored(_) => created[tier] += 1,
                            BlockChange::Removed(_) => removed[tier] += 1,
                        }
                    }
                }
                other => panic!("unexpected batch {other:?}"),
            }
        }
        for (setup, tier) in &stats.tiers {
            let index = setup.tier.index();
            assert_eq!(removed[index], tier.evictions, "{} {mode:?}", setup.tier);
            if index > 0 {
                assert_eq!(created[index], tier.offloaded, "{} {mode:?}", setup.tier);
            }
        }
        assert!(removed[0] > 0 && removed[1] > 0, "the run must evict");
    }
}
