//! How a record is laid out in a segment.
//!
//! ```text
//! segment = magic (8 bytes) | record*
//! record  = sync: [u8; 4] | len: u32 LE | seq: u64 LE | header_crc: u32 LE | body_crc: u32 LE | body
//! ```
//!
//! `header_crc` is CRC-32 of the 16 bytes before it, so a length or seq that a damaged byte
//! changed is never trusted, and the sync bytes plus a header that checks out let a reader
//! find the next record again after damage. `body_crc` is CRC-32 of the seq and the body.
//! Version 1 segments (`len | crc | seq | body`, no sync bytes, no header check) are still
//! read, without resynchronisation; new segments are always version 2.

use crate::pipeline::wal::MAX_RECORD;

pub const MAGIC: &[u8; 8] = b"ODFGWAL\x02";
pub const MAGIC_V1: &[u8; 8] = b"ODFGWAL\x01";
pub const SYNC: [u8; 4] = [0xA5, 0x0D, 0xF6, 0x7E];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn of_magic(magic: &[u8]) -> Option<Version> {
        match magic {
            m if m == MAGIC => Some(Version::V2),
            m if m == MAGIC_V1 => Some(Version::V1),
            _ => None,
        }
    }

    pub fn header_len(self) -> usize {
        match self {
            Version::V1 => 16,
            Version::V2 => 24,
        }
    }
}

/// A record header whose own fields check out (for version 1: whose length is plausible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: usize,
    pub seq: u64,
    pub body_crc: u32,
}

impl Header {
    /// Bytes of the whole record, header included.
    pub fn record_len(&self, version: Version) -> u64 {
        (version.header_len() + self.len) as u64
    }
}

pub fn encode(seq: u64, body: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&SYNC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let header_crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&body_crc(seq, body).to_le_bytes());
    out.extend_from_slice(body);
}

pub fn body_crc(seq: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// Reads a header from the first `version.header_len()` bytes of `bytes`; `None` if they
/// are not one (or there are fewer bytes).
pub fn parse_header(version: Version, bytes: &[u8]) -> Option<Header> {
    let u32_at = |at: usize| bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let u64_at = |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let header = match version {
        Version::V2 => {
            if bytes.get(..4)? != SYNC || crc32fast::hash(bytes.get(..16)?) != u32_at(16)? {
                return None;
            }
            Header { len: u32_at(4)? as usize, seq: u64_at(8)?, body_crc: u32_at(20)? }
        }
        Version::V1 => Header { len: u32_at(0)? as usize, seq: u64_at(8)?, body_crc: u32_at(4)? },
    };
    (header.len <= MAX_RECORD).then_some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_with_any_byte_changed_is_not_one() {
        let mut bytes = Vec::new();
        encode(7, b"body", &mut bytes);
        let header = parse_header(Version::V2, &bytes).unwrap();
        assert_eq!(header, Header { len: 4, seq: 7, body_crc: body_crc(7, b"body") });
        for at in 0..20 {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                assert_eq!(parse_header(Version::V2, &damaged), None, "byte {at} bit {bit}");
            }
        }
    }
}
