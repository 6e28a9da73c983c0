//! The 128-bit positional lineage hash, [`SequenceHash`]: the key every block
//! is registered, matched and evicted by.
//!
//! This module owns the bit layout and nothing else. It never hashes tokens
//! (that is [`super::tokens`]) and never looks anything up.
//!
//! # Layout
//!
//! From the most significant bit down:
//!
//! ```text
//! [ mode: 2 ][ position: P ][ current sequence hash: 64 ][ parent fragment: F ]
//! mode 0: P = 8,  F = 54   (positions below 2^8)
//! mode 1: P = 16, F = 46   (positions below 2^16)
//! mode 2: P = 24, F = 38   (positions below 2^24)
//! ```
//!
//! The parent fragment is the low `F` bits of the parent's 64-bit sequence
//! hash, so the parent of any key can be named without a lookup table. The
//! layout is bit-identical to `dynamo-tokens` 1.6.1 (see the conformance
//! test), so keys interoperate with Dynamo's routers.

use std::fmt;

use super::{compute_next_sequence_hash, BlockHash};

/// The largest block position a [`SequenceHash`] can carry, plus one.
pub const MAX_POSITION: u64 = 1 << 24;

/// Position of a block in its sequence was too large to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("block position {position} does not fit a sequence hash (limit {MAX_POSITION})")]
pub struct PositionOverflow {
    /// The position that was asked for.
    pub position: u64,
}

/// A raw 128-bit value that is not a valid [`SequenceHash`] (its mode bits are `0b11`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{raw:#034x} is not a sequence hash: mode bits 0b11 are reserved")]
pub struct InvalidSequenceHash {
    /// The rejected value.
    pub raw: u128,
}

/// Positional lineage hash: position, full 64-bit chained sequence hash and a
/// fragment of the parent's sequence hash, packed into one `u128`.
///
/// Equal values mean equal whole prefixes (up to 64-bit collisions).
///
/// ```
/// use kvblocks::SequenceHash;
///
/// let root = SequenceHash::root(0xfeed);
/// let child = root.extend(0xbeef);
/// assert_eq!(child.position(), 1);
/// assert_eq!(
///     child.parent_fragment(),
///     root.parent_fragment_for_child_position(1)
/// );
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct SequenceHash(u128);

/// Dynamo's name for [`SequenceHash`].
pub type PositionalLineageHash = SequenceHash;

const fn mode_for(position: u64) -> u32 {
    if position < (1 << 8) {
        0
    } else if position < (1 << 16) {
        1
    } else {
        2
    }
}

/// `(position bits, parent fragment bits)` for a mode.
const fn layout(mode: u32) -> (u32, u32) {
    match mode {
        0 => (8, 54),
        1 => (16, 46),
        _ => (24, 38),
    }
}

const fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

impl SequenceHash {
    /// Packs a key from its parts.
    ///
    /// `parent` is truncated to the fragment width of `position`'s mode.
    ///
    /// # Panics
    ///
    /// Panics if `position >= 2^24`, as `dynamo-tokens` does; use
    /// [`SequenceHash::try_new`] where the position comes from outside.
    pub fn new(current: u64, parent: Option<u64>, position: u64) -> Self {
        match Self::try_new(current, parent, position) {
            Ok(hash) => hash,
            Err(err) => panic!("{err}"),
        }
    }

    /// Packs a key from its parts, rejecting positions that do not fit.
    pub const fn try_new(
        current: u64,
        parent: Option<u64>,
        position: u64,
    ) -> Result<Self, PositionOverflow> {
        if position >= MAX_POSITION {
            return Err(PositionOverflow { position });
        }
        let mode = mode_for(position);
        let (position_bits, parent_bits) = layout(mode);
        let parent = match parent {
            Some(parent) => parent & low_mask(parent_bits),
            None => 0,
        };
        let value = ((mode as u128) << 126)
            | ((position as u128) << (64 + parent_bits))
            | ((current as u128) << parent_bits)
            | parent as u128;
        let _ = position_bits;
        Ok(Self(value))
    }

    /// The key of a first block (position 0), whose sequence hash is its block hash.
    pub const fn root(block_hash: BlockHash) -> Self {
        match Self::try_new(block_hash, None, 0) {
            Ok(hash) => hash,
            Err(_) => unreachable!(),
        }
    }

    /// The key of the next block, given that block's own (token) hash.
    ///
    /// # Panics
    ///
    /// Panics if the child position would reach `2^24`; see [`SequenceHash::try_extend`].
    pub fn extend(&self, child_block_hash: BlockHash) -> Self {
        match self.try_extend(child_block_hash) {
            Ok(hash) => hash,
            Err(err) => panic!("{err}"),
        }
    }

    /// The key of the next block, or an error if its position does not fit.
    pub fn try_extend(&self, child_block_hash: BlockHash) -> Result<Self, PositionOverflow> {
        let parent = self.current_sequence_hash();
        let current = compute_next_sequence_hash(parent, child_block_hash);
        Self::try_new(current, Some(parent), self.position() + 1)
    }

    /// Mode bits: 0, 1 or 2, chosen by the position's magnitude.
    pub const fn mode(&self) -> u8 {
        (self.0 >> 126) as u8
    }

    const fn parent_bits(&self) -> u32 {
        layout(self.mode() as u32).1
    }

    /// Block position in its sequence (0 for the first block).
    pub const fn position(&self) -> u64 {
        let (position_bits, parent_bits) = layout(self.mode() as u32);
        ((self.0 >> (64 + parent_bits)) as u64) & low_mask(position_bits)
    }

    /// The full 64-bit chained sequence hash of this block.
    pub const fn current_sequence_hash(&self) -> u64 {
        (self.0 >> self.parent_bits()) as u64
    }

    /// The stored fragment of the parent's sequence hash (0 for a root).
    pub const fn parent_fragment(&self) -> u64 {
        (self.0 as u64) & low_mask(self.parent_bits())
    }

    /// Dynamo's name for [`SequenceHash::parent_fragment`].
    pub const fn parent_hash_fragment(&self) -> u64 {
        self.parent_fragment()
    }

    /// This block's sequence hash cut to the fragment width a child at
    /// `child_position` stores, so `child.parent_fragment() ==
    /// parent.parent_fragment_for_child_position(child.position())`.
    pub const fn parent_fragment_for_child_position(&self, child_position: u64) -> u64 {
        let (_, bits) = layout(mode_for(child_position));
        self.current_sequence_hash() & low_mask(bits)
    }

    /// This block's 64-bit sequence hash if it is `child`'s parent as far
    /// as the keys can tell (`child` sits at the next position and stores
    /// this block's fragment), else `None`.
    ///
    /// The same answer as comparing [`position`](Self::position) and
    /// [`parent_fragment_for_child_position`](Self::parent_fragment_for_child_position),
    /// with a path for the common case, both keys in mode 0, that reads the
    /// fixed mode-0 layout instead of looking the layout up several times
    /// (the event emitter asks this once per stored block).
    #[inline]
    pub const fn hash_as_parent_of(&self, child: SequenceHash) -> Option<u64> {
        let (parent, key) = (self.0, child.0);
        if (parent | key) >> 126 == 0 {
            // Mode 0 on both sides: [ 0: 2 ][ position: 8 ][ hash: 64 ][ fragment: 54 ].
            const FRAGMENT: u64 = (1 << 54) - 1;
            let hash = (parent >> 54) as u64;
            let next_position = (key >> 118) as u32 == (parent >> 118) as u32 + 1;
            return if next_position && (key as u64) & FRAGMENT == hash & FRAGMENT {
                Some(hash)
            } else {
                None
            };
        }
        let position = child.position();
        if position == self.position() + 1
            && child.parent_fragment() == self.parent_fragment_for_child_position(position)
        {
            Some(self.current_sequence_hash())
        } else {
            None
        }
    }

    /// The packed 128-bit value.
    #[inline(always)]
    pub const fn as_u128(&self) -> u128 {
        self.0
    }

    /// Wraps a packed value known to come from a valid key (crate internal).
    #[inline(always)]
    pub(crate) const fn from_valid_u128(raw: u128) -> Self {
        Self(raw)
    }

    /// Reads a packed value, rejecting the reserved mode `0b11`.
    pub const fn try_from_u128(raw: u128) -> Result<Self, InvalidSequenceHash> {
        if (raw >> 126) == 0b11 {
            Err(InvalidSequenceHash { raw })
        } else {
            Ok(Self(raw))
        }
    }
}

impl TryFrom<u128> for SequenceHash {
    type Error = InvalidSequenceHash;

    fn try_from(raw: u128) -> Result<Self, Self::Error> {
        Self::try_from_u128(raw)
    }
}

impl From<SequenceHash> for u128 {
    fn from(hash: SequenceHash) -> u128 {
        hash.0
    }
}

impl fmt::Debug for SequenceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{:016x}:{:x}",
            self.position(),
            self.current_sequence_hash(),
            self.parent_fragment()
        )
    }
}

impl fmt::Display for SequenceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_in_every_mode() {
        for position in [0, 1, 255, 256, 65_535, 65_536, MAX_POSITION - 1] {
            let hash = SequenceHash::new(0x0123_4567_89ab_cdef, Some(u64::MAX), position);
            assert_eq!(hash.position(), position);
            assert_eq!(hash.current_sequence_hash(), 0x0123_4567_89ab_cdef);
            let (_, bits) = layout(mode_for(position));
            assert_eq!(hash.parent_fragment(), low_mask(bits));
        }
    }

    #[test]
    fn position_past_the_limit_is_an_error() {
        assert_eq!(
            SequenceHash::try_new(1, None, MAX_POSITION),
            Err(PositionOverflow {
                position: MAX_POSITION
            })
        );
    }

    #[test]
    fn reserved_mode_is_rejected() {
        assert!(SequenceHash::try_from_u128(u128::MAX).is_err());
        let ok = SequenceHash::new(7, Some(3), 300);
        assert_eq!(SequenceHash::try_from_u128(ok.as_u128()), Ok(ok));
    }

    /// The general answer, from the layout lookups alone.
    fn parent_link_by_layout(parent: SequenceHash, child: SequenceHash) -> Option<u64> {
        (child.position() == parent.position() + 1
            && child.parent_fragment()
                == parent.parent_fragment_for_child_position(child.position()))
        .then(|| parent.current_sequence_hash())
    }

    proptest::proptest! {
        /// The mode-0 path answers what the layout lookups answer: for real
        /// parent/child pairs around every mode boundary, for pairs one bit
        /// off, and for unrelated keys.
        #[test]
        fn hash_as_parent_of_matches_the_layout(
            current in proptest::prelude::any::<u64>(),
            grandparent in proptest::prelude::any::<u64>(),
            block in proptest::prelude::any::<u64>(),
            position in proptest::prop_oneof![0..300u64, 65_400..65_700u64, MAX_POSITION - 300..MAX_POSITION - 1],
            flip in 0..128u32,
            raw in proptest::prelude::any::<(u128, u128)>(),
        ) {
            let parent = SequenceHash::new(current, Some(grandparent), position);
            let child = parent.extend(block);
            proptest::prop_assert_eq!(parent.hash_as_parent_of(child), Some(current));
            for (a, b) in [
                (parent, child),
                (child, parent),
                (parent, SequenceHash(child.0 ^ (1u128 << flip))),
                (SequenceHash(parent.0 ^ (1u128 << flip)), child),
                (SequenceHash(raw.0 & (u128::MAX >> 1)), SequenceHash(raw.1 & (u128::MAX >> 1))),
                (SequenceHash(raw.0 >> 2), SequenceHash(raw.1 >> 2)),
            ] {
                proptest::prop_assert_eq!(a.hash_as_parent_of(b), parent_link_by_layout(a, b));
            }
        }
    }

    #[test]
    fn child_names_its_parent_fragment() {
        let mut hash = SequenceHash::root(42);
        for step in 0..300u64 {
            let child = hash.extend(step.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert_eq!(
                child.parent_fragment(),
                hash.parent_fragment_for_child_position(child.position())
            );
            hash = child;
        }
    }
}
