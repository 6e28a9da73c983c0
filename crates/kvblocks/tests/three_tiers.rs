//! A chain of blocks travels through three tiers sharing one registry:
//! registered in G1, offloaded to G2 (registered there, dropped in G1),
//! evicted from G1, offloaded on to G3, evicted from G2, and onboarded back
//! into G1 from G3. Reader threads ask the registry which tiers hold each
//! block the whole time:
//!
//! - between steps, every answer is exactly the step's state;
//! - during a step, every answer for one hash in one tier is the state before
//!   or after the step, and once it has shown the new state it never shows
//!   the old one again (presence is linearizable per hash and tier).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use kvblocks::{BlockManager, BlockMetadata, BlockRegistry, ImmutableBlock, SequenceHash};

mod common;
use common::register;

#[derive(Clone)]
struct G1;
#[derive(Clone)]
struct G2;
#[derive(Clone)]
struct G3;

const READERS: usize = 3;
const CHAIN: usize = 8;

/// Which tiers hold the chain: `[G1, G2, G3]`.
type State = [bool; 3];

const STEPS: [State; 6] = [
    [true, false, false], // registered in G1
    [true, true, false],  // offloaded to G2 (G1 copy inactive)
    [false, true, false], // evicted from G1
    [false, true, true],  // offloaded to G3
    [false, false, true], // evicted from G2
    [true, false, true],  // onboarded back into G1
];

fn tier<T: BlockMetadata>(registry: &BlockRegistry) -> BlockManager<T> {
    BlockManager::<T>::builder()
        .block_count(CHAIN * 2)
        .block_size(4)
        .pool_shards(2)
        .registry(registry.clone())
        .build()
        .unwrap()
}

/// Presence of every hash in every tier: `[tier][hash]`.
fn look(registry: &BlockRegistry, hashes: &[SequenceHash]) -> [Vec<bool>; 3] {
    let flags = |v: Vec<(SequenceHash, bool)>| v.into_iter().map(|(_, p)| p).collect();
    [
        flags(registry.check_presence::<G1>(hashes)),
        flags(registry.check_presence::<G2>(hashes)),
        flags(registry.check_presence::<G3>(hashes)),
    ]
}

#[test]
fn presence_is_right_at_every_step_and_monotone_within_each() {
    let registry = BlockRegistry::new();
    let (g1, g2, g3) = (
        tier::<G1>(&registry),
        tier::<G2>(&registry),
        tier::<G3>(&registry),
    );
    let mut hashes = vec![SequenceHash::root(77)];
    for i in 1..CHAIN {
        hashes.push(hashes[i - 1].extend(i as u64));
    }
    let hashes = Arc::new(hashes);
    // Odd: a step is running; even 2k: the state after step k is settled.
    let phase = Arc::new(AtomicUsize::new(0));
    let settled = Arc::new(Barrier::new(READERS + 1));
    let checked = Arc::new(Barrier::new(READERS + 1));
    // Looks taken during steps, so a step can wait for the readers to see
    // each of its parts.
    let looks = Arc::new(AtomicUsize::new(0));

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (registry, hashes, phase, looks) = (
                registry.clone(),
                hashes.clone(),
                phase.clone(),
                looks.clone(),
            );
            let (settled, checked) = (settled.clone(), checked.clone());
            thread::spawn(move || {
                let mut mine = 0usize;
                for step in 0..STEPS.len() {
                    settled.wait();
                    let now = look(&registry, &hashes);
                    for t in 0..3 {
                        assert!(
                            now[t].iter().all(|&p| p == STEPS[step][t]),
                            "step {step}, tier G{}: {:?}",
                            t + 1,
                            now[t]
                        );
                    }
                    checked.wait();
                    if step + 1 == STEPS.len() {
                        break;
                    }
                    // The next step runs: watch each answer move once.
                    let (before, after) = (STEPS[step], STEPS[step + 1]);
                    let mut moved = [[false; CHAIN]; 3];
                    while phase.load(Ordering::SeqCst) != 2 * (step + 1) {
                        let now = look(&registry, &hashes);
                        mine += 1;
                        looks.fetch_add(1, Ordering::SeqCst);
                        for t in 0..3 {
                            for (h, &p) in now[t].iter().enumerate() {
                                assert!(
                                    p == before[t] || p == after[t],
                                    "step {step}: G{} answered {p}",
                                    t + 1
                                );
                                if before[t] != after[t] {
                                    if p == after[t] {
                                        moved[t][h] = true;
                                    } else {
                                        assert!(
                                            !moved[t][h],
                                            "step {step}: G{} went back for hash {h}",
                                            t + 1
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
                mine
            })
        })
        .collect();

    let step_done = |k: usize| {
        phase.store(2 * k, Ordering::SeqCst);
        settled.wait();
        checked.wait();
    };
    let begin_step = |k: usize| phase.store(2 * k + 1, Ordering::SeqCst);
    // Waits until every reader has looked again (a condition, not a sleep).
    let pace = || {
        let target = looks.load(Ordering::SeqCst) + READERS;
        while looks.load(Ordering::SeqCst) < target {
            thread::yield_now();
        }
    };
    // Registers `hashes` in `m` one block at a time, letting the readers
    // look between blocks.
    fn register_slowly<T: BlockMetadata>(
        m: &BlockManager<T>,
        hashes: &[SequenceHash],
        pace: &dyn Fn(),
    ) -> Vec<ImmutableBlock<T>> {
        let mut held = Vec::new();
        for hash in hashes {
            held.extend(register(m, std::slice::from_ref(hash)));
            pace();
        }
        held
    }

    let on_g1 = register(&g1, &hashes);
    step_done(0);

    begin_step(0);
    let on_g2 = register_slowly(&g2, &hashes, &pace);
    drop(on_g1);
    step_done(1);

    begin_step(1);
    pace();
    g1.reset_inactive_pool().unwrap();
    pace();
    step_done(2);

    begin_step(2);
    let on_g3 = register_slowly(&g3, &hashes, &pace);
    step_done(3);

    begin_step(3);
    // Evicted one block at a time: the evict-on-release flag, then the drop.
    for block in on_g2 {
        block.set_evict_on_reset(true);
        drop(block);
        pace();
    }
    step_done(4);

    begin_step(4);
    // Onboard: match in G3, copy into G1 (the "copy" is a registration).
    let from_g3 = g3.match_blocks(&hashes);
    assert_eq!(from_g3.len(), CHAIN);
    let back = register_slowly(&g1, &hashes, &pace);
    drop(from_g3);
    step_done(5);

    let looks: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(looks > 0, "the readers watched the steps");
    drop((back, on_g3));
    for check in [
        g1.check_invariants(),
        g2.check_invariants(),
        g3.check_invariants(),
    ] {
        check.unwrap();
    }
}
