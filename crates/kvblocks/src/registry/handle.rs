//! [`BlockRegistrationHandle`]: the registry's record of one sequence hash,
//! shared by every tier that holds the block: typed attachments and touch
//! callbacks.
//!
//! A handle exists only once someone asks for it (the store keeps no handle
//! per block). While it exists, the registry's table holds it, so there is
//! one per hash at a time; the table lets it go once no tier holds the block
//! and no clone of the handle is left (see [`super::table`]).

use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::sync::{Arc, Weak};

use super::attachments::{AttachmentError, AttachmentStore, Locked, TypedAttachments};
use super::{BlockRegistry, RegistryShared};
use crate::sync::Mutex;
use crate::{BlockMetadata, SequenceHash};

/// What runs on [`BlockRegistrationHandle::touch`].
type TouchCallback = Arc<dyn Fn(SequenceHash) + Send + Sync>;

/// The shared part of a handle.
pub(crate) struct HandleInner {
    hash: SequenceHash,
    registry: Weak<RegistryShared>,
    pub(crate) attachments: Mutex<AttachmentStore>,
    touch_callbacks: Mutex<Vec<TouchCallback>>,
}

impl HandleInner {
    pub(crate) fn new(hash: SequenceHash, registry: Weak<RegistryShared>) -> Self {
        Self {
            hash,
            registry,
            attachments: Mutex::new(AttachmentStore::default()),
            touch_callbacks: Mutex::new(Vec::new()),
        }
    }

    /// The hash this handle names.
    pub(crate) fn hash(&self) -> SequenceHash {
        self.hash
    }
}

/// The registry's record of one sequence hash, shared by every tier that
/// holds the block: typed attachments and touch callbacks.
///
/// Get one from [`ImmutableBlock::registration_handle`](crate::ImmutableBlock::registration_handle),
/// [`BlockRegistry::match_sequence_hash`] or
/// [`BlockRegistry::register_sequence_hash`]. Clones share one record. It
/// lives while any tier holds the block (active, inactive or as a duplicate
/// copy) or any clone of the handle is alive; after that, asking again gives
/// a new, empty record.
///
/// # Drop behaviour
///
/// Dropping the last clone of a handle whose block no tier holds any more
/// drops its attachments (taking the registry's table lock for that hash).
///
/// ```
/// use kvblocks::{BlockManager, BlockRegistry, SequenceHash};
/// #[derive(Clone)] struct Gpu;
/// #[derive(Clone)] struct Host;
/// let registry = BlockRegistry::new();
/// let gpu = BlockManager::<Gpu>::builder().block_count(4).block_size(4)
///     .registry(registry.clone()).build()?;
/// let host = BlockManager::<Host>::builder().block_count(4).block_size(4)
///     .registry(registry.clone()).build()?;
/// let hash = SequenceHash::root(7);
/// let block = gpu.register_block(gpu.allocate_blocks(1).unwrap().pop().unwrap().stage(hash, 4)?);
///
/// // Mark the block as being copied to host memory.
/// struct Offloading;
/// block.registration_handle().attach_unique(Offloading)?;
/// let copy = host.register_block(host.allocate_blocks(1).unwrap().pop().unwrap().stage(hash, 4)?);
/// assert!(copy.registration_handle().get::<Offloading>().with_unique(|_| ()).is_some(),
///     "one record per hash, whichever tier asks");
/// assert!(copy.registration_handle().has_block::<Gpu>() && copy.registration_handle().has_block::<Host>());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct BlockRegistrationHandle {
    /// Always `Some` until `Drop` takes it out.
    inner: Option<Arc<HandleInner>>,
}

impl BlockRegistrationHandle {
    pub(crate) fn from_inner(inner: Arc<HandleInner>) -> Self {
        Self { inner: Some(inner) }
    }

    fn inner(&self) -> &Arc<HandleInner> {
        match &self.inner {
            Some(inner) => inner,
            None => unreachable!("a handle's record is taken out only by its Drop"),
        }
    }

    /// The sequence hash this handle names.
    pub fn seq_hash(&self) -> SequenceHash {
        self.inner().hash
    }

    /// Whether this handle came from `registry` (or a clone of it).
    pub fn is_from_registry(&self, registry: &BlockRegistry) -> bool {
        std::ptr::eq(
            self.inner().registry.as_ptr(),
            Arc::as_ptr(&registry.shared),
        )
    }

    /// Whether a manager of tier `T` in this handle's registry holds the
    /// block now (a lock-free look, see [`BlockRegistry::check_presence`]).
    pub fn has_block<T: BlockMetadata>(&self) -> bool {
        self.has_any_block(&[TypeId::of::<T>()])
    }

    /// Whether a manager of any of the tiers `type_ids` holds the block now.
    pub fn has_any_block(&self, type_ids: &[TypeId]) -> bool {
        match self.inner().registry.upgrade() {
            Some(registry) => registry.present_in_any(self.seq_hash(), Some(type_ids)),
            None => false,
        }
    }

    /// Adds `callback`, run with the hash by every [`touch`](Self::touch).
    pub fn on_touch(&self, callback: Arc<dyn Fn(SequenceHash) + Send + Sync>) {
        self.inner().touch_callbacks.lock().push(callback);
    }

    /// Runs every touch callback (outside any lock, so a callback may use
    /// this handle and the registry).
    pub fn touch(&self) {
        let callbacks: Vec<TouchCallback> = self.inner().touch_callbacks.lock().clone();
        let hash = self.seq_hash();
        for callback in &callbacks {
            callback(hash);
        }
    }

    /// The values of type `T` attached to this handle.
    pub fn get<T: Any + Send + Sync>(&self) -> TypedAttachments<'_, T> {
        TypedAttachments {
            inner: self.inner(),
            _type: PhantomData,
        }
    }

    /// Attaches `value` as the one value of its type (replacing an earlier
    /// one).
    ///
    /// # Errors
    ///
    /// [`AttachmentError::TypeAlreadyRegisteredAsMultiple`] if values of this
    /// type were attached with [`attach`](Self::attach); nothing changes.
    pub fn attach_unique<T: Any + Send + Sync>(&self, value: T) -> Result<(), AttachmentError> {
        Locked::lock(self.inner()).set_unique(value)
    }

    /// Attaches `value` as one more value of its type.
    ///
    /// # Errors
    ///
    /// [`AttachmentError::TypeAlreadyRegisteredAsUnique`] if this type was
    /// attached with [`attach_unique`](Self::attach_unique); nothing changes.
    pub fn attach<T: Any + Send + Sync>(&self, value: T) -> Result<(), AttachmentError> {
        Locked::lock(self.inner()).push(value)
    }
}

impl Drop for BlockRegistrationHandle {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let hash = inner.hash;
        let registry = inner.registry.upgrade();
        let record = Arc::downgrade(&inner);
        drop(inner);
        // The last clone outside the table: the table may let the record
        // go if no tier holds the block.
        if let Some(registry) = registry {
            if record.strong_count() == 1 {
                registry.table.sweep(&registry, hash);
            }
        }
    }
}

impl std::fmt::Debug for BlockRegistrationHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockRegistrationHandle")
            .field("seq_hash", &self.seq_hash())
            .finish()
    }
}
