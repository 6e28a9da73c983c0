//! The figures one run (one policy, one capacity, one trace) produces, and
//! how they are counted. Shared by the manager replay and Belady's bound so
//! both count alike.
//!
//! - A *block reference* is one entry of one request's `hash_ids`; every
//!   request's references count, served or rejected.
//! - A *block hit* is a reference inside the longest resident prefix of a
//!   served request. A rejected request counts no hit.
//! - *Prefill tokens saved* per served request: `min(hits * 512,
//!   input_length)` (the last block of a prompt is usually partial).

use std::time::Duration;

use serde::Serialize;

use crate::trace::Request;
use crate::BLOCK_TOKENS;

/// Counters of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    /// Requests replayed.
    pub requests: u64,
    /// Requests that could not get their missing blocks.
    pub rejected: u64,
    /// Block references (all requests).
    pub block_refs: u64,
    /// Block references served from cache.
    pub block_hits: u64,
    /// Served requests with at least one hit.
    pub requests_with_hit: u64,
    /// Prompt tokens whose prefill the hits saved.
    pub prefill_tokens_saved: u64,
    /// Registered blocks evicted to make room.
    pub evictions: u64,
    /// Pool shards of the replayed manager as built
    /// (`BlockManager::pool_shards`); 0 for Belady's bound, which has no
    /// pool (and then left out of the JSON).
    #[serde(skip_serializing_if = "is_zero")]
    pub pool_shards: usize,
    /// Wall time of the replay loop (not of preparing the trace).
    #[serde(skip)]
    pub elapsed: Duration,
}

impl RunStats {
    /// Records one request: `hits` leading blocks hit, `served` unless rejected.
    #[inline]
    pub fn record(&mut self, request: &Request, refs: usize, hits: usize, served: bool) {
        self.requests += 1;
        self.block_refs += refs as u64;
        if !served {
            self.rejected += 1;
            return;
        }
        self.block_hits += hits as u64;
        if hits > 0 {
            self.requests_with_hit += 1;
            self.prefill_tokens_saved += (hits as u64 * BLOCK_TOKENS).min(request.input_length);
        }
    }

    /// Share of block references that hit, in `[0, 1]`.
    pub fn block_hit_rate(&self) -> f64 {
        ratio(self.block_hits, self.block_refs)
    }

    /// Share of requests with at least one hit, in `[0, 1]`.
    pub fn request_hit_rate(&self) -> f64 {
        ratio(self.requests_with_hit, self.requests)
    }

    /// Replay time per block reference, in nanoseconds.
    pub fn ns_per_block(&self) -> f64 {
        if self.block_refs == 0 {
            0.0
        } else {
            self.elapsed.as_nanos() as f64 / self.block_refs as f64
        }
    }
}

fn is_zero(value: &usize) -> bool {
    *value == 0
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_requests_count_references_but_no_hits() {
        let request = Request {
            timestamp_ms: 0,
            input_length: 1100,
            output_length: 1,
            hash_ids: vec![1, 2, 3],
        };
        let mut stats = RunStats::default();
        stats.record(&request, 3, 3, true);
        stats.record(&request, 3, 2, false);
        assert_eq!(stats.block_refs, 6);
        assert_eq!(stats.block_hits, 3);
        assert_eq!(stats.prefill_tokens_saved, 1100);
        assert_eq!(stats.rejected, 1);
        assert_eq!(stats.request_hit_rate(), 0.5);
    }
}
