//! Hashing: token blocks, chained sequence hashes and the positional lineage
//! key ([`SequenceHash`]) the manager is keyed by.
//!
//! Every function here is bit-identical to `dynamo-tokens` 1.6.1 for the same
//! tokens, block size and salt (checked by `tests/hash_conformance.rs`), so a
//! Dynamo router and this crate name the same prefix with the same key.
//!
//! - block hash: `xxh3_64(tokens as little-endian u32 bytes, seed = salt)`;
//! - sequence hash: `seq[0] = block[0]`, `seq[i] = xxh3_64([seq[i-1], block[i]], seed = 1337)`;
//! - [`SequenceHash`]: position, `seq[i]` and a fragment of `seq[i-1]` in 128 bits.

mod lineage;
mod tokens;

pub use lineage::{
    InvalidSequenceHash, PositionOverflow, PositionalLineageHash, SequenceHash, MAX_POSITION,
};
pub use tokens::{PartialTokenBlock, TokenBlock, TokenBlockSequence, TokenError};

/// One token id.
pub type Token = u32;
/// Hash of a salt payload (LoRA id, multimodal hashes, tenant salt); seeds every block hash.
pub type SaltHash = u64;
/// Hash of one block's tokens under a salt.
pub type BlockHash = u64;

/// Seed of every chain step `(parent sequence hash, child block hash) -> child sequence hash`.
pub const CHAIN_SEED: u64 = 1337;

/// Hash of one block's tokens, seeded by the salt hash.
///
/// ```
/// let a = kvblocks::hash::compute_block_hash(&[1, 2, 3, 4], 0);
/// let b = kvblocks::hash::compute_block_hash(&[1, 2, 3, 4], 7);
/// assert_ne!(a, b, "a salt separates equal tokens");
/// ```
#[inline]
pub fn compute_block_hash(tokens: &[Token], salt: SaltHash) -> BlockHash {
    const CHUNK: usize = 64;
    fn fill(bytes: &mut [u8; 4 * CHUNK], chunk: &[Token]) -> usize {
        for (out, token) in bytes.chunks_exact_mut(4).zip(chunk) {
            out.copy_from_slice(&token.to_le_bytes());
        }
        chunk.len() * 4
    }
    let mut bytes = [0u8; 4 * CHUNK];
    if tokens.len() <= CHUNK {
        let len = fill(&mut bytes, tokens);
        return xxhash_rust::xxh3::xxh3_64_with_seed(&bytes[..len], salt);
    }
    // Longer blocks stream through the same stack buffer: no allocation.
    let mut hasher = xxhash_rust::xxh3::Xxh3::with_seed(salt);
    for chunk in tokens.chunks(CHUNK) {
        let len = fill(&mut bytes, chunk);
        hasher.update(&bytes[..len]);
    }
    hasher.digest()
}

/// One chain step: the sequence hash of a child block from its parent's
/// sequence hash and its own block hash.
#[inline]
pub fn compute_next_sequence_hash(parent_sequence_hash: u64, child_block_hash: BlockHash) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&parent_sequence_hash.to_le_bytes());
    bytes[8..].copy_from_slice(&child_block_hash.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, CHAIN_SEED)
}

/// Hash of a raw salt payload (seed 0), to pass as a sequence's salt hash.
#[inline]
pub fn compute_salt_hash_from_bytes(payload: &[u8]) -> SaltHash {
    xxhash_rust::xxh3::xxh3_64_with_seed(payload, 0)
}
