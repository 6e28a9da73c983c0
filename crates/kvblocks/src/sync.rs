//! The synchronisation primitives the store uses, in one place so a model
//! checker can replace them.
//!
//! Normal builds use `parking_lot::Mutex` and `std` atomics. Under
//! `RUSTFLAGS="--cfg shuttle"` they come from `shuttle`, whose scheduler then
//! explores thread interleavings of the real store code (see
//! `tests/shuttle_races.rs`).

#[cfg(not(shuttle))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};

#[cfg(shuttle)]
pub(crate) use shuttle::sync::atomic::{fence, AtomicU64, Ordering};

/// A mutex whose `lock` cannot fail.
#[cfg(not(shuttle))]
pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

#[cfg(not(shuttle))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

#[cfg(not(shuttle))]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(parking_lot::Mutex::new(value))
    }

    #[inline(always)]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock()
    }
}

/// A mutex whose `lock` cannot fail (shuttle's, poisoning ignored).
#[cfg(shuttle)]
pub(crate) struct Mutex<T>(shuttle::sync::Mutex<T>);

#[cfg(shuttle)]
pub(crate) type MutexGuard<'a, T> = shuttle::sync::MutexGuard<'a, T>;

#[cfg(shuttle)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(shuttle::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}
