//! The two error types of this crate: one for bytes that cannot be read, one
//! for batches a format cannot express.

use std::fmt;

/// Bytes that are not a valid frame of the format asked for.
///
/// Carries the byte offset where reading stopped, so a corrupt frame can be
/// located in a capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (at byte {offset})")]
pub struct DecodeError {
    /// Where in the input the problem was found.
    pub offset: usize,
    /// What the problem is.
    pub kind: DecodeErrorKind,
}

/// What made a frame unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The input ends inside a value.
    Truncated,
    /// A value of another type than the format allows here.
    Unexpected {
        /// What the format expects.
        expected: &'static str,
        /// The msgpack marker byte found instead.
        marker: u8,
    },
    /// A length prefix larger than what is left of the input.
    LengthExceedsInput {
        /// The length claimed.
        len: u64,
    },
    /// A string that is not UTF-8.
    InvalidUtf8,
    /// An integer that does not fit the field (a negative length, a token
    /// id above `u32::MAX`, ...).
    IntegerOutOfRange,
    /// A 128-bit key or id that is not 16 bytes long.
    BadHashLength {
        /// The length found.
        len: usize,
    },
    /// A 128-bit key whose mode bits are the reserved `0b11`.
    InvalidSequenceHash,
    /// A variant or event tag the format does not have (name cut to 64 bytes).
    UnknownVariant(String),
    /// A field the format requires is missing.
    MissingField(&'static str),
    /// A tier or medium name not known (cut to 64 bytes).
    UnknownTier(String),
    /// Bytes left after the frame.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A frame that contradicts itself (the message says how).
    Inconsistent(&'static str),
    /// Invalid JSON (serde_json's message).
    Json(String),
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("input ends inside a value"),
            Self::Unexpected { expected, marker } => {
                write!(f, "expected {expected}, found msgpack marker {marker:#04x}")
            }
            Self::LengthExceedsInput { len } => {
                write!(f, "length {len} exceeds the rest of the input")
            }
            Self::InvalidUtf8 => f.write_str("string is not UTF-8"),
            Self::IntegerOutOfRange => f.write_str("integer out of range for its field"),
            Self::BadHashLength { len } => write!(f, "a 128-bit value needs 16 bytes, found {len}"),
            Self::InvalidSequenceHash => f.write_str("sequence hash with reserved mode bits 0b11"),
            Self::UnknownVariant(name) => write!(f, "unknown variant {name:?}"),
            Self::MissingField(name) => write!(f, "missing field {name:?}"),
            Self::UnknownTier(name) => write!(f, "unknown tier or medium {name:?}"),
            Self::TrailingBytes { count } => write!(f, "{count} bytes after the frame"),
            Self::Inconsistent(what) => write!(f, "inconsistent frame: {what}"),
            Self::Json(message) => write!(f, "invalid JSON: {message}"),
        }
    }
}

/// Cuts a name taken from hostile input to a bounded length for an error.
pub(crate) fn bounded_name(name: &str) -> String {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// A batch the chosen format cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// kvbm-logical's own format has no such event (a clear, say).
    #[error("kvbm-logical's wire format cannot express {0}")]
    NotRepresentable(&'static str),
}
