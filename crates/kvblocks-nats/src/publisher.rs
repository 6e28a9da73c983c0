//! The publishing side: [`NatsSink`], the [`EventSink`] an events manager
//! publishes to, and the task that moves its batches to JetStream.
//!
//! The sink runs inside the events manager's flush, on whatever thread
//! flushes, so it never waits: it puts the batch in a bounded channel
//! ([`PublisherConfig::buffer`] batches) and returns. When the channel is
//! full (the broker is down or slow for longer than the buffer lasts) the
//! batch is parked in a one-batch overflow slot, and a later batch arriving
//! while the slot is taken displaces it: the displaced batch is dropped and
//! counted ([`PublisherStats::dropped_full`]). The newest batch is therefore
//! never dropped, so every drop is followed by a published batch whose
//! position reveals the gap, and the consumers resynchronise (from a
//! snapshot: the stream never held what was dropped). A drop at the tail
//! would otherwise stay invisible until the worker's next batch. Nothing is
//! dropped without being counted.
//!
//! Order: the sink and the task both take the slot's lock, the sink sends to
//! the channel only while the slot is empty, and the task takes the parked
//! batch only when the channel is empty, so batches leave in stream order.
//!
//! The task publishes one batch at a time, in stream order, encoded as
//! kvbm-logical's extended frame, to `<events_prefix>.<worker>`, with a
//! `Nats-Msg-Id` of `<worker>:<epoch>:<seq>`. It waits for JetStream's ack;
//! on an error or a timeout it retries the same batch with the same id
//! (backing off up to [`PublisherConfig::max_backoff`]) until it is stored,
//! so a broker restart delays batches but loses none that fit the buffer,
//! and a retry whose first attempt did land is dropped by JetStream's
//! duplicate window, not stored twice. One batch in flight keeps each
//! worker's batches in order in the stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use kvblocks::events::{EventSink, KvbmCacheEvents, SinkError};
use kvblocks_wire::kvbm::{self, KvbmEncoding};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::error::{ConfigError, NatsError};
use crate::stream::{ensure_stream, StreamSettings};
use crate::subjects::msg_id;
use async_nats::header::NATS_MESSAGE_ID;

/// How the publisher buffers and retries.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The stream (created if missing) and its subjects.
    pub stream: StreamSettings,
    /// Batches buffered between the sink and the publishing task (default
    /// 4096). A full buffer drops (and counts) new batches.
    pub buffer: usize,
    /// How long one publish waits for JetStream's ack before retrying
    /// (default 2 s).
    pub ack_timeout: Duration,
    /// The first retry's delay; doubled per retry (default 20 ms).
    pub backoff: Duration,
    /// The longest delay between retries (default 1 s).
    pub max_backoff: Duration,
}

impl PublisherConfig {
    /// The defaults for `stream`.
    pub fn new(stream: StreamSettings) -> Self {
        Self {
            stream,
            buffer: 4096,
            ack_timeout: Duration::from_secs(2),
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// What the publisher did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Batches the sink took into the buffer.
    pub accepted: u64,
    /// Batches JetStream acknowledged (each accepted batch once).
    pub published: u64,
    /// Of those, acks that said the batch was already stored (a retry whose
    /// first attempt landed).
    pub duplicates: u64,
    /// Publish attempts that failed or timed out and were retried.
    pub retries: u64,
    /// Batches refused because the buffer was full.
    pub dropped_full: u64,
    /// Batches refused after [`NatsPublisher::close`], or still buffered
    /// when its deadline passed.
    pub dropped_closed: u64,
    /// Batches that could not be encoded.
    pub encode_errors: u64,
}

impl PublisherStats {
    /// Every batch that never reached the stream.
    pub fn dropped(&self) -> u64 {
        self.dropped_full + self.dropped_closed + self.encode_errors
    }
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    published: AtomicU64,
    duplicates: AtomicU64,
    retries: AtomicU64,
    dropped_full: AtomicU64,
    dropped_closed: AtomicU64,
    encode_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> PublisherStats {
        // ORDERING: counters only; no other memory is published through them.
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PublisherStats {
            accepted: get(&self.accepted),
            published: get(&self.published),
            duplicates: get(&self.duplicates),
            retries: get(&self.retries),
            dropped_full: get(&self.dropped_full),
            dropped_closed: get(&self.dropped_closed),
            encode_errors: get(&self.encode_errors),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The [`EventSink`] that hands batches to the publishing task; add it to an
/// events manager ([`EventsManagerBuilder::sink`](kvblocks::events::EventsManagerBuilder::sink)
/// or [`EventsManager::add_sink`](kvblocks::events::EventsManager::add_sink)).
pub struct NatsSink {
    shared: Arc<Shared>,
}

/// What the sink and the task share.
struct Shared {
    gate: Mutex<Gate>,
    /// Wakes the task when a batch is parked.
    parked: Notify,
    counters: Counters,
}

/// The sink's end of the channel and the overflow slot, under one lock.
struct Gate {
    tx: Option<mpsc::Sender<Arc<KvbmCacheEvents>>>,
    overflow: Option<Arc<KvbmCacheEvents>>,
}

impl Shared {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl EventSink for NatsSink {
    fn publish(&self, batch: &Arc<KvbmCacheEvents>) -> Result<(), SinkError> {
        let counters = &self.shared.counters;
        let mut gate = self.shared.gate();
        let Some(tx) = gate.tx.as_ref() else {
            bump(&counters.dropped_closed);
            return Err(SinkError::Closed);
        };
        if gate.overflow.is_some() {
            // The slot is taken: the newer batch displaces the parked one.
            gate.overflow = Some(Arc::clone(batch));
            bump(&counters.accepted);
            bump(&counters.dropped_full);
            return Ok(());
        }
        match tx.try_send(Arc::clone(batch)) {
            Ok(()) => {
                bump(&counters.accepted);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(batch)) => {
                gate.overflow = Some(batch);
                bump(&counters.accepted);
                drop(gate);
                self.shared.parked.notify_one();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                bump(&counters.dropped_closed);
                Err(SinkError::Closed)
            }
        }
    }
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("stats", &self.shared.counters.snapshot())
            .finish()
    }
}

/// A running publisher: the sink and the task behind it.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use kvblocks::events::EventsManager;
/// use kvblocks_nats::{connect, NatsPublisher, PublisherConfig, StreamSettings, Subjects};
///
/// let client = connect("127.0.0.1:4222").await?;
/// let settings = StreamSettings::new("KVBLOCKS", Subjects::default())?;
/// let publisher = NatsPublisher::start(client, PublisherConfig::new(settings)).await?;
/// let events = Arc::new(EventsManager::builder().instance_id(1).block_size(16).sink(publisher.sink()).build());
/// // ... build the block manager with `.event_manager(events.clone())`, serve, flush ...
/// events.shutdown();
/// let stats = publisher.close(std::time::Duration::from_secs(5)).await;
/// assert_eq!(stats.dropped(), 0);
/// # Ok(()) }
/// ```
pub struct NatsPublisher {
    sink: Arc<NatsSink>,
    shared: Arc<Shared>,
    idle: Arc<Notify>,
    task: JoinHandle<()>,
}

impl NatsPublisher {
    /// Finds or creates the stream and starts the publishing task on the
    /// current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`NatsError::Config`] for a zero buffer, [`NatsError::Stream`] if the
    /// broker is unreachable or refuses the stream.
    pub async fn start(
        client: async_nats::Client,
        config: PublisherConfig,
    ) -> Result<Self, NatsError> {
        if config.buffer == 0 {
            return Err(ConfigError::ZeroBuffer.into());
        }
        let js = jetstream::new(client);
        ensure_stream(&js, &config.stream).await?;
        let (tx, rx) = mpsc::channel(config.buffer);
        let shared = Arc::new(Shared {
            gate: Mutex::new(Gate {
                tx: Some(tx),
                overflow: None,
            }),
            parked: Notify::new(),
            counters: Counters::default(),
        });
        let idle = Arc::new(Notify::new());
        let task = tokio::spawn(run(js, config, rx, Arc::clone(&shared), Arc::clone(&idle)));
        Ok(Self {
            sink: Arc::new(NatsSink {
                shared: Arc::clone(&shared),
            }),
            shared,
            idle,
            task,
        })
    }

    /// The sink to add to an events manager.
    pub fn sink(&self) -> Arc<NatsSink> {
        Arc::clone(&self.sink)
    }

    /// Counters so far.
    pub fn stats(&self) -> PublisherStats {
        self.shared.counters.snapshot()
    }

    /// Waits until every batch accepted so far was acknowledged by
    /// JetStream, or `timeout` passed; returns whether it was.
    pub async fn wait_published(&self, timeout: Duration) -> bool {
        let done = || {
            let stats = self.stats();
            stats.published + stats.encode_errors + stats.dropped_full >= stats.accepted
        };
        tokio::time::timeout(timeout, async {
            loop {
                let notified = self.idle.notified();
                if done() {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    /// Stops taking batches, publishes what is buffered (retrying until
    /// `deadline`), and returns the final counters; batches still buffered
    /// at the deadline are counted as dropped.
    pub async fn close(self, deadline: Duration) -> PublisherStats {
        let tx = self.shared.gate().tx.take();
        drop(tx);
        self.shared.parked.notify_one();
        let mut task = self.task;
        if tokio::time::timeout(deadline, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
            let stats = self.shared.counters.snapshot();
            let lost = stats
                .accepted
                .saturating_sub(stats.published + stats.encode_errors + stats.dropped_full);
            self.shared
                .counters
                .dropped_closed
                .fetch_add(lost, Ordering::Relaxed);
        }
        self.shared.counters.snapshot()
    }
}

impl std::fmt::Debug for NatsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsPublisher")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The next batch in stream order: the channel first, then the parked one
/// (taken only when the channel is empty, under the sink's lock); `None`
/// once the sink is closed and both are empty.
async fn next_batch(
    rx: &mut mpsc::Receiver<Arc<KvbmCacheEvents>>,
    shared: &Shared,
) -> Option<Arc<KvbmCacheEvents>> {
    loop {
        let parked = shared.parked.notified();
        if let Ok(batch) = rx.try_recv() {
            return Some(batch);
        }
        {
            let mut gate = shared.gate();
            if rx.is_empty() {
                if let Some(batch) = gate.overflow.take() {
                    return Some(batch);
                }
                // Closed and drained: the task ends.
                gate.tx.as_ref()?;
            }
        }
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(batch) => return Some(batch),
                // Closed: the parked batch, if any, on the next turn.
                None => {
                    let mut gate = shared.gate();
                    return gate.overflow.take();
                }
            },
            () = parked => {}
        }
    }
}

async fn run(
    js: jetstream::Context,
    config: PublisherConfig,
    mut rx: mpsc::Receiver<Arc<KvbmCacheEvents>>,
    shared: Arc<Shared>,
    idle: Arc<Notify>,
) {
    let counters = &shared.counters;
    let subjects = config.stream.subjects.clone();
    let mut buffer = Vec::new();
    while let Some(batch) = next_batch(&mut rx, &shared).await {
        buffer.clear();
        if let Err(error) = kvbm::encode_into(&mut buffer, &batch, KvbmEncoding::Extended) {
            tracing::warn!(%error, position = ?batch.position, "batch not encodable: dropped");
            bump(&counters.encode_errors);
            idle.notify_waiters();
            continue;
        }
        let payload = bytes::Bytes::copy_from_slice(&buffer);
        let subject = subjects.events(batch.instance_id);
        let id = msg_id(batch.instance_id, batch.position);
        let mut backoff = config.backoff;
        loop {
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, id.as_str());
            let attempt = async {
                js.publish_with_headers(subject.clone(), headers, payload.clone())
                    .await?
                    .await
            };
            match tokio::time::timeout(config.ack_timeout, attempt).await {
                Ok(Ok(ack)) => {
                    if ack.duplicate {
                        bump(&counters.duplicates);
                    }
                    bump(&counters.published);
                    break;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, %id, "publish failed: retrying");
                }
                Err(_) => tracing::debug!(%id, "publish timed out: retrying"),
            }
            bump(&counters.retries);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.max_backoff);
        }
        idle.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvblocks::events::{KvCacheEvents, StreamPosition};
    use kvblocks::LogicalLayoutHandle;

    fn batch(seq: u64) -> Arc<KvbmCacheEvents> {
        Arc::new(KvbmCacheEvents {
            events: KvCacheEvents::Clear,
            instance_id: 1,
            tier: LogicalLayoutHandle::G1,
            block_size: 16,
            position: StreamPosition { epoch: 1, seq },
        })
    }

    fn sink(buffer: usize) -> (NatsSink, mpsc::Receiver<Arc<KvbmCacheEvents>>) {
        let (tx, rx) = mpsc::channel(buffer);
        let shared = Arc::new(Shared {
            gate: Mutex::new(Gate {
                tx: Some(tx),
                overflow: None,
            }),
            parked: Notify::new(),
            counters: Counters::default(),
        });
        (NatsSink { shared }, rx)
    }

    #[tokio::test]
    async fn a_full_buffer_drops_older_batches_and_keeps_the_newest_in_order() {
        let (sink, mut rx) = sink(2);
        for seq in 0..5 {
            assert_eq!(sink.publish(&batch(seq)), Ok(()));
        }
        let stats = sink.shared.counters.snapshot();
        assert_eq!((stats.accepted, stats.dropped_full), (5, 2));
        let mut order = Vec::new();
        for _ in 0..3 {
            let next = next_batch(&mut rx, &sink.shared).await.expect("a batch");
            order.push(next.position.seq);
        }
        assert_eq!(order, [0, 1, 4], "the gap 2..4 is revealed by batch 4");
        // With room again, batches go through the channel.
        assert_eq!(sink.publish(&batch(5)), Ok(()));
        assert_eq!(
            next_batch(&mut rx, &sink.shared)
                .await
                .map(|b| b.position.seq),
            Some(5)
        );
        // Closed: a later batch is refused and counted, the task ends.
        sink.shared.gate().tx = None;
        assert_eq!(sink.publish(&batch(6)), Err(SinkError::Closed));
        assert_eq!(sink.shared.counters.snapshot().dropped_closed, 1);
        assert!(next_batch(&mut rx, &sink.shared).await.is_none());
    }
}
