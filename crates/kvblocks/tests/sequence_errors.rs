//! The request layer's contract on bad input and on sharing, case by case:
//! every misuse is a typed error that leaves the request and the pool as
//! they were, and a block is shareable the moment its KV is computed.

use kvblocks::{
    admit_all, ApplyError, BlockManager, BlockSequence, BlockSequenceError, DecodeOutcome,
    ExternalBlockAssignments, LogicalBlockAssignmentError, LogicalBlockAssignments, RequestError,
    RequestSequence, SchedulableSequence, ScheduleError, SequenceDelegate, SequenceEvent,
};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
struct Gpu;

fn manager(blocks: usize) -> BlockManager<Gpu> {
    BlockManager::builder()
        .block_count(blocks)
        .block_size(4)
        .build()
        .expect("manager")
}

fn seq(tokens: std::ops::Range<u32>, max_output: usize) -> SchedulableSequence<Gpu> {
    SchedulableSequence::builder()
        .tokens(tokens.collect())
        .max_output_tokens(max_output)
        .block_size(4)
        .build()
        .expect("sequence")
}

/// Prefills `s` completely with one chunk, first token `first`.
fn prefill(s: &mut SchedulableSequence<Gpu>, m: &BlockManager<Gpu>, first: u32) {
    s.admit(m, 0).expect("admit");
    let n = s.prefill_target() - s.kv_position();
    s.schedule_prefill(n, m).expect("schedule");
    s.apply_prefill(Some(first), m).expect("apply");
}

#[test]
fn a_block_filled_during_decode_is_matchable_by_the_next_request_at_once() {
    let m = manager(16);
    let mut a = seq(0..6, 8);
    prefill(&mut a, &m, 6); // tokens 0..=6, KV for 0..6
    a.schedule_decode(&m).unwrap();
    assert_eq!(a.apply_decode(7, &m).unwrap(), DecodeOutcome::Continue); // KV 0..7
    a.schedule_decode(&m).unwrap();
    // Token 7's KV is computed now: block 1 (tokens 4..8) is complete.
    assert_eq!(
        a.apply_decode(8, &m).unwrap(),
        DecodeOutcome::BlockCompleted
    );

    let mut b = seq(0..9, 4); // the same 8 tokens and one more
    assert_eq!(b.admit(&m, 0).unwrap(), 2, "both blocks of a are cached");
    assert_eq!(a.block_table()[..2], b.block_table()[..2]);
    assert_eq!(b.new_tokens_for_prefill(), 1);
}

#[test]
fn a_block_is_not_registered_before_its_last_token_has_kv() {
    let m = manager(16);
    let mut a = seq(0..7, 8);
    prefill(&mut a, &m, 7); // tokens 0..=7: block 1 full, token 7 not computed
    assert_eq!(a.assigned_blocks(), 1);
    let b = BlockSequence::new((0..8).collect(), 4, None);
    assert!(
        !m.contains(b.sequence_hashes()[1]),
        "block 1 lacks token 7's KV"
    );
}

#[test]
fn a_fully_cached_prompt_still_prefills_its_last_token() {
    let m = manager(16);
    let mut a = seq(0..8, 4);
    prefill(&mut a, &m, 8);
    a.schedule_decode(&m).unwrap();
    a.apply_decode(9, &m).unwrap();
    let mut b = seq(0..8, 4);
    assert_eq!(
        b.admit(&m, 0).unwrap(),
        1,
        "block 1 holds the last prompt token"
    );
    assert_eq!(b.prefill_target() - b.kv_position(), 4);
}

#[test]
fn salts_keep_equal_tokens_apart() {
    let m = manager(16);
    let mut plain = seq(0..9, 4);
    prefill(&mut plain, &m, 9);
    let mut salted = SchedulableSequence::<Gpu>::builder()
        .tokens((0..9).collect())
        .max_output_tokens(4)
        .block_size(4)
        .salt_hash(42)
        .build()
        .unwrap();
    assert_eq!(
        salted.admit(&m, 0).unwrap(),
        0,
        "another adapter shares nothing"
    );
}

#[test]
fn a_prompt_longer_than_the_pool_is_refused_for_good() {
    let m = manager(4);
    let mut s = seq(0..17, 1); // 5 blocks
    assert!(!s.can_admit(&m, 0));
    let err = s.admit(&m, 0).unwrap_err();
    assert!(matches!(
        err,
        ScheduleError::Request(RequestError::ExceedsPool {
            needed: 5,
            total: 4
        })
    ));
    assert_eq!(s.held_blocks(), 0);
    assert_eq!(m.available_blocks(), 4);
}

#[test]
fn tokens_after_the_last_are_refused() {
    let m = manager(8);
    let mut s = seq(0..3, 1);
    prefill(&mut s, &m, 3);
    assert!(s.is_complete());
    let err = s.schedule_decode(&m).unwrap_err();
    assert!(matches!(err, ScheduleError::GenerationComplete { .. }));
    let err = s.append_tokens(&[1]).unwrap_err();
    assert!(matches!(err, ApplyError::AppendExceedsRemaining { .. }));
    let mut r = RequestSequence::<Gpu>::new(vec![1, 2], 0, 4);
    assert!(matches!(
        r.append_token(3),
        Err(RequestError::GenerationComplete { .. })
    ));
    assert_eq!(r.total_tokens(), 2);
}

#[test]
fn apply_without_schedule_and_apply_twice_are_refused() {
    let m = manager(8);
    let mut s = seq(0..5, 4);
    s.admit(&m, 0).unwrap();
    assert!(matches!(
        s.apply_prefill(None, &m),
        Err(ApplyError::WrongState { .. })
    ));
    s.schedule_prefill(5, &m).unwrap();
    assert!(matches!(
        s.schedule_decode(&m),
        Err(ScheduleError::NotIdle { .. })
    ));
    s.apply_prefill(Some(9), &m).unwrap();
    let table = s.block_table().to_vec();
    assert!(matches!(
        s.apply_prefill(Some(9), &m),
        Err(ApplyError::WrongState { .. })
    ));
    assert_eq!(s.block_table(), table);
    assert_eq!(s.total_tokens(), 6);
}

#[test]
fn rolling_back_more_than_was_generated_changes_nothing() {
    let m = manager(8);
    let mut s = seq(0..5, 4);
    prefill(&mut s, &m, 9);
    let before = (
        s.block_table().to_vec(),
        s.total_tokens(),
        m.available_blocks(),
    );
    assert!(matches!(
        s.rollback(2),
        Err(ApplyError::RollbackBeyondGenerated {
            requested: 2,
            generated: 1
        })
    ));
    assert_eq!(
        (
            s.block_table().to_vec(),
            s.total_tokens(),
            m.available_blocks()
        ),
        before
    );
}

#[test]
fn a_rollback_into_a_registered_block_recomputes_it_in_a_fresh_slot() {
    let m = manager(8);
    let mut s = seq(0..3, 8);
    prefill(&mut s, &m, 3);
    for t in 4..7 {
        s.schedule_decode(&m).unwrap();
        s.apply_decode(t, &m).unwrap();
    }
    // Tokens 0,1,2,3,4,5,6; KV for 0..6; block 0 registered.
    assert_eq!(s.assigned_blocks(), 1);
    // Tokens 0,1,2 remain: block 0 is no longer full, and its registered
    // slot cannot take new tokens, so its tokens are recomputed elsewhere.
    s.rollback(4).unwrap();
    assert_eq!((s.total_tokens(), s.kv_position()), (3, 0));
    assert_eq!((s.assigned_blocks(), s.held_blocks()), (0, 0));
    let hashes = BlockSequence::new((0..4).collect(), 4, None);
    assert!(
        m.contains(hashes.sequence_hashes()[0]),
        "still cached for others"
    );
    // Not decodable: the first output token must be produced again.
    s.schedule_prefill(3, &m).unwrap();
    s.apply_prefill(Some(3), &m).unwrap();
    assert_eq!(s.tail_tokens(), 1);
}

#[test]
fn a_speculative_step_keeps_accepted_drafts_and_releases_rejected_slots() {
    let m = manager(8);
    let mut s = seq(0..3, 16);
    prefill(&mut s, &m, 3); // tokens 0..=3, KV 0..3
    s.schedule_speculative(6, &m).unwrap(); // dangling + 6 drafts: tokens 3..10
    assert_eq!(s.held_blocks(), 3);
    // Two drafts accepted, then the model's own token.
    let outcome = s.apply_speculative(&[4, 5, 60], &m).unwrap();
    assert_eq!(outcome, DecodeOutcome::BlockCompleted);
    assert_eq!((s.kv_position(), s.total_tokens()), (6, 7));
    assert_eq!(s.held_blocks(), 2, "the third look-ahead slot went back");
    assert_eq!(m.available_blocks(), 6);
}

#[test]
fn revert_returns_exactly_the_scheduled_slots() {
    let m = manager(8);
    let mut s = seq(0..4, 8);
    prefill(&mut s, &m, 4); // 4 computed: the dangling token starts block 1
    let held = s.held_blocks();
    s.schedule_decode(&m).unwrap();
    assert_eq!(s.held_blocks(), held + 1);
    s.revert_schedule().unwrap();
    assert_eq!(s.held_blocks(), held);
    assert!(matches!(
        s.revert_schedule(),
        Err(ApplyError::WrongState { .. })
    ));
}

#[test]
fn a_batch_that_does_not_fit_changes_nothing() {
    let m = manager(6);
    let mut warm = seq(0..9, 1);
    prefill(&mut warm, &m, 9);
    warm.release().unwrap(); // blocks 0 and 1 cached, inactive
    let (mut a, mut b) = (seq(0..9, 4), seq(50..70, 4));
    let err = admit_all(&m, &mut [&mut a, &mut b], 0).unwrap_err();
    assert!(matches!(
        err,
        kvblocks::AdmitError::InsufficientBlocks { .. }
    ));
    assert_eq!((a.held_blocks(), b.held_blocks()), (0, 0));
    assert_eq!(m.available_blocks(), 6);
    let hashes = BlockSequence::new((0..9).collect(), 4, None);
    assert!(m.contains(hashes.sequence_hashes()[1]), "nothing evicted");
    assert_eq!(admit_all(&m, &mut [&mut a], 0).unwrap(), 2);
}

#[test]
fn a_request_refuses_another_managers_blocks() {
    let (m1, m2) = (manager(8), manager(8));
    let mut s = seq(0..5, 4);
    s.admit(&m1, 0).unwrap();
    s.schedule_prefill(5, &m1).unwrap();
    let err = s.apply_prefill(Some(1), &m2).unwrap_err();
    assert!(matches!(
        err,
        ApplyError::Request(RequestError::WrongManager { .. })
    ));
    s.apply_prefill(Some(1), &m1).unwrap();
}

#[test]
fn assignments_refuse_a_key_at_the_wrong_position() {
    let seq = BlockSequence::new((0..12).collect(), 4, None);
    let mut table = ExternalBlockAssignments::new(1);
    table.extend_block_ids([7, 8]).unwrap();
    let hashes = seq.sequence_hashes();
    let err = table.extend_assigned([(3, hashes[0])]).unwrap_err();
    assert!(matches!(
        err,
        BlockSequenceError::PositionMismatch {
            expected: 1,
            actual: 0,
            ..
        }
    ));
    assert_eq!(table.assign_pending(seq.blocks()).unwrap(), 0..2);
    assert!(matches!(
        table.extend_block_ids([7, 9, 8]),
        Err(BlockSequenceError::OrderingViolation { .. })
    ));
    assert!(matches!(
        table.extend_block_ids([9, 9]),
        Err(BlockSequenceError::DuplicateBlockId { block_id: 9 })
    ));
    assert_eq!(table.unassigned_count(), 0);

    let m = manager(8);
    let mut blocks = LogicalBlockAssignments::<Gpu>::new();
    blocks.extend_blocks(m.allocate_blocks(2).unwrap());
    let err = blocks.stage(&seq.blocks()[1..]).unwrap_err();
    assert!(matches!(
        err,
        LogicalBlockAssignmentError::TokenPositionMismatch {
            expected: 0,
            actual: 1
        }
    ));
    assert_eq!(blocks.unassigned_count(), 2);
    let wrong_size = BlockSequence::new((0..8).collect(), 8, None);
    assert!(blocks.stage(wrong_size.blocks()).is_err());
    assert_eq!(blocks.stage(seq.blocks()).unwrap(), 2);
}

#[derive(Default)]
struct Recorder(Mutex<Vec<SequenceEvent>>);

impl SequenceDelegate for Recorder {
    fn on_event(&self, event: &SequenceEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[test]
fn the_delegate_sees_every_transition() {
    let m = manager(8);
    let recorder = Arc::new(Recorder::default());
    let mut s = SchedulableSequence::<Gpu>::builder()
        .tokens(vec![1, 2, 3])
        .max_output_tokens(2)
        .block_size(4)
        .delegate(recorder.clone())
        .build()
        .unwrap();
    prefill(&mut s, &m, 4);
    s.schedule_decode(&m).unwrap();
    s.apply_decode(5, &m).unwrap();
    s.release().unwrap();
    let events = recorder.0.lock().unwrap().clone();
    let names: Vec<&str> = events
        .iter()
        .map(|e| match e {
            SequenceEvent::Created { .. } => "created",
            SequenceEvent::Admitted { .. } => "admitted",
            SequenceEvent::PrefillScheduled { .. } => "prefill-scheduled",
            SequenceEvent::PrefillApplied { .. } => "prefill-applied",
            SequenceEvent::DecodeScheduled { .. } => "decode-scheduled",
            SequenceEvent::DecodeApplied {
                block_completed: true,
                ..
            } => "decode-applied+block",
            SequenceEvent::Released => "released",
            _ => "other",
        })
        .collect();
    assert_eq!(
        names,
        [
            "created",
            "admitted",
            "prefill-scheduled",
            "prefill-applied",
            "decode-scheduled",
            "decode-applied+block",
            "released"
        ]
    );
}
