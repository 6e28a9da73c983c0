//! The issue's sanity figures on the Mooncake synthetic trace (read from
//! `shared/traces/` beside the repository; skipped with a note when absent):
//! at 4,000 blocks with window 16, LRU reaches 23.0% block hit rate and
//! Belady 48.2%.

mod common;

use kvblocks::EvictionPolicyKind;
use kvblocks_sim::prepare::PreparedTrace;
use kvblocks_sim::schedule::HoldMode;
use kvblocks_sim::{belady, replay, trace};

#[test]
fn synthetic_trace_matches_the_issue_sanity_figures() {
    let Some(path) = common::synthetic_trace() else {
        return;
    };
    let trace = PreparedTrace::new(trace::load(&path).unwrap(), HoldMode::Window(16));
    assert_eq!(trace.requests.len(), 3993);
    assert_eq!(trace.chains.total_refs(), 121_877);
    assert_eq!(trace.chains.distinct(), 43_924);
    assert_eq!(
        format!("{:.1}", trace.infinite_cache_hit_rate() * 100.0),
        "64.0"
    );

    let best = belady::run(&trace, 4000, |_| {});
    assert_eq!(format!("{:.1}", best.block_hit_rate() * 100.0), "48.2");
    let lru = replay::run(&trace, EvictionPolicyKind::Lru, 4000, |_| {}).unwrap();
    assert_eq!(format!("{:.1}", lru.block_hit_rate() * 100.0), "23.0");
    assert_eq!(lru.block_refs, best.block_refs);
}
