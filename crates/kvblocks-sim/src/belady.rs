//! Belady's offline optimum under the replay's serving semantics: the bound
//! every online policy is judged against.
//!
//! The semantics are those of [`crate::replay`] (see the crate docs): a
//! request hits its longest resident prefix, pins every block of its chain,
//! brings its missing blocks in and keeps them pinned until the shared
//! [`crate::schedule::ReleaseSchedule`] releases it; a request whose missing
//! blocks do not fit in free plus unpinned space is rejected. The only
//! difference is the victim: the unpinned resident block whose next use lies
//! farthest in the future (never used again counts as farthest), ties broken
//! by the deeper position, so children go before their parents.
//!
//! One deliberate refinement: a block missed because an earlier block of
//! the chain is absent, but still resident itself, is simply re-pinned and
//! needs no slot. (The manager replay allocates a slot for it and the
//! registration hands back the resident block: the online path may evict
//! one block more than needed there, never fewer.)
//!
//! This module never touches a block manager: it works on the dense ids of
//! [`crate::chain::Chains`] with plain arrays and one binary heap.
//!
//! # The eviction heap
//!
//! A max-heap of `(next use, position, id)` with lazy deletion: an entry is
//! pushed whenever a block becomes unpinned, and is valid only while the
//! block is resident, unpinned and still carries that priority. A block's
//! priority changes at every reference (its next use moves forward), and a
//! block can only be pinned by a reference, so no valid entry is ever
//! pushed twice.

use std::collections::BinaryHeap;
use std::time::Instant;

use crate::chain::Chains;
use crate::prepare::PreparedTrace;
use crate::stats::RunStats;

/// Next use meaning "never again".
pub const NEVER: u32 = u32::MAX;

/// For each reference (flat order), the index of the next request that
/// references the same block, or [`NEVER`].
pub fn next_uses(chains: &Chains) -> Vec<u32> {
    let mut next = vec![NEVER; chains.total_refs()];
    let mut last = vec![NEVER; chains.distinct()];
    for r in (0..chains.len()).rev() {
        let offset = chains.offset(r);
        for (k, &id) in chains.ids(r).iter().enumerate() {
            next[offset + k] = last[id as usize];
            last[id as usize] = r as u32;
        }
    }
    next
}

/// Per-block state of the optimum.
struct State {
    resident: Vec<bool>,
    pins: Vec<u32>,
    /// `(next use, position)` as of the block's latest reference.
    priority: Vec<(u32, u32)>,
    heap: BinaryHeap<(u32, u32, u32)>,
    /// Resident blocks with no pin (the heap's valid entries).
    evictable: usize,
    free: usize,
    evictions: u64,
}

impl State {
    fn new(distinct: usize, capacity: usize) -> Self {
        Self {
            resident: vec![false; distinct],
            pins: vec![0; distinct],
            priority: vec![(NEVER, 0); distinct],
            heap: BinaryHeap::with_capacity(capacity.min(distinct) + 64),
            evictable: 0,
            free: capacity,
            evictions: 0,
        }
    }

    #[inline]
    fn pin(&mut self, id: u32) {
        let i = id as usize;
        if self.pins[i] == 0 {
            self.evictable -= 1;
        }
        self.pins[i] += 1;
    }

    #[inline]
    fn unpin(&mut self, id: u32) {
        let i = id as usize;
        self.pins[i] -= 1;
        if self.pins[i] == 0 {
            self.evictable += 1;
            let (next, position) = self.priority[i];
            self.heap.push((next, position, id));
        }
    }

    /// Takes a slot: a free one, or the farthest-next-use unpinned block's.
    #[inline]
    fn take_slot(&mut self) {
        if self.free > 0 {
            self.free -= 1;
            return;
        }
        while let Some((next, position, id)) = self.heap.pop() {
            let i = id as usize;
            if self.resident[i] && self.pins[i] == 0 && self.priority[i] == (next, position) {
                self.resident[i] = false;
                self.evictable -= 1;
                self.evictions += 1;
                return;
            }
        }
        unreachable!("take_slot called with no free or evictable block");
    }
}

/// Replays `trace` through Belady's optimum with `capacity` blocks.
/// `progress` is called every 1024 requests with the number just done.
pub fn run(trace: &PreparedTrace, capacity: usize, mut progress: impl FnMut(u64)) -> RunStats {
    let chains = &trace.chains;
    let mut state = State::new(chains.distinct(), capacity);
    let mut served = vec![false; chains.len()];
    let mut stats = RunStats::default();
    let start = Instant::now();

    for j in 0..chains.len() {
        for &i in trace.schedule.before(j) {
            if served[i as usize] {
                for &id in chains.ids(i as usize) {
                    state.unpin(id);
                }
            }
        }

        let ids = chains.ids(j);
        let offset = chains.offset(j);
        let hits = ids
            .iter()
            .take_while(|&&id| state.resident[id as usize])
            .count();
        let mut missing = 0usize;
        for (k, &id) in ids.iter().enumerate() {
            if state.resident[id as usize] {
                state.pin(id);
            } else {
                missing += 1;
            }
            state.priority[id as usize] = (trace.next_use[offset + k], k as u32);
        }

        let fits = missing <= state.free + state.evictable;
        if fits {
            for &id in ids {
                let i = id as usize;
                if !state.resident[i] {
                    state.take_slot();
                    state.resident[i] = true;
                    state.pins[i] = 1;
                }
            }
        } else {
            for &id in ids {
                if state.resident[id as usize] {
                    state.unpin(id);
                }
            }
        }
        served[j] = fits;
        stats.record(&trace.requests[j], ids.len(), hits, fits);
        if j % 1024 == 1023 {
            progress(1024);
        }
    }
    progress(chains.len() as u64 % 1024);
    stats.evictions = state.evictions;
    stats.elapsed = start.elapsed();
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::HoldMode;
    use crate::trace::{Request, Trace};

    fn trace(chains: &[&[u64]], window: usize) -> PreparedTrace {
        let requests = chains
            .iter()
            .enumerate()
            .map(|(i, ids)| Request {
                timestamp_ms: i as u64,
                input_length: ids.len() as u64 * 512,
                output_length: 1,
                hash_ids: ids.to_vec(),
            })
            .collect();
        PreparedTrace::new(
            Trace {
                name: "t".into(),
                requests,
            },
            HoldMode::Window(window),
        )
    }

    #[test]
    fn next_use_points_at_the_next_request_with_the_block() {
        let t = trace(&[&[1, 2], &[3], &[1], &[1, 2]], 0);
        assert_eq!(t.next_use, vec![2, 3, NEVER, 3, NEVER, NEVER]);
    }

    #[test]
    fn keeps_the_block_used_soonest() {
        // Capacity 2, no window: after [1], [2], [3] it must keep 1 (used next) over 2.
        let t = trace(&[&[1], &[2], &[3], &[1], &[2]], 0);
        let stats = run(&t, 2, |_| {});
        // 3 evicts 2 (used later than 1) -> [1] hits; [2] misses.
        assert_eq!(stats.block_hits, 1);
        assert_eq!(stats.evictions, 2);
    }

    #[test]
    fn pinned_blocks_are_never_evicted_and_overflow_is_rejected() {
        // Window 1 keeps request 0 pinned while request 1 arrives: 2 + 2 > 3.
        let t = trace(&[&[1, 2], &[3, 4], &[1, 2]], 1);
        let stats = run(&t, 3, |_| {});
        assert_eq!(stats.rejected, 1);
        assert_eq!(stats.block_hits, 2);
    }

    #[test]
    fn infinite_capacity_reaches_the_infinite_cache_rate() {
        let t = trace(&[&[1, 2, 3], &[1, 2, 4], &[1, 5], &[1, 2, 3, 6]], 2);
        let stats = run(&t, 1000, |_| {});
        let rate = stats.block_hit_rate();
        assert!((rate - t.infinite_cache_hit_rate()).abs() < 1e-12);
    }
}
