//! [`BlockManagerBuilder`]: validated construction of a [`BlockManager`].
//!
//! Owns the configuration checks; it never touches a built manager.

use std::marker::PhantomData;

use super::BlockManager;
use crate::policy::{
    AnyPolicy, EvictionPolicy, EvictionPolicyKind, MultiLru, MultiLruThresholds, ThresholdError,
};
use std::sync::Arc;

use crate::events::EventsManager;
use crate::registry::BlockRegistry;
use crate::store::{Store, StoreConfig};
use crate::LogicalLayoutHandle;
use crate::{BlockDuplicationPolicy, BlockMetadata};

/// The largest block size accepted, in tokens (far above any real engine's).
pub const MAX_BLOCK_SIZE: usize = 1 << 16;
/// The largest block count accepted: 2^30 slots (about 100 GiB of
/// bookkeeping with the heaviest policy; real pools hold millions).
pub const MAX_BLOCK_COUNT: usize = 1 << 30;

/// Most pool shards a manager can have ([`BlockManagerBuilder::pool_shards`]).
pub const MAX_POOL_SHARDS: usize = crate::store::MAX_POOL_SHARDS;

/// Most pool shards the builder chooses when
/// [`BlockManagerBuilder::pool_shards`] is not set.
pub const DEFAULT_MAX_POOL_SHARDS: usize = 16;

/// Slots per pool shard the builder aims at when it chooses the shard count.
const DEFAULT_SLOTS_PER_SHARD: usize = 1024;

/// The shard count when none was set: shards where they cost no hit rate
/// (LRU, whose sharded eviction follows one order; `BENCHMARKS.md`, "Pool
/// shards and hit rate"), one pool otherwise.
fn default_pool_shards(block_count: usize, policy: &PolicyChoice) -> usize {
    match policy {
        PolicyChoice::Kind(EvictionPolicyKind::Lru) => {
            (block_count / DEFAULT_SLOTS_PER_SHARD).clamp(1, DEFAULT_MAX_POOL_SHARDS)
        }
        _ => 1,
    }
}

/// A configuration the builder refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// `block_count` was never set.
    #[error("block_count is required")]
    MissingBlockCount,
    /// `block_size` was never set.
    #[error("block_size is required")]
    MissingBlockSize,
    /// A manager needs at least one block.
    #[error("block_count must be at least 1")]
    ZeroBlockCount,
    /// More blocks than slot numbers.
    #[error("block_count {0} exceeds the maximum of {MAX_BLOCK_COUNT}")]
    TooManyBlocks(usize),
    /// A block holds at least one token.
    #[error("block_size must be at least 1")]
    ZeroBlockSize,
    /// A pool has at least one shard.
    #[error("pool_shards must be at least 1")]
    ZeroPoolShards,
    /// At most [`MAX_POOL_SHARDS`] pool shards.
    #[error("pool_shards {0} exceeds the maximum of {MAX_POOL_SHARDS}")]
    TooManyPoolShards(usize),
    /// An absurd block size (almost certainly a unit mistake).
    #[error("block_size {0} exceeds the maximum of {MAX_BLOCK_SIZE} tokens")]
    BlockSizeTooLarge(usize),
    /// The frequency-tiered policy's thresholds are out of order or range
    /// ([`with_multi_lru_backend_custom_thresholds`](BlockManagerBuilder::with_multi_lru_backend_custom_thresholds)).
    #[error("multi-LRU thresholds: {0}")]
    MultiLruThresholds(#[from] ThresholdError),
    /// The frequency-tiered policy needs the registry's frequency tracker
    /// ([`BlockRegistryBuilder::frequency_tracker`](crate::BlockRegistryBuilder::frequency_tracker)).
    #[error("the multi-LRU backend needs a registry with a frequency tracker")]
    MultiLruWithoutFrequencyTracker,
    /// The machine could not give the manager's tables the memory they need.
    #[error(
        "not enough memory for the tables of {block_count} blocks ({bytes} bytes in one table)"
    )]
    OutOfMemory {
        /// The block count asked for.
        block_count: usize,
        /// The size of the table that could not be allocated.
        bytes: usize,
    },
}

/// Builds a [`BlockManager`]; start with [`BlockManager::builder`].
///
/// ```
/// use kvblocks::{BlockManager, BlockDuplicationPolicy, BuildError};
/// #[derive(Clone)] struct Gpu;
/// let manager = BlockManager::<Gpu>::builder()
///     .block_count(1024)
///     .block_size(16)
///     .duplication_policy(BlockDuplicationPolicy::Reject)
///     .with_lineage_backend()
///     .build()?;
/// assert_eq!(manager.total_blocks(), 1024);
///
/// let err = BlockManager::<Gpu>::builder().block_count(8).block_size(0).build().unwrap_err();
/// assert_eq!(err, BuildError::ZeroBlockSize);
/// # Ok::<(), BuildError>(())
/// ```
pub struct BlockManagerBuilder<T> {
    block_count: Option<usize>,
    block_size: Option<usize>,
    duplication: BlockDuplicationPolicy,
    policy: PolicyChoice,
    /// `None`: chosen at build time ([`BlockManagerBuilder::pool_shards`]).
    pool_shards: Option<usize>,
    /// Start as one pool and split into the shards on contention even when
    /// they were set (a test hook; the default does so when unset).
    split_on_contention: bool,
    generation_bits: u32,
    registry: Option<BlockRegistry>,
    evict_on_release: bool,
    events: Option<Arc<EventsManager>>,
    layout: LogicalLayoutHandle,
    _tier: PhantomData<fn() -> T>,
}

/// kvbm-logical's name for [`BuildError`].
pub type BlockManagerBuilderError = BuildError;

/// kvbm-logical's name for the builder.
pub type BlockManagerConfigBuilder<T> = BlockManagerBuilder<T>;

enum PolicyChoice {
    Kind(EvictionPolicyKind),
    /// Frequency-tiered LRU; thresholds as given, checked at build time.
    MultiLru([u8; 3]),
    Custom(Box<dyn Fn(usize) -> Box<dyn EvictionPolicy>>),
}

impl<T: BlockMetadata> Default for BlockManagerBuilder<T> {
    fn default() -> Self {
        Self {
            block_count: None,
            block_size: None,
            duplication: BlockDuplicationPolicy::default(),
            policy: PolicyChoice::Kind(EvictionPolicyKind::Lru),
            pool_shards: None,
            split_on_contention: false,
            generation_bits: 32,
            registry: None,
            evict_on_release: false,
            events: None,
            layout: LogicalLayoutHandle::G1,
            _tier: PhantomData,
        }
    }
}

impl<T: BlockMetadata> BlockManagerBuilder<T> {
    /// A builder with no sizes set, LRU eviction and [`BlockDuplicationPolicy::Allow`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of slots (physical blocks) to manage.
    pub fn block_count(mut self, count: usize) -> Self {
        self.block_count = Some(count);
        self
    }

    /// Tokens per block.
    pub fn block_size(mut self, size: usize) -> Self {
        self.block_size = Some(size);
        self
    }

    /// What registering an already registered hash does.
    pub fn duplication_policy(mut self, policy: BlockDuplicationPolicy) -> Self {
        self.duplication = policy;
        self
    }

    /// Evict with one of the built-in policies.
    pub fn eviction_policy(mut self, kind: EvictionPolicyKind) -> Self {
        self.policy = PolicyChoice::Kind(kind);
        self
    }

    /// Evict with a policy of your own; `make` receives the number of slots
    /// the policy instance tracks (the block count, or one shard's slots with
    /// [`pool_shards`](Self::pool_shards), called once per shard).
    pub fn custom_eviction_policy<P: EvictionPolicy>(
        mut self,
        make: impl Fn(usize) -> P + 'static,
    ) -> Self {
        self.policy = PolicyChoice::Custom(Box::new(move |slots| Box::new(make(slots))));
        self
    }

    /// Splits the pool into about `shards` pool shards (rounded so each
    /// holds a power of two of slots; at most [`MAX_POOL_SHARDS`]), so
    /// several threads can call the manager at once.
    ///
    /// Each shard has its own lock, reset pool and policy instance over its
    /// own slots; the hash index stays whole, so every block is matchable
    /// from every thread. Threads allocating at the same time start at
    /// different shards and rarely wait for each other. An allocation that
    /// must evict takes its victims from the shards whose next victims were
    /// released longest ago, one at a time, so the shards together evict in
    /// about the order one pool would. That holds for LRU (within 0.3 points
    /// of hit rate on the traces in `BENCHMARKS.md`); the policies that keep
    /// per-block state across releases (the leaf-first and frequency-aware
    /// ones) see only their own shard and lose more.
    ///
    /// Set, the pool is split from the start. Unset, the builder chooses:
    /// with LRU, one shard per 1,024 slots, at most
    /// [`DEFAULT_MAX_POOL_SHARDS`], split *on contention*: the manager starts
    /// as one pool (so a thread alone pays nothing for shards) and splits
    /// into its shards, once, the first time threads are seen waiting for
    /// each other (8 waits for a lock within 65,536 allocated blocks); with
    /// any other policy, one shard. One shard is exactly the single-pool
    /// behaviour. [`BlockManager::pool_shards`] tells how many are in use.
    ///
    /// ```
    /// # use kvblocks::BlockManager;
    /// #[derive(Clone)] struct Gpu;
    /// let manager = BlockManager::<Gpu>::builder()
    ///     .block_count(65_536).block_size(16).pool_shards(8).build()?;
    /// assert_eq!(manager.pool_shards(), 8);
    /// // One pool until threads contend, then 16 shards.
    /// let by_default = BlockManager::<Gpu>::builder().block_count(65_536).block_size(16).build()?;
    /// assert_eq!(by_default.pool_shards(), 1);
    /// let small = BlockManager::<Gpu>::builder().block_count(1_000).block_size(16).build()?;
    /// assert_eq!(small.pool_shards(), 1);
    /// # Ok::<(), kvblocks::BuildError>(())
    /// ```
    pub fn pool_shards(mut self, shards: usize) -> Self {
        self.pool_shards = Some(shards);
        self
    }

    /// Starts as one pool and splits into the shards set by
    /// [`pool_shards`](Self::pool_shards) on contention, as the default
    /// does (for the built-in policies), so a test can drive the split
    /// (`kvblocks::testing::split_pool`). Not for production use.
    #[doc(hidden)]
    pub fn testing_split_on_contention(mut self) -> Self {
        self.split_on_contention = true;
        self
    }

    /// Makes slot generations wrap after `2^bits` (1 to 32; 32 is the
    /// default) so a test reaches a wrap in a few registrations instead of
    /// four billion. Not for production use.
    #[doc(hidden)]
    pub fn testing_generation_bits(mut self, bits: u32) -> Self {
        self.generation_bits = bits.clamp(1, 32);
        self
    }

    /// Shares `registry` with the managers of other tiers (see
    /// [`BlockRegistry`]). Without it the manager gets a registry of its own.
    pub fn registry(mut self, registry: BlockRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Reports this manager's changes to `events` (stored, removed,
    /// cleared; see [`crate::events`]). Without it, the registry's events
    /// manager if it has one
    /// ([`BlockRegistryBuilder::event_manager`](crate::BlockRegistryBuilder::event_manager)),
    /// else none.
    pub fn event_manager(mut self, events: Arc<EventsManager>) -> Self {
        self.events = Some(events);
        self
    }

    /// The tier this manager's events name (default
    /// [`LogicalLayoutHandle::G1`]).
    pub fn logical_layout(mut self, layout: LogicalLayoutHandle) -> Self {
        self.layout = layout;
        self
    }

    /// Whether every registered block starts with evict-on-release set: its
    /// last release then evicts it instead of caching it in the inactive
    /// pool (default `false`; per block, see
    /// [`ImmutableBlock::set_evict_on_reset`](crate::ImmutableBlock::set_evict_on_reset)).
    pub fn with_default_reset_on_release(mut self, value: bool) -> Self {
        self.evict_on_release = value;
        self
    }

    /// Least recently used eviction (the default).
    pub fn with_lru_backend(self) -> Self {
        self.eviction_policy(EvictionPolicyKind::Lru)
    }

    /// Leaf-first LRU eviction: a block is evicted only once no resident
    /// block extends it (unless every evictable block has pinned children).
    pub fn with_lineage_backend(self) -> Self {
        self.eviction_policy(EvictionPolicyKind::Lineage)
    }

    /// Frequency-tiered LRU ([`MultiLru`]): four LRU levels by the
    /// registry's frequency counts, the coldest evicted first, with
    /// kvbm-logical's default thresholds (cold below 3 uses, warm below 8,
    /// hot below 15, very hot at 15).
    ///
    /// The registry must have a frequency tracker; `build` says
    /// [`BuildError::MultiLruWithoutFrequencyTracker`] otherwise.
    ///
    /// ```
    /// use kvblocks::{BlockManager, BlockRegistry, BuildError};
    /// use kvblocks::frequency::FrequencyTrackingCapacity;
    /// #[derive(Clone)] struct Gpu;
    /// let registry = BlockRegistry::builder()
    ///     .frequency_tracker(FrequencyTrackingCapacity::Small.create_tracker())
    ///     .build();
    /// let manager = BlockManager::<Gpu>::builder().block_count(64).block_size(16)
    ///     .registry(registry)
    ///     .with_multi_lru_backend()
    ///     .build()?;
    /// assert_eq!(manager.eviction_policy_name(), "multi-lru");
    ///
    /// let err = BlockManager::<Gpu>::builder().block_count(64).block_size(16)
    ///     .with_multi_lru_backend_custom_thresholds(4, 4, 9)
    ///     .registry(BlockRegistry::builder()
    ///         .frequency_tracker(FrequencyTrackingCapacity::Small.create_tracker())
    ///         .build())
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, BuildError::MultiLruThresholds(_)));
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn with_multi_lru_backend(mut self) -> Self {
        self.policy = PolicyChoice::MultiLru(MultiLruThresholds::DEFAULT.get());
        self
    }

    /// [`with_multi_lru_backend`](Self::with_multi_lru_backend) with the
    /// counts that separate cold from warm, warm from hot and hot from very
    /// hot blocks.
    ///
    /// Unlike kvbm-logical, bad thresholds do not panic here: `build`
    /// returns [`BuildError::MultiLruThresholds`] (not strictly increasing,
    /// a first threshold of 0, or a last one above 15; see
    /// [`MultiLruThresholds::new`]).
    pub fn with_multi_lru_backend_custom_thresholds(
        mut self,
        cold_to_warm: u8,
        warm_to_hot: u8,
        hot_to_very_hot: u8,
    ) -> Self {
        self.policy = PolicyChoice::MultiLru([cold_to_warm, warm_to_hot, hot_to_very_hot]);
        self
    }

    /// Checks the configuration and builds the manager.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first setting that is missing or out of range.
    pub fn build(self) -> Result<BlockManager<T>, BuildError> {
        let block_count = self.block_count.ok_or(BuildError::MissingBlockCount)?;
        let block_size = self.block_size.ok_or(BuildError::MissingBlockSize)?;
        if block_count == 0 {
            return Err(BuildError::ZeroBlockCount);
        }
        if block_count > MAX_BLOCK_COUNT {
            return Err(BuildError::TooManyBlocks(block_count));
        }
        if block_size == 0 {
            return Err(BuildError::ZeroBlockSize);
        }
        if block_size > MAX_BLOCK_SIZE {
            return Err(BuildError::BlockSizeTooLarge(block_size));
        }
        let (shards, split_later) = match self.pool_shards {
            Some(0) => return Err(BuildError::ZeroPoolShards),
            Some(shards) if shards > MAX_POOL_SHARDS => {
                return Err(BuildError::TooManyPoolShards(shards))
            }
            Some(shards) => (shards, self.split_on_contention),
            None => (default_pool_shards(block_count, &self.policy), true),
        };
        // Only the built-in kinds can split later (their maker can move to
        // another thread; a custom policy's maker need not).
        let split_on_contention = match (&self.policy, split_later) {
            (&PolicyChoice::Kind(kind), true) => {
                let make: Box<dyn FnMut(usize) -> AnyPolicy + Send> =
                    Box::new(move |slots| kind.build(slots));
                Some(make)
            }
            _ => None,
        };
        let registry = self.registry.unwrap_or_default();
        let multi_lru = match self.policy {
            PolicyChoice::MultiLru([a, b, c]) => {
                let thresholds = MultiLruThresholds::new(a, b, c)?;
                let tracker = registry
                    .shared
                    .tracker
                    .clone()
                    .ok_or(BuildError::MultiLruWithoutFrequencyTracker)?;
                Some((thresholds, tracker))
            }
            _ => None,
        };
        let policy = self.policy;
        let make_policy = |slots: usize| match (&policy, &multi_lru) {
            (PolicyChoice::Kind(kind), _) => kind.build(slots),
            (PolicyChoice::MultiLru(_), Some((thresholds, tracker))) => {
                AnyPolicy::MultiLru(MultiLru::new(slots, Arc::clone(tracker), *thresholds))
            }
            (PolicyChoice::MultiLru(_), None) => unreachable!("checked above"),
            (PolicyChoice::Custom(make), _) => AnyPolicy::Custom(make(slots)),
        };
        let config = StoreConfig {
            block_count,
            block_size,
            shards,
            split_on_contention,
            duplication: self.duplication,
            generation_bits: self.generation_bits,
            registry: Arc::clone(&registry.shared),
            evict_on_release: self.evict_on_release,
            events: self.events.or_else(|| registry.shared.events.clone()),
            tier: self.layout,
        };
        let store = Store::new(config, make_policy).map_err(|oom| BuildError::OutOfMemory {
            block_count,
            bytes: oom.bytes,
        })?;
        registry.add_member::<T>(&store);
        Ok(BlockManager {
            store,
            tracker: registry.shared.tracker.clone(),
            registry,
            _tier: PhantomData,
        })
    }
}
