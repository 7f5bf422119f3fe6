//! How a segment and its records are laid out.
//!
//! ```text
//! segment = magic (8 bytes) | salt: u64 LE | crc(salt): u32 LE | the same salt and crc again | record*
//! record  = sync: [u8; 4] | len: u32 LE | seq: u64 LE | count: u32 LE | header_crc: u32 LE | body_crc: u32 LE | body
//! ```
//!
//! A record holds `count` entries, seqs `seq` to `seq + count - 1`, packed in its body
//! (pack.rs): the appends written together, compressed together. `header_crc` is CRC-32 of
//! the segment's salt and the 20 bytes before it, so a length, seq or count that a damaged
//! byte changed is never trusted, and the sync bytes plus a header that checks out let a
//! reader find the next record again after damage. The salt is random per segment and never
//! leaves the disk: a sender cannot put bytes in a payload that a reader would take for a
//! record. It is kept twice, each copy with its own checksum, so one damaged byte there does
//! not cost the segment. `body_crc` is CRC-32 of the seq and the body.
//!
//! Older segments are still read: version 2 (no `count`, one entry per record, the body as
//! it is) and version 1 (`len | crc | seq | body` after the magic, no sync bytes, no salt,
//! read without resynchronisation). New segments are always version 3.

use crate::pipeline::wal::MAX_RECORD;

pub const MAGIC: &[u8; 8] = b"ODFGWAL\x03";
pub const MAGIC_V2: &[u8; 8] = b"ODFGWAL\x02";
pub const MAGIC_V1: &[u8; 8] = b"ODFGWAL\x01";
/// The longest header (version 3).
pub const MAX_HEADER: usize = 28;
pub const SYNC: [u8; 4] = [0xA5, 0x0D, 0xF6, 0x7E];
/// The magic and two copies of the salt with their checksums.
const SALTED_HEADER: usize = 8 + 2 * 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
    V3,
}

impl Version {
    pub fn of_magic(magic: &[u8]) -> Option<Version> {
        match magic {
            m if m == MAGIC => Some(Version::V3),
            m if m == MAGIC_V2 => Some(Version::V2),
            m if m == MAGIC_V1 => Some(Version::V1),
            _ => None,
        }
    }

    /// Bytes before the first record.
    pub fn segment_header_len(self) -> usize {
        match self {
            Version::V1 => 8,
            Version::V2 | Version::V3 => SALTED_HEADER,
        }
    }

    pub fn header_len(self) -> usize {
        match self {
            Version::V1 => 16,
            Version::V2 => 24,
            Version::V3 => MAX_HEADER,
        }
    }

    /// Whether its records carry sync bytes to find them again after damage.
    pub fn resyncs(self) -> bool {
        self != Version::V1
    }
}

/// The start of a segment of `version` (2 or 3) with `salt`.
pub fn segment_header(version: Version, salt: u64) -> Vec<u8> {
    let mut bytes = match version {
        Version::V1 => return MAGIC_V1.to_vec(),
        Version::V2 => MAGIC_V2.to_vec(),
        Version::V3 => MAGIC.to_vec(),
    };
    for _ in 0..2 {
        bytes.extend_from_slice(&salt.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&salt.to_le_bytes()).to_le_bytes());
    }
    bytes
}

/// The salt of a version 2 segment from its first bytes: the first copy that checks out.
pub fn read_salt(header: &[u8]) -> Option<u64> {
    (0..2).find_map(|copy| {
        let at = 8 + copy * 12;
        let salt: [u8; 8] = header.get(at..at + 8)?.try_into().ok()?;
        let crc: [u8; 4] = header.get(at + 8..at + 12)?.try_into().ok()?;
        (crc32fast::hash(&salt) == u32::from_le_bytes(crc)).then(|| u64::from_le_bytes(salt))
    })
}

/// A record header whose own fields check out (for version 1: whose length is plausible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: usize,
    pub seq: u64,
    /// Entries in the record (1 before version 3), at least 1.
    pub count: u32,
    pub body_crc: u32,
}

impl Header {
    /// Bytes of the whole record, header included.
    pub fn record_len(&self, version: Version) -> u64 {
        (version.header_len() + self.len) as u64
    }

    /// The seq of its last entry.
    pub fn last_seq(&self) -> u64 {
        self.seq + u64::from(self.count) - 1
    }
}

/// A version 3 record of `count` entries from `seq` on, packed in `body`.
pub fn encode(salt: u64, seq: u64, count: u32, body: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&SYNC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    let header_crc = header_crc(salt, &out[start..]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&body_crc(seq, body).to_le_bytes());
    out.extend_from_slice(body);
}

/// A version 2 record (one entry, the body as it is), as earlier gateways wrote them.
#[cfg(test)]
pub fn encode_v2(salt: u64, seq: u64, body: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&SYNC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let header_crc = header_crc(salt, &out[start..]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&body_crc(seq, body).to_le_bytes());
    out.extend_from_slice(body);
}

fn header_crc(salt: u64, fields: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(fields);
    hasher.finalize()
}

pub fn body_crc(seq: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// Reads a header from the first `version.header_len()` bytes of `bytes` in a segment with
/// `salt`; `None` if they are not one (or there are fewer bytes).
pub fn parse_header(version: Version, salt: u64, bytes: &[u8]) -> Option<Header> {
    let u32_at = |at: usize| bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let u64_at = |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let header = match version {
        Version::V3 => {
            if bytes.get(..4)? != SYNC || header_crc(salt, bytes.get(..20)?) != u32_at(20)? {
                return None;
            }
            let count = u32_at(16)?;
            Header { len: u32_at(4)? as usize, seq: u64_at(8)?, count, body_crc: u32_at(24)? }
        }
        Version::V2 => {
            if bytes.get(..4)? != SYNC || header_crc(salt, bytes.get(..16)?) != u32_at(16)? {
                return None;
            }
            Header { len: u32_at(4)? as usize, seq: u64_at(8)?, count: 1, body_crc: u32_at(20)? }
        }
        Version::V1 => Header { len: u32_at(0)? as usize, seq: u64_at(8)?, count: 1, body_crc: u32_at(4)? },
    };
    let plausible = header.len <= MAX_RECORD
        && (1..=super::pack::MAX_ENTRIES).contains(&header.count)
        && header.seq.checked_add(u64::from(header.count)).is_some();
    plausible.then_some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_with_any_byte_changed_or_another_salt_is_not_one() {
        let mut bytes = Vec::new();
        encode(42, 7, 3, b"body", &mut bytes);
        let header = parse_header(Version::V3, 42, &bytes).unwrap();
        assert_eq!(header, Header { len: 4, seq: 7, count: 3, body_crc: body_crc(7, b"body") });
        assert_eq!(header.last_seq(), 9);
        assert_eq!(parse_header(Version::V3, 43, &bytes), None, "a record written in another segment");
        for at in 0..24 {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                assert_eq!(parse_header(Version::V3, 42, &damaged), None, "byte {at} bit {bit}");
            }
        }
    }

    #[test]
    fn the_salt_survives_one_damaged_copy() {
        let header = segment_header(Version::V3, 0x0123_4567_89ab_cdef);
        assert_eq!(header.len(), Version::V3.segment_header_len());
        for at in 8..header.len() {
            let mut damaged = header.clone();
            damaged[at] ^= 0x40;
            assert_eq!(read_salt(&damaged), Some(0x0123_4567_89ab_cdef), "byte {at}");
        }
    }
}
