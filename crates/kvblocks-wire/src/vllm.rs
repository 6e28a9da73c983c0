//! vLLM's `KVEventBatch` (and SGLang's, which has the same events) in
//! MessagePack, as `msgspec` writes them.
//!
//! vLLM's structs are tagged (`tag=True`, tag field `"type"`, tag value the
//! class name). Older releases declared them `array_like=True`, so a batch is
//! `[ts, events, dp_rank?]` and an event `["BlockStored", block_hashes,
//! parent_block_hash, token_ids, block_size, lora_id, medium, lora_name,
//! ...]`; newer ones encode maps (`{"type": "BlockStored", "block_hashes":
//! ..}`), and consumers report outer batches that are still arrays. SGLang
//! sends `[ts, events, attn_dp_rank]` with the short positional events (up to
//! `medium`). Block hashes are integers (signed or unsigned) or byte strings
//! (cut to their low 64 bits, big-endian, as vLLM's own int conversion does).
//!
//! [`decode`] reads every one of those shapes and skips fields it does not
//! know (`extra_keys`, `group_idx`, ...). [`encode`] writes either style.
//! Our events carry no token ids, so a batch made by [`from_kvblocks`] has an
//! empty `token_ids`; a consumer that rehashes tokens cannot use it.

use kvblocks::events::{KvCacheEvents, KvbmCacheEvents};
use kvblocks::LogicalLayoutHandle;

use crate::error::{bounded_name, DecodeError, DecodeErrorKind};
use crate::msgpack::{self, Kind, Reader};

/// A batch of events (`KVEventBatch`).
#[derive(Debug, Clone, PartialEq)]
pub struct VllmBatch {
    /// Publish time, seconds since the Unix epoch.
    pub ts: f64,
    /// The events, in order.
    pub events: Vec<VllmEvent>,
    /// The data-parallel rank (`data_parallel_rank`, SGLang's `attn_dp_rank`).
    pub data_parallel_rank: Option<i64>,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VllmEvent {
    /// Blocks were stored.
    BlockStored(BlockStored),
    /// Blocks were removed.
    BlockRemoved(BlockRemoved),
    /// Every block was removed (of `medium`'s tier if given, else of all tiers).
    AllBlocksCleared {
        /// Our extension (map style only): the tier that was cleared.
        medium: Option<String>,
    },
}

/// `BlockStored`: a chain of blocks, each the child of the one before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockStored {
    /// The blocks' hashes, parent first.
    pub block_hashes: Vec<u64>,
    /// The hash of the first block's parent, if any.
    pub parent_block_hash: Option<u64>,
    /// The tokens of the blocks (an Eagle bigram's first token per pair).
    pub token_ids: Vec<u32>,
    /// Tokens per block.
    pub block_size: u32,
    /// Deprecated LoRA id.
    pub lora_id: Option<i64>,
    /// Where the blocks live (`"GPU"`, `"CPU_PINNED"`, ...).
    pub medium: Option<String>,
    /// The LoRA adapter's name.
    pub lora_name: Option<String>,
}

/// `BlockRemoved`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRemoved {
    /// The blocks' hashes.
    pub block_hashes: Vec<u64>,
    /// Where they lived.
    pub medium: Option<String>,
}

/// How to lay out a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VllmStyle {
    /// Maps with a `"type"` tag (vLLM since 2026).
    Map,
    /// Positional arrays (older vLLM, `array_like=True, omit_defaults=True`).
    ArrayLike,
}

/// The tier a medium names (`None`: GPU, vLLM's default).
///
/// # Errors
///
/// The unknown name, cut to 64 bytes.
pub fn tier_of_medium(medium: Option<&str>) -> Result<LogicalLayoutHandle, String> {
    Ok(match medium {
        None | Some("GPU" | "DEVICE") => LogicalLayoutHandle::G1,
        Some("CPU" | "CPU_PINNED" | "CPU_TIER1") => LogicalLayoutHandle::G2,
        Some("CPU_TIER2" | "DISK" | "NVME" | "STORAGE") => LogicalLayoutHandle::G3,
        Some("EXTERNAL" | "NETWORK" | "REMOTE" | "SHARED") => LogicalLayoutHandle::G4,
        Some(other) => return Err(bounded_name(other)),
    })
}

/// The medium name vLLM and SGLang use for a tier.
pub fn medium_of_tier(tier: LogicalLayoutHandle) -> &'static str {
    match tier {
        LogicalLayoutHandle::G1 => "GPU",
        LogicalLayoutHandle::G2 => "CPU_PINNED",
        LogicalLayoutHandle::G3 => "DISK",
        LogicalLayoutHandle::G4 => "EXTERNAL",
    }
}

/// Our batch as vLLM events, stamped `ts`: a store becomes one
/// `BlockStored` per run of parent-child blocks, a removal one
/// `BlockRemoved`, a clear `AllBlocksCleared` (with our `medium` key in map
/// style), a shutdown nothing; a mixed batch gives those of its runs, in
/// order (one `KVEventBatch` holds kinds mixed).
pub fn from_kvblocks(batch: &KvbmCacheEvents, ts: f64) -> VllmBatch {
    let medium = Some(medium_of_tier(batch.tier).to_string());
    let mut events = Vec::new();
    for part in batch.events.by_kind() {
        match &*part {
            KvCacheEvents::Create(blocks) => {
                for run in crate::chain_runs(blocks) {
                    events.push(VllmEvent::BlockStored(BlockStored {
                        block_hashes: run.iter().map(|b| b.hash.current_sequence_hash()).collect(),
                        parent_block_hash: run[0].parent,
                        token_ids: Vec::new(),
                        block_size: batch.block_size,
                        lora_id: None,
                        medium: medium.clone(),
                        lora_name: None,
                    }));
                }
            }
            KvCacheEvents::Remove(hashes) => events.push(VllmEvent::BlockRemoved(BlockRemoved {
                block_hashes: hashes.iter().map(|h| h.current_sequence_hash()).collect(),
                medium: medium.clone(),
            })),
            KvCacheEvents::Clear => events.push(VllmEvent::AllBlocksCleared {
                medium: medium.clone(),
            }),
            KvCacheEvents::Shutdown => {}
            // `by_kind` splits a mixed batch into its runs.
            KvCacheEvents::Mixed(_) => {}
        }
    }
    VllmBatch {
        ts,
        events,
        data_parallel_rank: None,
    }
}

fn write_opt_str(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => msgpack::write_str(out, value),
        None => msgpack::write_nil(out),
    }
}

fn write_opt_uint(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        Some(value) => msgpack::write_uint(out, value),
        None => msgpack::write_nil(out),
    }
}

fn write_uints(out: &mut Vec<u8>, values: impl ExactSizeIterator<Item = u64>) {
    msgpack::write_array_len(out, values.len());
    for value in values {
        msgpack::write_uint(out, value);
    }
}

fn write_event(out: &mut Vec<u8>, event: &VllmEvent, style: VllmStyle) {
    let map = style == VllmStyle::Map;
    let key = |out: &mut Vec<u8>, name: &str| {
        if map {
            msgpack::write_str(out, name);
        }
    };
    match event {
        VllmEvent::BlockStored(stored) => {
            if map {
                msgpack::write_map_len(out, 8);
                msgpack::write_str(out, "type");
            } else {
                msgpack::write_array_len(out, 8);
            }
            msgpack::write_str(out, "BlockStored");
            key(out, "block_hashes");
            write_uints(out, stored.block_hashes.iter().copied());
            key(out, "parent_block_hash");
            write_opt_uint(out, stored.parent_block_hash);
            key(out, "token_ids");
            write_uints(out, stored.token_ids.iter().map(|&t| u64::from(t)));
            key(out, "block_size");
            msgpack::write_uint(out, u64::from(stored.block_size));
            key(out, "lora_id");
            match stored.lora_id {
                Some(id) => msgpack::write_sint(out, id),
                None => msgpack::write_nil(out),
            }
            key(out, "medium");
            write_opt_str(out, stored.medium.as_deref());
            key(out, "lora_name");
            write_opt_str(out, stored.lora_name.as_deref());
        }
        VllmEvent::BlockRemoved(removed) => {
            if map {
                msgpack::write_map_len(out, 3);
                msgpack::write_str(out, "type");
            } else {
                msgpack::write_array_len(out, 3);
            }
            msgpack::write_str(out, "BlockRemoved");
            key(out, "block_hashes");
            write_uints(out, removed.block_hashes.iter().copied());
            key(out, "medium");
            write_opt_str(out, removed.medium.as_deref());
        }
        VllmEvent::AllBlocksCleared { medium } => {
            if map {
                msgpack::write_map_len(out, 1 + usize::from(medium.is_some()));
                msgpack::write_str(out, "type");
                msgpack::write_str(out, "AllBlocksCleared");
                if let Some(medium) = medium {
                    msgpack::write_str(out, "medium");
                    msgpack::write_str(out, medium);
                }
            } else {
                // msgspec refuses extra positional fields: the tier is lost.
                msgpack::write_array_len(out, 1);
                msgpack::write_str(out, "AllBlocksCleared");
            }
        }
    }
}

/// The batch in `style`.
pub fn encode(batch: &VllmBatch, style: VllmStyle) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 16 * batch.events.len());
    let with_rank = batch.data_parallel_rank.is_some();
    match style {
        VllmStyle::Map => {
            msgpack::write_map_len(&mut out, 2 + usize::from(with_rank));
            msgpack::write_str(&mut out, "ts");
        }
        VllmStyle::ArrayLike => msgpack::write_array_len(&mut out, 2 + usize::from(with_rank)),
    }
    msgpack::write_f64(&mut out, batch.ts);
    if style == VllmStyle::Map {
        msgpack::write_str(&mut out, "events");
    }
    msgpack::write_array_len(&mut out, batch.events.len());
    for event in &batch.events {
        write_event(&mut out, event, style);
    }
    if let Some(rank) = batch.data_parallel_rank {
        if style == VllmStyle::Map {
            msgpack::write_str(&mut out, "data_parallel_rank");
        }
        msgpack::write_sint(&mut out, rank);
    }
    out
}

/// Reads one batch in any of the shapes above; the whole input must be the batch.
///
/// # Errors
///
/// A [`DecodeError`] for anything else; never a panic, and no allocation
/// larger than the input warrants.
pub fn decode(bytes: &[u8]) -> Result<VllmBatch, DecodeError> {
    let mut reader = Reader::new(bytes);
    let batch = match reader.peek_kind()? {
        Kind::Array => {
            let len = reader.read_array_len()?;
            if len < 2 {
                return Err(reader.error(DecodeErrorKind::MissingField("events")));
            }
            let ts = reader.read_f64()?;
            let events = read_events(&mut reader)?;
            let data_parallel_rank = if len > 2 {
                read_opt_i64(&mut reader)?
            } else {
                None
            };
            for _ in 3..len {
                reader.skip()?;
            }
            VllmBatch {
                ts,
                events,
                data_parallel_rank,
            }
        }
        _ => {
            let pairs = reader.read_map_len()?;
            let (mut ts, mut events, mut rank) = (None, None, None);
            for _ in 0..pairs {
                match reader.read_str()? {
                    "ts" => ts = Some(reader.read_f64()?),
                    "events" => events = Some(read_events(&mut reader)?),
                    "data_parallel_rank" | "dp_rank" | "attn_dp_rank" => {
                        rank = read_opt_i64(&mut reader)?
                    }
                    _ => reader.skip()?,
                }
            }
            VllmBatch {
                ts: ts.ok_or_else(|| reader.error(DecodeErrorKind::MissingField("ts")))?,
                events: events
                    .ok_or_else(|| reader.error(DecodeErrorKind::MissingField("events")))?,
                data_parallel_rank: rank,
            }
        }
    };
    reader.finish()?;
    Ok(batch)
}

fn read_opt_i64(reader: &mut Reader<'_>) -> Result<Option<i64>, DecodeError> {
    Ok(if reader.read_nil()? {
        None
    } else {
        Some(reader.read_i64()?)
    })
}

fn read_opt_hash(reader: &mut Reader<'_>) -> Result<Option<u64>, DecodeError> {
    Ok(if reader.read_nil()? {
        None
    } else {
        Some(reader.read_hash64()?)
    })
}

fn read_opt_str(reader: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    Ok(if reader.read_nil()? {
        None
    } else {
        Some(reader.read_str()?.to_string())
    })
}

fn read_hashes(reader: &mut Reader<'_>) -> Result<Vec<u64>, DecodeError> {
    let len = reader.read_array_len()?;
    let mut hashes = Vec::with_capacity(len);
    for _ in 0..len {
        hashes.push(reader.read_hash64()?);
    }
    Ok(hashes)
}

/// Token ids: integers, or Eagle bigrams `[token, next]` (first kept).
fn read_tokens(reader: &mut Reader<'_>) -> Result<Vec<u32>, DecodeError> {
    let len = reader.read_array_len()?;
    let mut tokens = Vec::with_capacity(len);
    for _ in 0..len {
        if reader.peek_kind()? == Kind::Array {
            let pair = reader.read_array_len()?;
            if pair == 0 {
                return Err(reader.error(DecodeErrorKind::Inconsistent("an empty token pair")));
            }
            tokens.push(reader.read_u32()?);
            for _ in 1..pair {
                reader.skip()?;
            }
        } else {
            tokens.push(reader.read_u32()?);
        }
    }
    Ok(tokens)
}

fn read_events(reader: &mut Reader<'_>) -> Result<Vec<VllmEvent>, DecodeError> {
    let len = reader.read_array_len()?;
    let mut events = Vec::with_capacity(len);
    for _ in 0..len {
        events.push(match reader.peek_kind()? {
            Kind::Array => read_array_event(reader)?,
            _ => read_map_event(reader)?,
        });
    }
    Ok(events)
}

fn unknown_tag(offset: usize, tag: &str) -> DecodeError {
    DecodeError {
        offset,
        kind: DecodeErrorKind::UnknownVariant(bounded_name(tag)),
    }
}

fn read_array_event(reader: &mut Reader<'_>) -> Result<VllmEvent, DecodeError> {
    let len = reader.read_array_len()?;
    if len == 0 {
        return Err(reader.error(DecodeErrorKind::MissingField("type")));
    }
    let start = reader.offset();
    let tag = reader.read_str()?;
    let mut read = 1;
    let event = match tag {
        "BlockStored" => {
            if len < 5 {
                return Err(reader.error(DecodeErrorKind::MissingField("block_size")));
            }
            let block_hashes = read_hashes(reader)?;
            let parent_block_hash = read_opt_hash(reader)?;
            let token_ids = read_tokens(reader)?;
            let block_size = reader.read_u32()?;
            let lora_id = if len > 5 { read_opt_i64(reader)? } else { None };
            let medium = if len > 6 { read_opt_str(reader)? } else { None };
            let lora_name = if len > 7 { read_opt_str(reader)? } else { None };
            read = len.min(8);
            VllmEvent::BlockStored(BlockStored {
                block_hashes,
                parent_block_hash,
                token_ids,
                block_size,
                lora_id,
                medium,
                lora_name,
            })
        }
        "BlockRemoved" => {
            if len < 2 {
                return Err(reader.error(DecodeErrorKind::MissingField("block_hashes")));
            }
            let block_hashes = read_hashes(reader)?;
            let medium = if len > 2 { read_opt_str(reader)? } else { None };
            read = 2 + usize::from(len > 2);
            VllmEvent::BlockRemoved(BlockRemoved {
                block_hashes,
                medium,
            })
        }
        "AllBlocksCleared" => VllmEvent::AllBlocksCleared { medium: None },
        other => return Err(unknown_tag(start, other)),
    };
    for _ in read..len {
        reader.skip()?;
    }
    Ok(event)
}

fn read_map_event(reader: &mut Reader<'_>) -> Result<VllmEvent, DecodeError> {
    let pairs = reader.read_map_len()?;
    let (mut tag, mut tag_at) = (None, 0);
    let (mut hashes, mut parent, mut tokens, mut block_size) = (None, None, None, None);
    let (mut lora_id, mut medium, mut lora_name) = (None, None, None);
    for _ in 0..pairs {
        match reader.read_str()? {
            "type" => {
                tag_at = reader.offset();
                tag = Some(reader.read_str()?);
            }
            "block_hashes" => hashes = Some(read_hashes(reader)?),
            "parent_block_hash" => parent = read_opt_hash(reader)?,
            "token_ids" => tokens = Some(read_tokens(reader)?),
            "block_size" => block_size = Some(reader.read_u32()?),
            "lora_id" => lora_id = read_opt_i64(reader)?,
            "medium" => medium = read_opt_str(reader)?,
            "lora_name" => lora_name = read_opt_str(reader)?,
            _ => reader.skip()?,
        }
    }
    let missing = |reader: &Reader<'_>, field| reader.error(DecodeErrorKind::MissingField(field));
    match tag {
        Some("BlockStored") => Ok(VllmEvent::BlockStored(BlockStored {
            block_hashes: hashes.ok_or_else(|| missing(reader, "block_hashes"))?,
            parent_block_hash: parent,
            token_ids: tokens.ok_or_else(|| missing(reader, "token_ids"))?,
            block_size: block_size.ok_or_else(|| missing(reader, "block_size"))?,
            lora_id,
            medium,
            lora_name,
        })),
        Some("BlockRemoved") => Ok(VllmEvent::BlockRemoved(BlockRemoved {
            block_hashes: hashes.ok_or_else(|| missing(reader, "block_hashes"))?,
            medium,
        })),
        Some("AllBlocksCleared") => Ok(VllmEvent::AllBlocksCleared { medium }),
        Some(other) => Err(unknown_tag(tag_at, other)),
        None => Err(missing(reader, "type")),
    }
}
