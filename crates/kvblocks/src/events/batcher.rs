//! The batcher: turns a stream of single events into batches of one tier:
//! by default stores and removals together in their order (a batch that
//! holds only one kind closes as that kind), or, with
//! [`with_mixed_kinds(false)`](BatchingConfig::with_mixed_kinds), of one
//! kind each, as kvbm-logical batches.
//!
//! A batch is closed when it reaches the size limit, when an event of another
//! kind (one-kind batches only) or tier arrives, before and after a clear, or
//! when its window has passed. One-kind batches are what kvbm-logical's
//! format carries; a serving loop alternates evictions and registrations, so
//! they close every ~16 events, each with its allocations and its publish,
//! where a mixed batch runs to the size limit (BENCHMARKS.md, "Event
//! emission", has what that costs). The core crate has no
//! runtime and no timer, so time is whatever `Instant` the caller passes in:
//! the deadline is checked when an event is pushed and when the caller polls.
//! This module never sends anything; closed batches go to the caller's
//! closure, which assigns stream positions.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use super::buffer::RunEvents;
use super::protocol::{BlockChange, EventKind, KvCacheEvent, KvCacheEvents, StoredBlock};
use crate::{LogicalLayoutHandle, SequenceHash};

/// When a batch is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchingConfig {
    /// Longest time a batch stays open after its first event (default 10 ms).
    pub window: Duration,
    /// Most events in a batch (default 1024).
    pub max_batch_size: NonZeroUsize,
    /// Whether stores and removals of one tier share a batch
    /// ([`KvCacheEvents::Mixed`] when it holds both; a batch that holds one
    /// kind still closes as `Create` or `Remove`) instead of closing it at
    /// each switch. Default `true`: a serving loop alternates evictions and
    /// registrations, and one-kind batches cost it about 4 points more
    /// (BENCHMARKS.md, "Event emission"). `false` gives kvbm-logical's
    /// batching exactly; either way, `kvblocks_wire::kvbm::compat_frames`
    /// writes any batch as kvbm-logical's own frames.
    pub mixed_kinds: bool,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(10),
            max_batch_size: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            mixed_kinds: true,
        }
    }
}

impl BatchingConfig {
    /// This configuration with another window.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// This configuration with another size limit.
    pub fn with_max_size(mut self, size: NonZeroUsize) -> Self {
        self.max_batch_size = size;
        self
    }

    /// This configuration with stores and removals of one tier in one batch
    /// (`true`) or in batches of one kind (`false`).
    pub fn with_mixed_kinds(mut self, mixed: bool) -> Self {
        self.mixed_kinds = mixed;
        self
    }

    /// The kind of batch an event of `kind` goes into.
    fn batch_kind(&self, kind: EventKind) -> EventKind {
        match kind {
            EventKind::Create | EventKind::Remove if self.mixed_kinds => EventKind::Mixed,
            other => other,
        }
    }
}

/// A closed batch, before it gets its stream position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The tier of every event in it.
    pub tier: LogicalLayoutHandle,
    /// The events.
    pub events: KvCacheEvents,
}

/// Why batches were closed, counted since the batcher was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatcherStats {
    /// Closed because they reached the size limit.
    pub by_size: u64,
    /// Closed because their window passed.
    pub by_deadline: u64,
    /// Closed because an event of another kind (one-kind batches) or tier
    /// arrived.
    pub by_switch: u64,
    /// Closed by an explicit flush.
    pub by_flush: u64,
    /// Clear batches (always closed at once).
    pub clears: u64,
}

struct Open {
    kind: EventKind,
    tier: LogicalLayoutHandle,
    deadline: Instant,
    creates: Vec<StoredBlock>,
    removes: Vec<SequenceHash>,
    changes: Vec<BlockChange>,
}

impl Open {
    fn len(&self) -> usize {
        self.creates.len() + self.removes.len() + self.changes.len()
    }
}

/// Groups events into [`Batch`]es (kvbm-logical's `EventBatcher`, without the
/// async stream: the caller drives it).
///
/// ```
/// use std::time::{Duration, Instant};
/// use kvblocks::events::{BatchingConfig, EventBatcher, KvCacheEvent, KvCacheEvents, StoredBlock};
/// use kvblocks::{LogicalLayoutHandle::G1, SequenceHash};
///
/// let mut batcher = EventBatcher::new(BatchingConfig::default().with_window(Duration::from_millis(5)));
/// let t0 = Instant::now();
/// let mut out = Vec::new();
/// let block = StoredBlock::orphan(SequenceHash::root(1));
/// batcher.push(KvCacheEvent::Create { block, tier: G1 }, t0, &mut |b| out.push(b));
/// assert!(out.is_empty(), "still inside its window");
/// batcher.poll(t0 + Duration::from_millis(5), &mut |b| out.push(b));
/// assert_eq!(out[0].events, KvCacheEvents::Create(vec![block]));
/// ```
pub struct EventBatcher {
    config: BatchingConfig,
    open: Option<Open>,
    stats: BatcherStats,
    /// Events the caller said it is about to push (see `expect`).
    coming: usize,
}

impl EventBatcher {
    /// An empty batcher.
    pub fn new(config: BatchingConfig) -> Self {
        Self {
            config,
            open: None,
            stats: BatcherStats::default(),
            coming: 0,
        }
    }

    /// Tells the batcher that `events` block events follow, so a mixed
    /// batch is allocated once at the size it will reach instead of growing
    /// run by run (a one-kind batch takes its run's size exactly anyway).
    pub(crate) fn expect(&mut self, events: usize) {
        self.coming = events;
    }

    /// The configuration.
    pub fn config(&self) -> BatchingConfig {
        self.config
    }

    /// Events waiting in the open batch.
    pub fn pending(&self) -> usize {
        self.open.as_ref().map_or(0, Open::len)
    }

    /// When the open batch must be closed, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.open.as_ref().map(|open| open.deadline)
    }

    /// Counters of why batches were closed.
    pub fn stats(&self) -> BatcherStats {
        self.stats
    }

    /// Adds one event at time `now`, handing every batch this closes to `out`.
    pub fn push(&mut self, event: KvCacheEvent, now: Instant, out: &mut impl FnMut(Batch)) {
        self.poll(now, out);
        let (kind, tier) = (self.config.batch_kind(event.kind()), event.tier());
        if let Some(open) = &self.open {
            if open.kind != kind || open.tier != tier {
                self.stats.by_switch += 1;
                self.close(out);
            }
        }
        match event {
            KvCacheEvent::Clear { tier } => {
                self.stats.clears += 1;
                out(Batch {
                    tier,
                    events: KvCacheEvents::Clear,
                });
                return;
            }
            KvCacheEvent::Create { block, .. } => {
                let open = self.open_for(kind, tier, now, 1);
                match kind {
                    EventKind::Mixed => open.changes.push(BlockChange::Stored(block)),
                    _ => open.creates.push(block),
                }
            }
            KvCacheEvent::Remove { hash, .. } => {
                let open = self.open_for(kind, tier, now, 1);
                match kind {
                    EventKind::Mixed => open.changes.push(BlockChange::Removed(hash)),
                    _ => open.removes.push(hash),
                }
            }
        }
        if self.pending() >= self.config.max_batch_size.get() {
            self.stats.by_size += 1;
            self.close(out);
        }
    }

    /// Closes the open batch if its window has passed at `now`.
    pub fn poll(&mut self, now: Instant, out: &mut impl FnMut(Batch)) {
        if self.open.as_ref().is_some_and(|open| now >= open.deadline) {
            self.stats.by_deadline += 1;
            self.close(out);
        }
    }

    /// Closes the open batch now, whatever its age.
    pub fn flush(&mut self, out: &mut impl FnMut(Batch)) {
        if self.open.is_some() {
            self.stats.by_flush += 1;
            self.close(out);
        }
    }

    /// The open batch for `kind` and `tier` (opened at `now` if none is),
    /// with room reserved for `expected` more events.
    fn open_for(
        &mut self,
        kind: EventKind,
        tier: LogicalLayoutHandle,
        now: Instant,
        expected: usize,
    ) -> &mut Open {
        let window = self.config.window;
        let open = self.open.get_or_insert_with(|| Open {
            kind,
            tier,
            deadline: now + window,
            creates: Vec::new(),
            removes: Vec::new(),
            changes: Vec::new(),
        });
        match kind {
            EventKind::Create => open.creates.reserve(expected),
            EventKind::Remove => open.removes.reserve(expected),
            EventKind::Mixed => open.changes.reserve(expected),
            EventKind::Clear => {}
        }
        open
    }

    /// Adds `events` in order at time `now`, like [`push`](Self::push) for
    /// each, but a run of one kind and tier at a time.
    pub fn push_all(&mut self, events: &[KvCacheEvent], now: Instant, out: &mut impl FnMut(Batch)) {
        self.poll(now, out);
        let mut rest = events;
        while let Some(first) = rest.first() {
            let (kind, tier) = (first.kind(), first.tier());
            let run = rest
                .iter()
                .take_while(|e| e.kind() == kind && e.tier() == tier)
                .count();
            let (run, tail) = rest.split_at(run);
            rest = tail;
            match kind {
                // A single event is never of the mixed kind.
                EventKind::Clear | EventKind::Mixed => {
                    for &event in run {
                        self.push(event, now, out);
                    }
                }
                EventKind::Create => {
                    let blocks: Vec<_> = run
                        .iter()
                        .filter_map(|e| match *e {
                            KvCacheEvent::Create { block, .. } => Some(block),
                            _ => None,
                        })
                        .collect();
                    self.push_run(tier, RunEvents::Create(&blocks), now, out);
                }
                EventKind::Remove => {
                    let hashes: Vec<_> = run
                        .iter()
                        .filter_map(|e| match *e {
                            KvCacheEvent::Remove { hash, .. } => Some(hash),
                            _ => None,
                        })
                        .collect();
                    self.push_run(tier, RunEvents::Remove(&hashes), now, out);
                }
            }
        }
    }

    /// Adds one run of events of one kind in `tier` at time `now`, like
    /// [`push`](Self::push) for each, copying the run a slice at a time.
    /// The open batch's deadline is not checked: [`poll`](Self::poll) first
    /// (once for all the runs pushed at one `now`).
    pub(crate) fn push_run(
        &mut self,
        tier: LogicalLayoutHandle,
        run: RunEvents<'_>,
        now: Instant,
        out: &mut impl FnMut(Batch),
    ) {
        let mixed = self.config.mixed_kinds;
        match run {
            RunEvents::Clear => self.push(KvCacheEvent::Clear { tier }, now, out),
            RunEvents::Create(blocks) if mixed => {
                self.fill(EventKind::Mixed, tier, blocks, now, out, |open, blocks| {
                    open.changes
                        .extend(blocks.iter().map(|&block| BlockChange::Stored(block)))
                })
            }
            RunEvents::Create(blocks) => {
                self.fill(EventKind::Create, tier, blocks, now, out, |open, blocks| {
                    open.creates.extend_from_slice(blocks)
                })
            }
            RunEvents::Remove(hashes) if mixed => {
                self.fill(EventKind::Mixed, tier, hashes, now, out, |open, hashes| {
                    open.changes
                        .extend(hashes.iter().map(|&hash| BlockChange::Removed(hash)))
                })
            }
            RunEvents::Remove(hashes) => {
                self.fill(EventKind::Remove, tier, hashes, now, out, |open, hashes| {
                    open.removes.extend_from_slice(hashes)
                })
            }
            RunEvents::Mixed(changes) if mixed => self.fill(
                EventKind::Mixed,
                tier,
                changes,
                now,
                out,
                |open, changes| open.changes.extend_from_slice(changes),
            ),
            RunEvents::Mixed(changes) => {
                // A buffer of mixed runs feeding one-kind batches: the runs
                // of one kind within it, in order.
                for run in changes.chunk_by(|a, b| {
                    matches!(a, BlockChange::Stored(_)) == matches!(b, BlockChange::Stored(_))
                }) {
                    match run[0] {
                        BlockChange::Stored(_) => {
                            let blocks = super::protocol::stored_blocks(run);
                            self.push_run(tier, RunEvents::Create(&blocks), now, out);
                        }
                        BlockChange::Removed(_) => {
                            let hashes = super::protocol::removed_hashes(run);
                            self.push_run(tier, RunEvents::Remove(&hashes), now, out);
                        }
                    }
                }
            }
        }
    }

    /// Adds `changes` (stores and removals of `tier`, in order) at time
    /// `now`, like [`push_run`](Self::push_run) with their slice, but when
    /// no batch is open and they fit in one, the vector itself becomes the
    /// open batch: nothing is copied (a flush of the emitters' buffer in the
    /// common case, one tier and no barrier). With one-kind batches, the
    /// changes are copied run by run.
    pub(crate) fn push_changes(
        &mut self,
        tier: LogicalLayoutHandle,
        changes: Vec<BlockChange>,
        now: Instant,
        out: &mut impl FnMut(Batch),
    ) {
        let max = self.config.max_batch_size.get();
        if !self.config.mixed_kinds
            || self.open.is_some()
            || changes.is_empty()
            || changes.len() > max
        {
            self.push_run(tier, RunEvents::Mixed(&changes), now, out);
            return;
        }
        self.coming = self.coming.saturating_sub(changes.len());
        self.open = Some(Open {
            kind: EventKind::Mixed,
            tier,
            deadline: now + self.config.window,
            creates: Vec::new(),
            removes: Vec::new(),
            changes,
        });
        if self.pending() >= max {
            self.stats.by_size += 1;
            self.close(out);
        }
    }

    /// Copies `run` (events for a batch of `kind` in `tier`) into open
    /// batches, closing them on a switch and on the size limit; `extend`
    /// adds a piece of the run to the open batch.
    fn fill<T: Copy>(
        &mut self,
        kind: EventKind,
        tier: LogicalLayoutHandle,
        mut run: &[T],
        now: Instant,
        out: &mut impl FnMut(Batch),
        extend: fn(&mut Open, &[T]),
    ) {
        if run.is_empty() {
            return;
        }
        if let Some(open) = &self.open {
            if open.kind != kind || open.tier != tier {
                self.stats.by_switch += 1;
                self.close(out);
            }
        }
        let max = self.config.max_batch_size.get();
        while !run.is_empty() {
            let room = max - self.pending();
            let (taken, left) = run.split_at(room.min(run.len()));
            run = left;
            let expected = match kind {
                EventKind::Mixed => taken.len().max(self.coming.min(room)),
                _ => taken.len(),
            };
            self.coming = self.coming.saturating_sub(taken.len());
            let open = self.open_for(kind, tier, now, expected);
            extend(open, taken);
            if self.pending() >= max {
                self.stats.by_size += 1;
                self.close(out);
            }
        }
    }

    fn close(&mut self, out: &mut impl FnMut(Batch)) {
        let Some(open) = self.open.take() else {
            return;
        };
        let events = match open.kind {
            EventKind::Create => KvCacheEvents::Create(open.creates),
            EventKind::Remove => KvCacheEvents::Remove(open.removes),
            // One kind only: closed as that kind (the shape kvbm-logical's
            // consumers know).
            EventKind::Mixed => KvCacheEvents::of_one_kind(&open.changes)
                .unwrap_or(KvCacheEvents::Mixed(open.changes)),
            EventKind::Clear => KvCacheEvents::Clear,
        };
        out(Batch {
            tier: open.tier,
            events,
        });
    }
}

impl std::fmt::Debug for EventBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBatcher")
            .field("config", &self.config)
            .field("pending", &self.pending())
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogicalLayoutHandle::{G1, G2};

    fn create(position: u64) -> KvCacheEvent {
        KvCacheEvent::Create {
            block: StoredBlock::orphan(SequenceHash::new(position * 31 + 7, Some(3), position)),
            tier: G1,
        }
    }

    fn remove(position: u64, tier: LogicalLayoutHandle) -> KvCacheEvent {
        KvCacheEvent::Remove {
            hash: SequenceHash::new(position * 31 + 7, Some(3), position),
            tier,
        }
    }

    fn run(config: BatchingConfig, events: &[(KvCacheEvent, u64)]) -> Vec<Batch> {
        let t0 = Instant::now();
        let mut batcher = EventBatcher::new(config);
        let mut out = Vec::new();
        for (event, ms) in events {
            batcher.push(*event, t0 + Duration::from_millis(*ms), &mut |b| {
                out.push(b)
            });
        }
        batcher.flush(&mut |b| out.push(b));
        out
    }

    #[test]
    fn events_keep_the_order_they_were_pushed_in() {
        let out = run(
            BatchingConfig::default().with_mixed_kinds(false),
            &[(create(10), 0), (create(5), 0), (create(15), 0)],
        );
        let KvCacheEvents::Create(blocks) = &out[0].events else {
            panic!("expected creates, got {out:?}");
        };
        let positions: Vec<_> = blocks.iter().map(|b| b.hash.position()).collect();
        assert_eq!(positions, [10, 5, 15]);
    }

    proptest::proptest! {
        /// `push_all` closes exactly the batches `push` one by one would.
        #[test]
        fn pushing_a_slice_batches_like_pushing_one_by_one(
            kinds in proptest::collection::vec(0..5u8, 0..60),
            max in 1..7usize,
            mixed in proptest::prelude::any::<bool>(),
        ) {
            let events: Vec<_> = kinds.iter().enumerate().map(|(i, k)| match k {
                0 | 1 => create(i as u64),
                2 => remove(i as u64, G1),
                3 => remove(i as u64, G2),
                _ => KvCacheEvent::Clear { tier: G2 },
            }).collect();
            let config = BatchingConfig::default()
                .with_max_size(NonZeroUsize::new(max).unwrap())
                .with_mixed_kinds(mixed);
            let now = Instant::now();
            let (mut one, mut all) = (Vec::new(), Vec::new());
            let mut a = EventBatcher::new(config);
            for &event in &events {
                a.push(event, now, &mut |b| one.push(b));
            }
            a.flush(&mut |b| one.push(b));
            let mut b = EventBatcher::new(config);
            b.push_all(&events, now, &mut |batch| all.push(batch));
            b.flush(&mut |batch| all.push(batch));
            proptest::prop_assert_eq!(one, all);
            proptest::prop_assert_eq!(a.stats(), b.stats());
        }
    }

    proptest::proptest! {
        /// Handing a vector of changes over (`push_changes`, uncopied when
        /// no batch is open) closes exactly the batches that pushing its
        /// events one by one would, whatever was pushed before, with mixed
        /// and with one-kind batches.
        #[test]
        fn handing_changes_over_batches_like_pushing_one_by_one(
            before in proptest::collection::vec(0..3u8, 0..6),
            kinds in proptest::collection::vec(proptest::prelude::any::<bool>(), 0..40),
            max in 1..12usize,
            mixed in proptest::prelude::any::<bool>(),
        ) {
            let earlier: Vec<_> = before.iter().enumerate().map(|(i, k)| match k {
                0 => create(100 + i as u64),
                1 => remove(100 + i as u64, G1),
                _ => remove(100 + i as u64, G2),
            }).collect();
            let changes: Vec<_> = kinds.iter().enumerate().map(|(i, &stored)| {
                let hash = SequenceHash::new(i as u64 * 31 + 7, Some(3), i as u64);
                if stored {
                    BlockChange::Stored(StoredBlock::orphan(hash))
                } else {
                    BlockChange::Removed(hash)
                }
            }).collect();
            let config = BatchingConfig::default()
                .with_max_size(NonZeroUsize::new(max).unwrap())
                .with_mixed_kinds(mixed);
            let now = Instant::now();
            let (mut one, mut handed) = (Vec::new(), Vec::new());
            let mut a = EventBatcher::new(config);
            for &event in &earlier {
                a.push(event, now, &mut |b| one.push(b));
            }
            for change in &changes {
                let event = match *change {
                    BlockChange::Stored(block) => KvCacheEvent::Create { block, tier: G1 },
                    BlockChange::Removed(hash) => KvCacheEvent::Remove { hash, tier: G1 },
                };
                a.push(event, now, &mut |b| one.push(b));
            }
            a.flush(&mut |b| one.push(b));
            let mut b = EventBatcher::new(config);
            for &event in &earlier {
                b.push(event, now, &mut |batch| handed.push(batch));
            }
            b.push_changes(G1, changes, now, &mut |batch| handed.push(batch));
            b.flush(&mut |batch| handed.push(batch));
            proptest::prop_assert_eq!(one, handed);
        }
    }

    #[test]
    fn a_vector_handed_to_an_idle_batcher_becomes_the_batch_uncopied() {
        let config = BatchingConfig::default().with_max_size(NonZeroUsize::new(4).unwrap());
        let mut batcher = EventBatcher::new(config);
        let now = Instant::now();
        let changes: Vec<_> = (0..4)
            .map(|p| BlockChange::Removed(SequenceHash::root(p)))
            .collect();
        let address = changes.as_ptr();
        let mut out = Vec::new();
        batcher.push_changes(G1, changes, now, &mut |b| out.push(b));
        let KvCacheEvents::Remove(hashes) = &out[0].events else {
            panic!("one kind closes as that kind: {out:?}");
        };
        assert_eq!((out.len(), hashes.len()), (1, 4), "closed by size");
        assert_eq!(batcher.stats().by_size, 1);

        let stored = BlockChange::Stored(StoredBlock::orphan(SequenceHash::root(9)));
        let mixed = vec![stored, BlockChange::Removed(SequenceHash::root(1))];
        let address_mixed = mixed.as_ptr();
        batcher.push_changes(G1, mixed, now, &mut |b| out.push(b));
        batcher.flush(&mut |b| out.push(b));
        let KvCacheEvents::Mixed(changes) = &out[1].events else {
            panic!("expected a mixed batch: {out:?}");
        };
        assert_eq!(changes.as_ptr(), address_mixed, "the vector itself");
        assert_ne!(address, address_mixed);
    }

    #[test]
    fn a_kind_or_tier_switch_closes_the_batch() {
        let out = run(
            BatchingConfig::default().with_mixed_kinds(false),
            &[
                (create(1), 0),
                (create(2), 0),
                (remove(5, G1), 0),
                (remove(6, G2), 0),
                (create(3), 0),
            ],
        );
        let lens: Vec<_> = out.iter().map(|b| (b.tier, b.events.len())).collect();
        assert_eq!(lens, [(G1, 2), (G1, 1), (G2, 1), (G1, 1)]);
    }

    #[test]
    fn mixed_batches_keep_stores_and_removals_in_order_and_close_on_a_tier_switch() {
        let config = BatchingConfig::default().with_mixed_kinds(true);
        let out = run(
            config,
            &[
                (create(1), 0),
                (remove(5, G1), 0),
                (create(2), 0),
                (remove(6, G2), 0),
                (KvCacheEvent::Clear { tier: G2 }, 0),
                (create(3), 0),
            ],
        );
        let hash = |p: u64| SequenceHash::new(p * 31 + 7, Some(3), p);
        let stored = |p: u64| BlockChange::Stored(StoredBlock::orphan(hash(p)));
        assert_eq!(
            out,
            [
                Batch {
                    tier: G1,
                    events: KvCacheEvents::Mixed(vec![
                        stored(1),
                        BlockChange::Removed(hash(5)),
                        stored(2)
                    ]),
                },
                // One kind only: closed as that kind.
                Batch {
                    tier: G2,
                    events: KvCacheEvents::Remove(vec![hash(6)]),
                },
                Batch {
                    tier: G2,
                    events: KvCacheEvents::Clear,
                },
                Batch {
                    tier: G1,
                    events: KvCacheEvents::Create(vec![StoredBlock::orphan(hash(3))]),
                },
            ]
        );
    }

    #[test]
    fn a_run_pushed_after_an_announcement_fills_one_allocation() {
        let config = BatchingConfig::default().with_mixed_kinds(true);
        let mut batcher = EventBatcher::new(config);
        let now = Instant::now();
        let blocks: Vec<_> = (0..40)
            .map(|p| StoredBlock::orphan(SequenceHash::root(p)))
            .collect();
        let hashes: Vec<_> = (100..140).map(SequenceHash::root).collect();
        let mut out = Vec::new();
        batcher.expect(80);
        batcher.push_run(G1, RunEvents::Create(&blocks), now, &mut |b| out.push(b));
        let reserved = batcher.open.as_ref().map(|open| open.changes.capacity());
        batcher.push_run(G1, RunEvents::Remove(&hashes), now, &mut |b| out.push(b));
        batcher.flush(&mut |b| out.push(b));
        assert_eq!(reserved, Some(80), "the first run reserved for both");
        let KvCacheEvents::Mixed(changes) = &out[0].events else {
            panic!("expected one mixed batch, got {out:?}");
        };
        assert_eq!((out.len(), changes.len(), changes.capacity()), (1, 80, 80));
    }

    #[test]
    fn the_size_limit_closes_the_batch() {
        let config = BatchingConfig::default().with_max_size(NonZeroUsize::new(3).unwrap());
        let events: Vec<_> = (1..=5).map(|p| (create(p), 0)).collect();
        let out = run(config, &events);
        let lens: Vec<_> = out.iter().map(|b| b.events.len()).collect();
        assert_eq!(lens, [3, 2]);
    }

    #[test]
    fn the_window_closes_the_batch_on_push_and_on_poll() {
        let config = BatchingConfig::default().with_window(Duration::from_millis(10));
        let out = run(config, &[(create(1), 0), (create(2), 9), (create(3), 10)]);
        let lens: Vec<_> = out.iter().map(|b| b.events.len()).collect();
        assert_eq!(lens, [2, 1], "the third event arrives after the window");

        let t0 = Instant::now();
        let mut batcher = EventBatcher::new(config);
        let mut out = Vec::new();
        batcher.push(create(1), t0, &mut |b| out.push(b));
        batcher.poll(t0 + Duration::from_millis(9), &mut |b| out.push(b));
        assert!(out.is_empty());
        assert_eq!(batcher.deadline(), Some(t0 + Duration::from_millis(10)));
        batcher.poll(t0 + Duration::from_millis(10), &mut |b| out.push(b));
        assert_eq!(out.len(), 1);
        assert_eq!(batcher.stats().by_deadline, 1);
        assert_eq!(batcher.pending(), 0);
    }

    #[test]
    fn a_clear_closes_the_open_batch_and_stands_alone() {
        let out = run(
            BatchingConfig::default().with_mixed_kinds(false),
            &[
                (create(1), 0),
                (KvCacheEvent::Clear { tier: G1 }, 0),
                (create(2), 0),
            ],
        );
        let kinds: Vec<_> = out.iter().map(|b| b.events.clone()).collect();
        assert!(matches!(kinds[0], KvCacheEvents::Create(ref v) if v.len() == 1));
        assert_eq!(kinds[1], KvCacheEvents::Clear);
        assert!(matches!(kinds[2], KvCacheEvents::Create(ref v) if v.len() == 1));
    }
}
