//! kvblocks-router: a cluster-wide prefix index fed by the KV cache event
//! streams of many workers, answering "which worker holds the longest prefix
//! of this request".
//!
//! # What goes in
//!
//! Every worker's events, in any encoding `kvblocks-wire` reads, become
//! [`IndexBatch`]es ([`IndexBatch::from_kvblocks`], `from_kvbm_frame`,
//! `from_vllm`, `from_dynamo`): stores (chains with the first block's
//! parent), removals and clears, per tier, with the stream position when the
//! source numbers its batches. Blocks are named by their 64-bit chained
//! sequence hash.
//!
//! # A view that stays exact
//!
//! [`Router::apply`] applies a batch only if it continues its worker's stream:
//! a gap or a stale epoch is a typed [`ApplyError`] (the index unchanged), a
//! duplicate is ignored, a newer epoch (a restarted worker) drops what the old
//! incarnation held. A gap is closed by replaying from the expected position
//! or by [`Router::apply_snapshot`]. A store whose parent the worker does not
//! hold is kept and counted, never dropped with its children; a removed
//! worker's blocks go with it. Every such case is counted in
//! [`RouterMetrics`].
//!
//! # What comes out
//!
//! [`Router::overlap_scores`] gives, per worker and tier, how many leading
//! blocks of a request it holds; [`Router::best_worker`] picks the longest,
//! breaking ties by load ([`Router::set_load`], [`Router::add_load`]).
//!
//! # Queries while batches are applied
//!
//! A batch is applied in slices of 32 block events
//! ([`Router::with_apply_slice`]); a query that arrives meanwhile spins
//! while the current slice finishes and gets in before the next, so it waits
//! about a microsecond, not for the whole batch. It sees every earlier batch
//! whole plus a prefix of the current batch's events, in order (the first
//! blocks of a chain being stored, say, not yet the rest). A worker's stream
//! position ([`Router::worker_status`]) advances only after the batch's last
//! slice: a query that sees the new position sees the whole batch.
//!
//! # Memory
//!
//! One 16-byte table entry per distinct block (for up to 64 worker-tier
//! pairs; each pair is one bit of it), one more map entry per block and 64
//! further pairs, nothing per request. The table shrinks as blocks go and
//! frees everything when none is held. Figures are in `BENCHMARKS.md`.

#![warn(missing_docs)]

mod index;
mod ingest;
mod metrics;
mod router;
mod table;

pub use index::{ApplyError, ApplyOutcome, ClusterIndex, WorkerStatus};
pub use ingest::{BlockKey, IndexBatch, IndexEvent, UnknownMedium, WorkerId};
pub use metrics::{Counters, RouterMetrics};
pub use router::{BestWorker, OverlapScores, Router, WorkerOverlap};
