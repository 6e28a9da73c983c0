//! A cheap, coherent snapshot of a manager's counters and gauges.
//!
//! Most counters are plain integers kept per pool shard under the shard's
//! lock (the lock already orders them, so they cost no atomics); match and
//! scan counts, taken partly without any lock, live in per-thread stripes.
//! [`BlockManager::metrics`](crate::BlockManager::metrics) sums them, locking
//! one shard at a time, so a snapshot taken while other threads work is a
//! sum of per-shard snapshots, not one instant. This module only describes
//! the numbers and reads them; exporting them is `metrics::prometheus`'s job
//! (feature `prometheus`).

#[cfg(feature = "prometheus")]
pub mod prometheus;

use crate::store::Store;
use crate::sync::Ordering;

/// Counters since the manager was built, and gauges at the moment of the snapshot.
///
/// The names follow kvbm-logical's `kvbm_*` metrics.
///
/// ```
/// use kvblocks::{BlockManager, SequenceHash};
/// #[derive(Clone)] struct Gpu;
/// let manager = BlockManager::<Gpu>::builder().block_count(4).block_size(4).build()?;
/// let staged = manager.allocate_blocks(1).unwrap().pop().unwrap().stage(SequenceHash::root(1), 4)?;
/// drop(manager.register_block(staged));
/// let m = manager.metrics();
/// assert_eq!((m.allocations, m.registrations, m.stagings), (1, 1, 1));
/// assert_eq!((m.reset_pool_size, m.inactive_pool_size), (3, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Blocks handed out by allocations (`kvbm_allocations_total`).
    pub allocations: u64,
    /// Of those, blocks taken from the reset pool (`kvbm_allocations_from_reset_total`).
    pub allocations_from_reset: u64,
    /// Registered blocks evicted from the inactive pool (`kvbm_evictions_total`).
    pub evictions: u64,
    /// Registrations (`kvbm_registrations_total`).
    pub registrations: u64,
    /// Registrations kept as duplicate copies under `Allow` (`kvbm_duplicate_blocks_total`).
    pub duplicate_blocks: u64,
    /// Registrations folded into the existing block under `Reject` (`kvbm_registration_dedup_total`).
    pub registration_dedups: u64,
    /// `MutableBlock -> CompleteBlock` transitions (`kvbm_stagings_total`), counted
    /// when the staged block leaves staging (registered, reset or dropped).
    pub stagings: u64,
    /// Hashes asked for by `match_blocks` / `match_blocks_scattered` (`kvbm_match_hashes_requested_total`).
    pub match_hashes_requested: u64,
    /// Blocks those calls returned (`kvbm_match_blocks_returned_total`).
    pub match_blocks_returned: u64,
    /// Hashes asked for by `scan_matches` (`kvbm_scan_hashes_requested_total`).
    pub scan_hashes_requested: u64,
    /// Blocks `scan_matches` returned (`kvbm_scan_blocks_returned_total`).
    pub scan_blocks_returned: u64,
    /// Slots held as `MutableBlock` or `CompleteBlock` (`kvbm_inflight_mutable`).
    pub inflight_mutable: u64,
    /// Registered slots pinned by at least one `ImmutableBlock` (`kvbm_inflight_immutable`).
    pub inflight_immutable: u64,
    /// Free slots (`kvbm_reset_pool_size`).
    pub reset_pool_size: u64,
    /// Cached, evictable slots (`kvbm_inactive_pool_size`).
    pub inactive_pool_size: u64,
}

/// Reads a store's counters and gauges (what
/// [`BlockManager::metrics`](crate::BlockManager::metrics) returns; the
/// Prometheus collector calls it at scrape time through a weak reference).
pub(crate) fn snapshot(store: &Store) -> MetricsSnapshot {
    let (c, counts) = store.totals();
    let [match_requested, match_returned, scan_requested, scan_returned] = store.match_totals();
    MetricsSnapshot {
        allocations: c.allocations,
        allocations_from_reset: c.allocations_from_reset,
        evictions: c.evictions,
        registrations: c.registrations,
        duplicate_blocks: c.duplicates,
        registration_dedups: c.dedups,
        stagings: c.staged_exits + store.unstagings.load(Ordering::Relaxed),
        match_hashes_requested: match_requested,
        match_blocks_returned: match_returned,
        scan_hashes_requested: scan_requested,
        scan_blocks_returned: scan_returned,
        inflight_mutable: counts.outstanding as u64,
        inflight_immutable: counts.active as u64,
        reset_pool_size: counts.reset as u64,
        inactive_pool_size: counts.inactive as u64,
    }
}
