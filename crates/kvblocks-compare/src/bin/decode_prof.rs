//! Profiling harness (not a benchmark): the sequence bin's decode workload
//! with the timed steps in one non-inlined function, for
//! `valgrind --tool=callgrind --toggle-collect='decode_prof::steps*'`.

use kvblocks_compare::requests::{DecodeBatch, KvbmRequests, OursRequests, Requests};

#[inline(never)]
fn steps<R: Requests>(batch: &mut DecodeBatch<R>) -> usize {
    batch.step()
}

fn run<R: Requests>(windows: usize) {
    let mut batch = DecodeBatch::<R>::new(256, 512, 1024, 16);
    batch.warm_up();
    let mut tokens = 0;
    for _ in 0..windows * 16 {
        batch.recycle();
        tokens += steps(&mut batch);
    }
    println!("{} tokens: {tokens}", R::NAME);
}

fn main() {
    let windows = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    if kvblocks_compare::selected("kvblocks") {
        run::<OursRequests>(windows);
    }
    if kvblocks_compare::selected("kvbm") {
        run::<KvbmRequests>(windows);
    }
}
