//! The router's counters and gauges: what it applied, what it refused and
//! why, and what it holds. Every recovery the router makes is counted here,
//! so nothing it does to its view is silent.

/// Counters since the router was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Block events applied (stores and removals, one per block).
    pub block_events: u64,
    /// Clears applied.
    pub clears: u64,
    /// Stores whose parent the worker did not hold (kept anyway).
    pub orphan_stores: u64,
    /// Stores of a block the worker already held in that tier.
    pub redundant_stores: u64,
    /// Removals of a block the worker did not hold in that tier.
    pub unknown_removes: u64,
    /// Batches without a stream position (applied as they came).
    pub unsequenced_batches: u64,
    /// Batches ignored because they were applied before.
    pub duplicates: u64,
    /// Gaps detected (a run of refused batches counts once).
    pub gaps: u64,
    /// Batches refused because of a gap.
    pub refused_batches: u64,
    /// Batches refused because their epoch is older than the worker's.
    pub stale_epochs: u64,
    /// Worker restarts seen (a newer epoch; the old blocks were dropped).
    pub epoch_changes: u64,
    /// Snapshots applied.
    pub snapshots: u64,
    /// Snapshots refused as older than the index.
    pub stale_snapshots: u64,
    /// Workers removed.
    pub workers_removed: u64,
}

/// Counters plus gauges of the index's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterMetrics {
    /// Counters since the router was built.
    pub counters: Counters,
    /// Known workers.
    pub workers: usize,
    /// Holder slots in use (one per worker and tier seen).
    pub slots: usize,
    /// Entries of the block table (distinct blocks held by a slot below 64,
    /// plus one per block and further 64 slots).
    pub table_entries: usize,
    /// (block, worker, tier) triples held.
    pub held_pairs: u64,
    /// Heap bytes of the index.
    pub memory_bytes: usize,
}
