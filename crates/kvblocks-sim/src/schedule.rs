//! When each request lets go of its blocks: the one place the hold
//! semantics are decided, shared by the manager replay and Belady's bound.
//!
//! The schedule is computed once per trace and mode, as "before arrival `j`,
//! release these requests, in this order". Replay and Belady both walk it, so
//! the two can never disagree on who holds what.
//!
//! - [`HoldMode::Window`]: request `i` stays pinned while the next `window`
//!   requests are served and is released right after the `window`-th, i.e.
//!   before arrival `i + window + 1`. With `window = 0` a request releases
//!   its blocks as soon as it is served.
//! - [`HoldMode::Time`]: request `i` is released at
//!   `timestamp + output_length * 1000 / decode_tokens_per_s` ms. Prefill is
//!   taken as instantaneous (the request decodes from its arrival on). Every
//!   release due at or before an arrival's timestamp happens before that
//!   arrival, earliest first (ties by request order), via a binary heap.
//!   Requests are taken in file order; timestamps must not decrease (the
//!   trace parser refuses a file where they do; a trace built in code that
//!   breaks this gets releases in a meaningless order, never a panic).
//!
//! Whatever is still held at the end of the trace is released last.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::trace::Request;

/// How long a request holds its blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HoldMode {
    /// Until this many later requests have been served.
    Window(usize),
    /// Until its decode finishes at this many tokens per second.
    Time {
        /// Decode speed of one request, tokens per second (> 0).
        decode_tokens_per_s: f64,
    },
}

impl HoldMode {
    /// A short label for tables and JSON: `window=16` or `time@30tok/s`.
    pub fn label(&self) -> String {
        match self {
            HoldMode::Window(window) => format!("window={window}"),
            HoldMode::Time {
                decode_tokens_per_s,
            } => format!("time@{decode_tokens_per_s}tok/s"),
        }
    }
}

/// The release order: which requests let go before each arrival.
#[derive(Debug, Clone)]
pub struct ReleaseSchedule {
    /// `offsets[j]..offsets[j + 1]` indexes `order` for "before arrival `j`";
    /// `j == requests` is the end of the trace.
    offsets: Vec<usize>,
    /// Request indices in release order.
    order: Vec<u32>,
    /// Mean number of requests holding blocks at an arrival (after releases).
    mean_in_flight: f64,
}

impl ReleaseSchedule {
    /// Computes the schedule for `requests` under `mode`.
    pub fn build(requests: &[Request], mode: HoldMode) -> Self {
        let n = requests.len();
        let mut offsets = Vec::with_capacity(n + 2);
        let mut order = Vec::with_capacity(n);
        let mut in_flight_sum = 0usize;
        match mode {
            HoldMode::Window(window) => {
                for j in 0..n {
                    offsets.push(order.len());
                    if j > window {
                        order.push((j - window - 1) as u32);
                    }
                    in_flight_sum += j.min(window);
                }
                offsets.push(order.len());
                let first_unreleased = n.saturating_sub(window.saturating_add(1));
                order.extend((first_unreleased..n).map(|i| i as u32));
            }
            HoldMode::Time {
                decode_tokens_per_s,
            } => {
                let ms_per_token = 1000.0 / decode_tokens_per_s;
                let mut heap: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
                for (j, request) in requests.iter().enumerate() {
                    offsets.push(order.len());
                    while let Some(&Reverse((due, i))) = heap.peek() {
                        if due > request.timestamp_ms {
                            break;
                        }
                        heap.pop();
                        order.push(i);
                    }
                    in_flight_sum += heap.len();
                    let hold = (request.output_length as f64 * ms_per_token).ceil() as u64;
                    heap.push(Reverse((
                        request.timestamp_ms.saturating_add(hold),
                        j as u32,
                    )));
                }
                offsets.push(order.len());
                while let Some(Reverse((_, i))) = heap.pop() {
                    order.push(i);
                }
            }
        }
        offsets.push(order.len());
        Self {
            offsets,
            order,
            mean_in_flight: if n == 0 {
                0.0
            } else {
                in_flight_sum as f64 / n as f64
            },
        }
    }

    /// Requests to release right before arrival `j` (`j == requests` for the
    /// end of the trace), in order.
    #[inline]
    pub fn before(&self, j: usize) -> &[u32] {
        &self.order[self.offsets[j]..self.offsets[j + 1]]
    }

    /// Mean number of earlier requests still holding blocks when a request
    /// arrives: the effective window of a time-mode run.
    pub fn mean_in_flight(&self) -> f64 {
        self.mean_in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, out: u64) -> Request {
        Request {
            timestamp_ms: ms,
            input_length: 1,
            output_length: out,
            hash_ids: vec![1],
        }
    }

    #[test]
    fn window_releases_after_the_window_th_later_request() {
        let requests: Vec<Request> = (0..5).map(|i| at(i, 1)).collect();
        let schedule = ReleaseSchedule::build(&requests, HoldMode::Window(2));
        let all: Vec<&[u32]> = (0..=5).map(|j| schedule.before(j)).collect();
        assert_eq!(all, vec![&[][..], &[], &[], &[0], &[1], &[2, 3, 4]]);
    }

    #[test]
    fn window_zero_releases_immediately() {
        let requests: Vec<Request> = (0..3).map(|i| at(i, 1)).collect();
        let schedule = ReleaseSchedule::build(&requests, HoldMode::Window(0));
        let all: Vec<&[u32]> = (0..=3).map(|j| schedule.before(j)).collect();
        assert_eq!(all, vec![&[][..], &[0], &[1], &[2]]);
    }

    #[test]
    fn the_largest_window_never_releases_before_the_end() {
        let requests: Vec<Request> = (0..3).map(|i| at(i, 1)).collect();
        let schedule = ReleaseSchedule::build(&requests, HoldMode::Window(usize::MAX));
        let all: Vec<&[u32]> = (0..=3).map(|j| schedule.before(j)).collect();
        assert_eq!(all, vec![&[][..], &[], &[], &[0, 1, 2]]);
    }

    #[test]
    fn time_mode_releases_by_decode_end() {
        // 10 tok/s: request 0 holds 1000 ms, request 1 holds 100 ms.
        let requests = vec![at(0, 10), at(50, 1), at(150, 1), at(1000, 1)];
        let schedule = ReleaseSchedule::build(
            &requests,
            HoldMode::Time {
                decode_tokens_per_s: 10.0,
            },
        );
        let all: Vec<&[u32]> = (0..=4).map(|j| schedule.before(j)).collect();
        assert_eq!(all, vec![&[][..], &[], &[1], &[2, 0], &[3]]);
    }
}
