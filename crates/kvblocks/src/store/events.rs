//! The store's side of KV events: which changes to its registered set it
//! reports, and where.
//!
//! The store reports every change of its *primaries* (the blocks matches
//! find), under the lock that orders the change, so the stream's order is
//! the order of the changes: a block evicted and registered again elsewhere
//! is removed before it is stored.
//!
//! - stored: a staged block becomes the primary of its hash (registration,
//!   also when it takes over a stale entry); never a duplicate copy, never a
//!   registration folded into an existing block;
//! - removed: a primary leaves (eviction by an allocation, evict-on-release,
//!   `reset_inactive_pool`); reported before its index entry can be taken by
//!   another registrar (an eviction's entry goes after the shard unlocks;
//!   evict-on-release reports while it holds the index writer's lock);
//! - cleared: `reset_inactive_pool` left no block registered at all (one
//!   event instead of one per block).
//!
//! Pushing an event only appends to the emitter's buffer (see
//! [`crate::events::emitter`]). When a push reports a full batch, the store
//! remembers it, and the manager call that caused it flushes after every
//! lock is released; the application's periodic flush publishes the rest.

use std::sync::Arc;
use std::time::Instant;

use super::Store;
use crate::events::{EventEmitter, EventsManager};
use crate::sync::{AtomicU8, Ordering};
use crate::{LogicalLayoutHandle, SequenceHash};

/// Hashes buffered before they are pushed (one push per this many).
const BUFFER: usize = 32;

/// Where a store's events go.
pub(crate) struct StoreEvents {
    emitter: EventEmitter,
    /// The events manager, to flush a full batch after unlocking.
    manager: Option<Arc<EventsManager>>,
    tier: LogicalLayoutHandle,
    /// 1: a push reported a full batch; the next manager call flushes.
    flush_wanted: AtomicU8,
}

impl StoreEvents {
    /// Events to `manager` (if any), naming the store's tier `tier`.
    pub(crate) fn new(manager: Option<Arc<EventsManager>>, tier: LogicalLayoutHandle) -> Self {
        Self {
            emitter: manager
                .as_ref()
                .map_or_else(EventEmitter::disabled, |m| m.emitter()),
            manager,
            tier,
            flush_wanted: AtomicU8::new(0),
        }
    }

    /// Whether anything is reported at all.
    #[inline(always)]
    pub(crate) fn enabled(&self) -> bool {
        self.emitter.is_enabled()
    }

    /// The tier the events name.
    pub(crate) fn tier(&self) -> LogicalLayoutHandle {
        self.tier
    }

    #[inline]
    fn note(&self, full: bool) {
        if full {
            // ORDERING: Relaxed; only asks for a flush.
            self.flush_wanted.store(1, Ordering::Relaxed);
        }
    }

    /// `hashes` became primaries (under the lock that made them so).
    #[inline]
    pub(crate) fn stored(&self, hashes: &[SequenceHash]) {
        if !hashes.is_empty() {
            self.note(self.emitter.stored(self.tier, None, hashes));
        }
    }

    /// `hashes` became primaries (under the lock that made them so), as an
    /// iterator (no slice to fill first).
    #[inline]
    pub(crate) fn stored_from(&self, hashes: impl Iterator<Item = SequenceHash>) {
        self.note(self.emitter.stored_from(self.tier, None, hashes));
    }

    /// `hashes` left the registered set (under the lock that took them).
    #[inline]
    pub(crate) fn removed(&self, hashes: &[SequenceHash]) {
        if !hashes.is_empty() {
            self.note(self.emitter.removed(self.tier, hashes));
        }
    }

    /// Every block left (under every lock).
    pub(crate) fn cleared(&self) {
        self.note(self.emitter.cleared(self.tier));
    }

    /// The emitter (for a snapshot barrier).
    pub(crate) fn emitter(&self) -> &EventEmitter {
        &self.emitter
    }

    /// Flushes if a push reported a full batch. Call holding no lock.
    #[inline]
    pub(crate) fn flush_if_wanted(&self) {
        // ORDERING: Relaxed, as `note`.
        if self.flush_wanted.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.flush_wanted.store(0, Ordering::Relaxed);
        if let Some(manager) = &self.manager {
            let _ = manager.try_flush(Instant::now());
        }
    }
}

/// Removed hashes gathered under one lock, pushed in runs of [`BUFFER`]
/// and finally by [`Removals::push_all`] before the lock is released.
pub(crate) struct Removals<'a> {
    store: &'a Store,
    hashes: [SequenceHash; BUFFER],
    len: usize,
}

impl<'a> Removals<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Self {
            store,
            hashes: [SequenceHash::from_valid_u128(0); BUFFER],
            len: 0,
        }
    }

    /// Adds the hash `slot` holds (call before the slot changes hands).
    #[inline(always)]
    pub(crate) fn add_slot(&mut self, slot: u32) {
        if !self.store.events.enabled() {
            return;
        }
        self.hashes[self.len] = self.store.records.hash(slot);
        self.len += 1;
        if self.len == BUFFER {
            self.push_all();
        }
    }

    /// Pushes what is gathered (before unlocking).
    #[inline]
    pub(crate) fn push_all(&mut self) {
        self.store.events.removed(&self.hashes[..self.len]);
        self.len = 0;
    }
}
