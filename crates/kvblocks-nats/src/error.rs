//! The crate's errors, one enum per boundary: configuration, talking to the
//! broker, asking a worker for its snapshot, and a message the consumer
//! could not use.

use kvblocks::events::{InstanceId, StreamPosition};
use kvblocks_wire::DecodeError;

/// A configuration the crate refuses before touching the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A subject prefix with an empty token, a wildcard or white space.
    #[error("bad subject prefix {0:?}")]
    BadPrefix(String),
    /// The snapshot prefix is inside the events prefix or the other way round.
    #[error("the snapshot prefix overlaps the events prefix")]
    OverlappingPrefixes,
    /// A stream or consumer name JetStream would refuse.
    #[error("bad name {0:?}: use letters, digits, '-' and '_'")]
    BadName(String),
    /// A buffer of zero batches.
    #[error("the publisher's buffer must hold at least one batch")]
    ZeroBuffer,
}

/// The broker refused or could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No connection to the broker (down at start, wrong address).
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The address tried.
        url: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// The stream could not be found or created.
    #[error("stream {stream}: {message}")]
    Stream {
        /// The stream.
        stream: String,
        /// What the broker said.
        message: String,
    },
    /// The durable consumer could not be found or created.
    #[error("consumer {consumer} on {stream}: {message}")]
    Consumer {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
        /// What the broker said.
        message: String,
    },
    /// A subscription failed.
    #[error("subscribe to {subject}: {message}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// What the client said.
        message: String,
    },
}

/// A snapshot request that brought no snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// No responder listens for this worker (it is gone, or never ran one).
    #[error("worker {0}: no snapshot responder")]
    NoResponder(InstanceId),
    /// The responder did not answer in time.
    #[error("worker {0}: snapshot request timed out")]
    TimedOut(InstanceId),
    /// The responder answered with an error (it has no snapshot support, or
    /// the snapshot is too large for one message).
    #[error("worker {worker}: {message}")]
    Refused {
        /// The worker.
        worker: InstanceId,
        /// Its reason.
        message: String,
    },
    /// The reply was not a snapshot frame.
    #[error("worker {worker}: bad snapshot frame: {source}")]
    Decode {
        /// The worker.
        worker: InstanceId,
        /// Why.
        source: DecodeError,
    },
    /// The reply is another worker's snapshot.
    #[error("asked worker {asked} for a snapshot, got worker {got}'s")]
    WrongWorker {
        /// The worker asked.
        asked: InstanceId,
        /// The worker named in the reply.
        got: InstanceId,
    },
    /// Anything else the client reported.
    #[error("worker {worker}: {message}")]
    Transport {
        /// The worker.
        worker: InstanceId,
        /// What the client said.
        message: String,
    },
}

/// A message the consumer could not apply; it is acknowledged (so it is not
/// redelivered forever), counted, and never reaches the index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The subject does not name a worker under the events prefix.
    #[error("subject {0:?} names no worker")]
    BadSubject(String),
    /// The payload is not a kvblocks frame with a stream position.
    #[error("worker {worker}: undecodable batch: {source}")]
    Decode {
        /// The worker the subject names.
        worker: InstanceId,
        /// Why.
        source: DecodeError,
    },
    /// A frame without our extension (no tier, no position).
    #[error("worker {0}: frame without a stream position")]
    Unsequenced(InstanceId),
    /// The frame names another worker than its subject.
    #[error("subject names worker {subject}, frame names worker {frame}")]
    WorkerMismatch {
        /// The worker of the subject.
        subject: InstanceId,
        /// The worker of the frame.
        frame: InstanceId,
    },
    /// A worker the consumer was told not to expect.
    #[error("unknown worker {0}")]
    UnknownWorker(InstanceId),
    /// A batch from an incarnation older than the one followed.
    #[error("worker {worker}: stale epoch at {got:?}")]
    StaleEpoch {
        /// The worker.
        worker: InstanceId,
        /// The position that came.
        got: StreamPosition,
    },
}
