//! The request layer a scheduler drives: per-request block bookkeeping
//! ([`RequestSequence`]), the schedule → apply state machine over it
//! ([`SchedulableSequence`]) and batch admission ([`admit_all`]).
//!
//! Built on [`crate::sequence`] and the manager's public calls only. A
//! decode step costs a few branches and a token push; once per block it
//! allocates one slot and registers one block, each a single manager call
//! without batch vectors. Nothing here is quadratic in the sequence length,
//! and the kernel's block table is kept up to date in place
//! ([`SchedulableSequence::block_table`]).

mod admission;
mod builder;
mod errors;
mod events;
mod lifecycle;
pub(crate) mod request;
mod scheduled;

pub use admission::{admit_all, can_admit_all};
pub use builder::SchedulableSequenceBuilder;
pub use errors::{AdmitError, ApplyError, RequestError, ScheduleError, SequenceBuildError};
pub use events::{DecodeOutcome, NoopDelegate, SequenceDelegate, SequenceEvent, SequenceState};
pub use request::RequestSequence;
pub use scheduled::SchedulableSequence;
