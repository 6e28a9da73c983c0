//! `kvsim replay --tiers ...`: the tiered replay's flags and its run, from
//! the checked command line to the table, JSON and tier view plot.
//!
//! A malformed tier list, tier policy, bandwidth or cost-model value is
//! refused with one `kvsim: error: ...` line and exit code 1, as every value
//! kvsim checks itself, before any trace is loaded.

use std::io::{self, Write};

use clap::ValueEnum;
use kvblocks::{EvictionPolicyKind, LogicalLayoutHandle};
use kvblocks_sim::cost::{CostModel, ModelShape, DEFAULT_GPU_TFLOPS, DEFAULT_MFU};
use kvblocks_sim::prepare::PreparedTrace;
use kvblocks_sim::progress::Progress;
use kvblocks_sim::report::{self, TraceReport, BELADY};
use kvblocks_sim::stats::RunStats;
use kvblocks_sim::tier_report::{self, ReferenceRun, TieredReport, TieredRunReport};
use kvblocks_sim::tiered::{self, OffloadMode, TierSetup};
use kvblocks_sim::tiers::{self, TierList};
use kvblocks_sim::{belady, replay, BLOCK_TOKENS};

use crate::ReplayArgs;

/// When blocks are copied to the lower tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Offload {
    /// When a tier evicts a block, into the next tier.
    OnEvict,
    /// When G1 registers a block, into every lower tier.
    WriteThrough,
}

/// The tiered replay's flags (all but `--tiers` only matter with it).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Tiered replay")]
pub struct TieredArgs {
    /// Replay with lower tiers: TIER=BLOCKS, fastest first, G1 first, e.g.
    /// `G1=4000,G2=32000` (G1 GPU, G2 pinned host, G3 local disk, G4 remote).
    /// BLOCKS is a block count or `inf` (as many as the trace has distinct
    /// blocks). Repeat the flag to compare configurations. Replaces
    /// --capacity; --policy names G1's policy; Belady's bound is the
    /// single-tier one of the total capacity.
    #[arg(long = "tiers", value_name = "TIER=BLOCKS,..")]
    pub tiers: Vec<String>,
    /// Eviction policy of lower tiers, e.g. `G2=lru,G3=sieve`; a tier not
    /// named runs G1's policy.
    #[arg(long, value_name = "TIER=POLICY,..")]
    pub tier_policy: Option<String>,
    /// When blocks go down a tier: when a tier evicts them (into the next
    /// tier), or as soon as G1 registers them (into every lower tier).
    #[arg(long, value_enum, default_value_t = Offload::OnEvict)]
    pub offload: Offload,
    /// Onboard bandwidth into G1 per lower tier, GB/s (default G2=25, PCIe
    /// host; G3=5, NVMe; G4=1, remote).
    #[arg(long, value_name = "TIER=GB/S,..")]
    pub tier_bandwidth: Option<String>,
    /// Recompute cost of one prompt token, microseconds (default: 2 x
    /// --model-params FLOPs at --gpu-tflops x --mfu, 32.5 us).
    #[arg(long, value_name = "US")]
    pub recompute_us_per_token: Option<f64>,
    /// Model parameters, for the recompute FLOPs (Llama-3-8B).
    #[arg(long, default_value_t = 8.03e9)]
    pub model_params: f64,
    /// GPU dense throughput, TFLOPS (H100 SXM, BF16).
    #[arg(long, default_value_t = DEFAULT_GPU_TFLOPS)]
    pub gpu_tflops: f64,
    /// Share of that throughput prefill reaches, in (0, 1].
    #[arg(long, default_value_t = DEFAULT_MFU)]
    pub mfu: f64,
    /// Model layers (block bytes = 2 x layers x kv heads x head dim x dtype bytes x 512).
    #[arg(long, default_value_t = 32)]
    pub layers: u64,
    /// Key/value heads per layer.
    #[arg(long, default_value_t = 8)]
    pub kv_heads: u64,
    /// Head dimension.
    #[arg(long, default_value_t = 128)]
    pub head_dim: u64,
    /// Bytes per KV element (2: BF16, 1: FP8).
    #[arg(long, default_value_t = 2)]
    pub dtype_bytes: u64,
}

impl TieredArgs {
    /// `clap` ids and spellings of the flags that only apply with `--tiers`.
    pub const ONLY_WITH_TIERS: [(&'static str, &'static str); 11] = [
        ("tier_policy", "--tier-policy"),
        ("offload", "--offload"),
        ("tier_bandwidth", "--tier-bandwidth"),
        ("recompute_us_per_token", "--recompute-us-per-token"),
        ("model_params", "--model-params"),
        ("gpu_tflops", "--gpu-tflops"),
        ("mfu", "--mfu"),
        ("layers", "--layers"),
        ("kv_heads", "--kv-heads"),
        ("head_dim", "--head-dim"),
        ("dtype_bytes", "--dtype-bytes"),
    ];
}

/// The checked tiered flags.
struct Plan {
    lists: Vec<TierList>,
    lower_policies: Vec<(LogicalLayoutHandle, EvictionPolicyKind)>,
    offload: OffloadMode,
    cost: CostModel,
}

/// A flag value kvsim refuses.
fn refused(message: impl ToString) -> String {
    message.to_string()
}

fn plan(args: &TieredArgs) -> Result<Plan, String> {
    let mut lists: Vec<TierList> = Vec::new();
    for text in &args.tiers {
        let list = tiers::parse_tiers(text).map_err(refused)?;
        if !lists.contains(&list) {
            lists.push(list);
        }
    }
    let lower_policies = match &args.tier_policy {
        Some(text) => tiers::parse_tier_policies(text).map_err(refused)?,
        None => Vec::new(),
    };
    for &(tier, _) in &lower_policies {
        let used = lists
            .iter()
            .any(|list| list.tiers().iter().any(|spec| spec.tier == tier));
        if !used {
            return Err(refused(format!(
                "--tier-policy: {tier} is in no --tiers list"
            )));
        }
    }
    let bandwidths = match &args.tier_bandwidth {
        Some(text) => tiers::parse_bandwidths(text).map_err(refused)?,
        None => Vec::new(),
    };
    let model = ModelShape {
        layers: args.layers,
        kv_heads: args.kv_heads,
        head_dim: args.head_dim,
        dtype_bytes: args.dtype_bytes,
        params: args.model_params,
    };
    let cost = CostModel::new(
        model,
        args.gpu_tflops,
        args.mfu,
        args.recompute_us_per_token,
        BLOCK_TOKENS,
        &bandwidths,
    )
    .map_err(refused)?;
    let offload = match args.offload {
        Offload::OnEvict => OffloadMode::OnEvict,
        Offload::WriteThrough => OffloadMode::WriteThrough,
    };
    Ok(Plan {
        lists,
        lower_policies,
        offload,
        cost,
    })
}

/// Checks the tiered flags only (refused values before anything else).
pub fn check(args: &TieredArgs) -> Result<(), String> {
    plan(args).map(|_| ())
}

/// Runs every tier list x G1 policy on every trace, with the single-tier
/// references, and prints and plots the result.
pub fn run(
    args: &ReplayArgs,
    policies: &[EvictionPolicyKind],
    prepared: &[PreparedTrace],
) -> Result<(), String> {
    let plan = plan(&args.tiered)?;
    let mut report = TieredReport {
        cost_model: plan.cost.clone(),
        traces: prepared
            .iter()
            .map(|trace| tier_report::TieredTraceReport {
                trace: TraceReport::new(trace),
                tiered: Vec::new(),
            })
            .collect(),
    };
    let headers: Vec<TraceReport> = report.traces.iter().map(|t| t.trace.clone()).collect();
    let stems: Vec<String> = report::unique_plot_stems(&headers)
        .iter()
        .map(|stem| tier_report::plot_stem(stem))
        .collect();
    if !args.no_plot {
        report::check_plot_files(&args.plot_dir, &stems)?;
    }

    let runs = (plan.lists.len() * policies.len() * 3) as u64;
    let total: u64 = prepared
        .iter()
        .map(|t| t.requests.len() as u64 * runs)
        .sum();
    let mut progress = Progress::new(total, true);
    for (trace, trace_report) in prepared.iter().zip(&mut report.traces) {
        // Reference runs shared by several tiered runs, computed once.
        let mut alone: Vec<((EvictionPolicyKind, usize), RunStats)> = Vec::new();
        let mut bounds: Vec<(usize, RunStats)> = Vec::new();
        for list in &plan.lists {
            for &policy in policies {
                let setups: Vec<TierSetup> = list
                    .tiers()
                    .iter()
                    .map(|spec| TierSetup {
                        tier: spec.tier,
                        capacity: spec.capacity.resolve(trace.chains.distinct()),
                        policy: plan
                            .lower_policies
                            .iter()
                            .find(|(tier, _)| *tier == spec.tier)
                            .map_or(policy, |&(_, kind)| kind),
                    })
                    .collect();
                let label = format!("{} {}", policy.name(), list.label());
                progress.set_message(label);
                let stats = tiered::run(trace, &setups, plan.offload, |n| progress.inc(n))
                    .map_err(|err| err.to_string())?;

                let g1 = setups[0].capacity;
                let g1_alone = match alone.iter().find(|(key, _)| *key == (policy, g1)) {
                    Some(&(_, stats)) => stats,
                    None => {
                        progress.set_message(format!("{} @ {g1}", policy.name()));
                        let stats = replay::run(trace, policy, g1, |n| progress.inc(n))
                            .map_err(|err| err.to_string())?;
                        alone.push(((policy, g1), stats));
                        stats
                    }
                };
                let sum: usize = setups.iter().map(|s| s.capacity).sum();
                let capacity = sum.min(replay::MAX_CAPACITY);
                let bound = match bounds.iter().find(|(c, _)| *c == capacity) {
                    Some(&(_, stats)) => stats,
                    None => {
                        progress.set_message(format!("{BELADY} @ {capacity}"));
                        let stats = belady::run(trace, capacity, |n| progress.inc(n));
                        bounds.push((capacity, stats));
                        stats
                    }
                };
                trace_report.tiered.push(TieredRunReport::new(
                    list.label(),
                    plan.offload,
                    &stats,
                    ReferenceRun::new(policy.name(), g1, g1_alone, &plan.cost),
                    ReferenceRun::new(BELADY, capacity, bound, &plan.cost),
                    &plan.cost,
                ));
            }
        }
    }
    progress.finish();

    let text = if args.json {
        tier_report::json(&report) + "\n"
    } else {
        tier_report::table(&report)
    };
    io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|err| format!("writing the report: {err}"))?;
    if !args.no_plot {
        for (trace_report, stem) in report.traces.iter().zip(&stems) {
            let paths = tier_report::plot(trace_report, &args.plot_dir, stem)
                .map_err(|err| format!("drawing the plot: {err}"))?;
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            eprintln!("kvsim: plot written to {}", names.join(" and "));
        }
    }
    Ok(())
}
