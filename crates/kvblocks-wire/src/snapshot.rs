//! A worker's snapshot ([`WorkerSnapshot`]) in MessagePack, for a consumer
//! that resynchronises by asking the worker (a request/reply over a
//! transport) instead of replaying the stream.
//!
//! ```text
//! { "instance_id": bin 16, "block_size": u32, "epoch": u64, "seq": u64,
//!   "tiers": { "G1": [bin 16, ...], "G2": [...] } }
//! ```
//!
//! Keys are the 128-bit sequence hashes, big-endian, as in kvbm-logical's
//! frames. Unknown keys are skipped; every key above is required.

use kvblocks::events::{StreamPosition, TierSnapshot, WorkerSnapshot};
use kvblocks::LogicalLayoutHandle;

use crate::error::{bounded_name, DecodeError, DecodeErrorKind};
use crate::kvbm::{read_hashes, read_u128, write_u128};
use crate::msgpack::{self, Reader};

/// The snapshot as one frame.
pub fn encode(snapshot: &WorkerSnapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + 18 * snapshot.len());
    msgpack::write_map_len(&mut out, 5);
    msgpack::write_str(&mut out, "instance_id");
    write_u128(&mut out, snapshot.instance_id);
    msgpack::write_str(&mut out, "block_size");
    msgpack::write_uint(&mut out, u64::from(snapshot.block_size));
    msgpack::write_str(&mut out, "epoch");
    msgpack::write_uint(&mut out, snapshot.position.epoch);
    msgpack::write_str(&mut out, "seq");
    msgpack::write_uint(&mut out, snapshot.position.seq);
    msgpack::write_str(&mut out, "tiers");
    msgpack::write_map_len(&mut out, snapshot.tiers.len());
    for tier in &snapshot.tiers {
        msgpack::write_str(&mut out, tier.tier.name());
        msgpack::write_array_len(&mut out, tier.hashes.len());
        for hash in &tier.hashes {
            write_u128(&mut out, hash.as_u128());
        }
    }
    out
}

/// Reads one snapshot frame; the whole input must be the frame.
///
/// # Errors
///
/// A [`DecodeError`] for anything else (a missing field, a tier named twice,
/// an invalid key); never a panic.
pub fn decode(bytes: &[u8]) -> Result<WorkerSnapshot, DecodeError> {
    let mut reader = Reader::new(bytes);
    let pairs = reader.read_map_len()?;
    let (mut instance_id, mut block_size, mut epoch, mut seq, mut tiers) =
        (None, None, None, None, None);
    for _ in 0..pairs {
        match reader.read_str()? {
            "instance_id" => instance_id = Some(read_u128(&mut reader)?),
            "block_size" => block_size = Some(reader.read_u32()?),
            "epoch" => epoch = Some(reader.read_u64()?),
            "seq" => seq = Some(reader.read_u64()?),
            "tiers" => {
                let count = reader.read_map_len()?;
                let mut list: Vec<TierSnapshot> = Vec::with_capacity(count.min(4));
                for _ in 0..count {
                    let start = reader.offset();
                    let name = reader.read_str()?;
                    let tier = name
                        .parse::<LogicalLayoutHandle>()
                        .map_err(|_| DecodeError {
                            offset: start,
                            kind: DecodeErrorKind::UnknownTier(bounded_name(name)),
                        })?;
                    if list.iter().any(|t| t.tier == tier) {
                        return Err(DecodeError {
                            offset: start,
                            kind: DecodeErrorKind::Inconsistent("a tier named twice"),
                        });
                    }
                    let hashes = read_hashes(&mut reader)?;
                    list.push(TierSnapshot { tier, hashes });
                }
                tiers = Some(list);
            }
            _ => reader.skip()?,
        }
    }
    let missing = |field| reader.error(DecodeErrorKind::MissingField(field));
    let snapshot = WorkerSnapshot {
        instance_id: instance_id.ok_or_else(|| missing("instance_id"))?,
        block_size: block_size.ok_or_else(|| missing("block_size"))?,
        position: StreamPosition {
            epoch: epoch.ok_or_else(|| missing("epoch"))?,
            seq: seq.ok_or_else(|| missing("seq"))?,
        },
        tiers: tiers.ok_or_else(|| missing("tiers"))?,
    };
    reader.finish()?;
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvblocks::SequenceHash;

    #[test]
    fn snapshots_round_trip() {
        let root = SequenceHash::root(3);
        let snapshot = WorkerSnapshot {
            instance_id: u128::MAX - 5,
            block_size: 64,
            position: StreamPosition { epoch: 12, seq: 99 },
            tiers: vec![
                TierSnapshot {
                    tier: LogicalLayoutHandle::G1,
                    hashes: vec![root, root.extend(4)],
                },
                TierSnapshot {
                    tier: LogicalLayoutHandle::G3,
                    hashes: vec![],
                },
            ],
        };
        assert_eq!(decode(&encode(&snapshot)), Ok(snapshot));
    }
}
