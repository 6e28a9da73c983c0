//! [`BlockRegistry`]: one registry shared by the managers of several tiers
//! (GPU, host, disk, remote), answering which tiers hold a block and keeping
//! one [`BlockRegistrationHandle`] per sequence hash for the attachments
//! code across tiers needs (an offload in flight, where a copy lives).
//!
//! # What it costs the tiers
//!
//! Nothing on their hot paths: the registry keeps no entry per block.
//! Presence is read straight from each tier's own hash index, without a
//! lock. Handles exist only for the hashes someone asked about; registering
//! a block asks a lock-free filter whether its hash has one (one load while
//! no handle exists), and only the slots of such hashes report to the
//! registry when they stop holding them. A match does not touch the
//! registry at all, apart from the frequency tracker when one was given
//! ([`BlockRegistryBuilder::frequency_tracker`]; lock-free, after the
//! manager's locks are released, and one `Option` check without it).
//!
//! # Consistency
//!
//! - [`check_presence`](BlockRegistry::check_presence) and friends are
//!   lock-free. Each answer for one hash in one tier is exact at some instant
//!   during the call (linearizable per hash and tier): a block counts from
//!   the moment its registration finishes until the moment an eviction takes
//!   it. Answers for different hashes or tiers are not one snapshot: a block
//!   moving from one tier to another while a check runs may be seen in both,
//!   or in neither.
//! - [`registered_count`](BlockRegistry::registered_count) walks every tier:
//!   a snapshot per pool shard, exact on a quiet registry.
//! - A handle is one per hash at any time, and lives while any tier holds
//!   the block or any clone of it is alive (see [`BlockRegistrationHandle`]).
//!
//! # Lock order
//!
//! A handle's attachments lock, then a table stripe, then a tier's index
//! writer, then that tier's shard locks. The tiers never take a registry
//! lock while they hold one of their own. So an attachment closure may call
//! the registry and the managers; it must not reach its own handle's
//! attachments again (that panics; see [`TypedAttachments`]).

mod attachments;
mod filter;
mod handle;
mod table;

use std::any::TypeId;
use std::sync::Arc;

pub use attachments::{AttachmentError, TypedAttachments};
pub use handle::BlockRegistrationHandle;

use self::filter::NotedFilter;
use self::table::HandleTable;
use crate::events::EventsManager;
use crate::frequency::FrequencyTracker;
use crate::store::Store;
use crate::sync::Mutex;
use crate::{BlockMetadata, SequenceHash};

/// A presence question the registry cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    /// No manager of this tier was ever built with this registry.
    #[error("no manager of tier {type_name} was built with this registry")]
    TierNotBuilt {
        /// The tier marker's type name.
        type_name: &'static str,
    },
}

/// One tier's manager, as the registry knows it.
#[derive(Clone)]
struct Member {
    type_id: TypeId,
    store: std::sync::Weak<Store>,
}

/// What the registry's clones share.
pub(crate) struct RegistryShared {
    /// Managers built with this registry (a dropped one's store no longer
    /// upgrades). Replaced, never edited, so readers clone the list and let
    /// go of the lock at once.
    members: Mutex<Arc<[Member]>>,
    /// Tier types ever built with this registry.
    tiers: Mutex<Vec<TypeId>>,
    table: HandleTable,
    pub(crate) filter: NotedFilter,
    /// Where the managers built with this registry report their changes
    /// (unless a manager names its own).
    pub(crate) events: Option<Arc<EventsManager>>,
    /// Counts uses of hashes, if the application asked for it (see
    /// [`crate::frequency`] for when it is touched).
    pub(crate) tracker: Option<Arc<dyn FrequencyTracker<u128>>>,
}

impl RegistryShared {
    fn members(&self) -> Arc<[Member]> {
        Arc::clone(&self.members.lock())
    }

    /// Whether a tier (of `types`, or any) holds `hash` now, lock-free.
    pub(crate) fn present_in_any(&self, hash: SequenceHash, types: Option<&[TypeId]>) -> bool {
        self.members().iter().any(|member| {
            types.map_or(true, |t| t.contains(&member.type_id))
                && member
                    .store
                    .upgrade()
                    .is_some_and(|store| store.holds(hash))
        })
    }

    /// Whether any tier holds `hash`, marking every slot that does as
    /// noted (under each tier's index writer lock, then its shard lock; see
    /// [`table`]).
    pub(crate) fn note_everywhere(&self, hash: SequenceHash) -> bool {
        let mut held = false;
        for member in self.members().iter() {
            if let Some(store) = member.store.upgrade() {
                held |= store.note_if_holds(hash);
            }
        }
        held
    }

    /// The handle of `hash`, made if there is none yet.
    pub(crate) fn handle(self: &Arc<Self>, hash: SequenceHash) -> BlockRegistrationHandle {
        self.table.get_or_make(self, hash)
    }

    /// The handle of `hash`, if one exists.
    pub(crate) fn existing_handle(&self, hash: SequenceHash) -> Option<BlockRegistrationHandle> {
        self.table.existing(hash)
    }

    /// Touches the tracker once for each of `hashes` that `own` just filed
    /// as a new primary, unless another tier holds it or a handle names it
    /// (then the registration is not a new use: see [`crate::frequency`]).
    /// Called with no lock held.
    pub(crate) fn touch_new_registrations(
        &self,
        tracker: &dyn FrequencyTracker<u128>,
        own: &Store,
        hashes: &[SequenceHash],
    ) {
        let members = self.members();
        let others: Vec<Arc<Store>> = members
            .iter()
            .filter(|m| !std::ptr::eq(m.store.as_ptr(), own))
            .filter_map(|m| m.store.upgrade())
            .collect();
        for &hash in hashes {
            let known = others.iter().any(|store| store.holds(hash))
                || (self.filter.may_hold(hash) && self.table.existing(hash).is_some());
            if !known {
                tracker.touch(hash.as_u128());
            }
        }
    }

    /// A noted slot stopped holding `hash` (reported by a store after it
    /// unlocked): the handle may go if nothing else holds it.
    pub(crate) fn presence_lost(&self, hash: SequenceHash) {
        self.table.release_if_unused(self, hash);
    }
}

/// Builds a [`BlockRegistry`].
#[derive(Default)]
pub struct BlockRegistryBuilder {
    events: Option<Arc<EventsManager>>,
    tracker: Option<Arc<dyn FrequencyTracker<u128>>>,
}

impl BlockRegistryBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every manager built with this registry reports its changes to
    /// `events`, naming its tier (unless the manager's builder names its
    /// own events manager).
    pub fn event_manager(mut self, events: Arc<EventsManager>) -> Self {
        self.events = Some(events);
        self
    }

    /// Every manager built with this registry counts uses of hashes in
    /// `tracker` (matches and new registrations; see [`crate::frequency`]),
    /// which the frequency-tiered eviction policy
    /// ([`with_multi_lru_backend`](crate::manager::BlockManagerBuilder::with_multi_lru_backend))
    /// needs. Without one, nothing is counted and nothing is paid.
    ///
    /// ```
    /// use kvblocks::{BlockRegistry, SequenceHash};
    /// use kvblocks::frequency::FrequencyTrackingCapacity;
    /// let registry = BlockRegistry::builder()
    ///     .frequency_tracker(FrequencyTrackingCapacity::Small.create_tracker())
    ///     .build();
    /// assert!(registry.has_frequency_tracking());
    /// registry.touch(SequenceHash::root(3));
    /// assert_eq!(registry.count(SequenceHash::root(3)), 1);
    /// ```
    pub fn frequency_tracker(mut self, tracker: Arc<dyn FrequencyTracker<u128>>) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// The registry.
    pub fn build(self) -> BlockRegistry {
        BlockRegistry {
            shared: Arc::new(RegistryShared {
                members: Mutex::new(Arc::from(Vec::new())),
                tiers: Mutex::new(Vec::new()),
                table: HandleTable::new(),
                filter: NotedFilter::new(),
                events: self.events,
                tracker: self.tracker,
            }),
        }
    }
}

/// One registry shared by the managers of several tiers: which tiers hold a
/// block, and one [`BlockRegistrationHandle`] per sequence hash.
///
/// Cheap to clone (clones share everything). Pass it to each tier's
/// [`BlockManagerBuilder::registry`](crate::manager::BlockManagerBuilder::registry);
/// a manager built without one gets a registry of its own.
///
/// ```
/// use kvblocks::{BlockManager, BlockRegistry, SequenceHash};
/// #[derive(Clone)] struct Gpu;
/// #[derive(Clone)] struct Host;
/// let registry = BlockRegistry::new();
/// let gpu = BlockManager::<Gpu>::builder().block_count(8).block_size(4)
///     .registry(registry.clone()).build()?;
/// let host = BlockManager::<Host>::builder().block_count(8).block_size(4)
///     .registry(registry.clone()).build()?;
/// let hash = SequenceHash::root(1);
///
/// // Offload: the block is registered in host memory as well.
/// let on_gpu = gpu.register_block(gpu.allocate_blocks(1).unwrap().pop().unwrap().stage(hash, 4)?);
/// let on_host = host.register_block(host.allocate_blocks(1).unwrap().pop().unwrap().stage(hash, 4)?);
/// assert_eq!(registry.check_presence::<Host>(&[hash]), vec![(hash, true)]);
///
/// // Evicted from the GPU: still on host, so an onboard can find it there.
/// drop(on_gpu);
/// gpu.reset_inactive_pool().unwrap();
/// assert_eq!(registry.check_presence::<Gpu>(&[hash]), vec![(hash, false)]);
/// assert!(registry.is_registered(hash));
/// # drop(on_host);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct BlockRegistry {
    pub(crate) shared: Arc<RegistryShared>,
}

impl Default for BlockRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for BlockRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockRegistry")
            .field("tiers", &self.shared.members().len())
            .finish()
    }
}

impl BlockRegistry {
    /// A builder.
    pub fn builder() -> BlockRegistryBuilder {
        BlockRegistryBuilder::new()
    }

    /// A registry with the defaults.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Adds a tier's store (when its manager is built).
    pub(crate) fn add_member<T: BlockMetadata>(&self, store: &Arc<Store>) {
        let shared = &self.shared;
        let mut members = shared.members.lock();
        let mut list: Vec<Member> = members
            .iter()
            .filter(|m| m.store.strong_count() > 0)
            .cloned()
            .collect();
        list.push(Member {
            type_id: TypeId::of::<T>(),
            store: Arc::downgrade(store),
        });
        *members = Arc::from(list);
        let mut tiers = shared.tiers.lock();
        if !tiers.contains(&TypeId::of::<T>()) {
            tiers.push(TypeId::of::<T>());
        }
    }

    /// For each hash, whether a manager of tier `T` holds the block now
    /// (active, inactive, or as a duplicate copy). Lock-free; see the module
    /// docs for what "now" means under concurrency. Does not count as a use.
    /// All `false` for a tier no manager was built for
    /// ([`try_check_presence`](Self::try_check_presence) says so instead).
    pub fn check_presence<T: BlockMetadata>(
        &self,
        seq_hashes: &[SequenceHash],
    ) -> Vec<(SequenceHash, bool)> {
        self.check_presence_any(seq_hashes, &[TypeId::of::<T>()])
    }

    /// [`check_presence`](Self::check_presence), with a tier no manager was
    /// built for as an error.
    ///
    /// # Errors
    ///
    /// [`PresenceError::TierNotBuilt`] if no manager of tier `T` was ever
    /// built with this registry.
    pub fn try_check_presence<T: BlockMetadata>(
        &self,
        seq_hashes: &[SequenceHash],
    ) -> Result<Vec<(SequenceHash, bool)>, PresenceError> {
        if !self.shared.tiers.lock().contains(&TypeId::of::<T>()) {
            return Err(PresenceError::TierNotBuilt {
                type_name: std::any::type_name::<T>(),
            });
        }
        Ok(self.check_presence::<T>(seq_hashes))
    }

    /// For each hash, whether a manager of any of the tiers `type_ids` holds
    /// the block now. Lock-free, as [`check_presence`](Self::check_presence).
    pub fn check_presence_any(
        &self,
        seq_hashes: &[SequenceHash],
        type_ids: &[TypeId],
    ) -> Vec<(SequenceHash, bool)> {
        let members = self.shared.members();
        let stores: Vec<Arc<Store>> = members
            .iter()
            .filter(|m| type_ids.contains(&m.type_id))
            .filter_map(|m| m.store.upgrade())
            .collect();
        seq_hashes
            .iter()
            .map(|&hash| (hash, stores.iter().any(|store| store.holds(hash))))
            .collect()
    }

    /// The handle of `seq_hash`, made if there is none yet (whether or not
    /// any tier holds the block).
    ///
    /// A hash no tier held and no handle named counts as a use in the
    /// frequency tracker, if there is one.
    pub fn register_sequence_hash(&self, seq_hash: SequenceHash) -> BlockRegistrationHandle {
        if let Some(tracker) = &self.shared.tracker {
            if !self.is_registered(seq_hash) {
                tracker.touch(seq_hash.as_u128());
            }
        }
        self.shared.table.get_or_make(&self.shared, seq_hash)
    }

    /// [`register_sequence_hash`](Self::register_sequence_hash) for each
    /// hash, in input order.
    pub fn register_sequence_hashes(
        &self,
        seq_hashes: impl IntoIterator<Item = SequenceHash>,
    ) -> Vec<BlockRegistrationHandle> {
        seq_hashes
            .into_iter()
            .map(|hash| self.register_sequence_hash(hash))
            .collect()
    }

    /// The handle of `seq_hash` if a tier holds the block or a handle
    /// exists; `None` otherwise. With `touch`, a found hash counts as a use
    /// in the frequency tracker, if there is one.
    pub fn match_sequence_hash(
        &self,
        seq_hash: SequenceHash,
        touch: bool,
    ) -> Option<BlockRegistrationHandle> {
        let found = if self.shared.present_in_any(seq_hash, None) {
            Some(self.shared.table.get_or_make(&self.shared, seq_hash))
        } else if self.shared.filter.may_hold(seq_hash) {
            self.shared.table.existing(seq_hash)
        } else {
            None
        };
        if touch && found.is_some() {
            self.touch(seq_hash);
        }
        found
    }

    /// Whether a frequency tracker was given
    /// ([`BlockRegistryBuilder::frequency_tracker`]).
    pub fn has_frequency_tracking(&self) -> bool {
        self.shared.tracker.is_some()
    }

    /// The frequency tracker, if one was given.
    pub fn frequency_tracker(&self) -> Option<Arc<dyn FrequencyTracker<u128>>> {
        self.shared.tracker.clone()
    }

    /// Counts one use of `seq_hash` in the frequency tracker (nothing
    /// without one).
    pub fn touch(&self, seq_hash: SequenceHash) {
        if let Some(tracker) = &self.shared.tracker {
            tracker.touch(seq_hash.as_u128());
        }
    }

    /// The frequency tracker's estimate of `seq_hash`'s recent uses (0
    /// without a tracker).
    pub fn count(&self, seq_hash: SequenceHash) -> u32 {
        self.shared
            .tracker
            .as_ref()
            .map_or(0, |tracker| tracker.count(seq_hash.as_u128()))
    }

    /// Whether a tier holds `seq_hash` or a handle of it exists.
    pub fn is_registered(&self, seq_hash: SequenceHash) -> bool {
        self.shared.present_in_any(seq_hash, None)
            || (self.shared.filter.may_hold(seq_hash)
                && self.shared.table.existing(seq_hash).is_some())
    }

    /// Distinct hashes that a tier holds or that have a handle. Walks every
    /// tier: O(slots), a snapshot per pool shard.
    pub fn registered_count(&self) -> usize {
        let members = self.shared.members();
        let stores: Vec<Arc<Store>> = members.iter().filter_map(|m| m.store.upgrade()).collect();
        let mut count = 0;
        for (i, store) in stores.iter().enumerate() {
            // Each hash counts in the first tier that holds it.
            store.for_each_primary(|hash| {
                if !stores[..i].iter().any(|earlier| earlier.holds(hash)) {
                    count += 1;
                }
            });
        }
        let handles_only = self
            .shared
            .table
            .hashes()
            .into_iter()
            .filter(|&hash| !stores.iter().any(|store| store.holds(hash)))
            .count();
        count + handles_only
    }

    /// Bytes the registry itself holds (the filter; the handle table grows
    /// with the handles asked for).
    pub fn heap_bytes(&self) -> usize {
        self.shared.filter.heap_bytes()
    }
}
