//! The write-ahead log of one dataset: numbered records in segment files, appended by one
//! writer and read back in order after a crash.
//!
//! ```text
//! <dir>/<first seq, 20 digits>.wal   a segment: the 8-byte magic, then records
//! record = len: u32 LE | crc: u32 LE | seq: u64 LE | body (len bytes)
//! ```
//!
//! `crc` is CRC-32 of the seq's bytes and the body, so a record torn by a crash, or damaged
//! on disk, is found and never replayed as data. Sequence numbers grow by one across
//! segments. A segment is deleted once every record in it is released (committed to the
//! dataset); the newest segment is the one appended to.
//!
//! A crash can leave the last write of the newest segment half on disk: that write was never
//! synced, so nobody was told it was stored, and it is cut off at open. An invalid record
//! anywhere else is damage: the rest of that segment is moved to `damaged/` (kept for an
//! operator) and reported, and the log goes on with the next segment.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::IoError;

const MAGIC: &[u8; 8] = b"ODFGWAL\x01";
const RECORD_HEADER: usize = 16;
/// A length beyond this is damage, not a record: the gateway never writes one so big.
pub const MAX_RECORD: usize = 256 * 1024 * 1024;
const SUFFIX: &str = ".wal";
const DAMAGED: &str = "damaged";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("a write-ahead log record of {0} bytes is over the limit of {MAX_RECORD}")]
    TooBig(usize),
    /// A write or sync failed earlier: what the file holds is not known, so nothing more is
    /// appended to it until a restart reads it back.
    #[error(
        "the write-ahead log failed earlier and takes nothing more; restart the gateway (it reads the log back)"
    )]
    Failed,
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |error| WalError::Io(IoError { action, path: path.to_owned(), error })
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub body: Vec<u8>,
}

/// What opening the log found and repaired.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Records in the log (released or not).
    pub records: u64,
    /// Bytes of an unsynced write cut off the end of the newest segment.
    pub torn_bytes: u64,
    /// Damaged parts of older segments, moved aside: (file it was moved to, bytes).
    pub damaged: Vec<(PathBuf, u64)>,
}

#[derive(Debug, Clone)]
struct Segment {
    first: u64,
    /// The last seq written into it; `None` while it is empty.
    last: Option<u64>,
    path: PathBuf,
}

/// The log, open for appending. Not thread-safe by itself: one thread owns it.
pub struct Wal {
    dir: PathBuf,
    segments: Vec<Segment>,
    file: File,
    len: u64,
    next_seq: u64,
    segment_bytes: u64,
    failed: bool,
}

impl Wal {
    /// Opens the log in `dir` (created if missing), cutting off a torn last write and moving
    /// damaged records aside. The next record gets a seq above every record in the log and
    /// above `floor` (the highest seq already recorded elsewhere), so numbers never repeat
    /// even if the log's files were deleted.
    pub fn open(dir: &Path, segment_bytes: u64, floor: u64) -> Result<(Wal, Recovery), WalError> {
        fs::create_dir_all(dir).map_err(io_error("create folder", dir))?;
        let mut recovery = Recovery::default();
        let mut segments = list_segments(dir)?;
        let newest = segments.len().saturating_sub(1);
        for (i, segment) in segments.iter_mut().enumerate() {
            let scan = scan(&segment.path)?;
            recovery.records += scan.records;
            segment.last = scan.last;
            if scan.valid_len == scan.file_len {
                continue;
            }
            let bad = scan.file_len - scan.valid_len;
            if i == newest {
                recovery.torn_bytes = bad;
            } else {
                recovery.damaged.push((move_aside(dir, segment, scan.valid_len)?, bad));
            }
            let file = OpenOptions::new()
                .write(true)
                .open(&segment.path)
                .map_err(io_error("open", &segment.path))?;
            file.set_len(scan.valid_len).map_err(io_error("truncate", &segment.path))?;
            file.sync_all().map_err(io_error("sync", &segment.path))?;
        }
        let last_seq = segments.iter().rev().find_map(|s| s.last).unwrap_or(0);
        let next_seq = last_seq.max(floor) + 1;
        // The newest segment is appended to only if the next record follows on in it and it
        // starts with its magic; otherwise (an empty file a crash left while creating it, a
        // floor above its records) a new segment is begun, so no record ever lands where a
        // reader would stop before it.
        let continues = |s: &Segment| match s.last {
            Some(last) => last + 1 == next_seq,
            None => s.first == next_seq && fs::metadata(&s.path).is_ok_and(|m| m.len() >= MAGIC.len() as u64),
        };
        let segment = match segments.pop() {
            Some(last) if continues(&last) => last,
            Some(last) => {
                if last.last.is_some() {
                    segments.push(last);
                }
                new_segment(dir, next_seq)?
            }
            None => new_segment(dir, next_seq)?,
        };
        let file =
            OpenOptions::new().append(true).open(&segment.path).map_err(io_error("open", &segment.path))?;
        let len = file.metadata().map_err(io_error("stat", &segment.path))?.len();
        segments.push(segment);
        let wal = Wal {
            dir: dir.to_owned(),
            segments,
            file,
            len,
            next_seq,
            segment_bytes: segment_bytes.max(4096),
            failed: false,
        };
        Ok((wal, recovery))
    }

    /// The seq the next appended record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every record with a seq above `after`, oldest first, read from disk.
    pub fn read_after(&self, after: u64) -> impl Iterator<Item = Result<Record, WalError>> + use<> {
        let paths: Vec<PathBuf> = self
            .segments
            .iter()
            .filter(|s| s.last.is_some_and(|last| last > after))
            .map(|s| s.path.clone())
            .collect();
        paths
            .into_iter()
            .flat_map(|path| match SegmentReader::open(&path) {
                Ok(reader) => Box::new(reader) as Box<dyn Iterator<Item = Result<Record, WalError>>>,
                Err(e) => Box::new(std::iter::once(Err(e))),
            })
            .filter(move |r| r.as_ref().map_or(true, |r| r.seq > after))
    }

    /// Appends records (not yet durable: call `sync`); returns the seq of the first.
    pub fn append<'b>(&mut self, bodies: impl IntoIterator<Item = &'b [u8]>) -> Result<u64, WalError> {
        if self.len >= self.segment_bytes {
            self.rotate()?;
        }
        if self.failed {
            return Err(WalError::Failed);
        }
        let first = self.next_seq;
        let mut buffer = Vec::new();
        let mut seq = first;
        for body in bodies {
            if body.len() > MAX_RECORD {
                return Err(WalError::TooBig(body.len()));
            }
            encode(seq, body, &mut buffer);
            seq += 1;
        }
        if seq == first {
            return Ok(first);
        }
        let path = &self.segments[self.segments.len() - 1].path;
        if let Err(e) = self.file.write_all(&buffer) {
            // A partial write must not stay under later records: cut back to what was there,
            // and if even that fails, take nothing more.
            if self.file.set_len(self.len).is_err() {
                self.failed = true;
            }
            return Err(io_error("append to", path)(e));
        }
        self.len += buffer.len() as u64;
        self.next_seq = seq;
        if let Some(segment) = self.segments.last_mut() {
            segment.last = Some(seq - 1);
        }
        Ok(first)
    }

    /// Waits until every record appended is on disk.
    /// A failed sync leaves the file's state unknown (the kernel may have dropped the
    /// pages): the log then takes nothing more.
    pub fn sync(&mut self) -> Result<(), WalError> {
        let path = &self.segments[self.segments.len() - 1].path;
        let synced = self.file.sync_data().map_err(io_error("sync", path));
        if synced.is_err() {
            self.failed = true;
        }
        synced
    }

    /// Deletes the segments whose records all have seqs up to `upto` (committed elsewhere).
    /// The newest segment stays; it is deleted after it has been rotated out.
    pub fn release(&mut self, upto: u64) -> Result<(), WalError> {
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[0].last.is_none_or(|last| last <= upto) {
            let segment = self.segments.remove(0);
            fs::remove_file(&segment.path).map_err(io_error("remove", &segment.path))?;
            removed = true;
        }
        if removed {
            crate::store::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Begins a new segment if the current one holds records, so that they can be released
    /// as a whole (done after a replay: what was replayed is then deleted once committed).
    pub fn rotate(&mut self) -> Result<(), WalError> {
        if self.segments.last().is_some_and(|s| s.last.is_none()) {
            return Ok(());
        }
        self.sync()?;
        let segment = new_segment(&self.dir, self.next_seq)?;
        self.file =
            OpenOptions::new().append(true).open(&segment.path).map_err(io_error("open", &segment.path))?;
        self.len = MAGIC.len() as u64;
        self.segments.push(segment);
        Ok(())
    }
}

fn encode(seq: u64, body: &[u8], out: &mut Vec<u8>) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(body);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SUFFIX}"))
}

fn new_segment(dir: &Path, first: u64) -> Result<Segment, WalError> {
    let path = segment_path(dir, first);
    let mut file = File::create(&path).map_err(io_error("create", &path))?;
    file.write_all(MAGIC).map_err(io_error("write", &path))?;
    file.sync_all().map_err(io_error("sync", &path))?;
    crate::store::sync_dir(dir)?;
    Ok(Segment { first, last: None, path })
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        let name = entry.file_name();
        let Some(first) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)).and_then(|n| n.parse().ok())
        else {
            continue;
        };
        segments.push(Segment { first, last: None, path: entry.path() });
    }
    segments.sort_by_key(|s| s.first);
    Ok(segments)
}

/// Moves the part of `segment` after `valid_len` into `damaged/`, for an operator.
fn move_aside(dir: &Path, segment: &Segment, valid_len: u64) -> Result<PathBuf, WalError> {
    let damaged = dir.join(DAMAGED);
    fs::create_dir_all(&damaged).map_err(io_error("create folder", &damaged))?;
    let target = damaged.join(format!("{:020}-at-{valid_len}", segment.first));
    let mut from = File::open(&segment.path).map_err(io_error("open", &segment.path))?;
    from.seek(SeekFrom::Start(valid_len)).map_err(io_error("seek", &segment.path))?;
    let mut bytes = Vec::new();
    from.read_to_end(&mut bytes).map_err(io_error("read", &segment.path))?;
    crate::store::write_atomic(&target, &bytes)?;
    Ok(target)
}

struct Scan {
    records: u64,
    last: Option<u64>,
    valid_len: u64,
    file_len: u64,
}

/// Reads a segment through, finding where its valid records end.
fn scan(path: &Path) -> Result<Scan, WalError> {
    let file_len = fs::metadata(path).map_err(io_error("stat", path))?.len();
    let mut reader = SegmentReader::open(path)?;
    let (mut records, mut last) = (0, None);
    for record in reader.by_ref() {
        let record = record?;
        records += 1;
        last = Some(record.seq);
    }
    // A segment without even its magic (a crash while creating it) is empty.
    let valid_len = reader.valid_len.min(file_len);
    Ok(Scan { records, last, valid_len, file_len })
}

/// The records of one segment, in order, up to the first invalid one.
struct SegmentReader {
    input: BufReader<File>,
    path: PathBuf,
    /// Bytes read that form valid records (with the magic).
    valid_len: u64,
    /// The seq the next record must have (`None` before the first).
    expected: Option<u64>,
    done: bool,
}

impl SegmentReader {
    fn open(path: &Path) -> Result<SegmentReader, WalError> {
        let file = File::open(path).map_err(io_error("open", path))?;
        let mut input = BufReader::with_capacity(64 * 1024, file);
        let mut magic = [0u8; 8];
        let done = match read_full(&mut input, &mut magic).map_err(io_error("read", path))? {
            true => &magic != MAGIC,
            false => true,
        };
        let valid_len = if done { 0 } else { MAGIC.len() as u64 };
        Ok(SegmentReader { input, path: path.to_owned(), valid_len, expected: None, done })
    }
}

impl Iterator for SegmentReader {
    type Item = Result<Record, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match decode_next(&mut self.input, self.expected) {
            Ok(Some(record)) => {
                self.valid_len += (RECORD_HEADER + record.body.len()) as u64;
                self.expected = Some(record.seq + 1);
                Some(Ok(record))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(io_error("read", &self.path)(e)))
            }
        }
    }
}

/// The next valid record, or `None` at the end or at the first invalid one.
fn decode_next(input: &mut impl Read, expected: Option<u64>) -> io::Result<Option<Record>> {
    let mut header = [0u8; RECORD_HEADER];
    if !read_full(input, &mut header)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let seq = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    if len > MAX_RECORD || expected.is_some_and(|e| e != seq) {
        return Ok(None);
    }
    let mut body = Vec::new();
    if (input.take(len as u64).read_to_end(&mut body)?) < len {
        return Ok(None);
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&body);
    if hasher.finalize() != crc {
        return Ok(None);
    }
    Ok(Some(Record { seq, body }))
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bodies(wal: &Wal, after: u64) -> Vec<(u64, Vec<u8>)> {
        wal.read_after(after).map(|r| r.map(|r| (r.seq, r.body)).unwrap()).collect()
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, recovery) = Wal::open(dir.path(), 4096, 0).unwrap();
        assert_eq!(recovery.records, 0);
        for i in 0..100u32 {
            let body = vec![i as u8; 100];
            assert_eq!(wal.append([body.as_slice()]).unwrap(), u64::from(i) + 1);
            wal.sync().unwrap();
        }
        assert!(list_segments(dir.path()).unwrap().len() > 1);
        drop(wal);
        let (wal, recovery) = Wal::open(dir.path(), 4096, 0).unwrap();
        assert_eq!((recovery.records, recovery.torn_bytes), (100, 0));
        let read = bodies(&wal, 40);
        assert_eq!(read.len(), 60);
        assert_eq!(read[0], (41, vec![40u8; 100]));
        assert_eq!(wal.next_seq(), 101);
    }

    #[test]
    fn release_removes_whole_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 4096, 0).unwrap();
        for _ in 0..100 {
            wal.append([[7u8; 200].as_slice()]).unwrap();
        }
        let before = list_segments(dir.path()).unwrap().len();
        wal.release(50).unwrap();
        let after = list_segments(dir.path()).unwrap();
        assert!(after.len() < before);
        // Every record above 50 is still there.
        assert_eq!(bodies(&wal, 50).len(), 50);
        wal.release(u64::MAX).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_torn_last_write_is_cut_and_numbering_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        wal.append([b"one".as_slice(), b"two".as_slice()]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let mut torn = Vec::new();
        encode(3, b"three", &mut torn);
        file.write_all(&torn[..torn.len() - 2]).unwrap();
        drop(file);
        let (mut wal, recovery) = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        assert_eq!((recovery.records, recovery.torn_bytes), (2, torn.len() as u64 - 2));
        assert_eq!(wal.append([b"3".as_slice()]).unwrap(), 3);
        assert_eq!(bodies(&wal, 0).iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn damage_in_an_older_segment_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 4096, 0).unwrap();
        for _ in 0..60 {
            wal.append([[1u8; 200].as_slice()]).unwrap();
        }
        drop(wal);
        let first = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&first).unwrap();
        let at = MAGIC.len() + 2 * (RECORD_HEADER + 200) + RECORD_HEADER + 5;
        bytes[at] ^= 0xff;
        fs::write(&first, &bytes).unwrap();
        let (wal, recovery) = Wal::open(dir.path(), 4096, 0).unwrap();
        assert_eq!(recovery.damaged.len(), 1);
        assert!(recovery.damaged[0].0.exists());
        let seqs: Vec<u64> = bodies(&wal, 0).iter().map(|(s, _)| *s).collect();
        assert_eq!(&seqs[..2], &[1, 2]);
        assert!(!seqs.contains(&3));
        assert_eq!(seqs.last(), Some(&60));
    }

    #[test]
    fn a_raised_floor_or_a_torn_new_segment_never_hides_later_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        wal.append([b"1".as_slice(), b"2".as_slice()]).unwrap();
        drop(wal);
        // The dataset records seq 10 (this log's later segments were lost): numbering jumps,
        // in a new segment, so a reader of the old one never stops at a gap.
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 10).unwrap();
        assert_eq!(wal.append([b"11".as_slice()]).unwrap(), 11);
        drop(wal);
        // A crash while creating a segment leaves it without its magic.
        fs::write(segment_path(dir.path(), 12), b"ODF").unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        assert_eq!(wal.append([b"12".as_slice()]).unwrap(), 12);
        drop(wal);
        let (wal, _) = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        let seqs: Vec<u64> = bodies(&wal, 0).iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2, 11, 12]);
    }

    #[test]
    fn numbering_starts_above_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 4096, 500).unwrap();
        assert_eq!(wal.append([b"x".as_slice()]).unwrap(), 501);
        drop(wal);
        let (wal, _) = Wal::open(dir.path(), 4096, 10).unwrap();
        assert_eq!(wal.next_seq(), 502);
    }

    proptest! {
        /// Whatever bytes a segment holds, reading it never panics and yields only records
        /// that were written whole.
        #[test]
        fn any_segment_bytes_read_safely(noise in proptest::collection::vec(any::<u8>(), 0..2048), cut in 0usize..4096) {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = MAGIC.to_vec();
            encode(1, b"good", &mut bytes);
            bytes.extend_from_slice(&noise);
            bytes.truncate(cut.max(MAGIC.len()));
            fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
            let (wal, _) = Wal::open(dir.path(), 4096, 0).unwrap();
            for record in wal.read_after(0) {
                let record = record.unwrap();
                prop_assert!(record.seq == 1 && record.body == b"good" || record.seq > 1);
            }
        }
    }
}
