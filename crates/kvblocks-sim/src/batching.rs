//! `kvsim schedule`: continuous batching of a trace through kvblocks' request
//! layer ([`kvblocks::SchedulableSequence`]), the bookkeeping a serving
//! engine's scheduler does per step, with the model replaced by a token
//! generator.
//!
//! This module owns the scheduler loop and its counters; it never measures
//! eviction policies (that is [`crate::replay`]).
//!
//! # The loop
//!
//! Requests arrive at their timestamps on a simulated clock that advances
//! `step_ms` per step (and jumps ahead when nothing runs). Each step has a
//! token budget:
//!
//! 1. every running request that is decoding gets one token; if the pool
//!    cannot supply a new block, the most recently admitted running request
//!    is preempted (all its blocks released; it waits at the head of the
//!    queue and later recomputes what is not cached);
//! 2. running requests still prefilling get chunks from what is left;
//! 3. waiting requests are admitted in order (cached prefix matched, slots
//!    for the whole prompt taken, all or nothing) while the budget and
//!    `max_running` allow; a prompt larger than the whole pool is rejected;
//! 4. the step is applied: prefill chunks (the final one emits the first
//!    token), decode tokens; finished requests release their blocks.
//!
//! A trace names each prompt block by an id (`hash_ids`, `trace_block_tokens`
//! tokens each); the tokens of a block are generated from its id, so equal
//! ids give equal tokens and shared prefixes are shared in the pool, at the
//! manager's (smaller) block size. Output tokens are unique per request.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use kvblocks::{BlockManager, SchedulableSequence, ScheduleError};

use crate::trace::Request;

/// The tier marker of the simulated pool.
#[derive(Debug, Clone, Copy)]
pub struct Pool;

/// Scheduler parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchingConfig {
    /// Slots in the pool.
    pub capacity: usize,
    /// Tokens per block of the pool.
    pub block_size: usize,
    /// Tokens a step may compute (prefill chunks plus decode tokens).
    pub token_budget: usize,
    /// Requests running at once, at most.
    pub max_running: usize,
    /// Tokens per `hash_ids` block of the trace.
    pub trace_block_tokens: usize,
    /// Simulated duration of one step, milliseconds.
    pub step_ms: f64,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            capacity: 32_768,
            block_size: 16,
            token_budget: 8192,
            max_running: 256,
            trace_block_tokens: crate::BLOCK_TOKENS as usize,
            step_ms: 25.0,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchingStats {
    /// Requests that ran to the end.
    pub finished: usize,
    /// Requests whose prompt does not fit the whole pool.
    pub rejected: usize,
    /// Steps run.
    pub steps: usize,
    /// Preemptions (a request may be preempted several times).
    pub preemptions: usize,
    /// Prompt tokens of first admissions.
    pub prompt_tokens: u64,
    /// Of those, tokens found in cached blocks.
    pub cached_prompt_tokens: u64,
    /// Tokens recomputed after preemptions (not found cached on resume).
    pub recomputed_tokens: u64,
    /// Prefill tokens computed.
    pub prefill_tokens: u64,
    /// Decode tokens produced.
    pub decode_tokens: u64,
    /// Sum over steps of running requests (for the mean batch).
    pub running_sum: u64,
    /// Wall time of the loop spent in bookkeeping (everything but making up
    /// prompt tokens from the trace).
    pub elapsed: Duration,
}

impl BatchingStats {
    /// Share of first-admission prompt tokens found cached.
    pub fn prefix_hit_rate(&self) -> f64 {
        if self.prompt_tokens == 0 {
            0.0
        } else {
            self.cached_prompt_tokens as f64 / self.prompt_tokens as f64
        }
    }

    /// Finished requests per second of wall time.
    pub fn requests_per_s(&self) -> f64 {
        self.finished as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Mean running requests per step.
    pub fn mean_batch(&self) -> f64 {
        self.running_sum as f64 / self.steps.max(1) as f64
    }
}

/// A request in the scheduler.
struct Live {
    seq: SchedulableSequence<Pool>,
    /// Trace index (output tokens are derived from it).
    index: usize,
    /// Whether it has been admitted before (a resume is not a first admission).
    resumed: bool,
}

/// The work a step planned for one running request.
#[derive(Clone, Copy)]
enum Planned {
    Nothing,
    Prefill,
    Decode,
}

/// The tokens of trace request `request`'s prompt.
pub fn prompt_tokens(request: &Request, trace_block_tokens: usize) -> Vec<u32> {
    let full = request.hash_ids.len() * trace_block_tokens;
    let len = (request.input_length as usize).clamp(1, full.max(1));
    let mut tokens = Vec::with_capacity(len);
    'blocks: for &id in &request.hash_ids {
        for j in 0..trace_block_tokens as u64 {
            if tokens.len() == len {
                break 'blocks;
            }
            tokens.push(mix(id.wrapping_mul(0x9e37_79b9).wrapping_add(j)) as u32);
        }
    }
    tokens
}

/// SplitMix64's finaliser: well-spread token ids from counters.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Runs `requests` through a fresh pool; `progress` gets finished or
/// rejected request counts as they happen.
///
/// # Errors
///
/// A description if the configuration cannot build a manager.
pub fn run(
    requests: &[Request],
    config: &BatchingConfig,
    mut progress: impl FnMut(u64),
) -> Result<BatchingStats, String> {
    let manager = BlockManager::<Pool>::builder()
        .block_count(config.capacity)
        .block_size(config.block_size)
        .build()
        .map_err(|err| err.to_string())?;
    let bs = config.block_size as u32;
    let mut stats = BatchingStats::default();
    let mut waiting: VecDeque<Live> = VecDeque::new();
    let mut running: Vec<Live> = Vec::new();
    let mut plan: Vec<Planned> = Vec::new();
    let mut next_arrival = 0;
    let mut clock_ms = 0.0f64;
    let mut generation = Duration::ZERO;
    let start = Instant::now();
    while next_arrival < requests.len() || !waiting.is_empty() || !running.is_empty() {
        if running.is_empty() && waiting.is_empty() {
            clock_ms = clock_ms.max(requests[next_arrival].timestamp_ms as f64);
        }
        while next_arrival < requests.len()
            && requests[next_arrival].timestamp_ms as f64 <= clock_ms
        {
            let request = &requests[next_arrival];
            let made = Instant::now();
            let tokens = prompt_tokens(request, config.trace_block_tokens);
            generation += made.elapsed();
            let seq = SchedulableSequence::new(tokens, request.output_length as usize, bs, None);
            waiting.push_back(Live {
                seq,
                index: next_arrival,
                resumed: false,
            });
            next_arrival += 1;
        }
        let mut budget = config.token_budget;

        // 1. Decode tokens, preempting the newest request when the pool is full.
        plan.clear();
        plan.resize(running.len(), Planned::Nothing);
        let mut i = 0;
        while i < running.len() {
            if budget == 0 || !running[i].seq.is_prefill_complete() {
                i += 1;
                continue;
            }
            match running[i].seq.schedule_decode(&manager) {
                Ok(()) => {
                    plan[i] = Planned::Decode;
                    budget -= 1;
                    i += 1;
                }
                Err(ScheduleError::AllocationFailed { .. }) => {
                    let victim = running.len() - 1;
                    preempt(&mut running, &mut plan, victim, &manager, &mut waiting);
                    stats.preemptions += 1;
                    // If the victim was this request, the loop ends here.
                }
                Err(err) => return Err(format!("request {}: {err}", running[i].index)),
            }
        }

        // 2. Prefill chunks for running requests.
        for (live, planned) in running.iter_mut().zip(plan.iter_mut()) {
            if budget == 0 || live.seq.is_prefill_complete() {
                continue;
            }
            let chunk = (live.seq.prefill_target() - live.seq.kv_position()).min(budget);
            live.seq
                .schedule_prefill(chunk, &manager)
                .map_err(|err| format!("request {}: {err}", live.index))?;
            *planned = Planned::Prefill;
            budget -= chunk;
        }

        // 3. Admissions.
        while budget > 0 && running.len() < config.max_running {
            let Some(mut live) = waiting.pop_front() else {
                break;
            };
            match live.seq.admit(&manager, 0) {
                Ok(matched) => {
                    let cached = (matched * config.block_size) as u64;
                    if live.resumed {
                        stats.recomputed_tokens += live.seq.prefill_target() as u64 - cached;
                    } else {
                        stats.prompt_tokens += live.seq.num_input_tokens() as u64;
                        stats.cached_prompt_tokens += cached;
                    }
                    // A resumed request may find everything but its last
                    // token cached: it decodes from the next step on.
                    let mut planned = Planned::Nothing;
                    if !live.seq.is_prefill_complete() {
                        let chunk =
                            (live.seq.prefill_target() - live.seq.kv_position()).min(budget);
                        live.seq
                            .schedule_prefill(chunk, &manager)
                            .map_err(|err| format!("request {}: {err}", live.index))?;
                        budget -= chunk;
                        planned = Planned::Prefill;
                    }
                    running.push(live);
                    plan.push(planned);
                }
                Err(ScheduleError::AllocationFailed { .. }) => {
                    waiting.push_front(live);
                    break;
                }
                Err(ScheduleError::Request(kvblocks::RequestError::ExceedsPool { .. })) => {
                    stats.rejected += 1;
                    progress(1);
                }
                Err(err) => return Err(format!("request {}: {err}", live.index)),
            }
        }

        // 4. Apply the step ("run the model").
        stats.steps += 1;
        stats.running_sum += running.len() as u64;
        for (live, planned) in running.iter_mut().zip(&plan) {
            let next = output_token(live.index, live.seq.generated_tokens());
            match planned {
                Planned::Nothing => {}
                Planned::Prefill => {
                    let before = live.seq.kv_position();
                    let emits =
                        live.seq.generated_tokens() == 0 && live.seq.max_output_tokens() > 0;
                    let done = match live.seq.state() {
                        kvblocks::SequenceState::PrefillScheduled { num_tokens, .. } => num_tokens,
                        _ => 0,
                    };
                    let last = before + done >= live.seq.prefill_target();
                    let token = (last && emits).then_some(next);
                    live.seq
                        .apply_prefill(token, &manager)
                        .map_err(|err| format!("request {}: {err}", live.index))?;
                    stats.prefill_tokens += done as u64;
                }
                Planned::Decode => {
                    live.seq
                        .apply_decode(next, &manager)
                        .map_err(|err| format!("request {}: {err}", live.index))?;
                    stats.decode_tokens += 1;
                }
            }
        }
        let before = running.len();
        running.retain_mut(|live| {
            let done = live.seq.is_complete() && live.seq.is_prefill_complete();
            if done {
                let _ = live.seq.release_to(&manager);
            }
            !done
        });
        let finished = before - running.len();
        stats.finished += finished;
        if finished > 0 {
            progress(finished as u64);
        }
        clock_ms += config.step_ms;
    }
    stats.elapsed = start.elapsed().saturating_sub(generation);
    if manager.available_blocks() != config.capacity {
        return Err(format!(
            "{} blocks still held after every request finished",
            config.capacity - manager.available_blocks()
        ));
    }
    Ok(stats)
}

/// Releases `running[victim]` and puts it at the head of the queue.
fn preempt(
    running: &mut Vec<Live>,
    plan: &mut Vec<Planned>,
    victim: usize,
    manager: &BlockManager<Pool>,
    waiting: &mut VecDeque<Live>,
) {
    let mut live = running.remove(victim);
    plan.remove(victim);
    // A scheduled victim is reverted first; release needs an idle sequence.
    let _ = live.seq.revert_schedule();
    let _ = live.seq.release_to(manager);
    live.resumed = true;
    waiting.push_front(live);
}

/// The `generated`-th output token of request `index`.
fn output_token(index: usize, generated: usize) -> u32 {
    mix(((index as u64) << 32) ^ generated as u64 ^ 0xdead_beef) as u32
}
