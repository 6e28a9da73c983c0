//! `kvsim`: replay request traces through kvblocks' `BlockManager`, compare
//! eviction policies with Belady's bound, print a table or JSON, draw a plot.
//!
//! ```text
//! kvsim replay [TRACE...] [--policy all|NAME[,NAME..]] [--capacity 2000,4000,8000,16000]
//!              [--mode window|time] [--window 16] [--decode-tps 30]
//!              [--json] [--plot-dir target/kvsim] [--no-plot] [--seed 1] [--requests 4000]
//!              [--workload builtin|scan|loop|phases]
//! kvsim replay [TRACE...] --tiers G1=4000,G2=32000[,G3=..,G4=..] [--tiers ..]
//!              [--tier-policy G2=lru,..] [--offload on-evict|write-through]
//!              [--tier-bandwidth G2=25,G3=5,G4=1] [--recompute-us-per-token US]
//!              [--model-params 8.03e9 --gpu-tflops 989 --mfu 0.5]
//!              [--layers 32 --kv-heads 8 --head-dim 128 --dtype-bytes 2]
//! kvsim generate [--seed 1] [--requests 4000] [-o FILE]
//! kvsim schedule [TRACE] [--capacity 32768] [--block-size 16] [--token-budget 8192]
//!                [--max-running 256] [--trace-block-tokens 512] [--step-ms 25] [--json]
//! ```
//!
//! With no trace, `replay` uses the built-in generated workload (see
//! `kvblocks_sim::workload`) or the stress workload `--workload` names
//! (`kvblocks_sim::stress`); traces ending in `.gz` are decompressed as
//! they are read. With `--tiers`, `replay` is a tiered replay
//! (`kvblocks_sim::tiered`): one manager per tier sharing one registry, hits
//! and prefill time saved per tier (`tiered_cli`).
//!
//! Bad input ends with one `kvsim: error: ...` line on stderr, before any
//! replay (plot paths included). Exit codes: 2 when clap cannot parse the
//! command line (an unknown flag, a value of the wrong type), 1 when kvsim
//! refuses a value it checks itself (capacities, policies, tier lists, cost
//! model...) or a run fails (an unreadable or malformed trace, an unwritable
//! report). A flag that does not apply to the run gets a
//! `kvsim: warning: ...` line.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use kvblocks::EvictionPolicyKind;
use kvblocks_sim::prepare::PreparedTrace;
use kvblocks_sim::progress::Progress;
use kvblocks_sim::report::{self, Report, RunReport, TraceReport, BELADY};
use kvblocks_sim::schedule::HoldMode;
use kvblocks_sim::trace::{self, Trace};
use kvblocks_sim::workload::{self, WorkloadConfig};
use kvblocks_sim::{batching, belady, replay, stress};

mod tiered_cli;

/// Replay KV-cache block traces through kvblocks and compare eviction policies.
#[derive(Debug, Parser)]
#[command(name = "kvsim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay traces (or the built-in workload) per policy and capacity, plus Belady's bound.
    Replay(Box<ReplayArgs>),
    /// Write the built-in workload as Mooncake JSONL.
    Generate(GenerateArgs),
    /// Continuous batching of a trace (or the built-in workload) through the
    /// request layer: token budget per step, preemption when the pool is full.
    Schedule(ScheduleArgs),
}

/// How long a request pins its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Until `--window` later requests have been served.
    Window,
    /// Until its decode ends: timestamp + output_length / --decode-tps.
    Time,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// Mooncake JSONL traces (timestamp ms, input_length, output_length, hash_ids;
    /// 512-token blocks; `.gz` files are decompressed on the fly). None: the
    /// built-in workload.
    traces: Vec<PathBuf>,
    /// Eviction policies: `all` or comma-separated names (any case).
    #[arg(long, default_value = "all")]
    policy: String,
    /// Pool sizes in blocks, comma-separated (at most 16777216 each).
    #[arg(long, default_value = "2000,4000,8000,16000")]
    capacity: String,
    /// Hold mode.
    #[arg(long, value_enum, default_value_t = Mode::Window)]
    mode: Mode,
    /// Window mode: a request pins its blocks until this many later requests have been served.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Time mode: decode speed of one request, tokens per second (prefill taken as instantaneous).
    #[arg(long, default_value_t = 30.0)]
    decode_tps: f64,
    /// Print JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Directory for the plots (PNG and SVG), created if missing.
    #[arg(long, default_value = "target/kvsim")]
    plot_dir: PathBuf,
    /// Do not draw plots.
    #[arg(long)]
    no_plot: bool,
    /// Built-in workload: seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Built-in workload: number of requests (at most 1000000).
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Generated workload when no trace is given: `builtin` (multi-turn
    /// chat) or a stress workload: `scan`, `loop`, `phases`.
    #[arg(long, default_value = "builtin")]
    workload: String,
    /// Pool shards of each replayed manager (`pool_shards` on the builder):
    /// the policy orders evictions within each shard, and an allocation
    /// evicts from the shard whose next victim is oldest. 1 (the default
    /// here) is the exact single-pool order. Rounded so each shard holds a
    /// power of two of blocks; reports show the count used.
    #[arg(long, default_value_t = 1)]
    pool_shards: usize,
    #[command(flatten)]
    tiered: tiered_cli::TieredArgs,
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of requests.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Output file (default: stdout).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ScheduleArgs {
    /// A Mooncake JSONL trace. None: the built-in workload.
    trace: Option<PathBuf>,
    /// Slots in the pool.
    #[arg(long, default_value_t = 32_768)]
    capacity: usize,
    /// Tokens per block of the pool.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// Tokens a step may compute (prefill chunks plus decode tokens).
    #[arg(long, default_value_t = 8192)]
    token_budget: usize,
    /// Requests running at once, at most.
    #[arg(long, default_value_t = 256)]
    max_running: usize,
    /// Tokens per `hash_ids` block of the trace (512 for Mooncake traces).
    #[arg(long, default_value_t = 512)]
    trace_block_tokens: usize,
    /// Simulated duration of one step, milliseconds (drives arrivals).
    #[arg(long, default_value_t = 25.0)]
    step_ms: f64,
    /// Built-in workload: seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Built-in workload: number of requests.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Print JSON on stdout instead of the summary.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let result = match cli.command {
        Command::Replay(args) => {
            let given = matches.subcommand_matches("replay").map(GivenFlags::new);
            run_replay(*args, &given.unwrap_or_default())
        }
        Command::Generate(args) => run_generate(args),
        Command::Schedule(args) => run_schedule(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kvsim: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Which `replay` flags the user typed (as opposed to their defaults).
#[derive(Debug, Default)]
struct GivenFlags(Vec<&'static str>);

impl GivenFlags {
    /// Flags whose use depends on other flags; the ones to warn about.
    const CHECKED: [(&'static str, &'static str); 6] = [
        ("workload", "--workload"),
        ("window", "--window"),
        ("decode_tps", "--decode-tps"),
        ("seed", "--seed"),
        ("requests", "--requests"),
        ("plot_dir", "--plot-dir"),
    ];

    fn new(matches: &ArgMatches) -> Self {
        let given = Self::CHECKED
            .iter()
            .chain(&Self::SINGLE_TIER)
            .chain(&tiered_cli::TieredArgs::ONLY_WITH_TIERS)
            .filter(|(id, _)| matches.value_source(id) == Some(ValueSource::CommandLine))
            .map(|&(_, flag)| flag)
            .collect();
        Self(given)
    }

    /// Flags of single-tier runs only.
    const SINGLE_TIER: [(&'static str, &'static str); 2] =
        [("capacity", "--capacity"), ("pool_shards", "--pool-shards")];

    fn contains(&self, flag: &str) -> bool {
        self.0.contains(&flag)
    }
}

/// One warning line per flag that was given but does not apply.
fn warn_unused_flags(args: &ReplayArgs, given: &GivenFlags) {
    let mut unused: Vec<(&str, &str)> = Vec::new();
    match args.mode {
        Mode::Time => unused.push(("--window", "applies to --mode window only")),
        Mode::Window => unused.push(("--decode-tps", "applies to --mode time only")),
    }
    if !args.traces.is_empty() {
        unused.push((
            "--seed",
            "applies to the built-in workload only (no TRACE given)",
        ));
        unused.push((
            "--requests",
            "applies to the built-in workload only (no TRACE given)",
        ));
        unused.push((
            "--workload",
            "applies to generated workloads only (no TRACE given)",
        ));
    }
    if args.no_plot {
        unused.push(("--plot-dir", "has no effect with --no-plot"));
    }
    if args.tiered.tiers.is_empty() {
        for (_, flag) in tiered_cli::TieredArgs::ONLY_WITH_TIERS {
            unused.push((flag, "applies to a tiered replay only (--tiers)"));
        }
    } else {
        for (_, flag) in GivenFlags::SINGLE_TIER {
            unused.push((flag, "has no effect with --tiers"));
        }
    }
    for (flag, reason) in unused {
        if given.contains(flag) {
            eprintln!("kvsim: warning: {flag} {reason}; ignored");
        }
    }
}

fn parse_capacities(text: &str) -> Result<Vec<usize>, String> {
    let mut capacities = Vec::new();
    for part in text.split(',').map(str::trim) {
        let capacity: u128 = part.parse().map_err(|_| {
            format!("--capacity: `{part}` is not a block count (expected e.g. 2000,4000)")
        })?;
        if capacity == 0 {
            return Err("--capacity: 0 is not a valid capacity (must be at least 1 block)".into());
        }
        let capacity = usize::try_from(capacity)
            .ok()
            .filter(|&c| c <= replay::MAX_CAPACITY)
            .ok_or_else(|| {
                format!(
                    "--capacity: {capacity} blocks is more than kvsim replays (limit {} blocks)",
                    replay::MAX_CAPACITY
                )
            })?;
        if !capacities.contains(&capacity) {
            capacities.push(capacity);
        }
    }
    capacities.sort_unstable();
    Ok(capacities)
}

/// `all` or policy names, comma-separated, any case; `all` inside a list
/// adds every policy. Each policy once, in the order first named.
fn parse_policies(text: &str) -> Result<Vec<EvictionPolicyKind>, String> {
    let known = || {
        EvictionPolicyKind::ALL
            .iter()
            .map(|k| k.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut policies = Vec::new();
    for name in text.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(format!(
                "--policy: empty policy name in `{text}` (known: all, {})",
                known()
            ));
        }
        let kinds = if name.eq_ignore_ascii_case("all") {
            EvictionPolicyKind::ALL.to_vec()
        } else {
            vec![name.parse().map_err(|_| {
                format!(
                    "--policy: unknown policy `{name}` (known: all, {})",
                    known()
                )
            })?]
        };
        for kind in kinds {
            if !policies.contains(&kind) {
                policies.push(kind);
            }
        }
    }
    Ok(policies)
}

/// The built-in workload's configuration, checked.
fn workload_config(seed: u64, requests: usize) -> Result<WorkloadConfig, String> {
    let config = WorkloadConfig::new(seed, requests);
    config.check().map_err(|err| format!("--requests: {err}"))?;
    Ok(config)
}

fn run_replay(args: ReplayArgs, given: &GivenFlags) -> Result<(), String> {
    warn_unused_flags(&args, given);
    let tiered = !args.tiered.tiers.is_empty();
    if tiered {
        tiered_cli::check(&args.tiered)?;
    }
    let capacities = if tiered {
        Vec::new()
    } else {
        parse_capacities(&args.capacity)?
    };
    let policies = parse_policies(&args.policy)?;
    let mode = match args.mode {
        Mode::Window => HoldMode::Window(args.window),
        Mode::Time => {
            if !(args.decode_tps.is_finite() && args.decode_tps > 0.0) {
                return Err(format!(
                    "--decode-tps: {} is not a positive speed",
                    args.decode_tps
                ));
            }
            HoldMode::Time {
                decode_tokens_per_s: args.decode_tps,
            }
        }
    };
    if args.pool_shards == 0 {
        return Err("--pool-shards: a pool has at least 1 shard".into());
    }
    if args.traces.is_empty() && args.requests == 0 {
        return Err("--requests: the built-in workload needs at least 1 request".into());
    }
    // What the managers will really have, asked of the builder: this also
    // refuses a bad --pool-shards before anything is loaded or replayed.
    let mut shards_used = Vec::new();
    for &capacity in &capacities {
        let used =
            replay::pool_shards_used(capacity, args.pool_shards).map_err(|err| match err {
                replay::ReplayError::Build { message, .. } => {
                    format!("--pool-shards {}: {message}", args.pool_shards)
                }
            })?;
        if !shards_used.contains(&used) {
            shards_used.push(used);
        }
    }
    shards_used.sort_unstable();

    // Load everything first, so a bad file fails before any replay runs.
    let traces: Vec<Trace> = if args.traces.is_empty() && args.workload.trim() != "builtin" {
        let kind = stress::StressKind::parse(&args.workload).ok_or_else(|| {
            format!(
                "--workload: unknown workload `{}` (known: builtin, scan, loop, phases)",
                args.workload
            )
        })?;
        workload_config(args.seed, args.requests)?;
        vec![Trace {
            name: format!(
                "stress-{}(seed={},requests={})",
                kind.name(),
                args.seed,
                args.requests
            ),
            requests: stress::generate(kind, args.seed, args.requests),
        }]
    } else if args.traces.is_empty() {
        let config = workload_config(args.seed, args.requests)?;
        vec![Trace {
            name: config.label(),
            requests: workload::generate(&config),
        }]
    } else {
        args.traces
            .iter()
            .map(|path| trace::load(path).map_err(|err| err.to_string()))
            .collect::<Result<_, _>>()?
    };
    let prepared: Vec<PreparedTrace> = traces
        .into_iter()
        .map(|t| PreparedTrace::new(t, mode))
        .collect();
    if tiered {
        return tiered_cli::run(&args, &policies, &prepared);
    }

    let runs_per_trace = (capacities.len() * (policies.len() + 1)) as u64;
    let total: u64 = prepared
        .iter()
        .map(|t| t.requests.len() as u64 * runs_per_trace)
        .sum();
    let mut report = Report {
        traces: prepared
            .iter()
            .map(|trace| TraceReport {
                pool_shards_requested: args.pool_shards,
                pool_shards: shards_used.clone(),
                ..TraceReport::new(trace)
            })
            .collect(),
    };
    // Where the plots go, checked before the replay rather than after it.
    let stems = report::unique_plot_stems(&report.traces);
    if !args.no_plot {
        report::check_plot_files(&args.plot_dir, &stems)?;
    }

    let mut progress = Progress::new(total, true);
    for (trace, trace_report) in prepared.iter().zip(&mut report.traces) {
        for &capacity in &capacities {
            for &policy in &policies {
                progress.set_message(format!("{} @ {capacity}", policy.name()));
                let stats = replay::run_sharded(trace, policy, capacity, args.pool_shards, |n| {
                    progress.inc(n)
                })
                .map_err(|err| err.to_string())?;
                trace_report
                    .runs
                    .push(RunReport::new(policy.name(), capacity, stats));
            }
            progress.set_message(format!("{BELADY} @ {capacity}"));
            let stats = belady::run(trace, capacity, |n| progress.inc(n));
            trace_report
                .runs
                .push(RunReport::new(BELADY, capacity, stats));
        }
    }
    progress.finish();

    let mut stdout = io::stdout().lock();
    let text = if args.json {
        report::json(&report) + "\n"
    } else {
        report::table(&report)
    };
    stdout
        .write_all(text.as_bytes())
        .map_err(|err| format!("writing the report: {err}"))?;
    if !args.no_plot {
        for (trace_report, stem) in report.traces.iter().zip(&stems) {
            let paths = report::plot(trace_report, &args.plot_dir, stem)
                .map_err(|err| format!("drawing the plot: {err}"))?;
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            eprintln!("kvsim: plot written to {}", names.join(" and "));
        }
    }
    Ok(())
}

fn run_generate(args: GenerateArgs) -> Result<(), String> {
    let requests = workload::generate(&workload_config(args.seed, args.requests)?);
    match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|err| format!("{}: cannot create: {err}", path.display()))?;
            trace::write_jsonl(&requests, io::BufWriter::new(file))
                .map_err(|err| format!("{}: {err}", path.display()))
        }
        None => trace::write_jsonl(&requests, io::BufWriter::new(io::stdout().lock()))
            .map_err(|err| format!("writing to stdout: {err}")),
    }
}

fn run_schedule(args: ScheduleArgs) -> Result<(), String> {
    let positive = |name: &str, value: usize| {
        if value == 0 {
            Err(format!("--{name}: must be at least 1"))
        } else {
            Ok(())
        }
    };
    positive("capacity", args.capacity)?;
    positive("block-size", args.block_size)?;
    positive("token-budget", args.token_budget)?;
    positive("max-running", args.max_running)?;
    positive("trace-block-tokens", args.trace_block_tokens)?;
    if !(args.step_ms.is_finite() && args.step_ms > 0.0) {
        return Err(format!(
            "--step-ms: {} is not a positive duration",
            args.step_ms
        ));
    }
    let trace = match &args.trace {
        Some(path) => trace::load(path).map_err(|err| err.to_string())?,
        None => {
            if args.requests == 0 {
                return Err("--requests: the built-in workload needs at least 1 request".into());
            }
            let config = WorkloadConfig::new(args.seed, args.requests);
            Trace {
                name: config.label(),
                requests: workload::generate(&config),
            }
        }
    };
    let config = batching::BatchingConfig {
        capacity: args.capacity,
        block_size: args.block_size,
        token_budget: args.token_budget,
        max_running: args.max_running,
        trace_block_tokens: args.trace_block_tokens,
        step_ms: args.step_ms,
    };
    let mut progress = Progress::new(trace.requests.len() as u64, true);
    progress.set_message(format!("schedule {}", trace.name));
    let stats = batching::run(&trace.requests, &config, |n| progress.inc(n))?;
    progress.finish();
    let text = if args.json {
        let value = serde_json::json!({
            "trace": trace.name,
            "requests": trace.requests.len(),
            "capacity": config.capacity,
            "block_size": config.block_size,
            "token_budget": config.token_budget,
            "max_running": config.max_running,
            "finished": stats.finished,
            "rejected": stats.rejected,
            "steps": stats.steps,
            "mean_batch": stats.mean_batch(),
            "preemptions": stats.preemptions,
            "prefix_hit_rate": stats.prefix_hit_rate(),
            "prompt_tokens": stats.prompt_tokens,
            "cached_prompt_tokens": stats.cached_prompt_tokens,
            "recomputed_tokens": stats.recomputed_tokens,
            "prefill_tokens": stats.prefill_tokens,
            "decode_tokens": stats.decode_tokens,
            "bookkeeping_seconds": stats.elapsed.as_secs_f64(),
            "requests_per_second": stats.requests_per_s(),
        });
        format!("{value:#}\n")
    } else {
        format!(
            "trace {}: {} requests, pool {} x {} tokens, budget {} tokens/step, at most {} running\n\
             finished            {}\n\
             rejected (too long) {}\n\
             steps               {} (mean batch {:.1})\n\
             preemptions         {}\n\
             prefix hit rate     {:.1}% of {} prompt tokens\n\
             recomputed tokens   {}\n\
             prefill / decode    {} / {} tokens\n\
             bookkeeping         {:.3} s: {:.0} requests/s, {:.0} ns per token\n",
            trace.name,
            trace.requests.len(),
            config.capacity,
            config.block_size,
            config.token_budget,
            config.max_running,
            stats.finished,
            stats.rejected,
            stats.steps,
            stats.mean_batch(),
            stats.preemptions,
            stats.prefix_hit_rate() * 100.0,
            stats.prompt_tokens,
            stats.recomputed_tokens,
            stats.prefill_tokens,
            stats.decode_tokens,
            stats.elapsed.as_secs_f64(),
            stats.requests_per_s(),
            stats.elapsed.as_nanos() as f64 / (stats.prefill_tokens + stats.decode_tokens).max(1) as f64,
        )
    };
    io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|err| format!("writing the report: {err}"))
}
