//! The built-in workload: multi-turn chat over shared system prompts,
//! generated from a seed, so `kvsim replay` runs with no trace file.
//!
//! This module owns the generator and its parameters; it produces plain
//! [`Request`]s in Mooncake's shape (512-token blocks) and never touches a
//! block manager. The same seed and [`WorkloadConfig`] always give the same
//! requests, on every platform and release: the random numbers come from a
//! private SplitMix64, not from a crate whose streams may change.
//!
//! # The model (defaults in brackets)
//!
//! - **System prompts** [`system_prompts` = 48]: each a whole number of
//!   blocks, uniform in [`prompt_blocks` = 2..=24]. A new conversation picks
//!   its prompt from a Zipf law over the prompts [`zipf_exponent` = 1.1]: a
//!   few prompts are shared by most conversations.
//! - **Conversations** [`concurrent_conversations` = 512 in flight]: every
//!   arrival continues one of them, chosen uniformly. A conversation lasts a
//!   geometric number of turns [mean `mean_turns` = 3]; when it has used
//!   them, or its context would pass [`max_context_tokens` = 65,536], a new
//!   conversation takes its place.
//! - **Turns**: the first turn is the system prompt plus a user message; each
//!   later turn is the previous turn's prompt plus its answer plus a new user
//!   message. It keeps the previous turn's *full* blocks (their ids) and
//!   gives every later block a fresh id, as re-hashing the real tokens would
//!   (the previous prompt's last, partial block now holds other tokens).
//!   User messages (with any attached document) are log-uniform in
//!   [`user_tokens` = 64..=16,384] tokens,
//!   answers (`output_length`) log-uniform in [`output_tokens` = 16..=1024].
//! - **Arrivals**: Poisson, [`arrival_rate_per_s` = 4] requests per second;
//!   timestamps in whole milliseconds.
//!
//! With the defaults and 4,000 requests (seed 1) this gives about 106k block
//! references over 28k distinct blocks (an infinite cache hits about 74%),
//! so the default capacities 2,000..16,000 span the interesting range: the
//! conversations in flight hold far more context than 2,000 blocks and a
//! little less than 16,000.

use crate::trace::Request;
use crate::BLOCK_TOKENS;

/// The most requests [`WorkloadConfig::check`] accepts. With the default
/// model a request has about 26 blocks, so this is about 27 million block
/// references: a replay of about 2 GB that takes minutes per policy and
/// capacity (BENCHMARKS.md, "kvsim limits"), not a typo's worth of memory.
pub const MAX_REQUESTS: usize = 1_000_000;

/// A workload configuration that is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// More requests than [`MAX_REQUESTS`].
    #[error(
        "{requests} requests is more than the built-in workload generates (limit {MAX_REQUESTS})"
    )]
    TooManyRequests {
        /// The number asked for.
        requests: usize,
    },
}

/// Parameters of the built-in workload; see the module docs for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadConfig {
    /// Seed of the random stream.
    pub seed: u64,
    /// Number of requests to generate.
    pub requests: usize,
    /// Number of distinct system prompts.
    pub system_prompts: usize,
    /// Inclusive range of a system prompt's length, in blocks.
    pub prompt_blocks: (u64, u64),
    /// Exponent of the Zipf popularity over system prompts.
    pub zipf_exponent: f64,
    /// Conversations in flight; each arrival continues one of them.
    pub concurrent_conversations: usize,
    /// Mean turns per conversation (geometric).
    pub mean_turns: f64,
    /// Inclusive range of a user message, in tokens (log-uniform).
    pub user_tokens: (u64, u64),
    /// Inclusive range of an answer, in tokens (log-uniform).
    pub output_tokens: (u64, u64),
    /// A turn whose prompt would pass this many tokens starts a new conversation.
    pub max_context_tokens: u64,
    /// Mean arrival rate (Poisson), requests per second.
    pub arrival_rate_per_s: f64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            requests: 4000,
            system_prompts: 48,
            prompt_blocks: (2, 24),
            zipf_exponent: 1.1,
            concurrent_conversations: 512,
            mean_turns: 3.0,
            user_tokens: (64, 16_384),
            output_tokens: (16, 1024),
            max_context_tokens: 65_536,
            arrival_rate_per_s: 4.0,
        }
    }
}

impl WorkloadConfig {
    /// The default workload with another seed and size.
    pub fn new(seed: u64, requests: usize) -> Self {
        Self {
            seed,
            requests,
            ..Self::default()
        }
    }

    /// Checks the configuration against the limits above.
    ///
    /// # Errors
    ///
    /// [`WorkloadError::TooManyRequests`] past [`MAX_REQUESTS`].
    pub fn check(&self) -> Result<(), WorkloadError> {
        if self.requests > MAX_REQUESTS {
            return Err(WorkloadError::TooManyRequests {
                requests: self.requests,
            });
        }
        Ok(())
    }

    /// A short human label, e.g. `builtin(seed=1,requests=4000)`.
    pub fn label(&self) -> String {
        format!("builtin(seed={},requests={})", self.seed, self.requests)
    }
}

/// SplitMix64: tiny, fast, and its stream is fixed forever.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + (self.unit() * (hi - lo + 1) as f64) as u64
    }

    /// Log-uniform in `lo..=hi` (`lo >= 1`).
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo.max(1)) as f64, (hi + 1) as f64);
        let value = (a.ln() + self.unit() * (b.ln() - a.ln())).exp() as u64;
        value.clamp(lo.max(1), hi)
    }

    /// Exponential with the given mean.
    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// Geometric number of trials, at least 1, with the given mean.
    fn geometric(&mut self, mean: f64) -> u32 {
        let stop = 1.0 / mean.max(1.0);
        let mut turns = 1;
        while turns < 1024 && self.unit() >= stop {
            turns += 1;
        }
        turns
    }
}

/// One conversation in flight.
struct Conversation {
    /// The previous turn's prompt blocks.
    hash_ids: Vec<u64>,
    /// The previous turn's prompt length in tokens.
    input_tokens: u64,
    /// The previous turn's answer length in tokens.
    output_tokens: u64,
    /// Turns still to come.
    turns_left: u32,
}

/// Generates the built-in workload. It does not [check](WorkloadConfig::check)
/// the configuration: past [`MAX_REQUESTS`] it runs until memory does.
pub fn generate(config: &WorkloadConfig) -> Vec<Request> {
    let mut rng = Rng(config.seed ^ 0x6b76_7369_6d5f_7764); // "kvsim_wd"
    let mut next_id: u64 = 0;
    let mut fresh = |count: u64, out: &mut Vec<u64>| {
        out.extend(next_id..next_id + count);
        next_id += count;
    };

    let prompt_count = config.system_prompts.max(1);
    let prompts: Vec<Vec<u64>> = (0..prompt_count)
        .map(|_| {
            let blocks = rng.range(config.prompt_blocks.0.max(1), config.prompt_blocks.1);
            let mut ids = Vec::with_capacity(blocks as usize);
            fresh(blocks, &mut ids);
            ids
        })
        .collect();
    // Zipf CDF over prompt ranks 1..=n.
    let mut cdf: Vec<f64> = Vec::with_capacity(prompt_count);
    let mut total = 0.0;
    for rank in 1..=prompt_count {
        total += 1.0 / (rank as f64).powf(config.zipf_exponent);
        cdf.push(total);
    }

    let mut slots: Vec<Option<Conversation>> = (0..config.concurrent_conversations.max(1))
        .map(|_| None)
        .collect();
    let mut requests = Vec::with_capacity(config.requests.min(MAX_REQUESTS));
    let mut clock_ms = 0.0f64;
    let mean_gap_ms = 1000.0 / config.arrival_rate_per_s.max(1e-9);

    while requests.len() < config.requests {
        let slot = rng.range(0, slots.len() as u64 - 1) as usize;
        let user = rng.log_uniform(config.user_tokens.0, config.user_tokens.1);
        let output = rng.log_uniform(config.output_tokens.0, config.output_tokens.1);

        // Continue the conversation in this slot, if it has a turn left that fits.
        let mut next = None;
        if let Some(conv) = slots[slot].take() {
            let input = conv.input_tokens + conv.output_tokens + user;
            if conv.turns_left > 0 && input <= config.max_context_tokens {
                let keep = (conv.input_tokens / BLOCK_TOKENS) as usize;
                let mut ids = conv.hash_ids;
                ids.truncate(keep);
                let blocks = input.div_ceil(BLOCK_TOKENS);
                fresh(blocks - keep as u64, &mut ids);
                next = Some(Conversation {
                    hash_ids: ids,
                    input_tokens: input,
                    output_tokens: output,
                    turns_left: conv.turns_left - 1,
                });
            }
        }
        // Otherwise start a new one on a Zipf-chosen system prompt.
        let conv = next.unwrap_or_else(|| {
            let draw = rng.unit() * total;
            let rank = cdf.partition_point(|&c| c <= draw).min(prompt_count - 1);
            let mut ids = prompts[rank].clone();
            let prompt_tokens = ids.len() as u64 * BLOCK_TOKENS;
            fresh(user.div_ceil(BLOCK_TOKENS), &mut ids);
            Conversation {
                hash_ids: ids,
                input_tokens: prompt_tokens + user,
                output_tokens: output,
                turns_left: rng.geometric(config.mean_turns) - 1,
            }
        });

        requests.push(Request {
            timestamp_ms: clock_ms as u64,
            input_length: conv.input_tokens,
            output_length: conv.output_tokens,
            hash_ids: conv.hash_ids.clone(),
        });
        slots[slot] = Some(conv);
        clock_ms += rng.exponential(mean_gap_ms);
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_requests() {
        let config = WorkloadConfig::new(7, 500);
        assert_eq!(generate(&config), generate(&config));
    }

    #[test]
    fn different_seeds_differ() {
        assert_ne!(
            generate(&WorkloadConfig::new(1, 200)),
            generate(&WorkloadConfig::new(2, 200))
        );
    }

    #[test]
    fn requests_are_well_formed() {
        let config = WorkloadConfig::new(3, 2000);
        let requests = generate(&config);
        assert_eq!(requests.len(), 2000);
        let mut last = 0;
        for r in &requests {
            assert!(!r.hash_ids.is_empty());
            assert_eq!(
                r.hash_ids.len() as u64,
                r.input_length.div_ceil(BLOCK_TOKENS)
            );
            assert!(r.input_length <= config.max_context_tokens);
            assert!(r.timestamp_ms >= last);
            last = r.timestamp_ms;
        }
    }

    #[test]
    fn later_turns_extend_a_previous_prefix() {
        let requests = generate(&WorkloadConfig::new(5, 1000));
        // Some request must share more than its system prompt with an earlier one.
        let shared_long = requests.iter().enumerate().any(|(i, r)| {
            requests[..i].iter().any(|p| {
                let common = p
                    .hash_ids
                    .iter()
                    .zip(&r.hash_ids)
                    .take_while(|(a, b)| a == b)
                    .count();
                common > 24
            })
        });
        assert!(shared_long);
    }
}
