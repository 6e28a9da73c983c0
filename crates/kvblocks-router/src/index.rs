//! The single-threaded cluster index: the block table, the holder slots of
//! every (worker, tier), each worker's stream state, and the counters.
//!
//! Everything that changes the index goes through here, one call at a time
//! ([`crate::Router`] adds the locking). Stream positions are checked before
//! anything is applied: a batch that does not continue its worker's stream
//! exactly is refused with a typed error (a gap or a stale epoch) or ignored
//! and counted (a duplicate), so the index never silently skips or
//! re-applies a change.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use kvblocks::events::{StreamPosition, WorkerSnapshot};
use kvblocks::LogicalLayoutHandle;

use crate::ingest::{BlockKey, IndexEvent, WorkerId};
use crate::metrics::{Counters, RouterMetrics};
use crate::table::BlockTable;

/// How many blocks ahead a batch or a query prefetches table entries.
pub(crate) const PREFETCH_AHEAD: usize = 16;

/// A batch the index refused; the index is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Batches are missing before this one: replay from `expected`, or load
    /// a snapshot. Until then the worker's later batches are refused too.
    #[error("{worker}: gap, expected batch {expected:?} but got {got:?}")]
    Gap {
        /// The worker.
        worker: WorkerId,
        /// The position the index needs next.
        expected: StreamPosition,
        /// The position that came.
        got: StreamPosition,
    },
    /// The batch is from an incarnation of the worker older than the one
    /// being followed.
    #[error("{worker}: stale epoch {}, following epoch {current}", got.epoch)]
    StaleEpoch {
        /// The worker.
        worker: WorkerId,
        /// The epoch being followed.
        current: u64,
        /// The position that came.
        got: StreamPosition,
    },
    /// A snapshot older than what the index already reflects.
    #[error("{worker}: snapshot at {snapshot:?} is older than the index's next batch {next:?}")]
    StaleSnapshot {
        /// The worker.
        worker: WorkerId,
        /// The snapshot's position.
        snapshot: StreamPosition,
        /// The position the index expects next.
        next: StreamPosition,
    },
    /// The worker is not known to the router.
    #[error("{0} is not known")]
    UnknownWorker(WorkerId),
}

/// What became of a batch the index accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied.
    Applied,
    /// Already applied before: ignored (and counted).
    Duplicate,
}

/// One worker's state as the router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The position the router needs next from this worker (`None`: no
    /// sequenced batch seen).
    pub next: Option<StreamPosition>,
    /// Whether batches are missing (the last batch was refused as a gap).
    pub in_gap: bool,
    /// Blocks held per tier (`G1` first).
    pub blocks: [u64; 4],
    /// The load last reported for the worker.
    pub load: u64,
}

struct Worker {
    slots: [Option<u32>; 4],
    next: Option<StreamPosition>,
    in_gap: bool,
    load: AtomicU64,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    owner: Option<(WorkerId, LogicalLayoutHandle)>,
    blocks: u64,
}

/// The cluster index without locks.
#[derive(Default)]
pub struct ClusterIndex {
    table: BlockTable,
    slots: Vec<Slot>,
    free_slots: BTreeSet<u32>,
    /// Slots in use, one mask per 64 slots.
    live: Vec<u64>,
    workers: HashMap<WorkerId, Worker>,
    counters: Counters,
}

impl ClusterIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `worker` known (with no block), so it can be chosen before it
    /// reports anything. No-op if it is known.
    pub fn add_worker(&mut self, worker: WorkerId) {
        self.workers.entry(worker).or_insert_with(|| Worker {
            slots: [None; 4],
            next: None,
            in_gap: false,
            load: AtomicU64::new(0),
        });
    }

    /// Checks `got` against `worker`'s stream and, if it is the next batch,
    /// advances the stream. On `Ok(Applied)` the caller must apply the batch.
    pub fn admit(
        &mut self,
        worker: WorkerId,
        got: Option<StreamPosition>,
    ) -> Result<ApplyOutcome, ApplyError> {
        let outcome = self.check_admission(worker, got)?;
        if outcome == ApplyOutcome::Applied {
            self.record_applied(worker, got);
        }
        Ok(outcome)
    }

    /// [`admit`](Self::admit) without advancing the stream: on
    /// `Ok(Applied)` the caller applies the batch, then calls
    /// [`record_applied`](Self::record_applied). A newer epoch is acted on
    /// here (the old incarnation's blocks dropped, the stream at its start).
    pub(crate) fn check_admission(
        &mut self,
        worker: WorkerId,
        got: Option<StreamPosition>,
    ) -> Result<ApplyOutcome, ApplyError> {
        self.add_worker(worker);
        let Some(got) = got else {
            self.counters.unsequenced_batches += 1;
            return Ok(ApplyOutcome::Applied);
        };
        let state = &self.workers[&worker];
        let mut next = state.next.unwrap_or(StreamPosition {
            epoch: got.epoch,
            seq: 0,
        });
        if got.epoch < next.epoch {
            self.counters.stale_epochs += 1;
            return Err(ApplyError::StaleEpoch {
                worker,
                current: next.epoch,
                got,
            });
        }
        if got.epoch > next.epoch {
            // A new incarnation: whatever the old one held is gone.
            self.counters.epoch_changes += 1;
            self.clear_worker(worker, None);
            next = StreamPosition {
                epoch: got.epoch,
                seq: 0,
            };
            if let Some(state) = self.workers.get_mut(&worker) {
                state.next = Some(next);
            }
        }
        let state = self
            .workers
            .get_mut(&worker)
            .ok_or(ApplyError::UnknownWorker(worker))?;
        if got.seq < next.seq {
            self.counters.duplicates += 1;
            return Ok(ApplyOutcome::Duplicate);
        }
        if got.seq > next.seq {
            if !state.in_gap {
                self.counters.gaps += 1;
            }
            state.in_gap = true;
            state.next = Some(next);
            self.counters.refused_batches += 1;
            return Err(ApplyError::Gap {
                worker,
                expected: next,
                got,
            });
        }
        Ok(ApplyOutcome::Applied)
    }

    /// Records that the batch at `got` (admitted by
    /// [`check_admission`](Self::check_admission)) is wholly applied.
    pub(crate) fn record_applied(&mut self, worker: WorkerId, got: Option<StreamPosition>) {
        if let (Some(got), Some(state)) = (got, self.workers.get_mut(&worker)) {
            state.in_gap = false;
            state.next = Some(got.next());
        }
    }

    fn slot_of(&mut self, worker: WorkerId, tier: LogicalLayoutHandle) -> u32 {
        if let Some(slot) = self
            .workers
            .get(&worker)
            .and_then(|w| w.slots[tier.index()])
        {
            return slot;
        }
        let slot = match self.free_slots.pop_first() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[slot as usize] = Slot {
            owner: Some((worker, tier)),
            blocks: 0,
        };
        let word = (slot / 64) as usize;
        if self.live.len() <= word {
            self.live.resize(word + 1, 0);
        }
        self.live[word] |= 1 << (slot % 64);
        self.add_worker(worker);
        if let Some(state) = self.workers.get_mut(&worker) {
            state.slots[tier.index()] = Some(slot);
        }
        slot
    }

    fn existing_slot(&self, worker: WorkerId, tier: LogicalLayoutHandle) -> Option<u32> {
        self.workers.get(&worker)?.slots[tier.index()]
    }

    /// Applies one event of `worker` (admitted before); returns the block
    /// events it held.
    pub fn apply_event(&mut self, worker: WorkerId, event: &IndexEvent) -> usize {
        match event {
            IndexEvent::Stored {
                tier,
                parent,
                blocks,
            } => self.apply_stored(worker, *tier, *parent, blocks),
            IndexEvent::Removed { tier, blocks } => self.apply_removed(worker, *tier, blocks),
            IndexEvent::Cleared { tier } => self.apply_cleared(worker, *tier),
        }
    }

    /// Stores the chain `blocks` (whose first block's parent is `parent`).
    pub fn apply_stored(
        &mut self,
        worker: WorkerId,
        tier: LogicalLayoutHandle,
        parent: Option<BlockKey>,
        blocks: &[BlockKey],
    ) -> usize {
        self.apply_stored_part(worker, tier, parent, blocks, 0..blocks.len())
    }

    /// Stores `blocks[part]` of the chain `blocks` (the blocks before `part`
    /// stored already), prefetching past the part's end. The parent is
    /// checked with the first part only.
    pub(crate) fn apply_stored_part(
        &mut self,
        worker: WorkerId,
        tier: LogicalLayoutHandle,
        parent: Option<BlockKey>,
        blocks: &[BlockKey],
        part: Range<usize>,
    ) -> usize {
        let slot = self.slot_of(worker, tier);
        if let Some(parent) = parent.filter(|_| part.start == 0) {
            if !self.table.holds(parent, slot) {
                self.counters.orphan_stores += 1;
            }
        }
        let len = part.len();
        self.store(slot, blocks, part);
        len
    }

    /// Removes `blocks` from `worker`'s `tier`.
    pub fn apply_removed(
        &mut self,
        worker: WorkerId,
        tier: LogicalLayoutHandle,
        blocks: &[BlockKey],
    ) -> usize {
        self.apply_removed_part(worker, tier, blocks, 0..blocks.len())
    }

    /// Removes `blocks[part]`, prefetching past the part's end.
    pub(crate) fn apply_removed_part(
        &mut self,
        worker: WorkerId,
        tier: LogicalLayoutHandle,
        blocks: &[BlockKey],
        part: Range<usize>,
    ) -> usize {
        let len = part.len();
        match self.existing_slot(worker, tier) {
            Some(slot) => self.remove(slot, blocks, part),
            None => {
                self.counters.unknown_removes += len as u64;
                self.counters.block_events += len as u64;
            }
        }
        len
    }

    /// Drops every block of `worker` in `tier` (all tiers for `None`).
    pub fn apply_cleared(&mut self, worker: WorkerId, tier: Option<LogicalLayoutHandle>) -> usize {
        self.clear_worker(worker, tier);
        self.counters.clears += 1;
        1
    }

    /// Stores `blocks[part]` in `slot`; prefetches up to the end of `blocks`
    /// (so a batch applied part by part keeps its look-ahead).
    fn store(&mut self, slot: u32, blocks: &[BlockKey], part: Range<usize>) {
        let len = part.len() as u64;
        if part.start == 0 {
            // Later parts were prefetched by the parts before them.
            for &key in blocks.iter().take(PREFETCH_AHEAD) {
                self.table.prefetch(key);
            }
        }
        let mut fresh = 0;
        for i in part {
            if let Some(&ahead) = blocks.get(i + PREFETCH_AHEAD) {
                self.table.prefetch(ahead);
            }
            if self.table.insert(blocks[i], slot) {
                fresh += 1;
            }
        }
        self.slots[slot as usize].blocks += fresh;
        self.counters.redundant_stores += len - fresh;
        self.counters.block_events += len;
    }

    /// Removes `blocks[part]` from `slot`, prefetching like [`Self::store`].
    fn remove(&mut self, slot: u32, blocks: &[BlockKey], part: Range<usize>) {
        let len = part.len() as u64;
        if part.start == 0 {
            // Later parts were prefetched by the parts before them.
            for &key in blocks.iter().take(PREFETCH_AHEAD) {
                self.table.prefetch(key);
            }
        }
        let mut gone = 0;
        for i in part {
            if let Some(&ahead) = blocks.get(i + PREFETCH_AHEAD) {
                self.table.prefetch(ahead);
            }
            if self.table.remove(blocks[i], slot) {
                gone += 1;
            }
        }
        self.slots[slot as usize].blocks -= gone;
        self.counters.unknown_removes += len - gone;
        self.counters.block_events += len;
    }

    /// Drops every block `worker` holds in `tier` (every tier for `None`).
    fn clear_worker(&mut self, worker: WorkerId, tier: Option<LogicalLayoutHandle>) {
        let Some(state) = self.workers.get(&worker) else {
            return;
        };
        let mut masks = vec![0u64; self.live.len()];
        for (index, slot) in state.slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            if tier.is_some_and(|t| t.index() != index) || self.slots[*slot as usize].blocks == 0 {
                continue;
            }
            masks[(*slot / 64) as usize] |= 1 << (slot % 64);
        }
        if masks.iter().all(|&m| m == 0) {
            return;
        }
        let slots = &mut self.slots;
        self.table.clear_slots(&masks, |word, mut bits| {
            while bits != 0 {
                let slot = word * 64 + bits.trailing_zeros();
                slots[slot as usize].blocks -= 1;
                bits &= bits - 1;
            }
        });
    }

    /// Forgets `worker`: drops its blocks, frees its slots and its stream
    /// state. Returns the (block, tier) pairs dropped.
    pub fn remove_worker(&mut self, worker: WorkerId) -> Result<u64, ApplyError> {
        if !self.workers.contains_key(&worker) {
            return Err(ApplyError::UnknownWorker(worker));
        }
        let held = self.worker_blocks(worker).iter().sum();
        self.clear_worker(worker, None);
        if let Some(state) = self.workers.remove(&worker) {
            for slot in state.slots.into_iter().flatten() {
                self.slots[slot as usize] = Slot::default();
                self.live[(slot / 64) as usize] &= !(1 << (slot % 64));
                self.free_slots.insert(slot);
            }
        }
        while self.slots.last().is_some_and(|s| s.owner.is_none()) {
            let slot = (self.slots.len() - 1) as u32;
            self.slots.pop();
            self.free_slots.remove(&slot);
        }
        self.live.truncate(self.slots.len().div_ceil(64));
        self.counters.workers_removed += 1;
        Ok(held)
    }

    /// Replaces `worker`'s blocks by the snapshot's and continues its stream
    /// at the snapshot's position.
    pub fn apply_snapshot(&mut self, snapshot: &WorkerSnapshot) -> Result<(), ApplyError> {
        let worker = WorkerId(snapshot.instance_id);
        self.add_worker(worker);
        if let Some(next) = self.workers[&worker].next {
            if snapshot.position < next {
                self.counters.stale_snapshots += 1;
                return Err(ApplyError::StaleSnapshot {
                    worker,
                    snapshot: snapshot.position,
                    next,
                });
            }
        }
        self.clear_worker(worker, None);
        for tier in &snapshot.tiers {
            let slot = self.slot_of(worker, tier.tier);
            let keys: Vec<BlockKey> = tier
                .hashes
                .iter()
                .map(|h| h.current_sequence_hash())
                .collect();
            self.store(slot, &keys, 0..keys.len());
        }
        if let Some(state) = self.workers.get_mut(&worker) {
            state.next = Some(snapshot.position);
            state.in_gap = false;
        }
        self.counters.snapshots += 1;
        Ok(())
    }

    fn worker_blocks(&self, worker: WorkerId) -> [u64; 4] {
        let mut blocks = [0; 4];
        if let Some(state) = self.workers.get(&worker) {
            for (tier, slot) in state.slots.iter().enumerate() {
                if let Some(slot) = slot {
                    blocks[tier] = self.slots[*slot as usize].blocks;
                }
            }
        }
        blocks
    }

    /// The worker's stream state, blocks and load.
    pub fn status(&self, worker: WorkerId) -> Option<WorkerStatus> {
        let state = self.workers.get(&worker)?;
        Some(WorkerStatus {
            next: state.next,
            in_gap: state.in_gap,
            blocks: self.worker_blocks(worker),
            load: state.load.load(Ordering::Relaxed),
        })
    }

    /// Every known worker, sorted.
    pub fn workers(&self) -> Vec<WorkerId> {
        let mut workers: Vec<_> = self.workers.keys().copied().collect();
        workers.sort_unstable();
        workers
    }

    /// Sets the load of a known worker (returns `false` if unknown). Takes
    /// `&self`: loads are atomics, so a reader lock is enough.
    pub fn set_load(&self, worker: WorkerId, load: u64) -> bool {
        self.workers
            .get(&worker)
            .map(|w| w.load.store(load, Ordering::Relaxed))
            .is_some()
    }

    /// Adds `delta` to the load of a known worker (saturating at 0).
    pub fn add_load(&self, worker: WorkerId, delta: i64) -> bool {
        self.workers
            .get(&worker)
            .map(|w| {
                let _ = w
                    .load
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |load| {
                        Some(load.saturating_add_signed(delta))
                    });
            })
            .is_some()
    }

    pub(crate) fn table(&self) -> &BlockTable {
        &self.table
    }

    pub(crate) fn live(&self) -> &[u64] {
        &self.live
    }

    pub(crate) fn owner(&self, slot: u32) -> Option<(WorkerId, LogicalLayoutHandle)> {
        self.slots.get(slot as usize).and_then(|s| s.owner)
    }

    /// Holder slots ever numbered (some may be free).
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Calls `visit(worker, slots per tier, load)` for every known worker.
    pub(crate) fn for_each_worker(&self, mut visit: impl FnMut(WorkerId, &[Option<u32>; 4], u64)) {
        for (&id, worker) in &self.workers {
            visit(id, &worker.slots, worker.load.load(Ordering::Relaxed));
        }
    }

    /// Heap bytes of the index: table, slots and workers.
    pub fn memory_bytes(&self) -> usize {
        self.table.bytes()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.live.capacity() * 8
            + self.free_slots.len() * 8
            + self.workers.capacity() * (std::mem::size_of::<(WorkerId, Worker)>() + 1)
    }

    /// Counters and gauges.
    pub fn metrics(&self) -> RouterMetrics {
        RouterMetrics {
            counters: self.counters,
            workers: self.workers.len(),
            slots: self.slots.iter().filter(|s| s.owner.is_some()).count(),
            table_entries: self.table.entries(),
            held_pairs: self.slots.iter().map(|s| s.blocks).sum(),
            memory_bytes: self.memory_bytes(),
        }
    }

    /// Whether `worker` holds `key` in `tier`.
    pub fn holds(&self, worker: WorkerId, tier: LogicalLayoutHandle, key: BlockKey) -> bool {
        self.existing_slot(worker, tier)
            .is_some_and(|slot| self.table.holds(key, slot))
    }
}
