//! The write-ahead log of one dataset: numbered records in segment files, appended by one
//! writer and read back in order after a crash.
//!
//! ```text
//! <dir>/<first seq, 20 digits>.wal   a segment: an 8-byte magic, then records (record.rs)
//! <dir>/damaged/                     damaged bytes found at open, kept for an operator
//! ```
//!
//! Sequence numbers grow across segments. A segment is deleted once every record in it is
//! released (committed to the dataset); the newest segment is the one appended to.
//!
//! A crash can leave the last write of the newest segment half on disk: that write was never
//! synced, so nobody was told it was stored, and it is cut off quietly at open. Anything
//! else that does not check out is damage (an SD card flips bytes): the records after it
//! that check out are kept, the damaged bytes are moved to `damaged/` under a name that
//! says the segment, the byte range and the seqs of the records they held, and each open
//! reports every range kept there until an operator removes it.

mod record;
mod recover;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use self::record::{MAGIC, Version};
use crate::store::IoError;

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

/// The seqs of the records that damaged bytes held, as far as the framing tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostSeqs {
    /// No record: the damage was in the segment's magic, say.
    None,
    /// From the first to the last, both included.
    Range(u64, u64),
    /// From this one to an unknown last (damage at the end of the newest segment).
    From(u64),
}

impl std::fmt::Display for LostSeqs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LostSeqs::None => f.write_str("none"),
            LostSeqs::Range(first, last) => write!(f, "{first}-{last}"),
            LostSeqs::From(first) => write!(f, "{first}-"),
        }
    }
}

/// A range of damaged bytes kept in `damaged/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment it was in (its file name).
    pub segment: String,
    /// Where it was in the segment: `start..end`.
    pub start: u64,
    pub end: u64,
    pub seqs: LostSeqs,
    /// The file the bytes were moved to.
    pub kept_in: PathBuf,
    /// Found by this open, not by an earlier one.
    pub found_now: bool,
}

/// What opening the log found and repaired.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Records in the log (released or not).
    pub records: u64,
    /// Bytes of an unsynced write cut off the end of the newest segment.
    pub torn_bytes: u64,
    /// Every damaged range kept in `damaged/`, found now or earlier.
    pub damage: Vec<Damage>,
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
    /// damaged bytes aside. The next record gets a seq above every record in the log, above
    /// any a damaged range may have held, and above `floor` (the highest seq already
    /// recorded elsewhere), so numbers never repeat even if the log's files were deleted.
    /// Records up to `committed` are in the dataset: damage to them loses nothing.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        floor: u64,
        committed: u64,
    ) -> Result<(Wal, Recovery), WalError> {
        fs::create_dir_all(dir).map_err(io_error("create folder", dir))?;
        let mut recovery = Recovery::default();
        let mut segments = list_segments(dir)?;
        let firsts: Vec<u64> = segments.iter().map(|s| s.first).collect();
        let mut next_seq = floor + 1;
        let mut kept = Vec::new();
        for (i, segment) in segments.iter_mut().enumerate() {
            let newest = i + 1 == firsts.len();
            let found = repair(dir, segment, newest, firsts.get(i + 1).copied(), committed)?;
            recovery.records += found.records;
            recovery.torn_bytes += found.torn_bytes;
            segment.last = found.last;
            next_seq = next_seq.max(found.next_seq);
            kept.extend(found.kept);
        }
        recovery.damage = list_damage(dir)?;
        for damage in &mut recovery.damage {
            damage.found_now = kept.contains(&damage.kept_in);
        }
        // The newest segment is appended to only if the next record follows on in it and it
        // starts with its magic; otherwise (an empty file a crash left while creating it, a
        // floor above its records, a version 1 segment) a new segment is begun, so no
        // record ever lands where a reader would stop before it.
        let continues = |s: &Segment| {
            let follows = match s.last {
                Some(last) => last + 1 == next_seq,
                None => s.first == next_seq,
            };
            follows && segment_version(&s.path) == Some(Version::V2)
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
            record::encode(seq, body, &mut buffer);
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

/// What one segment held, after repairing it.
struct Repaired {
    records: u64,
    last: Option<u64>,
    torn_bytes: u64,
    /// The lowest seq the log may use next, past any the damage may have held.
    next_seq: u64,
    /// Where the damage found was moved to.
    kept: Vec<PathBuf>,
}

/// Reads a segment through; cuts a torn tail off the newest one, and moves damaged bytes
/// aside, leaving the segment with only its valid records. `next_first` is the first seq
/// of the segment after this one, if there is one; records up to `committed` are not lost.
fn repair(
    dir: &Path,
    segment: &Segment,
    newest: bool,
    next_first: Option<u64>,
    committed: u64,
) -> Result<Repaired, WalError> {
    let path = &segment.path;
    let file = File::open(path).map_err(io_error("open", path))?;
    let scan = recover::scan(&file, segment.first).map_err(io_error("read", path))?;
    let mut found = Repaired {
        records: scan.records,
        last: scan.last_seq,
        torn_bytes: 0,
        next_seq: scan.last_seq.map_or(0, |s| s + 1),
        kept: Vec::new(),
    };
    if scan.is_clean() {
        return Ok(found);
    }
    let mut damaged = scan.damaged.clone();
    let mut cut_at = scan.file_len;
    match &scan.tail {
        Some((tail, true)) if newest => {
            found.torn_bytes = tail.end - tail.start;
            cut_at = tail.start;
        }
        Some((tail, _)) => damaged.push(tail.clone()),
        None => {}
    }
    for range in &damaged {
        let first = range.before.map_or(segment.first, |s| s + 1);
        let lost_first = first.max(committed + 1);
        let seqs = match range.after.or(next_first) {
            Some(after) if after > lost_first => LostSeqs::Range(lost_first, after - 1),
            Some(_) => LostSeqs::None,
            None => {
                // Nothing after it tells how many records it held: reserve as many seqs as
                // could fit, so that new records never take the numbers of lost ones.
                let most = (range.end - range.start) / Version::V2.header_len() as u64;
                found.next_seq = found.next_seq.max(first + most + 1);
                LostSeqs::From(lost_first)
            }
        };
        found.kept.push(keep_aside(dir, segment, &file, range, seqs)?);
    }
    if damaged.is_empty() {
        // Only a torn tail: cut it off.
        let file = OpenOptions::new().write(true).open(path).map_err(io_error("open", path))?;
        file.set_len(cut_at).map_err(io_error("truncate", path))?;
        file.sync_all().map_err(io_error("sync", path))?;
    } else {
        rewrite(segment, &file, &scan)?;
    }
    Ok(found)
}

/// Replaces the segment by its magic and its valid records, so that it reads straight
/// through from then on.
fn rewrite(segment: &Segment, file: &File, scan: &recover::Scan) -> Result<(), WalError> {
    let path = &segment.path;
    let magic = match scan.version {
        Version::V1 => record::MAGIC_V1,
        Version::V2 => MAGIC,
    };
    let mut bytes = magic.to_vec();
    for &(start, end) in &scan.valid {
        let at = bytes.len();
        bytes.resize(at + (end - start) as usize, 0);
        file.read_exact_at(&mut bytes[at..], start).map_err(io_error("read", path))?;
    }
    crate::store::write_atomic(path, &bytes)?;
    Ok(())
}

/// Copies a damaged range of `segment` into `damaged/`, named after the segment, the range
/// and the seqs it held.
fn keep_aside(
    dir: &Path,
    segment: &Segment,
    file: &File,
    range: &recover::Invalid,
    seqs: LostSeqs,
) -> Result<PathBuf, WalError> {
    let damaged = dir.join(DAMAGED);
    fs::create_dir_all(&damaged).map_err(io_error("create folder", &damaged))?;
    let mut bytes = vec![0u8; (range.end - range.start) as usize];
    file.read_exact_at(&mut bytes, range.start).map_err(io_error("read", &segment.path))?;
    let name = format!("{:020}-bytes-{}-{}-seqs-{seqs}", segment.first, range.start, range.end);
    let target = damaged.join(name);
    crate::store::write_atomic(&target, &bytes)?;
    Ok(target)
}

/// Every damaged range kept in `damaged/`, read back from the files' names (those of
/// earlier versions, `<segment>-at-<offset>`, hold the rest of the segment from there).
fn list_damage(dir: &Path) -> Result<Vec<Damage>, WalError> {
    let folder = dir.join(DAMAGED);
    let entries = match fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list", &folder)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("list", &folder))?;
        let (Some(name), Ok(meta)) = (entry.file_name().to_str().map(str::to_owned), entry.metadata()) else {
            continue;
        };
        if let Some(damage) = parse_damage_name(&name, meta.len(), entry.path()) {
            found.push(damage);
        }
    }
    found.sort_by(|a, b| (&a.segment, a.start).cmp(&(&b.segment, b.start)));
    Ok(found)
}

fn parse_damage_name(name: &str, size: u64, kept_in: PathBuf) -> Option<Damage> {
    let (first, rest) = name.split_once('-')?;
    let first: u64 = first.parse().ok()?;
    let segment = format!("{first:020}{SUFFIX}");
    if let Some(at) = rest.strip_prefix("at-") {
        let start: u64 = at.parse().ok()?;
        let end = start + size;
        return Some(Damage { segment, start, end, seqs: LostSeqs::From(first), kept_in, found_now: false });
    }
    let (range, seqs) = rest.strip_prefix("bytes-")?.split_once("-seqs-")?;
    let (start, end) = range.split_once('-')?;
    let seqs = match seqs {
        "none" => LostSeqs::None,
        s => match s.split_once('-')? {
            (lo, "") => LostSeqs::From(lo.parse().ok()?),
            (lo, hi) => LostSeqs::Range(lo.parse().ok()?, hi.parse().ok()?),
        },
    };
    Some(Damage {
        segment,
        start: start.parse().ok()?,
        end: end.parse().ok()?,
        seqs,
        kept_in,
        found_now: false,
    })
}

fn segment_version(path: &Path) -> Option<Version> {
    let mut magic = [0u8; 8];
    let file = File::open(path).ok()?;
    file.read_exact_at(&mut magic, 0).ok()?;
    Version::of_magic(&magic)
}

/// The records of one segment, in order, up to the first invalid one (after `open` has
/// repaired it, that is its end).
struct SegmentReader {
    input: BufReader<File>,
    path: PathBuf,
    version: Version,
    /// The seq of the record before (`None` before the first).
    previous: Option<u64>,
    done: bool,
}

impl SegmentReader {
    fn open(path: &Path) -> Result<SegmentReader, WalError> {
        let file = File::open(path).map_err(io_error("open", path))?;
        let mut input = BufReader::with_capacity(64 * 1024, file);
        let mut magic = [0u8; 8];
        let version = match read_full(&mut input, &mut magic).map_err(io_error("read", path))? {
            true => Version::of_magic(&magic),
            false => None,
        };
        Ok(SegmentReader {
            input,
            path: path.to_owned(),
            version: version.unwrap_or(Version::V2),
            previous: None,
            done: version.is_none(),
        })
    }
}

impl Iterator for SegmentReader {
    type Item = Result<Record, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match decode_next(&mut self.input, self.version, self.previous) {
            Ok(Some(record)) => {
                self.previous = Some(record.seq);
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

/// The next valid record, or `None` at the end or at the first invalid one. Seqs grow,
/// with gaps where damage was taken out.
fn decode_next(input: &mut impl Read, version: Version, previous: Option<u64>) -> io::Result<Option<Record>> {
    let mut bytes = [0u8; 24];
    let header_bytes = &mut bytes[..version.header_len()];
    if !read_full(input, header_bytes)? {
        return Ok(None);
    }
    let Some(header) = record::parse_header(version, header_bytes) else {
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
    Ok(Some(Record { seq: header.seq, body }))
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
        let (mut wal, recovery) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
        assert_eq!(recovery.records, 0);
        for i in 0..100u32 {
            let body = vec![i as u8; 100];
            assert_eq!(wal.append([body.as_slice()]).unwrap(), u64::from(i) + 1);
            wal.sync().unwrap();
        }
        assert!(list_segments(dir.path()).unwrap().len() > 1);
        drop(wal);
        let (wal, recovery) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
        assert_eq!((recovery.records, recovery.torn_bytes), (100, 0));
        let read = bodies(&wal, 40);
        assert_eq!(read.len(), 60);
        assert_eq!(read[0], (41, vec![40u8; 100]));
        assert_eq!(wal.next_seq(), 101);
    }

    #[test]
    fn release_removes_whole_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
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
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        wal.append([b"one".as_slice(), b"two".as_slice()]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let mut torn = Vec::new();
        record::encode(3, b"three", &mut torn);
        file.write_all(&torn[..torn.len() - 2]).unwrap();
        drop(file);
        let (mut wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        assert_eq!((recovery.records, recovery.torn_bytes), (2, torn.len() as u64 - 2));
        assert_eq!(wal.append([b"3".as_slice()]).unwrap(), 3);
        assert_eq!(bodies(&wal, 0).iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    const HEADER: usize = 24;

    fn seqs(wal: &Wal) -> Vec<u64> {
        bodies(wal, 0).iter().map(|(s, _)| *s).collect()
    }

    /// A log of `n` records of 100 bytes in one segment, closed.
    fn log_of(dir: &Path, n: u64) -> PathBuf {
        let (mut wal, _) = Wal::open(dir, 1 << 20, 0, 0).unwrap();
        for i in 0..n {
            wal.append([vec![i as u8; 100].as_slice()]).unwrap();
        }
        wal.sync().unwrap();
        segment_path(dir, 1)
    }

    #[test]
    fn damage_in_an_older_segment_costs_only_the_records_it_touched() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
        for _ in 0..60 {
            wal.append([[1u8; 200].as_slice()]).unwrap();
        }
        drop(wal);
        let first = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&first).unwrap();
        let at = MAGIC.len() + 2 * (HEADER + 200) + HEADER + 5;
        bytes[at] ^= 0xff;
        fs::write(&first, &bytes).unwrap();
        let (wal, recovery) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
        assert_eq!(recovery.torn_bytes, 0);
        assert_eq!(recovery.damage.len(), 1);
        let damage = &recovery.damage[0];
        assert!(damage.found_now && damage.kept_in.exists());
        assert_eq!(damage.seqs, LostSeqs::Range(3, 3));
        assert_eq!(
            (damage.start, damage.end),
            ((MAGIC.len() + 2 * (HEADER + 200)) as u64, (MAGIC.len() + 3 * (HEADER + 200)) as u64)
        );
        let expected: Vec<u64> = (1..=60).filter(|&s| s != 3).collect();
        assert_eq!(seqs(&wal), expected);
        drop(wal);
        // Reported again at the next open, until an operator removes it.
        let (wal, recovery) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
        assert_eq!(recovery.damage.len(), 1);
        assert!(!recovery.damage[0].found_now);
        assert_eq!(seqs(&wal), expected);
    }

    #[test]
    fn one_flipped_byte_anywhere_loses_at_most_one_record_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_of(dir.path(), 6);
        let good = fs::read(&path).unwrap();
        for at in 0..good.len() {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = good.clone();
            bytes[at] ^= 0x10;
            fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
            let (mut wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
            let found = seqs(&wal);
            assert!(found.len() >= 5, "flip at {at}: {found:?}");
            assert_eq!(recovery.torn_bytes, 0, "flip at {at}");
            assert_eq!(recovery.damage.len(), 1, "flip at {at}");
            let touched = at.checked_sub(MAGIC.len()).map(|r| r / (HEADER + 100) as usize + 1);
            let expected = match touched {
                None => LostSeqs::None,
                Some(6) => LostSeqs::From(6),
                Some(seq) => LostSeqs::Range(seq as u64, seq as u64),
            };
            assert_eq!(recovery.damage[0].seqs, expected, "flip at {at}");
            // New records never take a lost record's number, and read back after a reopen.
            let next = wal.append([b"new".as_slice()]).unwrap();
            assert!(next >= 7, "flip at {at}: next seq {next}");
            wal.sync().unwrap();
            drop(wal);
            let (wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
            assert_eq!(seqs(&wal).last(), Some(&next));
        }
    }

    #[test]
    fn a_record_length_made_huge_costs_only_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_of(dir.path(), 100);
        let mut bytes = fs::read(&path).unwrap();
        bytes[MAGIC.len() + 4..MAGIC.len() + 8].copy_from_slice(&200_000_000u32.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let (wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        assert_eq!(seqs(&wal), (2..=100).collect::<Vec<_>>());
        assert_eq!(recovery.damage[0].seqs, LostSeqs::Range(1, 1));
    }

    #[test]
    fn damage_to_committed_records_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_of(dir.path(), 10);
        let mut bytes = fs::read(&path).unwrap();
        bytes[MAGIC.len() + 3 * (HEADER + 100) + HEADER + 1] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let (_, recovery) = Wal::open(dir.path(), 1 << 20, 5, 5).unwrap();
        assert_eq!(recovery.damage[0].seqs, LostSeqs::None);
    }

    #[test]
    fn a_segment_of_random_bytes_is_reported_with_the_seqs_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
        for _ in 0..60 {
            wal.append([[1u8; 200].as_slice()]).unwrap();
        }
        drop(wal);
        let segments = list_segments(dir.path()).unwrap();
        let (victim, next) = (&segments[1], &segments[2]);
        let len = fs::metadata(&victim.path).unwrap().len() as usize;
        let noise: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        fs::write(&victim.path, &noise).unwrap();
        let (wal, recovery) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
        assert_eq!(recovery.damage.len(), 1);
        assert_eq!(recovery.damage[0].seqs, LostSeqs::Range(victim.first, next.first - 1));
        let found = seqs(&wal);
        assert_eq!(found.len() as u64, 60 - (next.first - victim.first));
        assert_eq!(found.last(), Some(&60));
    }

    #[test]
    fn zeros_or_a_cut_record_at_the_end_are_a_torn_write_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_of(dir.path(), 3);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0u8; 4096]);
        fs::write(&path, &bytes).unwrap();
        let (wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        assert_eq!((recovery.torn_bytes, recovery.damage.len()), (4096, 0));
        assert_eq!(seqs(&wal), vec![1, 2, 3]);
    }

    #[test]
    fn version_1_segments_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = record::MAGIC_V1.to_vec();
        for seq in 1..=3u64 {
            let body = format!("v1 record {seq}");
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&record::body_crc(seq, body.as_bytes()).to_le_bytes());
            bytes.extend_from_slice(&seq.to_le_bytes());
            bytes.extend_from_slice(body.as_bytes());
        }
        fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
        let (mut wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        assert_eq!(recovery.records, 3);
        // Appends go to a new, version 2 segment.
        assert_eq!(wal.append([b"4".as_slice()]).unwrap(), 4);
        drop(wal);
        let (wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        let read = bodies(&wal, 0);
        assert_eq!(read.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(read[1].1, b"v1 record 2");
    }

    #[test]
    fn a_raised_floor_or_a_torn_new_segment_never_hides_later_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        wal.append([b"1".as_slice(), b"2".as_slice()]).unwrap();
        drop(wal);
        // The dataset records seq 10 (this log's later segments were lost): numbering jumps,
        // in a new segment, so a reader of the old one never stops at a gap.
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 10, 0).unwrap();
        assert_eq!(wal.append([b"11".as_slice()]).unwrap(), 11);
        drop(wal);
        // A crash while creating a segment leaves it without its magic.
        fs::write(segment_path(dir.path(), 12), b"ODF").unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        assert_eq!(wal.append([b"12".as_slice()]).unwrap(), 12);
        drop(wal);
        let (wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        let seqs: Vec<u64> = bodies(&wal, 0).iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2, 11, 12]);
    }

    #[test]
    fn numbering_starts_above_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 4096, 500, 0).unwrap();
        assert_eq!(wal.append([b"x".as_slice()]).unwrap(), 501);
        drop(wal);
        let (wal, _) = Wal::open(dir.path(), 4096, 10, 0).unwrap();
        assert_eq!(wal.next_seq(), 502);
    }

    proptest! {
        /// Whatever bytes a segment holds, reading it never panics and yields only records
        /// that were written whole.
        #[test]
        fn any_segment_bytes_read_safely(noise in proptest::collection::vec(any::<u8>(), 0..2048), cut in 0usize..4096) {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = MAGIC.to_vec();
            record::encode(1, b"good", &mut bytes);
            bytes.extend_from_slice(&noise);
            bytes.truncate(cut.max(MAGIC.len()));
            fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
            let (wal, _) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
            for record in wal.read_after(0) {
                let record = record.unwrap();
                prop_assert!(record.seq == 1 && record.body == b"good" || record.seq > 1);
            }
        }
    }
}
