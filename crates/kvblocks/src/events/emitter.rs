//! The push side: [`EventEmitter`], the handle a block manager's store calls
//! when its registered set changes.
//!
//! An emitter only appends to a per-manager buffer, under one short leaf lock
//! that never calls out: no batching, no sink, no allocation beyond the
//! buffer's amortised growth. Everything else happens later, when the owner of
//! the [`EventsManager`](super::EventsManager) flushes, outside every lock of
//! the store. The buffer is shared by all threads, so the order of pushes is
//! the order of the stream.
//!
//! # How the store calls it
//!
//! Call each method **while holding the lock that orders the change it
//! reports** (the lock under which the slot's state changes), so that the
//! buffer's order is the order in which the changes happened: a removal and a
//! later re-registration of the same hash by another thread must reach the
//! buffer in that order. The emitter's own lock is a leaf: take it after any
//! store lock, never the other way round.
//!
//! - [`stored`](EventEmitter::stored): once per registration of a *primary*
//!   (never for a duplicate copy, never for a registration folded into an
//!   existing block). A batch call passes all its new primaries in one slice.
//! - [`removed`](EventEmitter::removed): once per block that leaves the tier's
//!   registered set: eviction by an allocation, evict-on-release,
//!   `reset_inactive_pool`, or a block discarded without being cached.
//! - [`cleared`](EventEmitter::cleared): when the whole tier's pool is reset at
//!   once and every block left (instead of one `removed` per block).
//!
//! After releasing its locks, the store may call
//! [`EventsManager::try_flush`](super::EventsManager::try_flush) when a
//! method returned `true` (the buffer holds a full batch); otherwise the
//! application's periodic [`EventsManager::flush`](super::EventsManager::flush)
//! publishes.

use std::sync::Arc;

use parking_lot::Mutex;

use super::buffer::{EventBuffer, RunKind};
use super::policy::Filter;
use super::protocol::{BlockChange, StoredBlock};
use super::replay::TierSnapshot;
use crate::{LogicalLayoutHandle, SequenceHash};

/// A snapshot the store asked for, to be completed by the next flush.
pub(crate) struct Barrier {
    /// Runs of the buffer pushed before the barrier.
    pub(crate) at: usize,
    pub(crate) ticket: SnapshotTicket,
    pub(crate) tiers: Vec<TierSnapshot>,
}

/// The buffer emitters push to.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) events: EventBuffer,
    pub(crate) barriers: Vec<Barrier>,
    pub(crate) emitted: u64,
    pub(crate) filtered: u64,
    next_ticket: u64,
}

/// State shared by the emitters and the events manager.
pub(crate) struct Shared {
    pub(crate) filter: Filter,
    pub(crate) pending: Mutex<Pending>,
    /// A full batch's worth of buffered events.
    pub(crate) flush_hint: usize,
    /// Whether stores and removals go into one run of [`BlockChange`]s
    /// (mixed batches) instead of runs of one kind.
    pub(crate) mixed: bool,
}

/// Pushes a stored block for each of `hashes` that `keep` keeps onto `to`
/// (as `wrap` makes it), linking each to the hash before it (the first to
/// `previous`); returns how many were offered and how many kept.
#[inline(always)]
fn push_stored<T>(
    to: &mut Vec<T>,
    hashes: impl Iterator<Item = SequenceHash>,
    mut previous: Option<SequenceHash>,
    keep: impl Fn(SequenceHash) -> bool,
    wrap: impl Fn(StoredBlock) -> T,
) -> (usize, usize) {
    let before = to.len();
    let mut offered = 0;
    to.reserve(hashes.size_hint().0);
    for hash in hashes {
        offered += 1;
        let parent = match previous {
            Some(p) => p.hash_as_parent_of(hash),
            None => None,
        };
        previous = Some(hash);
        if keep(hash) {
            to.push(wrap(StoredBlock { hash, parent }));
        }
    }
    (offered, to.len() - before)
}

/// Pushes each of `items` that `keep` keeps onto `to` (as `wrap` makes
/// it); returns how many were kept.
#[inline(always)]
fn push_kept<S: Copy, T>(
    to: &mut Vec<T>,
    items: &[S],
    keep: impl Fn(S) -> bool,
    wrap: impl Fn(S) -> T,
) -> usize {
    let before = to.len();
    to.reserve(items.len());
    for &item in items {
        if keep(item) {
            to.push(wrap(item));
        }
    }
    to.len() - before
}

/// Names a snapshot requested with [`EventEmitter::snapshot_barrier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnapshotTicket(pub(crate) u64);

/// The handle a store calls to report changes to its registered set.
///
/// Cloning is cheap (one `Arc`). Every method costs one uncontended lock and
/// a copy of the events into a buffer; none of them runs a sink. A
/// [`disabled`](Self::disabled) emitter does nothing at all. See the module
/// docs for when the store must call what.
///
/// ```
/// use std::time::Instant;
/// use kvblocks::events::{EventsManager, KvCacheEvents};
/// use kvblocks::{LogicalLayoutHandle::G1, SequenceHash};
///
/// let events = EventsManager::builder().instance_id(7).block_size(16).build();
/// let mut rx = events.subscribe();
/// let emitter = events.emitter();
///
/// let root = SequenceHash::root(1);
/// let chain = [root, root.extend(2)];
/// emitter.stored(G1, None, &chain);   // under the store's lock
/// events.flush_all();                 // later, outside every lock
///
/// let batch = rx.try_recv()?;
/// let KvCacheEvents::Create(blocks) = &batch.events else { unreachable!() };
/// assert_eq!(blocks[1].parent, Some(root.current_sequence_hash()), "parents are inferred along a chain");
/// assert_eq!((batch.instance_id, batch.position.seq), (7, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct EventEmitter {
    shared: Option<Arc<Shared>>,
}

impl EventEmitter {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared: Some(shared),
        }
    }

    /// An emitter that drops everything (for a manager without events).
    pub const fn disabled() -> Self {
        Self { shared: None }
    }

    /// Whether this emitter reports to an events manager.
    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Reports that `hashes` were registered as primaries in `tier`.
    ///
    /// Parents are filled in along the slice: `hashes[i]`'s parent is
    /// `hashes[i - 1]` when the keys say so (next position, matching parent
    /// fragment), and `hashes[0]`'s is `parent_of_first` when given and it
    /// matches; any other block gets no parent (`None`). Returns `true` when
    /// the buffer holds a full batch and a flush is worthwhile.
    pub fn stored(
        &self,
        tier: LogicalLayoutHandle,
        parent_of_first: Option<SequenceHash>,
        hashes: &[SequenceHash],
    ) -> bool {
        self.stored_from(tier, parent_of_first, hashes.iter().copied())
    }

    /// [`stored`](Self::stored) for hashes the caller yields one by one (the
    /// store's registration, which picks its new primaries out of a chunk
    /// without copying them into a slice first).
    #[inline]
    pub(crate) fn stored_from(
        &self,
        tier: LogicalLayoutHandle,
        parent_of_first: Option<SequenceHash>,
        hashes: impl Iterator<Item = SequenceHash>,
    ) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let mut pending = shared.pending.lock();
        let events = &mut pending.events;
        let keeps_all = shared.filter.keeps_all();
        let keep = |hash| keeps_all || shared.filter.keeps(hash);
        let (kind, (offered, kept)) = if shared.mixed {
            let counts = push_stored(
                &mut events.changes,
                hashes,
                parent_of_first,
                keep,
                BlockChange::Stored,
            );
            (RunKind::Mixed, counts)
        } else {
            let counts = push_stored(&mut events.creates, hashes, parent_of_first, keep, |b| b);
            (RunKind::Create, counts)
        };
        events.close_push(kind, tier, kept);
        let (offered, kept) = (offered as u64, kept as u64);
        pending.emitted += kept;
        pending.filtered += offered - kept;
        pending.events.len() >= shared.flush_hint
    }

    /// Reports registrations whose parents the caller already knows.
    /// Returns `true` when a flush is worthwhile.
    pub fn stored_blocks(&self, tier: LogicalLayoutHandle, blocks: &[StoredBlock]) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let keep = |block: StoredBlock| shared.filter.keeps(block.hash);
        let mut pending = shared.pending.lock();
        let events = &mut pending.events;
        let (kind, kept) = if shared.mixed {
            let kept = push_kept(&mut events.changes, blocks, keep, BlockChange::Stored);
            (RunKind::Mixed, kept)
        } else {
            (
                RunKind::Create,
                push_kept(&mut events.creates, blocks, keep, |b| b),
            )
        };
        events.close_push(kind, tier, kept);
        let kept = kept as u64;
        pending.emitted += kept;
        pending.filtered += blocks.len() as u64 - kept;
        pending.events.len() >= shared.flush_hint
    }

    /// Reports that `hashes` left `tier`'s registered set.
    /// Returns `true` when a flush is worthwhile.
    pub fn removed(&self, tier: LogicalLayoutHandle, hashes: &[SequenceHash]) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let keeps_all = shared.filter.keeps_all();
        let keep = |hash| shared.filter.keeps(hash);
        let mut pending = shared.pending.lock();
        let events = &mut pending.events;
        let (kind, kept) = match (shared.mixed, keeps_all) {
            (true, true) => {
                let removed = hashes.iter().map(|&hash| BlockChange::Removed(hash));
                events.changes.extend(removed);
                (RunKind::Mixed, hashes.len())
            }
            (false, true) => {
                events.removes.extend_from_slice(hashes);
                (RunKind::Remove, hashes.len())
            }
            (true, false) => (
                RunKind::Mixed,
                push_kept(&mut events.changes, hashes, keep, BlockChange::Removed),
            ),
            (false, false) => (
                RunKind::Remove,
                push_kept(&mut events.removes, hashes, keep, |h| h),
            ),
        };
        events.close_push(kind, tier, kept);
        let kept = kept as u64;
        pending.emitted += kept;
        pending.filtered += hashes.len() as u64 - kept;
        pending.events.len() >= shared.flush_hint
    }

    /// Reports that every block of `tier` left at once.
    /// Returns `true` when a flush is worthwhile.
    pub fn cleared(&self, tier: LogicalLayoutHandle) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let mut pending = shared.pending.lock();
        pending.events.push_clear(tier);
        pending.emitted += 1;
        true
    }

    /// Marks the point in the stream where the store's registered set was
    /// `tiers` and returns a ticket for the snapshot.
    ///
    /// Call it while holding every lock that orders registrations and
    /// removals (so no change is half-reported), with `tiers` read under
    /// those locks; then, outside the locks, pass the ticket to
    /// [`EventsManager::take_snapshot`](super::EventsManager::take_snapshot),
    /// which flushes and returns the snapshot with the stream position it is
    /// valid at. Blocks the emission policy would not announce are left out.
    /// Returns `None` on a disabled emitter.
    pub fn snapshot_barrier(&self, mut tiers: Vec<TierSnapshot>) -> Option<SnapshotTicket> {
        let shared = self.shared.as_ref()?;
        if !shared.filter.keeps_all() {
            for tier in &mut tiers {
                tier.hashes.retain(|&hash| shared.filter.keeps(hash));
            }
        }
        let mut pending = shared.pending.lock();
        let ticket = SnapshotTicket(pending.next_ticket);
        pending.next_ticket += 1;
        let at = pending.events.seal();
        pending.barriers.push(Barrier { at, ticket, tiers });
        Some(ticket)
    }
}

impl std::fmt::Debug for EventEmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shared {
            Some(shared) => f
                .debug_struct("EventEmitter")
                .field("policy", &shared.filter)
                .finish(),
            None => f.write_str("EventEmitter(disabled)"),
        }
    }
}
