//! Token blocks: a token stream cut into fixed-size blocks, each full block
//! named by its hashes.
//!
//! This module owns [`TokenBlockSequence`] (a token stream that grows and
//! shrinks at its end), the full [`TokenBlock`]s it cuts off, and the
//! [`PartialTokenBlock`] tail still being filled. It never touches slots, the
//! store or the manager: it only turns tokens into keys.
//!
//! A block is hashed exactly once, when its last token arrives; appending,
//! extending or truncating never re-hashes an earlier block. The tail is
//! never full: the token that fills it seals it into a [`TokenBlock`] at once.
//!
//! ```
//! use kvblocks::hash::TokenBlockSequence;
//!
//! let mut seq = TokenBlockSequence::from_slice(&[1, 2, 3, 4, 5], 4, None);
//! assert_eq!(seq.blocks().len(), 1);
//! assert_eq!(seq.current_block().tokens(), &[5]);
//!
//! // Three more tokens fill the tail: block 1 is sealed.
//! assert_eq!(seq.extend(&[6, 7, 8]).unwrap(), Some(1..2));
//! assert!(seq.current_block().is_empty());
//!
//! // The keys a caller hands to `BlockManager::match_blocks`.
//! let keys = seq.sequence_hashes();
//! assert_eq!(keys[1].position(), 1);
//! ```

use std::ops::Range;

use super::{compute_block_hash, BlockHash, SaltHash, SequenceHash, Token, MAX_POSITION};

/// What can go wrong building or editing a [`TokenBlockSequence`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A block size of zero was asked for.
    #[error("block size must be greater than zero")]
    ZeroBlockSize,
    /// A block would land at a position a [`SequenceHash`] cannot encode
    /// (at or past [`MAX_POSITION`]); the sequence was left unchanged.
    #[error("block position {position} does not fit a sequence hash (limit {MAX_POSITION})")]
    PositionOverflow {
        /// The first position that does not fit.
        position: u64,
    },
    /// More tokens were asked to be removed than the sequence holds; the
    /// sequence was left unchanged.
    #[error("cannot remove {requested} tokens from a sequence of {len}")]
    UnwindBeyondLength {
        /// How many tokens the caller asked to remove.
        requested: usize,
        /// How many tokens the sequence held.
        len: usize,
    },
}

impl From<super::PositionOverflow> for TokenError {
    fn from(err: super::PositionOverflow) -> Self {
        TokenError::PositionOverflow {
            position: err.position,
        }
    }
}

/// A full block: exactly `block_size` tokens and the hashes naming them.
///
/// Immutable once built. It fits one cache line (64 bytes on 64-bit targets).
///
/// ```
/// use kvblocks::hash::TokenBlockSequence;
/// let seq = TokenBlockSequence::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8], 4, None);
/// let [first, second] = seq.blocks() else { unreachable!() };
/// assert_eq!(first.tokens(), &[1, 2, 3, 4]);
/// assert_eq!(second.parent_sequence_hash(), Some(first.sequence_hash()));
/// assert_eq!(second.positional_lineage_hash().position(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBlock {
    tokens: Box<[Token]>,
    salt_hash: SaltHash,
    block_hash: BlockHash,
    /// The previous block's 64-bit sequence hash; 0 (and unused) at position 0,
    /// which is how a missing parent is told apart without an `Option`.
    parent_sequence_hash: u64,
    /// Position, own sequence hash and parent fragment.
    lineage: SequenceHash,
}

impl TokenBlock {
    /// Hashes `tokens` as the block following `parent` (or as the first block).
    ///
    /// The caller has checked that the new position fits.
    fn seal(tokens: Box<[Token]>, salt_hash: SaltHash, parent: Option<&TokenBlock>) -> Self {
        let block_hash = compute_block_hash(&tokens, salt_hash);
        let (lineage, parent_sequence_hash) = match parent {
            None => (SequenceHash::root(block_hash), 0),
            Some(parent) => (parent.lineage.extend(block_hash), parent.sequence_hash()),
        };
        Self {
            tokens,
            salt_hash,
            block_hash,
            parent_sequence_hash,
            lineage,
        }
    }

    /// The block's tokens.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// The salt hash the block was hashed under.
    pub fn salt_hash(&self) -> SaltHash {
        self.salt_hash
    }

    /// Hash of this block's tokens alone (seeded by the salt).
    pub fn block_hash(&self) -> BlockHash {
        self.block_hash
    }

    /// Chained 64-bit hash of the whole prefix ending with this block.
    pub fn sequence_hash(&self) -> u64 {
        self.lineage.current_sequence_hash()
    }

    /// The previous block's sequence hash, `None` for the first block.
    pub fn parent_sequence_hash(&self) -> Option<u64> {
        (self.position() > 0).then_some(self.parent_sequence_hash)
    }

    /// Index of this block in its sequence (0 for the first block).
    pub fn position(&self) -> u64 {
        self.lineage.position()
    }

    /// The 128-bit key the manager registers and matches this block by.
    pub fn positional_lineage_hash(&self) -> SequenceHash {
        self.lineage
    }

    /// Number of tokens in the block (the sequence's block size).
    pub fn block_size(&self) -> usize {
        self.tokens.len()
    }
}

/// The tail of a sequence: fewer than `block_size` tokens not yet hashed.
///
/// ```
/// use kvblocks::hash::TokenBlockSequence;
/// let seq = TokenBlockSequence::from_slice(&[1, 2, 3, 4, 5, 6], 4, None);
/// assert_eq!(seq.current_block().tokens(), &[5, 6]);
/// assert_eq!(seq.current_block().remaining(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialTokenBlock {
    tokens: Vec<Token>,
    block_size: usize,
}

impl PartialTokenBlock {
    fn empty(block_size: usize) -> Self {
        // Capped: an absurd block size must not reserve gigabytes up front.
        Self {
            tokens: Vec::with_capacity(block_size.min(1024)),
            block_size,
        }
    }

    /// The tokens collected so far.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Number of tokens collected so far.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// `true` when no token has been collected since the last full block.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Tokens still needed to fill the block.
    pub fn remaining(&self) -> usize {
        self.block_size - self.tokens.len()
    }

    /// The size this block will have once full.
    pub fn block_size(&self) -> usize {
        self.block_size
    }
}

/// A token stream cut into hashed full blocks plus a partial tail.
///
/// A `None` salt means salt hash 0. Equal tokens, block size and salt give
/// equal hashes here and in `dynamo-tokens` 1.6.1.
///
/// ```
/// use kvblocks::hash::TokenBlockSequence;
/// let mut seq = TokenBlockSequence::from_slice(&[10, 11, 12], 4, Some(42));
/// assert!(seq.blocks().is_empty());
/// assert_eq!(seq.append(13)?, Some(0));          // completes block 0
/// assert_eq!(seq.extend(&[14, 15, 16, 17, 18])?, Some(1..2));
/// assert_eq!(seq.total_tokens(), 9);
/// // The keys a scheduler matches with, one per full block:
/// assert_eq!(seq.sequence_hashes().len(), 2);
/// # Ok::<(), kvblocks::hash::TokenError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBlockSequence {
    blocks: Vec<TokenBlock>,
    current: PartialTokenBlock,
    salt_hash: SaltHash,
}

impl TokenBlockSequence {
    /// Cuts `tokens` into blocks of `block_size`; the leftover tokens form the tail.
    ///
    /// # Panics
    ///
    /// Panics if `block_size` is 0 or if the tokens make more than
    /// [`MAX_POSITION`] full blocks; see [`TokenBlockSequence::try_from_slice`].
    pub fn from_slice(tokens: &[Token], block_size: u32, salt_hash: Option<SaltHash>) -> Self {
        match Self::try_from_slice(tokens, block_size, salt_hash) {
            Ok(seq) => seq,
            Err(err) => panic!("{err}"),
        }
    }

    /// Cuts `tokens` into blocks of `block_size`, reporting bad input instead of panicking.
    ///
    /// # Errors
    ///
    /// [`TokenError::ZeroBlockSize`] if `block_size` is 0;
    /// [`TokenError::PositionOverflow`] if the tokens make more than
    /// [`MAX_POSITION`] full blocks.
    pub fn try_from_slice(
        tokens: &[Token],
        block_size: u32,
        salt_hash: Option<SaltHash>,
    ) -> Result<Self, TokenError> {
        if block_size == 0 {
            return Err(TokenError::ZeroBlockSize);
        }
        let mut seq = Self {
            blocks: Vec::new(),
            current: PartialTokenBlock::empty(block_size as usize),
            salt_hash: salt_hash.unwrap_or(0),
        };
        seq.extend(tokens)?;
        Ok(seq)
    }

    /// Same as [`TokenBlockSequence::from_slice`], taking an owned token vector.
    ///
    /// # Panics
    ///
    /// As [`TokenBlockSequence::from_slice`].
    pub fn new(tokens: Vec<Token>, block_size: u32, salt_hash: Option<SaltHash>) -> Self {
        Self::from_slice(&tokens, block_size, salt_hash)
    }

    /// Adds one token; returns the index of the block it filled, if any.
    ///
    /// # Errors
    ///
    /// [`TokenError::PositionOverflow`] if the token would fill a block past
    /// the last encodable position; the token is not added.
    #[inline]
    pub fn append(&mut self, token: Token) -> Result<Option<usize>, TokenError> {
        if self.current.remaining() > 1 {
            self.current.tokens.push(token);
            return Ok(None);
        }
        self.append_filling(token)
    }

    /// [`append`](Self::append) of the token that fills the tail (one in
    /// `block_size`), out of line so the common case stays small.
    #[inline(never)]
    fn append_filling(&mut self, token: Token) -> Result<Option<usize>, TokenError> {
        self.check_room(1)?;
        self.current.tokens.push(token);
        self.seal_tail();
        Ok(Some(self.blocks.len() - 1))
    }

    /// Alias of [`TokenBlockSequence::append`].
    ///
    /// # Errors
    ///
    /// As [`TokenBlockSequence::append`].
    pub fn push_token(&mut self, token: Token) -> Result<Option<usize>, TokenError> {
        self.append(token)
    }

    /// Adds `tokens`; returns the index range of the blocks they filled, if any.
    ///
    /// # Errors
    ///
    /// [`TokenError::PositionOverflow`] if a filled block would land past the
    /// last encodable position; no token is added.
    pub fn extend(&mut self, tokens: &[Token]) -> Result<Option<Range<usize>>, TokenError> {
        let block_size = self.block_size();
        let filling = (self.current.len() + tokens.len()) / block_size;
        if filling == 0 {
            self.current.tokens.extend_from_slice(tokens);
            return Ok(None);
        }
        self.check_room(filling)?;
        let start = self.blocks.len();
        self.blocks.reserve(filling);

        let mut rest = tokens;
        if !self.current.is_empty() {
            let (head, tail) = rest.split_at(self.current.remaining());
            self.current.tokens.extend_from_slice(head);
            self.seal_tail();
            rest = tail;
        }
        let mut chunks = rest.chunks_exact(block_size);
        for chunk in &mut chunks {
            let block = TokenBlock::seal(chunk.into(), self.salt_hash, self.blocks.last());
            self.blocks.push(block);
        }
        self.current.tokens.extend_from_slice(chunks.remainder());
        Ok(Some(start..self.blocks.len()))
    }

    /// Keeps the first `len` tokens and drops the rest; does nothing if
    /// `len >= total_tokens()` (like `Vec::truncate`).
    ///
    /// Full blocks before the cut keep their hashes; a block the cut falls
    /// inside is dropped and its kept tokens become the tail.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.total_tokens() {
            return;
        }
        let block_size = self.block_size();
        let (kept_blocks, kept_tail) = (len / block_size, len % block_size);
        if kept_blocks < self.blocks.len() {
            let reopened = &self.blocks[kept_blocks].tokens[..kept_tail];
            self.current.tokens.clear();
            self.current.tokens.extend_from_slice(reopened);
            self.blocks.truncate(kept_blocks);
        } else {
            self.current.tokens.truncate(kept_tail);
        }
    }

    /// Drops the last `count` tokens.
    ///
    /// # Errors
    ///
    /// [`TokenError::UnwindBeyondLength`] if `count > total_tokens()`; the
    /// sequence is left unchanged. Removing exactly every token is allowed.
    pub fn unwind(&mut self, count: usize) -> Result<(), TokenError> {
        let len = self.total_tokens();
        if count > len {
            return Err(TokenError::UnwindBeyondLength {
                requested: count,
                len,
            });
        }
        self.truncate(len - count);
        Ok(())
    }

    /// Removes and returns the last token, or `None` if the sequence is empty.
    pub fn pop(&mut self) -> Option<Token> {
        if let Some(token) = self.current.tokens.pop() {
            return Some(token);
        }
        let last = self.blocks.pop()?;
        let (&token, rest) = last.tokens.split_last()?;
        self.current.tokens.extend_from_slice(rest);
        Some(token)
    }

    /// Drops every token, keeping the block size and salt.
    pub fn reset(&mut self) {
        self.blocks.clear();
        self.current.tokens.clear();
    }

    /// The full blocks, in order.
    pub fn blocks(&self) -> &[TokenBlock] {
        &self.blocks
    }

    /// The last full block, if any.
    pub fn last_complete_block(&self) -> Option<&TokenBlock> {
        self.blocks.last()
    }

    /// The partial tail (never full).
    pub fn current_block(&self) -> &PartialTokenBlock {
        &self.current
    }

    /// Number of tokens in the full blocks and the tail together.
    pub fn total_tokens(&self) -> usize {
        self.blocks.len() * self.block_size() + self.current.len()
    }

    /// Tokens per full block.
    pub fn block_size(&self) -> usize {
        self.current.block_size
    }

    /// The salt hash every block is hashed under (0 when built with `None`).
    pub fn salt_hash(&self) -> SaltHash {
        self.salt_hash
    }

    /// Splits the sequence into its full blocks and its tail.
    pub fn into_parts(self) -> (Vec<TokenBlock>, PartialTokenBlock) {
        (self.blocks, self.current)
    }

    /// The positional lineage hash of every full block, in order: the keys
    /// to pass to `BlockManager::match_blocks`.
    pub fn sequence_hashes(&self) -> Vec<SequenceHash> {
        self.blocks
            .iter()
            .map(TokenBlock::positional_lineage_hash)
            .collect()
    }

    /// Position the next full block will take.
    fn next_position(&self) -> u64 {
        self.blocks.last().map_or(0, |block| block.position() + 1)
    }

    /// Fails unless `count` more blocks fit below [`MAX_POSITION`].
    fn check_room(&self, count: usize) -> Result<(), TokenError> {
        let next = self.next_position();
        if next + count as u64 > MAX_POSITION {
            return Err(TokenError::PositionOverflow {
                position: next.max(MAX_POSITION),
            });
        }
        Ok(())
    }

    /// Seals the (just filled) tail into a full block. A buffer filled to
    /// its capacity becomes the block's tokens as it is (no copy) and the
    /// tail takes a new one; any other is copied and kept.
    fn seal_tail(&mut self) {
        debug_assert_eq!(self.current.remaining(), 0);
        let tail = &mut self.current.tokens;
        let tokens: Box<[Token]> = if tail.len() == tail.capacity() {
            let fresh = Vec::with_capacity(tail.capacity());
            std::mem::replace(tail, fresh).into_boxed_slice()
        } else {
            let tokens = tail.as_slice().into();
            tail.clear();
            tokens
        };
        let block = TokenBlock::seal(tokens, self.salt_hash, self.blocks.last());
        self.blocks.push(block);
    }
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
