//! One compact record per slot: which state it is in, which hash it holds and,
//! for a duplicate copy, which slot is the primary.
//!
//! Records live in one boxed slice indexed by slot number, shared by every
//! thread: the fields are atomics so a lock-free match may read a slot's hash
//! while a lock holder rewrites another field. Who may write what:
//!
//! - the state and the primary link change only under the slot's pool-shard
//!   lock;
//! - the hash changes only while the slot is in no index entry and holds no
//!   handle (by the guard that owns it, before registration), and is published with
//!   `Release` so a reader that `Acquire`s it also sees the slot's handle word
//!   as it was when the hash was written (see [`super::lookup`]).
//!
//! Nothing here allocates or locks. The state machine that moves records
//! between states is [`super::state::ShardState`].

use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use crate::SequenceHash;

/// "No slot".
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// Where a slot is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum SlotState {
    /// In the reset pool, free.
    Reset = 0,
    /// Held by a `MutableBlock` or a `CompleteBlock`.
    Outstanding = 1,
    /// Registered and pinned by at least one `ImmutableBlock` (or about to be
    /// released by the dropper of the last one).
    Active = 2,
    /// Registered, unpinned, tracked by the eviction policy.
    Inactive = 3,
}

impl SlotState {
    #[inline(always)]
    fn from_u8(raw: u8) -> Self {
        match raw {
            0 => SlotState::Reset,
            1 => SlotState::Outstanding,
            2 => SlotState::Active,
            _ => SlotState::Inactive,
        }
    }
}

/// Per-slot flags ([`Records::flags`]).
pub(crate) mod flag {
    /// The registry has a registration handle for this primary's hash: tell
    /// it when the slot stops holding the hash (see `crate::registry`).
    pub(crate) const NOTED: u8 = 1;
    /// The last release of this primary evicts it instead of caching it
    /// (`ImmutableBlock::set_evict_on_reset`).
    pub(crate) const EVICT_ON_RELEASE: u8 = 2;
}

/// The per-slot record: 24 bytes.
struct SlotRecord {
    /// The registered hash, low and high words.
    hash: [AtomicU64; 2],
    /// For a duplicate copy: the primary slot it pins. [`NO_SLOT`] otherwise.
    duplicate_of: AtomicU32,
    state: AtomicU8,
    /// [`flag`] bits, meaningful while the slot is registered.
    flags: AtomicU8,
}

impl SlotRecord {
    fn free() -> Self {
        Self {
            hash: [AtomicU64::new(0), AtomicU64::new(0)],
            duplicate_of: AtomicU32::new(NO_SLOT),
            state: AtomicU8::new(SlotState::Reset as u8),
            flags: AtomicU8::new(0),
        }
    }
}

/// Every slot's record.
pub(crate) struct Records {
    records: Box<[SlotRecord]>,
}

impl Records {
    /// `count` free records.
    pub(crate) fn new(count: usize) -> Result<Self, super::OutOfMemory> {
        Ok(Self {
            records: super::try_boxed(count, SlotRecord::free)?,
        })
    }

    /// The slot's state (exact under the slot's shard lock; a hint without it).
    #[inline(always)]
    pub(crate) fn state(&self, slot: u32) -> SlotState {
        // ORDERING: Relaxed; the shard lock orders state changes.
        SlotState::from_u8(self.records[slot as usize].state.load(Ordering::Relaxed))
    }

    /// Moves the slot to `state`. Under the slot's shard lock.
    #[inline(always)]
    pub(crate) fn set_state(&self, slot: u32, state: SlotState) {
        // ORDERING: Relaxed; the shard lock orders state changes.
        self.records[slot as usize]
            .state
            .store(state as u8, Ordering::Relaxed);
    }

    /// The hash this slot holds (meaningful when registered).
    #[inline(always)]
    pub(crate) fn hash(&self, slot: u32) -> SequenceHash {
        let words = &self.records[slot as usize].hash;
        // ORDERING: Acquire per word, paired with `set_hash`'s Release (see
        // the store's ordering table: a torn read only declines a pin).
        let low = words[0].load(Ordering::Acquire);
        let high = words[1].load(Ordering::Acquire);
        // Stored values always come from a valid SequenceHash (or are the
        // initial zero, which is one too).
        SequenceHash::from_valid_u128(u128::from(high) << 64 | u128::from(low))
    }

    /// Records the hash this slot now holds. Only while the slot is in no
    /// index entry and has no handle (see the module docs).
    #[inline(always)]
    pub(crate) fn set_hash(&self, slot: u32, hash: SequenceHash) {
        let raw = hash.as_u128();
        let words = &self.records[slot as usize].hash;
        // ORDERING: Release per word, paired with `hash`'s Acquire.
        words[0].store(raw as u64, Ordering::Release);
        words[1].store((raw >> 64) as u64, Ordering::Release);
    }

    /// For a duplicate copy, the primary it pins; [`NO_SLOT`] for a primary.
    #[inline(always)]
    pub(crate) fn duplicate_of(&self, slot: u32) -> u32 {
        // ORDERING: Acquire, paired with `set_duplicate_of`'s Release.
        self.records[slot as usize]
            .duplicate_of
            .load(Ordering::Acquire)
    }

    /// Sets the primary link. Under the slot's shard lock, before the slot gets a
    /// handle.
    #[inline(always)]
    pub(crate) fn set_duplicate_of(&self, slot: u32, primary: u32) {
        // ORDERING: Release; written under the lock before the slot gets a
        // handle, read by lock-free pins.
        self.records[slot as usize]
            .duplicate_of
            .store(primary, Ordering::Release);
    }

    /// The slot's [`flag`] bits.
    #[inline(always)]
    pub(crate) fn flags(&self, slot: u32) -> u8 {
        // ORDERING: Acquire, paired with `set_flags`' Release: a holder that
        // set a flag before releasing its handle is seen by the last release.
        self.records[slot as usize].flags.load(Ordering::Acquire)
    }

    /// Sets `bits` (any thread that holds the slot, or the shard lock).
    #[inline(always)]
    pub(crate) fn set_flags(&self, slot: u32, bits: u8) {
        // ORDERING: Release, paired with `flags`' Acquire.
        self.records[slot as usize]
            .flags
            .fetch_or(bits, Ordering::Release);
    }

    /// Clears `bits` (any thread that holds the slot).
    #[inline(always)]
    pub(crate) fn clear_flags(&self, slot: u32, bits: u8) {
        // ORDERING: Release, as `set_flags`.
        self.records[slot as usize]
            .flags
            .fetch_and(!bits, Ordering::Release);
    }

    /// Sets the flags to exactly `bits` (a registration, under the shard
    /// lock, before the slot gets a handle).
    #[inline(always)]
    pub(crate) fn reset_flags(&self, slot: u32, bits: u8) {
        // ORDERING: Release, as `set_flags`.
        self.records[slot as usize]
            .flags
            .store(bits, Ordering::Release);
    }

    /// Clears every flag and returns what they were (when the slot stops
    /// holding its hash, under its shard lock or owned by one thread).
    #[inline(always)]
    pub(crate) fn take_flags(&self, slot: u32) -> u8 {
        // ORDERING: AcqRel; the flag bits pair as above.
        self.records[slot as usize].flags.swap(0, Ordering::AcqRel)
    }

    /// Whether this registered slot is the primary copy of its hash.
    #[inline(always)]
    pub(crate) fn is_primary(&self, slot: u32) -> bool {
        self.duplicate_of(slot) == NO_SLOT
    }

    /// Bytes per record.
    pub(crate) const BYTES_PER_SLOT: usize = std::mem::size_of::<SlotRecord>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_stays_small_and_round_trips_its_fields() {
        assert_eq!(Records::BYTES_PER_SLOT, 24);
        let records = Records::new(2).unwrap();
        let hash = SequenceHash::new(u64::MAX, Some(12345), 70_000);
        records.set_hash(1, hash);
        records.set_state(1, SlotState::Inactive);
        records.set_duplicate_of(1, 0);
        assert_eq!(records.hash(1), hash);
        assert_eq!(records.state(1), SlotState::Inactive);
        assert_eq!(records.duplicate_of(1), 0);
        assert!(records.is_primary(0));
        assert_eq!(records.state(0), SlotState::Reset);
    }
}
