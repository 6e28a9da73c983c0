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
