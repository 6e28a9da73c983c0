//! Closing a gap in one worker's stream: replay the worker's subject from
//! JetStream, or, when the stream no longer holds the batch the router
//! needs, ask the worker for a snapshot over NATS.
//!
//! Replay reads the worker's subject with an ephemeral ordered consumer from
//! the oldest batch the stream still holds, skips (by the `Nats-Msg-Id`
//! header, without decoding) everything before the position the router
//! needs, and applies from there up to the message that revealed the gap. It
//! gives up at the first batch past the needed position (the needed one is
//! gone: the stream's limits discarded it, or the publisher dropped it). The
//! scan is linear in the worker's retained batches; a stream with a size or
//! age limit bounds it. This module never acknowledges anything.

use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream::Stream as JsStream;
use futures_util::StreamExt;
use kvblocks::events::{InstanceId, StreamPosition, WorkerSnapshot};
use kvblocks_router::{ApplyError, IndexBatch, Router};

use crate::error::SnapshotError;
use crate::responder::ERROR_HEADER;
use crate::subjects::{parse_msg_id, Subjects};
use async_nats::header::NATS_MESSAGE_ID;

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Replay {
    /// Batches applied from the replay.
    pub(crate) applied: u64,
    /// Whether the needed position was found.
    pub(crate) found: bool,
}

/// Replays `worker`'s batches from `expected` up to (not including) stream
/// sequence `until` into `router`.
pub(crate) async fn replay(
    stream: &JsStream,
    subjects: &Subjects,
    router: &Router,
    worker: InstanceId,
    expected: StreamPosition,
    until: u64,
    idle: Duration,
) -> Result<Replay, String> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subjects.events(worker),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut outcome = Replay::default();
    loop {
        let message = match tokio::time::timeout(idle, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(error))) => return Err(error.to_string()),
            Ok(None) | Err(_) => return Ok(outcome),
        };
        let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
        if seq >= until {
            return Ok(outcome);
        }
        let position = message
            .headers
            .as_ref()
            .and_then(|h| h.get(NATS_MESSAGE_ID))
            .and_then(|id| parse_msg_id(id.as_str()))
            .map(|(_, position)| position);
        if !outcome.found {
            match position {
                Some(p) if p < expected => continue,
                Some(p) if p == expected => outcome.found = true,
                // Past the needed batch, or a batch we cannot place: the
                // needed one is not in the stream.
                _ => return Ok(outcome),
            }
        }
        let Some(batch) = kvblocks_wire::kvbm::decode(&message.payload)
            .ok()
            .and_then(|frame| frame.into_batch())
            .filter(|batch| batch.instance_id == worker)
        else {
            return Ok(outcome);
        };
        match router.apply(&IndexBatch::from_kvblocks(&batch)) {
            Ok(_) => outcome.applied += 1,
            Err(ApplyError::StaleEpoch { .. }) => {}
            Err(_) => return Ok(outcome),
        }
    }
}

/// Asks `worker`'s responder for its snapshot.
pub(crate) async fn request_snapshot(
    client: &async_nats::Client,
    subjects: &Subjects,
    worker: InstanceId,
    timeout: Duration,
) -> Result<WorkerSnapshot, SnapshotError> {
    let request = async_nats::Request::new()
        .payload(bytes::Bytes::new())
        .timeout(Some(timeout));
    let reply = client
        .send_request(subjects.snapshot(worker), request)
        .await
        .map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => SnapshotError::NoResponder(worker),
            RequestErrorKind::TimedOut => SnapshotError::TimedOut(worker),
            _ => SnapshotError::Transport {
                worker,
                message: e.to_string(),
            },
        })?;
    if let Some(why) = reply.headers.as_ref().and_then(|h| h.get(ERROR_HEADER)) {
        return Err(SnapshotError::Refused {
            worker,
            message: why.as_str().to_owned(),
        });
    }
    let snapshot = kvblocks_wire::snapshot::decode(&reply.payload)
        .map_err(|source| SnapshotError::Decode { worker, source })?;
    if snapshot.instance_id != worker {
        return Err(SnapshotError::WrongWorker {
            asked: worker,
            got: snapshot.instance_id,
        });
    }
    Ok(snapshot)
}
