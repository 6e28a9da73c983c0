//! Helpers shared by the integration tests.

/// A small xorshift generator so each thread's sequence is reproducible.
pub struct Rng(pub u64);

impl Rng {
    /// The next pseudo-random word.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A pseudo-random number in `0..n`.
    #[allow(dead_code)] // not every test file draws bounded numbers
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Allocates, stages (block size 4) and registers one block per hash, in
/// order; panics if the pool has no room.
#[allow(dead_code)] // not every test file registers chains
pub fn register<T: kvblocks::BlockMetadata>(
    m: &kvblocks::BlockManager<T>,
    hashes: &[kvblocks::SequenceHash],
) -> Vec<kvblocks::ImmutableBlock<T>> {
    let staged = m
        .allocate_blocks(hashes.len())
        .expect("room for the chain")
        .into_iter()
        .zip(hashes)
        .map(|(b, h)| b.stage(*h, 4).expect("block size 4"))
        .collect();
    m.register_blocks(staged)
}

/// A chain of `len` hashes whose tokens derive from `seed`.
#[allow(dead_code)] // not every test file builds chains this way
pub fn chain(len: usize, seed: u64) -> Vec<kvblocks::SequenceHash> {
    let mut hashes = vec![kvblocks::SequenceHash::root(seed)];
    for i in 1..len {
        hashes.push(hashes[i - 1].extend(seed << 8 | i as u64));
    }
    hashes
}
