//! Mooncake JSONL traces: one request per line,
//! `{"timestamp": ms, "input_length": tokens, "output_length": tokens, "hash_ids": [..]}`.
//!
//! This module owns reading and writing that format and nothing else. Every
//! error names the file and the 1-based line it was found on, so a bad trace
//! is fixed from one message. It never interprets `hash_ids` beyond checking
//! that the list is not empty (that is [`crate::chain`]'s job).
//!
//! Blank lines are skipped; unknown fields are ignored (later Mooncake
//! releases add some); `input_length` is not checked against the number of
//! blocks. A request must be a JSON object (serde would also read the four
//! fields from an array; a trace line written that way is an error), and
//! requests must come in arrival order: a timestamp earlier than the one
//! before it is an error naming its line, in every hold mode (both modes
//! replay in file order, so a file out of order is corrupt or two traces
//! concatenated; sort it by timestamp first).

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One request of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Arrival time, milliseconds since the trace's start (`timestamp`).
    #[serde(rename = "timestamp")]
    pub timestamp_ms: u64,
    /// Prompt length in tokens.
    pub input_length: u64,
    /// Number of generated tokens.
    pub output_length: u64,
    /// Prefix block ids, one per 512-token block of the prompt; equal ids at
    /// the start of two requests mean a shared prefix.
    pub hash_ids: Vec<u64>,
}

/// A trace that could not be read. Each variant names the file, and the
/// line (1-based) when one line is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("{}: cannot read trace: {source}", path.display())]
    Io {
        /// The trace file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A line is not a JSON request: bad JSON, a missing field, a wrong type.
    #[error("{}:{line}:{column}: malformed request: {message}", path.display())]
    Malformed {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// 1-based column where the parser stopped.
        column: usize,
        /// The parser's message, without its position.
        message: String,
    },
    /// A request has no blocks at all.
    #[error("{}:{line}: `hash_ids` is empty: a request needs at least one block", path.display())]
    EmptyHashIds {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A request arrives before the request above it.
    #[error("{}:{line}: timestamp {timestamp} is earlier than {previous} on line {previous_line}: requests must be in arrival order", path.display())]
    TimeGoesBack {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The request's timestamp.
        timestamp: u64,
        /// The previous request's timestamp.
        previous: u64,
        /// The previous request's line.
        previous_line: usize,
    },
    /// A request has more blocks than a sequence hash can number.
    #[error("{}:{line}: {blocks} blocks in one request exceed the limit of {limit}", path.display())]
    TooManyBlocks {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Blocks in the request.
        blocks: usize,
        /// The largest number of blocks one request may have.
        limit: usize,
    },
    /// The file holds no request.
    #[error("{}: the trace holds no request", path.display())]
    NoRequests {
        /// The trace file.
        path: PathBuf,
    },
}

/// The most blocks one request may have: positions must fit a
/// [`kvblocks::SequenceHash`] (below 2^24).
pub const MAX_BLOCKS_PER_REQUEST: usize = 1 << 24;

/// A named list of requests: a trace file or a generated workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Where it came from: the file path as given, or a workload's label.
    pub name: String,
    /// The requests, in arrival order.
    pub requests: Vec<Request>,
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} requests)", self.name, self.requests.len())
    }
}

/// Reads a Mooncake JSONL trace file, gzip-compressed if its name ends in
/// `.gz` (real traces ship that way).
pub fn load(path: &Path) -> Result<Trace, TraceError> {
    let io_error = |source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = if path.extension().is_some_and(|ext| ext == "gz") {
        let file = std::fs::File::open(path).map_err(io_error)?;
        let mut text = String::new();
        // A corrupt stream or a non-UTF-8 payload is an I/O error naming the file.
        io::Read::read_to_string(
            &mut flate2::read::MultiGzDecoder::new(io::BufReader::new(file)),
            &mut text,
        )
        .map_err(io_error)?;
        text
    } else {
        std::fs::read_to_string(path).map_err(io_error)?
    };
    let requests = parse(path, &text)?;
    Ok(Trace {
        name: path.display().to_string(),
        requests,
    })
}

/// Parses Mooncake JSONL text; `path` only names the source in errors.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Request>, TraceError> {
    let mut requests: Vec<Request> = Vec::with_capacity(text.len() / 256 + 1);
    let mut previous_line = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let Some(start) = raw.find(|c: char| !c.is_whitespace()) else {
            continue;
        };
        if !raw[start..].starts_with('{') {
            return Err(TraceError::Malformed {
                path: path.to_path_buf(),
                line,
                column: raw[..start].chars().count() + 1,
                message: "a request must be a JSON object `{...}`".to_string(),
            });
        }
        let request: Request =
            serde_json::from_str(raw).map_err(|err| malformed(path, line, &err))?;
        if let Some(previous) = requests.last() {
            if request.timestamp_ms < previous.timestamp_ms {
                return Err(TraceError::TimeGoesBack {
                    path: path.to_path_buf(),
                    line,
                    timestamp: request.timestamp_ms,
                    previous: previous.timestamp_ms,
                    previous_line,
                });
            }
        }
        previous_line = line;
        if request.hash_ids.is_empty() {
            return Err(TraceError::EmptyHashIds {
                path: path.to_path_buf(),
                line,
            });
        }
        if request.hash_ids.len() > MAX_BLOCKS_PER_REQUEST {
            return Err(TraceError::TooManyBlocks {
                path: path.to_path_buf(),
                line,
                blocks: request.hash_ids.len(),
                limit: MAX_BLOCKS_PER_REQUEST,
            });
        }
        requests.push(request);
    }
    if requests.is_empty() {
        return Err(TraceError::NoRequests {
            path: path.to_path_buf(),
        });
    }
    Ok(requests)
}

/// serde_json's message ends in " at line L column C" (of the one line it
/// was given); keep the message and report the column separately.
fn malformed(path: &Path, line: usize, err: &serde_json::Error) -> TraceError {
    let full = err.to_string();
    let message = match full.rfind(" at line ") {
        Some(cut) => full[..cut].to_string(),
        None => full,
    };
    TraceError::Malformed {
        path: path.to_path_buf(),
        line,
        column: err.column().max(1),
        message,
    }
}

/// Writes requests as Mooncake JSONL, one line each.
pub fn write_jsonl<W: Write>(requests: &[Request], mut out: W) -> io::Result<()> {
    for request in requests {
        serde_json::to_writer(&mut out, request)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<Request>, TraceError> {
        parse(Path::new("t.jsonl"), text)
    }

    #[test]
    fn parses_mooncake_lines_and_skips_blank_ones() {
        let text = "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 3, \"hash_ids\": [0, 1]}\n\n\
                    {\"timestamp\": 40, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [0], \"extra\": true}\n";
        let requests = parse_str(text).unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].hash_ids, vec![0, 1]);
        assert_eq!(requests[1].timestamp_ms, 40);
    }

    #[test]
    fn malformed_json_names_file_line_and_column() {
        let text = "{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1]}\n{\"timestamp\": 1,,}\n";
        let err = parse_str(text).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("t.jsonl:2:"), "{message}");
        assert!(!message.contains("at line"), "{message}");
    }

    #[test]
    fn missing_field_is_named() {
        let err =
            parse_str("{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1}").unwrap_err();
        assert!(matches!(err, TraceError::Malformed { line: 1, .. }));
        assert!(
            err.to_string().contains("missing field `hash_ids`"),
            "{err}"
        );
    }

    #[test]
    fn empty_hash_ids_are_rejected_with_their_line() {
        let text = "{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1]}\n\
                    {\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": []}\n";
        let err = parse_str(text).unwrap_err();
        assert!(matches!(err, TraceError::EmptyHashIds { line: 2, .. }));
        assert_eq!(
            err.to_string(),
            "t.jsonl:2: `hash_ids` is empty: a request needs at least one block"
        );
    }

    #[test]
    fn a_request_written_as_a_json_array_is_refused() {
        let err = parse_str("  [0, 1, 1, [1]]").unwrap_err();
        assert!(
            matches!(
                err,
                TraceError::Malformed {
                    line: 1,
                    column: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("JSON object"), "{err}");
    }

    #[test]
    fn timestamps_may_repeat_but_not_go_back() {
        let at = |ms: u64| {
            format!("{{\"timestamp\": {ms}, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1]}}\n")
        };
        assert_eq!(parse_str(&[at(5), at(5), at(6)].concat()).unwrap().len(), 3);
        let err = parse_str(&[at(5), at(9), "\n".into(), at(7)].concat()).unwrap_err();
        assert!(
            matches!(
                err,
                TraceError::TimeGoesBack {
                    line: 4,
                    timestamp: 7,
                    previous: 9,
                    previous_line: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "t.jsonl:4: timestamp 7 is earlier than 9 on line 2: requests must be in arrival order"
        );
    }

    #[test]
    fn an_empty_file_is_an_error() {
        assert!(matches!(
            parse_str("\n  \n"),
            Err(TraceError::NoRequests { .. })
        ));
    }

    #[test]
    fn written_jsonl_reads_back() {
        let requests = vec![Request {
            timestamp_ms: 5,
            input_length: 1000,
            output_length: 7,
            hash_ids: vec![3, 4],
        }];
        let mut bytes = Vec::new();
        write_jsonl(&requests, &mut bytes).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("{\"timestamp\":5,"));
        assert_eq!(parse_str(&text).unwrap(), requests);
    }

    #[test]
    fn gzip_traces_read_like_plain_ones_and_corrupt_ones_name_the_file() {
        use std::io::Write as _;
        let requests = vec![
            Request {
                timestamp_ms: 1,
                input_length: 1024,
                output_length: 3,
                hash_ids: vec![1, 2],
            },
            Request {
                timestamp_ms: 2,
                input_length: 512,
                output_length: 9,
                hash_ids: vec![1],
            },
        ];
        let dir = std::env::temp_dir().join(format!("kvsim-gz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.jsonl.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        write_jsonl(&requests, &mut encoder).unwrap();
        std::fs::write(&path, encoder.finish().unwrap()).unwrap();
        assert_eq!(load(&path).unwrap().requests, requests);

        let corrupt = dir.join("bad.jsonl.gz");
        std::fs::File::create(&corrupt)
            .unwrap()
            .write_all(b"not gzip at all")
            .unwrap();
        let err = load(&corrupt).unwrap_err();
        assert!(matches!(err, TraceError::Io { .. }), "{err}");
        assert!(err.to_string().contains("bad.jsonl.gz"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
