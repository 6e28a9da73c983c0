//! Our kvbm wire frames against kvbm-logical 1.6.1's own encoder and
//! decoder (rmp-serde over its `KvbmCacheEvents`): bit-identical in the
//! compat encoding, readable by kvbm in the extended one, and kvbm's frames
//! readable by us.

use kvblocks::events::{self, KvCacheEvents, StoredBlock, StreamPosition};
use kvblocks::{LogicalLayoutHandle, SequenceHash};
use kvblocks_wire::kvbm::{self, KvbmEncoding};
use kvbm_logical::events::{KvCacheEvents as KvbmEvents, KvbmCacheEvents as KvbmBatch};

fn chain(len: u64) -> Vec<(u64, Option<u64>, u64)> {
    // (current, parent, position) triples, positions across the mode boundaries.
    let mut triples = Vec::new();
    let mut parent = None;
    for i in 0..len {
        let current = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1) ^ 0xabcdef;
        let position = [0, 1, 255, 256, 65_535, 65_536, 1 << 23][i as usize % 7];
        triples.push((current, parent, position));
        parent = Some(current);
    }
    triples
}

fn ours(triples: &[(u64, Option<u64>, u64)]) -> Vec<SequenceHash> {
    triples
        .iter()
        .map(|&(c, p, pos)| SequenceHash::new(c, p, pos))
        .collect()
}

fn theirs(triples: &[(u64, Option<u64>, u64)]) -> Vec<kvbm_logical::SequenceHash> {
    triples
        .iter()
        .map(|&(c, p, pos)| kvbm_logical::SequenceHash::new(c, p, pos))
        .collect()
}

fn batch(events: KvCacheEvents, instance_id: u128) -> events::KvbmCacheEvents {
    events::KvbmCacheEvents {
        events,
        instance_id,
        tier: LogicalLayoutHandle::G1,
        block_size: 16,
        position: StreamPosition { epoch: 2, seq: 5 },
    }
}

const INSTANCE: u128 = 0xfeed_beef_0000_0001_2345_6789_abcd_ef01;

#[test]
fn compat_frames_are_byte_for_byte_what_kvbm_logical_writes() {
    let triples = chain(40);
    let cases = [
        (
            KvbmBatch {
                events: KvbmEvents::Create(theirs(&triples)),
                instance_id: INSTANCE,
            },
            KvCacheEvents::Create(
                ours(&triples)
                    .into_iter()
                    .map(StoredBlock::orphan)
                    .collect(),
            ),
        ),
        (
            KvbmBatch {
                events: KvbmEvents::Remove(theirs(&triples[..3])),
                instance_id: 7,
            },
            KvCacheEvents::Remove(ours(&triples[..3])),
        ),
        (
            KvbmBatch {
                events: KvbmEvents::Shutdown,
                instance_id: u128::MAX,
            },
            KvCacheEvents::Shutdown,
        ),
        (
            KvbmBatch {
                events: KvbmEvents::Create(Vec::new()),
                instance_id: 0,
            },
            KvCacheEvents::Create(Vec::new()),
        ),
    ];
    for (kvbm_batch, our_events) in cases {
        let kvbm_bytes = rmp_serde::to_vec(&kvbm_batch).expect("kvbm encodes");
        let ours = batch(our_events.clone(), kvbm_batch.instance_id);
        assert_eq!(
            kvbm::encode(&ours, KvbmEncoding::Compat).expect("representable"),
            kvbm_bytes,
            "{kvbm_batch:?}"
        );
        let frame = kvbm::decode(&kvbm_bytes).expect("we read kvbm's frame");
        assert_eq!(
            (frame.events, frame.instance_id, frame.header),
            (our_events, kvbm_batch.instance_id, None)
        );
    }
}

#[test]
fn kvbm_logical_reads_our_extended_frames() {
    let triples = chain(9);
    let hashes = ours(&triples);
    let blocks = hashes
        .iter()
        .zip(&triples)
        .map(|(&hash, &(_, parent, _))| StoredBlock { hash, parent })
        .collect();
    for (our_events, expected) in [
        (
            KvCacheEvents::Create(blocks),
            KvbmEvents::Create(theirs(&triples)),
        ),
        (
            KvCacheEvents::Remove(hashes.clone()),
            KvbmEvents::Remove(theirs(&triples)),
        ),
        (KvCacheEvents::Shutdown, KvbmEvents::Shutdown),
    ] {
        let ours = batch(our_events, INSTANCE);
        let bytes = kvbm::encode(&ours, KvbmEncoding::Extended).expect("encodes");
        let decoded: KvbmBatch =
            rmp_serde::from_slice(&bytes).expect("kvbm-logical reads the extended frame");
        assert_eq!(
            decoded,
            KvbmBatch {
                events: expected,
                instance_id: INSTANCE
            }
        );
        assert_eq!(
            kvbm::decode(&bytes).expect("round trip").into_batch(),
            Some(ours)
        );
    }
}

#[test]
fn a_clear_is_refused_by_kvbm_logical_not_misread() {
    let bytes =
        kvbm::encode(&batch(KvCacheEvents::Clear, 1), KvbmEncoding::Extended).expect("encodes");
    assert!(rmp_serde::from_slice::<KvbmBatch>(&bytes).is_err());
}
