//! Presents results: an aligned table for people, JSON for machines, and a
//! plot (PNG and SVG) of block hit rate against capacity, one line per
//! policy plus Belady's bound and the infinite-cache ceiling.
//!
//! This module only formats what it is given; it never runs a replay. The
//! plot's text uses DejaVu Sans embedded in the binary (through the
//! `dejavu` crate and plotters' `ab_glyph` feature), so drawing needs no
//! system font library or font package.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::Serialize;

use crate::prepare::PreparedTrace;
use crate::schedule::HoldMode;
use crate::stats::RunStats;

/// The policy name used for Belady's bound in tables, JSON and plots.
pub const BELADY: &str = "belady";

/// One run's figures: a policy (or `belady`) at one capacity.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Policy name (`EvictionPolicyKind::name()`) or `belady`.
    pub policy: String,
    /// Pool size in blocks.
    pub capacity: usize,
    /// Share of block references served from cache.
    pub block_hit_rate: f64,
    /// Share of requests with at least one hit.
    pub request_hit_rate: f64,
    /// The raw counters.
    #[serde(flatten)]
    pub stats: RunStats,
    /// Wall time of the replay loop, milliseconds.
    pub replay_ms: f64,
    /// Replay time per block reference, nanoseconds.
    pub ns_per_block: f64,
}

impl RunReport {
    /// Wraps one run's counters.
    pub fn new(policy: &str, capacity: usize, stats: RunStats) -> Self {
        Self {
            policy: policy.to_string(),
            capacity,
            block_hit_rate: stats.block_hit_rate(),
            request_hit_rate: stats.request_hit_rate(),
            replay_ms: stats.elapsed.as_secs_f64() * 1e3,
            ns_per_block: stats.ns_per_block(),
            stats,
        }
    }
}

/// Every run on one trace.
#[derive(Debug, Clone, Serialize)]
pub struct TraceReport {
    /// File path or built-in workload label.
    pub trace: String,
    /// `window` or `time`.
    pub mode: &'static str,
    /// Window length (window mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// Decode speed (time mode), tokens per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_tokens_per_s: Option<f64>,
    /// Mean number of earlier requests still pinned at an arrival.
    pub mean_requests_in_flight: f64,
    /// `--pool-shards` as given (1: the exact single-pool order).
    pub pool_shards_requested: usize,
    /// Pool shards the replayed managers really have, each count once,
    /// smallest first: the builder rounds the request so that every shard
    /// holds a power of two of blocks, which can differ per capacity. Each
    /// run reports its own (`pool_shards` of a run; Belady has none).
    pub pool_shards: Vec<usize>,
    /// Requests in the trace.
    pub requests: usize,
    /// Block references in the trace.
    pub block_refs: usize,
    /// Distinct blocks (prefixes) in the trace.
    pub distinct_blocks: usize,
    /// Block hit rate of an unbounded cache.
    pub infinite_cache_hit_rate: f64,
    /// The runs, by capacity, policies in `EvictionPolicyKind::ALL` order,
    /// Belady last (left out of the JSON when empty, as in a tiered report,
    /// whose runs are its own).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunReport>,
}

impl TraceReport {
    /// An empty report describing `trace`.
    pub fn new(trace: &PreparedTrace) -> Self {
        let (mode, window, decode_tokens_per_s) = match trace.mode {
            HoldMode::Window(window) => ("window", Some(window), None),
            HoldMode::Time {
                decode_tokens_per_s,
            } => ("time", None, Some(decode_tokens_per_s)),
        };
        Self {
            trace: trace.name.clone(),
            mode,
            window,
            decode_tokens_per_s,
            mean_requests_in_flight: trace.schedule.mean_in_flight(),
            pool_shards_requested: 1,
            pool_shards: vec![1],
            requests: trace.requests.len(),
            block_refs: trace.chains.total_refs(),
            distinct_blocks: trace.chains.distinct(),
            infinite_cache_hit_rate: trace.infinite_cache_hit_rate(),
            runs: Vec::new(),
        }
    }

    /// The hold mode in words (`window 16`, `time, decode 30 tok/s, ...`).
    pub fn hold_label(&self) -> String {
        match (self.window, self.decode_tokens_per_s) {
            (Some(window), _) => format!("window {window}"),
            (None, Some(tps)) => format!(
                "time, decode {tps} tok/s, {:.1} in flight",
                self.mean_requests_in_flight
            ),
            (None, None) => self.mode.to_string(),
        }
    }

    /// The pool shards used, as `2` or `2-4`; `None` for one pool throughout.
    fn shards_used(&self) -> Option<String> {
        match (self.pool_shards.first(), self.pool_shards.last()) {
            (Some(&lo), Some(&hi)) if hi > 1 && lo == hi => Some(lo.to_string()),
            (Some(&lo), Some(&hi)) if hi > 1 => Some(format!("{lo}-{hi}")),
            _ => None,
        }
    }

    /// The table's first line for this trace: its size, the infinite-cache
    /// hit rate and the hold mode.
    pub fn summary_line(&self) -> String {
        format!(
            "{}: {} requests, {} block refs, {} distinct blocks (infinite cache {:.1}%), hold: {}",
            self.trace,
            thousands(self.requests as u64),
            thousands(self.block_refs as u64),
            thousands(self.distinct_blocks as u64),
            self.infinite_cache_hit_rate * 100.0,
            self.hold_label(),
        )
    }

    /// The header's note on pool shards: empty for one pool as asked.
    fn shards_note(&self) -> String {
        let asked = if self.pool_shards == [self.pool_shards_requested] {
            String::new()
        } else {
            format!(" (asked for {})", self.pool_shards_requested)
        };
        match self.shards_used() {
            Some(used) => format!(", {used} pool shards{asked}"),
            None if !asked.is_empty() => format!(", 1 pool{asked}"),
            None => String::new(),
        }
    }

    /// The policy names present, in first-seen order (Belady last).
    fn policies(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for run in &self.runs {
            if !names.contains(&run.policy.as_str()) {
                names.push(&run.policy);
            }
        }
        names
    }
}

/// Whole output of one `kvsim replay`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One entry per trace.
    pub traces: Vec<TraceReport>,
}

/// `1234567` as `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The aligned terminal table for every trace.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    for (index, trace) in report.traces.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{}{}", trace.summary_line(), trace.shards_note());
        let header = [
            "policy",
            "capacity",
            "block hit",
            "req hit",
            "prefill saved",
            "evictions",
            "rejected",
            "replay ms",
            "ns/block",
        ];
        let rows: Vec<[String; 9]> = trace
            .runs
            .iter()
            .map(|run| {
                [
                    run.policy.clone(),
                    thousands(run.capacity as u64),
                    format!("{:.1}%", run.block_hit_rate * 100.0),
                    format!("{:.1}%", run.request_hit_rate * 100.0),
                    thousands(run.stats.prefill_tokens_saved),
                    thousands(run.stats.evictions),
                    thousands(run.stats.rejected),
                    format!("{:.1}", run.replay_ms),
                    format!("{:.0}", run.ns_per_block),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let line = |cells: &[&str]| {
            let mut text = String::new();
            for (column, (cell, width)) in cells.iter().zip(widths).enumerate() {
                if column == 0 {
                    let _ = write!(text, "{cell:<width$}");
                } else {
                    let _ = write!(text, "  {cell:>width$}");
                }
            }
            text.push('\n');
            text
        };
        out.push_str(&line(&header));
        let mut last_capacity = None;
        for (row, run) in rows.iter().zip(&trace.runs) {
            if last_capacity.is_some_and(|c| c != run.capacity) {
                out.push('\n');
            }
            last_capacity = Some(run.capacity);
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            out.push_str(&line(&cells));
        }
    }
    out
}

/// The whole report as pretty JSON.
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("a report always serialises")
}

/// Registers the embedded font with plotters, once per process.
pub(crate) fn ensure_font() -> Result<(), String> {
    static FONT: OnceLock<bool> = OnceLock::new();
    let ok = *FONT.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded DejaVu Sans font could not be loaded".to_string())
    }
}

/// A file-name-safe stem for a trace's plots: the file stem (or workload
/// label) and the hold mode, e.g. `synthetic_trace-window16` or
/// `builtin-seed-1-requests-4000-window16`.
pub fn plot_stem(trace: &TraceReport) -> String {
    let stem = Path::new(&trace.trace)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| trace.trace.clone());
    let hold = match (trace.window, trace.decode_tokens_per_s) {
        (Some(window), _) => format!("window{window}"),
        (None, Some(tps)) => format!("time{tps}"),
        (None, None) => trace.mode.to_string(),
    };
    let shards = trace
        .shards_used()
        .map_or_else(String::new, |used| format!("-shards{used}"));
    let mut out = String::new();
    for c in format!("{stem}-{hold}{shards}").chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// [`plot_stem`] of every trace, made unique: a stem an earlier trace
/// already has gets `-2`, `-3`, ... (two files named alike in different
/// directories, or one file given twice).
pub fn unique_plot_stems(traces: &[TraceReport]) -> Vec<String> {
    let mut stems: Vec<String> = Vec::with_capacity(traces.len());
    for trace in traces {
        let base = plot_stem(trace);
        let mut stem = base.clone();
        let mut copy = 1;
        while stems.contains(&stem) {
            copy += 1;
            stem = format!("{base}-{copy}");
        }
        stems.push(stem);
    }
    stems
}

/// The PNG and SVG a plot with `stem` is written to in `dir`.
pub fn plot_paths(dir: &Path, stem: &str) -> [PathBuf; 2] {
    [
        dir.join(format!("{stem}.png")),
        dir.join(format!("{stem}.svg")),
    ]
}

/// Checks, before anything is replayed, that the plots can be written:
/// creates `dir` and opens every plot file for writing (one that did not
/// exist is removed again, one that did is left as it was). The error
/// names the path that failed: a directory under a file, a name too long,
/// no permission.
pub fn check_plot_files(dir: &Path, stems: &[String]) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|err| format!("{}: cannot create the plot directory: {err}", dir.display()))?;
    for stem in stems {
        for path in plot_paths(dir, stem) {
            let existed = path.exists();
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|err| format!("{}: cannot write the plot: {err}", path.display()))?;
            if !existed {
                std::fs::remove_file(&path)
                    .map_err(|err| format!("{}: cannot remove: {err}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Draws `trace`'s hit-rate curves into `dir` as `<stem>.png` and
/// `<stem>.svg` (see [`unique_plot_stems`]); returns the paths written.
pub fn plot(trace: &TraceReport, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, String> {
    ensure_font()?;
    std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let [png, svg] = plot_paths(dir, stem);
    let size = (960, 600);
    draw(BitMapBackend::new(&png, size).into_drawing_area(), trace)
        .map_err(|err| format!("{}: {err}", png.display()))?;
    draw(SVGBackend::new(&svg, size).into_drawing_area(), trace)
        .map_err(|err| format!("{}: {err}", svg.display()))?;
    Ok(vec![png, svg])
}

/// Line colours, one per policy (Tableau 10); Belady is black.
pub(crate) const COLOURS: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Margin around the hit-rate chart, in pixels.
const MARGIN_PX: u32 = 16;

/// Width of the hit-rate chart's y-axis label area, in pixels.
const Y_LABEL_AREA_PX: u32 = 64;

/// The capacities that get a label on the log-scale x axis: in order, each
/// at least a label's width (about 64 pixels) right of the last labelled
/// one, so that close pool sizes (36,848 and 40,000) do not print over each
/// other. Every capacity keeps its points; only the label is skipped.
fn labelled_capacities(capacities: &[usize], lo: f64, hi: f64, width_px: u32) -> Vec<f64> {
    const LABEL_PX: f64 = 64.0;
    // The plot spans the drawing's width less its margins and the y labels.
    let plot_px = (f64::from(width_px) - f64::from(2 * MARGIN_PX + Y_LABEL_AREA_PX)).max(LABEL_PX);
    let min_ratio = (hi / lo).powf(LABEL_PX / plot_px);
    let mut labelled: Vec<f64> = Vec::with_capacity(capacities.len());
    for &capacity in capacities {
        let capacity = capacity as f64;
        if labelled
            .last()
            .map_or(true, |&last| capacity >= last * min_ratio)
        {
            labelled.push(capacity);
        }
    }
    labelled
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    trace: &TraceReport,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let capacities: Vec<usize> = {
        let mut caps: Vec<usize> = trace.runs.iter().map(|r| r.capacity).collect();
        caps.sort_unstable();
        caps.dedup();
        caps
    };
    let (lo, hi) = match (capacities.first(), capacities.last()) {
        (Some(&lo), Some(&hi)) => (lo as f64 / 1.3, hi as f64 * 1.3),
        _ => (1.0, 10.0),
    };
    let top = trace
        .runs
        .iter()
        .map(|r| r.block_hit_rate)
        .fold(trace.infinite_cache_hit_rate, f64::max)
        * 100.0;
    let y_max = ((top + 5.0) / 10.0).ceil().clamp(1.0, 10.0) * 10.0;
    let name = Path::new(&trace.trace)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| trace.trace.clone());
    let caption = format!(
        "Block hit rate vs capacity: {name} ({})",
        trace.hold_label()
    );

    let (width, _) = root.dim_in_pixel();
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(MARGIN_PX)
        .x_label_area_size(48)
        .y_label_area_size(Y_LABEL_AREA_PX)
        .build_cartesian_2d(
            (lo..hi)
                .log_scale()
                .with_key_points(labelled_capacities(&capacities, lo, hi, width)),
            0f64..y_max,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("capacity (blocks, log scale)")
        .y_desc("block hit rate (%)")
        .x_label_formatter(&|x| format!("{:.0}", x))
        .y_label_formatter(&|y| format!("{:.0}", y))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(RGBColor(238, 238, 238))
        .max_light_lines(2)
        .draw()
        .map_err(err)?;

    let infinite = trace.infinite_cache_hit_rate * 100.0;
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(LineSeries::new(
            [(lo, infinite), (hi, infinite)],
            grey.stroke_width(1),
        ))
        .map_err(err)?
        .label(format!("infinite cache ({infinite:.1}%)"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey.stroke_width(1)));

    for (index, policy) in trace.policies().into_iter().enumerate() {
        let (colour, width) = if policy == BELADY {
            (BLACK, 3)
        } else {
            (COLOURS[index % COLOURS.len()], 2)
        };
        let mut points: Vec<(f64, f64)> = trace
            .runs
            .iter()
            .filter(|r| r.policy == policy)
            .map(|r| (r.capacity as f64, r.block_hit_rate * 100.0))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(width)))
            .map_err(err)?
            .label(policy.to_string())
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(width))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, colour.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_capacities_share_one_axis_label() {
        let caps = [10_000, 18_424, 36_848, 40_000, 73_697, 147_393];
        let (lo, hi) = (10_000.0 / 1.3, 147_393.0 * 1.3);
        let labelled = labelled_capacities(&caps, lo, hi, 960);
        assert_eq!(
            labelled,
            vec![10_000.0, 18_424.0, 36_848.0, 73_697.0, 147_393.0]
        );
        // Spread out, every capacity keeps its label.
        let caps = [2_745, 5_490, 10_981, 21_962];
        let labelled = labelled_capacities(&caps, 2_745.0 / 1.3, 21_962.0 * 1.3, 960);
        assert_eq!(labelled.len(), caps.len());
    }

    #[test]
    fn plot_stems_are_file_name_safe() {
        let mut trace = TraceReport {
            trace: "builtin(seed=1,requests=4000)".into(),
            mode: "window",
            window: Some(16),
            decode_tokens_per_s: None,
            mean_requests_in_flight: 0.0,
            pool_shards_requested: 1,
            pool_shards: vec![1],
            requests: 0,
            block_refs: 0,
            distinct_blocks: 0,
            infinite_cache_hit_rate: 0.0,
            runs: Vec::new(),
        };
        assert_eq!(plot_stem(&trace), "builtin-seed-1-requests-4000-window16");
        trace.trace = "/data/traces/synthetic_trace.jsonl".into();
        (trace.mode, trace.window, trace.decode_tokens_per_s) = ("time", None, Some(30.0));
        assert_eq!(plot_stem(&trace), "synthetic_trace-time30");
        trace.pool_shards = vec![16];
        assert_eq!(plot_stem(&trace), "synthetic_trace-time30-shards16");
        trace.pool_shards = vec![2, 4];
        assert_eq!(plot_stem(&trace), "synthetic_trace-time30-shards2-4");
        trace.trace = "/elsewhere/synthetic_trace.jsonl".into();
        let second = trace.clone();
        assert_eq!(
            unique_plot_stems(&[trace.clone(), second, trace]),
            [
                "synthetic_trace-time30-shards2-4",
                "synthetic_trace-time30-shards2-4-2",
                "synthetic_trace-time30-shards2-4-3"
            ]
        );
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(121_877), "121,877");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
