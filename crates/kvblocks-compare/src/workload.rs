//! Seeded inputs and the workloads built on them, written once over [`Subject`].
//!
//! This module owns input generation (chains of `(current, parent, position)`
//! triples from a fixed seed, so both libraries get identical keys), the
//! shared-prefix serving loop, and the "full cache" fixture the
//! micro-benchmarks run against. It must never time anything itself: the
//! drivers (criterion benches, the scaling and memory binaries) decide what is
//! inside the measured region.

use std::collections::VecDeque;

use crate::subject::{Eviction, Subject};

/// Seed every workload derives its inputs from.
pub const SEED: u64 = 0x6b76_626c_6f63_6b73; // "kvblocks"

/// One block of a chain, as the raw parts of a positional lineage hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Triple {
    /// This block's 64-bit sequence hash.
    pub current: u64,
    /// The parent block's sequence hash; `None` at position 0.
    pub parent: Option<u64>,
    /// Position of the block in its sequence.
    pub position: u64,
}

impl Triple {
    /// The library's key for this triple.
    #[inline]
    pub fn key<S: Subject>(&self) -> S::Hash {
        S::hash(self.current, self.parent, self.position)
    }
}

/// SplitMix64: a tiny, fast, well-mixed generator; plenty for input data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose stream is fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A value in `0..bound` (slightly biased; fine for picking inputs).
    #[inline]
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// SplitMix64's finaliser: a bijective 64-bit mixer.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Append `len` blocks to `chain`, continuing from its last block (or starting
/// a new sequence at position 0 if it is empty). Block contents come from `rng`.
pub fn extend_chain(chain: &mut Vec<Triple>, rng: &mut Rng, len: usize) {
    for _ in 0..len {
        let block = rng.next_u64();
        let next = match chain.last() {
            None => Triple {
                current: block,
                parent: None,
                position: 0,
            },
            Some(parent) => Triple {
                current: mix64(parent.current ^ block.rotate_left(17)),
                parent: Some(parent.current),
                position: parent.position + 1,
            },
        };
        chain.push(next);
    }
}

/// Overwrite `out` with chain number `index` of the family `seed`: `len` blocks
/// from position 0. The same `(seed, index)` always gives the same chain.
pub fn chain_triples(seed: u64, index: u64, len: usize, out: &mut Vec<Triple>) {
    out.clear();
    let mut rng = Rng::new(mix64(seed ^ mix64(index)));
    extend_chain(out, &mut rng, len);
}

/// Allocate, stage and register `hashes` as new blocks; returns the handles.
///
/// # Panics
///
/// If the pool cannot supply `hashes.len()` slots.
pub fn register_chain<S: Subject>(manager: &S, hashes: &[S::Hash]) -> Vec<S::Held> {
    let fresh = manager
        .allocate(hashes.len())
        .expect("pool has room for the chain");
    let staged: Vec<S::Complete> = fresh
        .into_iter()
        .zip(hashes)
        .map(|(block, &hash)| manager.stage(block, hash))
        .collect();
    manager.register(staged)
}

/// What the 64-bit sequence hashes of a workload look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyShape {
    /// As a good hash function gives them: every bit random.
    Mixed,
    /// Adversarial: the low 20 bits of every sequence hash take one of 16
    /// values (the rest stay random), as structured ids or prompts a client
    /// ground to collide would make them. A table that takes its bucket from
    /// a key's low bits alone piles these into 16 probe runs.
    LowBitsCycling,
}

impl KeyShape {
    /// Bits [`LowBitsCycling`](Self::LowBitsCycling) fixes.
    pub const LOW_BITS: u32 = 20;
    /// Values those bits cycle through.
    pub const PATTERNS: u64 = 16;

    /// Short lowercase name, used in benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            KeyShape::Mixed => "mixed",
            KeyShape::LowBitsCycling => "lowbits",
        }
    }

    /// `hash` in this shape. A function of `hash` alone, so a parent and
    /// the child that names it stay consistent.
    #[inline]
    pub fn apply(self, hash: u64) -> u64 {
        match self {
            KeyShape::Mixed => hash,
            KeyShape::LowBitsCycling => {
                let mask = (1u64 << Self::LOW_BITS) - 1;
                let pattern = (hash >> 60) % Self::PATTERNS;
                (hash & !mask) | (pattern.wrapping_mul(0x9_E377) & mask)
            }
        }
    }
}

/// Shape of the shared-prefix serving loop.
#[derive(Clone, Copy, Debug)]
pub struct ServingSpec {
    /// Slots in the pool.
    pub block_count: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Distinct shared prompts requests draw from.
    pub prompts: usize,
    /// Blocks per shared prompt (the head of every request).
    pub prompt_blocks: usize,
    /// Blocks unique to each request (the tail).
    pub unique_blocks: usize,
    /// Requests whose blocks are held at once (a ring; the oldest is dropped).
    pub in_flight: usize,
    /// Pre-built requests; the loop cycles through them. Their unique tails
    /// must far outnumber the pool so a tail is long evicted before it recurs.
    pub requests: usize,
    /// What the sequence hashes look like.
    pub keys: KeyShape,
}

impl ServingSpec {
    /// The comparison's serving loop: a 65,536-slot pool of 16-token blocks,
    /// 32-block requests (one of 64 shared 16-block prompts + 16 unique
    /// blocks), 8 requests in flight, 16,384 pre-built requests (262,144
    /// unique tail blocks, four times the pool), well-mixed keys.
    pub const STANDARD: ServingSpec = ServingSpec {
        block_count: 65_536,
        block_size: 16,
        prompts: 64,
        prompt_blocks: 16,
        unique_blocks: 16,
        in_flight: 8,
        requests: 16_384,
        keys: KeyShape::Mixed,
    };

    /// Blocks in one request's chain.
    pub fn chain_len(&self) -> usize {
        self.prompt_blocks + self.unique_blocks
    }

    /// The request chains of stream `stream`, back to back
    /// (`requests * chain_len()` triples), in the spec's [`KeyShape`]. Every
    /// stream shares the same prompts; the choice of prompt and the unique
    /// tails differ per stream.
    pub fn triples(&self, stream: u64) -> Vec<Triple> {
        let mut out = self.mixed_triples(stream);
        if self.keys != KeyShape::Mixed {
            for triple in &mut out {
                triple.current = self.keys.apply(triple.current);
                triple.parent = triple.parent.map(|p| self.keys.apply(p));
            }
        }
        out
    }

    /// [`triples`](Self::triples) with every bit of every hash random.
    fn mixed_triples(&self, stream: u64) -> Vec<Triple> {
        let mut prompt_rng = Rng::new(SEED);
        let prompts: Vec<Vec<Triple>> = (0..self.prompts)
            .map(|_| {
                let mut chain = Vec::with_capacity(self.chain_len());
                extend_chain(&mut chain, &mut prompt_rng, self.prompt_blocks);
                chain
            })
            .collect();
        let mut rng = Rng::new(mix64(SEED ^ mix64(stream.wrapping_add(1))));
        let mut out = Vec::with_capacity(self.requests * self.chain_len());
        let mut chain = Vec::with_capacity(self.chain_len());
        for _ in 0..self.requests {
            chain.clear();
            chain.extend_from_slice(&prompts[rng.below(self.prompts as u64) as usize]);
            extend_chain(&mut chain, &mut rng, self.unique_blocks);
            out.extend_from_slice(&chain);
        }
        out
    }
}

/// One client of the serving loop: its pre-built request chains and the ring
/// of requests it currently holds.
pub struct ServingLoop<S: Subject> {
    hashes: Vec<S::Hash>,
    chain_len: usize,
    requests: usize,
    next: usize,
    depth: usize,
    in_flight: VecDeque<Vec<S::Held>>,
    hits: u64,
    blocks: u64,
}

impl<S: Subject> ServingLoop<S> {
    /// Pre-build every chain of stream `stream` (outside any timed region).
    pub fn new(spec: &ServingSpec, stream: u64) -> Self {
        let hashes = spec.triples(stream).iter().map(Triple::key::<S>).collect();
        ServingLoop {
            hashes,
            chain_len: spec.chain_len(),
            requests: spec.requests,
            next: 0,
            depth: spec.in_flight,
            in_flight: VecDeque::with_capacity(spec.in_flight + 1),
            hits: 0,
            blocks: 0,
        }
    }

    /// Blocks one [`step`](Self::step) processes.
    pub fn blocks_per_request(&self) -> usize {
        self.chain_len
    }

    /// Serve the next request: match its chain, allocate, stage and register
    /// the misses, hold all its blocks, and drop the request that falls out of
    /// the in-flight ring. Returns how many blocks matched.
    ///
    /// # Panics
    ///
    /// If the pool cannot supply the misses (it is sized so it always can).
    #[inline]
    pub fn step(&mut self, manager: &S) -> usize {
        let start = self.next * self.chain_len;
        self.next += 1;
        if self.next == self.requests {
            self.next = 0;
        }
        let chain = &self.hashes[start..start + self.chain_len];
        let mut held = manager.match_blocks(chain);
        let hit = held.len();
        if hit < chain.len() {
            held.extend(register_chain(manager, &chain[hit..]));
        }
        if self.in_flight.len() == self.depth {
            if let Some(finished) = self.in_flight.pop_front() {
                manager.release(finished);
            }
        }
        self.in_flight.push_back(held);
        self.hits += hit as u64;
        self.blocks += self.chain_len as u64;
        hit
    }

    /// Drop every held request.
    pub fn release(&mut self) {
        self.in_flight.clear();
    }

    /// Fraction of blocks that were cache hits so far.
    pub fn hit_rate(&self) -> f64 {
        if self.blocks == 0 {
            0.0
        } else {
            self.hits as f64 / self.blocks as f64
        }
    }

    /// Forget the hit statistics (e.g. after warm-up).
    pub fn reset_stats(&mut self) {
        self.hits = 0;
        self.blocks = 0;
    }
}

/// A pool filled to the brim with registered, inactive chains.
///
/// Micro-benchmarks act on chain 0 ([`target`](Self::target)) while the rest
/// keep the indexes as full as in a long-running server.
pub struct FullCache<S: Subject> {
    /// The manager, every slot registered and (initially) inactive.
    pub manager: S,
    /// Every registered chain; chain 0 is the one benchmarks act on.
    pub chains: Vec<Vec<S::Hash>>,
}

impl<S: Subject> FullCache<S> {
    /// A pool of `block_count` slots holding `block_count / chain_len`
    /// distinct chains of `chain_len` blocks, all inactive.
    pub fn new(block_count: usize, chain_len: usize, eviction: Eviction) -> Self {
        let manager = S::build(block_count, 16, eviction);
        let mut triples = Vec::with_capacity(chain_len);
        let chains: Vec<Vec<S::Hash>> = (0..block_count / chain_len)
            .map(|i| {
                chain_triples(SEED, i as u64, chain_len, &mut triples);
                let hashes: Vec<S::Hash> = triples.iter().map(Triple::key::<S>).collect();
                drop(register_chain(&manager, &hashes));
                hashes
            })
            .collect();
        assert_eq!(manager.available_blocks(), block_count);
        FullCache { manager, chains }
    }

    /// The chain benchmarks act on.
    pub fn target(&self) -> &[S::Hash] {
        &self.chains[0]
    }
}
