//! A custom eviction policy is user code, and user code panics. Whatever
//! hook panics, at whatever point, the store stays sound: no tally wraps, no
//! guard outlives its store, and dropping the manager and every guard in any
//! order is safe. (Defect 2 of the store audit: a panicking `evict` left
//! handed-out blocks uncounted, and unwinding freed the store under live
//! guards.) A panic may strand the slots it was called for, so Miri runs
//! this file with leak checks off.

use std::panic::{catch_unwind, AssertUnwindSafe};

use kvblocks::{BlockManager, EvictionPolicy, SequenceHash};

#[derive(Clone)]
struct Tier;

/// A policy around LRU whose hook named `fail` panics once, at its
/// `after`-th call.
struct Failing {
    inner: kvblocks::policy::Lru,
    fail: &'static str,
    after: usize,
    calls: usize,
}

impl Failing {
    fn hook(&mut self, name: &str) {
        if name == self.fail {
            self.calls += 1;
            if self.calls == self.after {
                panic!("policy hook {name} fails on purpose");
            }
        }
    }
}

impl EvictionPolicy for Failing {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn on_register(&mut self, slot: u32, hash: SequenceHash) {
        self.hook("on_register");
        self.inner.on_register(slot, hash);
    }
    fn on_hit(&mut self, slot: u32) {
        self.hook("on_hit");
        self.inner.on_hit(slot);
    }
    fn on_release(&mut self, slot: u32) {
        self.hook("on_release");
        self.inner.on_release(slot);
    }
    fn on_reacquire(&mut self, slot: u32) {
        self.hook("on_reacquire");
        self.inner.on_reacquire(slot);
    }
    fn evict(&mut self) -> Option<u32> {
        self.hook("evict");
        self.inner.evict()
    }
    fn on_forget(&mut self, slot: u32, hash: SequenceHash) {
        self.hook("on_forget");
        self.inner.on_forget(slot, hash);
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
}

/// Drives a small serving loop through a manager whose policy hook `fail`
/// panics once; returns whether it did.
fn serve_with_failing_hook(fail: &'static str, shards: usize) -> bool {
    let m = BlockManager::<Tier>::builder()
        .block_count(8)
        .block_size(4)
        .pool_shards(shards)
        .custom_eviction_policy(move |slots| Failing {
            inner: kvblocks::policy::Lru::new(slots),
            fail,
            after: 3,
            calls: 0,
        })
        .build()
        .unwrap();
    let mut kept = Vec::new();
    let mut panicked = false;
    for request in 0..24u64 {
        let root = SequenceHash::root(request % 3);
        let chain = [root, root.extend(1), root.extend(1).extend(2)];
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let hits = m.match_blocks(&chain);
            let Some(fresh) = m.allocate_blocks(chain.len() - hits.len()) else {
                return hits;
            };
            let staged = fresh
                .into_iter()
                .zip(&chain[hits.len()..])
                .map(|(block, hash)| block.stage(*hash, 4).unwrap())
                .collect();
            let mut held = hits;
            held.extend(m.register_blocks(staged));
            held
        }));
        match outcome {
            Ok(held) if request % 3 == 0 => kept.push(held),
            Ok(mut held) => {
                // Leaves first, so LRU keeps the prefix and later matches
                // resurrect it.
                held.reverse();
                panicked |= catch_unwind(AssertUnwindSafe(move || drop(held))).is_err();
            }
            Err(_) => panicked = true,
        }
        let metrics = m.metrics();
        assert!(
            metrics.inflight_mutable <= 8 && metrics.inflight_immutable <= 8,
            "tallies wrapped after a panicking {fail}: {metrics:?}"
        );
    }
    // Whatever the panic stranded, dropping everything in any order is sound.
    drop(m);
    for held in kept {
        panicked |= catch_unwind(AssertUnwindSafe(move || drop(held))).is_err();
    }
    panicked
}

#[test]
fn a_panicking_policy_hook_never_makes_the_store_unsound() {
    for fail in [
        "evict",
        "on_forget",
        "on_register",
        "on_release",
        "on_reacquire",
    ] {
        for shards in [1, 2] {
            assert!(
                serve_with_failing_hook(fail, shards),
                "hook {fail} was never called"
            );
        }
    }
}
