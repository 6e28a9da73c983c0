//! Emission policies: which registered blocks are announced at all.
//!
//! A policy looks at a block's key only, so the same answer holds when the
//! block is stored and when it is removed: a block that was never announced
//! is never withdrawn. This module decides and nothing else; it never queues
//! or sends.

use std::sync::Arc;

use crate::SequenceHash;

/// Decides whether a block's stores and removals are emitted
/// (kvbm-logical's trait of the same name).
///
/// # Contract
///
/// The answer MUST depend on the key only (not on time or state), because the
/// emitter asks once when the block is stored and again when it is removed,
/// and the two answers must agree. It MUST be cheap: it runs for every block
/// under the caller's lock.
pub trait EventEmissionPolicy: Send + Sync {
    /// Whether events are emitted for the block keyed `hash`.
    fn should_emit(&self, hash: SequenceHash) -> bool;
}

/// Emits every block.
///
/// ```
/// use kvblocks::events::{AllEventsPolicy, EventEmissionPolicy};
/// assert!(AllEventsPolicy.should_emit(kvblocks::SequenceHash::root(1)));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AllEventsPolicy;

impl AllEventsPolicy {
    /// The policy.
    pub fn new() -> Self {
        Self
    }
}

impl EventEmissionPolicy for AllEventsPolicy {
    fn should_emit(&self, _hash: SequenceHash) -> bool {
        true
    }
}

/// Emits only blocks at power-of-two positions within `[min, max]`
/// (default `[16, 65536]`): a sparse sample of each sequence, enough for a hub
/// to narrow down which workers may hold a long prefix.
///
/// ```
/// use kvblocks::events::{EventEmissionPolicy, PowerOfTwoPolicy};
/// use kvblocks::SequenceHash;
/// let at = |p: u64| SequenceHash::new(99, Some(1), p);
/// let policy = PowerOfTwoPolicy::new();
/// assert!(policy.should_emit(at(16)) && policy.should_emit(at(65536)));
/// assert!(!policy.should_emit(at(8)) && !policy.should_emit(at(17)) && !policy.should_emit(at(131072)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerOfTwoPolicy {
    min_position: u64,
    max_position: u64,
}

impl PowerOfTwoPolicy {
    /// Positions 16, 32, ..., 65536.
    pub const fn new() -> Self {
        Self::with_range(16, 65536)
    }

    /// Power-of-two positions in `[min_position, max_position]`, both inclusive.
    pub const fn with_range(min_position: u64, max_position: u64) -> Self {
        Self {
            min_position,
            max_position,
        }
    }
}

impl Default for PowerOfTwoPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl EventEmissionPolicy for PowerOfTwoPolicy {
    fn should_emit(&self, hash: SequenceHash) -> bool {
        let position = hash.position();
        position >= self.min_position && position <= self.max_position && position.is_power_of_two()
    }
}

/// The policy an emitter runs: the built-in ones without a virtual call.
#[derive(Clone)]
pub(crate) enum Filter {
    All,
    PowerOfTwo(PowerOfTwoPolicy),
    Custom(Arc<dyn EventEmissionPolicy>),
}

impl Filter {
    #[inline]
    pub(crate) fn keeps(&self, hash: SequenceHash) -> bool {
        match self {
            Filter::All => true,
            Filter::PowerOfTwo(policy) => policy.should_emit(hash),
            Filter::Custom(policy) => policy.should_emit(hash),
        }
    }

    pub(crate) fn keeps_all(&self) -> bool {
        matches!(self, Filter::All)
    }
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Filter::All => f.write_str("AllEventsPolicy"),
            Filter::PowerOfTwo(policy) => policy.fmt(f),
            Filter::Custom(_) => f.write_str("custom policy"),
        }
    }
}
