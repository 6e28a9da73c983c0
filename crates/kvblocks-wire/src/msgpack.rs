//! A minimal MessagePack reader and writer, written for hostile input.
//!
//! The reader never allocates: strings and byte strings are borrowed from the
//! input, and every length prefix is checked against what is left of the
//! input before anyone may reserve memory for it (each element takes at least
//! one byte), so a decoder's allocations are bounded by the input's size.
//! Skipping an unknown value is iterative, so nesting depth cannot overflow
//! the stack. The writer emits the shortest encoding of every value, which is
//! what `rmp` (and so `rmp-serde`) and `msgspec` emit.

use crate::error::{DecodeError, DecodeErrorKind};

/// The type of the next value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `nil`.
    Nil,
    /// `true` / `false`.
    Bool,
    /// Any integer encoding.
    Int,
    /// `float32` / `float64`.
    Float,
    /// A UTF-8 string.
    Str,
    /// A byte string.
    Bin,
    /// An array.
    Array,
    /// A map.
    Map,
    /// An extension value.
    Ext,
    /// The never-used marker `0xc1`.
    Reserved,
}

fn kind_of(marker: u8) -> Kind {
    match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 => Kind::Int,
        0x80..=0x8f | 0xde | 0xdf => Kind::Map,
        0x90..=0x9f | 0xdc | 0xdd => Kind::Array,
        0xa0..=0xbf | 0xd9..=0xdb => Kind::Str,
        0xc0 => Kind::Nil,
        0xc2 | 0xc3 => Kind::Bool,
        0xc4..=0xc6 => Kind::Bin,
        0xc7..=0xc9 | 0xd4..=0xd8 => Kind::Ext,
        0xca | 0xcb => Kind::Float,
        0xc1 => Kind::Reserved,
    }
}

/// Reads values from a byte slice, front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Bytes not consumed yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// An error of `kind` at the current offset.
    pub fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            offset: self.pos,
            kind,
        }
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(self.error(DecodeErrorKind::TrailingBytes { count })),
        }
    }

    fn unexpected(&self, expected: &'static str, marker: u8) -> DecodeError {
        DecodeError {
            offset: self.pos.saturating_sub(1),
            kind: DecodeErrorKind::Unexpected { expected, marker },
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.error(DecodeErrorKind::Truncated));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn length(&mut self, width: usize) -> Result<u64, DecodeError> {
        Ok(match width {
            1 => u64::from(self.byte()?),
            2 => u64::from(u16::from_be_bytes(self.be()?)),
            _ => u64::from(u32::from_be_bytes(self.be()?)),
        })
    }

    /// Checks that `count` items of at least `min_bytes` each can follow.
    fn bounded(&self, count: u64, min_bytes: u64) -> Result<usize, DecodeError> {
        if count.saturating_mul(min_bytes) > self.remaining() as u64 {
            return Err(self.error(DecodeErrorKind::LengthExceedsInput { len: count }));
        }
        Ok(count as usize)
    }

    /// The type of the next value, without consuming it.
    pub fn peek_kind(&self) -> Result<Kind, DecodeError> {
        match self.buf.get(self.pos) {
            Some(&marker) => Ok(kind_of(marker)),
            None => Err(self.error(DecodeErrorKind::Truncated)),
        }
    }

    /// Consumes a `nil` if one is next; says whether it did.
    pub fn read_nil(&mut self) -> Result<bool, DecodeError> {
        if self.peek_kind()? == Kind::Nil {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Any integer as `i128` (wide enough for every msgpack integer).
    fn read_int(&mut self) -> Result<i128, DecodeError> {
        let marker = self.byte()?;
        Ok(match marker {
            0x00..=0x7f => i128::from(marker),
            0xe0..=0xff => i128::from(marker as i8),
            0xcc => i128::from(self.byte()?),
            0xcd => i128::from(u16::from_be_bytes(self.be()?)),
            0xce => i128::from(u32::from_be_bytes(self.be()?)),
            0xcf => i128::from(u64::from_be_bytes(self.be()?)),
            0xd0 => i128::from(self.byte()? as i8),
            0xd1 => i128::from(i16::from_be_bytes(self.be()?)),
            0xd2 => i128::from(i32::from_be_bytes(self.be()?)),
            0xd3 => i128::from(i64::from_be_bytes(self.be()?)),
            _ => return Err(self.unexpected("an integer", marker)),
        })
    }

    /// A non-negative integer that fits `u64`.
    pub fn read_u64(&mut self) -> Result<u64, DecodeError> {
        let value = self.read_int()?;
        u64::try_from(value).map_err(|_| self.error(DecodeErrorKind::IntegerOutOfRange))
    }

    /// An integer that fits `i64`.
    pub fn read_i64(&mut self) -> Result<i64, DecodeError> {
        let value = self.read_int()?;
        i64::try_from(value).map_err(|_| self.error(DecodeErrorKind::IntegerOutOfRange))
    }

    /// A non-negative integer that fits `u32`.
    pub fn read_u32(&mut self) -> Result<u32, DecodeError> {
        let value = self.read_int()?;
        u32::try_from(value).map_err(|_| self.error(DecodeErrorKind::IntegerOutOfRange))
    }

    /// A 64-bit block hash as engines send it: an unsigned or signed integer
    /// (a negative one reinterpreted bit for bit), or a byte string whose
    /// big-endian value is cut to its low 64 bits (vLLM's bytes-to-int rule).
    pub fn read_hash64(&mut self) -> Result<u64, DecodeError> {
        match self.peek_kind()? {
            Kind::Bin => {
                let bytes = self.read_bin()?;
                let tail = &bytes[bytes.len().saturating_sub(8)..];
                Ok(tail.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
            }
            _ => {
                let value = self.read_int()?;
                if value < 0 {
                    Ok(value as i64 as u64)
                } else {
                    u64::try_from(value).map_err(|_| self.error(DecodeErrorKind::IntegerOutOfRange))
                }
            }
        }
    }

    /// A float, or an integer taken as one.
    pub fn read_f64(&mut self) -> Result<f64, DecodeError> {
        match self.peek_kind()? {
            Kind::Float => {
                let marker = self.byte()?;
                if marker == 0xca {
                    Ok(f64::from(f32::from_be_bytes(self.be()?)))
                } else {
                    Ok(f64::from_be_bytes(self.be()?))
                }
            }
            _ => Ok(self.read_int()? as f64),
        }
    }

    /// A string, borrowed from the input.
    pub fn read_str(&mut self) -> Result<&'a str, DecodeError> {
        let marker = self.byte()?;
        let len = match marker {
            0xa0..=0xbf => u64::from(marker & 0x1f),
            0xd9 => self.length(1)?,
            0xda => self.length(2)?,
            0xdb => self.length(4)?,
            _ => return Err(self.unexpected("a string", marker)),
        };
        let len = self.bounded(len, 1)?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError {
            offset: self.pos - len,
            kind: DecodeErrorKind::InvalidUtf8,
        })
    }

    /// A byte string, borrowed from the input.
    pub fn read_bin(&mut self) -> Result<&'a [u8], DecodeError> {
        let marker = self.byte()?;
        let len = match marker {
            0xc4 => self.length(1)?,
            0xc5 => self.length(2)?,
            0xc6 => self.length(4)?,
            _ => return Err(self.unexpected("a byte string", marker)),
        };
        let len = self.bounded(len, 1)?;
        self.take(len)
    }

    /// An array header: the number of elements that follow (at most the
    /// number of bytes left).
    pub fn read_array_len(&mut self) -> Result<usize, DecodeError> {
        let marker = self.byte()?;
        let len = match marker {
            0x90..=0x9f => u64::from(marker & 0x0f),
            0xdc => self.length(2)?,
            0xdd => self.length(4)?,
            _ => return Err(self.unexpected("an array", marker)),
        };
        self.bounded(len, 1)
    }

    /// A map header: the number of key/value pairs that follow.
    pub fn read_map_len(&mut self) -> Result<usize, DecodeError> {
        let marker = self.byte()?;
        let len = match marker {
            0x80..=0x8f => u64::from(marker & 0x0f),
            0xde => self.length(2)?,
            0xdf => self.length(4)?,
            _ => return Err(self.unexpected("a map", marker)),
        };
        self.bounded(len, 2)
    }

    /// Skips one value of any type, however deeply nested.
    pub fn skip(&mut self) -> Result<(), DecodeError> {
        let mut values: u64 = 1;
        while values > 0 {
            values -= 1;
            let marker = self.byte()?;
            let payload = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
                0x80..=0x8f => {
                    values += 2 * u64::from(marker & 0x0f);
                    0
                }
                0x90..=0x9f => {
                    values += u64::from(marker & 0x0f);
                    0
                }
                0xa0..=0xbf => u64::from(marker & 0x1f),
                0xc4 | 0xd9 => self.length(1)?,
                0xc5 | 0xda => self.length(2)?,
                0xc6 | 0xdb => self.length(4)?,
                0xc7 => self.length(1)? + 1,
                0xc8 => self.length(2)? + 1,
                0xc9 => self.length(4)? + 1,
                0xca => 4,
                0xcb => 8,
                0xcc | 0xd0 => 1,
                0xcd | 0xd1 => 2,
                0xce | 0xd2 => 4,
                0xcf | 0xd3 => 8,
                0xd4 => 2,
                0xd5 => 3,
                0xd6 => 5,
                0xd7 => 9,
                0xd8 => 17,
                0xdc => {
                    values += self.length(2)?;
                    0
                }
                0xdd => {
                    values += self.length(4)?;
                    0
                }
                0xde => {
                    values += 2 * self.length(2)?;
                    0
                }
                0xdf => {
                    values += 2 * self.length(4)?;
                    0
                }
                0xc1 => return Err(self.unexpected("a value", marker)),
            };
            let payload = self.bounded(payload, 1)?;
            self.take(payload)?;
            // Every pending value takes at least one byte.
            self.bounded(values, 1)?;
        }
        Ok(())
    }
}

/// Appends `nil`.
pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// Appends an unsigned integer in its shortest form.
pub fn write_uint(out: &mut Vec<u8>, value: u64) {
    match value {
        0..=0x7f => out.push(value as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, value as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(value as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

/// Appends a signed integer in its shortest form (non-negative values as unsigned).
pub fn write_sint(out: &mut Vec<u8>, value: i64) {
    if value >= 0 {
        return write_uint(out, value as u64);
    }
    match value {
        -32..=-1 => out.push(value as u8),
        -128..=-33 => out.extend_from_slice(&[0xd0, value as u8]),
        -32768..=-129 => {
            out.push(0xd1);
            out.extend_from_slice(&(value as i16).to_be_bytes());
        }
        -2_147_483_648..=-32769 => {
            out.push(0xd2);
            out.extend_from_slice(&(value as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

/// Appends a `float64`.
pub fn write_f64(out: &mut Vec<u8>, value: f64) {
    out.push(0xcb);
    out.extend_from_slice(&value.to_be_bytes());
}

fn write_len(out: &mut Vec<u8>, len: usize, fix: Option<(u8, usize)>, markers: [u8; 3]) {
    match fix {
        Some((base, limit)) if len < limit => out.push(base | len as u8),
        _ if markers[0] != 0 && len <= 0xff => out.extend_from_slice(&[markers[0], len as u8]),
        _ if len <= 0xffff => {
            out.push(markers[1]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(markers[2]);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

/// Appends a string.
pub fn write_str(out: &mut Vec<u8>, value: &str) {
    write_len(out, value.len(), Some((0xa0, 32)), [0xd9, 0xda, 0xdb]);
    out.extend_from_slice(value.as_bytes());
}

/// Appends a byte string.
pub fn write_bin(out: &mut Vec<u8>, value: &[u8]) {
    write_len(out, value.len(), None, [0xc4, 0xc5, 0xc6]);
    out.extend_from_slice(value);
}

/// Appends an array header for `len` elements.
pub fn write_array_len(out: &mut Vec<u8>, len: usize) {
    write_len(out, len, Some((0x90, 16)), [0, 0xdc, 0xdd]);
}

/// Appends a map header for `len` pairs.
pub fn write_map_len(out: &mut Vec<u8>, len: usize) {
    write_len(out, len, Some((0x80, 16)), [0, 0xde, 0xdf]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_in_their_shortest_form() {
        for value in [
            0u64,
            1,
            127,
            128,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_uint(&mut out, value);
            let mut reader = Reader::new(&out);
            assert_eq!(reader.read_u64(), Ok(value));
            assert!(reader.finish().is_ok());
        }
        for value in [
            -1i64,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            i32::MIN as i64,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            write_sint(&mut out, value);
            assert_eq!(Reader::new(&out).read_i64(), Ok(value));
            assert_eq!(Reader::new(&out).read_hash64(), Ok(value as u64));
            assert!(Reader::new(&out).read_u64().is_err());
        }
    }

    #[test]
    fn a_length_larger_than_the_input_is_refused_before_any_allocation() {
        let huge_array = [0xdd, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(matches!(
            Reader::new(&huge_array).read_array_len(),
            Err(DecodeError {
                kind: DecodeErrorKind::LengthExceedsInput { .. },
                ..
            })
        ));
        let huge_map_to_skip = [0xdf, 0x7f, 0xff, 0xff, 0xff];
        assert!(Reader::new(&huge_map_to_skip).skip().is_err());
    }

    #[test]
    fn skipping_deep_nesting_uses_no_recursion() {
        let mut deep = vec![0x91; 1_000_000];
        deep.push(0xc0);
        let mut reader = Reader::new(&deep);
        assert_eq!(reader.skip(), Ok(()));
        assert!(reader.finish().is_ok());
    }

    #[test]
    fn byte_string_hashes_keep_their_low_64_bits_big_endian() {
        let mut out = Vec::new();
        let mut digest = [0u8; 32];
        digest[24..].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        digest[0] = 0xff;
        write_bin(&mut out, &digest);
        assert_eq!(Reader::new(&out).read_hash64(), Ok(0x0102_0304_0506_0708));
    }

    #[test]
    fn strings_and_containers_use_the_short_headers() {
        let mut out = Vec::new();
        write_str(&mut out, "abc");
        write_array_len(&mut out, 3);
        write_map_len(&mut out, 20);
        write_str(&mut out, &"x".repeat(40));
        assert_eq!(&out[..5], &[0xa3, b'a', b'b', b'c', 0x93]);
        assert_eq!(&out[5..8], &[0xde, 0x00, 20]);
        assert_eq!(&out[8..10], &[0xd9, 40]);
    }
}
