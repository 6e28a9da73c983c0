//! RAII guards for the block lifecycle.
//!
//! ```text
//!  allocate       stage / complete       register          last drop
//! ─────────► Mutable ──────────► Complete ───────► Immutable ─────────► inactive (cached)
//!              │ drop              │ drop / reset     ▲   │ downgrade
//!              ▼                   ▼                  │   ▼
//!            reset pool       reset pool / Mutable    └─ Weak ── upgrade
//! ```
//!
//! Each transition consumes one guard and returns the next; a transition that
//! fails hands the guard back inside its error, so a slot is never lost.
//! Dropping a guard returns its slot to the pool its state calls for. The tier
//! marker `T` is a zero-cost type parameter that keeps blocks of different
//! tiers (GPU, host, disk) apart at compile time.

mod complete;
mod immutable;
mod mutable;
mod pin;

pub use complete::CompleteBlock;
pub use immutable::{ImmutableBlock, WeakBlock};
pub use mutable::MutableBlock;
pub use pin::{LifecyclePin, LifecyclePinRef};

/// A tier marker (or any per-manager metadata type).
///
/// Blanket-implemented for every `Clone + Send + Sync + 'static` type:
///
/// ```
/// #[derive(Clone)]
/// struct Host;
/// fn takes_tier<T: kvblocks::BlockMetadata>() {}
/// takes_tier::<Host>();
/// ```
pub trait BlockMetadata: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> BlockMetadata for T {}

/// A failed guard transition; the guard comes back in `block`.
#[derive(Debug, thiserror::Error)]
pub enum BlockError<B> {
    /// The block size given (or the token block's length) is not the manager's.
    #[error("block size mismatch: the manager's blocks hold {expected} tokens, got {actual}")]
    BlockSizeMismatch {
        /// The manager's block size.
        expected: usize,
        /// The size that was given.
        actual: usize,
        /// The guard, unchanged.
        block: B,
    },
}

impl<B> BlockError<B> {
    /// Takes the guard back out of the error.
    pub fn into_block(self) -> B {
        match self {
            BlockError::BlockSizeMismatch { block, .. } => block,
        }
    }
}

/// A failed registration; the staged guard(s) come back in `block`.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError<B> {
    /// The guard was allocated by another manager. Nothing was registered.
    #[error("block {block_id} belongs to manager {owner:?}, not to manager {manager:?}")]
    ForeignManager {
        /// The first foreign block's id.
        block_id: crate::BlockId,
        /// The manager that allocated it.
        owner: crate::ManagerId,
        /// The manager it was handed to.
        manager: crate::ManagerId,
        /// The guard (or, for a batch, every guard of the batch), unchanged.
        block: B,
    },
}

impl<B> RegisterError<B> {
    /// Takes the guard(s) back out of the error.
    pub fn into_block(self) -> B {
        match self {
            RegisterError::ForeignManager { block, .. } => block,
        }
    }
}

/// What registering a hash that is already registered does.
///
/// ```
/// use kvblocks::{BlockDuplicationPolicy, BlockManager, SequenceHash};
/// #[derive(Clone)] struct Gpu;
/// let manager = BlockManager::<Gpu>::builder().block_count(4).block_size(4)
///     .duplication_policy(BlockDuplicationPolicy::Reject).build()?;
/// let mut register = || {
///     let staged = manager.allocate_blocks(1).unwrap().pop().unwrap().stage(SequenceHash::root(5), 4)?;
///     Ok::<_, Box<dyn std::error::Error>>(manager.register_block(staged))
/// };
/// let (first, second) = (register()?, register()?);
/// assert_eq!(first.block_id(), second.block_id(), "Reject: one physical copy");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockDuplicationPolicy {
    /// Keep both physical copies: the new block is a duplicate that pins the
    /// primary while it lives and goes straight back to the reset pool when
    /// its last handle drops.
    #[default]
    Allow,
    /// Keep one copy: the new block returns to the reset pool and the caller
    /// gets a handle on the existing primary.
    Reject,
}
