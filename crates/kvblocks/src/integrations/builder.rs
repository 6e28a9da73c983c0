//! [`SchedulableSequenceBuilder`]: named, checked construction of a
//! [`SchedulableSequence`], salt and delegate included.

use std::marker::PhantomData;
use std::sync::Arc;

use super::{RequestSequence, SchedulableSequence, SequenceBuildError, SequenceDelegate};
use crate::hash::{SaltHash, Token};
use crate::BlockMetadata;

/// Builds a [`SchedulableSequence`]; `tokens`, `max_output_tokens` and
/// `block_size` are required.
///
/// ```
/// use kvblocks::{hash::compute_salt_hash_from_bytes, SchedulableSequence};
/// #[derive(Clone)] struct Gpu;
/// let lora = compute_salt_hash_from_bytes(b"adapter-7");
/// let seq = SchedulableSequence::<Gpu>::builder()
///     .tokens(vec![1, 2, 3, 4, 5])
///     .max_output_tokens(16)
///     .block_size(4)
///     .salt_hash(lora)                // its blocks never mix with other adapters'
///     .build()?;
/// assert_eq!(seq.inner().salt_hash(), lora);
/// # Ok::<(), kvblocks::SequenceBuildError>(())
/// ```
pub struct SchedulableSequenceBuilder<T> {
    tokens: Option<Vec<Token>>,
    max_output_tokens: Option<usize>,
    block_size: Option<u32>,
    salt_hash: Option<SaltHash>,
    delegate: Option<Arc<dyn SequenceDelegate>>,
    _tier: PhantomData<fn() -> T>,
}

impl<T> Default for SchedulableSequenceBuilder<T> {
    fn default() -> Self {
        Self {
            tokens: None,
            max_output_tokens: None,
            block_size: None,
            salt_hash: None,
            delegate: None,
            _tier: PhantomData,
        }
    }
}

impl<T: BlockMetadata> SchedulableSequenceBuilder<T> {
    /// The prompt (at least one token).
    pub fn tokens(mut self, tokens: Vec<Token>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// The output budget.
    pub fn max_output_tokens(mut self, max_output_tokens: usize) -> Self {
        self.max_output_tokens = Some(max_output_tokens);
        self
    }

    /// Tokens per block (the manager's block size).
    pub fn block_size(mut self, block_size: u32) -> Self {
        self.block_size = Some(block_size);
        self
    }

    /// The salt every block hash is seeded with: the LoRA adapter, tenant or
    /// multimodal identity (see [`crate::hash::compute_salt_hash_from_bytes`]).
    /// Default 0, as in `dynamo-tokens` for no salt.
    pub fn salt_hash(mut self, salt_hash: SaltHash) -> Self {
        self.salt_hash = Some(salt_hash);
        self
    }

    /// Receives every event of the sequence.
    pub fn delegate(mut self, delegate: Arc<dyn SequenceDelegate>) -> Self {
        self.delegate = Some(delegate);
        self
    }

    /// Builds the sequence (emitting `Created` to the delegate).
    ///
    /// # Errors
    ///
    /// [`SequenceBuildError::Missing`] for an unset required field;
    /// [`SequenceBuildError::Request`] for an empty prompt or a zero block size.
    pub fn build(self) -> Result<SchedulableSequence<T>, SequenceBuildError> {
        let tokens = self.tokens.ok_or(SequenceBuildError::Missing("tokens"))?;
        let max_output_tokens = self
            .max_output_tokens
            .ok_or(SequenceBuildError::Missing("max_output_tokens"))?;
        let block_size = self
            .block_size
            .ok_or(SequenceBuildError::Missing("block_size"))?;
        let inner =
            RequestSequence::try_new(tokens, max_output_tokens, block_size, self.salt_hash)?;
        Ok(SchedulableSequence::from_request(inner, self.delegate))
    }
}

impl<T> std::fmt::Debug for SchedulableSequenceBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulableSequenceBuilder")
            .field("tokens", &self.tokens.as_ref().map(Vec::len))
            .field("max_output_tokens", &self.max_output_tokens)
            .field("block_size", &self.block_size)
            .field("salt_hash", &self.salt_hash)
            .field("delegate", &self.delegate.is_some())
            .finish()
    }
}
