//! The trace parser against hostile input: random bytes, random JSON-ish
//! fragments and single-character corruptions of valid traces. It must return
//! a request list or a typed error naming a line that exists — never panic —
//! and writing then parsing a trace gives the same requests back. Then every
//! stage after the parser (preparing, every policy's replay, Belady, the
//! table and the JSON) against valid traces with extreme values, under
//! extreme hold modes and tiny pools: figures that add up, never a panic.

use std::path::Path;

use kvblocks::EvictionPolicyKind;
use kvblocks_sim::prepare::PreparedTrace;
use kvblocks_sim::report::{self, Report, RunReport, TraceReport, BELADY};
use kvblocks_sim::schedule::HoldMode;
use kvblocks_sim::stats::RunStats;
use kvblocks_sim::trace::{parse, write_jsonl, Request, Trace, TraceError};
use kvblocks_sim::{belady, replay};
use proptest::prelude::*;

fn error_line(err: &TraceError) -> Option<usize> {
    match err {
        TraceError::Malformed { line, .. }
        | TraceError::EmptyHashIds { line, .. }
        | TraceError::TooManyBlocks { line, .. }
        | TraceError::TimeGoesBack { line, .. } => Some(*line),
        _ => None,
    }
}

fn check(text: &str) {
    let lines = text.lines().count();
    match parse(Path::new("fuzz.jsonl"), text) {
        Ok(requests) => assert!(!requests.is_empty() && requests.len() <= lines),
        Err(err) => {
            if let Some(line) = error_line(&err) {
                assert!(
                    (1..=lines).contains(&line),
                    "{err} names line {line} of {lines}"
                );
            }
            assert!(err.to_string().contains("fuzz.jsonl"), "{err}");
        }
    }
}

fn request() -> impl Strategy<Value = Request> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        prop::collection::vec(any::<u32>(), 1..40),
    )
        .prop_map(|(t, i, o, ids)| Request {
            timestamp_ms: u64::from(t),
            input_length: u64::from(i),
            output_length: u64::from(o),
            hash_ids: ids.into_iter().map(u64::from).collect(),
        })
}

/// A valid trace: requests in arrival order.
fn trace() -> impl Strategy<Value = Vec<Request>> {
    prop::collection::vec(request(), 1..20).prop_map(|mut requests| {
        requests.sort_by_key(|r| r.timestamp_ms);
        requests
    })
}

/// A valid trace with extreme values: timestamps up to `u64::MAX`, lengths
/// anywhere in `u64`, block ids both small (shared prefixes) and anywhere.
fn extreme_trace() -> impl Strategy<Value = Vec<Request>> {
    let id = prop_oneof![0u64..6, any::<u64>(), Just(u64::MAX)];
    let length = prop_oneof![Just(0u64), 0u64..2_000, any::<u64>(), Just(u64::MAX)];
    let request = (
        prop_oneof![Just(0u64), 0u64..3, any::<u64>()],
        length.clone(),
        length,
        prop::collection::vec(id, 1..12),
    );
    (
        prop_oneof![Just(0u64), any::<u64>(), Just(u64::MAX - 5)],
        prop::collection::vec(request, 1..24),
    )
        .prop_map(|(start, parts)| {
            let mut clock = start;
            parts
                .into_iter()
                .map(|(gap, input_length, output_length, hash_ids)| {
                    clock = clock.saturating_add(gap);
                    Request {
                        timestamp_ms: clock,
                        input_length,
                        output_length,
                        hash_ids,
                    }
                })
                .collect()
        })
}

fn hold_mode() -> impl Strategy<Value = HoldMode> {
    prop_oneof![
        prop_oneof![Just(0usize), 0usize..4, Just(usize::MAX)].prop_map(HoldMode::Window),
        prop_oneof![Just(1e-300), Just(0.001), Just(30.0), Just(1e300)].prop_map(
            |decode_tokens_per_s| HoldMode::Time {
                decode_tokens_per_s
            }
        ),
    ]
}

/// What every run must satisfy, whatever the trace.
fn check_stats(stats: &RunStats, trace: &PreparedTrace) {
    assert_eq!(stats.requests, trace.requests.len() as u64);
    assert_eq!(stats.block_refs, trace.chains.total_refs() as u64);
    assert!(stats.block_hits <= stats.block_refs);
    assert!(stats.rejected <= stats.requests);
    assert!(stats.requests_with_hit <= stats.requests - stats.rejected);
    assert!((0.0..=1.0).contains(&stats.block_hit_rate()));
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("\"hash_ids\": [".to_string()),
        Just("]".to_string()),
        Just("\"timestamp\": ".to_string()),
        Just("\"input_length\": 1, ".to_string()),
        Just("\"output_length\": 2".to_string()),
        Just(",".to_string()),
        Just("\n".to_string()),
        Just("-1".to_string()),
        Just("1e309".to_string()),
        Just("18446744073709551616".to_string()),
        Just("null".to_string()),
        "[0-9]{1,20}",
        "\\PC{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn json_like_fragments_never_panic(parts in prop::collection::vec(fragment(), 0..40)) {
        check(&parts.concat());
    }

    #[test]
    fn written_traces_parse_back_identically(requests in trace()) {
        let mut out = Vec::new();
        write_jsonl(&requests, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let parsed = parse(Path::new("round-trip.jsonl"), &text).unwrap();
        prop_assert_eq!(parsed, requests);
    }

    #[test]
    fn corrupting_one_character_never_panics(
        requests in trace(),
        at in any::<prop::sample::Index>(),
        with in any::<char>(),
    ) {
        let mut out = Vec::new();
        write_jsonl(&requests, &mut out).unwrap();
        let mut chars: Vec<char> = String::from_utf8(out).unwrap().chars().collect();
        let i = at.index(chars.len());
        chars[i] = with;
        check(&chars.into_iter().collect::<String>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn extreme_traces_replay_and_report_without_panicking(
        requests in extreme_trace(),
        mode in hold_mode(),
        capacity in prop_oneof![Just(1usize), 1usize..16, Just(64)],
        pool_shards in prop_oneof![Just(1usize), 2usize..5],
    ) {
        let mut out = Vec::new();
        write_jsonl(&requests, &mut out).unwrap();
        let parsed = parse(Path::new("extreme.jsonl"), &String::from_utf8(out).unwrap()).unwrap();
        prop_assert_eq!(&parsed, &requests);
        let trace = PreparedTrace::new(
            Trace { name: "extreme.jsonl".into(), requests: parsed },
            mode,
        );
        let mut report = TraceReport::new(&trace);
        for &policy in EvictionPolicyKind::ALL {
            let stats = replay::run_sharded(&trace, policy, capacity, pool_shards, |_| {}).unwrap();
            check_stats(&stats, &trace);
            report.runs.push(RunReport::new(policy.name(), capacity, stats));
        }
        let optimum = belady::run(&trace, capacity, |_| {});
        check_stats(&optimum, &trace);
        report.runs.push(RunReport::new(BELADY, capacity, optimum));
        let report = Report { traces: vec![report] };
        prop_assert!(report::table(&report).contains("extreme.jsonl"));
        prop_assert!(report::json(&report).contains("\"runs\""));
    }
}
