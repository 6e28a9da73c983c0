//! [`KeyHasher`]: how the crate hashes keys for its own hash tables (the
//! store's index, the policies' tables).
//!
//! The keys those tables index are cut from [`crate::SequenceHash`]es, and a
//! table must not trust them to be evenly spread: the low bits of many keys
//! can repeat (structured ids, or prompts a client ground until their block
//! hashes share bits, which costs about `2^bits` tries per block), and a table
//! that takes its bucket from a few input bits then piles those keys into one
//! probe run. This module owns the one answer: a folded multiply (the full
//! 128-bit product of two 64-bit words, high half xored into low half) of the
//! key's two words, each first xored with a random seed drawn when the table
//! is built. Every input bit reaches every output bit, so both the bucket
//! (hashbrown's low bits) and the tag (its top seven) depend on the whole key,
//! and no one outside the process can tell which keys will collide. It costs
//! one multiply, as the unseeded hash it replaced did.
//!
//! Which tables use it: those whose collisions cost time (the store's hash
//! index, the block tree's `(position, fragment) -> slot` table, S3-FIFO's
//! ghost index). The prefix
//! policy's set-associative ghost and TinyLFU's sketch are not seeded: a
//! collision there costs no probe (a set has four ways, a sketch row one
//! counter), only what is remembered, and their placement decides hit rates,
//! which must come out the same on every run. Both already mix every key bit
//! into their index (tests in their modules check it with the same
//! adversarial keys).
//!
//! This module never decides what a table stores; it only hashes.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// A seeded hash of a key made of two 64-bit words, for one table.
///
/// Copy it into the table when the table is built; every hash of that
/// table's keys must use the same `KeyHasher`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHasher {
    seed: [u64; 2],
}

impl KeyHasher {
    /// A hasher with a fresh random seed. The randomness is the standard
    /// library's (the keys of `RandomState`, drawn from the operating system
    /// once per thread), so this needs no dependency and no global state.
    ///
    /// Under a model checker (`--cfg shuttle` or `--cfg loom`) the seed is
    /// fixed: a model must take the same steps in every run it replays.
    pub(crate) fn random() -> Self {
        if cfg!(any(shuttle, loom)) {
            return Self {
                seed: [0x243F_6A88_85A3_08D3, 0x1319_8A2E_0370_7344],
            };
        }
        let state = RandomState::new();
        Self {
            seed: [state.hash_one(0u8), state.hash_one(1u8)],
        }
    }

    /// A hasher with a chosen seed (tests, and choices that must repeat
    /// from run to run, such as which keys a policy samples). The seed must
    /// look random: a sparse one (few bits set) leaves keys that are sparse
    /// in the same places poorly mixed, as a folded multiply of two sparse
    /// words is. Never for a table that outside keys can flood.
    pub(crate) const fn with_seed(seed: [u64; 2]) -> Self {
        Self { seed }
    }

    /// The table hash of the key `(a, b)`.
    #[inline(always)]
    pub(crate) fn hash(self, a: u64, b: u64) -> u64 {
        folded_multiply(a ^ self.seed[0], b ^ self.seed[1])
    }

    /// The table hash of a 128-bit key (its low and high words).
    #[inline(always)]
    pub(crate) fn hash_u128(self, key: u128) -> u64 {
        self.hash(key as u64, (key >> 64) as u64)
    }
}

/// The 128-bit product of `a` and `b`, its high half xored into its low half.
#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// Test support: adversarial keys and a model of the probes they cost.
#[cfg(test)]
pub(crate) mod adversarial {
    /// Longest probe (buckets looked at to find a key, 1 for its home bucket)
    /// when `hashes` are inserted, in order, into an open-addressing table of
    /// `buckets` (a power of two) with linear probing from the hash's low
    /// bits. Keys whose home buckets crowd together get long probes here and
    /// in hashbrown alike. For 4,096 or 8,192 random hashes at load 1/4 the
    /// longest probe stayed at or below 22 in 20,000 trials (at load 1/2,
    /// 57).
    pub(crate) fn longest_probe(hashes: impl IntoIterator<Item = u64>, buckets: usize) -> usize {
        assert!(buckets.is_power_of_two());
        let mask = buckets - 1;
        let mut used = vec![false; buckets];
        let mut longest = 0;
        for hash in hashes {
            let mut bucket = hash as usize & mask;
            let mut probe = 1;
            while used[bucket] {
                bucket = (bucket + 1) & mask;
                probe += 1;
                assert!(probe <= buckets, "table full");
            }
            used[bucket] = true;
            longest = longest.max(probe);
        }
        longest
    }

    /// Buckets hashbrown gives a table created `with_capacity(capacity)`
    /// (load at most 7/8, rounded up to a power of two).
    pub(crate) fn hashbrown_buckets(capacity: usize) -> usize {
        (capacity * 8 / 7).next_power_of_two()
    }

    /// `value` with its low `bits` bits replaced by one of `patterns`
    /// values, picked by the value's top bits: the shape of keys whose low
    /// bits repeat. The same input always gives the same output, so a chain
    /// shaped block by block keeps naming its parents.
    pub(crate) fn low_bits_cycling(value: u64, bits: u32, patterns: u64) -> u64 {
        let mask = (1u64 << bits) - 1;
        let pattern = (value >> 56) % patterns.max(1);
        (value & !mask) | (pattern.wrapping_mul(0x9_E377) & mask)
    }

    /// `count` random 128-bit keys ground so that `low ^ high.rotate_left(29)`
    /// (the xor fold an unseeded hash of the two words would start from)
    /// has its low `bits` bits in one of `patterns` values: what a client
    /// that knows an unseeded hash function can produce.
    pub(crate) fn ground_against_xor_fold(
        mut state: u64,
        count: usize,
        bits: u32,
        patterns: u64,
    ) -> Vec<u128> {
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z ^ (z >> 31)
        };
        (0..count)
            .map(|_| {
                let (low, high) = (next(), next());
                let fold = low ^ high.rotate_left(29);
                let low = low ^ fold ^ low_bits_cycling(fold, bits, patterns);
                u128::from(high) << 64 | u128::from(low)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::adversarial::longest_probe;
    use super::*;
    use proptest::prelude::*;

    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn two_random_hashers_get_different_seeds() {
        let (a, b) = (KeyHasher::random(), KeyHasher::random());
        assert_ne!(a.seed, b.seed);
        assert_ne!(a.hash(1, 2), b.hash(1, 2));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Flipping any one of the 128 input bits changes the bucket (low
        /// 16 bits) and the hashbrown tag (top 7 bits) almost always.
        #[test]
        fn every_input_bit_moves_the_bucket_and_the_tag(seed in any::<[u64; 2]>(), start in any::<u64>()) {
            let hasher = KeyHasher::with_seed(seed);
            let mut rng = start;
            for bit in 0..128u32 {
                let (mut bucket_moves, mut tag_moves) = (0, 0);
                let trials = 200;
                for _ in 0..trials {
                    let key = u128::from(splitmix(&mut rng)) << 64 | u128::from(splitmix(&mut rng));
                    let (h, g) = (hasher.hash_u128(key), hasher.hash_u128(key ^ (1u128 << bit)));
                    bucket_moves += usize::from((h ^ g) & 0xFFFF != 0);
                    tag_moves += usize::from((h ^ g) >> 57 != 0);
                }
                prop_assert!(bucket_moves >= trials * 9 / 10, "bit {bit}: bucket moved {bucket_moves}/{trials}");
                prop_assert!(tag_moves >= trials * 3 / 4, "bit {bit}: tag moved {tag_moves}/{trials}");
            }
        }

        /// Keys whose low bits repeat, the shape that flooded the old
        /// one-multiply hash, spread like random keys: at load 1/4 no probe
        /// gets long.
        #[test]
        fn keys_sharing_low_bits_keep_probes_short(
            seed in any::<[u64; 2]>(),
            start in any::<u64>(),
            bits in 4u32..=48,
            patterns in 1u64..=16,
        ) {
            let hasher = KeyHasher::with_seed(seed);
            let mut rng = start;
            let keys = 8_192;
            let hashes: Vec<u64> = (0..keys)
                .map(|_| {
                    let low = super::adversarial::low_bits_cycling(splitmix(&mut rng), bits, patterns);
                    hasher.hash(low, splitmix(&mut rng) & 0xFF)
                })
                .collect();
            // Random hashes: longest probe at most 20 in 20,000 trials.
            let longest = longest_probe(hashes, keys * 4);
            prop_assert!(longest <= 48, "longest probe {longest}");
        }
    }
}
