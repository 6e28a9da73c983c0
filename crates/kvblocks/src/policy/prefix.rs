//! PLACEHOLDER: being written. Delegates to LRU so the crate builds.

use super::{EvictionPolicy, Lru};
use crate::SequenceHash;

/// Placeholder (LRU until written).
pub struct PrefixAware {
    inner: Lru,
}

impl PrefixAware {
    /// A policy for slots `0..slots`.
    pub fn new(slots: usize) -> Self {
        Self {
            inner: Lru::new(slots),
        }
    }
}

impl EvictionPolicy for PrefixAware {
    fn name(&self) -> &'static str {
        "prefix"
    }
    fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        self.inner.on_register(slot, hash)
    }
    fn on_release(&mut self, slot: u32) {
        self.inner.on_release(slot)
    }
    fn on_reacquire(&mut self, slot: u32) {
        self.inner.on_reacquire(slot)
    }
    fn evict(&mut self) -> Option<u32> {
        self.inner.evict()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
}
