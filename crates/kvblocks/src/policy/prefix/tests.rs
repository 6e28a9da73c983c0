//! Tests of [`PrefixAware`]: its order on hand-made sequences, its credit,
//! and random hook sequences against a model.

use super::*;
use crate::policy::test_utils::{check_random_sequences, evict_all, roots};

/// A chain of `len` hashes from one root.
fn chain(len: usize, seed: u64) -> Vec<SequenceHash> {
    let mut hashes = vec![SequenceHash::root(seed)];
    for i in 1..len {
        let next = hashes[i - 1].extend(seed ^ ((i as u64) << 8));
        hashes.push(next);
    }
    hashes
}

/// Registers `hashes[i]` in slot `first + i`, then releases them root
/// first, as a request dropping its blocks does.
fn serve(policy: &mut PrefixAware, first: u32, hashes: &[SequenceHash]) {
    for (i, &hash) in hashes.iter().enumerate() {
        policy.on_register(first + i as u32, hash);
    }
    for i in 0..hashes.len() as u32 {
        policy.on_release(first + i);
    }
}

#[test]
fn evicts_a_chain_from_its_leaf_up_although_the_root_was_released_first() {
    let mut policy = PrefixAware::new(4);
    let hashes = chain(3, 7);
    serve(&mut policy, 0, &hashes);
    assert_eq!(evict_all(&mut policy, &hashes), vec![2, 1, 0]);
}

#[test]
fn never_reused_request_tails_go_before_older_blocks() {
    let mut policy = PrefixAware::new(4);
    let a = chain(2, 1);
    let b = chain(2, 2);
    serve(&mut policy, 0, &a);
    serve(&mut policy, 2, &b);
    let hashes = [a[0], a[1], b[0], b[1]];
    // Leaf-first LRU would give [1, 0, 3, 2]: both tails go first here.
    assert_eq!(evict_all(&mut policy, &hashes), vec![1, 3, 0, 2]);
}

#[test]
fn a_block_hit_while_resident_is_not_a_tail() {
    let mut policy = PrefixAware::new(2);
    let hashes = roots(2);
    policy.on_register(0, hashes[0]);
    policy.on_hit(0); // a second request matched it
    policy.on_release(0);
    policy.on_register(1, hashes[1]);
    policy.on_release(1);
    // Slot 0 is older, but slot 1 is a single-use tail.
    assert_eq!(evict_all(&mut policy, &hashes), vec![1, 0]);
}

#[test]
fn a_block_back_from_the_ghost_counts_as_reused() {
    let mut policy = PrefixAware::new(2);
    let hashes = roots(2);
    policy.on_register(0, hashes[0]);
    policy.on_release(0);
    assert_eq!(policy.evict(), Some(0));
    policy.on_forget(0, hashes[0]);
    policy.on_register(0, hashes[0]); // its second reference
    policy.on_release(0);
    policy.on_register(1, hashes[1]);
    policy.on_release(1);
    assert_eq!(evict_all(&mut policy, &hashes), vec![1, 0]);
}

#[test]
fn a_protected_leaf_outlives_newer_probation_leaves_by_its_credit() {
    for (credit, expected) in [(0, vec![2, 0, 1]), (100, vec![2, 1, 0])] {
        let mut policy = PrefixAware::new(3);
        policy.credit = credit;
        let hashes = [roots(1)[0], chain(2, 9)[0], chain(2, 9)[1]];
        // Slot 0 protected and released first, slot 1 on probation, slot 2
        // its tail.
        policy.on_register(0, hashes[0]);
        policy.on_hit(0);
        policy.on_release(0);
        serve(&mut policy, 1, &hashes[1..]);
        // Slot 2 goes first as a tail; then slot 1, a probation leaf 2 ticks
        // newer than slot 0, goes before it only if the credit covers that.
        assert_eq!(evict_all(&mut policy, &hashes), expected, "credit {credit}");
    }
}

#[test]
fn recent_protected_victims_coming_back_raise_the_credit_and_probation_ones_lower_it() {
    let mut policy = PrefixAware::new(8);
    let hot = roots(1)[0];
    policy.on_register(0, hot);
    policy.on_hit(0);
    policy.on_release(0);
    policy.now += 1_000; // the victim waited 1,000 ticks
    assert_eq!(policy.evict(), Some(0));
    policy.on_forget(0, hot);
    policy.on_register(0, hot);
    assert_eq!(policy.credit, 10, "1% of the victim age");
    policy.on_release(0);

    let cold = chain(2, 5);
    serve(&mut policy, 1, &cold);
    policy.now += 500;
    assert_eq!(
        evict_all(&mut policy, &[hot, cold[0], cold[1]]),
        vec![2, 1, 0]
    );
    // Slot 0 (protected) went last; the victim age is now its wait.
    policy.on_register(1, cold[0]);
    assert!(policy.credit < 10, "credit {}", policy.credit);
}

#[test]
fn a_ghost_hit_older_than_the_window_does_not_steer() {
    let mut policy = PrefixAware::new(4); // window: 1 eviction per class
    let hashes = roots(3);
    for (slot, &hash) in hashes.iter().enumerate() {
        policy.on_register(slot as u32, hash);
        policy.on_hit(slot as u32);
        policy.on_release(slot as u32);
    }
    policy.now += 1_000;
    assert_eq!(evict_all(&mut policy, &hashes), vec![0, 1, 2]);
    policy.on_register(0, hashes[0]); // two protected evictions ago
    assert_eq!(policy.credit, 0);
    policy.on_register(1, hashes[2]); // the last one
    assert!(policy.credit > 0);
}

#[test]
fn falls_back_to_the_oldest_parent_when_every_leaf_is_pinned() {
    let mut policy = PrefixAware::new(4);
    let hashes = chain(2, 3);
    policy.on_register(0, hashes[0]);
    policy.on_register(1, hashes[1]);
    policy.on_release(0); // its child stays pinned
    assert_eq!(policy.evict(), Some(0));
    policy.on_forget(0, hashes[0]);
    policy.on_release(1);
    assert_eq!(policy.evict(), Some(1));
    assert_eq!(policy.evict(), None);
}

#[test]
fn an_evictable_leaf_that_gains_a_child_waits_for_it() {
    let mut policy = PrefixAware::new(2);
    let hashes = chain(2, 4);
    policy.on_register(0, hashes[0]);
    policy.on_release(0); // an evictable leaf (a tail)
    policy.on_register(1, hashes[1]);
    policy.on_release(1);
    assert_eq!(evict_all(&mut policy, &hashes), vec![1, 0]);
}

#[test]
fn a_reused_parent_slot_is_not_confused_with_the_old_parent() {
    let mut policy = PrefixAware::new(4);
    let a = chain(2, 1);
    let b = roots(1)[0];
    policy.on_register(0, a[0]);
    policy.on_register(1, a[1]);
    policy.on_release(0);
    assert_eq!(policy.evict(), Some(0));
    policy.on_forget(0, a[0]);
    policy.on_register(0, b); // slot 0 now holds an unrelated root
    policy.on_release(1);
    assert_eq!(policy.evict(), Some(1));
    policy.on_forget(1, a[1]);
    assert_eq!(policy.tree.children(0), 0);
    policy.check().unwrap();
}

#[test]
fn agrees_with_the_model_on_random_hook_sequences() {
    check_random_sequences(PrefixAware::new);
}

#[test]
fn churn_never_grows_any_table() {
    let slots = 64;
    let mut policy = PrefixAware::new(slots);
    let capacities = |p: &PrefixAware| {
        (
            p.leaves.each_ref().map(SlotHeap::capacity),
            p.tree.allocation_size(),
            p.ghost.capacity(),
            p.nodes.capacity(),
        )
    };
    let before = capacities(&policy);
    // What each slot holds, and whether a request pins it.
    let mut held: Vec<Option<(SequenceHash, bool)>> = vec![None; slots];
    for round in 0..400u64 {
        // A request of up to 12 blocks sharing prefixes with earlier ones.
        let hashes = chain(1 + (round % 12) as usize, round % 9);
        let mut pinned = Vec::new();
        for &hash in &hashes {
            if let Some(slot) = held
                .iter()
                .position(|h| matches!(h, Some((k, _)) if *k == hash))
            {
                policy.on_hit(slot as u32);
                if held[slot] == Some((hash, false)) {
                    policy.on_reacquire(slot as u32);
                    held[slot] = Some((hash, true));
                    pinned.push(slot as u32);
                }
                continue;
            }
            let slot = match held.iter().position(Option::is_none) {
                Some(slot) => slot as u32,
                None => {
                    let victim = policy.evict().expect("a released block");
                    let (old, _) = held[victim as usize].take().unwrap();
                    policy.on_forget(victim, old);
                    victim
                }
            };
            held[slot as usize] = Some((hash, true));
            policy.on_register(slot, hash);
            pinned.push(slot);
        }
        for slot in pinned {
            held[slot as usize] = held[slot as usize].map(|(hash, _)| (hash, false));
            policy.on_release(slot);
        }
        policy.check().unwrap();
    }
    assert!(policy.ghost.capacity() >= 4 * slots);
    assert_eq!(capacities(&policy), before);
}
