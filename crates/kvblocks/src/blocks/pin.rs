//! [`LifecyclePinRef`]: a type-erased handle that keeps one block of any
//! tier alive, for code that holds blocks of several tiers in one place (a
//! transfer queue, a copy plan).
//!
//! A pin owns one [`ImmutableBlock`] clone behind an `Arc`, so the block
//! stays registered and unevictable while any clone of the pin lives. It
//! never moves a slot itself.

use std::sync::Arc;

use super::ImmutableBlock;
use crate::registry::BlockRegistrationHandle;
use crate::{BlockId, BlockMetadata, ManagerId, SequenceHash};

/// What a pinned block tells about itself, whatever its tier.
pub trait LifecyclePin: Send + Sync {
    /// The slot in its manager.
    fn block_id(&self) -> BlockId;
    /// The hash it is registered under.
    fn sequence_hash(&self) -> SequenceHash;
    /// The manager it belongs to.
    fn manager_id(&self) -> ManagerId;
    /// The registry's handle for its hash.
    fn registration_handle(&self) -> BlockRegistrationHandle;
}

impl<T: BlockMetadata> LifecyclePin for ImmutableBlock<T> {
    fn block_id(&self) -> BlockId {
        ImmutableBlock::block_id(self)
    }
    fn sequence_hash(&self) -> SequenceHash {
        ImmutableBlock::sequence_hash(self)
    }
    fn manager_id(&self) -> ManagerId {
        ImmutableBlock::manager_id(self)
    }
    fn registration_handle(&self) -> BlockRegistrationHandle {
        ImmutableBlock::registration_handle(self)
    }
}

/// A cheap, cloneable, type-erased handle that keeps one block of any tier
/// alive ([`ImmutableBlock::pin`]).
///
/// # Drop behaviour
///
/// Dropping the last clone drops the block handle it owns (see
/// [`ImmutableBlock`]'s drop behaviour).
///
/// ```
/// use kvblocks::{BlockManager, LifecyclePinRef, SequenceHash};
/// #[derive(Clone)] struct Gpu;
/// #[derive(Clone)] struct Host;
/// let gpu = BlockManager::<Gpu>::builder().block_count(2).block_size(4).build()?;
/// let host = BlockManager::<Host>::builder().block_count(2).block_size(4).build()?;
/// let hash = SequenceHash::root(3);
/// let a = gpu.register_block(gpu.allocate_blocks(1).unwrap().pop().unwrap().stage(hash, 4)?);
/// let b = host.register_block(host.allocate_blocks(1).unwrap().pop().unwrap().stage(hash, 4)?);
/// // One queue for blocks of both tiers.
/// let queue: Vec<LifecyclePinRef> = vec![a.pin(), b.pin()];
/// drop((a, b));
/// assert_eq!(gpu.metrics().inflight_immutable, 1, "the pin keeps the GPU block");
/// assert_ne!(queue[0].manager_id(), queue[1].manager_id());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct LifecyclePinRef(Arc<dyn LifecyclePin>);

impl LifecyclePinRef {
    pub(crate) fn new(pin: Arc<dyn LifecyclePin>) -> Self {
        Self(pin)
    }

    /// The slot in its manager.
    pub fn block_id(&self) -> BlockId {
        self.0.block_id()
    }

    /// The hash the block is registered under.
    pub fn sequence_hash(&self) -> SequenceHash {
        self.0.sequence_hash()
    }

    /// The manager the block belongs to.
    pub fn manager_id(&self) -> ManagerId {
        self.0.manager_id()
    }

    /// The registry's handle for the block's hash.
    pub fn registration_handle(&self) -> BlockRegistrationHandle {
        self.0.registration_handle()
    }

    /// Live clones of this pin.
    pub fn use_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl std::fmt::Debug for LifecyclePinRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifecyclePinRef")
            .field("manager_id", &self.manager_id())
            .field("block_id", &self.block_id())
            .field("sequence_hash", &self.sequence_hash())
            .finish()
    }
}
