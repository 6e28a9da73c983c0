//! kvbm-logical's MessagePack frame (`KvbmCacheEvents`), bit-compatible,
//! and the extension that carries what a router needs on top of it.
//!
//! kvbm-logical 1.6.1 encodes its batch with `rmp_serde::to_vec`:
//!
//! ```text
//! [ events, instance_id ]                      array of 2
//! events      = { "Create": [hash, ...] }      map of 1 (newtype variant)
//!             | { "Remove": [hash, ...] }
//!             | "Shutdown"                     unit variant as a string
//! hash        = bin 16, the u128 big-endian    (dynamo-tokens' serde_bytes_u128)
//! instance_id = bin 16, the u128 big-endian    (rmp-serde's u128)
//! ```
//!
//! [`KvbmEncoding::Compat`] writes exactly those bytes (tier, block size,
//! stream position and parents are dropped; a clear cannot be expressed; a
//! batch of mixed kinds goes as [`compat_frames`], one frame per run).
//! [`KvbmEncoding::Extended`] writes the same struct as a map, which
//! kvbm-logical's decoder also accepts (serde ignores the extra keys), with
//! the extension in extra keys:
//!
//! ```text
//! { "events": .., "instance_id": .., "tier": "G1", "block_size": 16,
//!   "epoch": e, "seq": s, "parents": [nil | u64, ...] }   parents: creates only
//! events also = "Clear"                                   (kvbm cannot read it)
//!             | { "Mixed": [ { "Create": [..] } | { "Remove": [..] }, .. ] }
//!                 a mixed batch as its runs in order; parents: every stored
//!                 block's, in order (kvbm cannot read it either)
//! ```
//!
//! [`decode`] reads both, and the map form without the extension.

use kvblocks::events::{
    BlockChange, InstanceId, KvCacheEvents, KvbmCacheEvents, StoredBlock, StreamPosition,
};
use kvblocks::{LogicalLayoutHandle, SequenceHash};

use crate::error::{bounded_name, DecodeError, DecodeErrorKind, EncodeError};
use crate::msgpack::{self, Kind, Reader};

/// Which frame to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvbmEncoding {
    /// Exactly what kvbm-logical 1.6.1 writes: no tier, block size,
    /// position or parents.
    Compat,
    /// kvbm-logical's struct as a map plus the extension keys; kvbm-logical
    /// reads it (except a clear).
    Extended,
}

/// The extension of a frame: what kvbm-logical's format lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The tier of the batch.
    pub tier: LogicalLayoutHandle,
    /// Tokens per block.
    pub block_size: u32,
    /// The batch's stream position.
    pub position: StreamPosition,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvbmFrame {
    /// The events; stores carry parents only if the frame had the extension.
    pub events: KvCacheEvents,
    /// The worker.
    pub instance_id: InstanceId,
    /// The extension, if the frame had it (`None` for kvbm-logical's own frames).
    pub header: Option<FrameHeader>,
}

impl KvbmFrame {
    /// The frame as a batch, if it carried the extension.
    pub fn into_batch(self) -> Option<KvbmCacheEvents> {
        let header = self.header?;
        Some(KvbmCacheEvents {
            events: self.events,
            instance_id: self.instance_id,
            tier: header.tier,
            block_size: header.block_size,
            position: header.position,
        })
    }
}

pub(crate) fn write_u128(out: &mut Vec<u8>, value: u128) {
    msgpack::write_bin(out, &value.to_be_bytes());
}

fn write_events(
    out: &mut Vec<u8>,
    events: &KvCacheEvents,
    mode: KvbmEncoding,
) -> Result<(), EncodeError> {
    match events {
        KvCacheEvents::Create(blocks) => {
            msgpack::write_map_len(out, 1);
            msgpack::write_str(out, "Create");
            msgpack::write_array_len(out, blocks.len());
            for block in blocks {
                write_u128(out, block.hash.as_u128());
            }
        }
        KvCacheEvents::Remove(hashes) => {
            msgpack::write_map_len(out, 1);
            msgpack::write_str(out, "Remove");
            msgpack::write_array_len(out, hashes.len());
            for hash in hashes {
                write_u128(out, hash.as_u128());
            }
        }
        KvCacheEvents::Shutdown => msgpack::write_str(out, "Shutdown"),
        KvCacheEvents::Clear => match mode {
            KvbmEncoding::Compat => return Err(EncodeError::NotRepresentable("a clear")),
            KvbmEncoding::Extended => msgpack::write_str(out, "Clear"),
        },
        KvCacheEvents::Mixed(_) => {
            if mode == KvbmEncoding::Compat {
                return Err(EncodeError::NotRepresentable("a batch of mixed kinds"));
            }
            let parts = events.by_kind();
            msgpack::write_map_len(out, 1);
            msgpack::write_str(out, "Mixed");
            msgpack::write_array_len(out, parts.len());
            for part in &parts {
                write_events(out, part, mode)?;
            }
        }
    }
    Ok(())
}

/// The parents of a batch's stored blocks, in order (`None` for a batch
/// that stores nothing).
fn stored_parents(events: &KvCacheEvents) -> Option<Vec<Option<u64>>> {
    match events {
        KvCacheEvents::Create(blocks) => Some(blocks.iter().map(|b| b.parent).collect()),
        KvCacheEvents::Mixed(changes) => Some(
            changes
                .iter()
                .filter_map(|change| match change {
                    BlockChange::Stored(block) => Some(block.parent),
                    BlockChange::Removed(_) => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Appends `batch` as one frame to `out`.
///
/// # Errors
///
/// [`EncodeError::NotRepresentable`] for a clear in [`KvbmEncoding::Compat`].
pub fn encode_into(
    out: &mut Vec<u8>,
    batch: &KvbmCacheEvents,
    mode: KvbmEncoding,
) -> Result<(), EncodeError> {
    match mode {
        KvbmEncoding::Compat => {
            msgpack::write_array_len(out, 2);
            write_events(out, &batch.events, mode)?;
            write_u128(out, batch.instance_id);
        }
        KvbmEncoding::Extended => {
            let parents = stored_parents(&batch.events);
            msgpack::write_map_len(out, 6 + usize::from(parents.is_some()));
            msgpack::write_str(out, "events");
            write_events(out, &batch.events, mode)?;
            msgpack::write_str(out, "instance_id");
            write_u128(out, batch.instance_id);
            msgpack::write_str(out, "tier");
            msgpack::write_str(out, batch.tier.name());
            msgpack::write_str(out, "block_size");
            msgpack::write_uint(out, u64::from(batch.block_size));
            msgpack::write_str(out, "epoch");
            msgpack::write_uint(out, batch.position.epoch);
            msgpack::write_str(out, "seq");
            msgpack::write_uint(out, batch.position.seq);
            if let Some(parents) = parents {
                msgpack::write_str(out, "parents");
                msgpack::write_array_len(out, parents.len());
                for parent in parents {
                    match parent {
                        Some(parent) => msgpack::write_uint(out, parent),
                        None => msgpack::write_nil(out),
                    }
                }
            }
        }
    }
    Ok(())
}

/// `batch` as one frame.
///
/// # Errors
///
/// [`EncodeError::NotRepresentable`] for a clear in [`KvbmEncoding::Compat`].
pub fn encode(batch: &KvbmCacheEvents, mode: KvbmEncoding) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64 + 18 * batch.events.len());
    encode_into(&mut out, batch, mode)?;
    Ok(out)
}

/// `batch` in kvbm-logical's own format, as the frames kvbm-logical would
/// have sent for it: one frame for a batch of one kind, and one per run of
/// one kind, in order, for a batch of mixed kinds
/// ([`BatchingConfig::with_mixed_kinds`](kvblocks::events::BatchingConfig::with_mixed_kinds)),
/// so a manager batching mixed kinds still feeds a kvbm-logical consumer.
///
/// # Errors
///
/// [`EncodeError::NotRepresentable`] for a clear, which kvbm-logical's
/// format cannot say.
///
/// ```
/// use kvblocks::events::{BlockChange, KvCacheEvents, StoredBlock};
/// use kvblocks::SequenceHash;
/// use kvblocks_wire::kvbm::{compat_frames, decode};
/// # use kvblocks::events::{KvbmCacheEvents, StreamPosition};
/// # use kvblocks::LogicalLayoutHandle;
/// let (a, b) = (SequenceHash::root(1), SequenceHash::root(2));
/// let events = KvCacheEvents::Mixed(vec![
///     BlockChange::Stored(StoredBlock::orphan(a)),
///     BlockChange::Removed(b),
///     BlockChange::Removed(a),
/// ]);
/// # let batch = KvbmCacheEvents { events, instance_id: 7, tier: LogicalLayoutHandle::G1,
/// #     block_size: 16, position: StreamPosition { epoch: 1, seq: 0 } };
/// let frames = compat_frames(&batch).unwrap();
/// assert_eq!(frames.len(), 2);
/// assert_eq!(decode(&frames[1]).unwrap().events, KvCacheEvents::Remove(vec![b, a]));
/// ```
pub fn compat_frames(batch: &KvbmCacheEvents) -> Result<Vec<Vec<u8>>, EncodeError> {
    batch
        .events
        .by_kind()
        .into_iter()
        .map(|part| {
            let mut out = Vec::with_capacity(48 + 18 * part.len());
            msgpack::write_array_len(&mut out, 2);
            write_events(&mut out, &part, KvbmEncoding::Compat)?;
            write_u128(&mut out, batch.instance_id);
            Ok(out)
        })
        .collect()
}

pub(crate) fn read_u128(reader: &mut Reader<'_>) -> Result<u128, DecodeError> {
    match reader.peek_kind()? {
        Kind::Bin => {
            let start = reader.offset();
            let bytes = reader.read_bin()?;
            let bytes: [u8; 16] = bytes.try_into().map_err(|_| DecodeError {
                offset: start,
                kind: DecodeErrorKind::BadHashLength { len: bytes.len() },
            })?;
            Ok(u128::from_be_bytes(bytes))
        }
        Kind::Array => {
            // dynamo-tokens also accepts a sequence of 16 integers.
            let start = reader.offset();
            let len = reader.read_array_len()?;
            if len != 16 {
                return Err(DecodeError {
                    offset: start,
                    kind: DecodeErrorKind::BadHashLength { len },
                });
            }
            let mut value = 0u128;
            for _ in 0..16 {
                let byte = reader.read_u64()?;
                let byte = u8::try_from(byte)
                    .map_err(|_| reader.error(DecodeErrorKind::IntegerOutOfRange))?;
                value = (value << 8) | u128::from(byte);
            }
            Ok(value)
        }
        _ => Ok(u128::from(reader.read_u64()?)),
    }
}

fn read_hash(reader: &mut Reader<'_>) -> Result<SequenceHash, DecodeError> {
    let start = reader.offset();
    let raw = read_u128(reader)?;
    SequenceHash::try_from_u128(raw).map_err(|_| DecodeError {
        offset: start,
        kind: DecodeErrorKind::InvalidSequenceHash,
    })
}

pub(crate) fn read_hashes(reader: &mut Reader<'_>) -> Result<Vec<SequenceHash>, DecodeError> {
    let len = reader.read_array_len()?;
    let mut hashes = Vec::with_capacity(len);
    for _ in 0..len {
        hashes.push(read_hash(reader)?);
    }
    Ok(hashes)
}

fn read_events(reader: &mut Reader<'_>) -> Result<KvCacheEvents, DecodeError> {
    read_events_at(reader, true)
}

/// One `events` value; `mixed_allowed` is false inside a mixed batch (a
/// part is one kind, never another mixed batch).
fn read_events_at(
    reader: &mut Reader<'_>,
    mixed_allowed: bool,
) -> Result<KvCacheEvents, DecodeError> {
    let start = reader.offset();
    let unknown = |name: &str| DecodeError {
        offset: start,
        kind: DecodeErrorKind::UnknownVariant(bounded_name(name)),
    };
    match reader.peek_kind()? {
        Kind::Str => match reader.read_str()? {
            "Shutdown" => Ok(KvCacheEvents::Shutdown),
            "Clear" => Ok(KvCacheEvents::Clear),
            other => Err(unknown(other)),
        },
        // rmp-serde also reads variants by index (kvbm-logical's order).
        Kind::Int => match reader.read_u64()? {
            2 => Ok(KvCacheEvents::Shutdown),
            other => Err(unknown(&other.to_string())),
        },
        _ => {
            if reader.read_map_len()? != 1 {
                return Err(reader.error(DecodeErrorKind::Inconsistent(
                    "an enum variant is a map of one entry",
                )));
            }
            let create = match reader.peek_kind()? {
                Kind::Int => match reader.read_u64()? {
                    0 => true,
                    1 => false,
                    other => return Err(unknown(&other.to_string())),
                },
                _ => match reader.read_str()? {
                    "Create" => true,
                    "Remove" => false,
                    "Mixed" if mixed_allowed => return read_mixed(reader),
                    other => return Err(unknown(other)),
                },
            };
            let hashes = read_hashes(reader)?;
            Ok(if create {
                KvCacheEvents::Create(hashes.into_iter().map(StoredBlock::orphan).collect())
            } else {
                KvCacheEvents::Remove(hashes)
            })
        }
    }
}

/// The parts of a mixed batch, as one list of changes in order.
fn read_mixed(reader: &mut Reader<'_>) -> Result<KvCacheEvents, DecodeError> {
    let parts = reader.read_array_len()?;
    let mut changes = Vec::new();
    for _ in 0..parts {
        let start = reader.offset();
        match read_events_at(reader, false)? {
            KvCacheEvents::Create(blocks) => {
                changes.extend(blocks.into_iter().map(BlockChange::Stored));
            }
            KvCacheEvents::Remove(hashes) => {
                changes.extend(hashes.into_iter().map(BlockChange::Removed));
            }
            _ => {
                return Err(DecodeError {
                    offset: start,
                    kind: DecodeErrorKind::Inconsistent(
                        "a part of a mixed batch is a store or a removal",
                    ),
                })
            }
        }
    }
    Ok(KvCacheEvents::Mixed(changes))
}

/// Reads one frame: kvbm-logical's own (array or map) or an extended one.
/// The whole input must be the frame.
///
/// # Errors
///
/// A [`DecodeError`] for anything else; never a panic, and no allocation
/// larger than the input warrants.
pub fn decode(bytes: &[u8]) -> Result<KvbmFrame, DecodeError> {
    let mut reader = Reader::new(bytes);
    let frame = match reader.peek_kind()? {
        Kind::Array => {
            let len = reader.read_array_len()?;
            if len < 2 {
                return Err(reader.error(DecodeErrorKind::MissingField("instance_id")));
            }
            let events = read_events(&mut reader)?;
            let instance_id = read_u128(&mut reader)?;
            for _ in 2..len {
                reader.skip()?;
            }
            KvbmFrame {
                events,
                instance_id,
                header: None,
            }
        }
        _ => read_map_frame(&mut reader)?,
    };
    reader.finish()?;
    Ok(frame)
}

fn read_map_frame(reader: &mut Reader<'_>) -> Result<KvbmFrame, DecodeError> {
    let pairs = reader.read_map_len()?;
    let (mut events, mut instance_id, mut tier, mut block_size) = (None, None, None, None);
    let (mut epoch, mut seq, mut parents) = (None, None, None::<Vec<Option<u64>>>);
    for _ in 0..pairs {
        match reader.read_str()? {
            "events" => events = Some(read_events(reader)?),
            "instance_id" => instance_id = Some(read_u128(reader)?),
            "tier" => {
                let start = reader.offset();
                let name = reader.read_str()?;
                tier = Some(
                    name.parse::<LogicalLayoutHandle>()
                        .map_err(|_| DecodeError {
                            offset: start,
                            kind: DecodeErrorKind::UnknownTier(bounded_name(name)),
                        })?,
                );
            }
            "block_size" => block_size = Some(reader.read_u32()?),
            "epoch" => epoch = Some(reader.read_u64()?),
            "seq" => seq = Some(reader.read_u64()?),
            "parents" => {
                let len = reader.read_array_len()?;
                let mut list = Vec::with_capacity(len);
                for _ in 0..len {
                    list.push(if reader.read_nil()? {
                        None
                    } else {
                        Some(reader.read_u64()?)
                    });
                }
                parents = Some(list);
            }
            _ => reader.skip()?,
        }
    }
    let mut events = events.ok_or_else(|| reader.error(DecodeErrorKind::MissingField("events")))?;
    let instance_id =
        instance_id.ok_or_else(|| reader.error(DecodeErrorKind::MissingField("instance_id")))?;
    if let Some(parents) = parents {
        let stored: Option<Vec<&mut StoredBlock>> = match &mut events {
            KvCacheEvents::Create(blocks) => Some(blocks.iter_mut().collect()),
            KvCacheEvents::Mixed(changes) => Some(
                changes
                    .iter_mut()
                    .filter_map(|change| match change {
                        BlockChange::Stored(block) => Some(block),
                        BlockChange::Removed(_) => None,
                    })
                    .collect(),
            ),
            _ => None,
        };
        if let Some(mut stored) = stored {
            if parents.len() != stored.len() {
                return Err(reader.error(DecodeErrorKind::Inconsistent(
                    "parents and created blocks differ in length",
                )));
            }
            for (block, parent) in stored.iter_mut().zip(parents) {
                block.parent = parent;
            }
        }
    }
    let header = match (tier, block_size, epoch, seq) {
        (None, None, None, None) => None,
        (Some(tier), Some(block_size), Some(epoch), Some(seq)) => Some(FrameHeader {
            tier,
            block_size,
            position: StreamPosition { epoch, seq },
        }),
        _ => {
            return Err(reader.error(DecodeErrorKind::Inconsistent(
                "tier, block_size, epoch and seq come together",
            )))
        }
    };
    Ok(KvbmFrame {
        events,
        instance_id,
        header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(events: KvCacheEvents) -> KvbmCacheEvents {
        KvbmCacheEvents {
            events,
            instance_id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            tier: LogicalLayoutHandle::G2,
            block_size: 32,
            position: StreamPosition { epoch: 9, seq: 300 },
        }
    }

    #[test]
    fn a_mixed_batch_goes_to_kvbm_as_one_compat_frame_per_run_in_order() {
        let hashes: Vec<SequenceHash> = (1..=5).map(SequenceHash::root).collect();
        let changes = vec![
            BlockChange::Stored(StoredBlock::orphan(hashes[0])),
            BlockChange::Stored(StoredBlock::orphan(hashes[1])),
            BlockChange::Removed(hashes[2]),
            BlockChange::Stored(StoredBlock::orphan(hashes[3])),
            BlockChange::Removed(hashes[4]),
            BlockChange::Removed(hashes[0]),
        ];
        let mixed = batch(KvCacheEvents::Mixed(changes));
        let frames = compat_frames(&mixed).unwrap();
        let decoded: Vec<KvCacheEvents> = frames
            .iter()
            .map(|frame| {
                let frame = decode(frame).unwrap();
                assert_eq!(frame.instance_id, mixed.instance_id);
                assert!(frame.header.is_none(), "kvbm-logical's own shape");
                frame.events
            })
            .collect();
        let expected: Vec<KvCacheEvents> = mixed
            .events
            .by_kind()
            .into_iter()
            .map(|part| part.into_owned())
            .collect();
        assert_eq!(decoded, expected);
        assert_eq!(decoded.len(), 4);
        // A batch of one kind is the one frame `encode` writes.
        let single = batch(KvCacheEvents::Remove(hashes.clone()));
        assert_eq!(
            compat_frames(&single).unwrap(),
            vec![encode(&single, KvbmEncoding::Compat).unwrap()]
        );
        assert!(compat_frames(&batch(KvCacheEvents::Clear)).is_err());
    }

    #[test]
    fn extended_frames_round_trip_with_parents() {
        let root = SequenceHash::root(5);
        let child = root.extend(6);
        let original = batch(KvCacheEvents::Create(vec![
            StoredBlock::orphan(root),
            StoredBlock {
                hash: child,
                parent: Some(root.current_sequence_hash()),
            },
        ]));
        let bytes = encode(&original, KvbmEncoding::Extended).unwrap();
        assert_eq!(decode(&bytes).unwrap().into_batch(), Some(original));
        let clear = batch(KvCacheEvents::Clear);
        let bytes = encode(&clear, KvbmEncoding::Extended).unwrap();
        assert_eq!(decode(&bytes).unwrap().into_batch(), Some(clear));
    }

    #[test]
    fn mixed_batches_round_trip_in_extended_frames_and_are_refused_in_compat_ones() {
        let root = SequenceHash::root(5);
        let child = root.extend(6);
        let original = batch(KvCacheEvents::Mixed(vec![
            BlockChange::Stored(StoredBlock::orphan(root)),
            BlockChange::Removed(SequenceHash::root(9)),
            BlockChange::Removed(SequenceHash::root(10)),
            BlockChange::Stored(StoredBlock {
                hash: child,
                parent: Some(root.current_sequence_hash()),
            }),
        ]));
        let bytes = encode(&original, KvbmEncoding::Extended).unwrap();
        assert_eq!(decode(&bytes).unwrap().into_batch(), Some(original.clone()));
        assert_eq!(
            encode(&original, KvbmEncoding::Compat),
            Err(EncodeError::NotRepresentable("a batch of mixed kinds"))
        );
        let only_removals = batch(KvCacheEvents::Mixed(vec![BlockChange::Removed(root)]));
        let bytes = encode(&only_removals, KvbmEncoding::Extended).unwrap();
        assert_eq!(decode(&bytes).unwrap().into_batch(), Some(only_removals));
    }

    #[test]
    fn a_mixed_batch_inside_a_mixed_batch_is_an_error() {
        let mut out = Vec::new();
        msgpack::write_map_len(&mut out, 2);
        msgpack::write_str(&mut out, "events");
        msgpack::write_map_len(&mut out, 1);
        msgpack::write_str(&mut out, "Mixed");
        msgpack::write_array_len(&mut out, 1);
        msgpack::write_map_len(&mut out, 1);
        msgpack::write_str(&mut out, "Mixed");
        msgpack::write_array_len(&mut out, 0);
        msgpack::write_str(&mut out, "instance_id");
        write_u128(&mut out, 1);
        assert!(matches!(
            decode(&out),
            Err(DecodeError {
                kind: DecodeErrorKind::UnknownVariant(_),
                ..
            })
        ));
    }

    #[test]
    fn compat_frames_drop_the_extension_and_refuse_a_clear() {
        let root = SequenceHash::root(5);
        let original = batch(KvCacheEvents::Remove(vec![root]));
        let frame = decode(&encode(&original, KvbmEncoding::Compat).unwrap()).unwrap();
        assert_eq!(frame.events, original.events);
        assert_eq!(frame.instance_id, original.instance_id);
        assert_eq!(frame.header, None);
        assert_eq!(
            encode(&batch(KvCacheEvents::Clear), KvbmEncoding::Compat),
            Err(EncodeError::NotRepresentable("a clear"))
        );
    }

    #[test]
    fn a_reserved_mode_key_is_a_typed_error() {
        let mut bytes = encode(
            &batch(KvCacheEvents::Remove(vec![SequenceHash::root(1)])),
            KvbmEncoding::Compat,
        )
        .unwrap();
        // The hash's first byte follows [0x92, 0x81, 0xa6 "Remove", 0x91, 0xc4, 0x10].
        let at = 1 + 1 + 7 + 1 + 2;
        bytes[at] = 0xc0;
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError {
                kind: DecodeErrorKind::InvalidSequenceHash,
                ..
            })
        ));
    }
}
