//! The example's serving loop: three tiers (G1 device, G2 host, G3 disk)
//! sharing one registry, fed by requests that share prompt prefixes.
//!
//! Owns the tier managers and one request's path through them: match in G1,
//! onboard what G2 or G3 hold, compute the rest in G1; blocks evicted from a
//! tier are offloaded to the next one down. It models no transfer cost: it
//! only moves the counters the exporter reports. Shared with
//! `tests/prometheus_scrape.rs`.

use kvblocks::metrics::prometheus::{ExportError, MetricsCollector};
use kvblocks::{
    BlockManager, BlockMetadata, BlockRegistry, BuildError, LogicalLayoutHandle, SequenceHash,
};

/// Device memory.
#[derive(Clone, Copy, Debug)]
pub struct G1;
/// Host memory.
#[derive(Clone, Copy, Debug)]
pub struct G2;
/// Local disk.
#[derive(Clone, Copy, Debug)]
pub struct G3;

/// Tokens per block.
pub const BLOCK_SIZE: usize = 16;
/// Distinct shared prefixes (system prompts) requests start with.
const PREFIXES: u64 = 24;
/// Blocks of each shared prefix.
const PREFIX_BLOCKS: u64 = 6;

/// One manager per tier, each lower tier four times the size of the one above.
pub struct Tiers {
    pub g1: BlockManager<G1>,
    pub g2: BlockManager<G2>,
    pub g3: BlockManager<G3>,
    rng: u64,
}

/// What went wrong serving a request (a block could not be staged).
pub type ServeError = Box<dyn std::error::Error + Send + Sync>;

impl Tiers {
    /// Tiers of `g1_blocks`, 4x and 16x that many blocks; `seed` drives the requests.
    pub fn new(g1_blocks: usize, seed: u64) -> Result<Self, BuildError> {
        let registry = BlockRegistry::new();
        Ok(Self {
            g1: tier(g1_blocks, LogicalLayoutHandle::G1, &registry)?,
            g2: tier(g1_blocks * 4, LogicalLayoutHandle::G2, &registry)?,
            g3: tier(g1_blocks * 16, LogicalLayoutHandle::G3, &registry)?,
            rng: seed | 1,
        })
    }

    /// Exports all three tiers (`pool="G1"`, `"G2"`, `"G3"`).
    pub fn export(&self, collector: &MetricsCollector) -> Result<(), ExportError> {
        collector.add_manager(&self.g1)?;
        collector.add_manager(&self.g2)?;
        collector.add_manager(&self.g3)
    }

    /// Serves one request start to finish; the number of prompt blocks found
    /// in some tier. A request whose blocks G1 cannot provide is skipped.
    pub fn serve_request(&mut self) -> Result<usize, ServeError> {
        let prompt = self.next_prompt();
        let held = self.g1.match_blocks(&prompt);
        let mut cached = held.len();
        // Onboard from the lower tiers, fastest first.
        let from_g2 = self.g2.match_blocks(&prompt[cached..]);
        cached += from_g2.len();
        let from_g3 = self.g3.match_blocks(&prompt[cached..]);
        cached += from_g3.len();
        let missing = &prompt[held.len()..];
        let Some((blocks, evicted)) = self.g1.allocate_blocks_with_evictions(missing.len()) else {
            return Ok(0);
        };
        self.offload(&evicted);
        let staged = blocks
            .into_iter()
            .zip(missing)
            .map(|(block, &hash)| block.stage(hash, BLOCK_SIZE))
            .collect::<Result<Vec<_>, _>>()?;
        let computed = self.g1.register_blocks(staged);
        drop((held, from_g2, from_g3, computed)); // the request finishes
        Ok(cached)
    }

    /// Offloads hashes evicted from G1 to G2, and what that evicts to G3.
    fn offload(&self, evicted_from_g1: &[SequenceHash]) {
        let evicted_from_g2 = copy_into(&self.g2, evicted_from_g1);
        copy_into(&self.g3, &evicted_from_g2);
    }

    /// A prompt: one shared prefix and one to four blocks of its own.
    fn next_prompt(&mut self) -> Vec<SequenceHash> {
        let prefix = self.next() % PREFIXES;
        let own = 1 + self.next() % 4;
        let mut hash = SequenceHash::root(prefix);
        let mut prompt = vec![hash];
        for block in 1..PREFIX_BLOCKS {
            hash = hash.extend(block);
            prompt.push(hash);
        }
        for _ in 0..own {
            hash = hash.extend(self.next());
            prompt.push(hash);
        }
        prompt
    }

    /// xorshift64: requests are reproducible from the seed, with no dependency.
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

fn tier<T: BlockMetadata>(
    blocks: usize,
    layout: LogicalLayoutHandle,
    registry: &BlockRegistry,
) -> Result<BlockManager<T>, BuildError> {
    BlockManager::<T>::builder()
        .block_count(blocks)
        .block_size(BLOCK_SIZE)
        .registry(registry.clone())
        .logical_layout(layout)
        .build()
}

/// Registers `hashes` in `tier` (skipping those it holds), released at once
/// so they sit in its inactive pool; returns what that evicted from `tier`.
fn copy_into<T: BlockMetadata>(
    tier: &BlockManager<T>,
    hashes: &[SequenceHash],
) -> Vec<SequenceHash> {
    let new: Vec<SequenceHash> = hashes
        .iter()
        .copied()
        .filter(|&h| !tier.contains(h))
        .collect();
    let Some((blocks, evicted)) = tier.allocate_blocks_with_evictions(new.len()) else {
        return Vec::new(); // the tier is full of pinned blocks: drop the copies
    };
    let staged: Vec<_> = blocks
        .into_iter()
        .zip(new)
        .filter_map(|(block, hash)| block.stage(hash, BLOCK_SIZE).ok())
        .collect();
    drop(tier.register_blocks(staged));
    evicted
}
