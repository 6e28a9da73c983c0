//! The router side: [`EventConsumer`], a durable JetStream pull consumer
//! that feeds every worker's batches to a [`Router`] and closes every gap.
//!
//! # Resuming
//!
//! The consumer is durable: JetStream remembers the last batch it
//! acknowledged, and a consumer started again under the same name resumes
//! after it. A batch is acknowledged only after the router took it (applied,
//! ignored as a duplicate, or refused for a counted reason), so a crash
//! redelivers at most the unacknowledged tail, which the router then ignores
//! as duplicates. A router that lost its state (a new process) sees the
//! resumed stream start mid-way and recovers as from any other gap.
//!
//! # Gaps
//!
//! A batch whose position does not continue its worker's stream is a gap
//! ([`ConsumerStats::gaps`]). The consumer first replays the worker's subject
//! from JetStream ([`ConsumerStats::replay_recoveries`]); if the stream no
//! longer holds the needed batch, it asks the worker for a snapshot
//! ([`ConsumerStats::snapshot_recoveries`]). If that fails too (the worker is
//! gone) the worker is left in its gap, its batches refused and counted
//! ([`ConsumerStats::refused_in_gap`]), and recovery is tried again after
//! [`ConsumerConfig::retry_recovery`]: the router never applies a batch that
//! does not continue what it holds.
//!
//! # Bad messages
//!
//! A message that is not one of our batches, names another worker than its
//! subject, or comes from a worker not in [`ConsumerConfig::workers`] is a
//! [`MessageError`], counted per kind and acknowledged (so it is not
//! redelivered forever); it never reaches the router.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, stream::Stream as JsStream};
use futures_util::StreamExt;
use kvblocks::events::{InstanceId, KvbmCacheEvents};
use kvblocks_router::{ApplyError, ApplyOutcome, IndexBatch, Router};
use tokio::task::JoinHandle;

use crate::error::{MessageError, NatsError};
use crate::recovery::{replay, request_snapshot};
use crate::stream::{check_name, ensure_stream, StreamSettings};

/// Called with every batch the router applied (for latency measurements
/// and tests); it runs on the consumer's task, so it must be quick.
pub type BatchObserver = Arc<dyn Fn(&KvbmCacheEvents) + Send + Sync>;

/// How the consumer reads and recovers.
#[derive(Clone)]
pub struct ConsumerConfig {
    /// The stream (created if missing) and its subjects.
    pub stream: StreamSettings,
    /// The durable consumer's name: a consumer started again under it
    /// resumes after its last acknowledged batch.
    pub durable: String,
    /// Most batches requested per pull (default 256).
    pub batch: usize,
    /// How long a snapshot request waits for the worker (default 2 s).
    pub snapshot_timeout: Duration,
    /// How long a replay waits for the next batch before it stops
    /// (default 500 ms).
    pub replay_idle: Duration,
    /// How long a worker whose gap could not be closed waits before the
    /// next recovery attempt (default 500 ms).
    pub retry_recovery: Duration,
    /// The workers to expect (`None`: any). Batches of others are counted
    /// as [`MessageError::UnknownWorker`] and dropped.
    pub workers: Option<HashSet<InstanceId>>,
    /// Called after each applied batch.
    pub observer: Option<BatchObserver>,
}

impl ConsumerConfig {
    /// The defaults for `stream`, durable under `durable`.
    pub fn new(stream: StreamSettings, durable: &str) -> Self {
        Self {
            stream,
            durable: durable.to_owned(),
            batch: 256,
            snapshot_timeout: Duration::from_secs(2),
            replay_idle: Duration::from_millis(500),
            retry_recovery: Duration::from_millis(500),
            workers: None,
            observer: None,
        }
    }
}

impl std::fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("stream", &self.stream)
            .field("durable", &self.durable)
            .field("batch", &self.batch)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// What the consumer did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Messages received from the durable consumer.
    pub messages: u64,
    /// Batches the router applied (from the stream, a replay or a retry).
    pub applied: u64,
    /// Batches the router had applied before (redeliveries, replays).
    pub duplicates: u64,
    /// Gaps detected (a batch that did not continue its worker's stream).
    pub gaps: u64,
    /// Gaps closed by replaying the worker's subject from JetStream.
    pub replay_recoveries: u64,
    /// Batches applied by those replays.
    pub replayed_batches: u64,
    /// Gaps closed by a snapshot from the worker.
    pub snapshot_recoveries: u64,
    /// Recoveries that failed (no replay, no snapshot): the worker stays in
    /// its gap until the next attempt.
    pub failed_recoveries: u64,
    /// Batches refused while their worker was in an unclosed gap.
    pub refused_in_gap: u64,
    /// Batches from an older incarnation of their worker.
    pub stale_epochs: u64,
    /// Messages whose subject named no worker.
    pub bad_subjects: u64,
    /// Messages that did not decode as a sequenced batch.
    pub undecodable: u64,
    /// Messages whose frame named another worker than the subject.
    pub mismatched: u64,
    /// Messages from workers not in [`ConsumerConfig::workers`].
    pub unknown_workers: u64,
    /// Times the pull stream failed and was set up again (a broker restart).
    pub reconnects: u64,
    /// Stream sequence of the first message this consumer received.
    pub first_stream_sequence: Option<u64>,
    /// Stream sequence of the last message it received.
    pub last_stream_sequence: Option<u64>,
}

/// A running consumer feeding a router.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use kvblocks_nats::{connect, ConsumerConfig, EventConsumer, StreamSettings, Subjects};
/// use kvblocks_router::Router;
///
/// let client = connect("127.0.0.1:4222").await?;
/// let settings = StreamSettings::new("KVBLOCKS", Subjects::default())?;
/// let router = Arc::new(Router::new());
/// let consumer = EventConsumer::start(client, ConsumerConfig::new(settings, "router-1"), router.clone()).await?;
/// // ... route with `router.best_worker(..)` while the consumer keeps it current ...
/// println!("{:?}", consumer.stats());
/// # Ok(()) }
/// ```
pub struct EventConsumer {
    stats: Arc<Mutex<ConsumerStats>>,
    task: JoinHandle<()>,
}

impl EventConsumer {
    /// Finds or creates the stream and the durable consumer, and starts
    /// feeding `router` on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`NatsError::Config`] for a bad durable name, [`NatsError::Stream`] or
    /// [`NatsError::Consumer`] if the broker is unreachable or refuses.
    pub async fn start(
        client: async_nats::Client,
        config: ConsumerConfig,
        router: Arc<Router>,
    ) -> Result<Self, NatsError> {
        check_name(&config.durable)?;
        let js = jetstream::new(client.clone());
        let (stream, consumer) = open(&js, &config).await?;
        let stats = Arc::new(Mutex::new(ConsumerStats::default()));
        let handler = Handler {
            client,
            stream,
            config,
            router,
            stats: Arc::clone(&stats),
            stalled: HashMap::new(),
        };
        let task = tokio::spawn(handler.run(js, consumer));
        Ok(Self { stats, task })
    }

    /// Counters so far.
    pub fn stats(&self) -> ConsumerStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops at once, like a crash: unacknowledged batches are redelivered
    /// to the next consumer under the same name. Returns the counters.
    pub async fn kill(mut self) -> ConsumerStats {
        self.task.abort();
        let _ = (&mut self.task).await;
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for EventConsumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for EventConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventConsumer")
            .field("stats", &self.stats())
            .finish()
    }
}

async fn open(
    js: &jetstream::Context,
    config: &ConsumerConfig,
) -> Result<(JsStream, jetstream::consumer::Consumer<pull::Config>), NatsError> {
    let stream = ensure_stream(js, &config.stream).await?;
    let consumer = stream
        .get_or_create_consumer(
            &config.durable,
            pull::Config {
                durable_name: Some(config.durable.clone()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                filter_subject: config.stream.subjects.all_events(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| NatsError::Consumer {
            stream: config.stream.name.clone(),
            consumer: config.durable.clone(),
            message: e.to_string(),
        })?;
    Ok((stream, consumer))
}

struct Handler {
    client: async_nats::Client,
    stream: JsStream,
    config: ConsumerConfig,
    router: Arc<Router>,
    stats: Arc<Mutex<ConsumerStats>>,
    /// Workers whose gap could not be closed, and when to try again.
    stalled: HashMap<InstanceId, Instant>,
}

impl Handler {
    fn count(&self, f: impl FnOnce(&mut ConsumerStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    async fn run(
        mut self,
        js: jetstream::Context,
        mut consumer: jetstream::consumer::Consumer<pull::Config>,
    ) {
        let mut backoff = Duration::from_millis(20);
        loop {
            let messages = consumer
                .stream()
                .max_messages_per_batch(self.config.batch)
                .expires(Duration::from_secs(5))
                .heartbeat(Duration::from_secs(1))
                .messages()
                .await;
            if let Ok(mut messages) = messages {
                while let Some(item) = messages.next().await {
                    match item {
                        Ok(message) => {
                            backoff = Duration::from_millis(20);
                            self.handle(&message).await;
                            if let Err(error) = message.ack().await {
                                tracing::debug!(%error, "ack not sent: the batch will come again");
                            }
                        }
                        Err(error) => {
                            tracing::debug!(%error, "pull stream failed: setting it up again");
                            break;
                        }
                    }
                }
            }
            self.count(|s| s.reconnects += 1);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            if let Ok((stream, reopened)) = open(&js, &self.config).await {
                self.stream = stream;
                consumer = reopened;
            }
        }
    }

    /// Takes one message: decodes, checks, applies, recovers from a gap.
    async fn handle(&mut self, message: &jetstream::Message) {
        let seq = message.info().map(|info| info.stream_sequence).ok();
        self.count(|s| {
            s.messages += 1;
            s.first_stream_sequence = s.first_stream_sequence.or(seq);
            s.last_stream_sequence = seq.or(s.last_stream_sequence);
        });
        let batch = match self.check(message) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "message dropped");
                self.count(|s| match error {
                    MessageError::BadSubject(_) => s.bad_subjects += 1,
                    MessageError::Decode { .. } | MessageError::Unsequenced(_) => {
                        s.undecodable += 1
                    }
                    MessageError::WorkerMismatch { .. } => s.mismatched += 1,
                    MessageError::UnknownWorker(_) => s.unknown_workers += 1,
                    MessageError::StaleEpoch { .. } => s.stale_epochs += 1,
                });
                return;
            }
        };
        let worker = batch.instance_id;
        let index_batch = IndexBatch::from_kvblocks(&batch);
        let expected = match self.apply(&batch, &index_batch) {
            Ok(()) => {
                // The stream continued: any earlier gap of this worker closed.
                if !self.stalled.is_empty() {
                    self.stalled.remove(&worker);
                }
                return;
            }
            Err(expected) => expected,
        };
        if let Some(&retry_at) = self.stalled.get(&worker) {
            if Instant::now() < retry_at {
                self.count(|s| s.refused_in_gap += 1);
                return;
            }
        } else {
            self.count(|s| s.gaps += 1);
        }
        // Replay from the stream, up to this message.
        if let Some(until) = seq {
            match replay(
                &self.stream,
                &self.config.stream.subjects,
                &self.router,
                worker,
                expected,
                until,
                self.config.replay_idle,
            )
            .await
            {
                Ok(replayed) => {
                    self.count(|s| {
                        s.replayed_batches += replayed.applied;
                        s.applied += replayed.applied;
                    });
                    if replayed.found && self.apply(&batch, &index_batch).is_ok() {
                        self.stalled.remove(&worker);
                        self.count(|s| s.replay_recoveries += 1);
                        return;
                    }
                }
                Err(error) => tracing::warn!(%error, worker, "replay failed"),
            }
        }
        // Ask the worker.
        let snapshot = request_snapshot(
            &self.client,
            &self.config.stream.subjects,
            worker,
            self.config.snapshot_timeout,
        )
        .await;
        let recovered = match snapshot {
            Ok(snapshot) => match self.router.apply_snapshot(&snapshot) {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, "snapshot refused");
                    false
                }
            },
            Err(error) => {
                tracing::warn!(%error, "no snapshot");
                false
            }
        };
        if recovered && self.apply(&batch, &index_batch).is_ok() {
            self.stalled.remove(&worker);
            self.count(|s| s.snapshot_recoveries += 1);
        } else {
            self.stalled
                .insert(worker, Instant::now() + self.config.retry_recovery);
            self.count(|s| {
                s.failed_recoveries += 1;
                s.refused_in_gap += 1;
            });
        }
    }

    /// The message as a batch of a worker we follow.
    fn check(&self, message: &jetstream::Message) -> Result<KvbmCacheEvents, MessageError> {
        let subject = message.subject.as_str();
        let subjects = &self.config.stream.subjects;
        let worker = subjects
            .worker_of(subject)
            .ok_or_else(|| MessageError::BadSubject(subject.chars().take(128).collect()))?;
        if let Some(workers) = &self.config.workers {
            if !workers.contains(&worker) {
                return Err(MessageError::UnknownWorker(worker));
            }
        }
        let frame = kvblocks_wire::kvbm::decode(&message.payload)
            .map_err(|source| MessageError::Decode { worker, source })?;
        let batch = frame
            .into_batch()
            .ok_or(MessageError::Unsequenced(worker))?;
        if batch.instance_id != worker {
            return Err(MessageError::WorkerMismatch {
                subject: worker,
                frame: batch.instance_id,
            });
        }
        Ok(batch)
    }

    /// Applies a batch; `Err(expected)` on a gap (everything else is
    /// counted and done).
    fn apply(
        &self,
        batch: &KvbmCacheEvents,
        index_batch: &IndexBatch,
    ) -> Result<(), kvblocks::events::StreamPosition> {
        match self.router.apply(index_batch) {
            Ok(ApplyOutcome::Applied) => {
                self.count(|s| s.applied += 1);
                if let Some(observer) = &self.config.observer {
                    observer(batch);
                }
                Ok(())
            }
            Ok(ApplyOutcome::Duplicate) => {
                self.count(|s| s.duplicates += 1);
                Ok(())
            }
            Err(ApplyError::StaleEpoch { .. }) => {
                self.count(|s| s.stale_epochs += 1);
                Ok(())
            }
            Err(ApplyError::Gap { expected, .. }) => Err(expected),
            Err(error) => {
                tracing::warn!(%error, "batch refused");
                Ok(())
            }
        }
    }
}
