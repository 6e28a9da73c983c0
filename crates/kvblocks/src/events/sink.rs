//! Where published batches go: the [`EventSink`] trait and the in-process
//! [`BroadcastSink`].
//!
//! A sink receives every batch, in stream order, from the events manager's
//! flush (never under a caller's lock). The broadcast sink keeps the last
//! `capacity` batches in a ring; a receiver that falls further behind is told
//! how many batches it missed ([`RecvError::Lagged`]) and the sink counts
//! them, so loss is never silent. This module never batches or filters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::protocol::KvbmCacheEvents;

/// A batch a sink could not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The sink's buffer is full and the batch was dropped.
    #[error("sink full: batch dropped")]
    Full,
    /// The sink was closed.
    #[error("sink closed")]
    Closed,
    /// Anything else (a transport error, say).
    #[error("sink failed: {0}")]
    Failed(String),
}

/// A destination for published batches.
///
/// # Contract
///
/// The events manager calls [`publish`](Self::publish) once per batch, in
/// stream order, from one thread at a time and never while a block manager's
/// lock is held. An implementation MUST NOT call back into the same events
/// manager's flush (it would deadlock) and SHOULD return quickly (a slow sink
/// delays every other sink, not the serving loop). An error is counted by the
/// manager (`EventsStats::sink_errors`); the consumer then sees a gap in the
/// stream positions and resynchronises.
pub trait EventSink: Send + Sync {
    /// Takes one batch.
    fn publish(&self, batch: &Arc<KvbmCacheEvents>) -> Result<(), SinkError>;
}

/// Why a receiver returned no batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// No batch yet (`try_recv`) or none before the timeout (`recv_timeout`).
    #[error("no batch available")]
    Empty,
    /// The receiver fell more than the ring's capacity behind: `missed`
    /// batches are gone. The next call returns the oldest batch still held.
    #[error("receiver lagged: {missed} batches missed")]
    Lagged {
        /// Batches this receiver will never see.
        missed: u64,
    },
    /// The sink was closed and every batch has been received.
    #[error("sink closed")]
    Closed,
}

struct Ring {
    batches: VecDeque<Arc<KvbmCacheEvents>>,
    /// Index (counting every batch ever published) of `batches[0]`.
    first: u64,
    closed: bool,
}

struct Shared {
    ring: Mutex<Ring>,
    ready: Condvar,
    capacity: usize,
    lagged: AtomicU64,
}

/// An in-process broadcast of batches to any number of receivers.
///
/// ```
/// use std::sync::Arc;
/// use kvblocks::events::{BroadcastSink, EventSink, KvCacheEvents, KvbmCacheEvents, RecvError, StreamPosition};
/// use kvblocks::LogicalLayoutHandle;
///
/// let sink = BroadcastSink::new(1);
/// let mut rx = sink.subscribe();
/// let batch = |seq| Arc::new(KvbmCacheEvents {
///     events: KvCacheEvents::Clear, instance_id: 1, tier: LogicalLayoutHandle::G1,
///     block_size: 16, position: StreamPosition { epoch: 1, seq },
/// });
/// sink.publish(&batch(0))?;
/// sink.publish(&batch(1))?;
/// assert_eq!(rx.try_recv(), Err(RecvError::Lagged { missed: 1 }), "lag is reported");
/// assert_eq!(rx.try_recv()?.position.seq, 1);
/// assert_eq!(sink.lagged_batches(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct BroadcastSink {
    shared: Arc<Shared>,
}

impl BroadcastSink {
    /// A sink that keeps the last `capacity` batches (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            shared: Arc::new(Shared {
                ring: Mutex::new(Ring {
                    batches: VecDeque::with_capacity(capacity.min(4096)),
                    first: 0,
                    closed: false,
                }),
                ready: Condvar::new(),
                capacity,
                lagged: AtomicU64::new(0),
            }),
        }
    }

    /// A receiver that sees every batch published from now on.
    pub fn subscribe(&self) -> BroadcastReceiver {
        let ring = self.shared.ring.lock();
        BroadcastReceiver {
            shared: Arc::clone(&self.shared),
            next: ring.first + ring.batches.len() as u64,
        }
    }

    /// Batches the ring holds.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Batches that receivers missed by lagging, summed over receivers.
    pub fn lagged_batches(&self) -> u64 {
        self.shared.lagged.load(Ordering::Relaxed)
    }

    /// Closes the sink: receivers drain what is held, then get [`RecvError::Closed`].
    pub fn close(&self) {
        self.shared.ring.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

impl EventSink for BroadcastSink {
    fn publish(&self, batch: &Arc<KvbmCacheEvents>) -> Result<(), SinkError> {
        let mut ring = self.shared.ring.lock();
        if ring.closed {
            return Err(SinkError::Closed);
        }
        if ring.batches.len() == self.shared.capacity {
            ring.batches.pop_front();
            ring.first += 1;
        }
        ring.batches.push_back(Arc::clone(batch));
        drop(ring);
        self.shared.ready.notify_all();
        Ok(())
    }
}

impl std::fmt::Debug for BroadcastSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastSink")
            .field("capacity", &self.shared.capacity)
            .field("lagged", &self.lagged_batches())
            .finish()
    }
}

/// One subscriber of a [`BroadcastSink`]; receives every batch in order or
/// is told what it missed.
pub struct BroadcastReceiver {
    shared: Arc<Shared>,
    next: u64,
}

impl BroadcastReceiver {
    /// The next batch, if one is waiting.
    pub fn try_recv(&mut self) -> Result<Arc<KvbmCacheEvents>, RecvError> {
        let ring = self.shared.ring.lock();
        take(&self.shared, &mut self.next, &ring)
    }

    /// The next batch, waiting up to `timeout` for one.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Arc<KvbmCacheEvents>, RecvError> {
        let deadline = Instant::now() + timeout;
        let shared = &self.shared;
        let mut ring = shared.ring.lock();
        loop {
            match take(shared, &mut self.next, &ring) {
                Err(RecvError::Empty) => {
                    if shared.ready.wait_until(&mut ring, deadline).timed_out() {
                        return take(shared, &mut self.next, &ring);
                    }
                }
                other => return other,
            }
        }
    }

    /// The next batch, waiting as long as it takes (or until the sink closes).
    pub fn recv(&mut self) -> Result<Arc<KvbmCacheEvents>, RecvError> {
        let shared = &self.shared;
        let mut ring = shared.ring.lock();
        loop {
            match take(shared, &mut self.next, &ring) {
                Err(RecvError::Empty) => shared.ready.wait(&mut ring),
                other => return other,
            }
        }
    }
}

/// The batch at `next`, or why there is none; advances `next`.
fn take(shared: &Shared, next: &mut u64, ring: &Ring) -> Result<Arc<KvbmCacheEvents>, RecvError> {
    if *next < ring.first {
        let missed = ring.first - *next;
        *next = ring.first;
        shared.lagged.fetch_add(missed, Ordering::Relaxed);
        return Err(RecvError::Lagged { missed });
    }
    let offset = (*next - ring.first) as usize;
    match ring.batches.get(offset) {
        Some(batch) => {
            *next += 1;
            Ok(Arc::clone(batch))
        }
        None if ring.closed => Err(RecvError::Closed),
        None => Err(RecvError::Empty),
    }
}

impl std::fmt::Debug for BroadcastReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastReceiver")
            .field("next", &self.next)
            .finish()
    }
}
