//! Dynamo's router event (`RouterEvent`) as JSON, so a Dynamo router can
//! consume our workers and we can consume Dynamo's.
//!
//! ```text
//! { "worker_id": 7, "storage_tier": "device",
//!   "event": { "event_id": 12, "dp_rank": 0,
//!              "data": { "stored": { "parent_hash": 42 | null, "start_position": 3,
//!                                    "blocks": [ { "block_hash": 1, "tokens_hash": 2 } ] } }
//!                    | { "removed": { "block_hashes": [1, 2] } }
//!                    | "cleared" } }
//! ```
//!
//! `block_hash` and `parent_hash` are 64-bit chained sequence hashes (our
//! [`SequenceHash::current_sequence_hash`]); `tokens_hash` is the hash of
//! the block's own tokens, which our events do not carry: [`from_kvblocks`]
//! takes a function that supplies it (a worker that keeps token hashes passes
//! a lookup; [`sequence_hash_as_tokens_hash`] is the stand-in when it has
//! none, which Dynamo's radix tree can then only match against requests
//! hashed the same way). Fields we do not model (multimodal info, residency
//! domains) are ignored on input and omitted on output.

use kvblocks::events::{KvCacheEvents, KvbmCacheEvents};
use kvblocks::{LogicalLayoutHandle, SequenceHash};
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, DecodeErrorKind};

/// Dynamo's storage tier names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageTier {
    /// GPU memory (G1).
    #[default]
    Device,
    /// Pinned host memory (G2).
    HostPinned,
    /// Local disk (G3).
    Disk,
    /// Outside the node (G4).
    External,
}

impl From<LogicalLayoutHandle> for StorageTier {
    fn from(tier: LogicalLayoutHandle) -> Self {
        match tier {
            LogicalLayoutHandle::G1 => Self::Device,
            LogicalLayoutHandle::G2 => Self::HostPinned,
            LogicalLayoutHandle::G3 => Self::Disk,
            LogicalLayoutHandle::G4 => Self::External,
        }
    }
}

impl From<StorageTier> for LogicalLayoutHandle {
    fn from(tier: StorageTier) -> Self {
        match tier {
            StorageTier::Device => Self::G1,
            StorageTier::HostPinned => Self::G2,
            StorageTier::Disk => Self::G3,
            StorageTier::External => Self::G4,
        }
    }
}

/// One event of one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterEvent {
    /// The worker.
    pub worker_id: u64,
    /// The tier the event is about.
    #[serde(default)]
    pub storage_tier: StorageTier,
    /// The event.
    pub event: KvCacheEvent,
}

/// An event with its per-worker id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCacheEvent {
    /// Increases by one per event of the worker.
    pub event_id: u64,
    /// What happened.
    pub data: KvCacheEventData,
    /// The data-parallel rank (0 without data parallelism).
    #[serde(default)]
    pub dp_rank: u32,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvCacheEventData {
    /// Blocks were stored.
    Stored(KvCacheStoreData),
    /// Blocks were removed.
    Removed(KvCacheRemoveData),
    /// Every block of the worker (and rank) was removed.
    Cleared,
}

/// A chain of stored blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCacheStoreData {
    /// The first block's parent, if any.
    pub parent_hash: Option<u64>,
    /// The first block's position in its sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_position: Option<u32>,
    /// The blocks, parent first.
    pub blocks: Vec<KvCacheStoredBlockData>,
}

/// One stored block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCacheStoredBlockData {
    /// Its chained sequence hash.
    pub block_hash: u64,
    /// The hash of its own tokens.
    pub tokens_hash: u64,
}

/// Removed blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCacheRemoveData {
    /// Their chained sequence hashes.
    pub block_hashes: Vec<u64>,
}

/// The stand-in `tokens_hash` when the worker does not know its blocks'
/// token hashes: the block's own sequence hash.
pub fn sequence_hash_as_tokens_hash(hash: SequenceHash) -> u64 {
    hash.current_sequence_hash()
}

/// Our batch as Dynamo events of `worker_id` / `dp_rank`, numbered from
/// `*next_event_id` on (which is advanced): one `stored` per run of
/// parent-child blocks, one `removed`, one `cleared`; a shutdown gives none;
/// a mixed batch gives those of its runs, in order.
pub fn from_kvblocks(
    batch: &KvbmCacheEvents,
    worker_id: u64,
    dp_rank: u32,
    next_event_id: &mut u64,
    tokens_hash: impl Fn(SequenceHash) -> u64,
) -> Vec<RouterEvent> {
    let mut data = Vec::new();
    for part in batch.events.by_kind() {
        match &*part {
            KvCacheEvents::Create(blocks) => {
                for run in crate::chain_runs(blocks) {
                    data.push(KvCacheEventData::Stored(KvCacheStoreData {
                        parent_hash: run[0].parent,
                        start_position: u32::try_from(run[0].hash.position()).ok(),
                        blocks: run
                            .iter()
                            .map(|b| KvCacheStoredBlockData {
                                block_hash: b.hash.current_sequence_hash(),
                                tokens_hash: tokens_hash(b.hash),
                            })
                            .collect(),
                    }));
                }
            }
            KvCacheEvents::Remove(hashes) => {
                data.push(KvCacheEventData::Removed(KvCacheRemoveData {
                    block_hashes: hashes.iter().map(|h| h.current_sequence_hash()).collect(),
                }))
            }
            KvCacheEvents::Clear => data.push(KvCacheEventData::Cleared),
            KvCacheEvents::Shutdown => {}
            // `by_kind` splits a mixed batch into its runs.
            KvCacheEvents::Mixed(_) => {}
        }
    }
    data.into_iter()
        .map(|data| {
            let event_id = *next_event_id;
            *next_event_id += 1;
            RouterEvent {
                worker_id,
                storage_tier: batch.tier.into(),
                event: KvCacheEvent {
                    event_id,
                    data,
                    dp_rank,
                },
            }
        })
        .collect()
}

/// One event as JSON.
pub fn encode(event: &RouterEvent) -> Vec<u8> {
    // Serialising these plain structs to a Vec cannot fail.
    serde_json::to_vec(event).unwrap_or_default()
}

/// Reads one JSON event.
///
/// # Errors
///
/// A [`DecodeError`] with serde_json's message and the byte offset of the
/// problem's line start (JSON errors report line and column); never a panic.
pub fn decode(bytes: &[u8]) -> Result<RouterEvent, DecodeError> {
    serde_json::from_slice(bytes).map_err(|err| DecodeError {
        offset: line_offset(bytes, err.line()) + err.column().saturating_sub(1),
        kind: DecodeErrorKind::Json(err.to_string()),
    })
}

fn line_offset(bytes: &[u8], line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(line - 2)
        .map_or(bytes.len(), |(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvblocks::events::{BlockChange, StoredBlock, StreamPosition};

    #[test]
    fn a_mixed_batch_gives_its_runs_in_order_with_consecutive_ids() {
        let root = SequenceHash::root(1);
        let child = root.extend(2);
        let batch = KvbmCacheEvents {
            events: KvCacheEvents::Mixed(vec![
                BlockChange::Removed(SequenceHash::root(7)),
                BlockChange::Stored(StoredBlock::orphan(root)),
                BlockChange::Stored(StoredBlock {
                    hash: child,
                    parent: Some(root.current_sequence_hash()),
                }),
                BlockChange::Removed(root),
            ]),
            instance_id: 3,
            tier: kvblocks::LogicalLayoutHandle::G1,
            block_size: 16,
            position: StreamPosition { epoch: 1, seq: 0 },
        };
        let mut next = 10;
        let events = from_kvblocks(&batch, 3, 0, &mut next, sequence_hash_as_tokens_hash);
        let shapes: Vec<_> = events
            .iter()
            .map(|e| match &e.event.data {
                KvCacheEventData::Stored(s) => (e.event.event_id, "stored", s.blocks.len()),
                KvCacheEventData::Removed(r) => (e.event.event_id, "removed", r.block_hashes.len()),
                KvCacheEventData::Cleared => (e.event.event_id, "cleared", 0),
            })
            .collect();
        assert_eq!(
            shapes,
            [(10, "removed", 1), (11, "stored", 2), (12, "removed", 1)]
        );
        assert_eq!(next, 13);

        let vllm = crate::vllm::from_kvblocks(&batch, 0.0);
        let kinds: Vec<_> = vllm
            .events
            .iter()
            .map(|e| match e {
                crate::vllm::VllmEvent::BlockStored(s) => ("stored", s.block_hashes.len()),
                crate::vllm::VllmEvent::BlockRemoved(r) => ("removed", r.block_hashes.len()),
                crate::vllm::VllmEvent::AllBlocksCleared { .. } => ("cleared", 0),
            })
            .collect();
        assert_eq!(kinds, [("removed", 1), ("stored", 2), ("removed", 1)]);
    }

    #[test]
    fn the_json_has_dynamos_field_names() {
        let event = RouterEvent {
            worker_id: 7,
            storage_tier: StorageTier::HostPinned,
            event: KvCacheEvent {
                event_id: 3,
                data: KvCacheEventData::Stored(KvCacheStoreData {
                    parent_hash: None,
                    start_position: Some(0),
                    blocks: vec![KvCacheStoredBlockData {
                        block_hash: u64::MAX,
                        tokens_hash: 2,
                    }],
                }),
                dp_rank: 1,
            },
        };
        let json = String::from_utf8(encode(&event)).unwrap();
        assert_eq!(
            json,
            r#"{"worker_id":7,"storage_tier":"host_pinned","event":{"event_id":3,"data":{"stored":{"parent_hash":null,"start_position":0,"blocks":[{"block_hash":18446744073709551615,"tokens_hash":2}]}},"dp_rank":1}}"#
        );
        assert_eq!(decode(json.as_bytes()), Ok(event));
        let cleared = r#"{"worker_id":1,"event":{"event_id":0,"data":"cleared"}}"#;
        let decoded = decode(cleared.as_bytes()).unwrap();
        assert_eq!(decoded.storage_tier, StorageTier::Device);
        assert_eq!(decoded.event.data, KvCacheEventData::Cleared);
    }
}
