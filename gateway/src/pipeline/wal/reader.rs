//! Reading a segment's records in order, once `open` has repaired it.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::pack;
use super::record::{self, Header, Version};
use super::{Record, WalError, io_error};

/// The records of one segment, in order, up to the first invalid one (after `open` has
/// repaired it, that is its end).
pub(super) struct SegmentReader {
    input: BufReader<File>,
    path: PathBuf,
    version: Version,
    salt: u64,
    /// The last seq of the record before (`None` before the first).
    previous: Option<u64>,
    /// Entries of the record read last not yet handed out.
    unpacked: std::collections::VecDeque<Record>,
    done: bool,
}

impl SegmentReader {
    pub(super) fn open(path: &Path) -> Result<SegmentReader, WalError> {
        let file = File::open(path).map_err(io_error("open", path))?;
        let mut input = BufReader::with_capacity(64 * 1024, file);
        let mut head = [0u8; 32];
        let mut read = |bytes: &mut [u8]| read_full(&mut input, bytes).map_err(io_error("read", path));
        let found = match read(&mut head[..8])?.then(|| Version::of_magic(&head[..8])).flatten() {
            Some(version @ (Version::V2 | Version::V3)) => {
                let n = version.segment_header_len();
                read(&mut head[8..n])?.then(|| record::read_salt(&head[..n])).flatten().map(|s| (version, s))
            }
            Some(Version::V1) => Some((Version::V1, 0)),
            None => None,
        };
        let (version, salt) = found.unwrap_or((Version::V3, 0));
        Ok(SegmentReader {
            input,
            path: path.to_owned(),
            version,
            salt,
            previous: None,
            unpacked: Default::default(),
            done: found.is_none(),
        })
    }
}

impl Iterator for SegmentReader {
    type Item = Result<Record, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(record) = self.unpacked.pop_front() {
            return Some(Ok(record));
        }
        if self.done {
            return None;
        }
        let failed = |e| io_error("read", &self.path)(e);
        match decode_next(&mut self.input, self.version, self.salt, self.previous) {
            Ok(Some((header, body))) => {
                self.previous = Some(header.last_seq());
                if self.version != Version::V3 {
                    return Some(Ok(Record { seq: header.seq, body }));
                }
                match pack::unpack(&body, header.count) {
                    Ok(entries) => {
                        let seqs = header.seq..;
                        self.unpacked.extend(seqs.zip(entries).map(|(seq, body)| Record { seq, body }));
                        self.unpacked.pop_front().map(Ok)
                    }
                    Err(problem) => {
                        self.done = true;
                        let problem = format!("record {}: {problem}", header.seq);
                        Some(Err(failed(io::Error::new(io::ErrorKind::InvalidData, problem))))
                    }
                }
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(failed(e)))
            }
        }
    }
}

/// The next valid record, or `None` at the end or at the first invalid one. Seqs grow,
/// with gaps where damage was taken out.
fn decode_next(
    input: &mut impl Read,
    version: Version,
    salt: u64,
    previous: Option<u64>,
) -> io::Result<Option<(Header, Vec<u8>)>> {
    let mut bytes = [0u8; record::MAX_HEADER];
    let header_bytes = &mut bytes[..version.header_len()];
    if !read_full(input, header_bytes)? {
        return Ok(None);
    }
    let Some(header) = record::parse_header(version, salt, header_bytes) else {
        return Ok(None);
    };
    if previous.is_some_and(|p| header.seq <= p) {
        return Ok(None);
    }
    let mut body = Vec::new();
    if (input.take(header.len as u64).read_to_end(&mut body)?) < header.len {
        return Ok(None);
    }
    if record::body_crc(header.seq, &body) != header.body_crc {
        return Ok(None);
    }
    Ok(Some((header, body)))
}

/// Fills `buf`; `false` if the input ended first (a torn or empty tail).
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
