//! The block codec: a `MetadataBlock` as FlatBuffers, wrapped in a `Manifest`, hashed with
//! SHA3-256. The bytes are the ones the spec's golden vectors pin down, so blocks written here
//! have the hashes every other ODF implementation computes.

mod decode;
mod encode;
mod polling;
mod reader;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc};
use flatbuffers::FlatBufferBuilder;

use super::events::MetadataBlock;
use super::hash::Multihash;

/// Manifest kind of a metadata block (multicodec `odf-metadata-block`).
pub const METADATA_BLOCK_KIND: i64 = 0x0040_0000;
/// Manifest version 3: the layout with 4-byte alignment of the Timestamp struct. Versions 1
/// and 2 laid structs out differently and are refused on read.
pub const METADATA_BLOCK_VERSION: i32 = 3;

/// MetadataEvent members in union order (the type tag is the position plus one), including
/// the derivative-dataset events this gateway never writes.
const EVENT_KINDS: &[&str] = &[
    "AddData",
    "ExecuteTransform",
    "Seed",
    "SetPollingSource",
    "SetTransform",
    "SetVocab",
    "SetAttachments",
    "SetInfo",
    "SetLicense",
    "SetDataSchema",
    "AddPushSource",
    "DisablePushSource",
    "DisablePollingSource",
];

#[derive(Debug, thiserror::Error)]
#[error("malformed metadata block: {0}")]
pub struct DecodeError(String);

impl DecodeError {
    fn new(reason: impl Into<String>) -> Self {
        DecodeError(reason.into())
    }
}

/// The block as stored in `blocks/`: a finished Manifest buffer.
pub fn encode_block(block: &MetadataBlock) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let root = encode::block(&mut b, block);
    b.finish_minimal(root);
    let content = b.finished_data().to_vec();

    let mut b = FlatBufferBuilder::new();
    let root = encode::manifest(&mut b, METADATA_BLOCK_KIND, METADATA_BLOCK_VERSION, &content);
    b.finish_minimal(root);
    b.finished_data().to_vec()
}

/// The hash that names a block: SHA3-256 of its encoded bytes.
pub fn block_hash(encoded: &[u8]) -> Multihash {
    Multihash::sha3_256(encoded)
}

pub fn decode_block(bytes: &[u8]) -> Result<MetadataBlock, DecodeError> {
    // One budget for the Manifest and its content: an honest block spends at most twice
    // its size (the content once as bytes, once decoded).
    let budget = reader::Budget::for_buffer(bytes);
    let manifest = reader::Table::root(bytes, &budget)?;
    let (kind, version, content) = decode::manifest(&manifest)?;
    if kind != METADATA_BLOCK_KIND {
        return Err(DecodeError::new(format!(
            "manifest kind {kind:#x} is not a metadata block ({METADATA_BLOCK_KIND:#x})"
        )));
    }
    if version != METADATA_BLOCK_VERSION {
        return Err(DecodeError::new(format!(
            "block version {version} is not supported (this gateway reads version {METADATA_BLOCK_VERSION})"
        )));
    }
    decode::block(&reader::Table::root(content, &budget)?)
}

/// The FlatBuffers `Timestamp` struct: year, day of year (1-based), 2 bytes of padding,
/// seconds from midnight, nanoseconds; 16 bytes aligned to 4.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Timestamp {
    year: i32,
    ordinal: u16,
    seconds_from_midnight: u32,
    nanoseconds: u32,
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Timestamp {
            year: t.year(),
            ordinal: t.ordinal() as u16,
            seconds_from_midnight: t.num_seconds_from_midnight(),
            nanoseconds: t.nanosecond(),
        }
    }
}

impl Timestamp {
    fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[0..4].copy_from_slice(&self.year.to_le_bytes());
        out[4..6].copy_from_slice(&self.ordinal.to_le_bytes());
        out[8..12].copy_from_slice(&self.seconds_from_midnight.to_le_bytes());
        out[12..16].copy_from_slice(&self.nanoseconds.to_le_bytes());
        out
    }

    fn from_bytes(raw: [u8; 16]) -> Self {
        let [y0, y1, y2, y3, o0, o1, _, _, s0, s1, s2, s3, n0, n1, n2, n3] = raw;
        Timestamp {
            year: i32::from_le_bytes([y0, y1, y2, y3]),
            ordinal: u16::from_le_bytes([o0, o1]),
            seconds_from_midnight: u32::from_le_bytes([s0, s1, s2, s3]),
            nanoseconds: u32::from_le_bytes([n0, n1, n2, n3]),
        }
    }

    fn to_time(self) -> Result<DateTime<Utc>, DecodeError> {
        let date = NaiveDate::from_yo_opt(self.year, self.ordinal.into());
        let time =
            NaiveTime::from_num_seconds_from_midnight_opt(self.seconds_from_midnight, self.nanoseconds);
        match (date, time) {
            (Some(date), Some(time)) => Ok(date.and_time(time).and_utc()),
            _ => Err(DecodeError::new(format!("{self:?} is not a valid timestamp"))),
        }
    }
}

#[cfg(test)]
mod tests;
