//! What the router applies ([`IndexBatch`]) and how every encoding becomes
//! one.
//!
//! An index batch is one worker's events in stream order, with the stream
//! position when the source has one. Blocks are named by their 64-bit chained
//! sequence hash ([`BlockKey`]), the one name every format shares. This module
//! converts and never touches the index.

use kvblocks::events::{KvCacheEvents, KvbmCacheEvents, StreamPosition};
use kvblocks::LogicalLayoutHandle;
use kvblocks_wire::dynamo::{KvCacheEventData, RouterEvent};
use kvblocks_wire::kvbm::KvbmFrame;
use kvblocks_wire::vllm::{self, VllmBatch, VllmEvent};

pub use crate::table::BlockKey;

/// A worker's identity in the router.
///
/// kvblocks and kvbm-logical workers are named by their 128-bit instance id;
/// a Dynamo worker by `worker_id` and `dp_rank` ([`WorkerId::dynamo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u128);

impl WorkerId {
    /// The id of a Dynamo worker's data-parallel rank.
    pub const fn dynamo(worker_id: u64, dp_rank: u32) -> Self {
        Self(((worker_id as u128) << 32) | dp_rank as u128)
    }
}

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "worker {:#x}", self.0)
    }
}

/// One change to a worker's blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexEvent {
    /// A chain of blocks was stored: `blocks[0]`'s parent is `parent`, every
    /// later block's parent the block before it.
    Stored {
        /// The tier.
        tier: LogicalLayoutHandle,
        /// The first block's parent, if known.
        parent: Option<BlockKey>,
        /// The blocks, parent first.
        blocks: Vec<BlockKey>,
    },
    /// Blocks left the tier.
    Removed {
        /// The tier.
        tier: LogicalLayoutHandle,
        /// The blocks.
        blocks: Vec<BlockKey>,
    },
    /// Every block of `tier` left (`None`: of every tier).
    Cleared {
        /// The tier, or all of them.
        tier: Option<LogicalLayoutHandle>,
    },
}

/// One worker's events, in order, with their stream position if the source
/// numbers its batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexBatch {
    /// The worker.
    pub worker: WorkerId,
    /// Where the batch sits in the worker's stream (`None`: unsequenced
    /// source, applied as it comes).
    pub position: Option<StreamPosition>,
    /// The events.
    pub events: Vec<IndexEvent>,
}

/// A medium or tier name the router does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown medium {0:?}: the event's tier is unknown")]
pub struct UnknownMedium(pub String);

impl IndexBatch {
    /// An unsequenced batch of one store of `blocks` in `tier`, parent not
    /// named (a source of your own, a test, a benchmark).
    pub fn stored(worker: WorkerId, tier: LogicalLayoutHandle, blocks: Vec<BlockKey>) -> Self {
        Self {
            worker,
            position: None,
            events: vec![IndexEvent::Stored {
                tier,
                parent: None,
                blocks,
            }],
        }
    }

    /// An unsequenced batch of one removal of `blocks` from `tier`.
    pub fn removed(worker: WorkerId, tier: LogicalLayoutHandle, blocks: Vec<BlockKey>) -> Self {
        Self {
            worker,
            position: None,
            events: vec![IndexEvent::Removed { tier, blocks }],
        }
    }

    /// A kvblocks batch (from the core's events manager or a decoded
    /// extended frame), sequenced.
    pub fn from_kvblocks(batch: &KvbmCacheEvents) -> Self {
        Self {
            worker: WorkerId(batch.instance_id),
            position: Some(batch.position),
            events: events_of(batch.tier, &batch.events),
        }
    }

    /// A decoded kvbm frame: sequenced if it carried our extension, else
    /// (kvbm-logical's own frames) unsequenced and in G1.
    pub fn from_kvbm_frame(frame: &KvbmFrame) -> Self {
        let (tier, position) = match frame.header {
            Some(header) => (header.tier, Some(header.position)),
            None => (LogicalLayoutHandle::G1, None),
        };
        Self {
            worker: WorkerId(frame.instance_id),
            position,
            events: events_of(tier, &frame.events),
        }
    }

    /// A vLLM or SGLang batch from `worker`; `position` comes from the
    /// transport (vLLM's ZMQ frame carries the sequence number).
    ///
    /// # Errors
    ///
    /// [`UnknownMedium`] if an event names a medium with no tier.
    pub fn from_vllm(
        worker: WorkerId,
        position: Option<StreamPosition>,
        batch: &VllmBatch,
    ) -> Result<Self, UnknownMedium> {
        let tier = |medium: &Option<String>| {
            vllm::tier_of_medium(medium.as_deref()).map_err(UnknownMedium)
        };
        let mut events = Vec::with_capacity(batch.events.len());
        for event in &batch.events {
            events.push(match event {
                VllmEvent::BlockStored(stored) => IndexEvent::Stored {
                    tier: tier(&stored.medium)?,
                    parent: stored.parent_block_hash,
                    blocks: stored.block_hashes.clone(),
                },
                VllmEvent::BlockRemoved(removed) => IndexEvent::Removed {
                    tier: tier(&removed.medium)?,
                    blocks: removed.block_hashes.clone(),
                },
                VllmEvent::AllBlocksCleared { medium: None } => IndexEvent::Cleared { tier: None },
                VllmEvent::AllBlocksCleared { medium } => IndexEvent::Cleared {
                    tier: Some(tier(medium)?),
                },
            });
        }
        Ok(Self {
            worker,
            position,
            events,
        })
    }

    /// A Dynamo router event; its `event_id` may serve as the sequence
    /// number of `epoch` (pass `None` to apply it unsequenced).
    pub fn from_dynamo(event: &RouterEvent, epoch: Option<u64>) -> Self {
        let tier = LogicalLayoutHandle::from(event.storage_tier);
        let events = vec![match &event.event.data {
            KvCacheEventData::Stored(stored) => IndexEvent::Stored {
                tier,
                parent: stored.parent_hash,
                blocks: stored.blocks.iter().map(|b| b.block_hash).collect(),
            },
            KvCacheEventData::Removed(removed) => IndexEvent::Removed {
                tier,
                blocks: removed.block_hashes.clone(),
            },
            // Dynamo clears a whole worker (rank), every tier.
            KvCacheEventData::Cleared => IndexEvent::Cleared { tier: None },
        }];
        Self {
            worker: WorkerId::dynamo(event.worker_id, event.event.dp_rank),
            position: epoch.map(|epoch| StreamPosition {
                epoch,
                seq: event.event.event_id,
            }),
            events,
        }
    }

    /// Block events in the batch (a clear counts as one).
    pub fn len(&self) -> usize {
        self.events
            .iter()
            .map(|event| match event {
                IndexEvent::Stored { blocks, .. } | IndexEvent::Removed { blocks, .. } => {
                    blocks.len()
                }
                IndexEvent::Cleared { .. } => 1,
            })
            .sum()
    }

    /// Whether the batch has no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

fn events_of(tier: LogicalLayoutHandle, events: &KvCacheEvents) -> Vec<IndexEvent> {
    match events {
        KvCacheEvents::Create(blocks) => kvblocks_wire::chain_runs(blocks)
            .map(|run| IndexEvent::Stored {
                tier,
                parent: run[0].parent,
                blocks: run.iter().map(|b| b.hash.current_sequence_hash()).collect(),
            })
            .collect(),
        KvCacheEvents::Remove(hashes) => vec![IndexEvent::Removed {
            tier,
            blocks: hashes.iter().map(|h| h.current_sequence_hash()).collect(),
        }],
        KvCacheEvents::Clear => vec![IndexEvent::Cleared { tier: Some(tier) }],
        KvCacheEvents::Shutdown => Vec::new(),
        // Stores and removals in their order: each run as its own kind.
        KvCacheEvents::Mixed(_) => events
            .by_kind()
            .iter()
            .flat_map(|part| events_of(tier, part))
            .collect(),
    }
}
