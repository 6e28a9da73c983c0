//! The block store: every slot of one manager, shared by the manager and all
//! the guards it hands out.
//!
//! A [`Store`] holds what any thread may read without a lock (slot records,
//! the hash index, per-slot handle counts) and two kinds of short locks:
//!
//! - one per *pool shard* ([`core::StoreCore`]): the shard's reset pool,
//!   eviction policy and slot states. A store has one shard unless the
//!   builder asks for more; with several, threads that allocate, release and
//!   resurrect in different shards do not wait for each other;
//! - the index writer's lock, taken after any shard lock.
//!
//! Lock order: shards in ascending order, then the index writer. It owns no
//! tensor memory and never blocks on anything but these locks. A match whose
//! blocks are all active takes none of them ([`lookup`]).
//!
//! Who does what: [`allocate`] picks shards for an allocation,
//! [`register`] files staged blocks, [`lookup`] resolves hashes, and this
//! module releases handles and reads state across shards.

mod allocate;
pub(crate) mod core;
mod handle;
mod index;
mod lookup;
pub(crate) mod refcount;
mod register;
pub(crate) mod slot;
mod striped;

use std::ops::{Deref, DerefMut, Range};
use std::sync::Arc;

use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering, Padded};

pub(crate) use self::handle::StoreRef;

use self::core::{Counters, StateCounts, StoreCore};
use self::index::{HashIndex, IndexWriter};
use self::refcount::RefCounts;
use self::slot::Records;
use self::striped::MatchTally;
use crate::policy::AnyPolicy;
use crate::{BlockDuplicationPolicy, ManagerId, SequenceHash};

/// Most pool shards a store has (one bit each in a 64-bit mask).
pub(crate) const MAX_POOL_SHARDS: usize = 64;

/// One pool shard and a lock-free hint of its reset pool's size, alone on
/// its cache lines.
#[repr(align(128))]
struct Shard {
    /// Its position in the store (its bit in `Store::free_mask`).
    index: usize,
    core: Mutex<StoreCore>,
    /// Reset-pool size as of the last unlock (allocation reads it to keep
    /// "reset pool first" across shards without locking them).
    free_hint: AtomicU64,
}

/// A locked shard; unlocking refreshes its reset-pool hints.
pub(crate) struct ShardGuard<'a> {
    shard: &'a Shard,
    /// The store's mask of shards whose reset pool is not empty.
    free_mask: &'a AtomicU64,
    core: MutexGuard<'a, StoreCore>,
}

impl Deref for ShardGuard<'_> {
    type Target = StoreCore;
    fn deref(&self) -> &StoreCore {
        &self.core
    }
}

impl DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut StoreCore {
        &mut self.core
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        let free = self.core.free_len() as u64;
        let before = self.shard.free_hint.load(Ordering::Relaxed);
        if before != free {
            self.shard.free_hint.store(free, Ordering::Relaxed);
            let bit = 1u64 << self.shard.index;
            if free == 0 {
                self.free_mask.fetch_and(!bit, Ordering::Relaxed);
            } else if before == 0 {
                self.free_mask.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }
}

/// At most one locked shard, switched as a batch walks its slots. Before it
/// unlocks a shard it makes that shard keep the store alive for whatever was
/// handed out under it.
pub(crate) struct HeldShard<'a> {
    store: &'a Arc<Store>,
    held: Option<(usize, ShardGuard<'a>)>,
}

impl<'a> HeldShard<'a> {
    /// Nothing locked yet.
    pub(crate) fn new(store: &'a Arc<Store>) -> Self {
        Self { store, held: None }
    }

    /// Shard `shard`, locked (unlocking the one held before, if different).
    #[inline]
    pub(crate) fn get(&mut self, shard: usize) -> &mut ShardGuard<'a> {
        if self.held.as_ref().map(|(k, _)| *k) != Some(shard) {
            self.release();
            self.held = Some((shard, self.store.lock_shard(shard)));
        }
        match &mut self.held {
            Some((_, guard)) => guard,
            None => unreachable!("a shard was just locked"),
        }
    }

    /// Unlocks the held shard, if any.
    #[inline]
    pub(crate) fn release(&mut self) {
        if let Some((_, mut guard)) = self.held.take() {
            guard.keep_alive(self.store);
        }
    }
}

impl Drop for HeldShard<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Shared state of one manager. Aligned to 128 bytes so the `Arc` counts in
/// front of it (written when a shard's keepalive comes and goes) sit on other
/// lines than its fields, which every call reads.
#[repr(align(128))]
pub(crate) struct Store {
    shards: Box<[Shard]>,
    /// Bit `k` set: shard `k`'s reset pool had slots at its last unlock.
    free_mask: Padded<AtomicU64>,
    /// `slot >> shard_shift` is the slot's shard.
    shard_shift: u32,
    pub(crate) refs: RefCounts,
    pub(crate) records: Records,
    pub(crate) index: HashIndex,
    /// The index writer. Lock order: shard locks first, then this.
    pub(crate) writer: Padded<Mutex<IndexWriter>>,
    /// Whether the policy wants every hit (then every match takes a lock).
    policy_observes_hits: bool,
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

impl Store {
    /// A store of `block_count` free slots in about `shards` pool shards
    /// (rounded so each holds a power of two of slots), each evicted by a
    /// policy from `make_policy(shard_len)`.
    pub(crate) fn new(
        block_count: usize,
        block_size: usize,
        shards: usize,
        duplication: BlockDuplicationPolicy,
        mut make_policy: impl FnMut(usize) -> AnyPolicy,
    ) -> Self {
        let shard_len = block_count
            .div_ceil(shards.clamp(1, block_count))
            .next_power_of_two();
        let shard_shift = shard_len.trailing_zeros();
        let shards: Box<[Shard]> = (0..block_count)
            .step_by(shard_len)
            .enumerate()
            .map(|(index, base)| {
                let len = shard_len.min(block_count - base);
                Shard {
                    index,
                    core: Mutex::new(StoreCore::new(base as u32, len as u32, make_policy(len))),
                    free_hint: AtomicU64::new(len as u64),
                }
            })
            .collect();
        debug_assert!(shards.len() <= MAX_POOL_SHARDS);
        let free_mask = Padded(AtomicU64::new(u64::MAX >> (64 - shards.len())));
        let policy_observes_hits = shards[0].core.lock().policy_observes_hits();
        let (index, writer) = HashIndex::with_capacity(block_count);
        Self {
            shards,
            free_mask,
            shard_shift,
            refs: RefCounts::new(block_count),
            records: Records::new(block_count),
            index,
            writer: Padded(Mutex::new(writer)),
            policy_observes_hits,
            matches: MatchTally::new(),
            block_size,
            block_count,
            duplication,
            id: ManagerId::next(),
            unstagings: Padded(AtomicU64::new(0)),
        }
    }

    /// Number of pool shards.
    #[inline]
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard holding `slot`.
    #[inline(always)]
    pub(crate) fn shard_of(&self, slot: u32) -> usize {
        (slot >> self.shard_shift) as usize
    }

    /// The slots of shard `shard`.
    fn shard_slots(&self, shard: usize) -> Range<u32> {
        let start = (shard << self.shard_shift) as u32;
        let end = ((shard + 1) << self.shard_shift).min(self.block_count) as u32;
        start..end
    }

    /// Locks shard `shard`.
    #[inline]
    pub(crate) fn lock_shard(&self, shard: usize) -> ShardGuard<'_> {
        let shard = &self.shards[shard];
        ShardGuard {
            shard,
            free_mask: &self.free_mask.0,
            core: shard.core.lock(),
        }
    }

    /// Shard `shard` if its lock is free now.
    #[inline]
    pub(crate) fn try_lock_shard(&self, shard: usize) -> Option<ShardGuard<'_>> {
        let shard = &self.shards[shard];
        shard.core.try_lock().map(|core| ShardGuard {
            shard,
            free_mask: &self.free_mask.0,
            core,
        })
    }

    /// Locks every shard, in order (for whole-store reads and rare slow paths).
    pub(crate) fn lock_all(&self) -> Vec<ShardGuard<'_>> {
        (0..self.shards.len()).map(|k| self.lock_shard(k)).collect()
    }

    /// The reset-pool hint of shard `shard` (see [`Shard::free_hint`]).
    #[inline]
    fn free_hint(&self, shard: usize) -> usize {
        self.shards[shard].free_hint.load(Ordering::Relaxed) as usize
    }

    /// Shards whose reset pool had slots at their last unlock, as bits.
    #[inline]
    fn free_mask(&self) -> u64 {
        self.free_mask.load(Ordering::Relaxed)
    }

    /// A mutable or staged guard was dropped. The caller must not touch the
    /// store after this returns (it may have been freed).
    #[inline]
    pub(crate) fn release_outstanding(&self, slot: u32, was_staged: bool) {
        let keepalive = {
            let mut core = self.lock_shard(self.shard_of(slot));
            core.release_outstanding(slot, was_staged, self);
            core.take_keepalive_if_idle()
        };
        drop(keepalive);
    }

    /// A strong handle was dropped. A count above one drops without a lock;
    /// the last handle drops under its shard's lock (see [`StoreRef`]). The
    /// caller must not touch the store after this returns.
    #[inline]
    pub(crate) fn release_handle(&self, slot: u32) {
        if self.refs.decrement_if_shared(slot) {
            return;
        }
        let (keepalive, pinned_primary) = {
            let mut core = self.lock_shard(self.shard_of(slot));
            let primary = if self.refs.decrement(slot) {
                core.release_if_unused(slot, self)
            } else {
                None
            };
            (core.take_keepalive_if_idle(), primary)
        };
        // A duplicate copy held a pin on its primary; the primary's shard
        // keeps the store alive until that pin is gone.
        if let Some(primary) = pinned_primary {
            self.release_handle(primary);
        }
        drop(keepalive);
    }

    /// Releases a batch of handles (their slots), taking each shard's lock
    /// once per run of slots in that shard.
    pub(crate) fn release_slots(&self, slots: impl IntoIterator<Item = u32>) {
        let mut keepalives: Vec<Arc<Store>> = Vec::new();
        let mut primaries: Vec<u32> = Vec::new();
        let mut held: Option<(usize, ShardGuard<'_>)> = None;
        for slot in slots {
            if self.refs.decrement_if_shared(slot) {
                continue;
            }
            let shard = self.shard_of(slot);
            if held.as_ref().map(|(k, _)| *k) != Some(shard) {
                if let Some((_, mut old)) = held.take() {
                    keepalives.extend(old.take_keepalive_if_idle());
                }
                held = Some((shard, self.lock_shard(shard)));
            }
            if let Some((_, core)) = held.as_mut() {
                if self.refs.decrement(slot) {
                    primaries.extend(core.release_if_unused(slot, self));
                }
            }
        }
        if let Some((_, mut last)) = held.take() {
            keepalives.extend(last.take_keepalive_if_idle());
        }
        for primary in primaries {
            self.release_handle(primary);
        }
        drop(keepalives);
    }

    /// Records a `CompleteBlock::reset`.
    #[inline]
    pub(crate) fn note_unstaged(&self) {
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
    /// slots the reset pools then hold.
    pub(crate) fn drain_inactive(&self) -> usize {
        let mut cores = self.lock_all();
        let mut writer = self.writer.lock();
        cores
            .iter_mut()
            .map(|core| {
                core.drain_inactive(self, &mut writer);
                core.free_len()
            })
            .sum()
    }

    /// Checks that records, index, pools and counts agree (O(slots)).
    pub(crate) fn validate(&self) -> Result<StateCounts, String> {
        let cores = self.lock_all();
        let writer = self.writer.lock();
        let mut primaries = 0;
        let mut counts = StateCounts::default();
        for (shard, core) in cores.iter().enumerate() {
            primaries += core.validate(self.shard_slots(shard), self, &writer)?;
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
