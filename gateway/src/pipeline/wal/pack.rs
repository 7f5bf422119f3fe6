//! The body of a version 3 record: the entries appended together, each with its length, in
//! one block that is compressed (zstd) when that pays.
//!
//! ```text
//! body  = codec: u8 | raw_len: u32 LE | data      (codec 0: data is raw; 1: raw compressed with zstd)
//! raw   = (len: u32 LE | entry)*                   (as many as the record header's count)
//! ```
//!
//! Reports from one fleet repeat their keys, device ids and routes, so a group of them
//! compresses several times over, and the log then writes each report's bytes about once
//! (fewer bytes on an SD card, see README "Footprint"). Small packs are not compressed: a
//! lone report gains little, and a record per report keeps damage to one report.

/// Raw bytes from which a pack is compressed.
const COMPRESS_FROM: usize = 1024;
/// Raw bytes of entries a pack takes at most (one bigger entry still gets a pack of its own):
/// a damaged record costs no more than this.
pub const MAX_PACK_BYTES: usize = 64 * 1024;
/// Entries a pack takes at most.
pub const MAX_ENTRIES: u32 = 4096;
/// Bytes a pack of one entry adds to it (codec, raw length, the entry's length).
pub const OVERHEAD: usize = 9;
/// zstd's fastest level: the log writer is on the path of every acknowledgement.
const LEVEL: i32 = 1;

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// Packs `entries` into a record body.
pub fn pack<'e>(entries: impl IntoIterator<Item = &'e [u8]>) -> Vec<u8> {
    // The raw form is built in place, after room for the codec and the raw length.
    let mut body = vec![RAW, 0, 0, 0, 0];
    for entry in entries {
        body.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        body.extend_from_slice(entry);
    }
    let raw_len = body.len() - 5;
    body[1..5].copy_from_slice(&(raw_len as u32).to_le_bytes());
    if raw_len >= COMPRESS_FROM
        && let Some(compressed) = compress(&body[5..])
        && compressed.len() < raw_len
    {
        body[0] = ZSTD;
        body.truncate(5);
        body.extend_from_slice(&compressed);
    }
    body
}

thread_local! {
    /// A compression context per thread (the log writer's), made once: making one per pack
    /// allocates and clears zstd's tables each time.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress(raw: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|kept| {
        let compressor = match kept {
            Some(compressor) => compressor,
            None => kept.insert(zstd::bulk::Compressor::new(LEVEL).ok()?),
        };
        compressor.compress(raw).ok()
    })
}

/// The `count` entries of a record body; an error says what does not fit (the body's
/// checksum held, so this is a bug or a checksum collision, never a torn write).
pub fn unpack(body: &[u8], count: u32) -> Result<Vec<Vec<u8>>, String> {
    let (&codec, rest) = body.split_first().ok_or("an empty pack")?;
    let raw_len = rest.get(..4).ok_or("a pack cut short")?;
    let raw_len = u32::from_le_bytes([raw_len[0], raw_len[1], raw_len[2], raw_len[3]]) as usize;
    if raw_len > super::MAX_RECORD {
        return Err(format!("a pack claims {raw_len} bytes"));
    }
    let data = &rest[4..];
    let decompressed;
    let raw = match codec {
        RAW => data,
        ZSTD => {
            decompressed = zstd::bulk::decompress(data, raw_len)
                .map_err(|e| format!("a pack does not decompress: {e}"))?;
            decompressed.as_slice()
        }
        other => return Err(format!("a pack of unknown codec {other}")),
    };
    if raw.len() != raw_len {
        return Err(format!("a pack of {} bytes, not {raw_len}", raw.len()));
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut at = 0;
    while at < raw.len() {
        let len = raw.get(at..at + 4).ok_or("an entry length cut short")?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let entry = raw.get(at + 4..at + 4 + len).ok_or("an entry cut short")?;
        entries.push(entry.to_vec());
        at += 4 + len;
    }
    if entries.len() != count as usize {
        return Err(format!("a pack of {} entries, not {count}", entries.len()));
    }
    Ok(entries)
}

/// Splits `entries` into packs within the limits: the entries of each, in order.
pub fn split<'s, 'e>(entries: &'s [&'e [u8]]) -> Vec<&'s [&'e [u8]]> {
    let mut packs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, entry) in entries.iter().enumerate() {
        let full = i > start && (bytes + entry.len() > MAX_PACK_BYTES || i - start == MAX_ENTRIES as usize);
        if full {
            packs.push(&entries[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += entry.len() + 4;
    }
    if start < entries.len() {
        packs.push(&entries[start..]);
    }
    packs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_as_packed_compressed_or_not() {
        let report =
            br#"{"device_id":"A-0042","seq":17,"t":"2026-01-01T12:00:00Z","lat":49.28,"lon":-123.12}"#;
        let many: Vec<&[u8]> = vec![report.as_slice(); 40];
        let body = pack(many.iter().copied());
        assert_eq!(body[0], ZSTD);
        assert!(body.len() * 4 < 40 * report.len(), "{} bytes for {}", body.len(), 40 * report.len());
        assert_eq!(unpack(&body, 40).unwrap(), vec![report.to_vec(); 40]);

        let one = pack([b"small".as_slice()]);
        assert_eq!(one[0], RAW);
        assert_eq!(one.len(), 5 + 4 + 5);
        assert_eq!(unpack(&one, 1).unwrap(), vec![b"small".to_vec()]);
        assert_eq!(unpack(&pack([b"".as_slice()]), 1).unwrap(), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn a_pack_that_does_not_fit_its_count_or_codec_is_an_error() {
        let body = pack([b"a".as_slice(), b"b".as_slice()]);
        assert!(unpack(&body, 3).is_err());
        assert!(unpack(&body[..body.len() - 1], 2).is_err());
        let mut other = body.clone();
        other[0] = 9;
        assert!(unpack(&other, 2).is_err());
        assert!(unpack(&[], 1).is_err());
    }

    #[test]
    fn packs_stay_within_their_limits() {
        let big = vec![0u8; MAX_PACK_BYTES];
        let small = [1u8; 100];
        let entries: Vec<&[u8]> = vec![&small, &small, &big, &small];
        let packs = split(&entries);
        assert_eq!(packs.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![2, 1, 1]);
        let many: Vec<&[u8]> = vec![b"x".as_slice(); MAX_ENTRIES as usize + 1];
        assert_eq!(split(&many).iter().map(|p| p.len()).collect::<Vec<_>>(), vec![MAX_ENTRIES as usize, 1]);
        assert!(split(&[]).is_empty());
    }
}
