//! Property test: three managers of different tiers sharing one registry,
//! driven by random operations against a plain model of which tier holds
//! which hash.
//!
//! Each tier deduplicates (`Reject`), so a tier holds a hash in one slot at
//! most and the model is a set per tier, a count of the test's handles, and
//! the evict-on-release flag. Evictions are the policy's business: the model
//! learns them from `allocate_blocks_with_evictions`. After every step:
//! presence in every tier equals the model (through `check_presence`,
//! `check_presence_any`, `is_registered` and `registered_count`), every
//! manager's own invariants hold, and a registration handle, if the test
//! attached a value to one, keeps that value exactly while some tier holds the
//! hash or the test keeps a clone of the handle. The tiers report to one
//! events manager (the registry's), and replaying its stream gives exactly
//! each tier's registered set after every step (invariant 5).

use std::any::TypeId;
use std::collections::HashSet;
use std::sync::Arc;

use kvblocks::events::{BroadcastReceiver, EventsManager, RegisteredSet};

use kvblocks::{
    BlockDuplicationPolicy, BlockManager, BlockMetadata, BlockRegistrationHandle, BlockRegistry,
    ImmutableBlock, LogicalLayoutHandle, SequenceHash,
};
use proptest::prelude::*;

#[derive(Clone)]
struct G1;
#[derive(Clone)]
struct G2;
#[derive(Clone)]
struct G3;

const TIERS: usize = 3;
const HASHES: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    /// Allocate one block in `tier` (evicting if needed), stage `hash`,
    /// register, and keep the handle if `keep`.
    Register {
        tier: usize,
        hash: usize,
        keep: bool,
    },
    /// Match `hash` in `tier`, keeping what is found.
    Match { tier: usize, hash: usize },
    /// Drop the test's `pick`-th handle.
    Drop { pick: usize },
    /// Set evict-on-release on the `pick`-th handle's block.
    EvictOnRelease { pick: usize },
    /// `reset_inactive_pool` of `tier`.
    Reset { tier: usize },
    /// Take the registration handle of `hash` (through a held block if there
    /// is one, else from the registry) and attach a marker once.
    Handle { hash: usize },
    /// Drop the `pick`-th handle clone the test keeps.
    DropHandle { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let tier = 0..TIERS;
    let hash = 0..HASHES;
    prop_oneof![
        4 => (tier.clone(), hash.clone(), any::<bool>()).prop_map(|(tier, hash, keep)| Op::Register { tier, hash, keep }),
        2 => (tier.clone(), hash.clone()).prop_map(|(tier, hash)| Op::Match { tier, hash }),
        3 => (0..8usize).prop_map(|pick| Op::Drop { pick }),
        1 => (0..8usize).prop_map(|pick| Op::EvictOnRelease { pick }),
        1 => tier.prop_map(|tier| Op::Reset { tier }),
        1 => hash.prop_map(|hash| Op::Handle { hash }),
        1 => (0..4usize).prop_map(|pick| Op::DropHandle { pick }),
    ]
}

/// A block of any tier the test holds.
enum Held {
    G1(ImmutableBlock<G1>),
    G2(ImmutableBlock<G2>),
    G3(ImmutableBlock<G3>),
}

impl Held {
    fn tier(&self) -> usize {
        match self {
            Held::G1(_) => 0,
            Held::G2(_) => 1,
            Held::G3(_) => 2,
        }
    }
    fn hash(&self) -> SequenceHash {
        match self {
            Held::G1(b) => b.sequence_hash(),
            Held::G2(b) => b.sequence_hash(),
            Held::G3(b) => b.sequence_hash(),
        }
    }
    fn set_evict_on_reset(&self) {
        match self {
            Held::G1(b) => b.set_evict_on_reset(true),
            Held::G2(b) => b.set_evict_on_reset(true),
            Held::G3(b) => b.set_evict_on_reset(true),
        }
    }
    fn registration_handle(&self) -> BlockRegistrationHandle {
        match self {
            Held::G1(b) => b.registration_handle(),
            Held::G2(b) => b.registration_handle(),
            Held::G3(b) => b.registration_handle(),
        }
    }
}

/// The value attached to a hash's handle (one per hash, attached once).
#[derive(Debug, PartialEq, Eq)]
struct Marker(usize);

struct Harness {
    registry: BlockRegistry,
    /// The registry's event stream, replayed after every step.
    events: Arc<EventsManager>,
    receiver: BroadcastReceiver,
    replayed: RegisteredSet,
    g1: BlockManager<G1>,
    g2: BlockManager<G2>,
    g3: BlockManager<G3>,
    hashes: Vec<SequenceHash>,
    held: Vec<Held>,
    handles: Vec<(usize, BlockRegistrationHandle)>,
    /// Model: which hashes each tier holds, and which have evict-on-release.
    present: [HashSet<usize>; TIERS],
    evict_flag: [HashSet<usize>; TIERS],
    /// Model: hashes whose handle carries a marker now.
    marked: HashSet<usize>,
}

fn manager<T: BlockMetadata>(
    registry: &BlockRegistry,
    layout: LogicalLayoutHandle,
    blocks: usize,
    shards: usize,
) -> BlockManager<T> {
    BlockManager::<T>::builder()
        .logical_layout(layout)
        .block_count(blocks)
        .block_size(4)
        .pool_shards(shards)
        .duplication_policy(BlockDuplicationPolicy::Reject)
        .registry(registry.clone())
        .build()
        .unwrap()
}

/// Allocates one block in `m` (learning its evictions), stages and registers `hash`.
fn register_in<T: BlockMetadata>(
    m: &BlockManager<T>,
    hash: SequenceHash,
    evicted: &mut Vec<SequenceHash>,
) -> Option<ImmutableBlock<T>> {
    let (mut blocks, gone) = m.allocate_blocks_with_evictions(1)?;
    evicted.extend(gone);
    Some(m.register_block(blocks.pop()?.stage(hash, 4).ok()?))
}

impl Harness {
    fn new(shards: usize) -> Self {
        let events = Arc::new(
            EventsManager::builder()
                .instance_id(3)
                .block_size(4)
                .epoch(1)
                .broadcast_capacity(1 << 16)
                .build(),
        );
        let receiver = events.subscribe();
        let registry = BlockRegistry::builder()
            .event_manager(Arc::clone(&events))
            .build();
        let hashes = (0..HASHES as u64)
            .map(|i| SequenceHash::root(50 + i))
            .collect();
        Self {
            g1: manager(&registry, LogicalLayoutHandle::G1, 3, shards),
            g2: manager(&registry, LogicalLayoutHandle::G2, 3, shards),
            g3: manager(&registry, LogicalLayoutHandle::G3, 4, shards),
            registry,
            events,
            receiver,
            replayed: RegisteredSet::new(),
            hashes,
            held: Vec::new(),
            handles: Vec::new(),
            present: Default::default(),
            evict_flag: Default::default(),
            marked: HashSet::new(),
        }
    }

    fn index_of(&self, hash: SequenceHash) -> usize {
        self.hashes.iter().position(|h| *h == hash).unwrap()
    }

    fn held_count(&self, tier: usize, hash: usize) -> usize {
        self.held
            .iter()
            .filter(|b| b.tier() == tier && self.index_of(b.hash()) == hash)
            .count()
    }

    fn learn_evictions(&mut self, tier: usize, evicted: Vec<SequenceHash>) {
        for hash in evicted {
            let i = self.index_of(hash);
            assert_eq!(self.held_count(tier, i), 0, "a held block was evicted");
            assert!(
                self.present[tier].remove(&i),
                "evicted a hash the tier did not hold"
            );
            self.evict_flag[tier].remove(&i);
        }
        // The allocation told the registry before it returned.
        self.forget_unheld_markers();
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Register { tier, hash, keep } => {
                let h = self.hashes[hash];
                let mut evicted = Vec::new();
                let block = match tier {
                    0 => register_in(&self.g1, h, &mut evicted).map(Held::G1),
                    1 => register_in(&self.g2, h, &mut evicted).map(Held::G2),
                    _ => register_in(&self.g3, h, &mut evicted).map(Held::G3),
                };
                self.learn_evictions(tier, evicted);
                if let Some(block) = block {
                    self.present[tier].insert(hash);
                    if keep {
                        self.held.push(block);
                    } else {
                        self.drop_held(block);
                    }
                }
            }
            Op::Match { tier, hash } => {
                let h = [self.hashes[hash]];
                let found: Vec<Held> = match tier {
                    0 => self.g1.match_blocks(&h).into_iter().map(Held::G1).collect(),
                    1 => self.g2.match_blocks(&h).into_iter().map(Held::G2).collect(),
                    _ => self.g3.match_blocks(&h).into_iter().map(Held::G3).collect(),
                };
                assert_eq!(
                    !found.is_empty(),
                    self.present[tier].contains(&hash),
                    "match in tier {tier}"
                );
                self.held.extend(found);
            }
            Op::Drop { pick } => {
                if !self.held.is_empty() {
                    let block = self.held.swap_remove(pick % self.held.len());
                    self.drop_held(block);
                }
            }
            Op::EvictOnRelease { pick } => {
                if !self.held.is_empty() {
                    let block = &self.held[pick % self.held.len()];
                    block.set_evict_on_reset();
                    let (tier, hash) = (block.tier(), self.index_of(block.hash()));
                    self.evict_flag[tier].insert(hash);
                }
            }
            Op::Reset { tier } => {
                let _ = match tier {
                    0 => self.g1.reset_inactive_pool(),
                    1 => self.g2.reset_inactive_pool(),
                    _ => self.g3.reset_inactive_pool(),
                };
                let cached: Vec<usize> = self.present[tier]
                    .iter()
                    .copied()
                    .filter(|&h| self.held_count(tier, h) == 0)
                    .collect();
                for h in cached {
                    self.present[tier].remove(&h);
                    self.evict_flag[tier].remove(&h);
                }
            }
            Op::Handle { hash } => {
                let via_block = self
                    .held
                    .iter()
                    .find(|b| self.index_of(b.hash()) == hash)
                    .map(Held::registration_handle);
                let handle = via_block
                    .unwrap_or_else(|| self.registry.register_sequence_hash(self.hashes[hash]));
                if self.marked.insert(hash) {
                    handle.attach_unique(Marker(hash)).unwrap();
                }
                assert_eq!(handle.get::<Marker>().with_unique(|m| m.0), Some(hash));
                self.handles.push((hash, handle));
            }
            Op::DropHandle { pick } => {
                if !self.handles.is_empty() {
                    let pick = pick % self.handles.len();
                    self.handles.swap_remove(pick);
                    self.forget_unheld_markers();
                }
            }
        }
    }

    /// Drops one held block, updating the model for its last release.
    fn drop_held(&mut self, block: Held) {
        let (tier, hash) = (block.tier(), self.index_of(block.hash()));
        drop(block);
        if self.held_count(tier, hash) == 0 && self.evict_flag[tier].remove(&hash) {
            self.present[tier].remove(&hash);
        }
        self.forget_unheld_markers();
    }

    /// A marker lives while a tier holds the hash or a handle clone lives.
    fn forget_unheld_markers(&mut self) {
        let alive: HashSet<usize> = (0..HASHES)
            .filter(|h| {
                self.present.iter().any(|p| p.contains(h))
                    || self.handles.iter().any(|(x, _)| x == h)
            })
            .collect();
        self.marked.retain(|h| alive.contains(h));
    }

    fn check(&mut self) {
        // Evictions inside allocations and resets may have ended records too.
        self.forget_unheld_markers();
        let flags =
            |v: Vec<(SequenceHash, bool)>| -> Vec<bool> { v.into_iter().map(|(_, p)| p).collect() };
        let presence = [
            flags(self.registry.check_presence::<G1>(&self.hashes)),
            flags(self.registry.check_presence::<G2>(&self.hashes)),
            flags(self.registry.check_presence::<G3>(&self.hashes)),
        ];
        for (t, (answers, model)) in presence.iter().zip(&self.present).enumerate() {
            for (h, answer) in answers.iter().enumerate() {
                assert_eq!(*answer, model.contains(&h), "tier {t}, hash {h}");
            }
        }
        let any = flags(
            self.registry
                .check_presence_any(&self.hashes, &[TypeId::of::<G1>(), TypeId::of::<G3>()]),
        );
        let mut distinct = 0;
        for (h, answer) in any.iter().enumerate() {
            assert_eq!(
                *answer,
                self.present[0].contains(&h) || self.present[2].contains(&h)
            );
            let in_a_tier = self.present.iter().any(|p| p.contains(&h));
            let has_clone = self.handles.iter().any(|(x, _)| *x == h);
            assert_eq!(
                self.registry.is_registered(self.hashes[h]),
                in_a_tier || has_clone,
                "hash {h}"
            );
            distinct += usize::from(in_a_tier || has_clone);
            // The marker: kept exactly while a tier holds the hash or a clone lives.
            let marker = self
                .registry
                .match_sequence_hash(self.hashes[h], false)
                .and_then(|handle| handle.get::<Marker>().with_unique(|m| m.0));
            assert_eq!(
                marker.is_some(),
                self.marked.contains(&h),
                "marker of hash {h}"
            );
        }
        assert_eq!(self.registry.registered_count(), distinct);
        // Invariant 5: the events of all three tiers replay to the model.
        self.events.flush_all();
        while let Ok(batch) = self.receiver.try_recv() {
            self.replayed.apply(&batch).expect("an unbroken stream");
        }
        let layouts = [
            LogicalLayoutHandle::G1,
            LogicalLayoutHandle::G2,
            LogicalLayoutHandle::G3,
        ];
        for (t, layout) in layouts.into_iter().enumerate() {
            let mut model: Vec<SequenceHash> =
                self.present[t].iter().map(|&h| self.hashes[h]).collect();
            model.sort_unstable();
            assert_eq!(
                self.replayed.sorted(layout),
                model,
                "replayed events of tier {t}"
            );
        }
        self.g1.check_invariants().unwrap();
        self.g2.check_invariants().unwrap();
        self.g3.check_invariants().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 300 }))]

    #[test]
    fn presence_and_handles_follow_the_model(
        shards in 1..=2usize,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut harness = Harness::new(shards);
        for op in &ops {
            harness.apply(op);
            harness.check();
        }
        // Everything dropped: every tier's blocks come back.
        harness.held.clear();
        harness.handles.clear();
        assert_eq!(harness.g1.available_blocks(), 3);
        assert_eq!(harness.g2.available_blocks(), 3);
        assert_eq!(harness.g3.available_blocks(), 4);
    }
}
