//! `kvsim replay --tiers` from the command line: a tiered run's table, JSON
//! and plot, and every malformed tier flag refused with one line and exit
//! code 1 before anything runs (2 only where clap itself cannot parse).

mod common;

use std::process::Output;

use common::cli::{kvsim, stderr};
use common::scratch_dir;

/// A refused value: exit code 1 (as for every value kvsim checks itself),
/// one `kvsim: error:` line containing `needle`, nothing on stdout, no panic.
fn assert_refused(output: &Output, needle: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {text}");
    assert!(lines[0].starts_with("kvsim: error: "), "{text}");
    assert!(lines[0].contains(needle), "{needle:?} not in {text}");
    assert!(output.stdout.is_empty());
}

#[test]
fn malformed_tier_lists_are_refused_with_one_line() {
    let cases = [
        ("", "--tiers: empty tier list"),
        (" , ", "--tiers: empty tier list"),
        ("G1=4000,G1=8000", "--tiers: tier G1 is given twice"),
        ("G1=4000,G3=9000,G2=8000", "--tiers: G2 comes after G3"),
        ("G2=8000,G1=4000", "--tiers: the first tier must be G1"),
        ("G1=-5", "--tiers: G1=`-5` is not a block count"),
        ("G1=4000,G2=lots", "--tiers: G2=`lots` is not a block count"),
        ("G1=4000,G2=2.5", "--tiers: G2=`2.5` is not a block count"),
        ("G1=0", "--tiers: G1=0 is not a valid capacity"),
        ("G1=4000,G2=0", "--tiers: G2=0 is not a valid capacity"),
        ("G1=99999999999", "more than kvsim replays"),
        ("G1=4000,H2=10", "--tiers: unknown tier `H2`"),
        ("G1", "--tiers: `G1` is not TIER=VALUE"),
    ];
    for (tiers, needle) in cases {
        let output = kvsim(&["replay", "--requests", "50", "--no-plot", "--tiers", tiers]);
        assert_refused(&output, needle);
    }
    // A later --tiers is checked as well as the first.
    let output = kvsim(&[
        "replay",
        "--no-plot",
        "--tiers",
        "G1=10,G2=20",
        "--tiers",
        "G1=10,G1=20",
    ]);
    assert_refused(&output, "given twice");
}

#[test]
fn malformed_tier_policies_bandwidths_and_cost_values_are_refused() {
    let base = [
        "replay",
        "--requests",
        "50",
        "--no-plot",
        "--tiers",
        "G1=100,G2=200",
    ];
    let cases: [(&[&str], &str); 9] = [
        (
            &["--tier-policy", "G1=lru"],
            "--tier-policy: G1's policy is set with --policy",
        ),
        (
            &["--tier-policy", "G2=mru"],
            "--tier-policy: G2=`mru` is not a policy",
        ),
        (
            &["--tier-policy", "G3=lru"],
            "--tier-policy: G3 is in no --tiers list",
        ),
        (
            &["--tier-policy", "G2=lru,G2=sieve"],
            "--tier-policy: tier G2 is given twice",
        ),
        (
            &["--tier-bandwidth", "G2=0"],
            "--tier-bandwidth: G2=`0` is not a positive",
        ),
        (
            &["--tier-bandwidth", "G2=fast"],
            "--tier-bandwidth: G2=`fast`",
        ),
        (
            &["--tier-bandwidth", "G1=100"],
            "--tier-bandwidth: G1 moves no blocks",
        ),
        (&["--mfu", "1.5"], "--mfu: 1.5 (above 1)"),
        (&["--layers", "0"], "--layers: 0 is not a positive number"),
    ];
    for (extra, needle) in cases {
        let output = kvsim(&[&base[..], extra].concat());
        assert_refused(&output, needle);
    }
    let output = kvsim(&[&base[..], &["--recompute-us-per-token=-3"]].concat());
    assert_refused(&output, "--recompute-us-per-token: -3");
}

#[test]
fn tier_flags_clap_checks_itself_exit_with_code_2() {
    for args in [
        &["replay", "--tiers"][..],
        &["replay", "--tiers", "G1=10", "--offload", "sometimes"][..],
        &["replay", "--tiers", "G1=10", "--layers", "many"][..],
    ] {
        let output = kvsim(args);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(!stderr(&output).contains("panicked"));
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn tier_flags_without_tiers_and_single_tier_flags_with_them_are_warned_about() {
    let output = kvsim(&[
        "replay",
        "--requests",
        "50",
        "--capacity",
        "100",
        "--policy",
        "lru",
        "--no-plot",
        "--offload",
        "write-through",
        "--mfu",
        "0.4",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("kvsim: warning: --offload applies to a tiered replay only"),
        "{text}"
    );
    assert!(
        text.contains("kvsim: warning: --mfu applies to a tiered replay only"),
        "{text}"
    );

    let output = kvsim(&[
        "replay",
        "--requests",
        "50",
        "--capacity",
        "100",
        "--policy",
        "lru",
        "--no-plot",
        "--tiers",
        "G1=100,G2=200",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("kvsim: warning: --capacity has no effect with --tiers"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_tiered_run_reports_every_tier_in_json_and_draws_the_tier_view() {
    let dir = scratch_dir("tiered-json");
    let output = kvsim(&[
        "replay",
        "--requests",
        "400",
        "--policy",
        "lru,lineage",
        "--tiers",
        "G1=300,G2=1200,G3=inf",
        "--tiers",
        "G1=300,G2=600",
        "--tier-policy",
        "G2=sieve",
        "--tier-bandwidth",
        "G2=50",
        "--json",
        "--plot-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let cost = &json["cost_model"];
    assert_eq!(cost["block_bytes"], 64 << 20);
    assert_eq!(cost["bandwidth_gb_per_s"]["G2"], 50.0);
    assert_eq!(cost["bandwidth_gb_per_s"]["G3"], 5.0);
    let trace = &json["traces"][0];
    let distinct = trace["distinct_blocks"].as_u64().unwrap();
    let runs = trace["tiered"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "two tier lists x two policies");
    assert_eq!(runs[0]["tier_list"], "G1=300,G2=1200,G3=inf");
    assert_eq!(runs[1]["policy"], "lineage");
    assert_eq!(runs[0]["offload"], "on-evict");
    for run in runs {
        let tiers = run["tiers"].as_array().unwrap();
        let hits: u64 = tiers.iter().map(|t| t["hits"].as_u64().unwrap()).sum();
        assert_eq!(hits, run["block_hits"].as_u64().unwrap());
        assert_eq!(tiers[0]["policy"], run["policy"]);
        assert_eq!(tiers[1]["policy"], "sieve");
        for field in [
            "onboarded",
            "offloaded",
            "evictions",
            "onboard_seconds",
            "prefill_seconds_saved",
            "recompute_seconds_saved",
        ] {
            assert!(tiers[1][field].is_number(), "{field}");
        }
        let saved: f64 = tiers
            .iter()
            .map(|t| t["prefill_seconds_saved"].as_f64().unwrap())
            .sum();
        assert!((saved - run["prefill_seconds_saved"].as_f64().unwrap()).abs() < 1e-6);
        assert_eq!(run["g1_alone"]["capacity"], 300);
        assert_eq!(run["belady"]["policy"], "belady");
        assert!(run["block_hits"].as_u64() >= run["g1_alone"]["block_hits"].as_u64());
    }
    assert_eq!(runs[0]["tiers"][2]["capacity"].as_u64(), Some(distinct));
    assert_eq!(runs[0]["total_capacity"].as_u64(), Some(1500 + distinct));
    assert_eq!(
        runs[0]["belady"]["capacity"].as_u64(),
        Some(1500 + distinct)
    );

    let png = dir.join("builtin-seed-1-requests-400-window16-tiered.png");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(dir.join("builtin-seed-1-requests-400-window16-tiered.svg"))
        .unwrap();
    assert!(svg.contains("hits served by G2") && svg.contains("G1 alone"));
}

#[test]
fn the_table_has_a_row_per_tier_and_the_references() {
    let output = kvsim(&[
        "replay",
        "--requests",
        "200",
        "--policy",
        "lru",
        "--tiers",
        "G1=200,G2=800",
        "--offload",
        "write-through",
        "--recompute-us-per-token",
        "40",
        "--no-plot",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.starts_with("cost model: recompute 40.0 us/token (given)"),
        "{text}"
    );
    assert!(
        text.contains("lru G1=200,G2=800 (write-through)  G1"),
        "{text}"
    );
    for row in ["\n  all tiers", "\n  G1 alone", "\n  belady, one tier"] {
        assert!(text.contains(row), "{row:?} missing: {text}");
    }
    assert!(text.contains("prefill saved s"), "{text}");
}

#[test]
fn help_documents_the_tier_syntax() {
    let output = kvsim(&["replay", "--help"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--tiers <TIER=BLOCKS,..>",
        "G1=4000,G2=32000",
        "--tier-policy",
        "--offload",
    ] {
        assert!(text.contains(needle), "{needle:?} not in help");
    }
}
