//! What a stream of batches adds up to: a worker's registered set per tier
//! ([`RegisteredSet`]) and a point-in-time copy of it ([`WorkerSnapshot`]).
//!
//! This module is the reference consumer. It checks stream positions (no gap,
//! no duplicate, no stale epoch) and exactly-once content (no block stored
//! twice, no removal of a block it does not hold), so tests can replay a
//! manager's events and compare with the manager's own view. It never emits
//! anything.

use std::collections::HashSet;

use super::protocol::{BlockChange, InstanceId, KvCacheEvents, KvbmCacheEvents, StreamPosition};
use crate::{LogicalLayoutHandle, SequenceHash};

/// One tier's blocks in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierSnapshot {
    /// The tier.
    pub tier: LogicalLayoutHandle,
    /// Its registered blocks, in no particular order.
    pub hashes: Vec<SequenceHash>,
}

/// A worker's registered set per tier, valid at a stream position.
///
/// `position` is the first batch the snapshot does NOT reflect: a consumer
/// that loads the snapshot continues with the batch at `position` (same
/// epoch, that sequence number) and ignores older ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// The worker.
    pub instance_id: InstanceId,
    /// Tokens per block on the worker.
    pub block_size: u32,
    /// The first batch not reflected in `tiers`.
    pub position: StreamPosition,
    /// The registered blocks, per tier (tiers with no block may be left out).
    pub tiers: Vec<TierSnapshot>,
}

impl WorkerSnapshot {
    /// Blocks in the snapshot, over all tiers.
    pub fn len(&self) -> usize {
        self.tiers.iter().map(|tier| tier.hashes.len()).sum()
    }

    /// Whether the snapshot holds no block.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A batch that did not fit the stream, or content that broke exactly-once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Batches are missing between what was applied and this one; nothing was applied.
    #[error("gap: expected batch {expected:?}, got {got:?}")]
    Gap {
        /// The position that should have come next.
        expected: StreamPosition,
        /// The position that came.
        got: StreamPosition,
    },
    /// This batch was applied before; nothing was applied.
    #[error("duplicate: batch {got:?} is older than the next expected {expected:?}")]
    Duplicate {
        /// The position that should have come next.
        expected: StreamPosition,
        /// The position that came.
        got: StreamPosition,
    },
    /// The batch is from an earlier incarnation of the worker; nothing was applied.
    #[error("stale epoch: batch {got:?} is from before epoch {current}")]
    StaleEpoch {
        /// The epoch being followed.
        current: u64,
        /// The position that came.
        got: StreamPosition,
    },
    /// A block was stored while already held (the batch was applied anyway).
    #[error("block {hash:?} stored twice in {tier}")]
    StoredTwice {
        /// The tier.
        tier: LogicalLayoutHandle,
        /// The block.
        hash: SequenceHash,
    },
    /// A block not held was removed (the batch was applied anyway).
    #[error("block {hash:?} removed from {tier} but not held there")]
    RemovedUnknown {
        /// The tier.
        tier: LogicalLayoutHandle,
        /// The block.
        hash: SequenceHash,
    },
}

/// The registered set a worker's event stream describes.
///
/// ```
/// use kvblocks::events::{KvCacheEvents, KvbmCacheEvents, RegisteredSet, StoredBlock, StreamPosition};
/// use kvblocks::{LogicalLayoutHandle::G1, SequenceHash};
///
/// let root = SequenceHash::root(5);
/// let batch = |seq, events| KvbmCacheEvents {
///     events, instance_id: 1, tier: G1, block_size: 16, position: StreamPosition { epoch: 1, seq },
/// };
/// let mut set = RegisteredSet::new();
/// set.apply(&batch(0, KvCacheEvents::Create(vec![StoredBlock::orphan(root)])))?;
/// assert!(set.contains(G1, root));
/// assert!(set.apply(&batch(2, KvCacheEvents::Clear)).is_err(), "batch 1 is missing");
/// set.apply(&batch(1, KvCacheEvents::Remove(vec![root])))?;
/// assert_eq!(set.len(), 0);
/// # Ok::<(), kvblocks::events::ReplayError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct RegisteredSet {
    tiers: [HashSet<SequenceHash>; 4],
    next: Option<StreamPosition>,
}

impl RegisteredSet {
    /// An empty set that expects the first batch of some epoch (sequence 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// The set a snapshot describes, expecting the batch at its position next.
    pub fn from_snapshot(snapshot: &WorkerSnapshot) -> Self {
        let mut set = Self::new();
        for tier in &snapshot.tiers {
            set.tiers[tier.tier.index()].extend(tier.hashes.iter().copied());
        }
        set.next = Some(snapshot.position);
        set
    }

    /// The position of the batch expected next (`None` before the first).
    pub fn next_position(&self) -> Option<StreamPosition> {
        self.next
    }

    /// Applies one batch.
    ///
    /// # Errors
    ///
    /// A position error ([`ReplayError::Gap`], [`ReplayError::Duplicate`],
    /// [`ReplayError::StaleEpoch`]) leaves the set unchanged. A content error
    /// ([`ReplayError::StoredTwice`], [`ReplayError::RemovedUnknown`]) is
    /// reported after the whole batch was applied with set semantics.
    pub fn apply(&mut self, batch: &KvbmCacheEvents) -> Result<(), ReplayError> {
        let got = batch.position;
        match self.next {
            None if got.seq == 0 => {}
            None => {
                return Err(ReplayError::Gap {
                    expected: StreamPosition {
                        epoch: got.epoch,
                        seq: 0,
                    },
                    got,
                })
            }
            Some(next) if got.epoch < next.epoch => {
                return Err(ReplayError::StaleEpoch {
                    current: next.epoch,
                    got,
                })
            }
            Some(next) if got.epoch > next.epoch => {
                if got.seq != 0 {
                    return Err(ReplayError::Gap {
                        expected: StreamPosition {
                            epoch: got.epoch,
                            seq: 0,
                        },
                        got,
                    });
                }
                // A new incarnation starts with nothing registered.
                self.clear_all();
            }
            Some(next) if got.seq < next.seq => {
                return Err(ReplayError::Duplicate {
                    expected: next,
                    got,
                })
            }
            Some(next) if got.seq > next.seq => {
                return Err(ReplayError::Gap {
                    expected: next,
                    got,
                })
            }
            Some(_) => {}
        }
        self.next = Some(got.next());
        self.apply_content(batch.tier, &batch.events)
    }

    fn apply_content(
        &mut self,
        tier: LogicalLayoutHandle,
        events: &KvCacheEvents,
    ) -> Result<(), ReplayError> {
        let set = &mut self.tiers[tier.index()];
        let mut first_error = None;
        match events {
            KvCacheEvents::Create(blocks) => {
                for block in blocks {
                    if !set.insert(block.hash) && first_error.is_none() {
                        first_error = Some(ReplayError::StoredTwice {
                            tier,
                            hash: block.hash,
                        });
                    }
                }
            }
            KvCacheEvents::Remove(hashes) => {
                for &hash in hashes {
                    if !set.remove(&hash) && first_error.is_none() {
                        first_error = Some(ReplayError::RemovedUnknown { tier, hash });
                    }
                }
            }
            KvCacheEvents::Mixed(changes) => {
                for change in changes {
                    let (hash, known) = match *change {
                        BlockChange::Stored(block) => (block.hash, set.insert(block.hash)),
                        BlockChange::Removed(hash) => (hash, set.remove(&hash)),
                    };
                    if !known && first_error.is_none() {
                        first_error = Some(match change {
                            BlockChange::Stored(_) => ReplayError::StoredTwice { tier, hash },
                            BlockChange::Removed(_) => ReplayError::RemovedUnknown { tier, hash },
                        });
                    }
                }
            }
            KvCacheEvents::Clear => set.clear(),
            KvCacheEvents::Shutdown => {}
        }
        first_error.map_or(Ok(()), Err)
    }

    fn clear_all(&mut self) {
        for set in &mut self.tiers {
            set.clear();
        }
    }

    /// Whether `hash` is registered in `tier`.
    pub fn contains(&self, tier: LogicalLayoutHandle, hash: SequenceHash) -> bool {
        self.tiers[tier.index()].contains(&hash)
    }

    /// Blocks registered in `tier`.
    pub fn tier_len(&self, tier: LogicalLayoutHandle) -> usize {
        self.tiers[tier.index()].len()
    }

    /// Blocks registered, over all tiers.
    pub fn len(&self) -> usize {
        self.tiers.iter().map(HashSet::len).sum()
    }

    /// Whether no block is registered in any tier.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The blocks of `tier`, sorted (for comparisons).
    pub fn sorted(&self, tier: LogicalLayoutHandle) -> Vec<SequenceHash> {
        let mut hashes: Vec<_> = self.tiers[tier.index()].iter().copied().collect();
        hashes.sort_unstable();
        hashes
    }

    /// The blocks of every non-empty tier, each sorted.
    pub fn tier_snapshots(&self) -> Vec<TierSnapshot> {
        LogicalLayoutHandle::ALL
            .into_iter()
            .filter(|tier| !self.tiers[tier.index()].is_empty())
            .map(|tier| TierSnapshot {
                tier,
                hashes: self.sorted(tier),
            })
            .collect()
    }

    /// A snapshot of this set, valid at the next expected position
    /// (`StreamPosition::default()` before the first batch).
    pub fn snapshot(&self, instance_id: InstanceId, block_size: u32) -> WorkerSnapshot {
        WorkerSnapshot {
            instance_id,
            block_size,
            position: self.next.unwrap_or_default(),
            tiers: self.tier_snapshots(),
        }
    }
}
