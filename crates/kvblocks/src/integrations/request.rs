//! [`RequestSequence`]: one request's tokens and blocks, with the block
//! operations a scheduler needs and no scheduling policy of its own.
//!
//! Owns the request's [`BlockSequence`] (prompt and generated tokens, salted)
//! and its [`LogicalBlockAssignments`] (guards and block table). It talks to
//! one manager at a time: the first call that takes a block binds it to that
//! manager, and a call with another manager while it holds blocks is an
//! error, so guards of two pools never mix. It never registers a block
//! before its caller says the block's KV is computed: that is
//! [`RequestSequence::stage_up_to`]'s argument, or every full block for
//! [`RequestSequence::stage_pending`].
//!
//! Admission ([`RequestSequence::admit`]) matches the cached prefix and
//! allocates the rest in one call to the manager, all or nothing; it never
//! matches the block holding the last token, because the model must run that
//! token to produce the next one (kvbm-logical matches it, and then has
//! nothing left to prefill).

use std::ops::Range;

use super::RequestError;
use crate::hash::{SaltHash, Token};
use crate::sequence::{BlockSequence, LogicalBlockAssignments};
use crate::{BlockManager, BlockMetadata, ImmutableBlock, ManagerId, MutableBlock, SequenceHash};

/// What admitting a request takes from the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AdmissionPlan {
    /// Leading full blocks a match may cover.
    pub matchable: usize,
    /// Blocks the request holds once admitted.
    pub needed: usize,
}

/// One request's tokens and blocks.
///
/// ```
/// use kvblocks::{BlockManager, RequestSequence};
/// #[derive(Clone)] struct Gpu;
/// let manager = BlockManager::<Gpu>::builder().block_count(16).block_size(4).build()?;
///
/// let mut first = RequestSequence::<Gpu>::new((0..10).collect(), 8, 4);
/// first.admit(&manager, 0)?;                           // 3 blocks, nothing cached
/// first.complete_and_register_pending(&manager)?;      // prefill done: 2 full blocks
/// assert_eq!(first.block_table().len(), 3);
///
/// let mut second = RequestSequence::<Gpu>::new((0..10).collect(), 8, 4);
/// assert_eq!(second.admit(&manager, 0)?, 2);           // both full blocks cached
/// assert_eq!(second.new_tokens_for_prefill(), 2);
/// assert_eq!(first.block_table()[..2], second.block_table()[..2]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RequestSequence<T> {
    sequence: BlockSequence,
    assignments: LogicalBlockAssignments<T>,
    generated_tokens: usize,
    max_output_tokens: usize,
    num_input_tokens: usize,
    prefix_matched_blocks: usize,
    /// The manager whose blocks it holds (meaningful while it holds any).
    manager: Option<ManagerId>,
}

impl<T: BlockMetadata> RequestSequence<T> {
    /// A request with no salt and no blocks yet.
    ///
    /// # Panics
    ///
    /// On an empty prompt or a zero block size; [`RequestSequence::try_new`]
    /// returns those as errors.
    pub fn new(tokens: Vec<Token>, max_output_tokens: usize, block_size: u32) -> Self {
        match Self::try_new(tokens, max_output_tokens, block_size, None) {
            Ok(request) => request,
            Err(err) => panic!("{err}"),
        }
    }

    /// A request whose blocks are salted with `salt_hash` (LoRA adapter,
    /// tenant, multimodal content): equal tokens under other salts never
    /// share its blocks.
    ///
    /// # Errors
    ///
    /// [`RequestError::EmptyPrompt`], or [`RequestError::Sequence`] for a zero
    /// block size or a prompt past the last position a key encodes.
    pub fn try_new(
        tokens: Vec<Token>,
        max_output_tokens: usize,
        block_size: u32,
        salt_hash: Option<SaltHash>,
    ) -> Result<Self, RequestError> {
        if tokens.is_empty() {
            return Err(RequestError::EmptyPrompt);
        }
        let sequence = BlockSequence::try_new(&tokens, block_size, salt_hash)?;
        Ok(Self {
            num_input_tokens: tokens.len(),
            sequence,
            assignments: LogicalBlockAssignments::new(),
            generated_tokens: 0,
            max_output_tokens,
            prefix_matched_blocks: 0,
            manager: None,
        })
    }

    /// Checks that `manager` fits this request: same block size, and the
    /// manager of any block it holds.
    #[inline]
    pub(crate) fn check_manager(&self, manager: &BlockManager<T>) -> Result<(), RequestError> {
        // The manager it is bound to passed this check when it was bound
        // (ids are never reused), so it fits: one comparison per call on
        // the decode path.
        if self.manager == Some(manager.id()) {
            return Ok(());
        }
        if manager.block_size() != self.sequence.block_size() {
            return Err(RequestError::BlockSizeMismatch {
                sequence: self.sequence.block_size(),
                manager: manager.block_size(),
            });
        }
        match self.manager {
            Some(holds) if holds != manager.id() && !self.assignments.is_empty() => {
                Err(RequestError::WrongManager {
                    holds,
                    given: manager.id(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Leading full blocks a prefix match may cover: every full block before
    /// the one holding the last token.
    pub fn matchable_blocks(&self) -> usize {
        (self.total_tokens() - 1) / self.block_size()
    }

    /// Matches the cached prefix (up to [`matchable_blocks`](Self::matchable_blocks))
    /// and adds it as registered blocks; returns how many matched.
    ///
    /// # Errors
    ///
    /// [`RequestError::HoldsBlocks`] unless the request holds no block, or a
    /// manager mismatch.
    pub fn match_and_add_prefix(
        &mut self,
        manager: &BlockManager<T>,
    ) -> Result<usize, RequestError> {
        let plan = self.admission_plan(manager, 0)?;
        let matched = manager.match_blocks(self.matchable_hashes(&plan));
        let count = matched.len();
        self.commit_admission(manager, matched, std::iter::empty())?;
        Ok(count)
    }

    /// What admitting this request with `lookahead` extra token slots takes.
    pub(crate) fn admission_plan(
        &self,
        manager: &BlockManager<T>,
        lookahead: usize,
    ) -> Result<AdmissionPlan, RequestError> {
        self.check_manager(manager)?;
        if !self.assignments.is_empty() {
            return Err(RequestError::HoldsBlocks {
                blocks: self.assignments.len(),
            });
        }
        let needed = self
            .total_tokens()
            .saturating_add(lookahead)
            .div_ceil(self.block_size());
        if needed > manager.total_blocks() {
            return Err(RequestError::ExceedsPool {
                needed,
                total: manager.total_blocks(),
            });
        }
        Ok(AdmissionPlan {
            matchable: self.matchable_blocks(),
            needed,
        })
    }

    /// The keys a match for this request's admission looks up.
    pub(crate) fn matchable_hashes(&self, plan: &AdmissionPlan) -> &[SequenceHash] {
        &self.sequence.sequence_hashes()[..plan.matchable]
    }

    /// Takes matched and freshly allocated blocks as the request's blocks.
    /// On a (never expected) key mismatch, drops them and reports it.
    pub(crate) fn commit_admission(
        &mut self,
        manager: &BlockManager<T>,
        matched: Vec<ImmutableBlock<T>>,
        allocated: impl Iterator<Item = MutableBlock<T>>,
    ) -> Result<(), RequestError> {
        let count = matched.len();
        let expected = &self.sequence.sequence_hashes()[..count];
        let mismatch = matched
            .iter()
            .zip(expected)
            .position(|(block, hash)| block.sequence_hash() != *hash);
        if let Some(position) = mismatch {
            return Err(RequestError::HashMismatch { position });
        }
        if self.assignments.extend_assigned(matched).is_err() {
            return Err(RequestError::HashMismatch { position: 0 });
        }
        self.assignments.extend_blocks(allocated);
        self.prefix_matched_blocks = count;
        self.manager = Some(manager.id());
        Ok(())
    }

    /// Whether [`admit`](Self::admit) is certain to succeed now, without
    /// touching the pool: the blocks the request would hold (its tokens plus
    /// `lookahead` slots) fit in the available blocks.
    ///
    /// Conservative: a cached prefix block that is active (held by another
    /// request) costs admission nothing, but through the manager's public
    /// calls it cannot be told from an inactive one without pinning it, so
    /// each is counted as if it left the available pool. `false` therefore
    /// means "not certain", and `admit` may still succeed.
    pub fn can_admit(&self, manager: &BlockManager<T>, lookahead: usize) -> bool {
        self.admission_plan(manager, lookahead)
            .is_ok_and(|plan| plan.needed <= manager.available_blocks())
    }

    /// Matches the cached prefix and allocates slots for the remaining
    /// tokens plus `lookahead`, in one allocation; returns the matched block
    /// count. The allocated blocks stay writable until
    /// [`stage_up_to`](Self::stage_up_to) and
    /// [`register_staged`](Self::register_staged) file them.
    ///
    /// # Errors
    ///
    /// [`RequestError::HoldsBlocks`], a manager mismatch,
    /// [`RequestError::ExceedsPool`] or [`RequestError::InsufficientBlocks`].
    /// Nothing changes then, in the request or in the pool's slot states
    /// (matched blocks go back where they were; the eviction policy has seen
    /// them used).
    pub fn admit(
        &mut self,
        manager: &BlockManager<T>,
        lookahead: usize,
    ) -> Result<usize, RequestError> {
        let plan = self.admission_plan(manager, lookahead)?;
        let matched = manager.match_blocks(self.matchable_hashes(&plan));
        let missing = plan.needed - matched.len();
        let Some(allocated) = manager.allocate_blocks(missing) else {
            manager.release_blocks(matched.into_iter().rev().collect());
            return Err(RequestError::InsufficientBlocks {
                needed: missing,
                available: manager.available_blocks(),
            });
        };
        let count = matched.len();
        self.commit_admission(manager, matched, allocated.into_iter())?;
        Ok(count)
    }

    /// Allocates `count` writable blocks after the held ones; `false` (and
    /// nothing allocated) if the manager cannot supply them or does not fit.
    pub fn allocate_blocks(&mut self, count: usize, manager: &BlockManager<T>) -> bool {
        self.try_allocate_blocks(count, manager).is_ok()
    }

    /// [`allocate_blocks`](Self::allocate_blocks) with the reason for a failure.
    ///
    /// # Errors
    ///
    /// A manager mismatch, [`RequestError::ExceedsPool`] if the request would
    /// hold more blocks than the pool has, [`RequestError::InsufficientBlocks`].
    pub fn try_allocate_blocks(
        &mut self,
        count: usize,
        manager: &BlockManager<T>,
    ) -> Result<(), RequestError> {
        if count == 0 {
            return Ok(());
        }
        self.check_manager(manager)?;
        let needed = self.assignments.len() + count;
        if needed > manager.total_blocks() {
            return Err(RequestError::ExceedsPool {
                needed,
                total: manager.total_blocks(),
            });
        }
        let insufficient = || RequestError::InsufficientBlocks {
            needed: count,
            available: manager.available_blocks(),
        };
        if count == 1 {
            // The decode path: one block, no vector.
            let block = manager.allocate_block().ok_or_else(insufficient)?;
            self.assignments.extend_blocks(Some(block));
        } else {
            let blocks = manager.allocate_blocks(count).ok_or_else(insufficient)?;
            self.assignments.extend_blocks(blocks);
        }
        self.manager = Some(manager.id());
        Ok(())
    }

    /// Stages writable blocks for every full token block not yet staged or
    /// registered (the caller says all their KV is computed); returns how
    /// many were staged.
    pub fn stage_pending(&mut self) -> usize {
        self.stage_up_to(self.sequence.num_blocks())
    }

    /// Stages writable blocks for the full token blocks before position
    /// `blocks`: the blocks whose KV the caller has computed.
    #[inline]
    pub fn stage_up_to(&mut self, blocks: usize) -> usize {
        let filed = self.assignments.assigned_count() + self.assignments.staged_count();
        let end = blocks.min(self.sequence.num_blocks());
        if end <= filed {
            return 0;
        }
        let hashes = &self.sequence.sequence_hashes()[filed..end];
        self.assignments.stage_hashes(hashes).unwrap_or(0)
    }

    /// [`stage_up_to`](Self::stage_up_to)`(blocks)` then
    /// [`register_staged`](Self::register_staged); returns how many blocks
    /// were registered. The caller has checked the manager. When that is
    /// one block with nothing staged before (a block filled during decode)
    /// it takes the one-block path.
    pub(crate) fn register_up_to(&mut self, blocks: usize, manager: &BlockManager<T>) -> usize {
        let filed = self.assignments.assigned_count() + self.assignments.staged_count();
        let end = blocks.min(self.sequence.num_blocks());
        if end == filed + 1 && self.assignments.staged_count() == 0 {
            let hash = self.sequence.sequence_hashes()[filed];
            match self.assignments.register_next(hash, manager) {
                Ok(true) => return 1,
                // Left as it was: the general path decides.
                Ok(false) => {}
                // Staged, as the general path leaves it.
                Err(_) => return 0,
            }
        }
        if self.stage_up_to(blocks) == 0 {
            return 0;
        }
        self.register_staged(manager).unwrap_or(0)
    }

    /// Registers every staged block, making it matchable by other requests;
    /// returns how many.
    ///
    /// # Errors
    ///
    /// A manager mismatch; nothing is registered then.
    #[inline]
    pub fn register_staged(&mut self, manager: &BlockManager<T>) -> Result<usize, RequestError> {
        if self.assignments.staged_count() == 0 {
            return Ok(0);
        }
        self.check_manager(manager)?;
        let holds = self.manager.unwrap_or(ManagerId::NULL);
        self.assignments
            .try_register(manager)
            .map_err(|_| RequestError::WrongManager {
                holds,
                given: manager.id(),
            })
    }

    /// [`stage_pending`](Self::stage_pending) then
    /// [`register_staged`](Self::register_staged).
    ///
    /// # Errors
    ///
    /// As [`register_staged`](Self::register_staged); nothing changes then.
    pub fn complete_and_register_pending(
        &mut self,
        manager: &BlockManager<T>,
    ) -> Result<usize, RequestError> {
        self.check_manager(manager)?;
        self.stage_pending();
        self.register_staged(manager)
    }

    /// Appends a generated token; returns the index of the token block it
    /// filled, if any. Takes no block and registers nothing.
    ///
    /// # Errors
    ///
    /// [`RequestError::GenerationComplete`] once `max_output_tokens` tokens
    /// were generated, or a position overflow; nothing changes then.
    #[inline]
    pub fn append_token(&mut self, token: Token) -> Result<Option<usize>, RequestError> {
        self.check_remaining(1)?;
        self.append_within_budget(token)
    }

    /// [`append_token`](Self::append_token) for a caller that has checked
    /// the output budget (the decode path checks it before it changes
    /// anything).
    #[inline]
    pub(crate) fn append_within_budget(
        &mut self,
        token: Token,
    ) -> Result<Option<usize>, RequestError> {
        debug_assert!(self.remaining_tokens() > 0);
        let filled = self.sequence.append_token(token)?;
        self.generated_tokens += 1;
        Ok(filled)
    }

    /// Appends generated tokens, all or none; returns the token blocks filled.
    ///
    /// # Errors
    ///
    /// As [`append_token`](Self::append_token); nothing changes then.
    pub fn append_tokens(
        &mut self,
        tokens: &[Token],
    ) -> Result<Option<Range<usize>>, RequestError> {
        self.check_remaining(tokens.len())?;
        let filled = self.sequence.extend_from_slice(tokens)?;
        self.generated_tokens += tokens.len();
        Ok(filled)
    }

    fn check_remaining(&self, count: usize) -> Result<(), RequestError> {
        if count > self.remaining_tokens() {
            return Err(RequestError::GenerationComplete {
                generated: self.generated_tokens,
                max_output: self.max_output_tokens,
            });
        }
        Ok(())
    }

    /// Removes the last `count` generated tokens (tokens only: the blocks
    /// are the caller's to trim with [`truncate_blocks`](Self::truncate_blocks)).
    pub(crate) fn unwind_generated(&mut self, count: usize) -> Result<(), RequestError> {
        if count > self.generated_tokens {
            return Err(RequestError::RollbackBeyondGenerated {
                requested: count,
                generated: self.generated_tokens,
            });
        }
        self.sequence.unwind(count)?;
        self.generated_tokens -= count;
        Ok(())
    }

    /// Removes the last `count` generated tokens and the blocks that no
    /// longer fit: registered or staged blocks past the last full token
    /// block, and writable blocks past the last token. Returns how many
    /// blocks were dropped.
    ///
    /// # Errors
    ///
    /// [`RequestError::RollbackBeyondGenerated`]; nothing changes then.
    pub fn rollback(&mut self, count: usize) -> Result<usize, RequestError> {
        self.unwind_generated(count)?;
        let full = self.sequence.num_blocks();
        let filed = self.assignments.assigned_count() + self.assignments.staged_count();
        let keep = if filed > full {
            full
        } else {
            self.total_tokens().div_ceil(self.block_size())
        };
        Ok(self.truncate_blocks(keep))
    }

    /// Keeps the blocks of the first `positions` positions and drops the
    /// rest, last first; returns how many were dropped.
    pub fn truncate_blocks(&mut self, positions: usize) -> usize {
        let dropped = self.assignments.truncate(positions);
        self.prefix_matched_blocks = self
            .prefix_matched_blocks
            .min(self.assignments.assigned_count());
        dropped
    }

    /// Whether `max_output_tokens` tokens were generated.
    pub fn is_complete(&self) -> bool {
        self.generated_tokens >= self.max_output_tokens
    }

    /// Drops every block, last position first (preemption); tokens stay.
    pub fn release(&mut self) {
        self.assignments.clear();
        self.prefix_matched_blocks = 0;
    }

    /// [`release`](Self::release), handing the registered blocks back in one
    /// batch ([`BlockManager::release_blocks`]) when `manager` is theirs.
    pub fn release_to(&mut self, manager: &BlockManager<T>) {
        if self.check_manager(manager).is_ok() {
            self.assignments.release_to(manager);
        }
        self.release();
    }

    /// Takes blocks again after a [`release`](Self::release): the cached
    /// prefix and slots for the other tokens (see [`admit`](Self::admit));
    /// `false` (and nothing taken) if that is not possible now.
    pub fn reacquire(&mut self, manager: &BlockManager<T>) -> bool {
        self.admit(manager, 0).is_ok()
    }

    /// Generated tokens.
    pub fn generated_tokens(&self) -> usize {
        self.generated_tokens
    }

    /// The output budget.
    pub fn max_output_tokens(&self) -> usize {
        self.max_output_tokens
    }

    /// Prompt tokens.
    pub fn num_input_tokens(&self) -> usize {
        self.num_input_tokens
    }

    /// Prompt and generated tokens.
    pub fn total_tokens(&self) -> usize {
        self.sequence.total_tokens()
    }

    /// Tokens it may still generate.
    pub fn remaining_tokens(&self) -> usize {
        self.max_output_tokens.saturating_sub(self.generated_tokens)
    }

    /// Full token blocks.
    pub fn num_blocks(&self) -> usize {
        self.sequence.num_blocks()
    }

    /// Full token blocks (kvbm-logical's scheduling name for
    /// [`num_blocks`](Self::num_blocks)).
    pub fn complete_sequence_blocks(&self) -> usize {
        self.sequence.num_blocks()
    }

    /// Registered blocks held.
    pub fn assigned_blocks(&self) -> usize {
        self.assignments.assigned_count()
    }

    /// Staged blocks held.
    pub fn staged_blocks(&self) -> usize {
        self.assignments.staged_count()
    }

    /// Writable blocks held.
    pub fn unassigned_blocks(&self) -> usize {
        self.assignments.unassigned_count()
    }

    /// Blocks of all kinds held.
    pub fn held_blocks(&self) -> usize {
        self.assignments.len()
    }

    /// Blocks the last admission (or match) found cached.
    pub fn prefix_matched_blocks(&self) -> usize {
        self.prefix_matched_blocks
    }

    /// Tokens a prefill must compute: all but the cached prefix.
    pub fn new_tokens_for_prefill(&self) -> usize {
        let cached = self.prefix_matched_blocks * self.block_size();
        self.total_tokens().saturating_sub(cached)
    }

    /// The token sequence.
    pub fn sequence(&self) -> &BlockSequence {
        &self.sequence
    }

    /// The block guards.
    pub fn assignments(&self) -> &LogicalBlockAssignments<T> {
        &self.assignments
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.sequence.block_size()
    }

    /// The salt hash of its blocks.
    pub fn salt_hash(&self) -> SaltHash {
        self.sequence.salt_hash()
    }

    /// Held block ids in position order, as a new vector (kvbm-logical's
    /// shape; [`block_table`](Self::block_table) borrows them instead).
    pub fn page_indices(&self) -> Vec<u32> {
        self.assignments.block_table().to_vec()
    }

    /// Held block ids in position order: the attention kernel's block table.
    pub fn block_table(&self) -> &[u32] {
        self.assignments.block_table()
    }

    /// Drops writable blocks beyond `keep`, last first; returns how many.
    pub fn drop_excess_unassigned(&mut self, keep: usize) -> usize {
        let mut dropped = 0;
        while self.assignments.unassigned_count() > keep {
            self.assignments.pop_last_unassigned();
            dropped += 1;
        }
        dropped
    }
}

impl<T> std::fmt::Debug for RequestSequence<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSequence")
            .field("total_tokens", &self.sequence.total_tokens())
            .field("num_input_tokens", &self.num_input_tokens)
            .field("generated_tokens", &self.generated_tokens)
            .field("max_output_tokens", &self.max_output_tokens)
            .field("prefix_matched_blocks", &self.prefix_matched_blocks)
            .field("assignments", &self.assignments)
            .finish()
    }
}
