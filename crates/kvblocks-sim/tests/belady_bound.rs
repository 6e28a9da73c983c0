//! Belady's bound is an upper bound: on small generated workloads no
//! policy the core offers hits more blocks, in either hold mode.

use kvblocks::EvictionPolicyKind;
use kvblocks_sim::prepare::PreparedTrace;
use kvblocks_sim::schedule::HoldMode;
use kvblocks_sim::trace::Trace;
use kvblocks_sim::workload::{generate, WorkloadConfig};
use kvblocks_sim::{belady, replay};

fn small_workload(seed: u64) -> Trace {
    let config = WorkloadConfig {
        concurrent_conversations: 48,
        user_tokens: (64, 4096),
        max_context_tokens: 16_384,
        ..WorkloadConfig::new(seed, 400)
    };
    Trace {
        name: config.label(),
        requests: generate(&config),
    }
}

#[test]
fn belady_never_does_worse_than_any_policy() {
    let modes = [
        HoldMode::Window(0),
        HoldMode::Window(4),
        HoldMode::Window(16),
        HoldMode::Time {
            decode_tokens_per_s: 20.0,
        },
    ];
    for seed in 1..=3 {
        for mode in modes {
            let trace = PreparedTrace::new(small_workload(seed), mode);
            for capacity in [700, 1500, 3000] {
                let best = belady::run(&trace, capacity, |_| {});
                assert!(best.block_hit_rate() <= trace.infinite_cache_hit_rate() + 1e-12);
                for &policy in EvictionPolicyKind::ALL {
                    let stats = replay::run(&trace, policy, capacity, |_| {}).unwrap();
                    assert_eq!(stats.block_refs, best.block_refs);
                    assert!(
                        best.block_hits >= stats.block_hits,
                        "seed {seed}, {mode:?}, capacity {capacity}: {} hit {} blocks, Belady {}",
                        policy.name(),
                        stats.block_hits,
                        best.block_hits
                    );
                }
            }
        }
    }
}
