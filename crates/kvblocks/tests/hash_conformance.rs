//! Conformance: every hash this crate computes must be bit-identical to
//! `dynamo-tokens` 1.6.1, so a Dynamo router and `kvblocks` name the same
//! prefix with the same key.
//!
//! Random inputs (proptest) are fed to both implementations and every block
//! field, every edit result and every lineage-hash accessor is compared.

use std::cmp::Ordering;
use std::ops::Range;

use dynamo_tokens as dynamo;
use kvblocks::hash::{
    compute_block_hash, compute_next_sequence_hash, compute_salt_hash_from_bytes, SequenceHash,
    TokenBlockSequence, MAX_POSITION,
};
use proptest::prelude::*;
use proptest::sample::SizeRange;

fn dynamo_tokens(tokens: &[u32]) -> dynamo::Tokens {
    dynamo::Tokens::from(tokens)
}

/// Asserts that our sequence and Dynamo's hold the same tokens, blocks and hashes.
fn assert_same_sequence(ours: &TokenBlockSequence, theirs: &dynamo::TokenBlockSequence) {
    assert_eq!(ours.block_size(), theirs.block_size());
    assert_eq!(ours.salt_hash(), theirs.salt_hash());
    assert_eq!(ours.total_tokens(), theirs.total_tokens());
    assert_eq!(
        ours.blocks().len(),
        theirs.blocks().len(),
        "full block count"
    );
    for (index, (a, b)) in ours.blocks().iter().zip(theirs.blocks()).enumerate() {
        assert_eq!(a.tokens(), &b.tokens()[..], "tokens of block {index}");
        assert_eq!(a.block_size(), b.block_size(), "size of block {index}");
        assert_eq!(a.salt_hash(), b.salt_hash(), "salt of block {index}");
        assert_eq!(
            a.block_hash(),
            b.block_hash(),
            "block hash of block {index}"
        );
        assert_eq!(
            a.sequence_hash(),
            b.sequence_hash(),
            "sequence hash {index}"
        );
        assert_eq!(
            a.parent_sequence_hash(),
            b.parent_sequence_hash(),
            "parent of block {index}"
        );
        assert_eq!(a.position(), b.position(), "position of block {index}");
        assert_eq!(
            a.positional_lineage_hash().as_u128(),
            b.positional_lineage_hash().as_u128(),
            "lineage hash of block {index}"
        );
    }
    let keys: Vec<u128> = ours.sequence_hashes().iter().map(|h| h.as_u128()).collect();
    let theirs_keys: Vec<u128> = theirs
        .blocks()
        .iter()
        .map(|b| b.positional_lineage_hash().as_u128())
        .collect();
    assert_eq!(keys, theirs_keys, "sequence_hashes()");
    assert_eq!(
        ours.current_block().tokens(),
        &theirs.current_block().tokens()[..],
        "partial tail"
    );
    assert_eq!(
        ours.current_block().remaining(),
        theirs.current_block().remaining()
    );
}

/// Block sizes 1..=64 most of the time, plus the large power-of-two sizes.
fn block_size() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 1u32..=64,
        1 => Just(128u32),
        1 => Just(256u32),
        1 => Just(512u32),
    ]
}

/// Token ids: full `u32` range or a tiny vocabulary (repeated blocks).
fn token_vec(len: impl Into<SizeRange>) -> impl Strategy<Value = Vec<u32>> {
    let len = len.into();
    prop_oneof![
        prop::collection::vec(any::<u32>(), len.clone()),
        prop::collection::vec(0u32..4, len),
    ]
}

/// Positions in every lineage mode, with the mode edges over-weighted.
fn position() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..256,
        256u64..65_536,
        65_536u64..MAX_POSITION,
        prop::sample::select(vec![0, 1, 255, 256, 65_535, 65_536, MAX_POSITION - 1]),
    ]
}

fn lineage_pair(
    current: u64,
    parent: Option<u64>,
    position: u64,
) -> (SequenceHash, dynamo::PositionalLineageHash) {
    (
        SequenceHash::new(current, parent, position),
        dynamo::PositionalLineageHash::new(current, parent, position),
    )
}

#[derive(Debug, Clone)]
enum Edit {
    Append(u32),
    Extend(Vec<u32>),
    Truncate(usize),
    Unwind(usize),
    Pop,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => any::<u32>().prop_map(Edit::Append),
        3 => token_vec(0..120).prop_map(Edit::Extend),
        1 => (0usize..400).prop_map(Edit::Truncate),
        1 => (0usize..80).prop_map(Edit::Unwind),
        1 => Just(Edit::Pop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn from_slice_blocks_equal_dynamo_blocks(
        tokens in token_vec(0..2000),
        block_size in block_size(),
        salt in prop::option::of(any::<u64>()),
    ) {
        let ours = TokenBlockSequence::from_slice(&tokens, block_size, salt);
        let theirs = dynamo::TokenBlockSequence::from_slice(&tokens, block_size, salt);
        assert_same_sequence(&ours, &theirs);
        let owned = TokenBlockSequence::new(tokens.clone(), block_size, salt);
        prop_assert_eq!(&owned, &ours);
        let theirs_owned =
            dynamo::TokenBlockSequence::new(dynamo_tokens(&tokens), block_size, salt);
        assert_same_sequence(&ours, &theirs_owned);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn chunked_extend_and_appends_equal_from_slice_and_dynamo(
        tokens in token_vec(0..1200),
        block_size in block_size(),
        salt in prop::option::of(any::<u64>()),
        chunk_lens in prop::collection::vec(0usize..300, 1..20),
    ) {
        let whole = TokenBlockSequence::from_slice(&tokens, block_size, salt);

        // extend in chunks, with the same chunks on Dynamo's side
        let mut ours = TokenBlockSequence::from_slice(&[], block_size, salt);
        let mut theirs = dynamo::TokenBlockSequence::from_slice(&[], block_size, salt);
        let mut rest = &tokens[..];
        for len in chunk_lens.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            // A zero-length chunk is a valid (empty) extend, but a cycle of
            // only empty chunks would never finish the tokens.
            let (chunk, tail) = rest.split_at((*len).max(1).min(rest.len()));
            rest = tail;
            let filled: Option<Range<usize>> = ours.extend(chunk).unwrap();
            let theirs_filled = theirs.extend(dynamo_tokens(chunk)).unwrap();
            prop_assert_eq!(filled, theirs_filled);
        }
        prop_assert_eq!(&ours, &whole);
        assert_same_sequence(&ours, &theirs);

        // one token at a time
        let mut ours = TokenBlockSequence::from_slice(&[], block_size, salt);
        let mut theirs = dynamo::TokenBlockSequence::from_slice(&[], block_size, salt);
        for &token in &tokens {
            prop_assert_eq!(ours.append(token).unwrap(), theirs.append(token).unwrap());
        }
        prop_assert_eq!(&ours, &whole);
        assert_same_sequence(&ours, &theirs);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_edits_keep_sequences_equal_to_dynamo(
        start in token_vec(0..200),
        block_size in prop_oneof![1u32..=16, Just(64u32)],
        salt in prop::option::of(any::<u64>()),
        edits in prop::collection::vec(edit(), 0..40),
    ) {
        let mut ours = TokenBlockSequence::from_slice(&start, block_size, salt);
        let mut theirs = dynamo::TokenBlockSequence::from_slice(&start, block_size, salt);
        for edit in edits {
            match edit {
                Edit::Append(token) => {
                    let filled = ours.push_token(token).unwrap();
                    prop_assert_eq!(filled, theirs.push_token(token).unwrap());
                }
                Edit::Extend(tokens) => {
                    prop_assert_eq!(
                        ours.extend(&tokens).unwrap(),
                        theirs.extend(dynamo_tokens(&tokens)).unwrap()
                    );
                }
                Edit::Truncate(len) => {
                    ours.truncate(len);
                    theirs.truncate(len).unwrap();
                }
                Edit::Unwind(count) => {
                    prop_assert_eq!(ours.unwind(count).is_ok(), theirs.unwind(count).is_ok());
                }
                Edit::Pop => prop_assert_eq!(ours.pop(), theirs.pop()),
            }
            assert_same_sequence(&ours, &theirs);
            // The edited sequence also equals one built from scratch.
            let mut all: Vec<u32> =
                ours.blocks().iter().flat_map(|b| b.tokens().to_vec()).collect();
            all.extend_from_slice(ours.current_block().tokens());
            prop_assert_eq!(&ours, &TokenBlockSequence::from_slice(&all, block_size, salt));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn lineage_hash_parts_equal_dynamo_in_every_mode(
        current in any::<u64>(),
        parent in prop::option::of(any::<u64>()),
        position in position(),
        child_position in prop_oneof![position(), any::<u64>()],
        child_block_hash in any::<u64>(),
    ) {
        let (ours, theirs) = lineage_pair(current, parent, position);
        prop_assert_eq!(ours.as_u128(), theirs.as_u128());
        prop_assert_eq!(ours.mode(), theirs.mode());
        prop_assert_eq!(ours.position(), theirs.position());
        prop_assert_eq!(ours.current_sequence_hash(), theirs.current_sequence_hash());
        prop_assert_eq!(ours.parent_fragment(), theirs.parent_hash_fragment());
        prop_assert_eq!(ours.parent_hash_fragment(), theirs.parent_hash_fragment());
        prop_assert_eq!(
            ours.parent_fragment_for_child_position(child_position),
            theirs.parent_fragment_for_child_position(child_position)
        );
        prop_assert_eq!(SequenceHash::try_from_u128(theirs.as_u128()), Ok(ours));
        if position + 1 < MAX_POSITION {
            let child = ours.extend(child_block_hash);
            prop_assert_eq!(child.as_u128(), theirs.extend(child_block_hash).as_u128());
            prop_assert_eq!(
                child.parent_fragment(),
                ours.parent_fragment_for_child_position(child.position())
            );
        } else {
            prop_assert!(ours.try_extend(child_block_hash).is_err());
        }
        let root = SequenceHash::root(child_block_hash);
        prop_assert_eq!(
            root.as_u128(),
            dynamo::PositionalLineageHash::root(child_block_hash).as_u128()
        );
    }

    #[test]
    fn lineage_hash_order_equals_dynamo_order(
        a in (any::<u64>(), prop::option::of(any::<u64>()), position()),
        b in (any::<u64>(), prop::option::of(any::<u64>()), position()),
        share in 0u8..3,
    ) {
        // share 1: same position; share 2: same position and sequence hash.
        let b = match share {
            0 => b,
            1 => (b.0, b.1, a.2),
            _ => (a.0, b.1, a.2),
        };
        let (ours_a, theirs_a) = lineage_pair(a.0, a.1, a.2);
        let (ours_b, theirs_b) = lineage_pair(b.0, b.1, b.2);
        let ours: Ordering = ours_a.cmp(&ours_b);
        prop_assert_eq!(ours, theirs_a.cmp(&theirs_b));
        prop_assert_eq!(ours_a == ours_b, theirs_a == theirs_b);
    }

    #[test]
    fn hash_functions_equal_dynamo(
        tokens in token_vec(0..600),
        salt in any::<u64>(),
        payload in prop::collection::vec(any::<u8>(), 0..512),
        parent in any::<u64>(),
    ) {
        prop_assert_eq!(
            compute_block_hash(&tokens, salt),
            dynamo::compute_block_hash_for_tokens(&tokens, salt)
        );
        prop_assert_eq!(
            compute_salt_hash_from_bytes(&payload),
            dynamo::compute_salt_hash_from_bytes(&payload)
        );
        prop_assert_eq!(
            compute_next_sequence_hash(parent, salt),
            dynamo::compute_next_sequence_hash(parent, salt)
        );
    }
}

#[test]
fn long_sequence_crosses_every_lineage_mode_like_dynamo() {
    // Block size 1: block positions run past 2^8 and 2^16, into mode 2.
    let tokens: Vec<u32> = (0..65_600u32)
        .map(|t| t.wrapping_mul(0x9e37_79b9))
        .collect();
    let ours = TokenBlockSequence::from_slice(&tokens, 1, Some(0xabcd));
    let theirs = dynamo::TokenBlockSequence::from_slice(&tokens, 1, Some(0xabcd));
    assert_same_sequence(&ours, &theirs);
    let modes: Vec<u8> = [0usize, 255, 256, 65_535, 65_536, 65_599]
        .iter()
        .map(|&i| ours.blocks()[i].positional_lineage_hash().mode())
        .collect();
    assert_eq!(modes, [0, 0, 1, 1, 2, 2]);
}

#[test]
fn empty_and_edge_inputs_equal_dynamo() {
    for block_size in [1u32, 2, 63, 64, 65, 512] {
        for len in [0usize, 1, 63, 64, 65, 511, 512, 513, 1024] {
            let tokens: Vec<u32> = (0..len as u32).map(|t| u32::MAX - t).collect();
            for salt in [None, Some(0), Some(u64::MAX)] {
                let ours = TokenBlockSequence::from_slice(&tokens, block_size, salt);
                let theirs = dynamo::TokenBlockSequence::from_slice(&tokens, block_size, salt);
                assert_same_sequence(&ours, &theirs);
            }
        }
    }
}

#[test]
fn missing_salt_hashes_like_salt_zero_in_dynamo() {
    let tokens: Vec<u32> = (0..40).collect();
    let ours = TokenBlockSequence::from_slice(&tokens, 8, None);
    let theirs = dynamo::TokenBlockSequence::from_slice(&tokens, 8, Some(0));
    assert_eq!(ours.salt_hash(), 0);
    assert_same_sequence(&ours, &theirs);
}
