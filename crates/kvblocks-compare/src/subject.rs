//! The [`Subject`] trait: the handful of block-manager calls the workloads make,
//! implemented once for `kvblocks` and once for `kvbm-logical`.
//!
//! This module owns only the mapping from the trait onto each library's public
//! API. It must never add work of its own to a call (no extra allocation, no
//! locking, no checks the library does not already do): every method is a
//! direct forward, marked `#[inline]`, so the numbers measure the libraries.

/// The storage-tier marker both managers are instantiated with.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tier;

/// The `kvblocks` manager under test.
pub type Kvblocks = kvblocks::BlockManager<Tier>;

/// The `kvbm-logical` 1.6.1 manager under test.
pub type Kvbm = kvbm_logical::BlockManager<Tier>;

/// Which inactive-pool eviction order a manager is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Least recently used first.
    Lru,
    /// Leaves of the prefix tree first (kvbm-logical's default `Tick` order).
    Lineage,
    /// kvblocks' own prefix-cache policy (`EvictionPolicyKind::PrefixAware`);
    /// kvbm-logical has none (see [`Subject::supports`]).
    Prefix,
}

impl Eviction {
    /// Short lowercase name, used in benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            Eviction::Lru => "lru",
            Eviction::Lineage => "lineage",
            Eviction::Prefix => "prefix",
        }
    }
}

/// A block manager as the workloads see it.
///
/// Implementations forward each method to the library's own call of the same
/// meaning. Failures the workloads never provoke (a block size mismatch, a
/// guard from another manager) panic, so a wiring mistake cannot go unnoticed.
pub trait Subject: Send + Sync + Sized + 'static {
    /// The library's sequence-hash key.
    type Hash: Copy + Send + Sync + 'static;
    /// A writable slot (`MutableBlock`).
    type Mutable;
    /// A staged slot named by a hash (`CompleteBlock`).
    type Complete;
    /// A registered strong handle (`ImmutableBlock`); dropping the last one
    /// moves the slot to the inactive pool.
    type Held: Send;

    /// Library name, used in benchmark ids and tables.
    const NAME: &'static str;

    /// Whether the library has the eviction order `eviction`; workloads
    /// skip a library that does not.
    fn supports(eviction: Eviction) -> bool {
        let _ = eviction;
        true
    }

    /// Build a manager of `block_count` slots of `block_size` tokens.
    ///
    /// # Panics
    ///
    /// If the library does not [support](Self::supports) `eviction`.
    fn build(block_count: usize, block_size: usize, eviction: Eviction) -> Self;

    /// Like [`build`](Self::build), split into about `shards` pool shards
    /// where the library has them (kvblocks' `pool_shards`; 0: the
    /// builder's default, which splits on contention); a library without
    /// them builds its only layout.
    fn build_sharded(
        block_count: usize,
        block_size: usize,
        eviction: Eviction,
        shards: usize,
    ) -> Self {
        let _ = shards;
        Self::build(block_count, block_size, eviction)
    }

    /// The library's key for the triple `(current, parent, position)`.
    fn hash(current: u64, parent: Option<u64>, position: u64) -> Self::Hash;

    /// Longest resident prefix of `hashes`, active or inactive.
    fn match_blocks(&self, hashes: &[Self::Hash]) -> Vec<Self::Held>;

    /// `count` writable slots, all or nothing (may evict inactive blocks).
    fn allocate(&self, count: usize) -> Option<Vec<Self::Mutable>>;

    /// Name a writable slot's final content.
    fn stage(&self, block: Self::Mutable, hash: Self::Hash) -> Self::Complete;

    /// Register staged slots in one call.
    fn register(&self, blocks: Vec<Self::Complete>) -> Vec<Self::Held>;

    /// Slots that an allocation could hand out now (reset + inactive).
    fn available_blocks(&self) -> usize;

    /// Pool shards in use now (1 where the library has no such thing).
    fn pool_shards(&self) -> usize {
        1
    }

    /// Drop a finished request's handles, the library's fastest way (plain
    /// drop unless the library has a batch call).
    fn release(&self, blocks: Vec<Self::Held>) {
        drop(blocks);
    }
}

impl Subject for Kvblocks {
    type Hash = kvblocks::SequenceHash;
    type Mutable = kvblocks::MutableBlock<Tier>;
    type Complete = kvblocks::CompleteBlock<Tier>;
    type Held = kvblocks::ImmutableBlock<Tier>;

    const NAME: &'static str = "kvblocks";

    fn build(block_count: usize, block_size: usize, eviction: Eviction) -> Self {
        Self::build_sharded(block_count, block_size, eviction, 1)
    }

    fn build_sharded(
        block_count: usize,
        block_size: usize,
        eviction: Eviction,
        shards: usize,
    ) -> Self {
        let builder = kvblocks::BlockManager::<Tier>::builder()
            .block_count(block_count)
            .block_size(block_size);
        let builder = match shards {
            0 => builder,
            shards => builder.pool_shards(shards),
        };
        let builder = match eviction {
            Eviction::Lru => builder.with_lru_backend(),
            Eviction::Lineage => builder.with_lineage_backend(),
            Eviction::Prefix => builder.eviction_policy(kvblocks::EvictionPolicyKind::PrefixAware),
        };
        builder.build().expect("kvblocks manager config is valid")
    }

    #[inline]
    fn hash(current: u64, parent: Option<u64>, position: u64) -> Self::Hash {
        kvblocks::SequenceHash::new(current, parent, position)
    }

    #[inline]
    fn match_blocks(&self, hashes: &[Self::Hash]) -> Vec<Self::Held> {
        kvblocks::BlockManager::match_blocks(self, hashes)
    }

    #[inline]
    fn allocate(&self, count: usize) -> Option<Vec<Self::Mutable>> {
        self.allocate_blocks(count)
    }

    #[inline]
    fn stage(&self, block: Self::Mutable, hash: Self::Hash) -> Self::Complete {
        let Ok(complete) = block.stage(hash, self.block_size()) else {
            panic!("kvblocks: stage failed (block size mismatch)");
        };
        complete
    }

    #[inline]
    fn register(&self, blocks: Vec<Self::Complete>) -> Vec<Self::Held> {
        self.register_blocks(blocks)
    }

    #[inline]
    fn available_blocks(&self) -> usize {
        kvblocks::BlockManager::available_blocks(self)
    }

    fn pool_shards(&self) -> usize {
        kvblocks::BlockManager::pool_shards(self)
    }

    /// One lock for the whole request instead of one per block going inactive.
    #[inline]
    fn release(&self, blocks: Vec<Self::Held>) {
        self.release_blocks(blocks);
    }
}

impl Subject for Kvbm {
    type Hash = kvbm_logical::SequenceHash;
    type Mutable = kvbm_logical::MutableBlock<Tier>;
    type Complete = kvbm_logical::CompleteBlock<Tier>;
    type Held = kvbm_logical::ImmutableBlock<Tier>;

    const NAME: &'static str = "kvbm";

    fn supports(eviction: Eviction) -> bool {
        eviction != Eviction::Prefix
    }

    fn build(block_count: usize, block_size: usize, eviction: Eviction) -> Self {
        let builder = kvbm_logical::BlockManager::<Tier>::builder()
            .block_count(block_count)
            .block_size(block_size)
            .registry(kvbm_logical::BlockRegistry::builder().build());
        let builder = match eviction {
            Eviction::Lru => builder.with_lru_backend(),
            Eviction::Lineage => builder.with_lineage_backend(),
            Eviction::Prefix => panic!("kvbm-logical has no prefix-aware eviction policy"),
        };
        builder.build().expect("kvbm manager config is valid")
    }

    #[inline]
    fn hash(current: u64, parent: Option<u64>, position: u64) -> Self::Hash {
        kvbm_logical::SequenceHash::new(current, parent, position)
    }

    #[inline]
    fn match_blocks(&self, hashes: &[Self::Hash]) -> Vec<Self::Held> {
        kvbm_logical::BlockManager::match_blocks(self, hashes)
    }

    #[inline]
    fn allocate(&self, count: usize) -> Option<Vec<Self::Mutable>> {
        self.allocate_blocks(count)
    }

    #[inline]
    fn stage(&self, block: Self::Mutable, hash: Self::Hash) -> Self::Complete {
        let Ok(complete) = block.stage(hash, self.block_size()) else {
            panic!("kvbm: stage failed (block size mismatch)");
        };
        complete
    }

    #[inline]
    fn register(&self, blocks: Vec<Self::Complete>) -> Vec<Self::Held> {
        self.register_blocks(blocks)
    }

    #[inline]
    fn available_blocks(&self) -> usize {
        kvbm_logical::BlockManager::available_blocks(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Rng, Triple};

    #[test]
    fn both_libraries_build_bit_identical_keys_from_a_triple() {
        let mut rng = Rng::new(7);
        for position in [0, 1, 255, 256, 65_535, 65_536, (1 << 24) - 1] {
            let parent = (position > 0).then(|| rng.next_u64());
            let triple = Triple {
                current: rng.next_u64(),
                parent,
                position,
            };
            assert_eq!(
                triple.key::<Kvblocks>().as_u128(),
                triple.key::<Kvbm>().as_u128(),
                "{triple:?}"
            );
        }
    }

    #[test]
    fn serving_loop_hits_the_shared_prompt_and_misses_the_tail_on_both() {
        fn run<S: Subject>(eviction: Eviction, keys: crate::KeyShape) -> f64 {
            let spec = crate::ServingSpec {
                // Tails (32,768 blocks) outnumber the pool; prompts stay hot.
                block_count: 16_384,
                requests: 2_048,
                keys,
                ..crate::ServingSpec::STANDARD
            };
            let manager = S::build(spec.block_count, spec.block_size, eviction);
            let mut client = crate::ServingLoop::<S>::new(&spec, 0);
            for _ in 0..2_048 {
                client.step(&manager);
            }
            client.reset_stats();
            for _ in 0..4_096 {
                client.step(&manager);
            }
            client.release();
            assert_eq!(manager.available_blocks(), spec.block_count);
            client.hit_rate()
        }
        // The adversarial key shape changes costs, never what hits.
        for keys in [crate::KeyShape::Mixed, crate::KeyShape::LowBitsCycling] {
            for eviction in [Eviction::Lru, Eviction::Lineage, Eviction::Prefix] {
                assert_eq!(
                    run::<Kvblocks>(eviction, keys),
                    0.5,
                    "{eviction:?} {keys:?}"
                );
                if Kvbm::supports(eviction) {
                    assert_eq!(run::<Kvbm>(eviction, keys), 0.5, "{eviction:?} {keys:?}");
                }
            }
        }
    }

    #[test]
    fn both_libraries_agree_on_hit_rate_under_eviction_pressure() {
        fn run<S: Subject>(eviction: Eviction) -> f64 {
            // A pool too small to keep every prompt: evictions decide hits.
            let spec = crate::ServingSpec {
                block_count: 2_048,
                requests: 1_024,
                ..crate::ServingSpec::STANDARD
            };
            let manager = S::build(spec.block_count, spec.block_size, eviction);
            let mut client = crate::ServingLoop::<S>::new(&spec, 0);
            for _ in 0..3_072 {
                client.step(&manager);
            }
            client.hit_rate()
        }
        for eviction in [Eviction::Lru, Eviction::Lineage] {
            let ours = run::<Kvblocks>(eviction);
            assert!(ours < 0.45, "pool should be under pressure: {ours}");
            assert_eq!(ours, run::<Kvbm>(eviction), "{eviction:?}");
        }
    }
}
