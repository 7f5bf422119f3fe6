//! A segment read through at open: which bytes hold records that check out, which are the
//! unfinished last write of a crash, and which are damage. After damage, reading goes on at
//! the next record that checks out (found by its sync bytes and its header's own checksum),
//! so one flipped byte costs the records it touched, not every record after it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::record::{self, Header, SYNC, Version};

const WINDOW: usize = 64 * 1024;

/// Bytes of a segment that are not records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub start: u64,
    pub end: u64,
    /// The seq of the last valid record before it, and of the first after it.
    pub before: Option<u64>,
    pub after: Option<u64>,
}

#[derive(Debug)]
pub struct Scan {
    /// The segment's format (version 2 when its magic is damaged).
    pub version: Version,
    /// Its salt (version 2), if a copy of it checks out.
    pub salt: Option<u64>,
    pub file_len: u64,
    /// Byte ranges of valid records, neighbours merged, in order.
    pub valid: Vec<(u64, u64)>,
    pub records: u64,
    pub last_seq: Option<u64>,
    /// Invalid bytes with valid records after them: damage, whatever caused it.
    pub damaged: Vec<Invalid>,
    /// Invalid bytes at the end, and whether they look like a write a crash cut short.
    pub tail: Option<(Invalid, bool)>,
}

impl Scan {
    /// The valid records end where the file does.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.tail.is_none()
    }
}

/// What the bytes at one position are.
enum At {
    Valid(Header),
    /// A header that checks out, or too few bytes for one, cut off by the end of the file.
    Cut,
    /// A header that checks out over a body that does not.
    BadBody(Header),
    NotARecord,
}

/// Reads the segment in `file` through; `first` is the seq its name says it starts at.
///
/// The magics differ in one byte, so one flipped bit can make a segment's magic name another
/// version, or none: when the version named finds no record, every other version is tried,
/// and the one that finds records wins (its magic then counts as damage, and a rewrite puts
/// the right one back). A segment no version finds records in is read as the one named, or
/// as the current one.
pub fn scan(file: &File, first: u64) -> io::Result<Scan> {
    let file_len = file.metadata()?.len();
    let mut head = vec![0u8; (file_len as usize).min(Version::V3.segment_header_len())];
    file.read_exact_at(&mut head, 0)?;
    let named = head.get(..8).and_then(Version::of_magic);
    let (likely, intact) = match named {
        Some(version) => (version, true),
        None => (Version::V3, false),
    };
    let scan = scan_as(file, first, &head, likely, intact)?;
    if scan.records > 0 {
        return Ok(scan);
    }
    for version in [Version::V3, Version::V2, Version::V1] {
        if version != likely {
            let other = scan_as(file, first, &head, version, false)?;
            if other.records > 0 {
                return Ok(other);
            }
        }
    }
    Ok(scan)
}

fn scan_as(file: &File, first: u64, head: &[u8], version: Version, magic_intact: bool) -> io::Result<Scan> {
    let file_len = file.metadata()?.len();
    let salt = match version {
        Version::V2 | Version::V3 => record::read_salt(head),
        Version::V1 => Some(0),
    };
    let header_len = version.segment_header_len() as u64;
    let mut scan = Scan {
        version,
        salt,
        file_len,
        valid: Vec::new(),
        records: 0,
        last_seq: None,
        damaged: Vec::new(),
        tail: None,
    };
    if file_len < header_len || salt.is_none() {
        // A crash while the segment was being created, or no salt to check its records by.
        if file_len > 0 {
            scan.tail = Some((invalid(0, file_len, None), file_len < header_len));
        }
        return Ok(scan);
    }
    let salt = salt.unwrap_or_default();
    // A segment header that is not what it was written as (one copy of the salt damaged,
    // the magic) holds no record, but is damage all the same.
    let intact = match version {
        Version::V2 | Version::V3 => magic_intact && head == record::segment_header(version, salt),
        Version::V1 => magic_intact,
    };
    let mut bad: Option<Invalid> = (!intact).then(|| invalid(0, 0, None));
    let mut pos = header_len;
    while pos < file_len {
        let min_seq = scan.last_seq.map_or(first, |s| s + 1);
        match record_at(file, version, salt, pos, file_len, min_seq)? {
            At::Valid(header) => {
                if let Some(mut range) = bad.take() {
                    range.end = pos;
                    range.after = Some(header.seq);
                    scan.damaged.push(range);
                }
                let end = pos + header.record_len(version);
                match scan.valid.last_mut() {
                    Some(last) if last.1 == pos => last.1 = end,
                    _ => scan.valid.push((pos, end)),
                }
                scan.records += u64::from(header.count);
                scan.last_seq = Some(header.last_seq());
                pos = end;
            }
            found => {
                bad.get_or_insert_with(|| invalid(pos, pos, scan.last_seq));
                pos = match (found, version) {
                    // Its length checked out: the next record starts after it.
                    (At::BadBody(header), _) => pos + header.record_len(version),
                    // A record the end of the file cut short: nothing follows it.
                    (At::Cut, _) => file_len,
                    (_, v) if v.resyncs() => {
                        resync(file, v, salt, pos + 1, file_len, min_seq)?.unwrap_or(file_len)
                    }
                    // Version 1 records have nothing to find them by again.
                    _ => file_len,
                };
            }
        }
    }
    if let Some(mut range) = bad {
        range.end = file_len;
        let torn = looks_torn(file, version, salt, range.start, file_len)?;
        scan.tail = Some((range, torn));
    }
    Ok(scan)
}

fn invalid(start: u64, end: u64, before: Option<u64>) -> Invalid {
    Invalid { start, end, before, after: None }
}

fn record_at(
    file: &File,
    version: Version,
    salt: u64,
    pos: u64,
    file_len: u64,
    min_seq: u64,
) -> io::Result<At> {
    let header_len = version.header_len();
    if pos + header_len as u64 > file_len {
        return Ok(At::Cut);
    }
    let mut bytes = [0u8; record::MAX_HEADER];
    file.read_exact_at(&mut bytes[..header_len], pos)?;
    let Some(header) = record::parse_header(version, salt, &bytes[..header_len]).filter(|h| h.seq >= min_seq)
    else {
        return Ok(At::NotARecord);
    };
    let body_start = pos + header_len as u64;
    if body_start + header.len as u64 > file_len {
        return Ok(At::Cut);
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header.seq.to_le_bytes());
    let mut chunk = vec![0u8; header.len.min(WINDOW)];
    let mut done = 0;
    while done < header.len {
        let n = (header.len - done).min(chunk.len());
        file.read_exact_at(&mut chunk[..n], body_start + done as u64)?;
        hasher.update(&chunk[..n]);
        done += n;
    }
    Ok(if hasher.finalize() == header.body_crc { At::Valid(header) } else { At::BadBody(header) })
}

/// The position of the next valid record at or after `from`, found by its sync bytes and a
/// header that checks out with the segment's salt.
fn resync(
    file: &File,
    version: Version,
    salt: u64,
    from: u64,
    file_len: u64,
    min_seq: u64,
) -> io::Result<Option<u64>> {
    let mut window = vec![0u8; WINDOW];
    let mut at = from;
    while at + SYNC.len() as u64 <= file_len {
        let n = (file_len - at).min(WINDOW as u64) as usize;
        file.read_exact_at(&mut window[..n], at)?;
        for i in 0..=n - SYNC.len() {
            if window[i..i + SYNC.len()] == SYNC
                && let At::Valid(_) = record_at(file, version, salt, at + i as u64, file_len, min_seq)?
            {
                return Ok(Some(at + i as u64));
            }
        }
        if n < WINDOW {
            break;
        }
        // The windows overlap so that sync bytes across their border are seen once.
        at += (n - (SYNC.len() - 1)) as u64;
    }
    Ok(None)
}

/// Whether the invalid bytes from `start` to the end are what a crash leaves of an unsynced
/// append: fewer bytes than a header, a header that checks out over a body the end cut
/// short, or zeros (space the file system gave the file but never filled). Anything else
/// is damage.
fn looks_torn(file: &File, version: Version, salt: u64, start: u64, file_len: u64) -> io::Result<bool> {
    if let At::Cut = record_at(file, version, salt, start, file_len, 0)? {
        return Ok(true);
    }
    let mut window = vec![0u8; WINDOW];
    let mut at = start;
    while at < file_len {
        let n = (file_len - at).min(WINDOW as u64) as usize;
        file.read_exact_at(&mut window[..n], at)?;
        if window[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}
