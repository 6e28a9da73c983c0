//! `kvsim`'s library: replays request traces through the real
//! [`kvblocks::BlockManager`] and measures what each eviction policy buys.
//!
//! The binary (`src/main.rs`) is a thin command line over these modules; the
//! integration tests use them directly.
//!
//! # Pipeline
//!
//! A trace is a list of [`trace::Request`]s, read from Mooncake JSONL
//! ([`trace`]) or generated from a seed ([`workload`], or one of the
//! [`stress`] workloads). It is prepared once
//! ([`prepare::PreparedTrace`]): every request's block ids become a chain of
//! [`kvblocks::SequenceHash`] keys ([`chain`]), and the serving semantics are
//! turned into a release schedule ([`schedule`]). The prepared trace is then
//! replayed per policy and per capacity through the manager ([`replay`]) and
//! through the offline optimum ([`belady`]), both producing
//! [`stats::RunStats`]. [`report`] prints the table, the JSON and the plot.
//!
//! A tiered replay ([`tiered`]) serves the same prepared trace from G1 with
//! lower tiers (host, disk, remote) catching what G1 evicts, one real manager
//! per tier sharing one registry; [`tiers`] parses the tier list, [`cost`]
//! turns hits into prefill time saved, [`tier_report`] prints and plots it.
//!
//! # Serving semantics
//!
//! Fixed so that figures compare across policies, capacities and commits:
//!
//! 1. A request matches its longest resident prefix; those blocks are hits.
//! 2. It allocates its misses, evicting per policy, registers them and then
//!    holds (pins) all its blocks. If the pool cannot supply the misses, the
//!    request is *rejected*: it releases its hits and counts no hit, but its
//!    blocks still count as references.
//! 3. In window mode (default) a request's blocks stay pinned while the next
//!    `window` requests are served and are released right after the
//!    `window`-th of them. In time mode they are released at
//!    `timestamp + output_length / decode_tokens_per_s` (prefill is taken as
//!    instantaneous), before any request arriving at or after that instant.
//!
//! Belady's bound applies the same rules but evicts the unpinned resident
//! block whose next use lies farthest in the future.

#![warn(missing_docs)]

pub mod batching;
pub mod belady;
pub mod chain;
pub mod cost;
pub mod prepare;
pub mod progress;
pub mod replay;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod stress;
pub mod tier_report;
pub mod tiered;
pub mod tiers;
pub mod trace;
pub mod workload;

/// Tokens per block in Mooncake traces (their `hash_ids` name 512-token
/// blocks); also the block size the replayed manager is built with.
pub const BLOCK_TOKENS: u64 = 512;
