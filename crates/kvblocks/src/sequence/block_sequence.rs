//! [`BlockSequence`]: one request's tokens cut into hashed blocks, plus the
//! keys of its full blocks kept side by side for zero-copy matching.
//!
//! Owns tokens and keys only; it never touches slots or a manager. Hashing is
//! [`TokenBlockSequence`]'s (bit-identical to `dynamo-tokens`); this type adds
//! the contiguous key slice a match needs ([`BlockSequence::sequence_hashes`])
//! so no caller has to collect one per step.

use std::ops::Range;

use super::BlockSequenceError;
use crate::hash::{SaltHash, Token, TokenBlock, TokenBlockSequence};
use crate::SequenceHash;

/// A token sequence cut into full blocks (hashed once, when their last token
/// arrives) and a partial tail.
///
/// ```
/// use kvblocks::BlockSequence;
///
/// let mut seq = BlockSequence::new((0..10).collect(), 4, None);
/// assert_eq!(seq.blocks().len(), 2);
/// assert_eq!(seq.append_token(10)?, None);
/// assert_eq!(seq.append_token(11)?, Some(2));         // block 2 just filled
/// assert_eq!(seq.sequence_hashes()[2].position(), 2); // its key, no copy
/// # Ok::<(), kvblocks::BlockSequenceError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSequence {
    sequence: TokenBlockSequence,
    /// `sequence.blocks()[i].positional_lineage_hash()` for every full block.
    hashes: Vec<SequenceHash>,
}

impl BlockSequence {
    /// Cuts `tokens` into blocks of `block_size`, every block hash seeded by
    /// `salt_hash` (`None` is salt 0, as in `dynamo-tokens`).
    ///
    /// # Panics
    ///
    /// If `block_size` is 0 or the tokens make more full blocks than a
    /// [`SequenceHash`] can position; [`BlockSequence::try_new`] reports those
    /// as errors instead.
    pub fn new(tokens: Vec<Token>, block_size: u32, salt_hash: Option<SaltHash>) -> Self {
        match Self::try_new(&tokens, block_size, salt_hash) {
            Ok(seq) => seq,
            Err(err) => panic!("{err}"),
        }
    }

    /// [`BlockSequence::new`] from a slice, with bad input as an error.
    ///
    /// # Errors
    ///
    /// [`BlockSequenceError::Token`] for a zero block size or a position
    /// overflow.
    pub fn try_new(
        tokens: &[Token],
        block_size: u32,
        salt_hash: Option<SaltHash>,
    ) -> Result<Self, BlockSequenceError> {
        let sequence = TokenBlockSequence::try_from_slice(tokens, block_size, salt_hash)?;
        let hashes = sequence.sequence_hashes();
        Ok(Self { sequence, hashes })
    }

    /// The full blocks, in order.
    pub fn blocks(&self) -> &[TokenBlock] {
        self.sequence.blocks()
    }

    /// Number of full blocks.
    pub fn num_blocks(&self) -> usize {
        self.hashes.len()
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.sequence.block_size()
    }

    /// The salt hash every block is seeded with.
    pub fn salt_hash(&self) -> SaltHash {
        self.sequence.salt_hash()
    }

    /// Tokens in the full blocks and the tail together.
    pub fn total_tokens(&self) -> usize {
        self.sequence.total_tokens()
    }

    /// The tokens of the partial tail (never a full block).
    pub fn tail_tokens(&self) -> &[Token] {
        self.sequence.current_block().tokens()
    }

    /// The underlying token sequence.
    pub fn sequence(&self) -> &TokenBlockSequence {
        &self.sequence
    }

    /// The key of every full block, in order, as a new vector
    /// (kvbm-logical's shape; [`sequence_hashes`](Self::sequence_hashes)
    /// borrows the same keys without copying).
    pub fn all_sequence_hashes(&self) -> Vec<SequenceHash> {
        self.hashes.clone()
    }

    /// The key of every full block, in order: what `match_blocks` takes.
    pub fn sequence_hashes(&self) -> &[SequenceHash] {
        &self.hashes
    }

    /// Appends `tokens`; returns the indices of the blocks they filled.
    ///
    /// # Errors
    ///
    /// [`BlockSequenceError::Token`] if a filled block would not fit a
    /// [`SequenceHash`] position; nothing is appended then.
    pub fn extend_tokens(
        &mut self,
        tokens: Vec<Token>,
    ) -> Result<Option<Range<usize>>, BlockSequenceError> {
        self.extend_from_slice(&tokens)
    }

    /// [`extend_tokens`](Self::extend_tokens) from a slice.
    ///
    /// # Errors
    ///
    /// As [`extend_tokens`](Self::extend_tokens); nothing is appended then.
    pub fn extend_from_slice(
        &mut self,
        tokens: &[Token],
    ) -> Result<Option<Range<usize>>, BlockSequenceError> {
        let filled = self.sequence.extend(tokens)?;
        if let Some(range) = &filled {
            let blocks = &self.sequence.blocks()[range.clone()];
            self.hashes
                .extend(blocks.iter().map(TokenBlock::positional_lineage_hash));
        }
        Ok(filled)
    }

    /// Appends one token; returns the index of the block it filled, if any.
    ///
    /// # Errors
    ///
    /// [`BlockSequenceError::Token`] if the filled block would not fit a
    /// [`SequenceHash`] position; the token is not appended then.
    #[inline]
    pub fn append_token(&mut self, token: Token) -> Result<Option<usize>, BlockSequenceError> {
        let filled = self.sequence.append(token)?;
        if let Some(index) = filled {
            let hash = self.sequence.blocks()[index].positional_lineage_hash();
            self.hashes.push(hash);
        }
        Ok(filled)
    }

    /// Whether `count` more tokens can be appended (no block would pass the
    /// last position a [`SequenceHash`] encodes).
    #[inline]
    pub fn has_room_for(&self, count: usize) -> bool {
        // (total + count) / block_size <= MAX_POSITION, without a division
        // (this runs on every decoded token).
        let limit = (crate::hash::MAX_POSITION + 1).saturating_mul(self.block_size() as u64);
        (self.total_tokens() as u64).saturating_add(count as u64) < limit
    }

    /// Removes the last `count` tokens; full blocks before the cut keep their
    /// hashes.
    ///
    /// # Errors
    ///
    /// [`BlockSequenceError::Token`] if `count` exceeds the token count; the
    /// sequence is unchanged then.
    pub fn unwind(&mut self, count: usize) -> Result<(), BlockSequenceError> {
        self.sequence.unwind(count)?;
        self.hashes.truncate(self.sequence.blocks().len());
        Ok(())
    }
}
