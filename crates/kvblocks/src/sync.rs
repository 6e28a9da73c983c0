//! The synchronisation primitives the store uses, in one place so a model
//! checker can replace them.
//!
//! Normal builds use `parking_lot::Mutex` and `std` atomics. Two model
//! checkers can swap them for their own and explore thread interleavings of
//! the real store code:
//!
//! - `RUSTFLAGS="--cfg shuttle"`: shuttle's randomized and PCT schedulers
//!   (`kvblocks-checks/tests/shuttle_races.rs`), fast on whole scenarios, but every atomic
//!   behaves as `SeqCst`, so they never test an ordering choice;
//! - `RUSTFLAGS="--cfg loom"`: loom's exhaustive search, which also models
//!   what `Relaxed`, `Acquire` and `Release` allow (`kvblocks-checks/tests/loom_races.rs`),
//!   on the smallest races.

#[cfg(not(any(shuttle, loom)))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

#[cfg(shuttle)]
pub(crate) use shuttle::sync::atomic::{
    fence, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Per-thread state (the model checker's own under one, so a failing
/// schedule replays exactly).
#[cfg(not(any(shuttle, loom)))]
pub(crate) use std::thread_local;

#[cfg(shuttle)]
pub(crate) use shuttle::thread_local;

#[cfg(loom)]
pub(crate) use loom::thread_local;

/// A value alone on its cache lines (128 bytes: two lines, as adjacent-line
/// prefetchers pair them). For state one thread writes while others read
/// their neighbours: without it, whether two fields share a line depends on
/// where the allocator put the struct, and a run could be fast or slow by
/// luck (measured: whole runs at 0.5x).
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Spin iterations a contended `lock` waits before parking.
#[cfg(not(any(shuttle, loom)))]
const SPINS_BEFORE_PARKING: u32 = 512;

/// A mutex whose `lock` cannot fail.
#[cfg(not(any(shuttle, loom)))]
pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

#[cfg(not(any(shuttle, loom)))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

#[cfg(not(any(shuttle, loom)))]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(parking_lot::Mutex::new(value))
    }

    #[inline(always)]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        if let Some(guard) = self.0.try_lock() {
            return guard;
        }
        self.lock_contended()
    }

    /// The lock if it is free now.
    #[inline(always)]
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.0.try_lock()
    }

    #[cold]
    fn lock_contended(&self) -> MutexGuard<'_, T> {
        for _ in 0..SPINS_BEFORE_PARKING {
            std::hint::spin_loop();
            if !self.0.is_locked() {
                if let Some(guard) = self.0.try_lock() {
                    return guard;
                }
            }
        }
        self.0.lock()
    }
}

/// The model checker's own primitives (`shuttle` or `loom`).
#[cfg(shuttle)]
use shuttle::sync as model;

#[cfg(loom)]
use loom::sync as model;

/// A mutex whose `lock` cannot fail (the model checker's, poisoning ignored).
#[cfg(any(shuttle, loom))]
pub(crate) struct Mutex<T>(model::Mutex<T>);

#[cfg(any(shuttle, loom))]
pub(crate) type MutexGuard<'a, T> = model::MutexGuard<'a, T>;

#[cfg(any(shuttle, loom))]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(model::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}
