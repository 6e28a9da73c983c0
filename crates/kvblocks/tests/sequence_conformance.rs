//! Conformance of the request layer's keys: a `BlockSequence` built, extended
//! and appended to names every full block with exactly the key
//! `dynamo-tokens` 1.6.1 gives it (salt included), so kvbm-logical, a Dynamo
//! router and kvblocks agree on every prefix.

use dynamo_tokens as dynamo;
use kvblocks::BlockSequence;
use proptest::prelude::*;

fn dynamo_keys(seq: &dynamo::TokenBlockSequence) -> Vec<u128> {
    seq.blocks()
        .iter()
        .map(|b| b.positional_lineage_hash().as_u128())
        .collect()
}

fn our_keys(seq: &BlockSequence) -> Vec<u128> {
    seq.sequence_hashes().iter().map(|h| h.as_u128()).collect()
}

proptest! {
    #[test]
    fn keys_equal_dynamo_through_new_extend_and_append(
        prompt in prop::collection::vec(any::<u32>(), 0..200),
        more in prop::collection::vec(any::<u32>(), 0..60),
        appended in prop::collection::vec(any::<u32>(), 0..40),
        block_size in 1u32..33,
        salt in prop::option::of(any::<u64>()),
    ) {
        let mut ours = BlockSequence::try_new(&prompt, block_size, salt).unwrap();
        let mut theirs = dynamo::TokenBlockSequence::new(
            dynamo::Tokens::from(prompt.clone()), block_size, salt);
        prop_assert_eq!(our_keys(&ours), dynamo_keys(&theirs));
        let a = ours.extend_tokens(more.clone()).unwrap();
        let b = theirs.extend(dynamo::Tokens::from(more)).unwrap();
        prop_assert_eq!(a, b);
        for token in appended {
            prop_assert_eq!(ours.append_token(token).unwrap(), theirs.append(token).unwrap());
        }
        prop_assert_eq!(our_keys(&ours), dynamo_keys(&theirs));
        prop_assert_eq!(ours.all_sequence_hashes().len(), theirs.blocks().len());
        prop_assert_eq!(ours.total_tokens(), theirs.total_tokens());
    }
}
