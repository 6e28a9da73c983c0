//! Stress workloads: each generated to exercise one property an eviction
//! policy can get wrong, for `kvsim replay --workload NAME`.
//!
//! This module owns the generators and nothing else; like
//! [`crate::workload`] it produces plain [`Request`]s (512-token blocks, one
//! request every 250 ms) from a seed, with its own SplitMix64 so a seed
//! always gives the same requests. A request's `hash_ids` are a chain:
//! equal ids at the start of two requests are a shared prefix.
//!
//! - [`StressKind::Scan`]: half the requests reuse one of 300 hot prompts
//!   (8 blocks each, uniform), half read a fresh 16-block document never
//!   seen again. Recency alone lets the scans flush the hot prompts.
//! - [`StressKind::Loop`]: 500 prompts of 8 blocks requested in a fixed
//!   cycle. Any pool smaller than the loop defeats LRU completely.
//! - [`StressKind::Phases`]: the traffic changes character every 1,000
//!   requests: scan-heavy (as `Scan`, 200 hot prompts), then
//!   recency-heavy (64 live conversations, each turn extending the last by
//!   4 blocks, replaced after 8 turns), then frequency-heavy (a quarter of
//!   the requests from 200 equally popular prompts, the rest from 20,000
//!   prompts of 4 blocks that recur far apart); the cycle runs twice. No
//!   fixed order suits all three.

use crate::trace::Request;
use crate::BLOCK_TOKENS;

/// Which stress workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StressKind {
    /// Hot prompts between one-off documents.
    Scan,
    /// A fixed cycle of prompts.
    Loop,
    /// Scan-heavy, recency-heavy and frequency-heavy phases in turn.
    Phases,
}

impl StressKind {
    /// Every kind, by name.
    pub const ALL: [(&'static str, StressKind); 3] = [
        ("scan", StressKind::Scan),
        ("loop", StressKind::Loop),
        ("phases", StressKind::Phases),
    ];

    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            StressKind::Scan => "scan",
            StressKind::Loop => "loop",
            StressKind::Phases => "phases",
        }
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
            .map(|&(_, kind)| kind)
    }
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Block ids of prompt `id` of family `family`, `len` blocks: a chain
/// whose first `k` ids are those of every longer prompt of the same id.
fn prompt(family: u64, id: u64, len: u64) -> Vec<u64> {
    (0..len).map(|i| (family << 56) | (id << 16) | i).collect()
}

/// Generates `kind` from `seed`: `requests` requests (`Phases` rounds to
/// whole phases of 1,000).
pub fn generate(kind: StressKind, seed: u64, requests: usize) -> Vec<Request> {
    let mut rng = Rng(seed ^ 0x5EED_57E5);
    let mut chains: Vec<Vec<u64>> = Vec::with_capacity(requests);
    let mut fresh = 0u64;
    match kind {
        StressKind::Scan => scan(&mut rng, &mut chains, &mut fresh, requests, 300),
        StressKind::Loop => {
            for i in 0..requests as u64 {
                chains.push(prompt(2, i % 500, 8));
            }
        }
        StressKind::Phases => {
            let phases = requests.div_ceil(1_000).max(3);
            let mut conversation = 0u64;
            for phase in 0..phases {
                match phase % 3 {
                    0 => scan(&mut rng, &mut chains, &mut fresh, 1_000, 200),
                    1 => {
                        let mut live: Vec<(u64, u64)> = (0..64)
                            .map(|_| {
                                conversation += 1;
                                (conversation, 4)
                            })
                            .collect();
                        for _ in 0..1_000 {
                            let c = rng.below(live.len() as u64) as usize;
                            let (id, len) = live[c];
                            chains.push(prompt(4, id, len));
                            live[c].1 += 4;
                            if live[c].1 > 32 {
                                conversation += 1;
                                live[c] = (conversation, 4);
                            }
                        }
                    }
                    _ => {
                        for i in 0..1_000 {
                            if i % 4 == 0 {
                                chains.push(prompt(5, rng.below(200), 8));
                            } else {
                                chains.push(prompt(6, rng.below(20_000), 4));
                            }
                        }
                    }
                }
            }
        }
    }
    chains
        .into_iter()
        .enumerate()
        .map(|(i, hash_ids)| Request {
            timestamp_ms: 250 * i as u64,
            input_length: hash_ids.len() as u64 * BLOCK_TOKENS,
            output_length: 64,
            hash_ids,
        })
        .collect()
}

/// `count` requests, alternately a hot prompt (of `hot`, 8 blocks) and a
/// fresh 16-block document.
fn scan(rng: &mut Rng, chains: &mut Vec<Vec<u64>>, fresh: &mut u64, count: usize, hot: u64) {
    for i in 0..count {
        if i % 2 == 0 {
            chains.push(prompt(1, rng.below(hot), 8));
        } else {
            *fresh += 1;
            chains.push(prompt(3, *fresh, 16));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_deterministic_and_shares_prefixes_as_described() {
        for (name, kind) in StressKind::ALL {
            assert_eq!(StressKind::parse(name), Some(kind));
            let a = generate(kind, 7, 3_000);
            assert_eq!(a, generate(kind, 7, 3_000), "{name}");
            assert!(a.len() >= 3_000, "{name}");
            assert!(a.windows(2).all(|w| w[0].timestamp_ms < w[1].timestamp_ms));
        }
        let scan = generate(StressKind::Scan, 1, 1_000);
        // Documents are never repeated; hot prompts are.
        let docs: std::collections::HashSet<u64> = scan
            .iter()
            .skip(1)
            .step_by(2)
            .map(|r| r.hash_ids[0])
            .collect();
        assert_eq!(docs.len(), 500);
        let looped = generate(StressKind::Loop, 1, 1_000);
        assert_eq!(looped[0].hash_ids, looped[500].hash_ids);
        // A conversation's next turn extends its previous prompt.
        let phases = generate(StressKind::Phases, 1, 3_000);
        let turn = &phases[1_000].hash_ids;
        let next = phases[1_001..2_000]
            .iter()
            .find(|r| r.hash_ids[0] == turn[0])
            .unwrap();
        assert!(next.hash_ids.len() > turn.len() && next.hash_ids.starts_with(turn));
        assert_eq!(StressKind::parse("zipf"), None);
    }
}
