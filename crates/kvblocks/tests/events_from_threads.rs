//! The store's own event stream, produced by several threads at once: each
//! change is reported under the lock that orders it, so replaying the
//! stream gives exactly the registered set, even when threads evict and
//! register the same hashes concurrently (a block evicted by one thread and
//! registered again by another must be removed before it is stored again).

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use kvblocks::events::{EventsManager, RegisteredSet};
use kvblocks::{BlockManager, LogicalLayoutHandle, SequenceHash};

mod common;
use common::Rng;

#[derive(Clone)]
struct Gpu;

const THREADS: usize = 4;
const BLOCKS: usize = 64;
const REQUESTS: usize = if cfg!(miri) { 10 } else { 4_000 };

fn chain(rng: &mut Rng, thread: usize, request: usize) -> Vec<SequenceHash> {
    let prompt = rng.below(12);
    let mut chain = vec![SequenceHash::root(prompt)];
    for i in 1..3 {
        chain.push(chain[i - 1].extend(prompt << 8 | i as u64));
    }
    for i in 0..rng.below(4) {
        let private = (thread as u64) << 40 | (request as u64) << 8 | i;
        chain.push(chain[chain.len() - 1].extend(private));
    }
    chain
}

#[test]
fn replaying_events_from_many_threads_gives_the_registered_set() {
    for shards in [1, 4] {
        for evict_on_release in [false, true] {
            let events = Arc::new(
                EventsManager::builder()
                    .instance_id(9)
                    .block_size(4)
                    .epoch(1)
                    .broadcast_capacity(1 << 20)
                    .build(),
            );
            let mut receiver = events.subscribe();
            let manager = Arc::new(
                BlockManager::<Gpu>::builder()
                    .block_count(BLOCKS)
                    .block_size(4)
                    .pool_shards(shards)
                    .with_default_reset_on_release(evict_on_release)
                    .event_manager(Arc::clone(&events))
                    .build()
                    .unwrap(),
            );
            let start = Arc::new(Barrier::new(THREADS));
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (manager, start, events) = (manager.clone(), start.clone(), events.clone());
                    thread::spawn(move || {
                        let mut rng = Rng(0xC0FFEE + t as u64);
                        let mut seen = HashSet::new();
                        let mut running = Vec::new();
                        start.wait();
                        for request in 0..REQUESTS {
                            let chain = chain(&mut rng, t, request);
                            seen.extend(chain.iter().copied());
                            let mut held = manager.match_blocks(&chain);
                            let misses = &chain[held.len()..];
                            if let Some(fresh) = manager.allocate_blocks(misses.len()) {
                                let staged = fresh
                                    .into_iter()
                                    .zip(misses)
                                    .map(|(b, h)| b.stage(*h, 4).unwrap())
                                    .collect();
                                held.extend(manager.register_blocks(staged));
                            }
                            running.push(held);
                            if running.len() > 2 {
                                running.remove(0);
                            }
                            if request % 97 == 0 {
                                // A consumer flushing while the threads work.
                                events.flush_all();
                            }
                        }
                        seen
                    })
                })
                .collect();
            let mut universe = HashSet::new();
            for worker in workers {
                universe.extend(worker.join().unwrap());
            }
            events.flush_all();
            let mut replayed = RegisteredSet::new();
            while let Ok(batch) = receiver.try_recv() {
                if let Err(error) = replayed.apply(&batch) {
                    panic!("{shards} shards, evict on release {evict_on_release}: {error:?}");
                }
            }
            for hash in universe {
                assert_eq!(
                    replayed.contains(LogicalLayoutHandle::G1, hash),
                    manager.contains(hash),
                    "{shards} shards, evict on release {evict_on_release}: {hash:?}"
                );
            }
            manager.check_invariants().unwrap();
        }
    }
}
