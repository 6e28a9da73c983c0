//! Side-by-side benchmarks of `kvblocks` against NVIDIA Dynamo's `kvbm-logical`.
//!
//! Every workload is written once, against the small [`Subject`] trait, and
//! runs unchanged on both block managers. The trait is generic (each workload
//! is monomorphised per library), so it adds no dynamic dispatch to the
//! measured path: a call through it compiles to the library's own call.
//!
//! # Inputs
//!
//! Both libraries key blocks by a 128-bit positional lineage hash with the same
//! bit layout. [`workload`] generates chains of `(current, parent, position)`
//! triples from a fixed seed and each library turns them into its own hash type
//! with [`Subject::hash`], so both sides see identical keys.
//!
//! # What lives where
//!
//! - [`subject`]: the trait and its two implementations.
//! - [`requests`]: the request layers (`SchedulableSequence`) of both
//!   libraries behind one trait, and the lock-step decode batch.
//! - [`workload`]: seeded chain generation, the shared-prefix serving loop and
//!   the "full cache" fixture used by the micro-benchmarks.
//!
//! The criterion benches (`benches/compare.rs`), the adversarial-keys run
//! (`src/bin/adversarial.rs`), the thread-scaling run (`src/bin/scaling.rs`)
//! and the memory census (`src/bin/memory.rs`) are thin drivers over these
//! two modules.

pub mod requests;
pub mod subject;
pub mod workload;

pub use subject::{Eviction, Kvblocks, Kvbm, Subject, Tier};

/// Whether the binaries should run library `name`: yes unless the environment
/// variable `KVCOMPARE_ONLY` names another one (`kvblocks` or `kvbm`).
pub fn selected(name: &str) -> bool {
    std::env::var("KVCOMPARE_ONLY").map_or(true, |only| only == name)
}
pub use workload::{FullCache, KeyShape, ServingLoop, ServingSpec, Triple};
