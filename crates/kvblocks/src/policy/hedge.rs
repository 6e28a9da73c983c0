//! [`Hedge`]: an eviction policy that learns online which of three fixed
//! orders suits the traffic, and evicts by that one.
//!
//! # The experts
//!
//! Three of this module's sibling policies each keep their own order over
//! the resident blocks, fed every hook: [`Lineage`] (leaf-first LRU: recency,
//! and a parent outlives its children), [`LruK`] (LRU-2: frequency, scan
//! resistance) and [`S3Fifo`] (quick demotion of blocks used once). The
//! *leader* evicts; the others let its victim go as a pinned block leaves
//! (`on_reacquire`, then `on_discard` when the store forgets it), so all
//! three always agree on which blocks are evictable, and each stays a
//! complete, checked policy.
//!
//! # Choosing the leader: miniature simulations
//!
//! Judging an expert by the real cache is biased: its order over blocks the
//! leader kept or threw away is not the order it would have built on its
//! own. LeCaR and CACHEUS blame only the expert whose victim comes back, so
//! an expert that does not lead learns little; marking every expert's
//! would-be victim (tried first here) gave all three nearly the same blame,
//! because an expert that does not lead forgets what makes it good (LRU-2
//! cannot tell a frequent block from a new one after another expert evicted
//! it).
//!
//! So each expert also runs alone, as a *miniature cache* (Waldspurger et
//! al., ATC'17: SHARDS-style spatial sampling) over the references to a
//! fixed sample of keys: a key is sampled when its seeded hash falls in one
//! of `rate` buckets, and each miniature cache has `slots / rate` slots
//! (`rate` a power of two, about `slots / 512`, between 1 and 64, so every
//! miniature cache has at least a few hundred slots). A reference is a
//! registration or a hit; in every miniature cache it is a hit if the key
//! is resident there, else a miss that registers it, evicting by that
//! expert's own order. The expert whose miniature cache scores the most
//! hits, decayed per sampled reference with a half-life of two miniature
//! pools, leads; a challenger must beat the leader by 2% and by a few hits,
//! so near ties do not flap.
//!
//! The miniature caches see keys, not chains (a sampled block's parent is
//! rarely sampled), so leaf-first ordering cannot show there: the
//! miniature of [`Lineage`] is plain [`Lru`], which it equals on any set of
//! unrelated blocks.
//!
//! # Cost
//!
//! Every hook runs the three experts' hooks, one hash of the key (on
//! registration) and, for one reference in `rate`, a reference to each
//! miniature cache (one table probe and a few list or heap operations).
//! Everything is sized in [`Hedge::new`]; no hook allocates. Measured
//! replay cost against LRU is in `BENCHMARKS.md` ("Adaptive eviction").

use hashbrown::HashTable;

use super::{EvictionPolicy, Lineage, Lru, LruK, S3Fifo};
use crate::keyhash::KeyHasher;
use crate::SequenceHash;

/// Number of experts.
const EXPERTS: usize = 3;

/// Expert names, in index order (what [`Hedge::leader`] returns).
pub const EXPERT_NAMES: [&str; EXPERTS] = ["lineage", "lru2", "s3fifo"];

/// A challenger leads once its decayed hits exceed the leader's by this
/// factor ...
const SWITCH_MARGIN: f64 = 1.02;

/// ... and by at least this many decayed hits.
const SWITCH_MIN_LEAD: f64 = 4.0;

/// Miniature pools aim at this many slots (fewer when the pool is smaller).
const MINI_SLOTS: usize = 512;

/// At most one key in this many is sampled.
const MAX_RATE: usize = 64;

/// No expert evicted the slot (it is not between `evict` and `on_forget`).
const NOT_EVICTED: u8 = u8::MAX;

/// One expert running alone over the sampled keys.
struct Mini<P> {
    policy: P,
    /// Mini slot by key.
    table: HashTable<u32>,
    /// Key per mini slot (meaningful while resident).
    keys: Vec<SequenceHash>,
    /// Never-used mini slots.
    free: Vec<u32>,
    hasher: KeyHasher,
}

impl<P: EvictionPolicy> Mini<P> {
    fn new(policy: P, slots: usize, hasher: KeyHasher) -> Self {
        Self {
            policy,
            // Twice the entries ever held: hashbrown never reallocates then.
            table: HashTable::with_capacity(2 * slots),
            keys: vec![SequenceHash::default(); slots],
            free: (0..slots as u32).rev().collect(),
            hasher,
        }
    }

    /// References `key` (hashed as `hash`); whether it was resident.
    fn reference(&mut self, key: SequenceHash, hash: u64) -> bool {
        let keys = &self.keys;
        if let Some(&slot) = self.table.find(hash, |&s| keys[s as usize] == key) {
            self.policy.on_hit(slot);
            self.policy.on_reacquire(slot);
            self.policy.on_release(slot);
            return true;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let Some(victim) = self.policy.evict() else {
                    // Every mini slot is evictable between references.
                    return false;
                };
                let old = self.keys[victim as usize];
                let old_hash = self.hasher.hash_u128(old.as_u128());
                if let Ok(entry) = self.table.find_entry(old_hash, |&s| s == victim) {
                    entry.remove();
                }
                self.policy.on_forget(victim, old);
                victim
            }
        };
        self.keys[slot as usize] = key;
        let (keys, hasher) = (&self.keys, self.hasher);
        self.table.insert_unique(hash, slot, |&s| {
            hasher.hash_u128(keys[s as usize].as_u128())
        });
        self.policy.on_register(slot, key);
        self.policy.on_release(slot);
        false
    }

    /// Resident mini slots agree with the table (checks).
    fn check(&self, name: &str) -> Result<(), String> {
        self.policy.check()?;
        let resident = self.keys.len() - self.free.len();
        if self.table.len() != resident || self.policy.len() != resident {
            return Err(format!(
                "hedge: miniature {name} holds {resident} keys, table {}, policy {}",
                self.table.len(),
                self.policy.len()
            ));
        }
        Ok(())
    }
}

/// Applies `$body` to every real expert, as `$p`, with its index `$i`.
macro_rules! each_expert {
    ($self:ident, $i:ident, $p:ident => $body:expr) => {{
        {
            let $i = 0usize;
            let $p = &mut $self.lineage;
            $body;
        }
        {
            let $i = 1usize;
            let $p = &mut $self.lru2;
            $body;
        }
        {
            let $i = 2usize;
            let $p = &mut $self.s3fifo;
            $body;
        }
    }};
}

/// Follows whichever of leaf-first LRU, LRU-2 and S3-FIFO scores the most
/// hits in its miniature cache.
pub struct Hedge {
    lineage: Lineage,
    lru2: LruK,
    s3fifo: S3Fifo,
    /// Index of the expert that evicts.
    leader: usize,
    /// The expert that evicted each slot, until its `on_forget`.
    evicted_by: Vec<u8>,
    /// Each slot's key, if sampled (the store names only the slot on a hit).
    sampled: Vec<Option<SequenceHash>>,
    mini_lru: Mini<Lru>,
    mini_lru2: Mini<LruK>,
    mini_s3fifo: Mini<S3Fifo>,
    /// Decayed miniature hits per expert.
    score: [f64; EXPERTS],
    /// Factor applied to every score per sampled reference.
    decay: f64,
    /// Keys whose hash has these bits clear are sampled.
    sample_mask: u64,
    hasher: KeyHasher,
    /// Leader changes so far (reports and tests).
    switches: u64,
}

impl Hedge {
    /// A policy for slots `0..slots`, led by leaf-first LRU until the
    /// miniature caches say otherwise.
    pub fn new(slots: usize) -> Self {
        let rate = (slots / MINI_SLOTS).clamp(1, MAX_RATE).next_power_of_two();
        let mini = (slots / rate).max(1);
        let hasher = KeyHasher::random();
        let half_life = (2 * mini) as f64;
        Self {
            lineage: Lineage::new(slots),
            lru2: LruK::new(slots),
            s3fifo: S3Fifo::new(slots),
            leader: 0,
            evicted_by: vec![NOT_EVICTED; slots],
            sampled: vec![None; slots],
            mini_lru: Mini::new(Lru::new(mini), mini, hasher),
            mini_lru2: Mini::new(LruK::new(mini), mini, hasher),
            mini_s3fifo: Mini::new(S3Fifo::new(mini), mini, hasher),
            score: [0.0; EXPERTS],
            decay: 0.5f64.powf(1.0 / half_life),
            // The sample uses the hash's high bits; the tables its low ones.
            sample_mask: (rate as u64 - 1) << 48,
            hasher,
            switches: 0,
        }
    }

    /// The leading expert's name (one of [`EXPERT_NAMES`]).
    pub fn leader(&self) -> &'static str {
        EXPERT_NAMES[self.leader]
    }

    /// How many times the leader changed.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// One reference to a sampled key: every miniature cache sees it, the
    /// scores move and the leader may change.
    fn reference(&mut self, key: SequenceHash, hash: u64) {
        let hits = [
            self.mini_lru.reference(key, hash),
            self.mini_lru2.reference(key, hash),
            self.mini_s3fifo.reference(key, hash),
        ];
        for (score, hit) in self.score.iter_mut().zip(hits) {
            *score = *score * self.decay + f64::from(u8::from(hit));
        }
        let (best, &most) = self
            .score
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((self.leader, &0.0));
        let current = self.score[self.leader];
        if best != self.leader && most > current * SWITCH_MARGIN && most - current > SWITCH_MIN_LEAD
        {
            self.leader = best;
            self.switches += 1;
        }
    }

    fn peek(&self, expert: usize) -> Option<u32> {
        match expert {
            0 => self.lineage.peek_victim(),
            1 => self.lru2.peek_victim(),
            _ => self.s3fifo.peek_victim(),
        }
    }
}

impl EvictionPolicy for Hedge {
    fn name(&self) -> &'static str {
        "hedge"
    }

    fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        let table_hash = self.hasher.hash_u128(hash.as_u128());
        if table_hash & self.sample_mask == 0 {
            self.sampled[slot as usize] = Some(hash);
            self.reference(hash, table_hash);
        } else {
            self.sampled[slot as usize] = None;
        }
        each_expert!(self, _i, p => p.on_register(slot, hash));
    }

    fn on_hit(&mut self, slot: u32) {
        if let Some(key) = self.sampled[slot as usize] {
            let table_hash = self.hasher.hash_u128(key.as_u128());
            self.reference(key, table_hash);
        }
        each_expert!(self, _i, p => p.on_hit(slot));
    }

    fn on_release(&mut self, slot: u32) {
        each_expert!(self, _i, p => p.on_release(slot));
    }

    fn on_reacquire(&mut self, slot: u32) {
        each_expert!(self, _i, p => p.on_reacquire(slot));
    }

    fn evict(&mut self) -> Option<u32> {
        let leader = self.leader;
        let victim = match leader {
            0 => self.lineage.evict(),
            1 => self.lru2.evict(),
            _ => self.s3fifo.evict(),
        }?;
        // The others let the victim go as a pinned block would leave.
        each_expert!(self, i, p => if i != leader { p.on_reacquire(victim) });
        self.evicted_by[victim as usize] = leader as u8;
        Some(victim)
    }

    fn on_forget(&mut self, slot: u32, hash: SequenceHash) {
        let by = std::mem::replace(&mut self.evicted_by[slot as usize], NOT_EVICTED) as usize;
        each_expert!(self, i, p => if i == by { p.on_forget(slot, hash) } else { p.on_discard(slot, hash) });
        self.sampled[slot as usize] = None;
    }

    fn on_discard(&mut self, slot: u32, hash: SequenceHash) {
        each_expert!(self, _i, p => p.on_discard(slot, hash));
        self.sampled[slot as usize] = None;
    }

    fn peek_victim(&self) -> Option<u32> {
        self.peek(self.leader)
    }

    fn len(&self) -> usize {
        self.lineage.len()
    }

    fn check(&self) -> Result<(), String> {
        self.lineage.check()?;
        self.lru2.check()?;
        self.s3fifo.check()?;
        let lens = [self.lineage.len(), self.lru2.len(), self.s3fifo.len()];
        if lens.iter().any(|&l| l != lens[0]) {
            return Err(format!(
                "hedge: experts disagree on the evictable count {lens:?}"
            ));
        }
        if self.leader >= EXPERTS || self.score.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(format!(
                "hedge: leader {} with scores {:?}",
                self.leader, self.score
            ));
        }
        if let Some(slot) = self.evicted_by.iter().position(|&e| e != NOT_EVICTED) {
            return Err(format!("hedge: slot {slot} evicted but not forgotten"));
        }
        self.mini_lru.check("lru")?;
        self.mini_lru2.check("lru2")?;
        self.mini_s3fifo.check("s3fifo")
    }
}

#[cfg(test)]
mod tests;
