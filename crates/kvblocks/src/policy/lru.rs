//! Least recently used: evict the inactive block released longest ago.
//!
//! What vLLM's prefix cache does. One intrusive list of evictable slots in
//! release order; a match that resurrects a slot unlinks it, and its next
//! release puts it at the back again.

use super::list::{Links, List};
use super::EvictionPolicy;

/// LRU over evictable slots.
pub struct Lru {
    links: Links,
    queue: List,
}

impl Lru {
    /// A policy for slots `0..slots`.
    pub fn new(slots: usize) -> Self {
        Self {
            links: Links::new(slots),
            queue: List::new(),
        }
    }
}

impl EvictionPolicy for Lru {
    fn name(&self) -> &'static str {
        "lru"
    }

    fn observes_hits(&self) -> bool {
        false
    }

    fn on_release(&mut self, slot: u32) {
        self.queue.push_back(&mut self.links, slot);
    }

    fn on_reacquire(&mut self, slot: u32) {
        self.queue.remove(&mut self.links, slot);
    }

    fn evict(&mut self) -> Option<u32> {
        self.queue.pop_front(&mut self.links)
    }

    fn peek_victim(&self) -> Option<u32> {
        (self.queue.len() > 0).then(|| self.queue.front())
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn check(&self) -> Result<(), String> {
        self.queue.check(&self.links, "lru queue", |_| Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_in_release_order_skipping_reacquired_slots() {
        let mut lru = Lru::new(4);
        for slot in [2, 0, 3, 1] {
            lru.on_release(slot);
        }
        lru.on_reacquire(0);
        lru.on_release(0);
        assert_eq!(lru.len(), 4);
        assert_eq!(lru.check(), Ok(()));
        let order: Vec<u32> = std::iter::from_fn(|| lru.evict()).collect();
        assert_eq!(order, vec![2, 3, 1, 0]);
    }
}
