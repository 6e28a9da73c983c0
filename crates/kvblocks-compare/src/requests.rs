//! The request layer of both libraries behind one trait, [`Requests`], so the
//! decode and admission workloads are written once: kvblocks'
//! `SchedulableSequence` and kvbm-logical's `SchedulableSequence`, each on its
//! own manager (LRU, built as [`Subject::build`] does).
//!
//! Owns only the mapping onto each library's public calls; every method is a
//! direct forward. A failure the workloads never provoke panics.

use crate::{Eviction, Kvblocks, Kvbm, Subject, Tier};

/// One library's request layer.
pub trait Requests: Sized + 'static {
    /// The block manager.
    type Manager: Subject;
    /// One request.
    type Seq;
    /// Library name, for benchmark ids.
    const NAME: &'static str;

    /// A manager of `blocks` slots of `block_size` tokens, LRU eviction.
    fn manager(blocks: usize, block_size: usize) -> Self::Manager {
        Self::Manager::build(blocks, block_size, Eviction::Lru)
    }

    /// A request (its prompt hashed into blocks).
    fn request(tokens: Vec<u32>, max_output: usize, block_size: u32) -> Self::Seq;

    /// Admits the request (match the cached prefix, allocate the rest) and
    /// prefills it in one chunk (stage and register every full block),
    /// emitting `first` as its first output token.
    fn admit_and_prefill(seq: &mut Self::Seq, manager: &Self::Manager, first: u32);

    /// One decode step: schedule, then apply `token`.
    fn decode(seq: &mut Self::Seq, manager: &Self::Manager, token: u32);

    /// Whether the request used its output budget.
    fn is_complete(seq: &Self::Seq) -> bool;

    /// Full token blocks of the request.
    fn num_blocks(seq: &Self::Seq) -> usize;

    /// Blocks the request holds.
    fn held_blocks(seq: &Self::Seq) -> usize;
}

/// kvblocks' request layer.
pub struct OursRequests;

impl Requests for OursRequests {
    type Manager = Kvblocks;
    type Seq = kvblocks::SchedulableSequence<Tier>;
    const NAME: &'static str = "kvblocks";

    fn request(tokens: Vec<u32>, max_output: usize, block_size: u32) -> Self::Seq {
        kvblocks::SchedulableSequence::new(tokens, max_output, block_size, None)
    }

    #[inline]
    fn admit_and_prefill(seq: &mut Self::Seq, manager: &Self::Manager, first: u32) {
        seq.admit(manager, 0).expect("admit");
        let chunk = seq.prefill_target() - seq.kv_position();
        seq.schedule_prefill(chunk, manager)
            .expect("schedule prefill");
        seq.apply_prefill(Some(first), manager)
            .expect("apply prefill");
    }

    #[inline]
    fn decode(seq: &mut Self::Seq, manager: &Self::Manager, token: u32) {
        seq.schedule_decode(manager).expect("schedule decode");
        seq.apply_decode(token, manager).expect("apply decode");
    }

    fn is_complete(seq: &Self::Seq) -> bool {
        seq.is_complete()
    }

    fn num_blocks(seq: &Self::Seq) -> usize {
        seq.num_blocks()
    }

    fn held_blocks(seq: &Self::Seq) -> usize {
        seq.held_blocks()
    }
}

/// kvbm-logical 1.6.1's request layer.
pub struct KvbmRequests;

impl Requests for KvbmRequests {
    type Manager = Kvbm;
    type Seq = kvbm_logical::SchedulableSequence<Tier>;
    const NAME: &'static str = "kvbm";

    fn request(tokens: Vec<u32>, max_output: usize, block_size: u32) -> Self::Seq {
        kvbm_logical::SchedulableSequence::new(tokens, max_output, block_size, None)
    }

    #[inline]
    fn admit_and_prefill(seq: &mut Self::Seq, manager: &Self::Manager, first: u32) {
        seq.match_and_add_prefix(manager).expect("match");
        let chunk = seq.num_input_tokens() - seq.prefill_position();
        seq.schedule_prefill(chunk, manager)
            .expect("schedule prefill");
        seq.apply_prefill(Some(first), manager)
            .expect("apply prefill");
    }

    #[inline]
    fn decode(seq: &mut Self::Seq, manager: &Self::Manager, token: u32) {
        seq.schedule_decode(manager).expect("schedule decode");
        seq.apply_decode(token, manager).expect("apply decode");
    }

    fn is_complete(seq: &Self::Seq) -> bool {
        seq.is_complete()
    }

    fn num_blocks(seq: &Self::Seq) -> usize {
        seq.num_blocks()
    }

    fn held_blocks(seq: &Self::Seq) -> usize {
        seq.assigned_blocks() + seq.staged_blocks() + seq.unassigned_blocks()
    }
}

/// A batch of running requests decoding in lock step, recycled (finished,
/// dropped, replaced by a fresh admitted one) when they use their budget.
pub struct DecodeBatch<R: Requests> {
    /// The running requests (declared first: they drop before the manager).
    pub running: Vec<R::Seq>,
    /// Their manager.
    pub manager: R::Manager,
    next_prompt: u32,
    prompt_tokens: usize,
    max_output: usize,
    block_size: u32,
    token: u32,
}

impl<R: Requests> DecodeBatch<R> {
    /// `batch` requests of about `prompt_tokens` distinct tokens each,
    /// decoding up to `max_output` tokens, on a pool that holds them all at
    /// full length. Until [`warm_up`](Self::warm_up) the pool has never
    /// evicted.
    pub fn new(batch: usize, prompt_tokens: usize, max_output: usize, block_size: u32) -> Self {
        let per_request = (prompt_tokens + max_output).div_ceil(block_size as usize) + 3;
        let manager = R::manager(batch * per_request + 64, block_size as usize);
        let mut this = Self {
            running: Vec::with_capacity(batch),
            manager,
            next_prompt: 0,
            prompt_tokens,
            max_output,
            block_size,
            token: 0,
        };
        for _ in 0..batch {
            let seq = this.fresh();
            this.running.push(seq);
        }
        this
    }

    /// A new admitted, prefilled request with a prompt no other shares. Its
    /// length varies by up to a block, so requests cross block boundaries
    /// on different steps.
    fn fresh(&mut self) -> R::Seq {
        self.next_prompt += 1;
        let base = self.next_prompt.wrapping_mul(1_000_003);
        let len = self.prompt_tokens + self.next_prompt as usize % self.block_size as usize;
        let tokens = (0..len as u32).map(|i| base.wrapping_add(i)).collect();
        let mut seq = R::request(tokens, self.max_output, self.block_size);
        R::admit_and_prefill(&mut seq, &self.manager, base);
        seq
    }

    /// Decodes until every request has finished and been replaced once, so
    /// the pool is in steady state: full of cached blocks of finished
    /// requests, every new block taken by eviction.
    pub fn warm_up(&mut self) {
        for _ in 0..self.max_output + 64 {
            self.recycle();
            self.step();
        }
    }

    /// Replaces every finished request (not part of a timed step).
    pub fn recycle(&mut self) {
        for i in 0..self.running.len() {
            if R::is_complete(&self.running[i]) {
                self.running[i] = self.fresh();
            }
        }
    }

    /// One decode step of every running request (none may be complete:
    /// call [`recycle`](Self::recycle) first); returns the tokens decoded.
    #[inline]
    pub fn step(&mut self) -> usize {
        for seq in &mut self.running {
            self.token = self.token.wrapping_add(1);
            R::decode(seq, &self.manager, self.token);
        }
        self.running.len()
    }
}
