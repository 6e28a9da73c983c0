//! The trace parser against hostile input: random bytes, random JSON-ish
//! fragments and single-character corruptions of valid traces. It must return
//! a request list or a typed error naming a line that exists — never panic —
//! and writing then parsing a trace gives the same requests back.

use std::path::Path;

use kvblocks_sim::trace::{parse, write_jsonl, Request, TraceError};
use proptest::prelude::*;

fn error_line(err: &TraceError) -> Option<usize> {
    match err {
        TraceError::Malformed { line, .. }
        | TraceError::EmptyHashIds { line, .. }
        | TraceError::TooManyBlocks { line, .. } => Some(*line),
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
    fn written_traces_parse_back_identically(requests in prop::collection::vec(request(), 1..20)) {
        let mut out = Vec::new();
        write_jsonl(&requests, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let parsed = parse(Path::new("round-trip.jsonl"), &text).unwrap();
        prop_assert_eq!(parsed, requests);
    }

    #[test]
    fn corrupting_one_character_never_panics(
        requests in prop::collection::vec(request(), 1..6),
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
