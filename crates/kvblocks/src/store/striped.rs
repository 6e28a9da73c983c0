//! Match and scan counters that threads bump without sharing a cache line.
//!
//! A lock-free match must still be counted, and one shared atomic would put a
//! contended line on every match. Each thread adds to one of a few padded
//! stripes instead (picked once per thread); a snapshot sums them.

use std::cell::Cell;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;

use crate::sync::{AtomicU64, Ordering};

const STRIPES: usize = 8;

/// One stripe, alone on its cache lines: hashes requested and blocks
/// returned, by matches (`[0]`, `[1]`) and by scans (`[2]`, `[3]`).
#[repr(align(128))]
struct Stripe {
    counts: [AtomicU64; 4],
}

/// Hashes requested and blocks returned by matches and scans.
pub(crate) struct MatchTally {
    stripes: Box<[Stripe]>,
}

/// The stripe the calling thread uses.
fn my_stripe() -> usize {
    static NEXT: StdAtomicUsize = StdAtomicUsize::new(0);
    #[cfg(not(loom))]
    crate::sync::thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    // (loom's macro takes no `const` initialiser.)
    #[cfg(loom)]
    crate::sync::thread_local! {
        static MINE: Cell<usize> = Cell::new(usize::MAX);
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
                    counts: [(); 4].map(|_| AtomicU64::new(0)),
                })
                .collect(),
        }
    }

    #[inline]
    fn add(&self, first: usize, requested: usize, returned: usize) {
        let counts = &self.stripes[my_stripe()].counts;
        // ORDERING: Relaxed; statistics.
        counts[first].fetch_add(requested as u64, Ordering::Relaxed);
        counts[first + 1].fetch_add(returned as u64, Ordering::Relaxed);
    }

    /// Counts one match of `requested` hashes that returned `returned` blocks.
    #[inline]
    pub(crate) fn add_match(&self, requested: usize, returned: usize) {
        self.add(0, requested, returned);
    }

    /// Counts one scan of `requested` hashes that returned `returned` blocks.
    #[inline]
    pub(crate) fn add_scan(&self, requested: usize, returned: usize) {
        self.add(2, requested, returned);
    }

    /// `[match requested, match returned, scan requested, scan returned]`
    /// over all threads so far.
    pub(crate) fn totals(&self) -> [u64; 4] {
        let mut totals = [0; 4];
        for stripe in self.stripes.iter() {
            for (total, count) in totals.iter_mut().zip(&stripe.counts) {
                *total += count.load(Ordering::Relaxed);
            }
        }
        totals
    }
}
