//! The event types: one event, a batch of one kind, and the batch as it
//! leaves a worker.
//!
//! This module owns the shapes and nothing else: no queue, no clock, no
//! encoding (wire formats live in the `kvblocks-wire` crate). The names and
//! layering follow kvbm-logical 1.6.1 ([`KvCacheEvent`] → [`KvCacheEvents`] →
//! [`KvbmCacheEvents`]); what a router needs on top of them is added here:
//!
//! - the tier ([`LogicalLayoutHandle`]) on every event and every batch;
//! - the parent of every stored block (when the emitter knows it) and, inside
//!   the [`SequenceHash`], its position;
//! - the block size (tokens per block) of the worker;
//! - a [`StreamPosition`] on every batch: an epoch that names the worker's
//!   incarnation and a sequence number that counts batches within it, so the
//!   pair never goes backwards, also across a restart;
//! - a [`KvCacheEvents::Clear`] for a reset of a whole tier's pool;
//! - [`KvCacheEvents::Mixed`], stores and removals of one tier in one batch,
//!   in the order they happened (vLLM's `KVEventBatch` mixes kinds the same
//!   way): what the batcher closes by default when a batch holds both kinds
//!   (see [`with_mixed_kinds`](super::BatchingConfig::with_mixed_kinds)).

use std::borrow::Cow;

use crate::{LogicalLayoutHandle, SequenceHash};

/// Identity of a worker (kvbm-logical's `InstanceId`).
pub type InstanceId = u128;

/// Where a batch sits in its worker's stream.
///
/// `epoch` names the worker's incarnation (a new process picks a larger one)
/// and `seq` counts the batches published within it, from 0 without gaps.
/// Positions order lexicographically, so a consumer that has applied
/// `(e, s)` expects `(e, s + 1)` next, or `(e', 0)` with `e' > e` after a
/// restart.
///
/// ```
/// use kvblocks::events::StreamPosition;
/// let a = StreamPosition { epoch: 7, seq: 41 };
/// assert!(a < a.next());
/// assert!(a.next() < StreamPosition { epoch: 8, seq: 0 }, "a restart never goes backwards");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StreamPosition {
    /// The worker's incarnation: larger after every restart.
    pub epoch: u64,
    /// Batches published before this one in this epoch.
    pub seq: u64,
}

impl StreamPosition {
    /// The position of the batch after this one.
    pub const fn next(self) -> StreamPosition {
        StreamPosition {
            epoch: self.epoch,
            seq: self.seq + 1,
        }
    }
}

/// A block that was registered (stored), with its parent when known.
///
/// `parent` is the parent's 64-bit chained sequence hash
/// ([`SequenceHash::current_sequence_hash`]), which is what every wire format
/// carries. `None` for a root (position 0) and for a block whose parent the
/// emitter did not know; a consumer keeps such a block anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoredBlock {
    /// The block's key; its position is `hash.position()`.
    pub hash: SequenceHash,
    /// The parent's 64-bit sequence hash, if known.
    pub parent: Option<u64>,
}

impl StoredBlock {
    /// A stored block with no known parent.
    pub const fn orphan(hash: SequenceHash) -> StoredBlock {
        StoredBlock { hash, parent: None }
    }
}

/// Whether `child` is the block right after `parent` in one sequence, as far
/// as the key can tell: the next position and a matching parent fragment.
pub fn is_parent_of(parent: SequenceHash, child: SequenceHash) -> bool {
    parent.hash_as_parent_of(child).is_some()
}

/// One change to a worker's registered set (kvbm-logical's `KvCacheEvent`,
/// plus the tier and the clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheEvent {
    /// A block was registered in `tier` (its primary copy; never a duplicate).
    Create {
        /// The block and its parent.
        block: StoredBlock,
        /// Where it lives.
        tier: LogicalLayoutHandle,
    },
    /// A block left `tier` (evicted, reset, or released and discarded).
    Remove {
        /// The block's key.
        hash: SequenceHash,
        /// The tier it left.
        tier: LogicalLayoutHandle,
    },
    /// Every block of `tier` left at once (a reset of the whole pool).
    Clear {
        /// The tier that was cleared.
        tier: LogicalLayoutHandle,
    },
}

impl KvCacheEvent {
    /// The tier the event is about.
    pub const fn tier(&self) -> LogicalLayoutHandle {
        match self {
            Self::Create { tier, .. } | Self::Remove { tier, .. } | Self::Clear { tier } => *tier,
        }
    }

    /// The batch kind this event belongs to.
    pub const fn kind(&self) -> EventKind {
        match self {
            Self::Create { .. } => EventKind::Create,
            Self::Remove { .. } => EventKind::Remove,
            Self::Clear { .. } => EventKind::Clear,
        }
    }
}

/// The kind of a batch: one kind of event, or stores and removals mixed
/// (never two tiers, never a clear with anything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Stores.
    Create,
    /// Removals.
    Remove,
    /// A clear of a whole tier.
    Clear,
    /// Stores and removals in the order they happened.
    Mixed,
}

/// One block's change in a batch of mixed kinds ([`KvCacheEvents::Mixed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockChange {
    /// The block was registered.
    Stored(StoredBlock),
    /// The block left the tier.
    Removed(SequenceHash),
}

/// Events of one kind, batched (kvbm-logical's `KvCacheEvents`, plus
/// parents on stores and the clear).
///
/// Events keep the order they were emitted in (a registration emits a chain
/// parent first). kvbm-logical's batcher sorts stores by position; sorting
/// cost a tenth of the emission overhead in the serving loop and no consumer
/// here needs it, so the order is left as it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvCacheEvents {
    /// Blocks were registered.
    Create(Vec<StoredBlock>),
    /// Blocks were removed.
    Remove(Vec<SequenceHash>),
    /// Every block of the batch's tier was removed.
    Clear,
    /// The publisher is shutting down: nothing follows in this epoch.
    Shutdown,
    /// Stores and removals in the order they happened (from a batcher with
    /// [`with_mixed_kinds`](super::BatchingConfig::with_mixed_kinds), the
    /// default, when a batch holds both kinds; kvbm-logical's own frame
    /// cannot carry it: `kvblocks_wire::kvbm::compat_frames` splits it).
    Mixed(Vec<BlockChange>),
}

impl KvCacheEvents {
    /// Blocks the batch names (0 for a clear or a shutdown).
    pub fn len(&self) -> usize {
        match self {
            Self::Create(blocks) => blocks.len(),
            Self::Remove(hashes) => hashes.len(),
            Self::Mixed(changes) => changes.len(),
            Self::Clear | Self::Shutdown => 0,
        }
    }

    /// The batch as batches of one kind each, in order: the batch itself,
    /// or a mixed batch's runs of stores and of removals (for a consumer or
    /// an encoding that handles one kind at a time).
    ///
    /// ```
    /// use kvblocks::events::{BlockChange, KvCacheEvents, StoredBlock};
    /// use kvblocks::SequenceHash;
    ///
    /// let (a, b) = (SequenceHash::root(1), SequenceHash::root(2));
    /// let mixed = KvCacheEvents::Mixed(vec![
    ///     BlockChange::Stored(StoredBlock::orphan(a)),
    ///     BlockChange::Removed(b),
    ///     BlockChange::Removed(a),
    /// ]);
    /// let parts: Vec<_> = mixed.by_kind().into_iter().map(|p| p.into_owned()).collect();
    /// assert_eq!(parts, [
    ///     KvCacheEvents::Create(vec![StoredBlock::orphan(a)]),
    ///     KvCacheEvents::Remove(vec![b, a]),
    /// ]);
    /// ```
    pub fn by_kind(&self) -> Vec<Cow<'_, KvCacheEvents>> {
        let Self::Mixed(changes) = self else {
            return vec![Cow::Borrowed(self)];
        };
        let same_kind = |a: &BlockChange, b: &BlockChange| {
            matches!(
                (a, b),
                (BlockChange::Stored(_), BlockChange::Stored(_))
                    | (BlockChange::Removed(_), BlockChange::Removed(_))
            )
        };
        changes
            .chunk_by(same_kind)
            .map(|run| {
                Cow::Owned(match run[0] {
                    BlockChange::Stored(_) => KvCacheEvents::Create(stored_blocks(run)),
                    BlockChange::Removed(_) => KvCacheEvents::Remove(removed_hashes(run)),
                })
            })
            .collect()
    }

    /// `changes` as a batch of one kind if they are all stores or all
    /// removals (the shape kvbm-logical's consumers know), else `None`.
    pub(crate) fn of_one_kind(changes: &[BlockChange]) -> Option<KvCacheEvents> {
        let stores = matches!(changes.first(), Some(BlockChange::Stored(_)));
        if !changes
            .iter()
            .all(|change| matches!(change, BlockChange::Stored(_)) == stores)
        {
            return None;
        }
        Some(if stores {
            KvCacheEvents::Create(stored_blocks(changes))
        } else {
            KvCacheEvents::Remove(removed_hashes(changes))
        })
    }

    /// Whether the batch names no block.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The stored blocks among `changes`, in order.
pub(crate) fn stored_blocks(changes: &[BlockChange]) -> Vec<StoredBlock> {
    changes
        .iter()
        .filter_map(|change| match *change {
            BlockChange::Stored(block) => Some(block),
            BlockChange::Removed(_) => None,
        })
        .collect()
}

/// The removed hashes among `changes`, in order.
pub(crate) fn removed_hashes(changes: &[BlockChange]) -> Vec<SequenceHash> {
    changes
        .iter()
        .filter_map(|change| match *change {
            BlockChange::Removed(hash) => Some(hash),
            BlockChange::Stored(_) => None,
        })
        .collect()
}

/// A batch as it leaves a worker (kvbm-logical's wire type, plus tier,
/// block size and stream position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvbmCacheEvents {
    /// The batched events.
    pub events: KvCacheEvents,
    /// The worker that produced them.
    pub instance_id: InstanceId,
    /// The tier every event of the batch is about.
    pub tier: LogicalLayoutHandle,
    /// Tokens per block on this worker.
    pub block_size: u32,
    /// Where the batch sits in the worker's stream.
    pub position: StreamPosition,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_is_recognised_by_position_and_fragment() {
        let root = SequenceHash::root(11);
        let child = root.extend(12);
        let other = SequenceHash::root(13).extend(12);
        assert!(is_parent_of(root, child));
        assert!(!is_parent_of(child, root));
        assert!(!is_parent_of(SequenceHash::root(13), child));
        assert!(!is_parent_of(root, other));
    }

    #[test]
    fn a_block_change_costs_no_more_than_a_stored_block() {
        assert_eq!(
            std::mem::size_of::<BlockChange>(),
            std::mem::size_of::<StoredBlock>()
        );
    }

    #[test]
    fn positions_order_by_epoch_then_sequence() {
        let p = StreamPosition { epoch: 3, seq: 9 };
        assert_eq!(p.next(), StreamPosition { epoch: 3, seq: 10 });
        assert!(
            StreamPosition { epoch: 4, seq: 0 }
                > StreamPosition {
                    epoch: 3,
                    seq: u64::MAX
                }
        );
    }
}
