//! Encodings of kvblocks' KV cache events: kvbm-logical's MessagePack frame,
//! vLLM's (and SGLang's) `KVEventBatch`, and Dynamo's router event in JSON.
//!
//! The core crate (`kvblocks::events`) owns the event model and knows no
//! format; this crate owns the bytes. Each format has its own module with an
//! `encode` and a `decode`.
//!
//! # Hostile input
//!
//! Every decoder takes a byte slice and returns a typed [`DecodeError`] for
//! anything that is not a valid frame: truncated, corrupt, or built to hurt.
//! None panics, none recurses on the input's nesting, and none allocates more
//! than the input's size warrants (every length prefix is checked against the
//! bytes left before anything is reserved). `tests/hostile_input.rs` checks
//! this with random bytes and mutated valid frames on every test run, and
//! `fuzz/` holds cargo-fuzz targets and their corpus.
//!
//! # Formats
//!
//! - [`kvbm`]: bit-compatible with kvbm-logical 1.6.1, plus an extended frame
//!   kvbm-logical still reads that carries tier, block size, stream position
//!   and parents.
//! - [`vllm`]: map-encoded (current vLLM) and array-like (older vLLM,
//!   SGLang) batches.
//! - [`dynamo`]: `RouterEvent` JSON.
//! - [`snapshot`]: a worker's registered set with its stream position, for a
//!   consumer that resynchronises by asking the worker.

#![warn(missing_docs)]

pub mod dynamo;
mod error;
pub mod kvbm;
pub mod msgpack;
pub mod snapshot;
pub mod vllm;

pub use error::{DecodeError, DecodeErrorKind, EncodeError};

use kvblocks::events::{is_parent_of, StoredBlock};

/// Splits stored blocks into runs in which every block is the child of the
/// one before (as far as both its recorded parent and its key say): the
/// chains vLLM's `BlockStored` and Dynamo's `stored` events carry.
pub fn chain_runs(blocks: &[StoredBlock]) -> impl Iterator<Item = &[StoredBlock]> {
    blocks.chunk_by(|parent, child| {
        child.parent == Some(parent.hash.current_sequence_hash())
            && is_parent_of(parent.hash, child.hash)
    })
}
