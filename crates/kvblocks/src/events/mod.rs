//! KV cache events: what a worker tells a cluster router about its cache.
//!
//! A block manager's registered set changes when a block is registered
//! (stored), when it leaves a tier (removed) and when a whole tier is reset
//! (cleared). This module turns those changes into a stream a router can
//! trust: batched, positioned (an epoch per worker incarnation and a sequence
//! number per batch, so gaps, duplicates and restarts are visible), with the
//! tier, the parent and the block size a router needs. It has no async
//! runtime and no wire format (those live in `kvblocks-wire` and the
//! transport crates).
//!
//! # The pieces
//!
//! - [`protocol`]: the types, named after kvbm-logical 1.6.1
//!   ([`KvCacheEvent`], [`KvCacheEvents`], [`KvbmCacheEvents`]).
//! - [`policy`]: which blocks are announced ([`AllEventsPolicy`],
//!   [`PowerOfTwoPolicy`]).
//! - [`emitter`]: [`EventEmitter`], the handle the store pushes to, under its
//!   own locks, in nanoseconds.
//! - [`batcher`]: [`EventBatcher`], closing batches on size, on a tier switch
//!   and on a deadline driven by the caller's clock, with stores and removals
//!   of one tier in one batch in their order ([`KvCacheEvents::Mixed`] when
//!   it holds both kinds); with [`BatchingConfig::with_mixed_kinds`]`(false)`
//!   also on a kind switch, as kvbm-logical batches.
//! - [`manager`]: [`EventsManager`], which flushes the emitters' buffer through
//!   the batcher, assigns stream positions and publishes to every
//!   [`EventSink`], outside every lock of the store.
//! - [`sink`]: the sink trait and an in-process [`BroadcastSink`] that reports
//!   lag instead of hiding it.
//! - [`replay`]: [`RegisteredSet`], the reference consumer, and
//!   [`WorkerSnapshot`], a registered set with the position it is valid at.
//!
//! # Exactly once
//!
//! Replaying a worker's batches in order with [`RegisteredSet::apply`] gives
//! exactly its registered set per tier, provided the store reports each
//! change once (see [`emitter`] for where the store must call what). A
//! consumer that missed batches (a lagging receiver, a failed sink) sees a
//! gap in the positions and reloads from a [`WorkerSnapshot`].
//!
//! ```
//! use std::time::Instant;
//! use kvblocks::events::{EventsManager, RegisteredSet};
//! use kvblocks::{LogicalLayoutHandle::G1, SequenceHash};
//!
//! let events = EventsManager::builder().instance_id(1).block_size(16).epoch(1).build();
//! let mut rx = events.subscribe();
//! let emitter = events.emitter();
//! let a = SequenceHash::root(10);
//! let b = a.extend(11);
//! emitter.stored(G1, None, &[a, b]);
//! emitter.removed(G1, &[b]);
//! events.flush_all();
//!
//! let mut replayed = RegisteredSet::new();
//! while let Ok(batch) = rx.try_recv() {
//!     replayed.apply(&batch)?;
//! }
//! assert_eq!(replayed.sorted(G1), vec![a]);
//! # Ok::<(), kvblocks::events::ReplayError>(())
//! ```

pub mod batcher;
mod buffer;
pub mod emitter;
pub mod manager;
pub mod policy;
pub mod protocol;
pub mod replay;
pub mod sink;

pub use batcher::{Batch, BatcherStats, BatchingConfig, EventBatcher};
pub use emitter::{EventEmitter, SnapshotTicket};
pub use manager::{epoch_from_clock, EventsManager, EventsManagerBuilder, EventsStats};
pub use policy::{AllEventsPolicy, EventEmissionPolicy, PowerOfTwoPolicy};
pub use protocol::{
    is_parent_of, BlockChange, EventKind, InstanceId, KvCacheEvent, KvCacheEvents, KvbmCacheEvents,
    StoredBlock, StreamPosition,
};
pub use replay::{RegisteredSet, ReplayError, TierSnapshot, WorkerSnapshot};
pub use sink::{BroadcastReceiver, BroadcastSink, EventSink, RecvError, SinkError};
