//! Hedge's tests: the hook contract, and following the best expert on a
//! workload that changes character.

use std::collections::HashMap;

use super::*;
use crate::policy::test_utils::{check_random_sequences, evict_all, register_all, roots};
use crate::policy::{Lineage, LruK, S3Fifo};

/// A key's fingerprint, as Hedge computes it.
fn fingerprint(hash: SequenceHash) -> u64 {
    KeyHasher::with_seed(SAMPLER_SEED).hash_u128(hash.as_u128())
}

/// One of Hedge's orders alone, as a policy (the experts' stand-alone runs).
struct Fixed(Orders, Order);

impl EvictionPolicy for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        self.0.on_register(slot, hash, fingerprint(hash));
    }
    fn on_release(&mut self, slot: u32) {
        self.0.on_release(slot)
    }
    fn on_reacquire(&mut self, slot: u32) {
        self.0.on_reacquire(slot)
    }
    fn evict(&mut self) -> Option<u32> {
        self.0.evict(self.1)
    }
    fn on_forget(&mut self, slot: u32, hash: SequenceHash) {
        self.0.forget(slot, fingerprint(hash))
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

#[test]
fn leaf_lru_equals_lineage_and_once_first_keeps_reused_leaves() {
    let hashes = roots(4);
    let mut lru = Fixed(Orders::new(4, true), Order::LeafLru);
    let mut lineage = Lineage::new(4);
    let mut once_first = Fixed(Orders::new(4, true), Order::OnceFirst);
    fn play(policy: &mut impl EvictionPolicy, hashes: &[SequenceHash]) {
        register_all(policy, hashes, &[0, 1, 2, 3]);
        // Slot 0, the oldest, is found again after its release: reused.
        policy.on_hit(0);
        policy.on_reacquire(0);
        policy.on_release(0);
    }
    play(&mut lru, &hashes);
    play(&mut lineage, &hashes);
    play(&mut once_first, &hashes);
    assert_eq!(
        evict_all(&mut lru, &hashes),
        evict_all(&mut lineage, &hashes)
    );
    assert_eq!(evict_all(&mut once_first, &hashes), vec![1, 2, 3, 0]);
}

#[test]
fn hedge_agrees_with_the_model_on_random_hook_sequences() {
    check_random_sequences(Hedge::new);
}

#[test]
fn the_leader_evicts_and_the_other_experts_forget_its_victims() {
    let hashes = roots(4);
    let mut hedge = Hedge::new(4);
    assert_eq!(hedge.leader(), "lineage");
    register_all(&mut hedge, &hashes, &[0, 1, 2, 3]);
    assert_eq!(hedge.peek_victim(), Some(0));
    let order = evict_all(&mut hedge, &hashes);
    assert_eq!(order, vec![0, 1, 2, 3]);
    hedge.check().unwrap();
    assert_eq!(hedge.orders.len(), 0);
}

#[test]
fn every_miniature_cache_sees_each_reference_to_a_sampled_key() {
    // A small pool samples every key (rate 1).
    let hashes = roots(4);
    let mut hedge = Hedge::new(16);
    register_all(&mut hedge, &hashes, &[0, 1, 2, 3]);
    assert_eq!(hedge.score, [0.0; EXPERTS]);
    // Found again after its release: a reference, a hit in both.
    hedge.on_hit(2);
    hedge.on_reacquire(2);
    assert!(hedge.score.iter().all(|&s| s > 0.99), "{:?}", hedge.score);
    // Another hit while pinned is the same use: no reference.
    let score = hedge.score;
    hedge.on_hit(2);
    assert_eq!(hedge.score, score);
    hedge.on_release(2);
    hedge.check().unwrap();

    // A large pool samples one block in 32 into 1,024-slot miniatures:
    // a chain's first blocks by their keys' hashes, about one in 32 ...
    let mut hedge = Hedge::new(1 << 15);
    assert_eq!(hedge.phase_mask, 31);
    assert_eq!(hedge.minis[0].slots(), 1024);
    let keys = roots(32 * 512);
    register_all(
        &mut hedge,
        &keys,
        &(0..keys.len() as u32).collect::<Vec<_>>(),
    );
    let sampled = (0..keys.len())
        .filter(|&s| hedge.sample[s].sampled())
        .count();
    assert!(
        (256..=1024).contains(&sampled),
        "{sampled} of {} sampled",
        keys.len()
    );
    assert!(hedge.sample[..keys.len()]
        .iter()
        .all(|s| s.ancestor().is_none()));
    hedge.check().unwrap();
}

#[test]
fn every_rate_th_block_of_a_chain_is_sampled_under_its_sampled_ancestor() {
    let mut hedge = Hedge::new(1 << 15);
    let blocks = chain(7, 100);
    let first = 1 << 14;
    for (i, &key) in blocks.iter().enumerate() {
        hedge.on_register(first + i as u32, key);
    }
    let sampled: Vec<usize> = (0..blocks.len())
        .filter(|&i| hedge.sample[first as usize + i].sampled())
        .collect();
    // One block in 32, spaced 32 apart, whatever the first one's phase.
    assert!((3..=4).contains(&sampled.len()), "{sampled:?}");
    assert!(sampled.windows(2).all(|w| w[1] - w[0] == 32), "{sampled:?}");
    for i in 0..blocks.len() {
        let expected = sampled
            .iter()
            .rev()
            .find(|&&s| s < i)
            .map(|&s| first + s as u32);
        assert_eq!(
            hedge.sample[first as usize + i].ancestor(),
            expected,
            "block {i}"
        );
    }
    // The miniatures' trees (linked under those ancestors) check out.
    hedge.check().unwrap();
}

/// A tiny single-request-at-a-time cache over a policy: a request matches
/// its longest resident prefix, registers the rest (a deeper key that is
/// still resident is a hit, as under `Reject`), then releases everything.
struct Sim<P> {
    policy: P,
    slot_of: HashMap<u128, u32>,
    key_of: Vec<Option<SequenceHash>>,
    free: Vec<u32>,
}

impl<P: EvictionPolicy> Sim<P> {
    fn new(policy: P, slots: usize) -> Self {
        Self {
            policy,
            slot_of: HashMap::new(),
            key_of: vec![None; slots],
            free: (0..slots as u32).rev().collect(),
        }
    }

    /// Serves one request; its block hits.
    fn serve(&mut self, chain: &[SequenceHash]) -> usize {
        let mut held = Vec::with_capacity(chain.len());
        let mut hits = 0;
        let mut matching = true;
        for &key in chain {
            match self.slot_of.get(&key.as_u128()).copied() {
                Some(slot) => {
                    if matching {
                        hits += 1;
                    }
                    self.policy.on_hit(slot);
                    self.policy.on_reacquire(slot);
                    held.push(slot);
                }
                None => {
                    matching = false;
                    let slot = match self.free.pop() {
                        Some(slot) => slot,
                        None => {
                            let victim = self.policy.evict().expect("pool too small");
                            let old = self.key_of[victim as usize].take().unwrap();
                            self.slot_of.remove(&old.as_u128());
                            self.policy.on_forget(victim, old);
                            victim
                        }
                    };
                    self.policy.on_register(slot, key);
                    self.slot_of.insert(key.as_u128(), slot);
                    self.key_of[slot as usize] = Some(key);
                    held.push(slot);
                }
            }
        }
        for slot in held {
            self.policy.on_release(slot);
        }
        hits
    }
}

/// SplitMix64 for the workload.
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

fn chain(seed: u64, len: usize) -> Vec<SequenceHash> {
    let mut out = vec![SequenceHash::root(seed)];
    while out.len() < len {
        let next = out[out.len() - 1].extend(seed ^ (out.len() as u64) << 40);
        out.push(next);
    }
    out
}

const SLOTS: usize = 256;
const PHASE: usize = 3_000;

/// Three phases of `PHASE` requests: scan-heavy (a hot set of short chains
/// between one-off scans), recency-heavy (a few live conversations, each
/// turn extending the last), frequency-heavy (a stable set of frequently
/// used chains among chains that recur far apart).
fn switching_workload() -> Vec<Vec<SequenceHash>> {
    let mut rng = Rng(11);
    let mut requests = Vec::with_capacity(3 * PHASE);
    let mut fresh = 1u64 << 48;
    for i in 0..PHASE {
        if i % 2 == 0 {
            requests.push(chain(rng.below(40), 4));
        } else {
            fresh += 1;
            requests.push(chain(fresh, 8));
        }
    }
    let mut live: Vec<(u64, usize)> = (0..6).map(|c| (2_000 + c, 4)).collect();
    let mut next_conversation = 2_006;
    for _ in 0..PHASE {
        let c = rng.below(live.len() as u64) as usize;
        let (seed, len) = live[c];
        requests.push(chain(seed, len));
        live[c].1 += 4;
        if live[c].1 > 24 {
            live[c] = (next_conversation, 4);
            next_conversation += 1;
        }
    }
    // A quarter of the requests from 48 equally popular chains (192
    // blocks, three quarters of the pool), the rest chains of 4 drawn from
    // 5,000 (each recurring every 6,700 requests or so).
    for i in 0..PHASE {
        if i % 4 == 0 {
            requests.push(chain(50_000 + rng.below(48), 4));
        } else {
            requests.push(chain(100_000 + rng.below(5_000), 4));
        }
    }
    requests
}

/// Block hits per phase.
fn hits_per_phase<P: EvictionPolicy>(
    policy: P,
    requests: &[Vec<SequenceHash>],
    mut each: impl FnMut(usize, &P),
) -> [usize; 3] {
    let mut sim = Sim::new(policy, SLOTS);
    let mut hits = [0; 3];
    for (i, request) in requests.iter().enumerate() {
        hits[i / PHASE] += sim.serve(request);
        each(i, &sim.policy);
    }
    hits
}

#[test]
fn follows_the_best_expert_when_the_workload_changes_character() {
    let requests = switching_workload();
    let experts = [
        hits_per_phase(
            Fixed(Orders::new(SLOTS, true), Order::LeafLru),
            &requests,
            |_, _| {},
        ),
        hits_per_phase(
            Fixed(Orders::new(SLOTS, true), Order::OnceFirst),
            &requests,
            |_, _| {},
        ),
    ];
    // For the record: how the shipped fixed policies fare on the same trace.
    let others = [
        hits_per_phase(LruK::new(SLOTS), &requests, |_, _| {}),
        hits_per_phase(S3Fifo::new(SLOTS), &requests, |_, _| {}),
    ];
    let mut leaders = vec![""; requests.len()];
    let hedge = hits_per_phase(Hedge::new(SLOTS), &requests, |i, p| {
        leaders[i] = p.leader();
        if i % 500 == 0 {
            p.check().unwrap();
        }
    });
    // Switching wins over the whole trace: more hits than any one expert.
    let total = |h: &[usize; 3]| h.iter().sum::<usize>();
    assert!(
        experts
            .iter()
            .chain(&others)
            .all(|e| total(&hedge) > total(e)),
        "hedge {hedge:?} against experts {experts:?} and lru2, s3fifo {others:?}"
    );
    // Bound on the requests the leader may take to follow a change.
    const FOLLOW_WITHIN: usize = 500;
    for phase in 0..3 {
        let best = (0..EXPERTS).map(|e| experts[e][phase]).max().unwrap();
        // Experts within 5% of the best are equally good.
        let good: Vec<&str> = (0..EXPERTS)
            .filter(|&e| experts[e][phase] * 100 >= best * 95)
            .map(|e| EXPERT_NAMES[e])
            .collect();
        let worst = (0..EXPERTS).map(|e| experts[e][phase]).min().unwrap();
        assert!(
            best * 100 > worst * 105,
            "phase {phase} does not separate the experts: {experts:?}"
        );
        let settled = &leaders[phase * PHASE + FOLLOW_WITHIN..(phase + 1) * PHASE];
        let off = settled.iter().filter(|l| !good.contains(l)).count();
        assert!(
            off * 20 <= settled.len(),
            "phase {phase}: leader off the best ({good:?}) on {off} of {} requests; \
             experts {experts:?}, hedge {hedge:?}",
            settled.len()
        );
        // And the hit rate shows it: at least 90% of the best expert's hits.
        assert!(
            hedge[phase] * 10 >= best * 9,
            "phase {phase}: hedge {} hits against the best expert's {best}; experts {experts:?}",
            hedge[phase]
        );
    }
}
