//! kvblocks-nats: kvblocks' KV cache events over NATS JetStream, so a
//! cluster router on another machine keeps an exact view of every worker's
//! cache through broker restarts, router restarts and worker restarts.
//!
//! # Publishing
//!
//! [`NatsPublisher`] owns a task on the caller's tokio runtime and hands out
//! a [`NatsSink`], an [`EventSink`](kvblocks::events::EventSink) to add to a
//! worker's events manager. Batches go to `<events_prefix>.<worker>` in one
//! stream (created if missing), encoded as kvbm-logical's extended frame
//! ([`kvblocks_wire::kvbm`]), with a `Nats-Msg-Id` of
//! `<worker>:<epoch>:<seq>` so a retry across a broker restart is stored
//! once. The buffer between the sink and the task is bounded; what does not
//! fit is dropped and counted ([`PublisherStats`]), never silently.
//!
//! # Consuming
//!
//! [`EventConsumer`] is a durable pull consumer that feeds a
//! [`kvblocks_router::Router`]. It resumes after its last acknowledged batch,
//! detects gaps from the stream positions, and closes them by replaying the
//! worker's subject or, when the stream no longer holds what it needs, by
//! asking the worker's [`SnapshotResponder`] for a snapshot
//! ([`ConsumerStats`] counts each case).
//!
//! # Snapshots
//!
//! [`SnapshotResponder`] answers `<snapshot_prefix>.<worker>` with the
//! worker's registered set and the stream position it is valid at
//! ([`manager_snapshot`] takes it from a block manager and its events
//! manager).
//!
//! # Example
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kvblocks::events::EventsManager;
//! use kvblocks::{BlockManager, SequenceHash};
//! use kvblocks_nats::*;
//! use kvblocks_router::{Router, WorkerId};
//!
//! #[derive(Clone)]
//! struct Gpu;
//!
//! let subjects = Subjects::new("kvblocks.events", "kvblocks.snapshot")?;
//! let settings = StreamSettings::new("KVBLOCKS", subjects.clone())?;
//!
//! // A worker: its manager reports to an events manager that publishes to NATS.
//! let client = connect("127.0.0.1:4222").await?;
//! let publisher = NatsPublisher::start(client.clone(), PublisherConfig::new(settings.clone())).await?;
//! let events = Arc::new(EventsManager::builder().instance_id(7).block_size(16).track_registered(true).sink(publisher.sink()).build());
//! let manager = Arc::new(BlockManager::<Gpu>::builder().block_count(64).block_size(16)
//!     .event_manager(events.clone()).build()?);
//! let _responder = SnapshotResponder::start(client.clone(), &subjects, 7,
//!     manager_snapshot(manager.clone(), events.clone())).await?;
//!
//! // The router: a durable consumer feeding the index.
//! let router = Arc::new(Router::new());
//! let _consumer = EventConsumer::start(client, ConsumerConfig::new(settings, "router"), router.clone()).await?;
//!
//! // Serve: register a block, flush the events (the serving loop's tick).
//! let key = SequenceHash::root(1);
//! let block = manager.allocate_blocks(1).ok_or("pool empty")?.pop().ok_or("none")?;
//! let held = manager.register_block(block.stage(key, 16)?);
//! events.flush_all();
//! // Soon after: router.holds(WorkerId(7), LogicalLayoutHandle::G1, key.current_sequence_hash())
//! # drop(held); Ok(()) }
//! ```

#![warn(missing_docs)]

mod consumer;
mod error;
mod publisher;
mod recovery;
mod responder;
mod stream;
mod subjects;

pub use consumer::{BatchObserver, ConsumerConfig, ConsumerStats, EventConsumer};
pub use error::{ConfigError, MessageError, NatsError, SnapshotError};
pub use publisher::{NatsPublisher, NatsSink, PublisherConfig, PublisherStats};
pub use responder::{
    manager_snapshot, ResponderStats, SnapshotResponder, SnapshotSource, ERROR_HEADER,
};
pub use stream::{connect, ensure_stream, StreamSettings};
pub use subjects::{msg_id, parse_msg_id, Subjects, MSG_ID_HEADER};
