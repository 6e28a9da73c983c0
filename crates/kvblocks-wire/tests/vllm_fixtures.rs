//! vLLM and SGLang batches as msgspec itself encodes them
//! (`tests/fixtures/make_fixtures.py` wrote the files), decoded, plus our
//! own encoder's output decoded back and converted from kvblocks batches.

use kvblocks::events::{KvCacheEvents, KvbmCacheEvents, StoredBlock, StreamPosition};
use kvblocks::{LogicalLayoutHandle, SequenceHash};
use kvblocks_wire::vllm::{
    self, tier_of_medium, BlockRemoved, BlockStored, VllmBatch, VllmEvent, VllmStyle,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn stored(hashes: &[u64], parent: Option<u64>, tokens: &[u32], size: u32) -> BlockStored {
    BlockStored {
        block_hashes: hashes.to_vec(),
        parent_block_hash: parent,
        token_ids: tokens.to_vec(),
        block_size: size,
        lora_id: None,
        medium: None,
        lora_name: None,
    }
}

#[test]
fn current_vllm_map_batches_decode_and_unknown_fields_are_skipped() {
    let batch = vllm::decode(&fixture("vllm_map.msgpack")).expect("valid fixture");
    assert_eq!(batch.ts, 1767225600.25);
    assert_eq!(batch.data_parallel_rank, Some(3));
    assert_eq!(
        batch.events,
        vec![
            VllmEvent::BlockStored(BlockStored {
                medium: Some("GPU".into()),
                ..stored(&[11, 12, u64::MAX], None, &[1, 2, 3, 4, 5, 6], 2)
            }),
            VllmEvent::BlockStored(BlockStored {
                lora_id: Some(5),
                medium: Some("CPU_PINNED".into()),
                lora_name: Some("adapter-a".into()),
                ..stored(&[13], Some(12), &[7, 8], 2)
            }),
            VllmEvent::BlockRemoved(BlockRemoved {
                block_hashes: vec![11],
                medium: Some("GPU".into()),
            }),
            VllmEvent::AllBlocksCleared { medium: None },
        ]
    );
}

#[test]
fn byte_string_hashes_become_their_low_64_bits() {
    let batch = vllm::decode(&fixture("vllm_map_bytes_hashes.msgpack")).expect("valid fixture");
    let expected = 0x1122_3344_5566_7788;
    assert_eq!(
        batch.events,
        vec![
            VllmEvent::BlockStored(stored(&[expected], Some(expected), &[9], 1)),
            VllmEvent::BlockRemoved(BlockRemoved {
                block_hashes: vec![expected],
                medium: None,
            }),
        ]
    );
    assert_eq!(batch.data_parallel_rank, None);
}

#[test]
fn older_array_like_batches_decode_with_signed_hashes() {
    let batch = vllm::decode(&fixture("vllm_array.msgpack")).expect("valid fixture");
    assert_eq!(batch.ts, 1767225600.25);
    assert_eq!(batch.data_parallel_rank, None);
    assert_eq!(batch.events.len(), 4);
    assert_eq!(
        batch.events[1],
        VllmEvent::BlockStored(BlockStored {
            lora_id: Some(5),
            medium: Some("DISK".into()),
            lora_name: Some("adapter-a".into()),
            ..stored(&[(-5i64) as u64], Some(12), &[7, 8], 2)
        })
    );
    assert_eq!(
        batch.events[3],
        VllmEvent::AllBlocksCleared { medium: None }
    );
}

#[test]
fn an_array_batch_may_carry_map_events() {
    let batch =
        vllm::decode(&fixture("vllm_array_outer_map_events.msgpack")).expect("valid fixture");
    assert_eq!(batch.data_parallel_rank, Some(1));
    assert_eq!(
        batch.events[0],
        VllmEvent::BlockStored(BlockStored {
            medium: Some("GPU".into()),
            ..stored(&[21, 22], Some(20), &[1, 2], 1)
        })
    );
}

#[test]
fn sglang_batches_decode_with_the_rank_third_and_bigram_tokens() {
    let batch = vllm::decode(&fixture("sglang_array.msgpack")).expect("valid fixture");
    assert_eq!(batch.data_parallel_rank, Some(2));
    assert_eq!(
        batch.events,
        vec![
            VllmEvent::BlockStored(BlockStored {
                medium: Some("GPU".into()),
                ..stored(&[31, 32], None, &[1, 3], 1)
            }),
            VllmEvent::BlockStored(stored(&[33], Some(32), &[5], 1)),
            VllmEvent::BlockRemoved(BlockRemoved {
                block_hashes: vec![31],
                medium: None,
            }),
            VllmEvent::AllBlocksCleared { medium: None },
        ]
    );
}

fn sample() -> VllmBatch {
    VllmBatch {
        ts: 12.5,
        events: vec![
            VllmEvent::BlockStored(BlockStored {
                lora_id: Some(-1),
                medium: Some("GPU".into()),
                lora_name: Some("x".into()),
                ..stored(&[1, u64::MAX], Some(9), &[4, 5, 6, 7], 2)
            }),
            VllmEvent::BlockRemoved(BlockRemoved {
                block_hashes: vec![1],
                medium: None,
            }),
            VllmEvent::AllBlocksCleared {
                medium: Some("DISK".into()),
            },
        ],
        data_parallel_rank: Some(4),
    }
}

#[test]
fn both_styles_round_trip_except_the_clears_tier_in_arrays() {
    let original = sample();
    assert_eq!(
        vllm::decode(&vllm::encode(&original, VllmStyle::Map)),
        Ok(original.clone())
    );
    let mut arrays = original.clone();
    arrays.events[2] = VllmEvent::AllBlocksCleared { medium: None };
    assert_eq!(
        vllm::decode(&vllm::encode(&original, VllmStyle::ArrayLike)),
        Ok(arrays)
    );
}

#[test]
fn kvblocks_batches_become_one_block_stored_per_chain() {
    let a = SequenceHash::root(1);
    let b = a.extend(2);
    let c = b.extend(3);
    let x = SequenceHash::root(7);
    let blocks = vec![
        StoredBlock {
            hash: a,
            parent: None,
        },
        StoredBlock {
            hash: b,
            parent: Some(a.current_sequence_hash()),
        },
        StoredBlock {
            hash: c,
            parent: Some(b.current_sequence_hash()),
        },
        StoredBlock::orphan(x),
    ];
    let batch = KvbmCacheEvents {
        events: KvCacheEvents::Create(blocks),
        instance_id: 1,
        tier: LogicalLayoutHandle::G2,
        block_size: 16,
        position: StreamPosition { epoch: 1, seq: 0 },
    };
    let converted = vllm::from_kvblocks(&batch, 1.0);
    let hashes = |h: &[SequenceHash]| {
        h.iter()
            .map(|h| h.current_sequence_hash())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        converted.events,
        vec![
            VllmEvent::BlockStored(BlockStored {
                medium: Some("CPU_PINNED".into()),
                ..stored(&hashes(&[a, b, c]), None, &[], 16)
            }),
            VllmEvent::BlockStored(BlockStored {
                medium: Some("CPU_PINNED".into()),
                ..stored(&hashes(&[x]), None, &[], 16)
            }),
        ]
    );
    assert_eq!(
        tier_of_medium(Some("CPU_PINNED")),
        Ok(LogicalLayoutHandle::G2)
    );
    assert_eq!(tier_of_medium(Some("FLOPPY")), Err("FLOPPY".to_string()));
}

/// Our encoder's bytes for `sample()`, committed so that
/// `make_fixtures.py --check` can decode them with msgspec and vLLM's own
/// struct shapes (run `KVBLOCKS_WRITE_FIXTURES=1 cargo test` to rewrite).
#[test]
fn our_encodings_are_the_committed_bytes_that_msgspec_decodes() {
    for (style, name) in [
        (VllmStyle::Map, "kvblocks_map.msgpack"),
        (VllmStyle::ArrayLike, "kvblocks_array.msgpack"),
    ] {
        let bytes = vllm::encode(&sample(), style);
        if std::env::var_os("KVBLOCKS_WRITE_FIXTURES").is_some() {
            let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(path, &bytes).expect("fixture directory is writable");
        }
        assert_eq!(bytes, fixture(name), "{name}");
    }
}
