//! [`LogicalBlockAssignments`]: one sequence's block guards in position
//! order, moving unassigned ([`MutableBlock`]) → staged ([`CompleteBlock`])
//! → assigned ([`ImmutableBlock`]), plus the block table the attention
//! kernel reads.
//!
//! Owns the guards and the table; registers only through the manager's
//! public calls. Positions run assigned, then staged, then unassigned, and a
//! transition moves the front of one queue to the back of the one before it,
//! so it never shifts anything and the table (ids in position order) only
//! changes where a registration handed back another slot (duplicate policy
//! `Reject`). Every call that can fail checks its input before it changes
//! anything, and an error hands back any guard it was given.

use std::collections::VecDeque;

use crate::blocks::RegisterError;
use crate::hash::TokenBlock;
use crate::{
    BlockId, BlockManager, BlockMetadata, CompleteBlock, ImmutableBlock, ManagerId, MutableBlock,
    SequenceHash,
};

/// A failed [`LogicalBlockAssignments`] call; nothing changed, and guards the
/// call was given come back inside.
#[derive(thiserror::Error)]
pub enum LogicalBlockAssignmentError<T> {
    /// A block's key does not carry the position it would take.
    #[error("block for position {expected} carries position {actual}")]
    PositionMismatch {
        /// The position the block would take.
        expected: usize,
        /// The position in its key.
        actual: u64,
        /// The blocks the call was given, unchanged.
        blocks: Vec<ImmutableBlock<T>>,
    },
    /// A block's key is not the key the sequence has at that position.
    #[error(
        "sequence hash mismatch at position {position}: expected {expected:?}, got {actual:?}"
    )]
    SequenceHashMismatch {
        /// The position.
        position: usize,
        /// The sequence's key there.
        expected: SequenceHash,
        /// The block's key.
        actual: SequenceHash,
        /// The blocks the call was given, unchanged.
        blocks: Vec<ImmutableBlock<T>>,
    },
    /// Registered blocks cannot go before staged ones.
    #[error("{staged} staged blocks hold the next positions")]
    StagedBlocksPending {
        /// Staged blocks.
        staged: usize,
        /// The blocks the call was given, unchanged.
        blocks: Vec<ImmutableBlock<T>>,
    },
    /// A token block's key is not for the position it would stage.
    #[error("token block for position {expected} carries position {actual}")]
    TokenPositionMismatch {
        /// The position it would stage.
        expected: usize,
        /// The position of the token block.
        actual: u64,
    },
    /// A token block's size is not the manager's block size.
    #[error("token block holds {actual} tokens, the manager's blocks {expected}")]
    BlockSizeMismatch {
        /// The manager's block size.
        expected: usize,
        /// The token block's size.
        actual: usize,
    },
    /// The staged blocks came from another manager; they stay staged.
    #[error("block {block_id} belongs to manager {owner:?}, not to manager {manager:?}")]
    ForeignManager {
        /// The first foreign block.
        block_id: BlockId,
        /// The manager that allocated it.
        owner: ManagerId,
        /// The manager asked to register it.
        manager: ManagerId,
    },
}

impl<T> std::fmt::Debug for LogicalBlockAssignmentError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// One sequence's block guards, in position order: assigned (registered),
/// staged (complete, not yet matchable), unassigned (writable).
///
/// ```
/// use kvblocks::{BlockManager, BlockSequence, LogicalBlockAssignments};
/// #[derive(Clone)] struct Gpu;
/// let manager = BlockManager::<Gpu>::builder().block_count(8).block_size(4).build()?;
/// let seq = BlockSequence::new((0..10).collect(), 4, None);
///
/// let mut blocks = LogicalBlockAssignments::new();
/// blocks.extend_blocks(manager.allocate_blocks(3).unwrap());
/// assert_eq!(blocks.stage(seq.blocks())?, 2);       // two full blocks
/// assert_eq!(blocks.register(&manager), 2);          // now matchable
/// assert_eq!(manager.match_blocks(seq.sequence_hashes()).len(), 2);
/// assert_eq!(blocks.block_table().len(), 3);         // ids for the kernel
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LogicalBlockAssignments<T> {
    assigned: Vec<(BlockId, ImmutableBlock<T>)>,
    staged: VecDeque<(BlockId, CompleteBlock<T>)>,
    unassigned: VecDeque<(BlockId, MutableBlock<T>)>,
    /// Block ids of all three queues in position order.
    table: Vec<u32>,
}

impl<T: BlockMetadata> LogicalBlockAssignments<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self {
            assigned: Vec::new(),
            staged: VecDeque::new(),
            unassigned: VecDeque::new(),
            table: Vec::new(),
        }
    }

    /// Registered blocks.
    pub fn assigned_count(&self) -> usize {
        self.assigned.len()
    }

    /// Complete, unregistered blocks.
    pub fn staged_count(&self) -> usize {
        self.staged.len()
    }

    /// Writable blocks.
    pub fn unassigned_count(&self) -> usize {
        self.unassigned.len()
    }

    /// Blocks of all three kinds.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// `true` when no block is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether `block_id` is held (a scan of the table).
    pub fn contains(&self, block_id: &BlockId) -> bool {
        self.table.iter().any(|&id| id as BlockId == *block_id)
    }

    /// Assigned block `index` (position `index`).
    pub fn get_assigned(&self, index: usize) -> Option<(&BlockId, &ImmutableBlock<T>)> {
        self.assigned.get(index).map(|(id, block)| (id, block))
    }

    /// Staged block `index` (position `assigned_count + index`).
    pub fn get_staged(&self, index: usize) -> Option<(&BlockId, &CompleteBlock<T>)> {
        self.staged.get(index).map(|(id, block)| (id, block))
    }

    /// Unassigned block `index` (position `assigned_count + staged_count + index`).
    pub fn get_unassigned(&self, index: usize) -> Option<(&BlockId, &MutableBlock<T>)> {
        self.unassigned.get(index).map(|(id, block)| (id, block))
    }

    /// Assigned blocks in position order.
    pub fn assigned_iter(&self) -> impl Iterator<Item = (&BlockId, &ImmutableBlock<T>)> {
        self.assigned.iter().map(|(id, block)| (id, block))
    }

    /// Staged blocks in position order.
    pub fn staged_iter(&self) -> impl Iterator<Item = (&BlockId, &CompleteBlock<T>)> {
        self.staged.iter().map(|(id, block)| (id, block))
    }

    /// Unassigned blocks in position order.
    pub fn unassigned_iter(&self) -> impl Iterator<Item = (&BlockId, &MutableBlock<T>)> {
        self.unassigned.iter().map(|(id, block)| (id, block))
    }

    /// Every held block id in position order: assigned, staged, unassigned.
    pub fn all_block_ids(&self) -> impl Iterator<Item = &BlockId> {
        let assigned = self.assigned.iter().map(|(id, _)| id);
        let staged = self.staged.iter().map(|(id, _)| id);
        assigned
            .chain(staged)
            .chain(self.unassigned.iter().map(|(id, _)| id))
    }

    /// Every held block id in position order, borrowed: the attention
    /// kernel's block table for this sequence, kept up to date by every call
    /// (never rebuilt).
    pub fn block_table(&self) -> &[u32] {
        &self.table
    }

    /// Appends writable blocks after every held block; returns how many.
    pub fn extend_blocks(&mut self, blocks: impl IntoIterator<Item = MutableBlock<T>>) -> usize {
        let before = self.unassigned.len();
        for block in blocks {
            let id = block.block_id();
            self.table.push(id as u32);
            self.unassigned.push_back((id, block));
        }
        self.unassigned.len() - before
    }

    /// Adds registered blocks (cache hits) right after the assigned ones;
    /// block `i` must carry position `assigned_count + i`.
    ///
    /// # Errors
    ///
    /// [`LogicalBlockAssignmentError::StagedBlocksPending`] if staged blocks
    /// hold those positions, [`LogicalBlockAssignmentError::PositionMismatch`]
    /// if a block carries another position; the blocks come back inside.
    pub fn extend_assigned(
        &mut self,
        blocks: impl IntoIterator<Item = ImmutableBlock<T>>,
    ) -> Result<usize, LogicalBlockAssignmentError<T>> {
        let blocks: Vec<ImmutableBlock<T>> = blocks.into_iter().collect();
        if !self.staged.is_empty() {
            return Err(LogicalBlockAssignmentError::StagedBlocksPending {
                staged: self.staged.len(),
                blocks,
            });
        }
        let start = self.assigned.len();
        let wrong = blocks
            .iter()
            .enumerate()
            .find(|(i, b)| b.sequence_hash().position() != (start + i) as u64);
        if let Some((i, block)) = wrong {
            let actual = block.sequence_hash().position();
            return Err(LogicalBlockAssignmentError::PositionMismatch {
                expected: start + i,
                actual,
                blocks,
            });
        }
        let count = blocks.len();
        let ids = blocks.iter().map(|b| b.block_id() as u32);
        if self.unassigned.is_empty() {
            self.table.extend(ids);
        } else {
            self.table.splice(start..start, ids);
        }
        self.assigned
            .extend(blocks.into_iter().map(|b| (b.block_id(), b)));
        Ok(count)
    }

    /// Stages unassigned blocks, oldest first, with the keys of
    /// `sequence_blocks` (the token blocks for the next positions, in order);
    /// returns how many were staged (as many as both reach).
    ///
    /// # Errors
    ///
    /// [`LogicalBlockAssignmentError::BlockSizeMismatch`] or
    /// [`LogicalBlockAssignmentError::TokenPositionMismatch`]; nothing is
    /// staged then.
    pub fn stage(
        &mut self,
        sequence_blocks: &[TokenBlock],
    ) -> Result<usize, LogicalBlockAssignmentError<T>> {
        let count = sequence_blocks.len().min(self.unassigned.len());
        let first = self.assigned.len() + self.staged.len();
        for (i, (token_block, (_, block))) in
            sequence_blocks.iter().zip(&self.unassigned).enumerate()
        {
            if token_block.block_size() != block.block_size() {
                return Err(LogicalBlockAssignmentError::BlockSizeMismatch {
                    expected: block.block_size(),
                    actual: token_block.block_size(),
                });
            }
            if token_block.position() != (first + i) as u64 {
                return Err(LogicalBlockAssignmentError::TokenPositionMismatch {
                    expected: first + i,
                    actual: token_block.position(),
                });
            }
        }
        let keys = sequence_blocks[..count]
            .iter()
            .map(TokenBlock::positional_lineage_hash);
        Ok(self.stage_checked(keys))
    }

    /// Stages unassigned blocks, oldest first, with precomputed keys for the
    /// next positions; returns how many were staged.
    ///
    /// # Errors
    ///
    /// [`LogicalBlockAssignmentError::TokenPositionMismatch`] if a key
    /// carries another position; nothing is staged then.
    pub fn stage_hashes(
        &mut self,
        hashes: &[SequenceHash],
    ) -> Result<usize, LogicalBlockAssignmentError<T>> {
        let first = self.assigned.len() + self.staged.len();
        let count = hashes.len().min(self.unassigned.len());
        for (i, hash) in hashes[..count].iter().enumerate() {
            if hash.position() != (first + i) as u64 {
                return Err(LogicalBlockAssignmentError::TokenPositionMismatch {
                    expected: first + i,
                    actual: hash.position(),
                });
            }
        }
        Ok(self.stage_checked(hashes[..count].iter().copied()))
    }

    /// Stages one unassigned block per key; the caller checked positions,
    /// sizes and that there are enough unassigned blocks.
    fn stage_checked(&mut self, keys: impl Iterator<Item = SequenceHash>) -> usize {
        let mut staged = 0;
        for key in keys {
            let Some((id, block)) = self.unassigned.pop_front() else {
                break;
            };
            let size = block.block_size();
            match block.stage(key, size) {
                Ok(complete) => self.staged.push_back((id, complete)),
                // Unreachable: the size is the guard's own. Put it back.
                Err(err) => {
                    self.unassigned.push_front((id, err.into_block()));
                    break;
                }
            }
            staged += 1;
        }
        staged
    }

    /// Registers every staged block with `manager`; returns how many.
    ///
    /// # Panics
    ///
    /// If a staged block came from another manager, as
    /// [`BlockManager::register_blocks`] does; nothing is registered then.
    /// [`try_register`](Self::try_register) returns an error instead.
    #[track_caller]
    pub fn register(&mut self, manager: &BlockManager<T>) -> usize {
        match self.try_register(manager) {
            Ok(count) => count,
            Err(err) => panic!("register: {err}"),
        }
    }

    /// [`register`](Self::register), with foreign blocks reported.
    ///
    /// # Errors
    ///
    /// [`LogicalBlockAssignmentError::ForeignManager`] if a staged block came
    /// from another manager; every block stays staged.
    pub fn try_register(
        &mut self,
        manager: &BlockManager<T>,
    ) -> Result<usize, LogicalBlockAssignmentError<T>> {
        let count = self.staged.len();
        if count == 1 {
            // The decode path: one block, no batch vectors.
            let Some((id, block)) = self.staged.pop_front() else {
                return Ok(0);
            };
            match manager.try_register_block(block) {
                Ok(registered) => self.push_assigned(registered),
                Err(err) => {
                    let (error, block) = foreign(err);
                    self.staged.push_front((id, block));
                    return Err(error);
                }
            }
        } else if count > 1 {
            let batch: Vec<CompleteBlock<T>> = self.staged.drain(..).map(|(_, b)| b).collect();
            match manager.try_register_blocks(batch) {
                Ok(registered) => registered.into_iter().for_each(|b| self.push_assigned(b)),
                Err(err) => {
                    let (error, batch) = foreign(err);
                    self.staged
                        .extend(batch.into_iter().map(|b| (b.block_id(), b)));
                    return Err(error);
                }
            }
        }
        Ok(count)
    }

    /// Stages the oldest unassigned block under `hash` and registers it at
    /// once (a block filled during decode): [`stage_hashes`](Self::stage_hashes)
    /// of one key then [`try_register`](Self::try_register), without the
    /// staged queue in between. Returns whether a block was registered:
    /// `false` (nothing changed) if blocks are staged already, no block is
    /// unassigned or `hash` is not for the next position.
    ///
    /// # Errors
    ///
    /// [`LogicalBlockAssignmentError::ForeignManager`] if the block came from
    /// another manager; it stays staged, as after the two calls.
    pub(crate) fn register_next(
        &mut self,
        hash: SequenceHash,
        manager: &BlockManager<T>,
    ) -> Result<bool, LogicalBlockAssignmentError<T>> {
        if !self.staged.is_empty() || hash.position() != self.assigned.len() as u64 {
            return Ok(false);
        }
        let Some((id, block)) = self.unassigned.pop_front() else {
            return Ok(false);
        };
        let size = block.block_size();
        let complete = match block.stage(hash, size) {
            Ok(complete) => complete,
            // Unreachable: the size is the guard's own. Put it back.
            Err(err) => {
                self.unassigned.push_front((id, err.into_block()));
                return Ok(false);
            }
        };
        match manager.try_register_block(complete) {
            Ok(registered) => {
                self.push_assigned(registered);
                Ok(true)
            }
            Err(err) => {
                let (error, block) = foreign(err);
                self.staged.push_back((id, block));
                Err(error)
            }
        }
    }

    /// Files a freshly registered block after the assigned ones; under
    /// `Reject` it may be another slot than the staged one it replaces.
    fn push_assigned(&mut self, block: ImmutableBlock<T>) {
        let position = self.assigned.len();
        let id = block.block_id();
        if let Some(entry) = self.table.get_mut(position) {
            *entry = id as u32;
        }
        self.assigned.push((id, block));
    }

    /// Removes the last unassigned block (the most recently added).
    pub fn pop_last_unassigned(&mut self) -> Option<(BlockId, MutableBlock<T>)> {
        let last = self.unassigned.pop_back()?;
        self.table.pop();
        Some(last)
    }

    /// Keeps the first `len` positions and drops every later block, last
    /// position first; returns how many were dropped.
    pub fn truncate(&mut self, len: usize) -> usize {
        let before = self.table.len();
        while self.table.len() > len {
            if self.unassigned.pop_back().is_none() && self.staged.pop_back().is_none() {
                self.assigned.pop();
            }
            self.table.pop();
        }
        before - self.table.len()
    }

    /// Drops every guard, last position first (so an LRU policy keeps the
    /// sequence's first blocks longest).
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// [`clear`](Self::clear), handing the registered blocks to
    /// [`BlockManager::release_blocks`] in one batch.
    pub fn release_to(&mut self, manager: &BlockManager<T>) {
        self.unassigned.clear();
        self.staged.clear();
        self.table.clear();
        let tail_first = self.assigned.drain(..).rev().map(|(_, block)| block);
        manager.release_blocks(tail_first.collect());
    }

    /// Removes and returns the assigned blocks.
    pub fn take_assigned(&mut self) -> Vec<(BlockId, ImmutableBlock<T>)> {
        self.table.drain(..self.assigned.len());
        std::mem::take(&mut self.assigned)
    }

    /// Removes and returns the staged blocks.
    pub fn take_staged(&mut self) -> Vec<(BlockId, CompleteBlock<T>)> {
        let start = self.assigned.len();
        self.table.drain(start..start + self.staged.len());
        self.staged.drain(..).collect()
    }

    /// Removes and returns the unassigned blocks.
    pub fn take_unassigned(&mut self) -> Vec<(BlockId, MutableBlock<T>)> {
        self.table.truncate(self.assigned.len() + self.staged.len());
        self.unassigned.drain(..).collect()
    }
}

/// Splits a foreign-manager registration error into ours and the guard(s).
fn foreign<T, B>(err: RegisterError<B>) -> (LogicalBlockAssignmentError<T>, B) {
    match err {
        RegisterError::ForeignManager {
            block_id,
            owner,
            manager,
            block,
        } => (
            LogicalBlockAssignmentError::ForeignManager {
                block_id,
                owner,
                manager,
            },
            block,
        ),
    }
}

impl<T: BlockMetadata> Default for LogicalBlockAssignments<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for LogicalBlockAssignments<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogicalBlockAssignments")
            .field("assigned", &self.assigned.len())
            .field("staged", &self.staged.len())
            .field("unassigned", &self.unassigned.len())
            .field("table", &self.table)
            .finish()
    }
}
