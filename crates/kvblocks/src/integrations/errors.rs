//! The typed errors of the request layer: one enum per boundary
//! ([`RequestSequence`](super::RequestSequence) calls, the schedule and apply
//! halves of [`SchedulableSequence`](super::SchedulableSequence), batch
//! admission, the builder). Every error means "nothing changed": the request
//! and the pool are as they were before the call.

use super::SequenceState;
use crate::sequence::BlockSequenceError;
use crate::ManagerId;

/// A failed [`RequestSequence`](super::RequestSequence) call; the request and the pool are unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A request needs at least one prompt token.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// Building or extending the token sequence failed (zero block size,
    /// position overflow).
    #[error(transparent)]
    Sequence(#[from] BlockSequenceError),
    /// The request holds blocks of another manager.
    #[error("the request holds blocks of manager {holds:?}, not of manager {given:?}")]
    WrongManager {
        /// The manager whose blocks it holds.
        holds: ManagerId,
        /// The manager it was given.
        given: ManagerId,
    },
    /// The manager's block size is not the sequence's.
    #[error("the sequence has {sequence}-token blocks, the manager {manager}-token blocks")]
    BlockSizeMismatch {
        /// The sequence's block size.
        sequence: usize,
        /// The manager's block size.
        manager: usize,
    },
    /// Matching or admission needs a request that holds no block.
    #[error("the request already holds {blocks} blocks")]
    HoldsBlocks {
        /// Blocks held.
        blocks: usize,
    },
    /// The request needs more blocks than the whole pool has; it can never run.
    #[error("the request needs {needed} blocks, the pool has {total}")]
    ExceedsPool {
        /// Blocks the request would hold.
        needed: usize,
        /// The pool's block count.
        total: usize,
    },
    /// Not enough blocks are available now.
    #[error("{needed} more blocks needed, {available} available")]
    InsufficientBlocks {
        /// Blocks that had to be allocated.
        needed: usize,
        /// Blocks available when it failed.
        available: usize,
    },
    /// The request has generated `max_output_tokens` tokens.
    #[error("generation complete: {generated} of {max_output} tokens")]
    GenerationComplete {
        /// Tokens generated.
        generated: usize,
        /// The request's output budget.
        max_output: usize,
    },
    /// Only generated tokens can be rolled back.
    #[error("cannot roll back {requested} tokens: {generated} were generated")]
    RollbackBeyondGenerated {
        /// Tokens asked to roll back.
        requested: usize,
        /// Tokens generated.
        generated: usize,
    },
    /// The manager returned a block with an unexpected key (never expected).
    #[error("matched block at position {position} does not carry the sequence's key")]
    HashMismatch {
        /// The position.
        position: usize,
    },
}

/// A failed `schedule_*` (or prefix match / admission) call of a
/// [`SchedulableSequence`](super::SchedulableSequence).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Another operation is scheduled and not yet applied or reverted.
    #[error("expected Idle state, got {state:?}")]
    NotIdle {
        /// The current state.
        state: SequenceState,
    },
    /// The chunk would pass the end of the prefill.
    #[error("prefill overrun: position {position} + {num_tokens} > {target}")]
    PrefillOverrun {
        /// Tokens computed so far.
        position: usize,
        /// The chunk asked for.
        num_tokens: usize,
        /// Where the prefill ends.
        target: usize,
    },
    /// Nothing is left to prefill.
    #[error("prefill already complete")]
    PrefillComplete,
    /// Decoding needs the prefill done.
    #[error("prefill not yet complete (position {position} < {target})")]
    PrefillNotComplete {
        /// Tokens computed so far.
        position: usize,
        /// Where the prefill ends.
        target: usize,
    },
    /// The manager cannot supply the blocks now (preempt someone, or wait).
    #[error("allocation failed: needed {needed} blocks, {available} available")]
    AllocationFailed {
        /// Blocks that had to be allocated.
        needed: usize,
        /// Blocks available when it failed.
        available: usize,
    },
    /// The output budget is used up.
    #[error("generation complete: {generated} >= {max_output}")]
    GenerationComplete {
        /// Tokens generated.
        generated: usize,
        /// The output budget.
        max_output: usize,
    },
    /// Decoding needs exactly one token whose KV is not computed.
    #[error("expected {expected} dangling token(s), got {actual}")]
    WrongDanglingCount {
        /// Always 1.
        expected: usize,
        /// Tokens whose KV is not computed.
        actual: usize,
    },
    /// The request layer refused (manager mismatch, a request larger than
    /// the pool, blocks already held, ...).
    #[error(transparent)]
    Request(RequestError),
}

impl From<RequestError> for ScheduleError {
    fn from(err: RequestError) -> Self {
        match err {
            RequestError::InsufficientBlocks { needed, available } => {
                ScheduleError::AllocationFailed { needed, available }
            }
            other => ScheduleError::Request(other),
        }
    }
}

/// A failed `apply_*`, `revert_schedule` or idle-only call of a
/// [`SchedulableSequence`](super::SchedulableSequence).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The call does not fit the current state (apply without schedule, a
    /// schedule applied twice, the wrong apply).
    #[error("expected {expected}, got {actual:?}")]
    WrongState {
        /// The state the call needs.
        expected: &'static str,
        /// The current state.
        actual: SequenceState,
    },
    /// Only the final prefill chunk emits a token.
    #[error("token provided but this prefill chunk is not the final one")]
    TokenOnNonFinalChunk,
    /// The final chunk of a recompute (after a preemption or a rollback)
    /// emits no token: the last token is still to be decoded.
    #[error("token provided but this prefill recomputes tokens already generated")]
    TokenNotExpected,
    /// The final chunk of the first prefill must carry the first output token.
    #[error("final prefill chunk requires a generated token")]
    MissingTokenOnFinalChunk,
    /// More tokens than the drafts plus one (the bonus or correction token).
    #[error("accepted {accepted} tokens: more than the {scheduled} scheduled drafts plus one")]
    AcceptedExceedsScheduled {
        /// Tokens given.
        accepted: usize,
        /// Drafts scheduled.
        scheduled: usize,
    },
    /// More tokens than the output budget has left.
    #[error("append requested {requested} tokens but only {remaining} remain")]
    AppendExceedsRemaining {
        /// Tokens given.
        requested: usize,
        /// Tokens the budget allows.
        remaining: usize,
    },
    /// Only generated tokens can be rolled back.
    #[error("cannot roll back {requested} tokens: {generated} were generated")]
    RollbackBeyondGenerated {
        /// Tokens asked to roll back.
        requested: usize,
        /// Tokens generated.
        generated: usize,
    },
    /// The request layer refused (manager mismatch, position overflow, ...).
    #[error(transparent)]
    Request(RequestError),
}

impl From<RequestError> for ApplyError {
    fn from(err: RequestError) -> Self {
        match err {
            RequestError::RollbackBeyondGenerated {
                requested,
                generated,
            } => ApplyError::RollbackBeyondGenerated {
                requested,
                generated,
            },
            other => ApplyError::Request(other),
        }
    }
}

/// A failed batch admission ([`admit_all`](super::admit_all)): no request of
/// the batch changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// One request cannot be admitted at all (not idle, holds blocks, larger
    /// than the pool, another manager's).
    #[error("request {index}: {source}")]
    Request {
        /// Its index in the batch.
        index: usize,
        /// Why.
        source: ScheduleError,
    },
    /// The batch does not fit the available blocks now.
    #[error("the batch needs {needed} more blocks, {available} available")]
    InsufficientBlocks {
        /// Blocks the batch had to allocate.
        needed: usize,
        /// Blocks available when it failed.
        available: usize,
    },
}

/// A [`SchedulableSequenceBuilder`](super::SchedulableSequenceBuilder) that
/// cannot build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceBuildError {
    /// A required field was not set.
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    /// The request itself is invalid (empty prompt, zero block size, ...).
    #[error(transparent)]
    Request(#[from] RequestError),
}
