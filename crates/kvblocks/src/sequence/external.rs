//! [`ExternalBlockAssignments`]: an external scheduler's block table by
//! identity (block ids and keys, no guards), and the position joins that turn
//! two tiers' tables into a copy plan ([`zip_assigned`],
//! [`zip_assigned_pending`]).
//!
//! Owns three queues in position order: assigned (committed id/key pairs),
//! staged (paired, not committed) and unassigned (ids waiting for a block's
//! key). A transition moves an entry from the front of one queue to the back
//! of the one before it, so it is O(1) and nothing ever shifts. Every
//! mutating call checks its whole input before changing anything.

use std::collections::VecDeque;
use std::ops::Range;

use super::BlockSequenceError;
use crate::hash::TokenBlock;
use crate::{BlockId, SequenceHash};

/// One tier's block ids for one sequence, from position `offset` on.
///
/// Assigned entry `i` sits at position `offset + i`; staged entries follow
/// the assigned ones, and pending (unassigned) ids follow the staged ones.
///
/// ```
/// use kvblocks::{BlockSequence, ExternalBlockAssignments};
///
/// let seq = BlockSequence::new((0..12).collect(), 4, None);
/// let mut table = ExternalBlockAssignments::new(0);
/// table.extend_block_ids([10, 20, 30, 40])?;      // 4 slots, 3 full blocks
/// assert_eq!(table.assign_pending(seq.blocks())?, 0..3);
/// assert_eq!(table.get_at_position(2), Some((30, seq.sequence_hashes()[2])));
/// assert_eq!(table.pending_positions(), 3..4);
/// # Ok::<(), kvblocks::BlockSequenceError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ExternalBlockAssignments {
    offset: usize,
    assigned: Vec<(BlockId, SequenceHash)>,
    staged: VecDeque<(BlockId, SequenceHash)>,
    unassigned: VecDeque<BlockId>,
    /// Every id in the three queues.
    known: hashbrown::HashSet<BlockId>,
}

impl ExternalBlockAssignments {
    /// An empty table whose first block sits at position `offset`.
    pub fn new(offset: usize) -> Self {
        Self {
            offset,
            ..Self::default()
        }
    }

    /// Position of the first assigned block.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Whether `block_id` is in any of the three queues.
    pub fn contains(&self, block_id: &BlockId) -> bool {
        self.known.contains(block_id)
    }

    /// `true` when all three queues are empty.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Committed blocks.
    pub fn assigned_count(&self) -> usize {
        self.assigned.len()
    }

    /// Paired but not committed blocks.
    pub fn staged_count(&self) -> usize {
        self.staged.len()
    }

    /// Ids waiting for a key.
    pub fn unassigned_count(&self) -> usize {
        self.unassigned.len()
    }

    /// Assigned entry `index` (position `offset + index`).
    pub fn get_assigned(&self, index: usize) -> Option<(BlockId, SequenceHash)> {
        self.assigned.get(index).copied()
    }

    /// Staged entry `index` (position `offset + assigned_count + index`).
    pub fn get_staged(&self, index: usize) -> Option<(BlockId, SequenceHash)> {
        self.staged.get(index).copied()
    }

    /// Assigned entries in position order.
    pub fn assigned_iter(&self) -> impl Iterator<Item = (BlockId, SequenceHash)> + '_ {
        self.assigned.iter().copied()
    }

    /// Staged entries in position order.
    pub fn staged_iter(&self) -> impl Iterator<Item = (BlockId, SequenceHash)> + '_ {
        self.staged.iter().copied()
    }

    /// Pending ids in the order they will be paired.
    pub fn unassigned_iter(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.unassigned.iter().copied()
    }

    /// Empties all three queues; the offset stays.
    pub fn clear(&mut self) {
        self.assigned.clear();
        self.staged.clear();
        self.unassigned.clear();
        self.known.clear();
    }

    /// Removes and returns the staged entries, in order.
    pub fn take_staged(&mut self) -> Vec<(BlockId, SequenceHash)> {
        for (id, _) in &self.staged {
            self.known.remove(id);
        }
        self.staged.drain(..).collect()
    }

    /// The position the next staged block will take:
    /// `offset + assigned_count + staged_count`.
    pub fn next_position(&self) -> usize {
        self.offset + self.assigned.len() + self.staged.len()
    }

    /// Positions of the assigned blocks.
    pub fn assigned_positions(&self) -> Range<usize> {
        self.offset..self.offset + self.assigned.len()
    }

    /// Positions of the staged blocks.
    pub fn staged_positions(&self) -> Range<usize> {
        let start = self.offset + self.assigned.len();
        start..start + self.staged.len()
    }

    /// Positions the pending ids will take once paired.
    pub fn pending_positions(&self) -> Range<usize> {
        let start = self.next_position();
        start..start + self.unassigned.len()
    }

    /// The assigned entry at absolute position `position`.
    pub fn get_at_position(&self, position: usize) -> Option<(BlockId, SequenceHash)> {
        self.get_assigned(position.checked_sub(self.offset)?)
    }

    /// The pending id that will take absolute position `position`.
    pub fn get_pending_at_position(&self, position: usize) -> Option<BlockId> {
        let relative = position.checked_sub(self.next_position())?;
        self.unassigned.get(relative).copied()
    }

    /// Queues new ids for pairing.
    ///
    /// `block_ids` is the whole ordered list of ids given to this table so
    /// far: ids it already holds must come first and are skipped; the rest
    /// are queued in order.
    ///
    /// # Errors
    ///
    /// Nothing is queued if any of these holds:
    /// [`BlockSequenceError::OrderingViolation`] when a known id follows a new
    /// one; [`BlockSequenceError::DuplicateBlockId`] when a new id repeats.
    pub fn extend_block_ids(
        &mut self,
        block_ids: impl IntoIterator<Item = BlockId>,
    ) -> Result<(), BlockSequenceError> {
        let start = self.unassigned.len();
        let mut first_new_index = None;
        for (index, id) in block_ids.into_iter().enumerate() {
            if !self.known.contains(&id) {
                first_new_index.get_or_insert(index);
                self.known.insert(id);
                self.unassigned.push_back(id);
                continue;
            }
            let Some(first_new_index) = first_new_index else {
                continue; // still in the known prefix
            };
            let err = if self.unassigned.range(start..).any(|&queued| queued == id) {
                BlockSequenceError::DuplicateBlockId { block_id: id }
            } else {
                BlockSequenceError::OrderingViolation {
                    known_id: id,
                    new_id: self.unassigned[start],
                    known_index: index,
                    first_new_index,
                }
            };
            for queued in self.unassigned.drain(start..) {
                self.known.remove(&queued);
            }
            return Err(err);
        }
        Ok(())
    }

    /// Commits already-keyed blocks (cache hits) right after the assigned
    /// ones; returns how many were added.
    ///
    /// # Errors
    ///
    /// Nothing is added if any of these holds:
    /// [`BlockSequenceError::StagedBlocksPending`] when staged blocks hold the
    /// next positions; [`BlockSequenceError::PositionMismatch`] when a key's
    /// position is not the one its entry would take;
    /// [`BlockSequenceError::DuplicateBlockId`] when an id is already known or
    /// repeats.
    pub fn extend_assigned(
        &mut self,
        items: impl IntoIterator<Item = (BlockId, SequenceHash)>,
    ) -> Result<usize, BlockSequenceError> {
        if !self.staged.is_empty() {
            return Err(BlockSequenceError::StagedBlocksPending {
                staged: self.staged.len(),
            });
        }
        let start = self.assigned.len();
        for (block_id, hash) in items {
            let expected = self.offset + self.assigned.len();
            let err = if hash.position() != expected as u64 {
                BlockSequenceError::PositionMismatch {
                    expected,
                    actual: hash.position(),
                    block_id,
                }
            } else if !self.known.insert(block_id) {
                BlockSequenceError::DuplicateBlockId { block_id }
            } else {
                self.assigned.push((block_id, hash));
                continue;
            };
            for (added, _) in self.assigned.drain(start..) {
                self.known.remove(&added);
            }
            return Err(err);
        }
        Ok(self.assigned.len() - start)
    }

    /// Pairs pending ids, oldest first, with the keys of `sequence_blocks`
    /// (the whole sequence's full blocks) from [`next_position`](Self::next_position)
    /// on, as far as both reach; returns the staged indices added.
    ///
    /// # Errors
    ///
    /// [`BlockSequenceError::PositionMismatch`] if a block's key does not
    /// carry the position it would fill; nothing is staged then.
    pub fn stage_pending(
        &mut self,
        sequence_blocks: &[TokenBlock],
    ) -> Result<Range<usize>, BlockSequenceError> {
        let start = self.next_position();
        let blocks = sequence_blocks.get(start..).unwrap_or_default();
        let count = blocks.len().min(self.unassigned.len());
        for (i, (block, &block_id)) in blocks.iter().zip(&self.unassigned).enumerate() {
            if block.position() != (start + i) as u64 {
                return Err(BlockSequenceError::PositionMismatch {
                    expected: start + i,
                    actual: block.position(),
                    block_id,
                });
            }
        }
        let first = self.staged.len();
        let ids = self.unassigned.drain(..count);
        let keys = blocks.iter().map(TokenBlock::positional_lineage_hash);
        self.staged.extend(ids.zip(keys));
        Ok(first..self.staged.len())
    }

    /// Commits every staged block; returns the assigned indices added.
    pub fn commit_staged(&mut self) -> Range<usize> {
        let first = self.assigned.len();
        self.assigned.extend(self.staged.drain(..));
        first..self.assigned.len()
    }

    /// [`stage_pending`](Self::stage_pending) then
    /// [`commit_staged`](Self::commit_staged); returns the assigned indices
    /// added.
    ///
    /// # Errors
    ///
    /// As [`stage_pending`](Self::stage_pending); nothing changes then.
    pub fn assign_pending(
        &mut self,
        sequence_blocks: &[TokenBlock],
    ) -> Result<Range<usize>, BlockSequenceError> {
        self.stage_pending(sequence_blocks)?;
        Ok(self.commit_staged())
    }
}

/// `(position, a's id, b's id)` for every position both tables have
/// assigned, ascending: which block of one tier holds the same content as
/// which block of the other.
///
/// ```
/// use kvblocks::{zip_assigned, BlockSequence, ExternalBlockAssignments};
/// let seq = BlockSequence::new((0..12).collect(), 4, None);
/// let (mut gpu, mut host) = (ExternalBlockAssignments::new(0), ExternalBlockAssignments::new(1));
/// gpu.extend_block_ids([7, 8, 9])?;
/// gpu.assign_pending(seq.blocks())?;
/// host.extend_block_ids([70, 80])?;
/// host.assign_pending(seq.blocks())?;
/// assert_eq!(zip_assigned(&gpu, &host), vec![(1, 8, 70), (2, 9, 80)]);
/// # Ok::<(), kvblocks::BlockSequenceError>(())
/// ```
pub fn zip_assigned(
    a: &ExternalBlockAssignments,
    b: &ExternalBlockAssignments,
) -> Vec<(usize, BlockId, BlockId)> {
    zip_positions(a.assigned_positions(), b.assigned_positions(), |p| {
        Some((a.get_at_position(p)?.0, b.get_at_position(p)?.0))
    })
}

/// `(position, src id, dst id)` for every position `src` has assigned and
/// `dst` has pending, ascending: the copy plan that fills `dst`'s pending
/// blocks (an onboard or an offload).
pub fn zip_assigned_pending(
    src: &ExternalBlockAssignments,
    dst: &ExternalBlockAssignments,
) -> Vec<(usize, BlockId, BlockId)> {
    zip_positions(src.assigned_positions(), dst.pending_positions(), |p| {
        Some((src.get_at_position(p)?.0, dst.get_pending_at_position(p)?))
    })
}

/// `(position, ids)` for every position in both ranges, ascending.
fn zip_positions(
    a: Range<usize>,
    b: Range<usize>,
    ids: impl Fn(usize) -> Option<(BlockId, BlockId)>,
) -> Vec<(usize, BlockId, BlockId)> {
    (a.start.max(b.start)..a.end.min(b.end))
        .filter_map(|p| ids(p).map(|(x, y)| (p, x, y)))
        .collect()
}
