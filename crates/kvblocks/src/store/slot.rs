//! One compact record per slot: which state it is in, which hash it holds and,
//! for a duplicate copy, which slot is the primary.
//!
//! Records live in one `Vec` indexed by slot number; nothing here allocates or
//! locks. The state machine that moves records between states is
//! [`super::core::StoreCore`].

use crate::SequenceHash;

/// "No slot".
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// Where a slot is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum SlotState {
    /// In the reset pool, free.
    Reset,
    /// Held by a `MutableBlock` or a `CompleteBlock`.
    Outstanding,
    /// Registered and pinned by at least one `ImmutableBlock` (or about to be
    /// released by the dropper of the last one).
    Active,
    /// Registered, unpinned, tracked by the eviction policy.
    Inactive,
}

/// The per-slot record: 24 bytes.
#[derive(Clone, Copy)]
pub(crate) struct SlotRecord {
    /// The registered hash, as two words so the record stays 8-byte aligned.
    hash: [u64; 2],
    /// For a duplicate copy: the primary slot it pins. [`NO_SLOT`] otherwise.
    pub(crate) duplicate_of: u32,
    pub(crate) state: SlotState,
}

impl SlotRecord {
    /// A free slot.
    pub(crate) const FREE: SlotRecord = SlotRecord {
        hash: [0, 0],
        duplicate_of: NO_SLOT,
        state: SlotState::Reset,
    };

    /// The hash this slot holds (meaningful when registered).
    #[inline(always)]
    pub(crate) fn hash(&self) -> SequenceHash {
        let raw = (self.hash[1] as u128) << 64 | self.hash[0] as u128;
        // Stored values always come from a valid SequenceHash.
        SequenceHash::from_valid_u128(raw)
    }

    /// Records the hash this slot now holds.
    #[inline(always)]
    pub(crate) fn set_hash(&mut self, hash: SequenceHash) {
        let raw = hash.as_u128();
        self.hash = [raw as u64, (raw >> 64) as u64];
    }

    /// Whether this registered slot is the primary copy of its hash.
    #[inline(always)]
    pub(crate) fn is_primary(&self) -> bool {
        self.duplicate_of == NO_SLOT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_stays_small_and_round_trips_its_hash() {
        assert_eq!(std::mem::size_of::<SlotRecord>(), 24);
        let mut record = SlotRecord::FREE;
        let hash = SequenceHash::new(u64::MAX, Some(12345), 70_000);
        record.set_hash(hash);
        assert_eq!(record.hash(), hash);
    }
}
