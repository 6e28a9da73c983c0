//! Match counters that threads bump without sharing a cache line.
//!
//! A lock-free match must still be counted, and one shared atomic would put a
//! contended line on every match. Each thread adds to one of a few padded
//! stripes instead (picked once per thread); a snapshot sums them.

use std::cell::Cell;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;

use crate::sync::{AtomicU64, Ordering};

const STRIPES: usize = 8;

/// One stripe, alone on its cache lines.
#[repr(align(128))]
struct Stripe {
    requested: AtomicU64,
    returned: AtomicU64,
}

/// Hashes requested and blocks returned by lock-free matches.
pub(crate) struct MatchTally {
    stripes: Box<[Stripe]>,
}

/// The stripe the calling thread uses.
fn my_stripe() -> usize {
    static NEXT: StdAtomicUsize = StdAtomicUsize::new(0);
    thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    MINE.with(|mine| {
        if mine.get() == usize::MAX {
            mine.set(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % STRIPES);
        }
        mine.get()
    })
}

impl MatchTally {
    pub(crate) fn new() -> Self {
        Self {
            stripes: (0..STRIPES)
                .map(|_| Stripe {
                    requested: AtomicU64::new(0),
                    returned: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// Counts one match of `requested` hashes that returned `returned` blocks.
    #[inline]
    pub(crate) fn add(&self, requested: usize, returned: usize) {
        let stripe = &self.stripes[my_stripe()];
        stripe
            .requested
            .fetch_add(requested as u64, Ordering::Relaxed);
        stripe
            .returned
            .fetch_add(returned as u64, Ordering::Relaxed);
    }

    /// `(requested, returned)` over all threads so far.
    pub(crate) fn totals(&self) -> (u64, u64) {
        self.stripes.iter().fold((0, 0), |(q, r), s| {
            (
                q + s.requested.load(Ordering::Relaxed),
                r + s.returned.load(Ordering::Relaxed),
            )
        })
    }
}
