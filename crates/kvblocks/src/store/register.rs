//! Registration: filing staged slots under their hashes, applying the
//! duplication policy.
//!
//! A batch goes in chunks of slots from one shard (by the layout read when
//! the chunk was formed; a chunk that a split overtook goes one slot at a
//! time, see [`super::split`]). For each chunk it holds
//! the shard's lock and, only while it inserts the chunk's index entries, the
//! index writer's lock (the lock order); then it finishes each registration
//! under the shard lock alone, so the global index lock is held for the
//! shortest time. An entry is visible before its slot is finished, but the
//! slot's shard lock is held from insertion to finish, and every judgement of
//! an entry (a locked match, a registrar deciding the entry is stale) is made
//! under the lock of the slot it names: so nobody sees it half-registered.
//!
//! Registering a hash that already has a primary must pin that primary: in
//! the same shard that is done under the held lock; in another shard, an
//! active primary is pinned lock-free (as a match would). Anything else (an
//! evictable primary elsewhere, a stale entry, a policy that wants every
//! hit) is redone with every shard locked, after the rest of the chunk is
//! finished; only such rare registrations pay for that.

use std::sync::Arc;

use super::index::Insert;
use super::lookup::LockFreePin;
use super::shard::{ShardCursor, ShardGuard};
use super::state::{is_registered_primary, Registered};
use super::{shard_in, Store};
use crate::SequenceHash;

/// Slots registered per chunk (bounded so a chunk lives on the stack).
const CHUNK: usize = 32;

/// One slot of a chunk: what the index said, and the outcome once known.
#[derive(Clone, Copy)]
struct Pending {
    slot: u32,
    hash: SequenceHash,
    insert: Insert,
    outcome: Option<Registered>,
    /// Whether the slot became the hash's primary (not a duplicate copy or
    /// a deduplicated registration).
    new_primary: bool,
    /// A handle a lock-free pin added to a slot that turned out to hold
    /// another block; released once no lock is held.
    stray: Option<u32>,
}

impl Pending {
    /// `slot` staged under `hash`, nothing known yet.
    #[inline]
    fn new(slot: u32, hash: SequenceHash) -> Self {
        Self {
            slot,
            hash,
            insert: Insert::Added,
            outcome: None,
            new_primary: false,
            stray: None,
        }
    }
}

impl Store {
    /// Registers staged `(slot, hash)` pairs whose records already hold their
    /// hashes ([`Store::prepare_registration`]), handing each outcome, hash
    /// and whether the slot became the hash's primary to `done`, in order
    /// (possibly under a shard lock: `done` must not call back).
    pub(crate) fn register_slots(
        self: &Arc<Self>,
        staged: impl IntoIterator<Item = (u32, SequenceHash)>,
        mut done: impl FnMut(Registered, SequenceHash, bool),
    ) {
        let mut held = ShardCursor::new(self);
        let mut staged = staged.into_iter().peekable();
        let blank = Pending::new(0, SequenceHash::from_valid_u128(0));
        let mut chunk = [blank; CHUNK];
        let layout = self.layout();
        while let Some(&(first, _)) = staged.peek() {
            let shard = shard_in(layout, first);
            let mut len = 0;
            while len < CHUNK {
                match staged.peek() {
                    Some(&(slot, hash)) if shard_in(layout, slot) == shard => {
                        chunk[len] = Pending::new(slot, hash);
                        len += 1;
                        staged.next();
                    }
                    _ => break,
                }
            }
            self.register_chunk(&mut held, layout, &mut chunk[..len], &mut done);
        }
        // A `Reject` dedup may leave a shard idle; the caller's `Arc`
        // outlives this drop (see `shard`).
        drop(held.finish());
    }

    /// [`register_slots`](Self::register_slots) for one slot (a block
    /// filled during decode): the same steps on a one-slot chunk, without
    /// the batch's chunk array to fill. Returns the outcome and whether the
    /// slot became the hash's primary.
    pub(crate) fn register_slot(
        self: &Arc<Self>,
        slot: u32,
        hash: SequenceHash,
    ) -> (Registered, bool) {
        let mut held = ShardCursor::new(self);
        let mut chunk = [Pending::new(slot, hash)];
        let mut result = None;
        self.register_chunk(&mut held, self.layout(), &mut chunk, |r, _, new| {
            result = Some((r, new));
        });
        // As in `register_slots`.
        drop(held.finish());
        match result {
            Some(result) => result,
            None => unreachable!("register_chunk reports every slot it is given"),
        }
    }

    /// Registers the slots of `chunk` (all in one shard by `layout`),
    /// handing each outcome to `done` in order.
    #[inline]
    fn register_chunk(
        self: &Arc<Self>,
        held: &mut ShardCursor<'_>,
        layout: u32,
        chunk: &mut [Pending],
        mut done: impl FnMut(Registered, SequenceHash, bool),
    ) {
        if !self.insert_chunk(held, layout, chunk) {
            // The store split after the chunk was formed: its slots may sit
            // in several shards now. One at a time, by the final layout.
            let layout = self.layout();
            for k in 0..chunk.len() {
                let done_one = self.insert_chunk(held, layout, &mut chunk[k..=k]);
                debug_assert!(done_one, "a store splits once");
            }
        }
        if chunk.iter().any(|p| p.outcome.is_none()) {
            held.unlock();
            let strays = chunk.iter_mut().filter_map(|p| p.stray.take());
            // The caller's `Arc` outlives this drop (see `shard`).
            self.release_handles(strays).finish();
            for pending in chunk.iter_mut().filter(|p| p.outcome.is_none()) {
                let (outcome, new_primary) = self.register_exclusive(pending.slot, pending.hash);
                pending.outcome = Some(outcome);
                pending.new_primary = new_primary;
            }
        }
        for pending in chunk.iter() {
            if let Some(outcome) = pending.outcome {
                done(outcome, pending.hash, pending.new_primary);
            }
        }
    }

    /// Inserts the chunk's entries and finishes every registration that needs
    /// no other shard's lock; the others keep `outcome: None`. Does nothing
    /// and returns `false` if the layout is no longer `layout` (the store
    /// split after the chunk was formed).
    fn insert_chunk(&self, held: &mut ShardCursor<'_>, layout: u32, chunk: &mut [Pending]) -> bool {
        let core = held.get(shard_in(layout, chunk[0].slot));
        if self.layout() != layout {
            return false;
        }
        {
            let records = &self.records;
            let mut writer = self.writer.lock();
            for pending in chunk.iter_mut() {
                pending.insert =
                    self.index
                        .insert_if_absent(&mut writer, pending.hash, pending.slot, |s| {
                            records.hash(s)
                        });
            }
        }
        for pending in chunk.iter_mut() {
            pending.outcome = match pending.insert {
                Insert::Added => {
                    pending.new_primary = true;
                    Some(core.finish_primary(pending.slot, pending.hash, self))
                }
                Insert::Present(existing) => self.settle_duplicate(core, pending, existing),
            };
        }
        // The chunk's new primaries, reported under the shard lock.
        if self.events.enabled() {
            self.events.stored_from(
                chunk
                    .iter()
                    .filter(|p| p.insert == Insert::Added)
                    .map(|p| p.hash),
            );
        }
        true
    }

    /// Settles a slot of the locked shard `core` whose hash has the entry
    /// `existing`, if that needs no other lock.
    fn settle_duplicate(
        &self,
        core: &mut ShardGuard<'_>,
        pending: &mut Pending,
        existing: u32,
    ) -> Option<Registered> {
        let (slot, hash) = (pending.slot, pending.hash);
        let generation = if self.shard_of(existing) == self.shard_of(slot) {
            if !is_registered_primary(existing, hash, self) {
                return None;
            }
            core.pin_primary(existing, true, self)
        } else if self.policy_observes_hits {
            return None;
        } else {
            match self.pin_if_active(existing, hash) {
                LockFreePin::Pinned(generation) => generation,
                LockFreePin::Declined => return None,
                LockFreePin::Stray => {
                    pending.stray = Some(existing);
                    return None;
                }
            }
        };
        Some(core.finish_duplicate(slot, existing, generation, self.duplication, self))
    }

    /// Registers one slot with every shard and the index writer locked;
    /// also says whether it became the hash's primary.
    fn register_exclusive(self: &Arc<Self>, slot: u32, hash: SequenceHash) -> (Registered, bool) {
        let mut cores = self.lock_all();
        let mut writer = self.writer.lock();
        let records = &self.records;
        let home = self.shard_of(slot);
        let registered = match self
            .index
            .insert_if_absent(&mut writer, hash, slot, |s| records.hash(s))
        {
            Insert::Added => {
                let registered = cores[home].finish_primary(slot, hash, self);
                self.events.stored(&[hash]);
                (registered, true)
            }
            Insert::Present(existing) if is_registered_primary(existing, hash, self) => {
                let generation = cores[self.shard_of(existing)].pin_primary(existing, true, self);
                let registered = cores[home].finish_duplicate(
                    slot,
                    existing,
                    generation,
                    self.duplication,
                    self,
                );
                (registered, false)
            }
            Insert::Present(stale) => {
                // An evicted slot whose allocator has not removed its
                // entry yet: this registration takes the entry over.
                self.index.replace(&mut writer, hash, stale, slot);
                let registered = cores[home].finish_primary(slot, hash, self);
                self.events.stored(&[hash]);
                (registered, true)
            }
        };
        drop(writer);
        // The caller's `Arc` outlives this drop (see `shard`).
        drop(Store::unlock_all(cores));
        registered
    }
}
