//! Property test of the request layer: random interleavings of many requests
//! (admit, chunked prefill, decode, speculate, roll back, revert, preempt,
//! resume, finish, and misuse) against a plain model.
//!
//! The model keeps each request's tokens, computed position and the number
//! of blocks it should hold. After every step it checks: the request agrees
//! with the model (tokens, computed position, block count); the block table
//! covers the computed tokens, its first `kv / block_size` entries are
//! registered blocks carrying exactly the keys of those token blocks (salt
//! included) and matchable at once; no writable slot is shared; under the
//! `Reject` duplication policy equal keys share one slot and the pool's free
//! count is exactly what the requests do not hold; every core invariant of
//! the manager holds. Misuse must return a typed error and change nothing.
//! Dropping every request, in whatever state, gives every block back.

use std::collections::{HashMap, HashSet};

use kvblocks::{
    ApplyError, BlockDuplicationPolicy, BlockManager, BlockSequence, SchedulableSequence,
    ScheduleError, SequenceState,
};
use proptest::prelude::*;

#[derive(Clone)]
struct Tier;

const BS: usize = 4;
const SLOTS: usize = 5;

/// Shared prompt heads, so requests share cached prefixes.
fn heads() -> [Vec<u32>; 3] {
    [
        (0..9).collect(),
        (100..106).collect(),
        (0..4).chain(200..207).collect(),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    New {
        slot: usize,
        head: usize,
        extra: Vec<u32>,
        max_output: usize,
        salt: u64,
    },
    Admit {
        slot: usize,
        lookahead: usize,
    },
    Prefill {
        slot: usize,
        chunk: usize,
        token: u32,
        revert: bool,
    },
    Decode {
        slot: usize,
        token: u32,
        revert: bool,
    },
    Speculate {
        slot: usize,
        drafts: usize,
        accepted: Vec<u32>,
    },
    Rollback {
        slot: usize,
        count: usize,
    },
    Preempt {
        slot: usize,
        batched: bool,
    },
    Resume {
        slot: usize,
    },
    Finish {
        slot: usize,
        /// Drop it with a step scheduled (not applied) if one can be.
        scheduled: bool,
    },
    Misuse {
        slot: usize,
        kind: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        2 => (slot.clone(), 0..3usize, prop::collection::vec(0..3u32, 0..10), 0..10usize, 0..2u64)
            .prop_map(|(slot, head, extra, max_output, salt)| Op::New { slot, head, extra, max_output, salt }),
        3 => (slot.clone(), 0..6usize).prop_map(|(slot, lookahead)| Op::Admit { slot, lookahead }),
        4 => (slot.clone(), 1..12usize, 0..3u32, any::<bool>())
            .prop_map(|(slot, chunk, token, r)| Op::Prefill { slot, chunk, token, revert: r && chunk % 3 == 0 }),
        6 => (slot.clone(), 0..3u32, 0..8u8)
            .prop_map(|(slot, token, r)| Op::Decode { slot, token, revert: r == 0 }),
        2 => (slot.clone(), 0..5usize, prop::collection::vec(0..3u32, 0..7))
            .prop_map(|(slot, drafts, accepted)| Op::Speculate { slot, drafts, accepted }),
        1 => (slot.clone(), 0..6usize).prop_map(|(slot, count)| Op::Rollback { slot, count }),
        1 => (slot.clone(), any::<bool>()).prop_map(|(slot, batched)| Op::Preempt { slot, batched }),
        1 => slot.clone().prop_map(|slot| Op::Resume { slot }),
        1 => (slot.clone(), any::<bool>()).prop_map(|(slot, scheduled)| Op::Finish { slot, scheduled }),
        1 => (slot, 0..6u8).prop_map(|(slot, kind)| Op::Misuse { slot, kind }),
    ]
}

/// What a request should be.
#[derive(Debug, Clone)]
struct Model {
    tokens: Vec<u32>,
    num_input: usize,
    max_output: usize,
    salt: u64,
    kv: usize,
    held: usize,
}

impl Model {
    fn generated(&self) -> usize {
        self.tokens.len() - self.num_input
    }
    fn target(&self) -> usize {
        if self.generated() == 0 {
            self.num_input
        } else {
            self.tokens.len() - 1
        }
    }
    fn decodable(&self) -> bool {
        self.kv >= self.target()
            && self.generated() < self.max_output
            && self.tokens.len() - self.kv == 1
    }
    fn remaining(&self) -> usize {
        self.max_output - self.generated()
    }
}

struct Request {
    seq: SchedulableSequence<Tier>,
    model: Model,
}

/// What a failed call must leave unchanged.
#[derive(Debug, PartialEq)]
struct Snapshot {
    table: Vec<u32>,
    kv: usize,
    total: usize,
    state: SequenceState,
    available: usize,
}

fn snapshot(r: &Request, manager: &BlockManager<Tier>) -> Snapshot {
    Snapshot {
        table: r.seq.block_table().to_vec(),
        kv: r.seq.kv_position(),
        total: r.seq.total_tokens(),
        state: r.seq.state(),
        available: manager.available_blocks(),
    }
}

fn check_request(r: &Request, manager: &BlockManager<Tier>) -> Result<(), TestCaseError> {
    let (seq, m) = (&r.seq, &r.model);
    prop_assert_eq!(seq.state(), SequenceState::Idle);
    prop_assert_eq!(seq.total_tokens(), m.tokens.len());
    prop_assert_eq!(seq.kv_position(), m.kv);
    prop_assert_eq!(seq.held_blocks(), m.held, "held blocks");
    let table = seq.block_table();
    prop_assert_eq!(table.len(), m.held);
    prop_assert!(m.held >= m.kv.div_ceil(BS), "computed tokens not covered");
    prop_assert_eq!(
        seq.assigned_blocks(),
        m.kv / BS,
        "registered = computed full blocks"
    );
    prop_assert_eq!(seq.staged_blocks(), 0);
    let expected = BlockSequence::new(m.tokens.clone(), BS as u32, Some(m.salt));
    let assignments = seq.inner().assignments();
    let registered = table.iter().zip(expected.sequence_hashes()).enumerate();
    for (i, (&entry, &hash)) in registered.take(m.kv / BS) {
        let (&id, block) = assignments.get_assigned(i).expect("assigned");
        prop_assert_eq!(block.sequence_hash(), hash);
        prop_assert_eq!(id, block.block_id());
        prop_assert_eq!(entry as usize, id);
        prop_assert!(
            manager.contains(block.sequence_hash()),
            "registered block matchable"
        );
    }
    Ok(())
}

fn check_all(
    requests: &[Option<Request>],
    manager: &BlockManager<Tier>,
    reject: bool,
) -> Result<(), TestCaseError> {
    if let Err(err) = manager.check_invariants() {
        return Err(TestCaseError::fail(err));
    }
    let mut slot_of_hash = HashMap::new();
    let mut hash_of_slot = HashMap::new();
    let mut writable = HashSet::new();
    let mut held = HashSet::new();
    for r in requests.iter().flatten() {
        check_request(r, manager)?;
        let assignments = r.seq.inner().assignments();
        for (&id, block) in assignments.assigned_iter() {
            let hash = block.sequence_hash();
            prop_assert_eq!(
                *hash_of_slot.entry(id).or_insert(hash),
                hash,
                "one slot, one key"
            );
            if reject {
                prop_assert_eq!(
                    *slot_of_hash.entry(hash).or_insert(id),
                    id,
                    "equal keys share a slot"
                );
            }
            held.insert(id);
        }
        for (&id, _) in assignments.unassigned_iter() {
            prop_assert!(writable.insert(id), "writable slot {} shared", id);
            held.insert(id);
        }
    }
    prop_assert!(writable.iter().all(|id| !hash_of_slot.contains_key(id)));
    let total = manager.total_blocks();
    if reject {
        prop_assert_eq!(manager.available_blocks() + held.len(), total);
    } else {
        prop_assert!(manager.available_blocks() + held.len() <= total);
    }
    Ok(())
}

fn run(ops: Vec<Op>, blocks: usize, reject: bool) -> Result<(), TestCaseError> {
    let policy = if reject {
        BlockDuplicationPolicy::Reject
    } else {
        BlockDuplicationPolicy::Allow
    };
    let manager = BlockManager::<Tier>::builder()
        .block_count(blocks)
        .block_size(BS)
        .duplication_policy(policy)
        .build()
        .expect("manager");
    let mut requests: Vec<Option<Request>> = (0..SLOTS).map(|_| None).collect();
    let heads = heads();
    for op in ops {
        step(&manager, &mut requests, &heads, op)?;
        check_all(&requests, &manager, reject)?;
    }
    drop(requests);
    prop_assert_eq!(manager.available_blocks(), blocks, "a block leaked");
    if let Err(err) = manager.check_invariants() {
        return Err(TestCaseError::fail(err));
    }
    Ok(())
}

fn step(
    manager: &BlockManager<Tier>,
    requests: &mut [Option<Request>],
    heads: &[Vec<u32>; 3],
    op: Op,
) -> Result<(), TestCaseError> {
    match op {
        Op::New {
            slot,
            head,
            extra,
            max_output,
            salt,
        } => {
            let tokens: Vec<u32> = heads[head].iter().copied().chain(extra).collect();
            let seq = SchedulableSequence::builder()
                .tokens(tokens.clone())
                .max_output_tokens(max_output)
                .block_size(BS as u32)
                .salt_hash(salt)
                .build()
                .expect("valid request");
            let model = Model {
                num_input: tokens.len(),
                tokens,
                max_output,
                salt,
                kv: 0,
                held: 0,
            };
            requests[slot] = Some(Request { seq, model });
        }
        Op::Admit { slot, lookahead } => {
            let Some(r) = requests[slot].as_mut() else {
                return Ok(());
            };
            let before = snapshot(r, manager);
            let certain = r.seq.can_admit(manager, lookahead);
            prop_assert_eq!(
                &snapshot(r, manager),
                &before,
                "can_admit changed something"
            );
            match r.seq.admit(manager, lookahead) {
                Ok(matched) => {
                    prop_assert_eq!(r.model.held, 0);
                    prop_assert!(
                        matched * BS < r.model.tokens.len(),
                        "matched the last token"
                    );
                    r.model.kv = matched * BS;
                    r.model.held = (r.model.tokens.len() + lookahead).div_ceil(BS);
                }
                Err(err) => {
                    prop_assert!(!certain || r.model.held > 0, "can_admit said yes: {err}");
                    prop_assert_eq!(snapshot(r, manager), before);
                }
            }
        }
        Op::Prefill {
            slot,
            chunk,
            token,
            revert,
        } => {
            let Some(r) = requests[slot].as_mut() else {
                return Ok(());
            };
            let m = &mut r.model;
            if m.kv >= m.target() {
                let before = snapshot(r, manager);
                let err = r.seq.schedule_prefill(chunk, manager).unwrap_err();
                prop_assert!(matches!(err, ScheduleError::PrefillComplete), "{err}");
                prop_assert_eq!(snapshot(r, manager), before);
                return Ok(());
            }
            let n = chunk.min(m.target() - m.kv);
            let before = snapshot(r, manager);
            if r.seq.schedule_prefill(n, manager).is_err() {
                prop_assert_eq!(snapshot(r, manager), before);
                return Ok(());
            }
            if revert {
                r.seq.revert_schedule().expect("revert");
                prop_assert_eq!(snapshot(r, manager), before);
                return Ok(());
            }
            let m = &mut r.model;
            let is_final = m.kv + n >= m.target();
            let expects = is_final && m.generated() == 0 && m.max_output > 0;
            r.seq
                .apply_prefill(expects.then_some(token), manager)
                .expect("apply prefill");
            m.held = m.held.max((m.kv + n).div_ceil(BS));
            m.kv += n;
            if expects {
                m.tokens.push(token);
            }
        }
        Op::Decode {
            slot,
            token,
            revert,
        } => {
            let Some(r) = requests[slot].as_mut() else {
                return Ok(());
            };
            let before = snapshot(r, manager);
            let decodable = r.model.decodable();
            match r.seq.schedule_decode(manager) {
                Err(ScheduleError::AllocationFailed { .. }) if decodable => {
                    prop_assert_eq!(snapshot(r, manager), before);
                }
                Err(err) => {
                    prop_assert!(!decodable, "refused a decodable request: {err}");
                    prop_assert_eq!(snapshot(r, manager), before);
                }
                Ok(()) if revert => {
                    r.seq.revert_schedule().expect("revert");
                    prop_assert_eq!(snapshot(r, manager), before);
                }
                Ok(()) => {
                    r.seq.apply_decode(token, manager).expect("apply decode");
                    let m = &mut r.model;
                    m.held = m.held.max((m.kv + 1).div_ceil(BS));
                    m.kv += 1;
                    m.tokens.push(token);
                }
            }
        }
        Op::Speculate {
            slot,
            drafts,
            accepted,
        } => {
            let Some(r) = requests[slot].as_mut() else {
                return Ok(());
            };
            if !r.model.decodable() {
                return Ok(());
            }
            let before = snapshot(r, manager);
            if r.seq.schedule_speculative(drafts, manager).is_err() {
                prop_assert_eq!(snapshot(r, manager), before);
                return Ok(());
            }
            let m = &mut r.model;
            let k = drafts.min(m.remaining() - 1);
            let scheduled = snapshot(r, manager);
            let too_many: Vec<u32> = vec![0; k + 2];
            let err = r.seq.apply_speculative(&too_many, manager).unwrap_err();
            prop_assert!(
                matches!(err, ApplyError::AcceptedExceedsScheduled { .. }),
                "{}",
                err
            );
            prop_assert_eq!(snapshot(r, manager), scheduled);
            let take = accepted.len().min(k + 1);
            r.seq
                .apply_speculative(&accepted[..take], manager)
                .expect("apply speculative");
            let m = &mut r.model;
            m.held = m.held.max((m.kv + 1 + k).div_ceil(BS));
            m.kv += take;
            m.tokens.extend_from_slice(&accepted[..take]);
            let keep = if m.generated() >= m.max_output {
                m.kv
            } else {
                m.tokens.len()
            };
            m.held = m.held.min(keep.div_ceil(BS));
        }
        Op::Rollback { slot, count } => {
            let Some(r) = requests[slot].as_mut() else {
                return Ok(());
            };
            let before = snapshot(r, manager);
            let m = &mut r.model;
            if count > m.generated() {
                let err = r.seq.rollback(count).unwrap_err();
                prop_assert!(
                    matches!(err, ApplyError::RollbackBeyondGenerated { .. }),
                    "{}",
                    err
                );
                prop_assert_eq!(snapshot(r, manager), before);
                return Ok(());
            }
            r.seq.rollback(count).expect("rollback");
            if count > 0 {
                let registered = m.kv / BS;
                m.tokens.truncate(m.tokens.len() - count);
                let mut kv = m.kv.min(m.tokens.len() - 1);
                if kv % BS != 0 && kv / BS < registered {
                    kv = kv / BS * BS;
                }
                m.kv = kv;
                m.held = m.held.min(kv.div_ceil(BS));
            }
        }
        Op::Preempt { slot, batched } => {
            let Some(r) = requests[slot].as_mut() else {
                return Ok(());
            };
            if batched {
                r.seq.release_to(manager).expect("idle");
            } else {
                r.seq.release().expect("idle");
            }
            r.model.kv = 0;
            r.model.held = 0;
        }
        Op::Resume { slot } => {
            let Some(r) = requests[slot].as_mut() else {
                return Ok(());
            };
            let before = snapshot(r, manager);
            match r.seq.reacquire(manager) {
                Ok(true) => {
                    prop_assert_eq!(before.table.len(), 0);
                    r.model.kv = r.seq.prefix_matched_blocks() * BS;
                    r.model.held = r.model.tokens.len().div_ceil(BS);
                }
                Ok(false) | Err(_) => prop_assert_eq!(snapshot(r, manager), before),
            }
        }
        Op::Finish { slot, scheduled } => {
            if let (true, Some(r)) = (scheduled, requests[slot].as_mut()) {
                let _ = r.seq.schedule_decode(manager).is_ok()
                    || r.seq.schedule_speculative(2, manager).is_ok()
                    || r.seq.schedule_prefill(1, manager).is_ok();
            }
            requests[slot] = None;
        }
        Op::Misuse { slot, kind } => {
            let Some(r) = requests[slot].as_mut() else {
                return Ok(());
            };
            let before = snapshot(r, manager);
            let failed = match kind {
                0 => r.seq.apply_decode(1, manager).is_err(),
                1 => r.seq.apply_prefill(None, manager).is_err(),
                2 => r.seq.revert_schedule().is_err(),
                3 => r.seq.rollback(r.model.generated() + 1).is_err(),
                4 => r.seq.apply_speculative(&[1], manager).is_err(),
                _ => {
                    // A schedule applied twice: the second apply is refused.
                    if r.seq.schedule_decode(manager).is_ok() {
                        let token = 2;
                        r.seq.apply_decode(token, manager).expect("first apply");
                        let m = &mut r.model;
                        m.held = m.held.max((m.kv + 1).div_ceil(BS));
                        m.kv += 1;
                        m.tokens.push(token);
                        let after = snapshot(r, manager);
                        let twice = r.seq.apply_decode(token, manager).is_err();
                        prop_assert_eq!(snapshot(r, manager), after);
                        prop_assert!(twice);
                        return Ok(());
                    }
                    true
                }
            };
            prop_assert!(failed, "misuse {} accepted", kind);
            prop_assert_eq!(
                snapshot(r, manager),
                before,
                "misuse {} changed state",
                kind
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn interleaved_requests_match_the_model_and_release_everything(
        ops in prop::collection::vec(op(), 1..80),
        blocks in 6usize..40,
        reject in any::<bool>(),
    ) {
        run(ops, blocks, reject)?;
    }
}
