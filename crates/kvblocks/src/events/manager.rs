//! The flush side: [`EventsManager`] turns what emitters buffered into
//! positioned batches and hands them to the sinks.
//!
//! One flush at a time (a flush lock serialises them); a flush swaps the
//! emitters' buffer out under the emitters' leaf lock and then works without
//! it, so pushes never wait for a sink. Stream positions are assigned here, in
//! publish order: every published batch gets the next sequence number of the
//! manager's epoch, whatever the sinks then do with it. This module never
//! touches a block manager's locks; whoever calls a flush must not hold them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::batcher::{Batch, BatcherStats, BatchingConfig, EventBatcher};
use super::buffer::{Cursor, EventBuffer};
use super::emitter::{Barrier, EventEmitter, Pending, Shared, SnapshotTicket};
use super::policy::{EventEmissionPolicy, Filter, PowerOfTwoPolicy};
use super::protocol::{InstanceId, KvCacheEvents, KvbmCacheEvents, StreamPosition};
use super::replay::{RegisteredSet, WorkerSnapshot};
use super::sink::{BroadcastReceiver, BroadcastSink, EventSink};

/// An epoch from the wall clock: nanoseconds since the Unix epoch.
///
/// Larger after a restart as long as the clock does not step back by more
/// than the restart takes; a worker that can persist a counter should use
/// that instead ([`EventsManagerBuilder::epoch`]).
pub fn epoch_from_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64)
}

/// Counters of an events manager since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventsStats {
    /// Events buffered by emitters (after the emission policy).
    pub events_emitted: u64,
    /// Block events the emission policy dropped.
    pub events_filtered: u64,
    /// Batches published (each got a stream position).
    pub batches_published: u64,
    /// Events in those batches (a clear counts as one).
    pub events_published: u64,
    /// Batches a sink refused (each is a gap for that sink's consumers).
    pub sink_errors: u64,
    /// Batches receivers of the built-in broadcast missed by lagging.
    pub broadcast_lagged: u64,
    /// Events dropped because they were flushed after [`EventsManager::shutdown`].
    pub dropped_after_shutdown: u64,
    /// Why the batcher closed its batches.
    pub batcher: BatcherStats,
}

/// Builds an [`EventsManager`].
pub struct EventsManagerBuilder {
    instance_id: InstanceId,
    block_size: u32,
    epoch: Option<u64>,
    filter: Filter,
    batching: BatchingConfig,
    broadcast_capacity: usize,
    track_registered: bool,
    sinks: Vec<Arc<dyn EventSink>>,
}

impl Default for EventsManagerBuilder {
    fn default() -> Self {
        Self {
            instance_id: 0,
            block_size: 0,
            epoch: None,
            filter: Filter::All,
            batching: BatchingConfig::default(),
            broadcast_capacity: 64,
            track_registered: false,
            sinks: Vec::new(),
        }
    }
}

impl EventsManagerBuilder {
    /// The worker's identity, put on every batch (default 0).
    pub fn instance_id(mut self, instance_id: InstanceId) -> Self {
        self.instance_id = instance_id;
        self
    }

    /// Tokens per block, put on every batch (default 0: unknown).
    pub fn block_size(mut self, block_size: u32) -> Self {
        self.block_size = block_size;
        self
    }

    /// The epoch of this incarnation; MUST be larger than any epoch this
    /// worker used before (default [`epoch_from_clock`]).
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Emits only what `policy` keeps (default: every block).
    pub fn policy(mut self, policy: Arc<dyn EventEmissionPolicy>) -> Self {
        self.filter = Filter::Custom(policy);
        self
    }

    /// Emits only power-of-two positions ([`PowerOfTwoPolicy`]).
    pub fn power_of_two(mut self, policy: PowerOfTwoPolicy) -> Self {
        self.filter = Filter::PowerOfTwo(policy);
        self
    }

    /// When batches close (default: 1024 events or 10 ms).
    pub fn batching(mut self, config: BatchingConfig) -> Self {
        self.batching = config;
        self
    }

    /// Batches the built-in broadcast keeps for slow receivers (default 64).
    /// A batch leaves the ring as soon as every receiver has read it, so the
    /// ring holds memory only while some receiver is behind.
    pub fn broadcast_capacity(mut self, capacity: usize) -> Self {
        self.broadcast_capacity = capacity;
        self
    }

    /// Keeps a copy of the registered set built from the published batches,
    /// so [`EventsManager::snapshot`] can answer without the store (costs a
    /// hash-set update per published event; default off).
    pub fn track_registered(mut self, on: bool) -> Self {
        self.track_registered = on;
        self
    }

    /// Adds a sink (the built-in broadcast is always there).
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// The events manager.
    pub fn build(self) -> EventsManager {
        let shared = Arc::new(Shared {
            filter: self.filter,
            pending: Mutex::new(Pending::default()),
            flush_hint: self.batching.max_batch_size.get(),
            mixed: self.batching.mixed_kinds,
        });
        let broadcast = BroadcastSink::new(self.broadcast_capacity);
        let mut sinks: Vec<Arc<dyn EventSink>> = vec![Arc::new(broadcast.clone())];
        sinks.extend(self.sinks);
        let epoch = self.epoch.unwrap_or_else(epoch_from_clock);
        EventsManager {
            shared,
            broadcast,
            flush: Mutex::new(FlushState {
                batcher: EventBatcher::new(self.batching),
                outbox: Outbox {
                    instance_id: self.instance_id,
                    block_size: self.block_size,
                    next: StreamPosition { epoch, seq: 0 },
                    sinks,
                    registered: self.track_registered.then(RegisteredSet::new),
                    snapshots: HashMap::new(),
                    stats: EventsStats::default(),
                    shut_down: false,
                },
                events: EventBuffer::default(),
                barriers: Vec::new(),
            }),
        }
    }
}

/// What a flush publishes to, separate from the batcher so both can be
/// borrowed at once.
struct Outbox {
    instance_id: InstanceId,
    block_size: u32,
    next: StreamPosition,
    sinks: Vec<Arc<dyn EventSink>>,
    registered: Option<RegisteredSet>,
    snapshots: HashMap<SnapshotTicket, WorkerSnapshot>,
    stats: EventsStats,
    shut_down: bool,
}

impl Outbox {
    fn publish(&mut self, batch: Batch) {
        let events = match batch.events {
            KvCacheEvents::Clear => 1,
            ref other => other.len() as u64,
        };
        if self.shut_down {
            self.stats.dropped_after_shutdown += events.max(1);
            return;
        }
        let batch = Arc::new(KvbmCacheEvents {
            events: batch.events,
            instance_id: self.instance_id,
            tier: batch.tier,
            block_size: self.block_size,
            position: self.next,
        });
        self.next = self.next.next();
        self.stats.batches_published += 1;
        self.stats.events_published += events;
        if let Some(registered) = &mut self.registered {
            // Our own stream: positions always fit; content errors would
            // mean the store reported a change twice, which the store's
            // tests check, so the set semantics are kept either way.
            let _ = registered.apply(&batch);
        }
        for sink in &self.sinks {
            if sink.publish(&batch).is_err() {
                self.stats.sink_errors += 1;
            }
        }
    }

    fn complete(&mut self, barrier: Barrier) {
        self.snapshots.insert(
            barrier.ticket,
            WorkerSnapshot {
                instance_id: self.instance_id,
                block_size: self.block_size,
                position: self.next,
                tiers: barrier.tiers,
            },
        );
    }
}

struct FlushState {
    batcher: EventBatcher,
    outbox: Outbox,
    /// The emitters' previous buffer, kept for its capacity.
    events: EventBuffer,
    barriers: Vec<Barrier>,
}

/// Turns a worker's buffered events into a positioned, batched stream
/// (kvbm-logical's `EventsManager` plus its batcher and publisher, without a
/// runtime).
///
/// The store pushes through [`emitter`](Self::emitter) handles; the
/// application calls [`flush`](Self::flush) regularly (its serving loop's
/// tick, say every millisecond) with the current time, which closes batches
/// whose window has passed and publishes them to every sink. Receivers of the
/// built-in broadcast come from [`subscribe`](Self::subscribe).
///
/// The batching window starts when a flush first sees an event, not when it
/// was pushed, so an event waits at most one flush interval plus the window.
pub struct EventsManager {
    shared: Arc<Shared>,
    broadcast: BroadcastSink,
    flush: Mutex<FlushState>,
}

impl EventsManager {
    /// A builder with the defaults (every block, 1024 events or 10 ms).
    pub fn builder() -> EventsManagerBuilder {
        EventsManagerBuilder::default()
    }

    /// A handle for the store to push events with.
    pub fn emitter(&self) -> EventEmitter {
        EventEmitter::new(Arc::clone(&self.shared))
    }

    /// A receiver of every batch published from now on.
    pub fn subscribe(&self) -> BroadcastReceiver {
        self.broadcast.subscribe()
    }

    /// Adds a sink; it receives the batches published from now on.
    pub fn add_sink(&self, sink: Arc<dyn EventSink>) {
        self.flush.lock().outbox.sinks.push(sink);
    }

    /// The position the next published batch will get.
    pub fn next_position(&self) -> StreamPosition {
        self.flush.lock().outbox.next
    }

    /// The worker identity on every batch.
    pub fn instance_id(&self) -> InstanceId {
        self.flush.lock().outbox.instance_id
    }

    /// Publishes every batch that is full or whose window has passed at `now`,
    /// and returns how many were published. Blocks while another flush runs;
    /// never call it holding a block manager's lock.
    pub fn flush(&self, now: Instant) -> usize {
        let mut state = self.flush.lock();
        self.flush_locked(&mut state, now, false)
    }

    /// [`flush`](Self::flush), unless another flush is running (then `None`
    /// at once: that flush or the next one publishes these events).
    pub fn try_flush(&self, now: Instant) -> Option<usize> {
        let mut state = self.flush.try_lock()?;
        Some(self.flush_locked(&mut state, now, false))
    }

    /// Publishes everything buffered, closing the open batch whatever its age.
    pub fn flush_all(&self) -> usize {
        let mut state = self.flush.lock();
        self.flush_locked(&mut state, Instant::now(), true)
    }

    /// When the open batch must be published, if one is open (for a caller
    /// that sleeps until then).
    pub fn deadline(&self) -> Option<Instant> {
        self.flush.lock().batcher.deadline()
    }

    /// Publishes everything, then a [`KvCacheEvents::Shutdown`] batch, and
    /// closes the built-in broadcast. Later events are counted and dropped.
    pub fn shutdown(&self) {
        let mut state = self.flush.lock();
        self.flush_locked(&mut state, Instant::now(), true);
        if !state.outbox.shut_down {
            let tier = crate::LogicalLayoutHandle::G1;
            state.outbox.publish(Batch {
                tier,
                events: KvCacheEvents::Shutdown,
            });
            state.outbox.shut_down = true;
            self.broadcast.close();
        }
    }

    /// Flushes and returns the snapshot a store requested with
    /// [`EventEmitter::snapshot_barrier`], with the position it is valid at
    /// (`None` for an unknown or already taken ticket).
    pub fn take_snapshot(&self, ticket: SnapshotTicket) -> Option<WorkerSnapshot> {
        let mut state = self.flush.lock();
        self.flush_locked(&mut state, Instant::now(), true);
        state.outbox.snapshots.remove(&ticket)
    }

    /// Flushes and returns the registered set the published stream describes,
    /// valid at the next position; `None` unless built with
    /// [`track_registered`](EventsManagerBuilder::track_registered).
    pub fn snapshot(&self) -> Option<WorkerSnapshot> {
        let mut state = self.flush.lock();
        self.flush_locked(&mut state, Instant::now(), true);
        let outbox = &state.outbox;
        let registered = outbox.registered.as_ref()?;
        Some(WorkerSnapshot {
            instance_id: outbox.instance_id,
            block_size: outbox.block_size,
            position: outbox.next,
            tiers: registered.tier_snapshots(),
        })
    }

    /// Counters since the manager was built.
    pub fn stats(&self) -> EventsStats {
        let (emitted, filtered) = {
            let pending = self.shared.pending.lock();
            (pending.emitted, pending.filtered)
        };
        let state = self.flush.lock();
        EventsStats {
            events_emitted: emitted,
            events_filtered: filtered,
            broadcast_lagged: self.broadcast.lagged_batches(),
            batcher: state.batcher.stats(),
            ..state.outbox.stats
        }
    }

    fn flush_locked(&self, state: &mut FlushState, now: Instant, all: bool) -> usize {
        let before = state.outbox.stats.batches_published;
        {
            let mut pending = self.shared.pending.lock();
            std::mem::swap(&mut pending.events, &mut state.events);
            std::mem::swap(&mut pending.barriers, &mut state.barriers);
        }
        let FlushState {
            batcher,
            outbox,
            events,
            barriers,
        } = state;
        batcher.poll(now, &mut |batch| outbox.publish(batch));
        batcher.expect(events.len());
        // The common case with mixed batches: one run, no barrier. Its
        // vector becomes the batch, uncopied, if no batch is open.
        if barriers.is_empty() {
            // Room for as many as this flush found, for the next one.
            let room = events.len().clamp(64, self.shared.flush_hint.max(64));
            if let Some((tier, changes)) = events.take_mixed(room) {
                batcher.push_changes(tier, changes, now, &mut |batch| outbox.publish(batch));
            }
        }
        let mut cursor = Cursor::default();
        for barrier in barriers.drain(..) {
            events.for_each_run(&mut cursor, barrier.at, |tier, run| {
                batcher.push_run(tier, run, now, &mut |batch| outbox.publish(batch))
            });
            batcher.flush(&mut |batch| outbox.publish(batch));
            outbox.complete(barrier);
        }
        events.for_each_run(&mut cursor, usize::MAX, |tier, run| {
            batcher.push_run(tier, run, now, &mut |batch| outbox.publish(batch))
        });
        events.clear();
        if all {
            batcher.flush(&mut |batch| outbox.publish(batch));
        } else {
            batcher.poll(now, &mut |batch| outbox.publish(batch));
        }
        (outbox.stats.batches_published - before) as usize
    }
}

impl std::fmt::Debug for EventsManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsManager")
            .field("policy", &self.shared.filter)
            .field("next_position", &self.next_position())
            .finish()
    }
}
