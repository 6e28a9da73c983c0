//! Unit tests of `tokens.rs`: behaviour of sequences and blocks.
use super::super::compute_next_sequence_hash;
use super::*;

fn tokens(n: u32) -> Vec<Token> {
    (0..n).map(|t| t.wrapping_mul(2_654_435_761)).collect()
}

#[test]
fn from_slice_splits_full_blocks_and_keeps_tail() {
    let seq = TokenBlockSequence::from_slice(&tokens(10), 4, None);
    assert_eq!(seq.blocks().len(), 2);
    assert_eq!(seq.blocks()[1].tokens(), &tokens(10)[4..8]);
    assert_eq!(seq.current_block().tokens(), &tokens(10)[8..]);
    assert_eq!(seq.current_block().remaining(), 2);
    assert_eq!(seq.total_tokens(), 10);
    let keys = seq.sequence_hashes();
    let (blocks, tail) = seq.into_parts();
    assert_eq!(blocks[1].positional_lineage_hash(), keys[1]);
    assert_eq!((blocks[1].block_size(), tail.len()), (4, 2));
}

#[test]
fn extend_completes_blocks_and_keeps_tail() {
    let all = tokens(23);
    let mut seq = TokenBlockSequence::from_slice(&all[..3], 4, Some(9));
    assert_eq!(seq.extend(&all[3..5]).unwrap(), Some(0..1));
    assert_eq!(seq.extend(&all[5..6]).unwrap(), None);
    assert_eq!(seq.extend(&all[6..23]).unwrap(), Some(1..5));
    assert_eq!(seq.extend(&[]).unwrap(), None);
    assert_eq!(seq, TokenBlockSequence::from_slice(&all, 4, Some(9)));
    assert_eq!(seq.current_block().tokens(), &all[20..]);
}

#[test]
fn append_reports_the_block_it_completes() {
    let mut seq = TokenBlockSequence::from_slice(&[], 3, None);
    let filled: Vec<_> = tokens(7)
        .into_iter()
        .map(|t| seq.push_token(t).unwrap())
        .collect();
    assert_eq!(
        filled,
        [None, None, Some(0), None, None, Some(1), None].to_vec()
    );
    assert_eq!(seq, TokenBlockSequence::new(tokens(7), 3, None));
}

#[test]
fn each_block_chains_to_its_parent() {
    let seq = TokenBlockSequence::from_slice(&tokens(12), 4, Some(3));
    let blocks = seq.blocks();
    assert_eq!(blocks[0].parent_sequence_hash(), None);
    assert_eq!(blocks[0].sequence_hash(), blocks[0].block_hash());
    assert_eq!(blocks[0].block_hash(), compute_block_hash(&tokens(4), 3));
    for pair in blocks.windows(2) {
        let (parent, child) = (&pair[0], &pair[1]);
        assert_eq!(child.position(), parent.position() + 1);
        assert_eq!(child.parent_sequence_hash(), Some(parent.sequence_hash()));
        assert_eq!(
            child.sequence_hash(),
            compute_next_sequence_hash(parent.sequence_hash(), child.block_hash())
        );
        assert_eq!(
            child.positional_lineage_hash(),
            parent.positional_lineage_hash().extend(child.block_hash())
        );
    }
}

#[test]
fn missing_salt_is_salt_zero_and_a_salt_separates_equal_tokens() {
    let unsalted = TokenBlockSequence::from_slice(&tokens(8), 4, None);
    let zero = TokenBlockSequence::from_slice(&tokens(8), 4, Some(0));
    let salted = TokenBlockSequence::from_slice(&tokens(8), 4, Some(1));
    assert_eq!(unsalted.sequence_hashes(), zero.sequence_hashes());
    assert_ne!(unsalted.sequence_hashes()[0], salted.sequence_hashes()[0]);
    assert_eq!(salted.salt_hash(), 1);
    assert_eq!(salted.blocks()[1].salt_hash(), 1);
}

#[test]
fn shared_prefix_shares_keys_until_the_first_different_block() {
    let mut other = tokens(16);
    other[9] ^= 1;
    let a = TokenBlockSequence::from_slice(&tokens(16), 4, None).sequence_hashes();
    let b = TokenBlockSequence::from_slice(&other, 4, None).sequence_hashes();
    assert_eq!(a[..2], b[..2]);
    assert_ne!(a[2], b[2]);
    assert_ne!(a[3], b[3], "a difference poisons every later block");
}

#[test]
fn truncate_inside_a_full_block_reopens_it_as_tail() {
    let mut seq = TokenBlockSequence::from_slice(&tokens(14), 4, None);
    seq.truncate(6);
    assert_eq!(seq, TokenBlockSequence::from_slice(&tokens(6), 4, None));
    seq.truncate(4);
    assert_eq!(seq.blocks().len(), 1);
    assert!(seq.current_block().is_empty());
    seq.truncate(0);
    assert_eq!(seq.total_tokens(), 0);
    assert!(seq.blocks().is_empty());
}

#[test]
fn truncate_past_the_end_changes_nothing() {
    let mut seq = TokenBlockSequence::from_slice(&tokens(9), 4, None);
    let before = seq.clone();
    seq.truncate(9);
    seq.truncate(100);
    assert_eq!(seq, before);
}

#[test]
fn unwind_past_the_start_is_an_error_and_changes_nothing() {
    let mut seq = TokenBlockSequence::from_slice(&tokens(9), 4, None);
    let before = seq.clone();
    assert_eq!(
        seq.unwind(10),
        Err(TokenError::UnwindBeyondLength {
            requested: 10,
            len: 9
        })
    );
    assert_eq!(seq, before);
    seq.unwind(3).unwrap();
    assert_eq!(seq, TokenBlockSequence::from_slice(&tokens(6), 4, None));
    seq.unwind(6).unwrap();
    assert_eq!(seq.total_tokens(), 0);
}

#[test]
fn pop_walks_back_across_block_boundaries() {
    let all = tokens(9);
    let mut seq = TokenBlockSequence::from_slice(&all, 4, None);
    for len in (0..9).rev() {
        assert_eq!(seq.pop(), Some(all[len]));
        assert_eq!(seq, TokenBlockSequence::from_slice(&all[..len], 4, None));
    }
    assert_eq!(seq.pop(), None);
}

#[test]
fn reset_empties_but_keeps_size_and_salt() {
    let mut seq = TokenBlockSequence::from_slice(&tokens(9), 4, Some(5));
    seq.reset();
    assert_eq!(seq, TokenBlockSequence::from_slice(&[], 4, Some(5)));
}

#[test]
fn zero_block_size_is_an_error() {
    assert_eq!(
        TokenBlockSequence::try_from_slice(&[1], 0, None),
        Err(TokenError::ZeroBlockSize)
    );
}

#[test]
#[should_panic(expected = "block size")]
fn from_slice_panics_on_zero_block_size() {
    let _ = TokenBlockSequence::from_slice(&[1], 0, None);
}

/// A sequence whose last full block sits at `position` (only that one
/// block is kept; the invariants the code relies on still hold).
fn sequence_ending_at(position: u64, block_size: u32) -> TokenBlockSequence {
    let size = block_size as usize;
    let block = TokenBlock {
        tokens: vec![0; size].into(),
        salt_hash: 0,
        block_hash: 0,
        parent_sequence_hash: 1,
        lineage: SequenceHash::new(2, Some(1), position),
    };
    TokenBlockSequence {
        blocks: vec![block],
        current: PartialTokenBlock::empty(size),
        salt_hash: 0,
    }
}

#[test]
fn filling_a_block_past_the_last_position_is_rejected_without_change() {
    let mut seq = sequence_ending_at(MAX_POSITION - 3, 2);
    assert_eq!(seq.extend(&[1, 2, 3]).unwrap(), Some(1..2));
    let before = seq.clone();
    let overflow = Err(TokenError::PositionOverflow {
        position: MAX_POSITION,
    });
    assert_eq!(seq.extend(&[4, 5, 6]), overflow.map(|()| None));
    assert_eq!(seq, before);
    assert_eq!(seq.append(4).unwrap(), Some(2));
    assert_eq!(
        seq.last_complete_block().unwrap().position(),
        MAX_POSITION - 1
    );
    assert_eq!(seq.append(5).unwrap(), None);
    let before = seq.clone();
    assert_eq!(seq.append(6), overflow.map(|()| None));
    assert_eq!(seq, before);
    // Room comes back once the last block is dropped.
    seq.unwind(2).unwrap();
    assert_eq!(seq.extend(&[7, 8]).unwrap(), Some(2..3));
}

#[test]
fn a_huge_block_size_reserves_nothing_up_front() {
    let seq = TokenBlockSequence::from_slice(&[1, 2], u32::MAX, None);
    assert_eq!(seq.current_block().remaining(), u32::MAX as usize - 2);
}

#[test]
fn a_token_block_fits_one_cache_line() {
    assert!(std::mem::size_of::<TokenBlock>() <= 64);
}
