//! Every decoder against random bytes and against valid frames mutated on
//! purpose (bit flips, truncations, insertions, huge length prefixes): a
//! typed error or a frame, never a panic. Runs in the normal test command;
//! `fuzz/` has the cargo-fuzz targets for longer runs, and `fuzz/corpus/`
//! the seed frames, which this test also decodes.

use kvblocks::events::{BlockChange, KvCacheEvents, KvbmCacheEvents, StoredBlock, StreamPosition};
use kvblocks::{LogicalLayoutHandle, SequenceHash};
use kvblocks_wire::kvbm::{self, KvbmEncoding};
use kvblocks_wire::{dynamo, snapshot, vllm};
use proptest::prelude::*;
use std::sync::OnceLock;

/// Runs every decoder on `bytes`; returns which ones accepted it.
fn decode_all(bytes: &[u8]) -> [bool; 4] {
    [
        kvbm::decode(bytes).is_ok(),
        vllm::decode(bytes).is_ok(),
        dynamo::decode(bytes).is_ok(),
        snapshot::decode(bytes).is_ok(),
    ]
}

fn sample_batches() -> Vec<KvbmCacheEvents> {
    let root = SequenceHash::root(3);
    let mut chain = vec![root];
    for i in 0..20u64 {
        let next = chain[chain.len() - 1].extend(i);
        chain.push(next);
    }
    let blocks: Vec<_> = chain
        .iter()
        .enumerate()
        .map(|(i, &hash)| StoredBlock {
            hash,
            parent: (i > 0).then(|| chain[i - 1].current_sequence_hash()),
        })
        .collect();
    let batch = |events, tier| KvbmCacheEvents {
        events,
        instance_id: 0x1234_5678_9abc_def0_0fed_cba9_8765_4321,
        tier,
        block_size: 16,
        position: StreamPosition {
            epoch: 77,
            seq: 123_456,
        },
    };
    vec![
        batch(
            KvCacheEvents::Create(blocks.clone()),
            LogicalLayoutHandle::G1,
        ),
        batch(
            KvCacheEvents::Remove(chain[5..].to_vec()),
            LogicalLayoutHandle::G2,
        ),
        batch(KvCacheEvents::Clear, LogicalLayoutHandle::G3),
        batch(KvCacheEvents::Shutdown, LogicalLayoutHandle::G1),
        batch(
            KvCacheEvents::Mixed(vec![
                BlockChange::Removed(chain[20]),
                BlockChange::Stored(blocks[1]),
                BlockChange::Stored(blocks[2]),
                BlockChange::Removed(chain[1]),
                BlockChange::Stored(StoredBlock::orphan(chain[7])),
            ]),
            LogicalLayoutHandle::G2,
        ),
    ]
}

/// Valid frames of every format, with the fuzz target that decodes them:
/// the seeds mutations start from.
fn seeds() -> &'static [(&'static str, Vec<u8>)] {
    static SEEDS: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds = Vec::new();
        let mut event_id = 0;
        for batch in sample_batches() {
            for mode in [KvbmEncoding::Compat, KvbmEncoding::Extended] {
                if let Ok(bytes) = kvbm::encode(&batch, mode) {
                    seeds.push(("decode_kvbm", bytes));
                }
            }
            let vllm_batch = vllm::from_kvblocks(&batch, 1.5);
            seeds.push((
                "decode_vllm",
                vllm::encode(&vllm_batch, vllm::VllmStyle::Map),
            ));
            seeds.push((
                "decode_vllm",
                vllm::encode(&vllm_batch, vllm::VllmStyle::ArrayLike),
            ));
            let events = dynamo::from_kvblocks(
                &batch,
                9,
                0,
                &mut event_id,
                dynamo::sequence_hash_as_tokens_hash,
            );
            for event in events {
                seeds.push(("decode_dynamo", dynamo::encode(&event)));
            }
        }
        let root = SequenceHash::root(8);
        let worker_snapshot = kvblocks::events::WorkerSnapshot {
            instance_id: 42,
            block_size: 16,
            position: StreamPosition { epoch: 3, seq: 17 },
            tiers: vec![kvblocks::events::TierSnapshot {
                tier: LogicalLayoutHandle::G2,
                hashes: vec![root, root.extend(9)],
            }],
        };
        seeds.push(("decode_snapshot", snapshot::encode(&worker_snapshot)));
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let mut paths: Vec<_> = std::fs::read_dir(fixtures)
            .expect("fixtures directory")
            .map(|entry| entry.expect("readable entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "msgpack"))
            .collect();
        paths.sort();
        for path in paths {
            seeds.push((
                "decode_vllm",
                std::fs::read(&path).expect("readable fixture"),
            ));
        }
        seeds
    })
}

fn valid_frames() -> impl Iterator<Item = &'static [u8]> {
    seeds().iter().map(|(_, bytes)| bytes.as_slice())
}

/// Rewrites `fuzz/corpus/` from the seeds when `KVBLOCKS_WRITE_FIXTURES` is set.
#[test]
fn the_fuzz_corpus_holds_every_seed() {
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus");
    for (i, (target, bytes)) in seeds().iter().enumerate() {
        let path = format!("{corpus}/{target}/seed-{i:03}");
        if std::env::var_os("KVBLOCKS_WRITE_FIXTURES").is_some() {
            std::fs::create_dir_all(format!("{corpus}/{target}")).expect("corpus is writable");
            std::fs::write(&path, bytes).expect("corpus is writable");
        }
        assert_eq!(&std::fs::read(&path).unwrap_or_default(), bytes, "{path}");
    }
}

#[test]
fn every_valid_frame_is_accepted_by_its_decoder() {
    for frame in valid_frames() {
        assert!(decode_all(frame).iter().any(|&ok| ok), "{frame:02x?}");
    }
}

#[test]
fn every_prefix_of_a_valid_frame_is_an_error() {
    for frame in valid_frames() {
        for cut in 0..frame.len() {
            assert_eq!(
                decode_all(&frame[..cut]),
                [false; 4],
                "prefix {cut} of {frame:02x?}"
            );
        }
    }
}

#[test]
fn lengths_that_claim_more_than_the_input_are_refused() {
    // An array of 2^32 - 1 elements, a map of as many pairs, a 4 GiB string.
    for bytes in [
        &[
            0x92, 0x81, 0xa6, b'C', b'r', b'e', b'a', b't', b'e', 0xdd, 0xff, 0xff, 0xff, 0xff,
        ][..],
        &[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa2, b't', b's'][..],
        &[
            0x93, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xdd, 0xff, 0xff, 0xff, 0xff,
        ][..],
        &[0xdb, 0xff, 0xff, 0xff, 0xff, b'x'][..],
    ] {
        assert_eq!(decode_all(bytes), [false; 4]);
    }
}

#[test]
fn the_fuzz_corpus_decodes_without_panicking() {
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus");
    let mut files = 0;
    for target in std::fs::read_dir(corpus).expect("corpus directory") {
        for entry in std::fs::read_dir(target.expect("entry").path()).expect("target directory") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("readable seed");
            decode_all(&bytes);
            files += 1;
        }
    }
    assert!(files >= 10, "the corpus has {files} seeds");
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Duplicate { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let any_at = any::<usize>();
    prop_oneof![
        (any_at, 0..8u8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any_at, any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (
            any_at,
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..6),
                // Length-bearing markers with large lengths.
                Just(vec![0xdd, 0x7f, 0xff, 0xff, 0xff]),
                Just(vec![0xdf, 0x00, 0x10, 0x00, 0x00]),
                Just(vec![0xc6, 0xff, 0xff, 0xff, 0xf0]),
                Just(vec![0xdc, 0xff, 0xff]),
            ]
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any_at, 1..8usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
        (any_at, 1..32usize).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
    ]
}

fn apply(frame: &mut Vec<u8>, mutation: &Mutation) {
    if frame.is_empty() {
        return;
    }
    let n = frame.len();
    match mutation {
        Mutation::Flip { at, bit } => frame[at % n] ^= 1 << bit,
        Mutation::Set { at, byte } => frame[at % n] = *byte,
        Mutation::Insert { at, bytes } => {
            let at = at % (n + 1);
            frame.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            frame.drain(at..(at + len).min(n));
        }
        Mutation::Duplicate { at, len } => {
            let at = at % n;
            let piece: Vec<u8> = frame[at..(at + len).min(n)].to_vec();
            frame.splice(at..at, piece);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_valid_frames_never_panic_a_decoder(
        seed in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..5),
    ) {
        let frames = seeds();
        let mut frame = frames[seed.index(frames.len())].1.clone();
        for mutation in &mutations {
            apply(&mut frame, mutation);
        }
        decode_all(&frame);
    }
}
