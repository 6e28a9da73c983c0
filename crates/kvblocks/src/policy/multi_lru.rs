//! Frequency-tiered LRU (kvbm-logical's "multi-LRU" backend): four LRU
//! levels by how often a block was used, the coldest level evicted first.
//!
//! When a block becomes evictable its hash's count in the registry's
//! [`FrequencyTracker`] places it in a level: *cold* below the first
//! threshold, *warm* below the second, *hot* below the third, *very hot*
//! from the third on (kvbm-logical's defaults: 3, 8, 15). Each level is an
//! LRU list of evictable slots in release order; eviction takes the least
//! recently released slot of the coldest non-empty level. The level is
//! chosen once per release, so a block used again while cached climbs at
//! its next release. The policy never touches the tracker: the managers do,
//! on matches and new registrations ([`crate::frequency`]).
//!
//! Every hook is O(1) and allocation-free: the levels share one set of
//! intrusive links over the slots. The tracker's `count` runs inside the
//! hook, under the pool shard's lock, once per release.
//!
//! Thresholds are checked by [`MultiLruThresholds::new`] and the manager
//! builder, as a typed [`ThresholdError`].

use std::sync::Arc;

use super::list::{Links, List, NIL};
use super::EvictionPolicy;
use crate::frequency::FrequencyTracker;
use crate::SequenceHash;

/// Number of levels.
pub const LEVELS: usize = 4;
/// Largest count a 4-bit frequency counter reaches (the highest threshold allowed).
pub const MAX_THRESHOLD: u8 = 15;
/// "In no level": the slot is not evictable.
const NO_LEVEL: u8 = u8::MAX;

/// Thresholds the frequency-tiered policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    /// Three thresholds separate four levels.
    #[error("{given} frequency thresholds given; the four levels need exactly 3")]
    WrongCount {
        /// How many were given.
        given: usize,
    },
    /// A cold-to-warm threshold of 0 would put never-used blocks above cold.
    #[error("the cold-to-warm threshold must be at least 1 (got 0)")]
    ColdIsZero,
    /// Each threshold must be above the one before.
    #[error("frequency thresholds {thresholds:?} are not strictly increasing")]
    NotIncreasing {
        /// The thresholds given.
        thresholds: [u8; 3],
    },
    /// A count never exceeds 15 (4-bit counters), so a higher threshold
    /// would leave its level empty.
    #[error("frequency threshold {threshold} exceeds the maximum count of {MAX_THRESHOLD}")]
    AboveMax {
        /// The offending threshold.
        threshold: u8,
    },
}

/// The three counts that separate cold, warm, hot and very hot blocks:
/// validated, so a policy built from them always has four levels.
///
/// ```
/// use kvblocks::policy::{MultiLruThresholds, ThresholdError};
/// assert_eq!(MultiLruThresholds::default().get(), [3, 8, 15]);
/// assert!(MultiLruThresholds::new(2, 4, 8).is_ok());
/// assert_eq!(MultiLruThresholds::new(4, 4, 8), Err(ThresholdError::NotIncreasing { thresholds: [4, 4, 8] }));
/// assert_eq!(MultiLruThresholds::new(1, 2, 16), Err(ThresholdError::AboveMax { threshold: 16 }));
/// assert_eq!(MultiLruThresholds::try_from(&[1u8, 2][..]), Err(ThresholdError::WrongCount { given: 2 }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MultiLruThresholds([u8; 3]);

impl MultiLruThresholds {
    /// kvbm-logical's defaults: cold below 3 uses, warm below 8, hot below
    /// 15, very hot at 15.
    pub const DEFAULT: Self = Self([3, 8, 15]);

    /// Thresholds for the transitions cold to warm, warm to hot and hot to
    /// very hot.
    ///
    /// # Errors
    ///
    /// [`ThresholdError::ColdIsZero`], [`ThresholdError::NotIncreasing`] or
    /// [`ThresholdError::AboveMax`].
    pub fn new(
        cold_to_warm: u8,
        warm_to_hot: u8,
        hot_to_very_hot: u8,
    ) -> Result<Self, ThresholdError> {
        let thresholds = [cold_to_warm, warm_to_hot, hot_to_very_hot];
        if cold_to_warm == 0 {
            return Err(ThresholdError::ColdIsZero);
        }
        if !(cold_to_warm < warm_to_hot && warm_to_hot < hot_to_very_hot) {
            return Err(ThresholdError::NotIncreasing { thresholds });
        }
        if hot_to_very_hot > MAX_THRESHOLD {
            return Err(ThresholdError::AboveMax {
                threshold: hot_to_very_hot,
            });
        }
        Ok(Self(thresholds))
    }

    /// The three thresholds.
    pub fn get(self) -> [u8; 3] {
        self.0
    }

    /// The level (0 cold to 3 very hot) of a block used `count` times.
    #[inline]
    pub fn level(self, count: u32) -> usize {
        self.0.iter().filter(|&&t| count >= u32::from(t)).count()
    }
}

impl Default for MultiLruThresholds {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<&[u8]> for MultiLruThresholds {
    type Error = ThresholdError;

    fn try_from(thresholds: &[u8]) -> Result<Self, ThresholdError> {
        match *thresholds {
            [a, b, c] => Self::new(a, b, c),
            _ => Err(ThresholdError::WrongCount {
                given: thresholds.len(),
            }),
        }
    }
}

/// Frequency-tiered LRU over evictable slots; see the module docs.
///
/// Built by the manager builder's
/// [`with_multi_lru_backend`](crate::manager::BlockManagerBuilder::with_multi_lru_backend)
/// with the registry's tracker; [`MultiLru::new`] is for
/// [`custom_eviction_policy`](crate::manager::BlockManagerBuilder::custom_eviction_policy)
/// and tests.
pub struct MultiLru {
    tracker: Arc<dyn FrequencyTracker<u128>>,
    thresholds: MultiLruThresholds,
    /// Each slot's hash as the tracker's key, set at registration.
    keys: Vec<u128>,
    /// Each slot's level while evictable, else [`NO_LEVEL`].
    level: Vec<u8>,
    links: Links,
    /// Evictable slots of each level, least recently released first.
    levels: [List; LEVELS],
}

impl MultiLru {
    /// A policy for slots `0..slots`, leveling by `tracker`'s counts.
    pub fn new(
        slots: usize,
        tracker: Arc<dyn FrequencyTracker<u128>>,
        thresholds: MultiLruThresholds,
    ) -> Self {
        Self {
            tracker,
            thresholds,
            keys: vec![0; slots],
            level: vec![NO_LEVEL; slots],
            links: Links::new(slots),
            levels: [List::new(), List::new(), List::new(), List::new()],
        }
    }

    /// The thresholds.
    pub fn thresholds(&self) -> MultiLruThresholds {
        self.thresholds
    }

    /// Evictable slots in each level, cold first.
    pub fn level_lens(&self) -> [usize; LEVELS] {
        [0, 1, 2, 3].map(|l| self.levels[l].len())
    }
}

impl EvictionPolicy for MultiLru {
    fn name(&self) -> &'static str {
        "multi-lru"
    }

    fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        self.keys[slot as usize] = hash.as_u128();
    }

    fn observes_hits(&self) -> bool {
        false
    }

    fn on_release(&mut self, slot: u32) {
        debug_assert_eq!(self.level[slot as usize], NO_LEVEL, "released twice");
        let count = self.tracker.count(self.keys[slot as usize]);
        let level = self.thresholds.level(count);
        self.levels[level].push_back(&mut self.links, slot);
        self.level[slot as usize] = level as u8;
    }

    fn on_reacquire(&mut self, slot: u32) {
        let level = std::mem::replace(&mut self.level[slot as usize], NO_LEVEL);
        debug_assert_ne!(level, NO_LEVEL, "reacquired a slot that is not evictable");
        self.levels[level as usize].remove(&mut self.links, slot);
    }

    fn evict(&mut self) -> Option<u32> {
        let list = self.levels.iter_mut().find(|l| l.len() > 0)?;
        let slot = list.pop_front(&mut self.links)?;
        self.level[slot as usize] = NO_LEVEL;
        Some(slot)
    }

    fn peek_victim(&self) -> Option<u32> {
        self.levels.iter().find(|l| l.len() > 0).map(|l| l.front())
    }

    fn len(&self) -> usize {
        self.levels.iter().map(List::len).sum()
    }

    fn check(&self) -> Result<(), String> {
        let mut listed = 0;
        for (l, list) in self.levels.iter().enumerate() {
            let mut slot = list.front();
            let mut walked = 0;
            while slot != NIL {
                if walked == list.len() {
                    return Err(format!(
                        "level {l} is longer than its length {}",
                        list.len()
                    ));
                }
                let tag = self.level[slot as usize];
                if usize::from(tag) != l {
                    return Err(format!("slot {slot} in level {l} is tagged {tag}"));
                }
                walked += 1;
                slot = self.links.next(slot);
            }
            if walked != list.len() {
                return Err(format!(
                    "level {l} holds {walked}, length says {}",
                    list.len()
                ));
            }
            listed += walked;
        }
        let tagged = self.level.iter().filter(|&&t| t != NO_LEVEL).count();
        if tagged != listed {
            return Err(format!("{tagged} slots tagged evictable, {listed} listed"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frequency::TinyLFUTracker;
    use crate::policy::test_utils::{check_random_sequences, evict_all, register_all, roots};

    /// A tracker whose counts are fixed per key (a function of the key), so
    /// the random driver's slots spread over all levels.
    struct Hashed;
    impl FrequencyTracker<u128> for Hashed {
        fn touch(&self, _key: u128) {}
        fn count(&self, key: u128) -> u32 {
            ((key ^ (key >> 64)) as u32).wrapping_mul(0x9E37_79B9) >> 28
        }
    }

    #[test]
    fn evicts_the_coldest_level_first_in_release_order() {
        let tracker = Arc::new(TinyLFUTracker::<u128>::new(1024));
        let hashes = roots(6);
        // Counts 0, 9, 3, 15, 0, 4: levels cold, hot, warm, very hot, cold, warm.
        for (hash, uses) in hashes.iter().zip([0, 9, 3, 15, 0, 4]) {
            for _ in 0..uses {
                tracker.touch(hash.as_u128());
            }
        }
        let mut policy = MultiLru::new(6, tracker, MultiLruThresholds::DEFAULT);
        register_all(&mut policy, &hashes, &[0, 1, 2, 3, 4, 5]);
        assert_eq!(policy.level_lens(), [2, 2, 1, 1]);
        policy.check().unwrap();
        assert_eq!(policy.peek_victim(), Some(0));
        assert_eq!(evict_all(&mut policy, &hashes), vec![0, 4, 2, 5, 1, 3]);
    }

    #[test]
    fn a_block_used_while_cached_climbs_at_its_next_release() {
        let tracker = Arc::new(TinyLFUTracker::<u128>::new(1024));
        let hashes = roots(2);
        let mut policy = MultiLru::new(2, tracker.clone(), MultiLruThresholds::DEFAULT);
        register_all(&mut policy, &hashes, &[0, 1]);
        assert_eq!(policy.level_lens(), [2, 0, 0, 0]);
        // Slot 0 is matched three times (the manager touches the tracker).
        policy.on_reacquire(0);
        for _ in 0..3 {
            tracker.touch(hashes[0].as_u128());
        }
        policy.on_release(0);
        assert_eq!(policy.level_lens(), [1, 1, 0, 0]);
        assert_eq!(evict_all(&mut policy, &hashes), vec![1, 0]);
    }

    #[test]
    fn thresholds_place_counts_in_levels() {
        let t = MultiLruThresholds::DEFAULT;
        let levels: Vec<usize> = (0..=15).map(|c| t.level(c)).collect();
        assert_eq!(levels, [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3]);
        assert_eq!(
            MultiLruThresholds::new(0, 1, 2),
            Err(ThresholdError::ColdIsZero)
        );
        assert_eq!(
            MultiLruThresholds::new(5, 3, 9),
            Err(ThresholdError::NotIncreasing {
                thresholds: [5, 3, 9]
            })
        );
        assert_eq!(
            MultiLruThresholds::try_from(&[1u8, 2, 3, 4][..]),
            Err(ThresholdError::WrongCount { given: 4 })
        );
        assert_eq!(
            MultiLruThresholds::try_from(&[1u8, 2, 15][..]).map(|t| t.get()),
            Ok([1, 2, 15])
        );
    }

    #[test]
    fn multi_lru_agrees_with_the_model_on_random_hook_sequences() {
        let thresholds = MultiLruThresholds::new(2, 6, 11).unwrap();
        check_random_sequences(|slots| MultiLru::new(slots, Arc::new(Hashed), thresholds));
    }
}
