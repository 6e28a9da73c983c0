//! [`Router`]: the cluster index behind a reader-writer lock, and the
//! queries a request scheduler asks it.
//!
//! Queries take the read lock once each and never allocate per block. Event
//! batches are applied one at a time (a writer mutex keeps every batch whole
//! with respect to other writers), under the write lock, in slices of
//! `apply_slice` block events.
//!
//! # Readers wait for one slice, not for a batch
//!
//! A query that finds the write lock taken announces itself (a counter) and
//! spins on `try_read`; the writer looks at the counter after every slice
//! and, if a query waits, releases the lock, spins until every announced
//! query got in, and takes the lock back (spinning first as well). Nobody
//! parks on the lock in the common case, so a query waits for at most one
//! slice plus a cache-line hand-off, not for a futex wake-up. Both spins are
//! bounded in time (`SPIN_LIMIT`); past that (the other thread preempted)
//! they fall back to the lock's blocking, fair acquisition. A clear
//! (`IndexEvent::Cleared`, a new epoch, a snapshot, a worker's removal)
//! rebuilds the table and is one slice however large.
//!
//! # What a query observes
//!
//! Every query sees the index between two slices: every batch applied
//! before, all of it, plus a prefix of the events of the batch being applied
//! (in the batch's order; a chain's blocks are stored first to last, so a
//! query may see the first blocks of a fresh chain and not yet the rest).
//! For routing that is as good as arriving a few microseconds earlier or
//! later. A worker's stream position ([`Router::worker_status`]) advances only
//! once its batch's last slice is applied: if a query sees the new position,
//! it (and every later query) sees the whole batch.

use kvblocks::events::WorkerSnapshot;
use kvblocks::{LogicalLayoutHandle, SequenceHash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::index::{ApplyError, ApplyOutcome, ClusterIndex, WorkerStatus, PREFETCH_AHEAD};
use crate::ingest::{BlockKey, IndexBatch, IndexEvent, WorkerId};
use crate::metrics::RouterMetrics;

/// How many leading blocks of a request one worker holds in one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerOverlap {
    /// The worker.
    pub worker: WorkerId,
    /// The tier.
    pub tier: LogicalLayoutHandle,
    /// Leading blocks of the request it holds there (at least 1).
    pub blocks: u32,
}

/// Per worker and tier, the request's leading blocks held; workers and tiers
/// holding none are left out. Sorted by blocks (most first), then worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlapScores {
    /// The non-zero overlaps.
    pub scores: Vec<WorkerOverlap>,
    /// The request's keys (kept to reuse the allocation).
    keys: Vec<BlockKey>,
}

impl OverlapScores {
    /// The overlap of `worker` in `tier` (0 if none).
    pub fn get(&self, worker: WorkerId, tier: LogicalLayoutHandle) -> u32 {
        self.scores
            .iter()
            .find(|s| s.worker == worker && s.tier == tier)
            .map_or(0, |s| s.blocks)
    }
}

/// The worker a request should go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BestWorker {
    /// The worker.
    pub worker: WorkerId,
    /// Leading blocks of the request it holds (in its best tier).
    pub overlap_blocks: u32,
    /// Its load when chosen.
    pub load: u64,
}

/// A cluster-wide prefix index fed by the event streams of many workers.
///
/// ```
/// use kvblocks::events::EventsManager;
/// use kvblocks::{LogicalLayoutHandle::G1, SequenceHash};
/// use kvblocks_router::{IndexBatch, Router, WorkerId};
///
/// let router = Router::new();
/// let prompt: Vec<SequenceHash> = {
///     let root = SequenceHash::root(1);
///     vec![root, root.extend(2), root.extend(2).extend(3)]
/// };
/// for (worker, held) in [(1u128, 3usize), (2, 1)] {
///     let events = EventsManager::builder().instance_id(worker).epoch(1).build();
///     let mut rx = events.subscribe();
///     events.emitter().stored(G1, None, &prompt[..held]);
///     events.flush_all();
///     let batch = rx.try_recv()?;
///     router.apply(&IndexBatch::from_kvblocks(&batch))?;
/// }
/// let scores = router.overlap_scores(&prompt);
/// assert_eq!(scores.get(WorkerId(1), G1), 3);
/// assert_eq!(scores.get(WorkerId(2), G1), 1);
/// assert_eq!(router.best_worker(&prompt).map(|b| b.worker), Some(WorkerId(1)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Router {
    index: RwLock<ClusterIndex>,
    writer: Mutex<()>,
    /// Queries spinning for the read lock (the writer lets them in).
    readers_waiting: AtomicUsize,
    apply_slice: usize,
}

/// How long a query spins for the read lock, the writer for its waiting
/// queries to get in, and the writer for the write lock, before falling back
/// to blocking.
const SPIN_LIMIT: Duration = Duration::from_micros(50);

/// Calls `attempt` until it gives a value, for at most [`SPIN_LIMIT`].
#[inline]
fn spin_for<T>(mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            if let Some(value) = attempt() {
                return Some(value);
            }
            std::hint::spin_loop();
        }
        if start.elapsed() > SPIN_LIMIT {
            return None;
        }
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// An empty router that lets waiting queries in every 32 block events.
    pub fn new() -> Self {
        Self::with_apply_slice(32)
    }

    /// An empty router that lets waiting queries in every `apply_slice`
    /// block events (at least 1) while applying a batch.
    pub fn with_apply_slice(apply_slice: usize) -> Self {
        Self {
            index: RwLock::new(ClusterIndex::new()),
            writer: Mutex::new(()),
            readers_waiting: AtomicUsize::new(0),
            apply_slice: apply_slice.max(1),
        }
    }

    /// The read lock for a query: at once if free, else by spinning while
    /// the writer finishes its slice (module docs).
    fn read(&self) -> RwLockReadGuard<'_, ClusterIndex> {
        if let Some(index) = self.index.try_read() {
            return index;
        }
        self.readers_waiting.fetch_add(1, Ordering::SeqCst);
        let index = spin_for(|| self.index.try_read()).unwrap_or_else(|| self.index.read());
        self.readers_waiting.fetch_sub(1, Ordering::SeqCst);
        index
    }

    /// The write lock for the writer (holding the writer mutex): spinning
    /// first, so a query that holds the read lock for a few microseconds
    /// does not send the writer to sleep.
    fn write(&self) -> RwLockWriteGuard<'_, ClusterIndex> {
        spin_for(|| self.index.try_write()).unwrap_or_else(|| self.index.write())
    }

    /// Between two slices: if a query waits, releases the write lock until
    /// every waiting query got the read lock, then takes it back.
    fn let_readers_in<'a>(
        &'a self,
        index: RwLockWriteGuard<'a, ClusterIndex>,
    ) -> RwLockWriteGuard<'a, ClusterIndex> {
        if self.readers_waiting.load(Ordering::SeqCst) == 0 {
            return index;
        }
        // Fair: a query that gave up spinning and parked gets the lock handed
        // to it, so the writer cannot barge in before it wakes up.
        RwLockWriteGuard::unlock_fair(index);
        let _ = spin_for(|| (self.readers_waiting.load(Ordering::SeqCst) == 0).then_some(()));
        self.write()
    }

    /// Applies one worker's batch if it continues the worker's stream.
    ///
    /// Queries running meanwhile may see a prefix of the batch's events
    /// (module docs); the worker's position advances once all are applied.
    ///
    /// # Errors
    ///
    /// [`ApplyError::Gap`] or [`ApplyError::StaleEpoch`]; the index is then
    /// unchanged (and the refusal counted). A duplicate is `Ok(Duplicate)`.
    pub fn apply(&self, batch: &IndexBatch) -> Result<ApplyOutcome, ApplyError> {
        let _writer = self.writer.lock();
        let mut index = self.write();
        let outcome = index.check_admission(batch.worker, batch.position)?;
        if outcome == ApplyOutcome::Duplicate {
            return Ok(outcome);
        }
        let slice = self.apply_slice;
        // Block events applied since the waiting queries were last let in.
        let mut in_slice = 0;
        for event in &batch.events {
            let (tier, blocks) = match event {
                IndexEvent::Stored { tier, blocks, .. } | IndexEvent::Removed { tier, blocks } => {
                    (*tier, blocks)
                }
                IndexEvent::Cleared { tier } => {
                    index.apply_cleared(batch.worker, *tier);
                    index = self.let_readers_in(index);
                    in_slice = 0;
                    continue;
                }
            };
            let mut start = 0;
            while start < blocks.len() {
                let end = blocks.len().min(start + (slice - in_slice));
                in_slice += match event {
                    IndexEvent::Stored { parent, .. } => {
                        index.apply_stored_part(batch.worker, tier, *parent, blocks, start..end)
                    }
                    _ => index.apply_removed_part(batch.worker, tier, blocks, start..end),
                };
                start = end;
                if in_slice >= slice {
                    index = self.let_readers_in(index);
                    in_slice = 0;
                }
            }
        }
        index.record_applied(batch.worker, batch.position);
        Ok(outcome)
    }

    /// Replaces a worker's blocks by a snapshot and continues its stream at
    /// the snapshot's position (the way out of a gap).
    ///
    /// # Errors
    ///
    /// [`ApplyError::StaleSnapshot`] if the index is already past it.
    pub fn apply_snapshot(&self, snapshot: &WorkerSnapshot) -> Result<(), ApplyError> {
        let _writer = self.writer.lock();
        self.write().apply_snapshot(snapshot)
    }

    /// Makes a worker known before it reports anything (so it can be chosen).
    pub fn add_worker(&self, worker: WorkerId) {
        let _writer = self.writer.lock();
        self.write().add_worker(worker);
    }

    /// Forgets a worker and drops its blocks; returns how many (block, tier)
    /// pairs it held.
    ///
    /// # Errors
    ///
    /// [`ApplyError::UnknownWorker`].
    pub fn remove_worker(&self, worker: WorkerId) -> Result<u64, ApplyError> {
        let _writer = self.writer.lock();
        self.write().remove_worker(worker)
    }

    /// Sets a worker's load (requests or blocks in flight, the caller's
    /// unit); `false` if the worker is unknown.
    pub fn set_load(&self, worker: WorkerId, load: u64) -> bool {
        self.read().set_load(worker, load)
    }

    /// Adds `delta` to a worker's load; `false` if the worker is unknown.
    pub fn add_load(&self, worker: WorkerId, delta: i64) -> bool {
        self.read().add_load(worker, delta)
    }

    /// Per worker and tier, how many leading blocks of the request it holds.
    pub fn overlap_scores(&self, hashes: &[SequenceHash]) -> OverlapScores {
        let mut out = OverlapScores::default();
        self.overlap_scores_into(hashes.iter().map(|h| h.current_sequence_hash()), &mut out);
        out
    }

    /// [`overlap_scores`](Self::overlap_scores) for raw 64-bit block keys
    /// (a vLLM or Dynamo request's chained hashes).
    pub fn overlap_scores_keys(&self, keys: &[BlockKey]) -> OverlapScores {
        let mut out = OverlapScores::default();
        self.overlap_scores_into(keys.iter().copied(), &mut out);
        out
    }

    /// [`overlap_scores`](Self::overlap_scores) into a reused buffer.
    pub fn overlap_scores_into(
        &self,
        keys: impl ExactSizeIterator<Item = BlockKey>,
        out: &mut OverlapScores,
    ) {
        out.scores.clear();
        out.keys.clear();
        out.keys.extend(keys);
        let index = self.read();
        score_slots(&index, &out.keys, |slot, blocks| {
            if let Some((worker, tier)) = index.owner(slot) {
                out.scores.push(WorkerOverlap {
                    worker,
                    tier,
                    blocks,
                });
            }
        });
        drop(index);
        out.scores.sort_unstable_by(|a, b| {
            b.blocks
                .cmp(&a.blocks)
                .then(a.worker.cmp(&b.worker))
                .then(a.tier.cmp(&b.tier))
        });
    }

    /// The worker holding the longest prefix of the request in any one tier;
    /// ties go to the least loaded, then to the smallest id. `None` if no
    /// worker is known.
    pub fn best_worker(&self, hashes: &[SequenceHash]) -> Option<BestWorker> {
        let keys: Vec<BlockKey> = hashes.iter().map(|h| h.current_sequence_hash()).collect();
        let index = self.read();
        let mut by_slot = vec![0u32; index.slot_count()];
        score_slots(&index, &keys, |slot, blocks| {
            by_slot[slot as usize] = blocks;
        });
        let mut best: Option<BestWorker> = None;
        index.for_each_worker(|worker, slots, load| {
            let overlap_blocks = slots
                .iter()
                .flatten()
                .map(|&slot| by_slot[slot as usize])
                .max()
                .unwrap_or(0);
            let candidate = BestWorker {
                worker,
                overlap_blocks,
                load,
            };
            let better = match &best {
                None => true,
                Some(b) => {
                    (
                        overlap_blocks,
                        std::cmp::Reverse(load),
                        std::cmp::Reverse(worker),
                    ) > (
                        b.overlap_blocks,
                        std::cmp::Reverse(b.load),
                        std::cmp::Reverse(b.worker),
                    )
                }
            };
            if better {
                best = Some(candidate);
            }
        });
        best
    }

    /// Whether `worker` holds `key` in `tier`.
    pub fn holds(&self, worker: WorkerId, tier: LogicalLayoutHandle, key: BlockKey) -> bool {
        self.read().holds(worker, tier, key)
    }

    /// A worker's stream state, blocks per tier and load.
    pub fn worker_status(&self, worker: WorkerId) -> Option<WorkerStatus> {
        self.read().status(worker)
    }

    /// Every known worker, sorted.
    pub fn workers(&self) -> Vec<WorkerId> {
        self.read().workers()
    }

    /// Counters and gauges.
    pub fn metrics(&self) -> RouterMetrics {
        self.read().metrics()
    }

    /// Heap bytes of the index.
    pub fn memory_bytes(&self) -> usize {
        self.read().memory_bytes()
    }
}

/// Walks the request's keys and calls `emit(slot, blocks)` for every slot
/// holding at least its first block, with the number of leading blocks it
/// holds. Stops as soon as no slot holds the current block.
fn score_slots(index: &ClusterIndex, keys: &[BlockKey], mut emit: impl FnMut(u32, u32)) {
    let table = index.table();
    let live = index.live();
    let mut emit_bits = |word: usize, mut bits: u64, depth: u32| {
        if depth == 0 {
            return;
        }
        while bits != 0 {
            emit(word as u32 * 64 + bits.trailing_zeros(), depth);
            bits &= bits - 1;
        }
    };
    if live.len() <= 1 {
        // Up to 64 slots: one mask lookup per block.
        let mut active = live.first().copied().unwrap_or(0);
        let mut depth = 0u32;
        // The first blocks have no block before them to prefetch them.
        for &key in keys.iter().take(PREFETCH_AHEAD) {
            table.prefetch(key);
        }
        for (i, &key) in keys.iter().enumerate() {
            if active == 0 {
                return;
            }
            if let Some(&ahead) = keys.get(i + PREFETCH_AHEAD) {
                table.prefetch(ahead);
            }
            let held = table.word(key, 0);
            emit_bits(0, active & !held, depth);
            active &= held;
            depth += 1;
        }
        emit_bits(0, active, depth);
        return;
    }
    let mut active = live.to_vec();
    let mut depth = 0u32;
    for &key in keys {
        let mut any = false;
        for (word, bits) in active.iter_mut().enumerate() {
            if *bits == 0 {
                continue;
            }
            let held = table.word(key, word as u32);
            emit_bits(word, *bits & !held, depth);
            *bits &= held;
            any |= *bits != 0;
        }
        if !any {
            return;
        }
        depth += 1;
    }
    for (word, &bits) in active.iter().enumerate() {
        emit_bits(word, bits, depth);
    }
}
