//! Typed values attached to a registration handle.
//!
//! A handle carries, per Rust type, either one *unique* value (set again to
//! replace it) or any number of *multiple* values, never both for one type.
//! Readers and writers get the values through closures that run under the
//! handle's attachments lock ([`TypedAttachments`]); the values are dropped
//! with the handle.
//!
//! # Calling back from a closure
//!
//! A closure may call into the registry, the managers and *other* handles
//! (the attachments lock is taken only after any registry lock, see
//! [`crate::registry`]). It must not reach the attachments of the *same*
//! handle again (a nested `get`, `attach` or `attach_unique`): the lock is
//! not re-entrant, and instead of deadlocking, such a call panics with a
//! message naming the mistake.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;

use super::handle::HandleInner;
use crate::sync::MutexGuard;

/// A value of one type attached in two ways.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// `attach_unique` for a type already attached with `attach`.
    #[error("type {0:?} is already attached as a multiple attachment")]
    TypeAlreadyRegisteredAsMultiple(TypeId),
    /// `attach` for a type already attached with `attach_unique`.
    #[error("type {0:?} is already attached as a unique attachment")]
    TypeAlreadyRegisteredAsUnique(TypeId),
}

type Value = Box<dyn Any + Send + Sync>;

/// Everything attached to one handle.
#[derive(Default)]
pub(crate) struct AttachmentStore {
    unique: HashMap<TypeId, Value>,
    multiple: HashMap<TypeId, Vec<Value>>,
}

impl std::fmt::Debug for AttachmentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentStore")
            .field("unique_types", &self.unique.len())
            .field("multiple_types", &self.multiple.len())
            .finish()
    }
}

impl AttachmentStore {
    /// Sets the unique value of `V`, replacing an earlier one.
    pub(crate) fn set_unique<V: Any + Send + Sync>(
        &mut self,
        value: V,
    ) -> Result<(), AttachmentError> {
        let id = TypeId::of::<V>();
        if self.multiple.contains_key(&id) {
            return Err(AttachmentError::TypeAlreadyRegisteredAsMultiple(id));
        }
        self.unique.insert(id, Box::new(value));
        Ok(())
    }

    /// Adds one more value of `V`.
    pub(crate) fn push<V: Any + Send + Sync>(&mut self, value: V) -> Result<(), AttachmentError> {
        let id = TypeId::of::<V>();
        if self.unique.contains_key(&id) {
            return Err(AttachmentError::TypeAlreadyRegisteredAsUnique(id));
        }
        self.multiple.entry(id).or_default().push(Box::new(value));
        Ok(())
    }
}

thread_local! {
    /// Handles whose attachments lock this thread holds (to turn a
    /// re-entrant call into a panic instead of a deadlock).
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// The attachments lock of one handle, held by this thread.
pub(crate) struct Locked<'a> {
    store: MutexGuard<'a, AttachmentStore>,
    key: usize,
}

impl Locked<'_> {
    /// Locks `inner`'s attachments.
    ///
    /// # Panics
    ///
    /// If this thread already holds them (a closure reached back into the
    /// same handle).
    pub(crate) fn lock(inner: &HandleInner) -> Locked<'_> {
        let key = std::ptr::from_ref(inner) as usize;
        let reentered = HELD.with(|held| held.borrow().contains(&key));
        assert!(
            !reentered,
            "an attachment closure reached the attachments of its own registration handle \
             ({:?}); the attachments lock is not re-entrant",
            inner.hash()
        );
        let store = inner.attachments.lock();
        HELD.with(|held| held.borrow_mut().push(key));
        Locked { store, key }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(at) = held.iter().rposition(|&k| k == self.key) {
                held.swap_remove(at);
            }
        });
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = AttachmentStore;
    fn deref(&self) -> &AttachmentStore {
        &self.store
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut AttachmentStore {
        &mut self.store
    }
}

/// The values of type `T` attached to one handle
/// ([`BlockRegistrationHandle::get`](super::BlockRegistrationHandle::get)).
pub struct TypedAttachments<'a, T> {
    pub(crate) inner: &'a HandleInner,
    pub(crate) _type: PhantomData<fn() -> T>,
}

impl<T: Any + Send + Sync> TypedAttachments<'_, T> {
    /// Runs `f` on the unique value of `T`, if there is one.
    pub fn with_unique<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let store = Locked::lock(self.inner);
        let value = store.unique.get(&TypeId::of::<T>())?.downcast_ref::<T>()?;
        Some(f(value))
    }

    /// Runs `f` on the unique value of `T`, mutably, if there is one.
    pub fn with_unique_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut store = Locked::lock(self.inner);
        let value = store
            .unique
            .get_mut(&TypeId::of::<T>())?
            .downcast_mut::<T>()?;
        Some(f(value))
    }

    /// Runs `f` on every multiple value of `T`, in attachment order.
    pub fn with_multiple<R>(&self, f: impl FnOnce(&[&T]) -> R) -> R {
        let store = Locked::lock(self.inner);
        let values: Vec<&T> = store
            .multiple
            .get(&TypeId::of::<T>())
            .map(|v| v.iter().filter_map(|b| b.downcast_ref::<T>()).collect())
            .unwrap_or_default();
        f(&values)
    }

    /// Runs `f` on every multiple value of `T`, mutably.
    pub fn with_multiple_mut<R>(&self, f: impl FnOnce(&mut [&mut T]) -> R) -> R {
        let mut store = Locked::lock(self.inner);
        let mut values: Vec<&mut T> = store
            .multiple
            .get_mut(&TypeId::of::<T>())
            .map(|v| v.iter_mut().filter_map(|b| b.downcast_mut::<T>()).collect())
            .unwrap_or_default();
        f(&mut values)
    }

    /// Runs `f` on the unique value (if any) and the multiple values of `T`
    /// (one of the two is always empty).
    pub fn with_all<R>(&self, f: impl FnOnce(Option<&T>, &[&T]) -> R) -> R {
        let store = Locked::lock(self.inner);
        let id = TypeId::of::<T>();
        let unique = store.unique.get(&id).and_then(|b| b.downcast_ref::<T>());
        let multiple: Vec<&T> = store
            .multiple
            .get(&id)
            .map(|v| v.iter().filter_map(|b| b.downcast_ref::<T>()).collect())
            .unwrap_or_default();
        f(unique, &multiple)
    }

    /// [`with_all`](Self::with_all), mutably.
    pub fn with_all_mut<R>(&self, f: impl FnOnce(Option<&mut T>, &mut [&mut T]) -> R) -> R {
        let mut store = Locked::lock(self.inner);
        let id = TypeId::of::<T>();
        let AttachmentStore { unique, multiple } = &mut *store;
        let unique = unique.get_mut(&id).and_then(|b| b.downcast_mut::<T>());
        let mut multiple: Vec<&mut T> = multiple
            .get_mut(&id)
            .map(|v| v.iter_mut().filter_map(|b| b.downcast_mut::<T>()).collect())
            .unwrap_or_default();
        f(unique, &mut multiple)
    }
}
