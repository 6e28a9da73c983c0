//! Runs the `kvsim` binary as a user would.

mod common;

use std::path::Path;

use common::cli::{assert_one_error_line, kvsim, stderr};
use common::scratch_dir;

#[test]
fn replays_the_builtin_workload_as_json_and_plots_it() {
    let dir = scratch_dir("builtin");
    let output = kvsim(&[
        "replay",
        "--requests",
        "300",
        "--capacity",
        "4000,500",
        "--json",
        "--plot-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let trace = &json["traces"][0];
    assert_eq!(trace["trace"], "builtin(seed=1,requests=300)");
    assert_eq!(trace["requests"], 300);
    assert_eq!(trace["window"], 16);
    let runs = trace["runs"].as_array().unwrap();
    let policies = kvblocks::EvictionPolicyKind::ALL.len() + 1;
    assert_eq!(runs.len(), 2 * policies);
    // Sorted by capacity; Belady last for each capacity.
    assert_eq!(runs[0]["capacity"], 500);
    assert_eq!(runs[policies - 1]["policy"], "belady");
    for run in runs {
        let rate = run["block_hit_rate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&rate));
        assert_eq!(run["block_refs"], trace["block_refs"]);
    }

    let png = dir.join("builtin-seed-1-requests-300-window16.png");
    let svg = dir.join("builtin-seed-1-requests-300-window16.svg");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("belady"));
}

#[test]
fn prints_an_aligned_table_and_a_generated_file_replays_like_the_builtin() {
    let dir = scratch_dir("generate");
    let file = dir.join("gen.jsonl");
    let status = kvsim(&[
        "generate",
        "--seed",
        "9",
        "--requests",
        "200",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(status.status.success(), "{}", stderr(&status));

    let common = [
        "--capacity",
        "300",
        "--no-plot",
        "--mode",
        "time",
        "--decode-tps",
        "20",
    ];
    let from_file = kvsim(&[&["replay", file.to_str().unwrap()][..], &common[..]].concat());
    let builtin = kvsim(
        &[
            &["replay", "--seed", "9", "--requests", "200"][..],
            &common[..],
        ]
        .concat(),
    );
    assert!(from_file.status.success() && builtin.status.success());
    let table = String::from_utf8(from_file.stdout).unwrap();
    let header = table.lines().nth(1).unwrap();
    assert!(
        header.starts_with("policy") && header.contains("block hit"),
        "{table}"
    );
    // Same requests, same hit counts: compare the rows minus the timing columns.
    let rows = |text: &str| -> Vec<String> {
        text.lines()
            .skip(2)
            .map(|l| l.split_whitespace().take(7).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        rows(&table),
        rows(&String::from_utf8(builtin.stdout).unwrap())
    );
    // Every data row has the header's width: the columns line up.
    for line in table.lines().skip(1).filter(|l| !l.is_empty()) {
        assert_eq!(line.len(), header.len(), "{table}");
    }
}

#[test]
fn a_malformed_line_names_file_and_line() {
    let dir = scratch_dir("malformed");
    let file = dir.join("bad.jsonl");
    std::fs::write(
        &file,
        "{\"timestamp\": 0, \"input_length\": 512, \"output_length\": 1, \"hash_ids\": [1]}\n\
         {\"timestamp\": 1, \"input_length\": 512, \"output_length\": 1, \"hash_ids\": [1,}\n",
    )
    .unwrap();
    let output = kvsim(&["replay", file.to_str().unwrap(), "--no-plot"]);
    assert_one_error_line(&output, &format!("{}:2:", file.display()));
    assert!(output.stdout.is_empty());
}

#[test]
fn empty_hash_ids_name_file_and_line() {
    let dir = scratch_dir("empty-ids");
    let file = dir.join("empty.jsonl");
    std::fs::write(
        &file,
        "\n{\"timestamp\": 0, \"input_length\": 0, \"output_length\": 1, \"hash_ids\": []}\n",
    )
    .unwrap();
    let output = kvsim(&["replay", file.to_str().unwrap(), "--no-plot"]);
    assert_one_error_line(
        &output,
        &format!("{}:2: `hash_ids` is empty", file.display()),
    );
}

#[test]
fn a_missing_file_is_named() {
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-trace.jsonl");
    let output = kvsim(&["replay", missing.to_str().unwrap(), "--no-plot"]);
    assert_one_error_line(
        &output,
        &format!("{}: cannot read trace", missing.display()),
    );
}

#[test]
fn zero_capacity_and_unknown_policy_are_refused() {
    let output = kvsim(&["replay", "--capacity", "4000,0", "--no-plot"]);
    assert_one_error_line(&output, "--capacity: 0 is not a valid capacity");
    let output = kvsim(&["replay", "--policy", "nope", "--no-plot"]);
    assert_one_error_line(&output, "unknown policy `nope`");
}

#[test]
fn pool_shards_replay_and_bad_counts_are_refused() {
    let output = kvsim(&[
        "replay",
        "--requests",
        "300",
        "--capacity",
        "512",
        "--policy",
        "lru",
        "--pool-shards",
        "4",
        "--json",
        "--no-plot",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    assert_eq!(json["traces"][0]["pool_shards_requested"], 4);
    assert_eq!(json["traces"][0]["pool_shards"], serde_json::json!([4]));
    let runs = json["traces"][0]["runs"].as_array().unwrap();
    assert_eq!(runs[0]["policy"], "lru");
    assert_eq!(runs[0]["pool_shards"], 4);
    assert!(runs[0]["block_hit_rate"].as_f64().unwrap() > 0.0);

    let output = kvsim(&["replay", "--pool-shards", "0", "--no-plot"]);
    assert_one_error_line(&output, "--pool-shards: a pool has at least 1 shard");
    let output = kvsim(&[
        "replay",
        "--requests",
        "10",
        "--capacity",
        "4096",
        "--pool-shards",
        "65",
        "--no-plot",
    ]);
    assert_one_error_line(&output, "pool_shards 65 exceeds the maximum of 64");
}

#[test]
fn schedules_the_builtin_workload_with_preemptions_and_returns_every_block() {
    // 3,000 slots are too few for the requests in flight: decode steps run
    // out of blocks and preempt. `schedule` fails if a block is still held
    // at the end, so success means nothing leaked.
    let output = kvsim(&[
        "schedule",
        "--requests",
        "250",
        "--capacity",
        "3000",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    assert_eq!(
        json["finished"].as_u64().unwrap() + json["rejected"].as_u64().unwrap(),
        250
    );
    assert!(json["preemptions"].as_u64().unwrap() > 0, "{json}");
    assert!(json["recomputed_tokens"].as_u64().unwrap() > 0, "{json}");
    let hit = json["prefix_hit_rate"].as_f64().unwrap();
    assert!(hit > 0.0 && hit < 1.0, "{json}");
    assert!(json["requests_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn schedule_rejects_a_zero_token_budget() {
    let output = kvsim(&["schedule", "--token-budget", "0"]);
    assert_one_error_line(&output, "--token-budget");
}
