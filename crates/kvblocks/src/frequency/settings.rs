//! kvbm-logical's names for configuring a sketch: [`DecayPolicy`] (when the
//! counters are halved), [`FixedDecayPolicy`], [`TinyLFUSettings`] with its
//! builder, and [`TinyLFUSketch`], a sketch owned by one thread.
//!
//! They exist so code written against kvbm-logical 1.6.1 compiles; each one
//! builds on the lock-free [`TinyLFUTracker`]. A tracker built with the
//! default (fixed) decay pays nothing for this module; a custom
//! [`DecayPolicy`] is asked once per counted touch.
//!
//! ```
//! use kvblocks::frequency::{FixedDecayPolicy, FrequencyTracker, TinyLFUSettings};
//! let tracker = TinyLFUSettings::builder()
//!     .capacity(1024usize)
//!     .decay_policy(FixedDecayPolicy::new(100))
//!     .build()?
//!     .into_tracker::<u64>();
//! tracker.touch(7);
//! assert_eq!(tracker.count(7), 1);
//!
//! let mut sketch = TinyLFUSettings::builder().capacity(1024usize).build()?.into_sketch::<u64>();
//! sketch.increment(7);
//! sketch.increment(7);
//! assert_eq!(sketch.estimate(7), 2);
//! # Ok::<(), kvblocks::frequency::TinyLFUSettingsError>(())
//! ```

use super::{FrequencyTracker, SketchKey, TinyLFUTracker};

/// When a sketch halves its counters (kvbm-logical's name).
pub trait DecayPolicy: Send + Sync {
    /// Whether `increments_since_last_reset` counted touches call for a
    /// halving now.
    fn should_decay(&self, increments_since_last_reset: u32) -> bool;
}

/// Halve after a fixed number of counted touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedDecayPolicy {
    sample_size: u32,
}

impl FixedDecayPolicy {
    /// Halve every `sample_size` counted touches.
    pub fn new(sample_size: u32) -> Self {
        Self { sample_size }
    }

    /// Halve every 10 x `capacity` counted touches (the default).
    pub fn from_capacity(capacity: usize) -> Self {
        Self::new(capacity.saturating_mul(10).min(u32::MAX as usize) as u32)
    }

    /// Counted touches between halvings.
    pub fn sample_size(&self) -> u32 {
        self.sample_size
    }
}

impl DecayPolicy for FixedDecayPolicy {
    fn should_decay(&self, increments_since_last_reset: u32) -> bool {
        increments_since_last_reset >= self.sample_size
    }
}

/// A settings builder that could not build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TinyLFUSettingsError {
    /// `capacity` was never set.
    #[error("TinyLFU settings need a capacity")]
    MissingCapacity,
}

/// A sketch's size and decay, turned into a tracker or a sketch.
pub struct TinyLFUSettings {
    capacity: usize,
    decay_policy: Option<Box<dyn DecayPolicy>>,
}

impl TinyLFUSettings {
    /// Starts the settings.
    pub fn builder() -> TinyLFUSettingsBuilder {
        TinyLFUSettingsBuilder::default()
    }

    /// The capacity the sketch is sized for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A lock-free tracker with these settings. Without a decay policy it
    /// halves every 10 x capacity counted touches, as [`TinyLFUTracker::new`].
    pub fn into_tracker<K: SketchKey>(self) -> TinyLFUTracker<K> {
        match self.decay_policy {
            None => TinyLFUTracker::new(self.capacity),
            Some(decay) => TinyLFUTracker::with_decay_policy(self.capacity, decay),
        }
    }

    /// A sketch owned by one thread with these settings.
    pub fn into_sketch<K: SketchKey>(self) -> TinyLFUSketch<K> {
        TinyLFUSketch {
            tracker: self.into_tracker(),
        }
    }
}

/// Builds [`TinyLFUSettings`].
#[derive(Default)]
pub struct TinyLFUSettingsBuilder {
    capacity: Option<usize>,
    decay_policy: Option<Box<dyn DecayPolicy>>,
}

impl TinyLFUSettingsBuilder {
    /// The number of distinct keys the sketch is sized for (required).
    pub fn capacity(mut self, capacity: impl Into<usize>) -> Self {
        self.capacity = Some(capacity.into());
        self
    }

    /// When the sketch halves (default: [`FixedDecayPolicy::from_capacity`]).
    pub fn decay_policy(mut self, policy: impl DecayPolicy + 'static) -> Self {
        self.decay_policy = Some(Box::new(policy));
        self
    }

    /// The settings.
    ///
    /// # Errors
    ///
    /// [`TinyLFUSettingsError::MissingCapacity`] without a capacity.
    pub fn build(self) -> Result<TinyLFUSettings, TinyLFUSettingsError> {
        Ok(TinyLFUSettings {
            capacity: self.capacity.ok_or(TinyLFUSettingsError::MissingCapacity)?,
            decay_policy: self.decay_policy,
        })
    }
}

/// A count-min sketch used from one thread (`&mut self` to count), as
/// kvbm-logical's; the same sketch as [`TinyLFUTracker`].
pub struct TinyLFUSketch<K: SketchKey> {
    tracker: TinyLFUTracker<K>,
}

impl<K: SketchKey> TinyLFUSketch<K> {
    /// A sketch for about `capacity` distinct keys, halved every 10 x
    /// `capacity` counted increments.
    pub fn new(capacity: usize) -> Self {
        Self {
            tracker: TinyLFUTracker::new(capacity),
        }
    }

    /// Counts one use of `key`.
    pub fn increment(&mut self, key: K) {
        self.tracker.touch(key);
    }

    /// The estimated uses of `key` (0..=15).
    pub fn estimate(&self, key: K) -> u32 {
        self.tracker.count(key)
    }
}

impl<K: SketchKey> std::fmt::Debug for TinyLFUSketch<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TinyLFUSketch")
            .field("tracker", &self.tracker)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn settings_without_a_capacity_are_a_typed_error() {
        assert_eq!(
            TinyLFUSettings::builder()
                .build()
                .map(|s| s.capacity())
                .unwrap_err(),
            TinyLFUSettingsError::MissingCapacity
        );
    }

    #[test]
    fn a_fixed_decay_policy_halves_after_its_sample_size() {
        let tracker = TinyLFUSettings::builder()
            .capacity(1usize << 12)
            .decay_policy(FixedDecayPolicy::new(8))
            .build()
            .unwrap()
            .into_tracker::<u64>();
        for _ in 0..7 {
            tracker.touch(1);
        }
        assert_eq!(tracker.count(1), 7);
        tracker.touch(1); // the eighth counted touch halves 8 -> 4
        assert_eq!(tracker.count(1), 4);
        assert_eq!(tracker.halvings(), 1);
    }

    #[test]
    fn a_custom_decay_policy_is_asked_with_the_count_since_the_last_halving() {
        struct Recording(Arc<AtomicU32>);
        impl DecayPolicy for Recording {
            fn should_decay(&self, since: u32) -> bool {
                self.0.fetch_max(since, Ordering::Relaxed);
                since >= 3
            }
        }
        let highest = Arc::new(AtomicU32::new(0));
        let mut sketch = TinyLFUSettings::builder()
            .capacity(1usize << 12)
            .decay_policy(Recording(Arc::clone(&highest)))
            .build()
            .unwrap()
            .into_sketch::<u128>();
        for _ in 0..9 {
            sketch.increment(5);
        }
        // Halvings at the 3rd, 6th and 9th increment, each restarting the
        // count: the policy never saw more than 3.
        assert_eq!(highest.load(Ordering::Relaxed), 3);
        assert!(sketch.estimate(5) < 9, "halved: {}", sketch.estimate(5));
        assert_eq!(FixedDecayPolicy::from_capacity(100).sample_size(), 1000);
    }
}
