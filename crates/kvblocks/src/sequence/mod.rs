//! Sequences and their block tables: the bookkeeping a scheduler keeps per
//! request, below the request state machines of [`crate::integrations`].
//!
//! - [`BlockSequence`] owns a request's tokens cut into hashed blocks (keys
//!   bit-identical to `dynamo-tokens`, salt included).
//! - [`ExternalBlockAssignments`] is a block table by identity (ids and keys),
//!   for a scheduler that keeps its guards elsewhere or plans copies between
//!   tiers ([`zip_assigned`], [`zip_assigned_pending`]).
//! - [`LogicalBlockAssignments`] holds the guards themselves and keeps the
//!   kernel's block table ([`LogicalBlockAssignments::block_table`]).
//!
//! Both assignment types share one lifecycle: **unassigned** (a slot, no
//! content yet) → **staged** (paired with its block's key) → **assigned**
//! (committed; for guards, registered and matchable). Positions run in that
//! order, and each transition moves the front of one queue to the back of the
//! previous one: O(1) per block, nothing shifted, no per-token allocation.
//! Nothing here takes a lock of its own; the guards' drops and the manager's
//! calls do.

mod block_sequence;
mod external;
mod logical;

pub use block_sequence::BlockSequence;
pub use external::{zip_assigned, zip_assigned_pending, ExternalBlockAssignments};
pub use logical::{LogicalBlockAssignmentError, LogicalBlockAssignments};

use crate::hash::TokenError;
use crate::BlockId;

/// A failed [`BlockSequence`] or [`ExternalBlockAssignments`] call; the
/// sequence or table is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockSequenceError {
    /// A known id followed a new one in `extend_block_ids`.
    #[error(
        "ordering violation: known block_id {known_id} at index {known_index} \
         follows new block_id {new_id} at index {first_new_index}"
    )]
    OrderingViolation {
        /// The known id out of place.
        known_id: BlockId,
        /// The first new id.
        new_id: BlockId,
        /// Index of the known id in the input.
        known_index: usize,
        /// Index of the first new id in the input.
        first_new_index: usize,
    },
    /// A key's position is not the position its entry would take.
    #[error("block {block_id}: expected position {expected}, its key says {actual}")]
    PositionMismatch {
        /// The position the entry would take.
        expected: usize,
        /// The position in the key.
        actual: u64,
        /// The block id being paired.
        block_id: BlockId,
    },
    /// An id is already held or repeats in the input.
    #[error("duplicate block_id {block_id}")]
    DuplicateBlockId {
        /// The repeated id.
        block_id: BlockId,
    },
    /// Assigned entries cannot be added while staged ones hold the next positions.
    #[error("{staged} staged blocks hold the next positions")]
    StagedBlocksPending {
        /// Staged entries.
        staged: usize,
    },
    /// Building or extending the token sequence failed.
    #[error("token sequence: {0}")]
    Token(#[from] TokenError),
}
