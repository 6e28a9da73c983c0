//! One registry shared by the managers of several tiers: presence, handles
//! and their attachments across tiers, evict-on-release, pins, lock order.

use std::any::TypeId;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use kvblocks::registry::PresenceError;
use kvblocks::{AttachmentError, BlockManager, BlockRegistry, LifecyclePinRef, SequenceHash};

mod common;
use common::{chain, register};

#[derive(Clone)]
struct G1;
#[derive(Clone)]
struct G2;
#[derive(Clone)]
struct G3;

fn tier<T: kvblocks::BlockMetadata>(registry: &BlockRegistry, blocks: usize) -> BlockManager<T> {
    BlockManager::<T>::builder()
        .block_count(blocks)
        .block_size(4)
        .registry(registry.clone())
        .build()
        .unwrap()
}

#[test]
fn presence_follows_each_tier_through_registration_and_eviction() {
    let registry = BlockRegistry::new();
    let (g1, _g2) = (tier::<G1>(&registry, 4), tier::<G2>(&registry, 4));
    let hashes = chain(3, 1);
    let none = vec![false; 3];
    let presence =
        |flags: Vec<(SequenceHash, bool)>| flags.into_iter().map(|(_, p)| p).collect::<Vec<_>>();

    assert_eq!(presence(registry.check_presence::<G1>(&hashes)), none);
    let held = register(&g1, &hashes);
    assert_eq!(
        presence(registry.check_presence::<G1>(&hashes)),
        vec![true; 3]
    );
    assert_eq!(presence(registry.check_presence::<G2>(&hashes)), none);
    let ids = [TypeId::of::<G1>(), TypeId::of::<G2>()];
    assert_eq!(
        presence(registry.check_presence_any(&hashes, &ids)),
        vec![true; 3]
    );
    assert_eq!(registry.registered_count(), 3);

    // Inactive still counts; evicted does not.
    drop(held);
    assert_eq!(
        presence(registry.check_presence::<G1>(&hashes)),
        vec![true; 3]
    );
    let _fresh = g1.allocate_blocks(2).unwrap(); // one free slot, then evicts the LRU one
    let after: Vec<bool> = presence(registry.check_presence::<G1>(&hashes));
    assert_eq!(after.iter().filter(|p| **p).count(), 2);
    assert!(registry.is_registered(hashes[1]));
    assert_eq!(registry.registered_count(), 2);

    // A tier with no manager: false, or a typed error.
    assert_eq!(presence(registry.check_presence::<G3>(&hashes)), none);
    assert_eq!(
        registry.try_check_presence::<G3>(&hashes),
        Err(PresenceError::TierNotBuilt {
            type_name: std::any::type_name::<G3>()
        })
    );
    assert!(registry.try_check_presence::<G2>(&hashes).is_ok());
}

#[test]
fn one_handle_per_hash_across_tiers_with_attachments_that_outlive_a_tier() {
    let registry = BlockRegistry::new();
    let (g1, g2) = (tier::<G1>(&registry, 2), tier::<G2>(&registry, 2));
    let hash = SequenceHash::root(9);
    let on_g1 = register(&g1, &[hash]).pop().unwrap();
    on_g1.registration_handle().attach_unique(17u32).unwrap();
    on_g1
        .registration_handle()
        .attach("copy in flight")
        .unwrap();

    // Offload: same handle from the host tier.
    let on_g2 = register(&g2, &[hash]).pop().unwrap();
    let handle = on_g2.registration_handle();
    assert_eq!(handle.get::<u32>().with_unique(|v| *v), Some(17));
    assert_eq!(handle.get::<&str>().with_multiple(|v| v.len()), 1);
    assert!(handle.has_block::<G1>() && handle.has_block::<G2>());
    assert!(handle.is_from_registry(&registry));
    drop(handle);

    // Evicted from G1: the handle lives on while G2 holds the block.
    drop(on_g1);
    g1.reset_inactive_pool().unwrap();
    let handle = registry
        .match_sequence_hash(hash, true)
        .expect("G2 holds it");
    assert!(!handle.has_block::<G1>() && handle.has_block::<G2>());
    assert_eq!(handle.get::<u32>().with_unique(|v| *v), Some(17));
    handle.get::<u32>().with_unique_mut(|v| *v += 1);
    drop(handle);

    // Gone from every tier and no clone left: the record goes; asking again
    // gives a new, empty one.
    drop(on_g2);
    g2.reset_inactive_pool().unwrap();
    assert!(registry.match_sequence_hash(hash, false).is_none());
    assert!(!registry.is_registered(hash));
    let fresh = registry.register_sequence_hash(hash);
    assert_eq!(fresh.get::<u32>().with_unique(|v| *v), None);
    assert!(
        registry.is_registered(hash),
        "a live handle registers its hash"
    );
    drop(fresh);
    assert!(!registry.is_registered(hash));
    assert_eq!(registry.registered_count(), 0);
}

#[test]
fn a_handle_survives_its_blocks_while_a_clone_or_a_weak_block_lives() {
    let registry = BlockRegistry::new();
    let g1 = tier::<G1>(&registry, 1);
    let hash = SequenceHash::root(5);
    let block = register(&g1, &[hash]).pop().unwrap();
    let handle = block.registration_handle();
    handle.attach_unique(String::from("kept")).unwrap();
    let weak = block.downgrade();
    drop(handle);
    drop(block);
    g1.reset_inactive_pool().unwrap(); // evicted everywhere
    assert!(weak.upgrade().is_none());
    // The weak handle still names the hash, so its record is the same one.
    let again = registry.register_sequence_hash(hash);
    assert_eq!(
        again.get::<String>().with_unique(|s| s.clone()).as_deref(),
        Some("kept")
    );
    drop((again, weak));
    let fresh = registry.register_sequence_hash(hash);
    assert_eq!(fresh.get::<String>().with_unique(|s| s.len()), None);
}

#[test]
fn attaching_a_type_both_ways_is_a_typed_error_that_changes_nothing() {
    let registry = BlockRegistry::new();
    let handle = registry.register_sequence_hash(SequenceHash::root(1));
    handle.attach(1u8).unwrap();
    handle.attach(2u8).unwrap();
    assert_eq!(
        handle.attach_unique(3u8),
        Err(AttachmentError::TypeAlreadyRegisteredAsMultiple(
            TypeId::of::<u8>()
        ))
    );
    handle.attach_unique(1u16).unwrap();
    assert_eq!(
        handle.attach(2u16),
        Err(AttachmentError::TypeAlreadyRegisteredAsUnique(
            TypeId::of::<u16>()
        ))
    );
    assert_eq!(
        handle
            .get::<u8>()
            .with_multiple(|v| v.iter().map(|x| **x).collect::<Vec<_>>()),
        vec![1, 2]
    );
    handle.get::<u8>().with_multiple_mut(|v| *v[0] = 10);
    handle.get::<u16>().with_all_mut(|unique, multiple| {
        assert!(multiple.is_empty());
        *unique.unwrap() = 7;
    });
    assert_eq!(
        handle.get::<u16>().with_all(|u, m| (u.copied(), m.len())),
        (Some(7), 0)
    );
    assert_eq!(
        handle.get::<u8>().with_all(|u, m| (u.copied(), m.len())),
        (None, 2)
    );
}

#[test]
fn a_closure_reaching_its_own_handle_panics_and_others_work() {
    let registry = BlockRegistry::new();
    let g1 = tier::<G1>(&registry, 2);
    let blocks = register(&g1, &chain(2, 3));
    let (a, b) = (
        blocks[0].registration_handle(),
        blocks[1].registration_handle(),
    );
    a.attach_unique(1u32).unwrap();
    b.attach_unique(2u32).unwrap();
    // Calling the registry, a manager and another handle from a closure.
    let seen = a.get::<u32>().with_unique(|_| {
        let present = registry.check_presence::<G1>(&[b.seq_hash()]);
        let other = b.get::<u32>().with_unique(|v| *v);
        let handle = registry.match_sequence_hash(a.seq_hash(), false).is_some();
        (present[0].1, other, handle, g1.available_blocks())
    });
    assert_eq!(seen, Some((true, Some(2), true, 0)));
    // Re-entering the same handle's attachments is caught, not a deadlock.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        a.get::<u32>().with_unique(|_| a.attach(5u64))
    }));
    let message = outcome.expect_err("re-entry panics");
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(text.contains("not re-entrant"), "{text}");
    // The lock was released by the unwind.
    assert_eq!(a.get::<u32>().with_unique(|v| *v), Some(1));
}

#[test]
fn evict_on_release_skips_the_inactive_pool() {
    let registry = BlockRegistry::new();
    let g1 = tier::<G1>(&registry, 2);
    let hashes = chain(2, 4);
    let blocks = register(&g1, &hashes);
    blocks[1].set_evict_on_reset(true);
    blocks[0].set_evict_on_reset(true);
    blocks[0].set_evict_on_reset(false);
    let handle = blocks[1].registration_handle();
    drop(blocks);
    assert!(g1.contains(hashes[0]), "cached as usual");
    assert!(!g1.contains(hashes[1]), "evicted on release");
    assert_eq!(g1.metrics().reset_pool_size, 1);
    assert!(!handle.has_block::<G1>());
    g1.check_invariants().unwrap();

    // The builder's default, and a registration of the same hash after it.
    let g2 = BlockManager::<G2>::builder()
        .block_count(2)
        .block_size(4)
        .registry(registry.clone())
        .with_default_reset_on_release(true)
        .build()
        .unwrap();
    drop(register(&g2, &hashes));
    assert_eq!(g2.metrics().reset_pool_size, 2);
    let again = register(&g2, &hashes);
    assert!(again[1].registration_handle().has_block::<G2>());
    drop(again);
    g2.check_invariants().unwrap();
}

#[test]
fn pins_keep_blocks_of_any_tier() {
    let registry = BlockRegistry::new();
    let (g1, g2) = (tier::<G1>(&registry, 1), tier::<G2>(&registry, 1));
    let hash = SequenceHash::root(8);
    let a = register(&g1, &[hash]).pop().unwrap();
    let b = register(&g2, &[hash]).pop().unwrap();
    let queue: Vec<LifecyclePinRef> = vec![a.pin(), b.pin(), a.pin()];
    let (id_a, id_g1) = (a.block_id(), g1.id());
    drop((a, b));
    assert!(
        g1.allocate_blocks(1).is_none(),
        "the pin keeps the only slot"
    );
    assert_eq!((queue[0].block_id(), queue[0].manager_id()), (id_a, id_g1));
    assert_eq!(queue[1].manager_id(), g2.id());
    assert_eq!(queue[0].sequence_hash(), hash);
    assert_eq!(queue[0].use_count(), 1);
    assert!(queue[1].registration_handle().has_block::<G1>());
    drop(queue);
    assert_eq!(g1.allocate_blocks(1).map(|v| v.len()), Some(1));
}

#[test]
fn a_manager_built_without_a_registry_has_its_own() {
    let a = BlockManager::<G1>::builder()
        .block_count(1)
        .block_size(4)
        .build()
        .unwrap();
    let b = BlockManager::<G1>::builder()
        .block_count(1)
        .block_size(4)
        .build()
        .unwrap();
    let hash = SequenceHash::root(2);
    let held = register(&a, &[hash]);
    assert!(a.block_registry().is_registered(hash));
    assert!(!b.block_registry().is_registered(hash));
    drop(held);
}

/// Threads that call the registry from attachment closures, materialise and
/// drop handles, and register, match and evict in two tiers at once. An
/// inversion of the documented lock order would deadlock; a watchdog fails
/// the test instead of hanging CI.
#[test]
fn the_lock_order_holds_under_every_kind_of_caller_at_once() {
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let registry = BlockRegistry::new();
        let g1 = Arc::new(tier::<G1>(&registry, 16));
        let g2 = Arc::new(tier::<G2>(&registry, 16));
        let start = Arc::new(Barrier::new(4));
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let (registry, g1, g2, start) =
                    (registry.clone(), g1.clone(), g2.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    for round in 0..300u64 {
                        let hashes = chain(3, (round + t) % 7);
                        let on_g1 = g1.match_blocks(&hashes);
                        let on_g1 = if on_g1.len() == 3 {
                            on_g1
                        } else if let Some(fresh) = g1.allocate_blocks(3 - on_g1.len()) {
                            let mut held = on_g1;
                            held.extend(
                                g1.register_blocks(
                                    fresh
                                        .into_iter()
                                        .zip(&hashes[held.len()..])
                                        .map(|(b, h)| b.stage(*h, 4).unwrap())
                                        .collect(),
                                ),
                            );
                            held
                        } else {
                            continue;
                        };
                        let handle = on_g1[0].registration_handle();
                        let _ = handle.attach(round);
                        handle.get::<u64>().with_multiple(|_| {
                            // Registry and the other tier from inside the lock.
                            let _ = registry.check_presence::<G2>(&hashes);
                            let _ = registry.registered_count();
                            if let Some(fresh) = g2.allocate_blocks(1) {
                                let staged = fresh.into_iter().next().unwrap().stage(hashes[0], 4);
                                drop(g2.register_block(staged.unwrap()));
                            }
                        });
                        if round % 5 == t {
                            on_g1[1].set_evict_on_reset(true);
                        }
                        drop(on_g1);
                        if round % 11 == 0 {
                            let _ = g2.reset_inactive_pool();
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        g1.check_invariants().unwrap();
        g2.check_invariants().unwrap();
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(120))
        .expect("finished without a deadlock");
}
