//! Where published batches go: the [`EventSink`] trait and the in-process
//! [`BroadcastSink`].
//!
//! A sink receives every batch, in stream order, from the events manager's
//! flush (never under a caller's lock). The broadcast sink keeps up to
//! `capacity` batches in a ring, each until every receiver has read it (so
//! memory that every receiver is done with goes back to the allocator at
//! once, still in cache for the next batch); a receiver that falls further
//! behind is told how many batches it missed ([`RecvError::Lagged`]) and the
//! sink counts them, so loss is never silent. This module never batches or
//! filters.

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

/// A batch in the ring and how many receivers have yet to read it.
struct Held {
    batch: Arc<KvbmCacheEvents>,
    unread: usize,
}

struct Ring {
    batches: VecDeque<Held>,
    /// Index (counting every batch ever published) of `batches[0]`.
    first: u64,
    /// Receivers alive.
    receivers: usize,
    closed: bool,
}

impl Ring {
    /// Drops the batches at the front that every receiver has read.
    fn drop_read(&mut self) {
        while self.batches.front().is_some_and(|held| held.unread == 0) {
            self.batches.pop_front();
            self.first += 1;
        }
    }
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
                    receivers: 0,
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
        let mut ring = self.shared.ring.lock();
        ring.receivers += 1;
        BroadcastReceiver {
            shared: Arc::clone(&self.shared),
            next: ring.first + ring.batches.len() as u64,
        }
    }

    /// Batches the ring can hold (unread by some receiver).
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
        if ring.receivers == 0 {
            // Nobody will read it: counted, not kept.
            ring.first += 1;
            return Ok(());
        }
        if ring.batches.len() == self.shared.capacity {
            ring.batches.pop_front();
            ring.first += 1;
        }
        let unread = ring.receivers;
        ring.batches.push_back(Held {
            batch: Arc::clone(batch),
            unread,
        });
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
        let mut ring = self.shared.ring.lock();
        take(&self.shared, &mut self.next, &mut ring)
    }

    /// The next batch, waiting up to `timeout` for one.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Arc<KvbmCacheEvents>, RecvError> {
        let deadline = Instant::now() + timeout;
        let shared = &self.shared;
        let mut ring = shared.ring.lock();
        loop {
            match take(shared, &mut self.next, &mut ring) {
                Err(RecvError::Empty) => {
                    if shared.ready.wait_until(&mut ring, deadline).timed_out() {
                        return take(shared, &mut self.next, &mut ring);
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
            match take(shared, &mut self.next, &mut ring) {
                Err(RecvError::Empty) => shared.ready.wait(&mut ring),
                other => return other,
            }
        }
    }
}

impl Drop for BroadcastReceiver {
    fn drop(&mut self) {
        let mut ring = self.shared.ring.lock();
        ring.receivers -= 1;
        // The batches this receiver will not read any more.
        let from = self.next.saturating_sub(ring.first) as usize;
        for held in ring.batches.iter_mut().skip(from) {
            held.unread -= 1;
        }
        ring.drop_read();
    }
}

/// The batch at `next`, or why there is none; advances `next`.
fn take(
    shared: &Shared,
    next: &mut u64,
    ring: &mut Ring,
) -> Result<Arc<KvbmCacheEvents>, RecvError> {
    if *next < ring.first {
        let missed = ring.first - *next;
        *next = ring.first;
        shared.lagged.fetch_add(missed, Ordering::Relaxed);
        return Err(RecvError::Lagged { missed });
    }
    let offset = (*next - ring.first) as usize;
    match ring.batches.get_mut(offset) {
        Some(held) => {
            *next += 1;
            held.unread -= 1;
            let batch = Arc::clone(&held.batch);
            ring.drop_read();
            Ok(batch)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{KvCacheEvents, StreamPosition};
    use crate::LogicalLayoutHandle;

    fn batch(seq: u64) -> Arc<KvbmCacheEvents> {
        Arc::new(KvbmCacheEvents {
            events: KvCacheEvents::Clear,
            instance_id: 1,
            tier: LogicalLayoutHandle::G1,
            block_size: 16,
            position: StreamPosition { epoch: 1, seq },
        })
    }

    /// What a receiver gets from a ring of the last `capacity` batches.
    fn expected(next: &mut u64, published: u64, capacity: u64) -> Result<u64, RecvError> {
        let first = published.saturating_sub(capacity);
        if *next < first {
            let missed = first - *next;
            *next = first;
            return Err(RecvError::Lagged { missed });
        }
        if *next < published {
            *next += 1;
            return Ok(*next - 1);
        }
        Err(RecvError::Empty)
    }

    proptest::proptest! {
        /// Receivers see what a ring of the last `capacity` batches would
        /// give them (every batch in order, or the lag), and the sink holds
        /// a batch only while some receiver alive has yet to read it.
        #[test]
        fn receivers_see_the_last_capacity_batches_and_read_batches_are_freed(
            ops in proptest::collection::vec((0..4u8, 0..3usize), 0..120),
            capacity in 1..5usize,
        ) {
            let sink = BroadcastSink::new(capacity);
            let mut receivers: Vec<Option<(BroadcastReceiver, u64)>> = Vec::new();
            let mut published: Vec<Arc<KvbmCacheEvents>> = Vec::new();
            for (op, who) in ops {
                match op {
                    0 => {
                        published.push(batch(published.len() as u64));
                        sink.publish(published.last().unwrap()).unwrap();
                    }
                    1 => receivers.push(Some((sink.subscribe(), published.len() as u64))),
                    2 => {
                        if let Some(Some((rx, next))) = receivers.get_mut(who) {
                            let want = expected(next, published.len() as u64, capacity as u64);
                            let got = rx.try_recv().map(|b| b.position.seq);
                            proptest::prop_assert_eq!(got, want);
                        }
                    }
                    _ => {
                        if let Some(slot) = receivers.get_mut(who) {
                            *slot = None;
                        }
                    }
                }
                // Held by the sink iff some live receiver has not read it
                // and it is among the last `capacity` published.
                let total = published.len() as u64;
                for (seq, b) in published.iter().enumerate() {
                    let seq = seq as u64;
                    let wanted = seq + capacity as u64 >= total
                        && receivers.iter().flatten().any(|(_, next)| *next <= seq);
                    proptest::prop_assert_eq!(Arc::strong_count(b) == 2, wanted, "batch {}", seq);
                }
            }
        }
    }
}
