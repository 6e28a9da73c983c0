//! The worker side of a resynchronisation: [`SnapshotResponder`] answers
//! requests on `<snapshot_prefix>.<worker>` with the worker's current
//! snapshot ([`kvblocks_wire::snapshot`] frame).
//!
//! The snapshot comes from a closure the worker supplies, typically
//! [`manager_snapshot`]: a snapshot barrier in the block manager, completed
//! by the events manager with the stream position it is valid at. The
//! closure takes the manager's locks, so it runs on tokio's blocking pool,
//! never on a runtime thread. A request that cannot be answered gets an
//! empty reply with a [`ERROR_HEADER`] saying why (the consumer turns it
//! into [`SnapshotError::Refused`](crate::SnapshotError::Refused)).

use std::sync::Arc;

use async_nats::HeaderMap;
use futures_util::StreamExt;
use kvblocks::events::{EventsManager, InstanceId, WorkerSnapshot};
use kvblocks::{BlockManager, BlockMetadata};
use tokio::task::JoinHandle;

use crate::error::NatsError;
use crate::subjects::Subjects;

/// The reply header that carries a responder's refusal.
pub const ERROR_HEADER: &str = "Kvblocks-Error";

/// Where a responder gets snapshots: `None` when it has none to give.
pub type SnapshotSource = Arc<dyn Fn() -> Option<WorkerSnapshot> + Send + Sync>;

/// A snapshot source for one block manager reporting to `events`: a barrier
/// in the manager's store, taken by the events manager (which flushes
/// first, so every batch before the snapshot's position has been handed to
/// the sinks).
pub fn manager_snapshot<T: BlockMetadata>(
    manager: Arc<BlockManager<T>>,
    events: Arc<EventsManager>,
) -> SnapshotSource {
    Arc::new(move || {
        let ticket = manager.snapshot_barrier()?;
        events.take_snapshot(ticket)
    })
}

/// Counters of a responder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponderStats {
    /// Snapshots sent.
    pub answered: u64,
    /// Requests answered with an error.
    pub refused: u64,
}

/// A running responder; dropping it stops answering.
pub struct SnapshotResponder {
    task: JoinHandle<()>,
    stats: Arc<std::sync::Mutex<ResponderStats>>,
}

impl SnapshotResponder {
    /// Subscribes to `worker`'s snapshot subject and answers every request
    /// with `source`'s snapshot.
    ///
    /// # Errors
    ///
    /// [`NatsError::Subscribe`] if the subscription fails.
    pub async fn start(
        client: async_nats::Client,
        subjects: &Subjects,
        worker: InstanceId,
        source: SnapshotSource,
    ) -> Result<Self, NatsError> {
        let subject = subjects.snapshot(worker);
        let mut requests =
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| NatsError::Subscribe {
                    subject: subject.clone(),
                    message: e.to_string(),
                })?;
        // The subscription must be known to the server before anyone asks.
        client.flush().await.map_err(|e| NatsError::Subscribe {
            subject,
            message: e.to_string(),
        })?;
        let stats = Arc::new(std::sync::Mutex::new(ResponderStats::default()));
        let counters = Arc::clone(&stats);
        let max_payload = client.server_info().max_payload;
        let task = tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let Some(reply) = request.reply else { continue };
                let source = Arc::clone(&source);
                let snapshot = tokio::task::spawn_blocking(move || source())
                    .await
                    .ok()
                    .flatten();
                let refusal = match &snapshot {
                    None => Some("no snapshot available".to_owned()),
                    Some(_) => None,
                };
                let frame = snapshot.map(|s| kvblocks_wire::snapshot::encode(&s));
                let refusal = refusal.or_else(|| {
                    frame
                        .as_ref()
                        .filter(|f| max_payload > 0 && f.len() > max_payload)
                        .map(|f| format!("snapshot of {} bytes exceeds max_payload", f.len()))
                });
                let answer = match (refusal, frame) {
                    (None, Some(frame)) => Ok(frame),
                    (refusal, _) => Err(refusal.unwrap_or_default()),
                };
                {
                    let mut stats = counters.lock().unwrap_or_else(|p| p.into_inner());
                    match &answer {
                        Ok(_) => stats.answered += 1,
                        Err(_) => stats.refused += 1,
                    }
                }
                let sent = match answer {
                    Ok(frame) => client.publish(reply, frame.into()).await,
                    Err(why) => {
                        let mut headers = HeaderMap::new();
                        headers.insert(ERROR_HEADER, why.as_str());
                        client
                            .publish_with_headers(reply, headers, bytes::Bytes::new())
                            .await
                    }
                };
                if let Err(error) = sent {
                    tracing::warn!(%error, "snapshot reply not sent");
                }
            }
        });
        Ok(Self { task, stats })
    }

    /// Counters so far.
    pub fn stats(&self) -> ResponderStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SnapshotResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for SnapshotResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotResponder")
            .field("stats", &self.stats())
            .finish()
    }
}
