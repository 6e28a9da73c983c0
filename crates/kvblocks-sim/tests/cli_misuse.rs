//! `kvsim` misused from the command line: every mistake gets one clear line
//! (an error, or a warning when the run can go on), never a panic, an abort,
//! or a result that silently means something else.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{assert_one_error_line, kvsim, stderr};
use common::scratch_dir;

/// One request line of a Mooncake trace.
fn line(timestamp: u64, ids: &[u64]) -> String {
    format!(
        "{{\"timestamp\": {timestamp}, \"input_length\": {}, \"output_length\": 4, \"hash_ids\": {ids:?}}}\n",
        ids.len() * 512
    )
}

/// Writes a small valid trace to `dir/name`.
fn small_trace(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let text: String = (0..12).map(|i| line(i * 10, &[1, 2, 3 + i % 4])).collect();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_capacity_past_the_limit_is_refused_and_the_limit_it_names_is_accepted() {
    let output = kvsim(&["replay", "--capacity", "300000000", "--no-plot"]);
    assert_one_error_line(&output, "--capacity: 300000000 blocks");
    let limit = kvblocks_sim::replay::MAX_CAPACITY;
    let message = stderr(&output);
    assert!(message.contains(&format!("limit {limit} ")), "{message}");

    let past = (limit + 1).to_string();
    let output = kvsim(&["replay", "--capacity", &past, "--no-plot"]);
    assert_one_error_line(&output, &format!("--capacity: {past} blocks"));
    // The limit itself passes the capacity check (the run then stops at the
    // next check, so nothing is built).
    let at = limit.to_string();
    let output = kvsim(&["replay", "--capacity", &at, "--requests", "0"]);
    assert_one_error_line(&output, "--requests");
}

#[test]
fn timestamps_that_go_back_are_refused_with_their_line() {
    let dir = scratch_dir("misuse-backwards");
    let file = dir.join("back.jsonl");
    let text = [
        line(0, &[1]),
        line(50, &[1, 2]),
        "\n".into(),
        line(20, &[3]),
    ]
    .concat();
    std::fs::write(&file, text).unwrap();
    for mode in ["time", "window"] {
        let output = kvsim(&[
            "replay",
            file.to_str().unwrap(),
            "--mode",
            mode,
            "--no-plot",
        ]);
        assert_one_error_line(
            &output,
            &format!("{}:4: timestamp 20 is earlier than 50", file.display()),
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn a_request_written_as_a_json_array_is_refused_with_its_line() {
    let dir = scratch_dir("misuse-array");
    let file = dir.join("array.jsonl");
    std::fs::write(&file, line(0, &[1]) + "[5, 512, 4, [1, 2]]\n").unwrap();
    let output = kvsim(&["replay", file.to_str().unwrap(), "--no-plot"]);
    assert_one_error_line(&output, &format!("{}:2:1: ", file.display()));
    assert!(
        stderr(&output).contains("JSON object"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_plot_directory_under_a_file_fails_before_the_replay() {
    let dir = scratch_dir("misuse-plot-under-file");
    let blocker = dir.join("file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let plot_dir = blocker.join("plots");
    let output = kvsim(&[
        "replay",
        "--requests",
        "50",
        "--capacity",
        "100",
        "--plot-dir",
        plot_dir.to_str().unwrap(),
    ]);
    assert_one_error_line(&output, &plot_dir.display().to_string());
    assert!(output.stdout.is_empty(), "the replay ran first");
}

#[test]
fn a_plot_file_name_too_long_fails_before_the_replay() {
    let dir = scratch_dir("misuse-plot-long-name");
    // 245 characters of stem: the trace file itself fits the usual 255-byte
    // limit, its plot name (`<stem>-window16.png`) does not.
    let trace = small_trace(&dir, &format!("{}.jsonl", "t".repeat(245)));
    let output = kvsim(&[
        "replay",
        trace.to_str().unwrap(),
        "--capacity",
        "100",
        "--plot-dir",
        dir.join("plots").to_str().unwrap(),
    ]);
    assert_one_error_line(&output, "cannot write the plot");
    assert!(output.stdout.is_empty(), "the replay ran first");
    assert!(
        !dir.join("plots").read_dir().unwrap().any(|_| true),
        "the check leaves no file behind"
    );
}

#[test]
fn traces_with_the_same_file_stem_get_plots_of_their_own() {
    let dir = scratch_dir("misuse-same-stem");
    for sub in ["a", "b"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let first = small_trace(&dir.join("a"), "t.jsonl");
    let second = small_trace(&dir.join("b"), "t.jsonl");
    let plots = dir.join("plots");
    let output = kvsim(&[
        "replay",
        first.to_str().unwrap(),
        second.to_str().unwrap(),
        first.to_str().unwrap(),
        "--capacity",
        "100",
        "--policy",
        "lru",
        "--plot-dir",
        plots.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut names: Vec<String> = plots
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "t-window16-2.png",
            "t-window16-2.svg",
            "t-window16-3.png",
            "t-window16-3.svg",
            "t-window16.png",
            "t-window16.svg"
        ]
    );
}

#[test]
fn pool_shards_are_reported_as_the_manager_uses_them() {
    let dir = scratch_dir("misuse-shards");
    // 512 blocks in "3" shards: the builder makes two shards of 256.
    let output = kvsim(&[
        "replay",
        "--requests",
        "100",
        "--capacity",
        "512",
        "--policy",
        "lru",
        "--pool-shards",
        "3",
        "--json",
        "--plot-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let trace = &json["traces"][0];
    assert_eq!(trace["pool_shards_requested"], 3);
    assert_eq!(trace["pool_shards"], serde_json::json!([2]));
    assert_eq!(trace["runs"][0]["pool_shards"], 2);
    assert!(
        trace["runs"][1].get("pool_shards").is_none(),
        "belady has no pool"
    );
    assert!(dir
        .join("builtin-seed-1-requests-100-window16-shards2.png")
        .is_file());

    let table = kvsim(&[
        "replay",
        "--requests",
        "100",
        "--capacity",
        "512",
        "--policy",
        "lru",
        "--pool-shards",
        "3",
        "--no-plot",
    ]);
    let header = String::from_utf8(table.stdout).unwrap();
    let header = header.lines().next().unwrap();
    assert!(
        header.ends_with(", 2 pool shards (asked for 3)"),
        "{header}"
    );
}

#[test]
fn flags_that_do_not_apply_are_named_in_a_warning() {
    let dir = scratch_dir("misuse-flags");
    let trace = small_trace(&dir, "t.jsonl");
    let trace = trace.to_str().unwrap();
    let builtin = ["--requests", "20"];
    let cases: [(Vec<&str>, &[&str]); 4] = [
        (
            [&builtin[..], &["--mode", "time", "--window", "4"]].concat(),
            &["--window"],
        ),
        (
            [&builtin[..], &["--decode-tps", "10"]].concat(),
            &["--decode-tps"],
        ),
        (
            vec![trace, "--seed", "3", "--requests", "9"],
            &["--seed", "--requests"],
        ),
        (
            [&builtin[..], &["--plot-dir", "elsewhere"]].concat(),
            &["--plot-dir"],
        ),
    ];
    for (args, flags) in cases {
        let all = [&["replay", "--capacity", "100", "--no-plot"][..], &args].concat();
        let output = kvsim(&all);
        assert!(output.status.success(), "{}", stderr(&output));
        let text = stderr(&output);
        for flag in flags {
            assert!(
                text.lines()
                    .any(|l| l.starts_with("kvsim: warning: ") && l.contains(flag)),
                "{args:?}: no warning naming {flag}: {text}"
            );
        }
    }
    // Nothing to warn about: no warning.
    let output = kvsim(&[
        "replay",
        "--requests",
        "20",
        "--capacity",
        "100",
        "--no-plot",
    ]);
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
}

#[test]
fn policy_names_ignore_case_and_all_may_be_listed_with_others() {
    let run = |policy: &str| {
        let output = kvsim(&[
            "replay",
            "--requests",
            "20",
            "--capacity",
            "100",
            "--policy",
            policy,
            "--json",
            "--no-plot",
        ]);
        assert!(output.status.success(), "{policy}: {}", stderr(&output));
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        json["traces"][0]["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["policy"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let every = run("all");
    assert_eq!(every.len(), kvblocks::EvictionPolicyKind::ALL.len() + 1);
    assert_eq!(run("ALL"), every);
    assert_eq!(run("all,lru"), every);
    assert_eq!(run("LRU, Lineage"), ["lru", "lineage", "belady"]);

    let output = kvsim(&["replay", "--policy", "lru,", "--no-plot"]);
    assert_one_error_line(&output, "--policy: empty policy name");
}

#[test]
fn a_request_count_past_the_limit_is_a_one_line_error() {
    for command in ["replay", "generate"] {
        let output = kvsim(&[command, "--requests", "18446744073709551615"]);
        assert_one_error_line(&output, "--requests: 18446744073709551615");
    }
}

#[test]
fn the_largest_window_replays_without_overflow() {
    let output = kvsim(&[
        "replay",
        "--requests",
        "30",
        "--capacity",
        "2000",
        "--policy",
        "lru",
        "--window",
        "18446744073709551615",
        "--no-plot",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn an_unknown_workload_is_refused_and_a_known_one_replays() {
    let output = kvsim(&["replay", "--workload", "zipf", "--no-plot"]);
    assert_one_error_line(&output, "--workload: unknown workload `zipf`");
    let output = kvsim(&[
        "replay",
        "--workload",
        "loop",
        "--requests",
        "600",
        "--capacity",
        "100",
        "--policy",
        "hedge",
        "--no-plot",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        table.starts_with("stress-loop(seed=1,requests=600)"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("hedge")), "{table}");
}
