//! What a [`SchedulableSequence`](super::SchedulableSequence) tells the
//! outside world: its state, the outcome of a decode step, and the events it
//! hands to a [`SequenceDelegate`] at every transition.
//!
//! Owns the vocabulary only; the sequence decides when to emit. An event is
//! built only when a delegate is set, so a sequence without one pays nothing.

use crate::hash::Token;

/// Where a [`SchedulableSequence`](super::SchedulableSequence) is in the
/// schedule → apply protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceState {
    /// Nothing scheduled.
    Idle,
    /// A prefill chunk is scheduled.
    PrefillScheduled {
        /// Tokens in the chunk.
        num_tokens: usize,
        /// Blocks the schedule allocated (returned by a revert).
        blocks_allocated: usize,
    },
    /// One decode step is scheduled.
    DecodeScheduled {
        /// Blocks the schedule allocated.
        blocks_allocated: usize,
    },
    /// A speculative step is scheduled.
    SpeculativeScheduled {
        /// Draft tokens verified by the step.
        num_tokens: usize,
        /// Blocks the schedule allocated.
        blocks_allocated: usize,
    },
}

/// What an applied decode or speculative step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeOutcome {
    /// Nothing notable.
    Continue,
    /// A block's KV became complete: it was registered and other requests
    /// can match it from now on.
    BlockCompleted,
    /// The output budget is used up.
    MaxLength,
    /// Both.
    BlockCompletedAndMaxLength,
}

impl DecodeOutcome {
    pub(crate) fn new(block_completed: bool, max_length: bool) -> Self {
        match (block_completed, max_length) {
            (false, false) => DecodeOutcome::Continue,
            (true, false) => DecodeOutcome::BlockCompleted,
            (false, true) => DecodeOutcome::MaxLength,
            (true, true) => DecodeOutcome::BlockCompletedAndMaxLength,
        }
    }
}

/// One transition of a sequence, as its delegate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceEvent {
    /// The sequence was built.
    Created {
        /// Prompt tokens.
        num_input_tokens: usize,
        /// Output budget.
        max_output_tokens: usize,
        /// Tokens per block.
        block_size: usize,
    },
    /// A cached prefix was matched.
    PrefixMatched {
        /// Blocks found cached.
        blocks_matched: usize,
    },
    /// The sequence took its blocks: cached prefix plus fresh slots.
    Admitted {
        /// Blocks found cached.
        prefix_matched: usize,
        /// Fresh blocks allocated.
        blocks_allocated: usize,
    },
    /// A prefill chunk was scheduled.
    PrefillScheduled {
        /// Tokens in the chunk.
        num_tokens: usize,
        /// Blocks allocated for it.
        blocks_allocated: usize,
    },
    /// A prefill chunk was applied.
    PrefillApplied {
        /// Tokens in the chunk.
        num_tokens: usize,
        /// Blocks registered by it.
        blocks_registered: usize,
        /// Whether it emitted the first output token.
        token_emitted: bool,
    },
    /// A decode step was scheduled.
    DecodeScheduled {
        /// Blocks allocated for it.
        blocks_allocated: usize,
    },
    /// A decode step was applied.
    DecodeApplied {
        /// The token it produced.
        token: Token,
        /// Whether a block was registered.
        block_completed: bool,
    },
    /// A speculative step was scheduled.
    SpeculativeScheduled {
        /// Draft tokens.
        num_tokens: usize,
        /// Blocks allocated for it.
        blocks_allocated: usize,
    },
    /// A speculative step was applied.
    SpeculativeApplied {
        /// Tokens appended.
        accepted: usize,
        /// Drafts scheduled.
        scheduled: usize,
        /// Look-ahead blocks released (last first).
        blocks_released: usize,
    },
    /// A schedule was undone.
    ScheduleReverted {
        /// Blocks released.
        blocks_released: usize,
    },
    /// Idle writable blocks were dropped on request.
    UnassignedDropped {
        /// Blocks dropped.
        count: usize,
    },
    /// Generated tokens were rolled back.
    RolledBack {
        /// Tokens removed.
        tokens: usize,
        /// Blocks released.
        blocks_released: usize,
    },
    /// Every block was released (preemption or end).
    Released,
    /// Blocks were taken again after a release.
    Reacquired {
        /// Blocks found cached.
        prefix_matched: usize,
        /// Whether it succeeded.
        success: bool,
    },
}

/// Receives every [`SequenceEvent`] of the sequences it is given to.
///
/// Called synchronously inside the transition, so it should be quick.
pub trait SequenceDelegate: Send + Sync {
    /// One transition.
    fn on_event(&self, event: &SequenceEvent);
}

/// A delegate that ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopDelegate;

impl SequenceDelegate for NoopDelegate {
    fn on_event(&self, _event: &SequenceEvent) {}
}
