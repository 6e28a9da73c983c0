//! Bookkeeping memory per slot of `kvblocks` and `kvbm-logical`, measured
//! with a counting global allocator.
//!
//! For each library (and each eviction backend) the census builds a manager of
//! 1,048,576 slots of 16 tokens, registers every slot (8,192 distinct chains
//! of 128 blocks) and drops every handle, so all slots sit in the inactive
//! pool: the state of a long-running, fully warm cache. It reports live heap
//! bytes (after minus before building the manager) per slot, both for the
//! empty manager and for the full one. Input buffers are allocated before the
//! "before" reading and reused, so only the manager's own memory is counted.
//!
//! Run: `cargo run --release -p kvblocks-compare --bin memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use kvblocks_compare::workload::{chain_triples, register_chain, SEED};
use kvblocks_compare::{selected, Eviction, Kvblocks, Kvbm, Subject, Triple};

/// Slots in the measured pool.
const SLOTS: usize = 1 << 20;
/// Blocks per registered chain (`SLOTS / CHAIN` distinct chains).
const CHAIN: usize = 128;

/// The system allocator, plus a count of the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; the counter is a side
// effect that touches no memory the allocator hands out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout` (caller's contract).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Bytes per slot of one library with one backend.
struct Census {
    library: &'static str,
    eviction: Eviction,
    empty: f64,
    full: f64,
    leaked: isize,
}

fn census<S: Subject>(eviction: Eviction) -> Census {
    let mut triples: Vec<Triple> = Vec::with_capacity(CHAIN);
    let mut hashes: Vec<S::Hash> = Vec::with_capacity(CHAIN);
    let before = live();
    let manager = S::build(SLOTS, 16, eviction);
    let empty = live() - before;
    for chain in 0..(SLOTS / CHAIN) as u64 {
        chain_triples(SEED, chain, CHAIN, &mut triples);
        hashes.clear();
        hashes.extend(triples.iter().map(Triple::key::<S>));
        drop(register_chain(&manager, &hashes));
    }
    assert_eq!(manager.available_blocks(), SLOTS, "every slot is inactive");
    let full = live() - before;
    drop(manager);
    Census {
        library: S::NAME,
        eviction,
        empty: empty as f64 / SLOTS as f64,
        full: full as f64 / SLOTS as f64,
        leaked: live() - before,
    }
}

fn main() {
    let mut rows = Vec::new();
    for eviction in [Eviction::Lru, Eviction::Lineage] {
        if selected(Kvblocks::NAME) {
            rows.push(census::<Kvblocks>(eviction));
        }
        if selected(Kvbm::NAME) {
            rows.push(census::<Kvbm>(eviction));
        }
    }
    println!(
        "{} slots x 16 tokens, {} chains of {} blocks, all registered then inactive",
        SLOTS,
        SLOTS / CHAIN,
        CHAIN
    );
    println!();
    println!("| library | eviction | bytes/slot, empty | bytes/slot, all inactive | kvbm / kvblocks (all inactive) | left after drop |");
    println!("|---|---|---:|---:|---:|---:|");
    for row in &rows {
        let ours = rows
            .iter()
            .find(|r| r.library == Kvblocks::NAME && r.eviction == row.eviction)
            .map_or(f64::NAN, |r| r.full);
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2}x | {} B |",
            row.library,
            row.eviction.name(),
            row.empty,
            row.full,
            row.full / ours,
            row.leaked
        );
    }
}
