//! Helpers shared by the integration tests (each test file includes this
//! module with `mod common;`).
#![allow(dead_code)]

pub mod cli;

use std::path::PathBuf;

use kvblocks_sim::prepare::PreparedTrace;
use kvblocks_sim::schedule::HoldMode;
use kvblocks_sim::trace::{Request, Trace};

/// A trace from hand-written block id chains, one request per millisecond.
pub fn hand_trace(chains: &[&[u64]], mode: HoldMode) -> PreparedTrace {
    let requests = chains
        .iter()
        .enumerate()
        .map(|(i, ids)| Request {
            timestamp_ms: i as u64,
            input_length: ids.len() as u64 * 512,
            output_length: 1,
            hash_ids: ids.to_vec(),
        })
        .collect();
    PreparedTrace::new(
        Trace {
            name: "hand".into(),
            requests,
        },
        mode,
    )
}

/// The Mooncake synthetic trace beside the repository, if it is there.
pub fn synthetic_trace() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/traces/synthetic_trace.jsonl");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "note: {} is absent; skipping the checks on the Mooncake synthetic trace",
            path.display()
        );
        None
    }
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kvsim-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
