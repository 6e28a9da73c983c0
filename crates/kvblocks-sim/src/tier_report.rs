//! Presents tiered replays: the table (a row per tier of each run, its total,
//! and the single-tier references), the JSON, and the tier view plot (one
//! bar per run, stacked by the tier that served the hits, with the G1-alone
//! and Belady marks and the infinite-cache line).
//!
//! This module only formats what it is given and applies the cost model
//! ([`crate::cost`]) to counters; it never runs a replay.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use crate::cost::CostModel;
use crate::report::{self, thousands, RunReport, TraceReport, COLOURS};
use crate::stats::RunStats;
use crate::tiered::{OffloadMode, TierStats, TieredStats};

/// One tier of one tiered run.
#[derive(Debug, Clone, Serialize)]
pub struct TierReport {
    /// `G1`..`G4`.
    pub tier: &'static str,
    /// Blocks it held.
    pub capacity: usize,
    /// Its eviction policy.
    pub policy: &'static str,
    /// The counters.
    #[serde(flatten)]
    pub stats: TierStats,
    /// Its hits over all block references of the trace.
    pub hit_rate: f64,
    /// Bytes copied from it into G1.
    pub onboard_bytes: u64,
    /// Bytes copied into it from above.
    pub offload_bytes: u64,
    /// Recompute time its hits saved, seconds.
    pub recompute_seconds_saved: f64,
    /// Time its onboards took, seconds.
    pub onboard_seconds: f64,
    /// `recompute_seconds_saved - onboard_seconds` (negative: the tier is
    /// slower than recomputing).
    pub prefill_seconds_saved: f64,
}

/// A single-tier reference run with its prefill time saved.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceRun {
    /// The run.
    #[serde(flatten)]
    pub run: RunReport,
    /// Recompute time its hits saved, seconds (nothing to onboard).
    pub prefill_seconds_saved: f64,
}

impl ReferenceRun {
    /// Wraps a single-tier run.
    pub fn new(policy: &str, capacity: usize, stats: RunStats, cost: &CostModel) -> Self {
        Self {
            prefill_seconds_saved: cost.recompute_seconds(stats.prefill_tokens_saved),
            run: RunReport::new(policy, capacity, stats),
        }
    }
}

/// One tiered run: a tier list, a G1 policy, an offload mode.
#[derive(Debug, Clone, Serialize)]
pub struct TieredRunReport {
    /// The tier list (`G1=4000,G2=32000`).
    pub tier_list: String,
    /// G1's policy.
    pub policy: &'static str,
    /// `on-evict` or `write-through`.
    pub offload: OffloadMode,
    /// Blocks over all tiers.
    pub total_capacity: usize,
    /// Hits over all tiers / block references.
    pub block_hit_rate: f64,
    /// Served requests with a hit in any tier / requests.
    pub request_hit_rate: f64,
    /// Totals counted as a single-tier run counts them (`block_hits` over
    /// all tiers, `evictions` of G1).
    #[serde(flatten)]
    pub stats: RunStats,
    /// Sum of the tiers' `prefill_seconds_saved`.
    pub prefill_seconds_saved: f64,
    /// Wall time of the replay loop, milliseconds.
    pub replay_ms: f64,
    /// Per tier, G1 first.
    pub tiers: Vec<TierReport>,
    /// G1 alone: the same policy and capacity without lower tiers.
    pub g1_alone: ReferenceRun,
    /// Belady's bound for one tier of `total_capacity` blocks.
    pub belady: ReferenceRun,
}

impl TieredRunReport {
    /// Applies `cost` to a run's counters.
    pub fn new(
        tier_list: String,
        offload: OffloadMode,
        stats: &TieredStats,
        g1_alone: ReferenceRun,
        belady: ReferenceRun,
        cost: &CostModel,
    ) -> Self {
        let refs = stats.total.block_refs;
        let tiers: Vec<TierReport> = stats
            .tiers
            .iter()
            .map(|(setup, tier)| {
                let recompute = cost.recompute_seconds(tier.hit_tokens);
                let onboard = cost.onboard_seconds(setup.tier, tier.onboarded);
                TierReport {
                    tier: setup.tier.name(),
                    capacity: setup.capacity,
                    policy: setup.policy.name(),
                    stats: *tier,
                    hit_rate: ratio(tier.hits, refs),
                    onboard_bytes: tier.onboarded * cost.block_bytes,
                    offload_bytes: tier.offloaded * cost.block_bytes,
                    recompute_seconds_saved: recompute,
                    onboard_seconds: onboard,
                    prefill_seconds_saved: recompute - onboard,
                }
            })
            .collect();
        let total = stats.total;
        Self {
            tier_list,
            policy: stats.tiers[0].0.policy.name(),
            offload,
            total_capacity: stats.tiers.iter().map(|(s, _)| s.capacity).sum(),
            block_hit_rate: total.block_hit_rate(),
            request_hit_rate: total.request_hit_rate(),
            prefill_seconds_saved: tiers.iter().map(|t| t.prefill_seconds_saved).sum(),
            replay_ms: total.elapsed.as_secs_f64() * 1e3,
            stats: total,
            tiers,
            g1_alone,
            belady,
        }
    }

    /// `lru 4k/32k`: the bar label of the plot.
    fn short_label(&self) -> String {
        let caps: Vec<String> = self.tiers.iter().map(|t| compact(t.capacity)).collect();
        format!("{} {}", self.policy, caps.join("/"))
    }
}

/// The tiered runs of one trace.
#[derive(Debug, Clone, Serialize)]
pub struct TieredTraceReport {
    /// What the trace is (its `runs` stay empty).
    #[serde(flatten)]
    pub trace: TraceReport,
    /// The runs, in the order of `--tiers` then `--policy`.
    pub tiered: Vec<TieredRunReport>,
}

/// The whole output of a tiered `kvsim replay`.
#[derive(Debug, Clone, Serialize)]
pub struct TieredReport {
    /// The cost model every figure of seconds uses.
    pub cost_model: CostModel,
    /// One entry per trace.
    pub traces: Vec<TieredTraceReport>,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// `4000` as `4k`, `1500` as `1.5k`, `2500000` as `2.5M`.
fn compact(blocks: usize) -> String {
    let (value, unit) = if blocks >= 1_000_000 {
        (blocks as f64 / 1e6, "M")
    } else if blocks >= 1000 {
        (blocks as f64 / 1e3, "k")
    } else {
        return blocks.to_string();
    };
    let text = format!("{value:.1}");
    format!("{}{unit}", text.trim_end_matches(".0"))
}

/// The aligned table for every trace.
pub fn table(report: &TieredReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", report.cost_model.describe());
    for trace in &report.traces {
        let _ = writeln!(out, "\n{}", trace.trace.summary_line());
        let header = [
            "run",
            "tier",
            "capacity",
            "policy",
            "hits",
            "hit rate",
            "onboarded",
            "offloaded",
            "evictions",
            "onboard s",
            "prefill saved s",
        ];
        let mut rows: Vec<[String; 11]> = Vec::new();
        for (index, run) in trace.tiered.iter().enumerate() {
            if index > 0 {
                rows.push(Default::default());
            }
            for (i, tier) in run.tiers.iter().enumerate() {
                let name = if i == 0 {
                    format!("{} {} ({})", run.policy, run.tier_list, run.offload.name())
                } else {
                    String::new()
                };
                rows.push([
                    name,
                    tier.tier.to_string(),
                    thousands(tier.capacity as u64),
                    tier.policy.to_string(),
                    thousands(tier.stats.hits),
                    percent(tier.hit_rate),
                    thousands(tier.stats.onboarded),
                    thousands(tier.stats.offloaded),
                    thousands(tier.stats.evictions),
                    format!("{:.1}", tier.onboard_seconds),
                    format!("{:.1}", tier.prefill_seconds_saved),
                ]);
            }
            let onboard: f64 = run.tiers.iter().map(|t| t.onboard_seconds).sum();
            rows.push([
                "  all tiers".into(),
                "all".into(),
                thousands(run.total_capacity as u64),
                String::new(),
                thousands(run.stats.block_hits),
                percent(run.block_hit_rate),
                thousands(run.tiers.iter().map(|t| t.stats.onboarded).sum()),
                thousands(run.tiers.iter().map(|t| t.stats.offloaded).sum()),
                thousands(run.tiers.iter().map(|t| t.stats.evictions).sum()),
                format!("{onboard:.1}"),
                format!("{:.1}", run.prefill_seconds_saved),
            ]);
            for (name, tier, reference) in [
                ("  G1 alone", "G1", &run.g1_alone),
                ("  belady, one tier", "all", &run.belady),
            ] {
                rows.push([
                    name.into(),
                    tier.into(),
                    thousands(reference.run.capacity as u64),
                    reference.run.policy.clone(),
                    thousands(reference.run.stats.block_hits),
                    percent(reference.run.block_hit_rate),
                    "0".into(),
                    "0".into(),
                    thousands(reference.run.stats.evictions),
                    "0.0".into(),
                    format!("{:.1}", reference.prefill_seconds_saved),
                ]);
            }
        }
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let line = |cells: &[&str]| {
            let mut text = String::new();
            for (column, (cell, width)) in cells.iter().zip(widths).enumerate() {
                if column < 2 || column == 3 {
                    let _ = write!(text, "{}{cell:<width$}", if column > 0 { "  " } else { "" });
                } else {
                    let _ = write!(text, "  {cell:>width$}");
                }
            }
            text.truncate(text.trim_end().len());
            text.push('\n');
            text
        };
        out.push_str(&line(&header));
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            out.push_str(&line(&cells));
        }
    }
    out
}

fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// The whole report as pretty JSON.
pub fn json(report: &TieredReport) -> String {
    serde_json::to_string_pretty(report).expect("a report always serialises")
}

/// The stem of a trace's tier view: its plot stem and `-tiered`.
pub fn plot_stem(stem: &str) -> String {
    format!("{stem}-tiered")
}

/// Draws `trace`'s tier view into `dir` as `<stem>.png` and `<stem>.svg`;
/// returns the paths written.
pub fn plot(trace: &TieredTraceReport, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, String> {
    report::ensure_font()?;
    std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let [png, svg] = report::plot_paths(dir, stem);
    // Wide enough for every bar's label.
    let size = ((130 * trace.tiered.len() as u32 + 200).max(960), 600);
    draw(BitMapBackend::new(&png, size).into_drawing_area(), trace)
        .map_err(|err| format!("{}: {err}", png.display()))?;
    draw(SVGBackend::new(&svg, size).into_drawing_area(), trace)
        .map_err(|err| format!("{}: {err}", svg.display()))?;
    Ok(vec![png, svg])
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    trace: &TieredTraceReport,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let runs = &trace.tiered;
    let n = runs.len().max(1);
    let infinite = trace.trace.infinite_cache_hit_rate * 100.0;
    let top = runs
        .iter()
        .flat_map(|r| [r.block_hit_rate, r.belady.run.block_hit_rate])
        .fold(trace.trace.infinite_cache_hit_rate, f64::max)
        * 100.0;
    // Head room above the bars for the seconds saved.
    let y_max = ((top + 8.0) / 10.0).ceil().clamp(1.0, 10.0) * 10.0;
    let name = Path::new(&trace.trace.trace)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| trace.trace.trace.clone());
    let offload = runs.first().map_or("", |r| r.offload.name());
    let caption = format!(
        "Hits per tier: {name} ({}, offload {offload})",
        trace.trace.hold_label()
    );
    let labels: Vec<String> = runs.iter().map(TieredRunReport::short_label).collect();
    // The legend is a strip of its own under the caption, so it never
    // covers a bar.
    let titled = root
        .margin(10, 0, 0, 0)
        .titled(&caption, ("sans-serif", 22))
        .map_err(err)?;
    let (strip, area) = titled.split_vertically(34);
    let mut chart = ChartBuilder::on(&area)
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(
            // Plain f64: with at most n + 1 labels over a span of n + 0.2
            // the axis picks a step of 1, so labels fall on the bars.
            -0.6f64..n as f64 - 0.4,
            0f64..y_max,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("G1 policy, tier capacities G1/G2/.. (blocks)")
        .y_desc("block hit rate (%)")
        .x_labels(n + 1)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{:.0}", y))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(RGBColor(238, 238, 238))
        .max_light_lines(2)
        .disable_x_mesh()
        .draw()
        .map_err(err)?;

    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(LineSeries::new(
            [(-0.6, infinite), (n as f64 - 0.4, infinite)],
            grey.stroke_width(1),
        ))
        .map_err(err)?;
    let mut legend: Vec<(String, RGBColor, bool)> =
        vec![(format!("infinite cache ({infinite:.1}%)"), grey, false)];

    // Stacked bars, one series per tier so each gets a legend entry.
    let tiers: Vec<&'static str> = {
        let mut names: Vec<&'static str> = Vec::new();
        for run in runs {
            for tier in &run.tiers {
                if !names.contains(&tier.tier) {
                    names.push(tier.tier);
                }
            }
        }
        names.sort_unstable();
        names
    };
    for (k, &tier) in tiers.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = runs
            .iter()
            .enumerate()
            .filter_map(|(i, run)| {
                let below: f64 = run
                    .tiers
                    .iter()
                    .take_while(|t| t.tier != tier)
                    .map(|t| t.hit_rate * 100.0)
                    .sum();
                let own = run.tiers.iter().find(|t| t.tier == tier)?.hit_rate * 100.0;
                let x = i as f64;
                Some(Rectangle::new(
                    [(x - 0.3, below), (x + 0.3, below + own)],
                    colour.filled(),
                ))
            })
            .collect();
        chart.draw_series(bars).map_err(err)?;
        legend.push((format!("hits served by {tier}"), colour, true));
    }

    // Single-tier references as marks across each bar.
    let alone = RGBColor(200, 30, 30);
    for (label, colour, pick) in [
        (
            "G1 alone (same policy)",
            alone,
            (|r: &TieredRunReport| r.g1_alone.run.block_hit_rate) as fn(&TieredRunReport) -> f64,
        ),
        ("belady, one tier of the total capacity", BLACK, |r| {
            r.belady.run.block_hit_rate
        }),
    ] {
        let marks: Vec<PathElement<(f64, f64)>> = runs
            .iter()
            .enumerate()
            .map(|(i, run)| {
                let y = pick(run) * 100.0;
                PathElement::new(
                    [(i as f64 - 0.38, y), (i as f64 + 0.38, y)],
                    colour.stroke_width(3),
                )
            })
            .collect();
        chart.draw_series(marks).map_err(err)?;
        legend.push((label.to_string(), colour, false));
    }

    // The prefill time each run saved, above its bar.
    let style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (i, run) in runs.iter().enumerate() {
        let y = run.block_hit_rate.max(run.belady.run.block_hit_rate) * 100.0 + 1.0;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{:.0} s saved", run.prefill_seconds_saved),
                (i as f64, y),
                style.clone(),
            )))
            .map_err(err)?;
    }
    let font = TextStyle::from(("sans-serif", 14).into_font());
    let mut x = 80i32;
    for (label, colour, bar) in legend {
        if bar {
            strip
                .draw(&Rectangle::new([(x, 10), (x + 20, 22)], colour.filled()))
                .map_err(err)?;
        } else {
            let width = if colour == grey { 1 } else { 3 };
            strip
                .draw(&PathElement::new(
                    [(x, 16), (x + 20, 16)],
                    colour.stroke_width(width),
                ))
                .map_err(err)?;
        }
        strip
            .draw(&Text::new(label.clone(), (x + 26, 8), font.clone()))
            .map_err(err)?;
        let (w, _) = strip.estimate_text_size(&label, &font).map_err(err)?;
        x += 26 + w as i32 + 24;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_print_compactly() {
        assert_eq!(compact(500), "500");
        assert_eq!(compact(4000), "4k");
        assert_eq!(compact(1500), "1.5k");
        assert_eq!(compact(2_500_000), "2.5M");
    }
}
