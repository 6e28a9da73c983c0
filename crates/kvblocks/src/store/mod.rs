//! The block store: every slot of one manager, shared by the manager and all
//! the guards it hands out.
//!
//! A [`Store`] holds what any thread may read without a lock (slot records,
//! the hash index, per-slot handle words) and two kinds of short locks: one
//! per pool shard ([`shard`]), and the index writer's. It owns no tensor
//! memory and never blocks on anything but these locks.
//!
//! # Words used here, each for one thing
//!
//! - **slot**: a physical block index, `0..block_count`.
//! - **live** slot: held by a guard: *outstanding* (a `MutableBlock` or
//!   `CompleteBlock`) or *active* (registered, with at least one handle).
//!   *Inactive*: registered, no handle, evictable. *Reset*: free.
//! - **handle**: one strong reference to a registered slot (an
//!   `ImmutableBlock`); the slot's *count* is its number of handles.
//! - **pin**: add a handle. Pinning an inactive slot *resurrects* it.
//!   **Release**: remove a handle; the *last release* of a primary makes it
//!   inactive, of a duplicate copy returns it to reset.
//! - **primary**: the slot the index names for a hash; a **duplicate copy**
//!   holds the same hash in another slot (under `Allow`) and pins its primary.
//! - **generation**: a per-slot number bumped whenever the slot stops holding
//!   a registration; it tells a slot's successive registrations apart.
//! - **stale entry**: an index entry whose slot was evicted but whose removal
//!   has not run yet.
//! - **shard** (pool shard): a contiguous range of slots with its own lock
//!   around its [`state::ShardState`] (reset pool, policy, tallies). A store
//!   built to *split on contention* starts with every slot in shard 0 (one
//!   pool) and splits into its shards once, when threads contend
//!   ([`split`]);
//!   **keepalive**: the store's own `Arc`, held by every shard with a live
//!   slot, so guards can reach the store through a plain pointer.
//!
//! # Who does what
//!
//! [`allocate`] picks shards for an allocation, [`register`] files staged
//! blocks, [`lookup`] resolves hashes to pinned slots, [`release`] is the
//! one way handles and outstanding slots come back, [`shard`] is the lock
//! layer and enforces the keepalive rule, [`split`] turns one pool into
//! shards, [`state`] is a shard's locked state
//! machine, [`index`], [`refcount`] and [`slot`] are the lock-free tables,
//! and this module builds the store and reads it across shards.
//!
//! # Lock order
//!
//! Shard locks in ascending shard order, then the index writer's lock. A
//! thread holds at most one shard lock except on the rare exact paths
//! ([`Store::lock_all`]), which take all of them in order. No lock is held
//! while a policy calls back (policies never call back) and no user code runs
//! under a lock except the policy's hooks.
//!
//! # Memory orderings
//!
//! Every atomic of the store, its ordering, and what it pairs with (each
//! site also carries an `// ORDERING:` comment). `kvblocks-checks/tests/loom_races.rs` checks
//! the pairings that matter under loom's weak-memory model.
//!
//! | atomic | operation | ordering | pairs with / why |
//! |---|---|---|---|
//! | handle word (count + generation, [`refcount`]) | `increment` (registration, locked pin, clone) | `AcqRel` | *Release*: a lock-free reader that `Acquire`s the new count sees the record written before it (registration writes hash and primary link first) |
//! | | `live_generation` (lock-free pin, step 1) | `Acquire` | the `Release` of `increment`: the record as registered is visible |
//! | | `try_increment_live` (lock-free pin, weak upgrade) | CAS `Acquire` | reads the latest value of the word, so it synchronises with the last `Release` on it: the post-pin record check sees the record of the generation it pinned |
//! | | `decrement_if_shared` (not the last handle) | CAS `Release` | the `Acquire` fence of the last release: whatever a holder did with the block happens before the slot is released (as in `Arc`) |
//! | | `decrement` (last handle, under the lock) | `Release` + `Acquire` fence when last | as above |
//! | | `next_generation` (eviction, duplicate release, under the lock, count 0) | `Release` | a lock-free reader that sees the new generation sees the state change; with a zero count no lock-free writer can interleave |
//! | | `count`, `generation` (under the lock) | `Acquire` | exact under the lock; `Acquire` so validation sees lock-free pins |
//! | record hash ([`slot`]) | `set_hash` (owner of an outstanding slot) | `Release` per word | the reader's `Acquire`: a reader that sees a new hash word also sees the generation bump that came before it, so its pin's CAS fails (a torn read can only cause a declined pin) |
//! | record primary link | `set_duplicate_of` (under the lock, before a handle) | `Release` / `Acquire` | read by lock-free pins before and after the CAS |
//! | record state | under the shard lock | `Relaxed` | the lock orders it; lock-free code never trusts it |
//! | index bucket ([`index`]) | `store` (writer) / `load` (reader) | `Release` / `Acquire` | an entry is published after its slot's record hash: a reader that sees the entry sees the key |
//! | index epoch (seqlock) | open a removal batch | `Relaxed` RMW + `Release` fence | the reader's `Acquire` fence after its probe: a reader that saw any bucket a removal wrote then reads the odd epoch and reports `Unsure` |
//! | | close a batch (`settle`) | `Release` | the reader's `Acquire` load at probe start: an even epoch means no shift it could miss |
//! | free mask, free hints ([`shard`]) | allocation hints | `Relaxed` | hints only; the locked state decides |
//! | layout (which shard holds a slot, [`split`]) | written once, with every shard locked | `Relaxed` | a reader holding any shard lock sees the final value (the lock orders it); a lock-free read may be stale, so every path that locks the shard of a slot checks the layout again under the lock ([`Store::lock_slot`]) |
//! | contention count ([`split`]) | counter | `Relaxed` | a heuristic |
//! | match tally stripes, unstagings | counters | `Relaxed` | statistics |
//!
//! Shard locks and the index writer's lock are mutexes: everything written
//! under one is visible to its next holder.

mod allocate;
pub(crate) mod events;
mod handle;
mod index;
mod lookup;
pub(crate) mod refcount;
mod register;
mod release;
mod shard;
pub(crate) mod slot;
mod split;
pub(crate) mod state;
mod striped;

use std::sync::{Arc, Weak};

use crate::registry::RegistryShared;
use crate::sync::{fence, AtomicU32, AtomicU64, Mutex, Ordering, Padded};

pub(crate) use self::handle::StoreRef;
pub(crate) use self::shard::Keepalive;
pub(crate) use self::state::Registered;

use self::events::StoreEvents;
use self::index::{HashIndex, IndexWriter, Probe};
use self::refcount::RefCounts;
use self::shard::{Shard, ShardGuard};
use self::slot::Records;
use self::split::{SplitPlan, UNSPLIT};
use self::state::{Counters, ShardState, StateCounts};
use self::striped::MatchTally;
use crate::policy::AnyPolicy;
use crate::{BlockDuplicationPolicy, ManagerId, SequenceHash};

/// Stores alive in this process (for leak checks in tests; `SeqCst`, as
/// tests compare it across threads and it is touched once per store).
static LIVE_STORES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Stores alive in this process now.
pub(crate) fn live_stores() -> usize {
    LIVE_STORES.load(std::sync::atomic::Ordering::SeqCst)
}

impl Drop for Store {
    fn drop(&mut self) {
        LIVE_STORES.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Most pool shards a store has (one bit each in a 64-bit mask).
pub(crate) const MAX_POOL_SHARDS: usize = 64;

/// The store's tables could not be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfMemory {
    /// Bytes of the table that failed.
    pub(crate) bytes: usize,
}

/// A `Vec` of `len` copies of `value`, or an error instead of an abort when
/// the memory is not there.
pub(crate) fn try_vec<T: Clone>(len: usize, value: T) -> Result<Vec<T>, OutOfMemory> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| OutOfMemory {
        bytes: len.saturating_mul(std::mem::size_of::<T>()),
    })?;
    v.resize(len, value);
    Ok(v)
}

/// A boxed slice of `len` values from `make`, or an error instead of an abort.
pub(crate) fn try_boxed<T>(len: usize, make: impl FnMut() -> T) -> Result<Box<[T]>, OutOfMemory> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| OutOfMemory {
        bytes: len.saturating_mul(std::mem::size_of::<T>()),
    })?;
    v.extend(std::iter::repeat_with(make).take(len));
    Ok(v.into_boxed_slice())
}

/// Shared state of one manager. Aligned to 128 bytes so the `Arc` counts in
/// front of it (written when a shard's keepalive comes and goes) sit on other
/// lines than its fields, which every call reads.
#[repr(align(128))]
pub(crate) struct Store {
    shards: Box<[Shard]>,
    /// Bit `k` set: shard `k`'s reset pool had slots at its last unlock.
    pub(super) free_mask: Padded<AtomicU64>,
    /// The clock that dates releases with several shards: one tick per
    /// allocation (see [`allocate`]).
    clock: Padded<AtomicU32>,
    /// `slot >> layout` is the slot's shard: the log2 of the shards' length,
    /// or [`UNSPLIT`] while every slot is in shard 0 (see [`split`]).
    layout: AtomicU32,
    /// Locks found taken while the store is one pool (see [`split`]).
    contended: Padded<AtomicU32>,
    /// How to split, until the store has split (see [`split`]).
    plan: Mutex<Option<SplitPlan>>,
    /// The store's own `Arc`, weakly: what a shard upgrades to keep the store
    /// alive (see [`shard`]).
    pub(super) me: Weak<Store>,
    pub(crate) refs: RefCounts,
    pub(crate) records: Records,
    pub(crate) index: HashIndex,
    /// The index writer. Lock order: shard locks first, then this.
    pub(crate) writer: Padded<Mutex<IndexWriter>>,
    /// Whether the policy wants every hit (then every match takes a lock).
    policy_observes_hits: bool,
    /// The registry this store's manager was built with.
    pub(crate) registry: Arc<RegistryShared>,
    /// Where changes to the registered set are reported (see [`events`]).
    pub(crate) events: StoreEvents,
    /// The flags every new primary starts with (evict-on-release by default).
    pub(crate) initial_flags: u8,
    /// Counts of matches and scans (taken partly without any lock).
    matches: MatchTally,
    pub(crate) block_size: usize,
    pub(crate) block_count: usize,
    pub(crate) duplication: BlockDuplicationPolicy,
    pub(crate) id: ManagerId,
    /// `CompleteBlock -> MutableBlock` transitions via `reset()` (the only
    /// staged exit that takes no lock; the others are counted under it).
    pub(crate) unstagings: Padded<AtomicU64>,
}

/// The shard holding `slot` under `layout` (a store's [`Store::layout`]).
#[inline(always)]
pub(crate) fn shard_in(layout: u32, slot: u32) -> usize {
    (u64::from(slot) >> layout) as usize
}

/// What a store is built from.
pub(crate) struct StoreConfig {
    pub(crate) block_count: usize,
    pub(crate) block_size: usize,
    /// Shards asked for (rounded so each holds a power of two of slots).
    pub(crate) shards: usize,
    /// With a maker of the shards' policies: start as one pool and split
    /// into `shards` when threads contend (see [`split`]). Without: split
    /// from the start.
    pub(crate) split_on_contention: Option<Box<dyn FnMut(usize) -> AnyPolicy + Send>>,
    pub(crate) duplication: BlockDuplicationPolicy,
    /// Generations wrap after `2^generation_bits` (32; tests use fewer to
    /// reach a wrap quickly).
    pub(crate) generation_bits: u32,
    /// The registry the manager is built with.
    pub(crate) registry: Arc<RegistryShared>,
    /// Whether blocks evict on their last release by default.
    pub(crate) evict_on_release: bool,
    /// Where events go, and the tier they name.
    pub(crate) events: Option<Arc<crate::events::EventsManager>>,
    pub(crate) tier: crate::LogicalLayoutHandle,
}

impl Store {
    /// A store of `block_count` free slots in about `shards` pool shards,
    /// each evicted by a policy from `make_policy(shard_len)`.
    ///
    /// # Errors
    ///
    /// [`OutOfMemory`] if a table cannot be allocated.
    pub(crate) fn new(
        config: StoreConfig,
        mut make_policy: impl FnMut(usize) -> AnyPolicy,
    ) -> Result<Arc<Self>, OutOfMemory> {
        let StoreConfig {
            block_count,
            block_size,
            shards,
            split_on_contention,
            duplication,
            generation_bits,
            registry,
            evict_on_release,
            events,
            tier,
        } = config;
        let shard_len = block_count
            .div_ceil(shards.clamp(1, block_count))
            .next_power_of_two();
        let split_later = split_on_contention.is_some() && shard_len < block_count;
        let mut built = Vec::new();
        for (index, base) in (0..block_count).step_by(shard_len).enumerate() {
            // One pool in shard 0; the others stay empty until the split.
            let state = if split_later && index == 0 {
                let free = try_vec(block_count, 0u32)?;
                let (len, shard_len) = (block_count as u32, shard_len as u32);
                ShardState::new_spread(len, shard_len, free, make_policy(block_count))
            } else if split_later {
                ShardState::new(base as u32, 0, Vec::new(), Vec::new(), make_policy(0))
            } else {
                let len = shard_len.min(block_count - base);
                let free = try_vec(len, 0u32)?;
                // Release dates only matter to eviction across shards.
                let released = try_vec(if shard_len < block_count { len } else { 0 }, 0u32)?;
                ShardState::new(base as u32, len as u32, free, released, make_policy(len))
            };
            built.push(Shard {
                index,
                free_hint: AtomicU64::new(state.free_len() as u64),
                state: Mutex::new(state),
                victim_hint: AtomicU64::new(0),
            });
        }
        let shards = built.into_boxed_slice();
        debug_assert!(shards.len() <= MAX_POOL_SHARDS);
        let (layout, plan, in_use) = match split_on_contention {
            Some(make_policy) if split_later => {
                (UNSPLIT, Some(SplitPlan::new(shard_len, make_policy)), 1)
            }
            _ => (shard_len.trailing_zeros(), None, shards.len()),
        };
        let free_mask = Padded(AtomicU64::new(u64::MAX >> (64 - in_use)));
        let policy_observes_hits = shards[0].state.lock().policy_observes_hits();
        let (index, writer) = HashIndex::with_capacity(block_count)?;
        let refs = RefCounts::new(block_count, generation_bits)?;
        let records = Records::new(block_count)?;
        LIVE_STORES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Arc::new_cyclic(|me| Self {
            shards,
            free_mask,
            clock: Padded(AtomicU32::new(0)),
            layout: AtomicU32::new(layout),
            contended: Padded(AtomicU32::new(0)),
            plan: Mutex::new(plan),
            me: me.clone(),
            refs,
            records,
            index,
            writer: Padded(Mutex::new(writer)),
            policy_observes_hits,
            registry,
            events: StoreEvents::new(events, tier),
            initial_flags: if evict_on_release {
                slot::flag::EVICT_ON_RELEASE
            } else {
                0
            },
            matches: MatchTally::new(),
            block_size,
            block_count,
            duplication,
            id: ManagerId::next(),
            unstagings: Padded(AtomicU64::new(0)),
        }))
    }

    /// Number of pool shards in use: 1 until a store built to split on
    /// contention has split.
    #[inline]
    pub(crate) fn shard_count(&self) -> usize {
        if self.layout() == UNSPLIT {
            1
        } else {
            self.shards.len()
        }
    }

    /// Which shard holds which slot (see [`shard_in`]).
    #[inline(always)]
    pub(crate) fn layout(&self) -> u32 {
        // ORDERING: Relaxed; written once under every shard lock, so exact
        // under any of them, and checked again under the lock by every
        // lock-free caller (see `lock_slot`).
        self.layout.load(Ordering::Relaxed)
    }

    /// The shard holding `slot`. Exact while any shard lock is held; a
    /// caller that reads it before locking must check it again under the
    /// lock ([`Store::lock_slot`], [`shard::ShardCursor::get_slot`]).
    #[inline(always)]
    pub(crate) fn shard_of(&self, slot: u32) -> usize {
        shard_in(self.layout(), slot)
    }

    /// Locks the shard holding `slot` (checked again once locked, in case
    /// the store split meanwhile).
    #[inline(always)]
    pub(crate) fn lock_slot(&self, slot: u32) -> ShardGuard<'_> {
        let layout = self.layout();
        let guard = self.lock_shard(shard_in(layout, slot));
        if self.layout() == layout {
            return guard;
        }
        drop(guard);
        self.lock_slot_after_split(slot)
    }

    /// [`lock_slot`](Self::lock_slot) for a slot whose shard changed while
    /// its caller waited: the store has split, for good, so the layout read
    /// now is final.
    #[cold]
    #[inline(never)]
    fn lock_slot_after_split(&self, slot: u32) -> ShardGuard<'_> {
        let guard = self.lock_shard(self.shard_of(slot));
        debug_assert_eq!(guard.index(), self.shard_of(slot), "a store splits once");
        guard
    }

    /// Locks shard `shard`.
    #[inline]
    pub(crate) fn lock_shard(&self, shard: usize) -> ShardGuard<'_> {
        ShardGuard::lock(self, &self.shards[shard])
    }

    /// Shard `shard` if its lock is free now.
    #[inline]
    pub(crate) fn try_lock_shard(&self, shard: usize) -> Option<ShardGuard<'_>> {
        ShardGuard::try_lock(self, &self.shards[shard])
    }

    /// Locks every shard, in order (for whole-store reads and rare slow paths).
    pub(crate) fn lock_all(&self) -> Vec<ShardGuard<'_>> {
        (0..self.shards.len()).map(|k| self.lock_shard(k)).collect()
    }

    /// Unlocks shards locked by [`Store::lock_all`].
    pub(crate) fn unlock_all<'a>(guards: impl IntoIterator<Item = ShardGuard<'a>>) -> Keepalive {
        let mut keepalive = Keepalive::NONE;
        for guard in guards {
            keepalive.merge(guard.unlock());
        }
        keepalive
    }

    /// The reset-pool hint of shard `shard` (see [`Shard::free_hint`]).
    #[inline]
    fn free_hint(&self, shard: usize) -> usize {
        // ORDERING: Relaxed; a hint, the locked state decides.
        self.shards[shard].free_hint.load(Ordering::Relaxed) as usize
    }

    /// The release clock now.
    #[inline]
    pub(crate) fn clock(&self) -> u32 {
        // ORDERING: Relaxed; dates only order evictions approximately.
        self.clock.load(Ordering::Relaxed)
    }

    /// Advances the release clock (once per allocation with several shards).
    #[inline]
    fn tick(&self) {
        // ORDERING: Relaxed, as above. A load and a store rather than a
        // read-modify-write: two allocations racing may tick once between
        // them, which only makes two dates equal (they order evictions
        // approximately anyway), and one thread skips a locked instruction
        // per allocation.
        let now = self.clock.load(Ordering::Relaxed);
        self.clock.store(now.wrapping_add(1), Ordering::Relaxed);
    }

    /// How long ago (in ticks before `now`) shard `shard`'s next victim was
    /// released, as of its last unlock; `None` if it had none.
    #[inline]
    fn victim_hint(&self, shard: usize, now: u32) -> Option<u32> {
        // ORDERING: Relaxed; a hint, the locked state decides.
        let hint = self.shards[shard].victim_hint.load(Ordering::Relaxed);
        (hint >> 32 != 0).then(|| now.wrapping_sub(hint as u32))
    }

    /// Shards whose reset pool had slots at their last unlock, as bits.
    #[inline]
    fn free_mask(&self) -> u64 {
        // ORDERING: Relaxed; a hint, the locked state decides.
        self.free_mask.load(Ordering::Relaxed)
    }

    /// Records a `CompleteBlock::reset`.
    #[inline]
    pub(crate) fn note_unstaged(&self) {
        // ORDERING: Relaxed; a statistic.
        self.unstagings.fetch_add(1, Ordering::Relaxed);
    }

    /// Counters and state counts summed over shards (each shard read under
    /// its own lock, one after another).
    pub(crate) fn totals(&self) -> (Counters, StateCounts) {
        let mut counters = Counters::default();
        let mut counts = StateCounts::default();
        for shard in 0..self.shards.len() {
            let core = self.lock_shard(shard);
            counters.add(&core.counters);
            counts.add(&core.state_counts());
        }
        (counters, counts)
    }

    /// `(match requested, match returned, scan requested, scan returned)`.
    pub(crate) fn match_totals(&self) -> [u64; 4] {
        self.matches.totals()
    }

    /// Slots an allocation could hand out now, summed over shards.
    pub(crate) fn available(&self) -> usize {
        (0..self.shards.len())
            .map(|k| self.lock_shard(k).available())
            .sum()
    }

    /// The eviction policy's name.
    pub(crate) fn policy_name(&self) -> &'static str {
        self.lock_shard(0).policy_name()
    }

    /// Evicts every inactive block to the reset pools; returns how many
    /// slots the reset pools then hold. Tells the registry of the hashes it
    /// must hear of, after unlocking.
    pub(crate) fn drain_inactive(self: &Arc<Self>) -> usize {
        let mut noted = Vec::new();
        let mut removed = Vec::new();
        let free = {
            let mut cores = self.lock_all();
            let mut writer = self.writer.lock();
            let free = cores
                .iter_mut()
                .map(|core| {
                    core.drain_inactive(self, &mut writer, |hash, was_noted| {
                        if was_noted {
                            noted.push(hash);
                        }
                        removed.push(hash);
                    });
                    core.free_len()
                })
                .sum();
            // Still under every lock, so the report is in order.
            if !removed.is_empty() {
                if cores.iter().all(|core| !core.has_registered()) {
                    self.events.cleared();
                } else {
                    self.events.removed(&removed);
                }
            }
            free
        };
        for hash in noted {
            self.registry.presence_lost(hash);
        }
        free
    }

    /// Whether this store holds `hash` as a registered primary now, without
    /// any lock: exact at some instant during the call (the record is read
    /// between two reads of the slot's generation, which every exit from a
    /// registration bumps).
    pub(crate) fn holds(&self, hash: SequenceHash) -> bool {
        let records = &self.records;
        let slot = match self.index.find(hash, |s| records.hash(s)) {
            Probe::Candidate(slot) => slot,
            Probe::Miss => return false,
            Probe::Unsure => {
                let writer = self.writer.lock();
                match self.index.get(&writer, hash, |s| records.hash(s)) {
                    Some(slot) => slot,
                    None => return false,
                }
            }
        };
        loop {
            let before = self.refs.generation(slot);
            let held = state::is_registered_primary(slot, hash, self);
            // ORDERING: the record reads above happen before the second
            // generation read (a seqlock's read side).
            fence(Ordering::Acquire);
            if self.refs.generation(slot) == before {
                return held;
            }
        }
    }

    /// Whether this store holds `hash` as a registered primary, decided
    /// under its index writer lock and then the slot's shard lock (the
    /// registry's protocol, see `crate::registry`); a slot that does is
    /// marked noted.
    pub(crate) fn note_if_holds(self: &Arc<Self>, hash: SequenceHash) -> bool {
        let records = &self.records;
        let candidate = {
            let writer = self.writer.lock();
            self.index.get(&writer, hash, |s| records.hash(s))
        };
        let Some(slot) = candidate else {
            return false;
        };
        let shard = self.lock_slot(slot);
        let held = state::is_registered_primary(slot, hash, self);
        if held {
            records.set_flags(slot, slot::flag::NOTED);
        }
        // The caller's `Arc` outlives this drop (see `shard`).
        drop(shard.unlock());
        held
    }

    /// Marks the point in the event stream where this store's registered set
    /// is what it is now (every shard locked while it is read and marked).
    pub(crate) fn snapshot_barrier(&self) -> Option<crate::events::SnapshotTicket> {
        if !self.events.enabled() {
            return None;
        }
        let cores = self.lock_all();
        let mut hashes = Vec::new();
        for core in &cores {
            core.for_each_primary(self, |hash| hashes.push(hash));
        }
        let tier = crate::events::TierSnapshot {
            tier: self.events.tier(),
            hashes,
        };
        self.events.emitter().snapshot_barrier(vec![tier])
    }

    /// Hands every registered primary's hash to `f`, one shard at a time.
    pub(crate) fn for_each_primary(&self, mut f: impl FnMut(SequenceHash)) {
        for shard in 0..self.shards.len() {
            let core = self.lock_shard(shard);
            core.for_each_primary(self, &mut f);
        }
    }

    /// Checks that records, index, pools and counts agree (O(slots)).
    pub(crate) fn validate(&self) -> Result<StateCounts, String> {
        let cores = self.lock_all();
        let writer = self.writer.lock();
        let mut primaries = 0;
        let mut counts = StateCounts::default();
        for core in &cores {
            primaries += core.validate(self, &writer)?;
            counts.add(&core.state_counts());
        }
        if primaries != writer.len() {
            return Err(format!(
                "{} index entries for {primaries} resident primaries",
                writer.len()
            ));
        }
        Ok(counts)
    }

    /// Before registering an owned staged slot: writes its hash into the
    /// record and brings the key's index bucket into this core's cache, so
    /// the locked part of the registration does less.
    #[inline]
    pub(crate) fn prepare_registration(&self, slot: u32, hash: SequenceHash) {
        self.records.set_hash(slot, hash);
        let _ = self.index.find(hash, |s| self.records.hash(s));
    }

    /// Bookkeeping bytes (records, index, reset pools, counts).
    pub(crate) fn heap_bytes(&self) -> usize {
        let pools: usize = (0..self.shards.len())
            .map(|k| self.lock_shard(k).heap_bytes())
            .sum();
        pools
            + self.index.allocation_size()
            + self.block_count * (RefCounts::BYTES_PER_SLOT + Records::BYTES_PER_SLOT)
    }
}
