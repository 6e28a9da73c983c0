//! Turn the `compare` bench's criterion results into markdown tables: time per
//! block for both libraries and their ratio, then the serving loop with
//! adversarial keys against well-mixed keys, per library.
//!
//! Reads `<criterion dir>/<group>/<library>/new/{estimates,benchmark}.json`
//! as left by the last `cargo bench -p kvblocks-compare --bench compare` run,
//! takes criterion's median time per iteration and divides it by the blocks
//! per iteration recorded as the benchmark's throughput. The criterion
//! directory defaults to the workspace's `target/criterion`; pass another
//! path as the first argument.
//!
//! Run: `cargo run --release -p kvblocks-compare --bin table [-- CRITERION_DIR]`

use std::fs;
use std::path::{Path, PathBuf};

/// Table rows: label and criterion group directory.
const ROWS: &[(&str, &str)] = &[
    ("(a) serving loop, LRU", "serving_loop_lru"),
    ("(a) serving loop, lineage", "serving_loop_lineage"),
    ("(a) serving loop, prefix", "serving_loop_prefix"),
    ("(b) match 128 active", "match_active_128"),
    ("(c) resurrect 128 inactive, LRU", "resurrect_128_lru"),
    (
        "(c) resurrect 128 inactive, lineage",
        "resurrect_128_lineage",
    ),
    ("(d) drop 128 active, LRU", "drop_active_128_lru"),
    ("(d) drop 128 active, lineage", "drop_active_128_lineage"),
];

/// The number following `"key":` after the first occurrence of `within`
/// (criterion's JSON is flat enough that this needs no parser).
fn number_after(json: &str, within: &str, key: &str) -> Option<f64> {
    let rest = &json[json.find(within)? + within.len()..];
    let rest = &rest[rest.find(key)? + key.len()..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// Median nanoseconds per block of one benchmark, if it has results.
fn ns_per_block(dir: &Path, group: &str, library: &str) -> Option<f64> {
    let base = dir.join(group).join(library).join("new");
    let estimates = fs::read_to_string(base.join("estimates.json")).ok()?;
    let benchmark = fs::read_to_string(base.join("benchmark.json")).ok()?;
    let median = number_after(&estimates, "\"median\"", "\"point_estimate\":")?;
    let blocks = number_after(&benchmark, "\"throughput\"", "\"Elements\":")?;
    Some(median / blocks)
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"))
}

fn main() {
    let dir = std::env::args().nth(1).map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../target/criterion"
            ))
        },
        PathBuf::from,
    );
    print_comparison(&dir);
    println!();
    print_adversarial(&dir);
}

/// Serving-loop policies, for the adversarial-keys table.
const POLICIES: &[&str] = &["lru", "lineage", "prefix"];

/// The serving loop with low-bit-cycling keys against well-mixed keys.
fn print_adversarial(dir: &Path) {
    println!(
        "| policy | kvblocks mixed | kvblocks low bits | ratio | kvbm mixed | kvbm low bits | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for policy in POLICIES {
        let mut row = format!("| {policy} |");
        for library in ["kvblocks", "kvbm"] {
            let mixed = ns_per_block(dir, &format!("serving_loop_{policy}"), library);
            let low = ns_per_block(dir, &format!("serving_loop_lowbits_{policy}"), library);
            let ratio = match (mixed, low) {
                (Some(m), Some(l)) => format!("{:.2}x", l / m),
                _ => "n/a".to_owned(),
            };
            row += &format!(" {} | {} | {ratio} |", cell(mixed), cell(low));
        }
        println!("{row}");
    }
}

/// Time per block of both libraries on every workload.
fn print_comparison(dir: &Path) {
    println!("| workload | kvblocks ns/block | kvbm ns/block | kvbm / kvblocks |");
    println!("|---|---:|---:|---:|");
    for &(label, group) in ROWS {
        let ours = ns_per_block(dir, group, "kvblocks");
        let theirs = ns_per_block(dir, group, "kvbm");
        let ratio = match (ours, theirs) {
            (Some(o), Some(t)) => format!("{:.2}x", t / o),
            _ => "n/a".to_owned(),
        };
        println!("| {label} | {} | {} | {ratio} |", cell(ours), cell(theirs));
    }
}
