//! [`SchedulableSequence`]: the two-phase schedule → apply state machine a
//! scheduler drives per request and per step.
//!
//! Owns one [`RequestSequence`] and the request's KV position (tokens whose
//! KV is computed). `schedule_*` checks the request and takes the slots the
//! step writes; `apply_*` records what the model produced; `revert_schedule`
//! undoes a schedule, releasing its slots last first.
//!
//! # When a block is registered
//!
//! A block is registered (and matchable by other requests) as soon as the
//! KV of all its tokens is computed: in the apply of the step that computed
//! its last token. kvbm-logical registers a block as soon as its last token
//! is *appended*, one step before that token's KV exists, so another request
//! could match a block whose KV is not there yet.
//!
//! # Prefill, recompute, decode
//!
//! - The first prefill computes the prompt; its final chunk carries the first
//!   output token. A cached prefix never covers the last prompt token, so
//!   there is always a final chunk.
//! - After a preemption ([`release`](SchedulableSequence::release) then
//!   [`reacquire`](SchedulableSequence::reacquire)) or a rollback into
//!   computed tokens, the prefill recomputes every token but the last
//!   generated one and emits no token; the last one is then decoded.
//! - A decode step computes the one dangling token and appends the next.
//! - A speculative step computes the dangling token and `k` drafts; the apply
//!   appends the accepted drafts plus the model's own next token (at most
//!   `k + 1` tokens), and releases the slots of rejected drafts, last first.
//!
//! Every call checks everything before it changes anything: an error leaves
//! the request and the pool as they were.

use std::sync::Arc;

use super::{
    ApplyError, DecodeOutcome, RequestError, RequestSequence, ScheduleError, SequenceDelegate,
    SequenceEvent, SequenceState,
};
use crate::hash::Token;
use crate::sequence::BlockSequenceError;
use crate::{BlockManager, BlockMetadata};

/// One request under a scheduler: schedule a step, run the model, apply it.
///
/// ```
/// use kvblocks::{BlockManager, DecodeOutcome, SchedulableSequence};
/// #[derive(Clone)] struct Gpu;
/// let manager = BlockManager::<Gpu>::builder().block_count(16).block_size(4).build()?;
/// let mut seq = SchedulableSequence::<Gpu>::builder()
///     .tokens((0..6).collect()).max_output_tokens(4).block_size(4).build()?;
///
/// seq.admit(&manager, 0)?;
/// seq.schedule_prefill(6, &manager)?;               // one chunk
/// seq.apply_prefill(Some(100), &manager)?;          // first output token
/// assert_eq!(seq.assigned_blocks(), 1);             // block 0 is matchable
/// seq.schedule_decode(&manager)?;
/// assert_eq!(seq.apply_decode(101, &manager)?, DecodeOutcome::Continue);
/// seq.schedule_decode(&manager)?;
/// assert_eq!(seq.apply_decode(102, &manager)?, DecodeOutcome::BlockCompleted);
/// assert_eq!(seq.block_table().len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SchedulableSequence<T> {
    pub(super) inner: RequestSequence<T>,
    pub(super) state: SequenceState,
    pub(super) kv_position: usize,
    delegate: Option<Arc<dyn SequenceDelegate>>,
}

impl<T: BlockMetadata> SchedulableSequence<T> {
    /// A builder (tokens, output budget and block size are required).
    pub fn builder() -> super::SchedulableSequenceBuilder<T> {
        super::SchedulableSequenceBuilder::default()
    }

    /// A sequence with no salt; `None` delegate means no events.
    ///
    /// # Panics
    ///
    /// On an empty prompt or a zero block size; the builder returns those as
    /// errors.
    pub fn new(
        tokens: Vec<Token>,
        max_output_tokens: usize,
        block_size: u32,
        delegate: Option<Arc<dyn SequenceDelegate>>,
    ) -> Self {
        match RequestSequence::try_new(tokens, max_output_tokens, block_size, None) {
            Ok(inner) => Self::from_request(inner, delegate),
            Err(err) => panic!("{err}"),
        }
    }

    /// Wraps a fresh request.
    pub(crate) fn from_request(
        inner: RequestSequence<T>,
        delegate: Option<Arc<dyn SequenceDelegate>>,
    ) -> Self {
        let seq = Self {
            inner,
            state: SequenceState::Idle,
            kv_position: 0,
            delegate,
        };
        seq.emit(|| SequenceEvent::Created {
            num_input_tokens: seq.inner.num_input_tokens(),
            max_output_tokens: seq.inner.max_output_tokens(),
            block_size: seq.inner.block_size(),
        });
        seq
    }

    #[inline]
    pub(super) fn emit(&self, event: impl FnOnce() -> SequenceEvent) {
        if let Some(delegate) = &self.delegate {
            delegate.on_event(&event());
        }
    }

    /// Matches the cached prefix (see [`RequestSequence::match_and_add_prefix`]);
    /// the matched tokens count as computed.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::NotIdle`], or the request's refusal.
    pub fn match_and_add_prefix(
        &mut self,
        manager: &BlockManager<T>,
    ) -> Result<usize, ScheduleError> {
        self.require_idle()?;
        let count = self.inner.match_and_add_prefix(manager)?;
        self.kv_position = count * self.inner.block_size();
        self.emit(|| SequenceEvent::PrefixMatched {
            blocks_matched: count,
        });
        Ok(count)
    }

    /// Whether [`admit`](Self::admit) is certain to succeed now; no side
    /// effect (see [`RequestSequence::can_admit`] for what "certain" means).
    pub fn can_admit(&self, manager: &BlockManager<T>, lookahead: usize) -> bool {
        self.state == SequenceState::Idle && self.inner.can_admit(manager, lookahead)
    }

    /// Matches the cached prefix and allocates slots for every other token
    /// plus `lookahead`, all or nothing; returns the matched block count.
    /// Chunks scheduled later then allocate nothing.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::NotIdle`], [`ScheduleError::AllocationFailed`], or
    /// the request's refusal ([`RequestError::HoldsBlocks`],
    /// [`RequestError::ExceedsPool`], a manager mismatch). Nothing changes.
    pub fn admit(
        &mut self,
        manager: &BlockManager<T>,
        lookahead: usize,
    ) -> Result<usize, ScheduleError> {
        let matched =
            super::admit_all(manager, &mut [self], lookahead).map_err(|err| match err {
                super::AdmitError::Request { source, .. } => source,
                super::AdmitError::InsufficientBlocks { needed, available } => {
                    ScheduleError::AllocationFailed { needed, available }
                }
            })?;
        Ok(matched)
    }

    /// Checks this sequence can be admitted; what it takes.
    pub(crate) fn admission_plan(
        &self,
        manager: &BlockManager<T>,
        lookahead: usize,
    ) -> Result<super::request::AdmissionPlan, ScheduleError> {
        self.require_idle()?;
        Ok(self.inner.admission_plan(manager, lookahead)?)
    }

    /// The request, for the batch admission's match and commit.
    pub(crate) fn request(&self) -> &RequestSequence<T> {
        &self.inner
    }

    /// Takes admitted blocks (batch admission's last step).
    pub(crate) fn commit_admission(
        &mut self,
        manager: &BlockManager<T>,
        matched: Vec<crate::ImmutableBlock<T>>,
        allocated: impl Iterator<Item = crate::MutableBlock<T>>,
    ) -> Result<usize, ScheduleError> {
        let count = matched.len();
        self.inner.commit_admission(manager, matched, allocated)?;
        self.kv_position = count * self.inner.block_size();
        self.emit(|| SequenceEvent::Admitted {
            prefix_matched: count,
            blocks_allocated: self.inner.held_blocks() - count,
        });
        Ok(count)
    }

    /// Holds at least the blocks covering the first `tokens` tokens;
    /// returns how many it allocated.
    #[inline]
    fn ensure_slots(
        &mut self,
        tokens: usize,
        manager: &BlockManager<T>,
    ) -> Result<usize, ScheduleError> {
        let (held, bs) = (self.inner.held_blocks(), self.inner.block_size());
        // Compared by a multiplication: no division on the decode path.
        if tokens <= held * bs {
            self.inner.check_manager(manager)?;
            return Ok(0);
        }
        self.allocate_slots(tokens, manager)
    }

    /// [`ensure_slots`](Self::ensure_slots) when blocks are missing (once per
    /// block during decode), out of line.
    #[inline(never)]
    fn allocate_slots(
        &mut self,
        tokens: usize,
        manager: &BlockManager<T>,
    ) -> Result<usize, ScheduleError> {
        let (held, bs) = (self.inner.held_blocks(), self.inner.block_size());
        let needed = tokens.div_ceil(bs);
        self.inner.try_allocate_blocks(needed - held, manager)?;
        Ok(needed - held)
    }

    /// Stages and registers every block whose KV is now computed; returns
    /// how many. The caller has checked the manager.
    #[inline(never)]
    fn register_computed(&mut self, manager: &BlockManager<T>) -> usize {
        let blocks = self.kv_position / self.inner.block_size();
        self.inner.register_up_to(blocks, manager)
    }

    /// Where the prefill ends: the prompt's end before the first output
    /// token, afterwards every token but the last (which a decode computes).
    pub fn prefill_target(&self) -> usize {
        if self.inner.generated_tokens() == 0 {
            self.inner.num_input_tokens()
        } else {
            self.inner.total_tokens() - 1
        }
    }

    /// Schedules a prefill chunk of `num_tokens` tokens, taking the slots it
    /// writes.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::NotIdle`], [`ScheduleError::PrefillComplete`],
    /// [`ScheduleError::PrefillOverrun`], [`ScheduleError::AllocationFailed`],
    /// or the request's refusal. Nothing changes.
    pub fn schedule_prefill(
        &mut self,
        num_tokens: usize,
        manager: &BlockManager<T>,
    ) -> Result<(), ScheduleError> {
        self.require_idle()?;
        let target = self.prefill_target();
        if self.kv_position >= target {
            return Err(ScheduleError::PrefillComplete);
        }
        if num_tokens > target - self.kv_position {
            return Err(ScheduleError::PrefillOverrun {
                position: self.kv_position,
                num_tokens,
                target,
            });
        }
        let blocks_allocated = self.ensure_slots(self.kv_position + num_tokens, manager)?;
        self.state = SequenceState::PrefillScheduled {
            num_tokens,
            blocks_allocated,
        };
        self.emit(|| SequenceEvent::PrefillScheduled {
            num_tokens,
            blocks_allocated,
        });
        Ok(())
    }

    /// Applies the scheduled prefill chunk: its tokens' KV is computed, and
    /// every block it completed is registered. `token` is the first output
    /// token, required on the final chunk of the first prefill (unless the
    /// output budget is 0) and refused everywhere else.
    ///
    /// # Errors
    ///
    /// [`ApplyError::WrongState`], [`ApplyError::TokenOnNonFinalChunk`],
    /// [`ApplyError::TokenNotExpected`], [`ApplyError::MissingTokenOnFinalChunk`],
    /// or the request's refusal. Nothing changes.
    pub fn apply_prefill(
        &mut self,
        token: Option<Token>,
        manager: &BlockManager<T>,
    ) -> Result<(), ApplyError> {
        let SequenceState::PrefillScheduled { num_tokens, .. } = self.state else {
            return Err(self.wrong_state("PrefillScheduled"));
        };
        let computed = self.kv_position + num_tokens;
        let is_final = computed >= self.prefill_target();
        let expects_token =
            is_final && self.inner.generated_tokens() == 0 && self.inner.max_output_tokens() > 0;
        match (token.is_some(), expects_token) {
            (true, false) if !is_final => return Err(ApplyError::TokenOnNonFinalChunk),
            (true, false) => return Err(ApplyError::TokenNotExpected),
            (false, true) => return Err(ApplyError::MissingTokenOnFinalChunk),
            _ => {}
        }
        self.check_apply(manager, usize::from(token.is_some()))?;
        self.kv_position = computed;
        let blocks_registered = self.register_computed(manager);
        if let Some(token) = token {
            self.inner.append_token(token)?;
        }
        self.state = SequenceState::Idle;
        self.emit(|| SequenceEvent::PrefillApplied {
            num_tokens,
            blocks_registered,
            token_emitted: token.is_some(),
        });
        Ok(())
    }

    /// Schedules one decode step: the dangling token's KV will be computed,
    /// so its slot is taken now if it is the first of a new block.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::NotIdle`], [`ScheduleError::PrefillNotComplete`],
    /// [`ScheduleError::GenerationComplete`], [`ScheduleError::WrongDanglingCount`],
    /// [`ScheduleError::AllocationFailed`], or the request's refusal.
    #[inline]
    pub fn schedule_decode(&mut self, manager: &BlockManager<T>) -> Result<(), ScheduleError> {
        self.require_decodable()?;
        let blocks_allocated = self.ensure_slots(self.kv_position + 1, manager)?;
        self.state = SequenceState::DecodeScheduled { blocks_allocated };
        self.emit(|| SequenceEvent::DecodeScheduled { blocks_allocated });
        Ok(())
    }

    /// Applies the scheduled decode step: the dangling token's KV is
    /// computed (registering its block if that completed one) and `token`
    /// becomes the new dangling token.
    ///
    /// # Errors
    ///
    /// [`ApplyError::WrongState`], or the request's refusal. Nothing changes.
    #[inline]
    pub fn apply_decode(
        &mut self,
        token: Token,
        manager: &BlockManager<T>,
    ) -> Result<DecodeOutcome, ApplyError> {
        let SequenceState::DecodeScheduled { .. } = self.state else {
            return Err(self.wrong_state("DecodeScheduled"));
        };
        self.check_apply(manager, 1)?;
        self.kv_position += 1;
        // The step completed a block iff the computed tokens reach the end of
        // the first unregistered one (registered = computed full blocks).
        let boundary = (self.inner.assigned_blocks() + 1) * self.inner.block_size();
        let completed = self.kv_position == boundary && self.register_computed(manager) > 0;
        // `check_apply` checked the budget and the room for one token.
        self.inner.append_within_budget(token)?;
        self.state = SequenceState::Idle;
        self.emit(|| SequenceEvent::DecodeApplied {
            token,
            block_completed: completed,
        });
        Ok(DecodeOutcome::new(completed, self.inner.is_complete()))
    }

    /// Schedules a speculative step verifying `num_draft_tokens` drafts
    /// (clamped so that the drafts plus one fit the output budget), taking
    /// look-ahead slots for all of them.
    ///
    /// # Errors
    ///
    /// As [`schedule_decode`](Self::schedule_decode).
    pub fn schedule_speculative(
        &mut self,
        num_draft_tokens: usize,
        manager: &BlockManager<T>,
    ) -> Result<(), ScheduleError> {
        self.require_decodable()?;
        let num_tokens = num_draft_tokens.min(self.inner.remaining_tokens() - 1);
        let blocks_allocated = self.ensure_slots(self.kv_position + 1 + num_tokens, manager)?;
        self.state = SequenceState::SpeculativeScheduled {
            num_tokens,
            blocks_allocated,
        };
        self.emit(|| SequenceEvent::SpeculativeScheduled {
            num_tokens,
            blocks_allocated,
        });
        Ok(())
    }

    /// Applies the scheduled speculative step: `accepted` holds the accepted
    /// drafts followed by the model's own next token (at most drafts + 1
    /// tokens). The dangling token and the accepted drafts now have KV;
    /// completed blocks are registered; the slots of rejected drafts are
    /// released, last first.
    ///
    /// # Errors
    ///
    /// [`ApplyError::WrongState`], [`ApplyError::AcceptedExceedsScheduled`],
    /// or the request's refusal. Nothing changes.
    pub fn apply_speculative(
        &mut self,
        accepted: &[Token],
        manager: &BlockManager<T>,
    ) -> Result<DecodeOutcome, ApplyError> {
        let SequenceState::SpeculativeScheduled { num_tokens, .. } = self.state else {
            return Err(self.wrong_state("SpeculativeScheduled"));
        };
        if accepted.len() > num_tokens + 1 {
            return Err(ApplyError::AcceptedExceedsScheduled {
                accepted: accepted.len(),
                scheduled: num_tokens,
            });
        }
        self.check_apply(manager, accepted.len())?;
        // The accepted tokens fill the token blocks being registered.
        self.inner.append_tokens(accepted)?;
        self.kv_position += accepted.len();
        let registered = self.register_computed(manager);
        let keep = if self.inner.is_complete() {
            self.kv_position
        } else {
            self.inner.total_tokens()
        };
        let blocks_released = self
            .inner
            .truncate_blocks(keep.div_ceil(self.inner.block_size()));
        self.state = SequenceState::Idle;
        self.emit(|| SequenceEvent::SpeculativeApplied {
            accepted: accepted.len(),
            scheduled: num_tokens,
            blocks_released,
        });
        Ok(DecodeOutcome::new(registered > 0, self.inner.is_complete()))
    }

    /// Undoes the scheduled operation: releases the blocks it allocated,
    /// last first.
    ///
    /// # Errors
    ///
    /// [`ApplyError::WrongState`] when nothing is scheduled.
    pub fn revert_schedule(&mut self) -> Result<(), ApplyError> {
        let blocks_released = match self.state {
            SequenceState::PrefillScheduled {
                blocks_allocated, ..
            }
            | SequenceState::DecodeScheduled { blocks_allocated }
            | SequenceState::SpeculativeScheduled {
                blocks_allocated, ..
            } => blocks_allocated,
            SequenceState::Idle => return Err(self.wrong_state("any Scheduled state")),
        };
        let held = self.inner.held_blocks();
        self.inner
            .truncate_blocks(held.saturating_sub(blocks_released));
        self.state = SequenceState::Idle;
        self.emit(|| SequenceEvent::ScheduleReverted { blocks_released });
        Ok(())
    }

    /// The scheduling state.
    pub fn state(&self) -> SequenceState {
        self.state
    }

    /// Prompt tokens whose KV is computed.
    pub fn prefill_position(&self) -> usize {
        self.kv_position.min(self.inner.num_input_tokens())
    }

    /// Whether the prefill (or recompute) is done.
    pub fn is_prefill_complete(&self) -> bool {
        self.kv_position >= self.prefill_target()
    }

    /// Tokens whose KV is computed.
    pub fn kv_position(&self) -> usize {
        self.kv_position
    }

    /// Tokens whose KV is not computed (1 between decode steps).
    pub fn tail_tokens(&self) -> usize {
        self.inner.total_tokens() - self.kv_position
    }

    /// The delegate, if any.
    pub fn delegate(&self) -> Option<&Arc<dyn SequenceDelegate>> {
        self.delegate.as_ref()
    }

    /// The request.
    pub fn inner(&self) -> &RequestSequence<T> {
        &self.inner
    }

    /// Held block ids in position order: the attention kernel's block table.
    pub fn block_table(&self) -> &[u32] {
        self.inner.block_table()
    }

    /// [`block_table`](Self::block_table) as a new vector.
    pub fn page_indices(&self) -> Vec<u32> {
        self.inner.page_indices()
    }

    fn require_idle(&self) -> Result<(), ScheduleError> {
        match self.state {
            SequenceState::Idle => Ok(()),
            state => Err(ScheduleError::NotIdle { state }),
        }
    }

    pub(super) fn require_idle_for_apply(&self) -> Result<(), ApplyError> {
        match self.state {
            SequenceState::Idle => Ok(()),
            _ => Err(self.wrong_state("Idle")),
        }
    }

    fn wrong_state(&self, expected: &'static str) -> ApplyError {
        ApplyError::WrongState {
            expected,
            actual: self.state,
        }
    }

    /// Idle, prefilled, not complete, exactly one dangling token.
    #[inline]
    fn require_decodable(&self) -> Result<(), ScheduleError> {
        // The common case in one pass: once a token is generated the prefill
        // target is every token but the last, so "prefilled with one
        // dangling token" is `kv_position + 1 == total`. (Before the first
        // token no request is decodable.)
        let generated = self.inner.generated_tokens();
        if matches!(self.state, SequenceState::Idle)
            && generated > 0
            && generated < self.inner.max_output_tokens()
            && self.kv_position + 1 == self.inner.total_tokens()
        {
            return Ok(());
        }
        self.not_decodable()
    }

    /// Why [`require_decodable`](Self::require_decodable) refused (out of
    /// line; may still be `Ok`, as the full checks decide).
    #[cold]
    #[inline(never)]
    fn not_decodable(&self) -> Result<(), ScheduleError> {
        self.require_idle()?;
        if !self.is_prefill_complete() {
            return Err(ScheduleError::PrefillNotComplete {
                position: self.kv_position,
                target: self.prefill_target(),
            });
        }
        if self.inner.is_complete() {
            return Err(ScheduleError::GenerationComplete {
                generated: self.inner.generated_tokens(),
                max_output: self.inner.max_output_tokens(),
            });
        }
        if self.tail_tokens() != 1 {
            return Err(ScheduleError::WrongDanglingCount {
                expected: 1,
                actual: self.tail_tokens(),
            });
        }
        Ok(())
    }

    /// The manager fits and `tokens` more tokens can be appended.
    #[inline]
    fn check_apply(&self, manager: &BlockManager<T>, tokens: usize) -> Result<(), ApplyError> {
        self.inner.check_manager(manager)?;
        if tokens > self.inner.remaining_tokens() {
            return Err(ApplyError::AppendExceedsRemaining {
                requested: tokens,
                remaining: self.inner.remaining_tokens(),
            });
        }
        if !self.inner.sequence().has_room_for(tokens) {
            let position = crate::hash::MAX_POSITION;
            let err =
                BlockSequenceError::Token(crate::hash::TokenError::PositionOverflow { position });
            return Err(RequestError::Sequence(err).into());
        }
        Ok(())
    }
}

/// Read-only forwards to the request.
macro_rules! forward_to_request {
    ($($(#[$doc:meta])* $name:ident -> $ty:ty;)*) => {
        impl<T: BlockMetadata> SchedulableSequence<T> {
            $($(#[$doc])* pub fn $name(&self) -> $ty { self.inner.$name() })*
        }
    };
}

forward_to_request! {
    /// Generated tokens.
    generated_tokens -> usize;
    /// The output budget.
    max_output_tokens -> usize;
    /// Prompt tokens.
    num_input_tokens -> usize;
    /// Prompt and generated tokens.
    total_tokens -> usize;
    /// Tokens it may still generate.
    remaining_tokens -> usize;
    /// Full token blocks.
    num_blocks -> usize;
    /// Registered blocks held.
    assigned_blocks -> usize;
    /// Staged blocks held.
    staged_blocks -> usize;
    /// Writable blocks held.
    unassigned_blocks -> usize;
    /// Blocks of all kinds held.
    held_blocks -> usize;
    /// Blocks the last admission found cached.
    prefix_matched_blocks -> usize;
    /// Tokens a prefill must compute: all but the cached prefix.
    new_tokens_for_prefill -> usize;
    /// Tokens per block.
    block_size -> usize;
    /// Whether the output budget is used up.
    is_complete -> bool;
}

impl<T> std::fmt::Debug for SchedulableSequence<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulableSequence")
            .field("state", &self.state)
            .field("kv_position", &self.kv_position)
            .field("inner", &self.inner)
            .finish()
    }
}
