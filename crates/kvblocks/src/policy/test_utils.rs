//! Test helpers shared by the policy tests: hash makers, small drivers for
//! hand-made sequences, and a seeded random driver that plays valid hook
//! sequences against a plain model of which slots are evictable.

use super::EvictionPolicy;
use crate::keyhash::adversarial::low_bits_cycling;
use crate::SequenceHash;

/// `n` distinct, unrelated root hashes.
pub(crate) fn roots(n: usize) -> Vec<SequenceHash> {
    (0..n as u64)
        .map(|i| SequenceHash::root(0x5EED ^ i.wrapping_mul(0xA24B_AED4_963E_E407)))
        .collect()
}

/// `chains` chains of `len` blocks whose 64-bit sequence hashes all share
/// their low `bits` bits (one of `patterns` values): the keys that flooded
/// the policies' tables when those hashed with one unseeded multiply.
pub(crate) fn low_bits_cycling_chains(
    seed: u64,
    chains: usize,
    len: usize,
    bits: u32,
    patterns: u64,
) -> Vec<SequenceHash> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(chains * len);
    for _ in 0..chains {
        let mut parent = None;
        for position in 0..len as u64 {
            let current = low_bits_cycling(rng.next(), bits, patterns);
            out.push(SequenceHash::new(current, parent, position));
            parent = Some(current);
        }
    }
    out
}

/// For each slot in order: registers it under `hashes[slot]` and releases it.
pub(crate) fn register_all(
    policy: &mut impl EvictionPolicy,
    hashes: &[SequenceHash],
    slots: &[u32],
) {
    for &slot in slots {
        policy.on_register(slot, hashes[slot as usize]);
        policy.on_release(slot);
    }
}

/// Evicts until `None`, forgetting each victim under `hashes[slot]`; returns
/// the victims in order.
pub(crate) fn evict_all(policy: &mut impl EvictionPolicy, hashes: &[SequenceHash]) -> Vec<u32> {
    let mut order = Vec::new();
    while let Some(slot) = policy.evict() {
        policy.on_forget(slot, hashes[slot as usize]);
        order.push(slot);
    }
    assert_eq!(policy.len(), 0);
    order
}

/// SplitMix64: a tiny seeded generator, enough for test schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What the model knows about a slot; the payload indexes the hash pool.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    Free,
    Pinned(usize),
    Evictable(usize),
}

/// Slot counts the random driver plays, small ones for edge cases.
const SLOT_COUNTS: &[usize] = &[1, 2, 3, 5, 8, 13, 40, 120];
/// Seeds per slot count.
const SEEDS: u64 = 24;
/// Hook calls per run.
const STEPS: usize = 600;

/// A pool of hashes made of short chains (parents and children), so
/// lineage-aware policies see real structure and hashes come back after
/// eviction.
fn hash_pool(n: usize, rng: &mut Rng) -> Vec<SequenceHash> {
    let mut pool = Vec::with_capacity(n);
    while pool.len() < n {
        let mut hash = SequenceHash::root(rng.next());
        pool.push(hash);
        for _ in 0..rng.below(6) {
            hash = hash.extend(rng.next());
            pool.push(hash);
        }
    }
    pool.truncate(n);
    pool
}

/// One model-checked run of random valid hook calls.
struct Run<P> {
    policy: P,
    model: Vec<Slot>,
    pool: Vec<SequenceHash>,
    resident: Vec<bool>,
    evictable: usize,
    rng: Rng,
    context: String,
}

impl<P: EvictionPolicy> Run<P> {
    /// A random slot whose model state satisfies `wanted`.
    fn pick(&mut self, wanted: impl Fn(Slot) -> bool) -> Option<usize> {
        let matching = self.model.iter().filter(|&&s| wanted(s)).count();
        if matching == 0 {
            return None;
        }
        let nth = self.rng.below(matching);
        self.model
            .iter()
            .enumerate()
            .filter(|(_, &s)| wanted(s))
            .nth(nth)
            .map(|(slot, _)| slot)
    }

    /// Calls `evict` and checks the answer against the model.
    fn evict(&mut self) -> Option<usize> {
        let peeked = self.policy.peek_victim();
        let victim = self.policy.evict();
        let context = &self.context;
        if peeked.is_some() {
            assert_eq!(peeked, victim, "{context}: peek_victim named another slot");
        }
        let Some(slot) = victim else {
            assert_eq!(self.evictable, 0, "{context}: None with evictable slots");
            return None;
        };
        let slot = slot as usize;
        let Slot::Evictable(hash) = self.model[slot] else {
            panic!(
                "{context}: evicted slot {slot} in state {:?}",
                self.model[slot]
            );
        };
        self.model[slot] = Slot::Free;
        self.resident[hash] = false;
        self.evictable -= 1;
        self.policy.on_forget(slot as u32, self.pool[hash]);
        Some(slot)
    }

    /// Registers a free slot (evicting one if none is free, as the store's
    /// allocation does) under a random hash that is not resident.
    fn register(&mut self) {
        let Some(slot) = self.pick(|s| s == Slot::Free).or_else(|| self.evict()) else {
            return;
        };
        let start = self.rng.below(self.pool.len());
        let Some(hash) = (0..self.pool.len())
            .map(|i| (start + i) % self.pool.len())
            .find(|&h| !self.resident[h])
        else {
            return;
        };
        self.resident[hash] = true;
        self.model[slot] = Slot::Pinned(hash);
        self.policy.on_register(slot as u32, self.pool[hash]);
    }

    fn step(&mut self) {
        let registered = |s| s != Slot::Free;
        let pinned = |s| matches!(s, Slot::Pinned(_));
        let evictable = |s| matches!(s, Slot::Evictable(_));
        match self.rng.below(100) {
            0..=29 => self.register(),
            30..=54 => {
                // A match or dedup hit; on an evictable slot it usually
                // resurrects it, as the store does.
                if let Some(slot) = self.pick(registered) {
                    self.policy.on_hit(slot as u32);
                    if let Slot::Evictable(hash) = self.model[slot] {
                        if self.rng.below(5) > 0 {
                            self.policy.on_reacquire(slot as u32);
                            self.model[slot] = Slot::Pinned(hash);
                            self.evictable -= 1;
                        }
                    }
                }
            }
            55..=59 => {
                // A scan that pins without counting as use.
                if let Some(slot) = self.pick(evictable) {
                    if let Slot::Evictable(hash) = self.model[slot] {
                        self.policy.on_reacquire(slot as u32);
                        self.model[slot] = Slot::Pinned(hash);
                        self.evictable -= 1;
                    }
                }
            }
            60..=84 => {
                if let Some(slot) = self.pick(pinned) {
                    if let Slot::Pinned(hash) = self.model[slot] {
                        self.policy.on_release(slot as u32);
                        self.model[slot] = Slot::Evictable(hash);
                        self.evictable += 1;
                    }
                }
            }
            _ => {
                self.evict();
            }
        }
    }

    /// Evicts everything evictable, checking no slot comes out twice.
    fn drain(&mut self) {
        let mut seen = vec![false; self.model.len()];
        let expected = self.evictable;
        let mut count = 0;
        while let Some(slot) = self.evict() {
            assert!(!seen[slot], "{}: slot {slot} evicted twice", self.context);
            seen[slot] = true;
            count += 1;
        }
        assert_eq!(count, expected, "{}: drain", self.context);
        assert_eq!(self.policy.len(), 0, "{}: len after drain", self.context);
    }
}

/// Plays random valid hook sequences on policies built by `make` for many
/// slot counts and seeds. After every call it checks `len()` against the
/// model and runs the policy's own [`check`](EvictionPolicy::check); every `evict` must return `Some` exactly when
/// the model has an evictable slot, and only such a slot. At the end it
/// drains the evictable slots, releases every pinned one and drains again,
/// checking each slot comes out exactly once.
pub(crate) fn check_random_sequences<P: EvictionPolicy>(make: impl Fn(usize) -> P) {
    for &slots in SLOT_COUNTS {
        for seed in 0..SEEDS {
            let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ slots as u64);
            let pool = hash_pool(2 * slots + 3, &mut rng);
            let mut run = Run {
                policy: make(slots),
                model: vec![Slot::Free; slots],
                resident: vec![false; pool.len()],
                pool,
                evictable: 0,
                rng,
                context: String::new(),
            };
            for step in 0..STEPS {
                run.context = format!(
                    "{} with {slots} slots, seed {seed}, step {step}",
                    run.policy.name()
                );
                run.step();
                assert_eq!(run.policy.len(), run.evictable, "{}: len", run.context);
                if let Err(broken) = run.policy.check() {
                    panic!("{}: {broken}", run.context);
                }
            }
            run.context = format!(
                "{} with {slots} slots, seed {seed}, final drain",
                run.policy.name()
            );
            run.drain();
            for slot in 0..slots {
                if let Slot::Pinned(hash) = run.model[slot] {
                    run.policy.on_release(slot as u32);
                    run.model[slot] = Slot::Evictable(hash);
                    run.evictable += 1;
                }
            }
            run.drain();
            assert_eq!(run.policy.check(), Ok(()), "{}", run.context);
            assert!(run.model.iter().all(|&s| s == Slot::Free));
        }
    }
}

mod tests {
    use super::*;
    use crate::policy::{EvictionPolicyKind, Lineage, Lru};

    /// Every kind: with every block pinned there is no victim; a released
    /// block is the only one while the others stay pinned, a block matched
    /// again is pinned again, and pinned blocks never come out.
    #[test]
    fn pinned_blocks_are_never_victims_under_any_policy() {
        for &kind in EvictionPolicyKind::ALL {
            let hashes = roots(6);
            let mut policy = kind.build(6);
            for slot in 0..6 {
                policy.on_register(slot, hashes[slot as usize]);
                policy.on_hit(slot);
            }
            assert_eq!(policy.evict(), None, "{kind}: every block pinned");
            policy.on_release(4);
            policy.on_release(1);
            policy.on_reacquire(4);
            assert_eq!(policy.len(), 1, "{kind}");
            assert_eq!(policy.evict(), Some(1), "{kind}: the one released");
            policy.on_forget(1, hashes[1]);
            assert_eq!(policy.evict(), None, "{kind}: the rest pinned");
            assert_eq!(policy.check(), Ok(()), "{kind}");
        }
    }

    #[test]
    fn lru_agrees_with_the_model_on_random_hook_sequences() {
        check_random_sequences(Lru::new);
    }

    #[test]
    fn lineage_agrees_with_the_model_on_random_hook_sequences() {
        check_random_sequences(Lineage::new);
    }
}
