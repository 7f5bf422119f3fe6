//! The write-ahead log of one dataset: numbered records in segment files, appended by one
//! writer and read back in order after a crash.
//!
//! ```text
//! <dir>/<first seq, 20 digits>.wal   a segment: its header (magic, salt), then records (record.rs)
//! <dir>/damaged/                     damaged bytes found at open, kept for an operator
//! <dir>/committed                    the seq up to which every record is committed (a note)
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

mod damage;
mod pack;
mod reader;
mod record;
mod recover;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use self::damage::{Damage, LostSeqs};
use self::damage::{keep_aside, list_damage};
use self::reader::SegmentReader;
use self::record::Version;
use crate::store::IoError;

/// A length beyond this is damage, not a record: the gateway never writes one so big.
pub const MAX_RECORD: usize = 256 * 1024 * 1024;
const SUFFIX: &str = ".wal";
/// A note of the seq up to which every record is committed.
const COMMITTED: &str = "committed";

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
    /// Every damaged range kept in `damaged/`, found now or earlier.
    pub damage: Vec<Damage>,
}

#[derive(Debug, Clone)]
struct Segment {
    first: u64,
    /// The last seq written into it; `None` while it is empty.
    last: Option<u64>,
    path: PathBuf,
    /// What its record headers are checked with (record.rs).
    salt: u64,
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
    /// The salt of the segment appended to.
    salt: u64,
    /// The highest seq written to `COMMITTED`.
    noted_committed: u64,
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
        let committed = committed.max(read_committed(dir));
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
            segment.salt = found.salt;
            next_seq = next_seq.max(found.next_seq);
            kept.extend(found.kept);
        }
        recovery.damage = list_damage(dir)?;
        for damage in &mut recovery.damage {
            damage.found_now = kept.contains(&damage.kept_in);
        }
        // The newest segment is appended to only if the next record follows on in it and it
        // starts with its magic; otherwise (an empty file a crash left while creating it, a
        // floor above its records, a segment of an older version) a new segment is begun, so no
        // record ever lands where a reader would stop before it.
        let continues = |s: &Segment| {
            let follows = match s.last {
                Some(last) => last + 1 == next_seq,
                None => s.first == next_seq,
            };
            follows && segment_version(&s.path) == Some(Version::V3)
        };
        let segment = match segments.pop() {
            Some(last) if continues(&last) => last,
            Some(last) => {
                if last.last.is_some() {
                    segments.push(last);
                } else if last.first != next_seq {
                    // Empty and of no use: it would pass for the newest segment next time.
                    fs::remove_file(&last.path).map_err(io_error("remove", &last.path))?;
                }
                new_segment(dir, next_seq)?
            }
            None => new_segment(dir, next_seq)?,
        };
        let file =
            OpenOptions::new().append(true).open(&segment.path).map_err(io_error("open", &segment.path))?;
        let len = file.metadata().map_err(io_error("stat", &segment.path))?.len();
        let salt = segment.salt;
        segments.push(segment);
        let wal = Wal {
            dir: dir.to_owned(),
            segments,
            file,
            len,
            next_seq,
            segment_bytes: segment_bytes.max(4096),
            failed: false,
            salt,
            noted_committed: committed,
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

    /// Appends entries, each with a seq of its own, packed into records together (not yet
    /// durable: call `sync`); returns the seq of the first.
    pub fn append<'b>(&mut self, bodies: impl IntoIterator<Item = &'b [u8]>) -> Result<u64, WalError> {
        if self.len >= self.segment_bytes {
            self.rotate()?;
        }
        if self.failed {
            return Err(WalError::Failed);
        }
        let bodies: Vec<&[u8]> = bodies.into_iter().collect();
        // An entry must unpack within the limit too, compressed or not.
        if let Some(big) = bodies.iter().find(|b| b.len() + pack::OVERHEAD > MAX_RECORD) {
            return Err(WalError::TooBig(big.len()));
        }
        let first = self.next_seq;
        let mut buffer = Vec::new();
        let mut seq = first;
        for entries in pack::split(&bodies) {
            let body = pack::pack(entries.iter().copied());
            if body.len() > MAX_RECORD {
                return Err(WalError::TooBig(body.len()));
            }
            // `split` keeps a pack to MAX_ENTRIES, well within a u32.
            let count = entries.len() as u32;
            record::encode(self.salt, seq, count, &body, &mut buffer);
            seq += u64::from(count);
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
        if upto > self.noted_committed {
            // A note for the next open, so that damage to committed records is not taken for
            // a loss; not synced: a note lost with a crash only makes that open more cautious.
            let path = self.dir.join(COMMITTED);
            fs::write(&path, upto.to_string()).map_err(io_error("write", &path))?;
            self.noted_committed = upto;
        }
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
        self.len = Version::V3.segment_header_len() as u64;
        self.salt = segment.salt;
        self.segments.push(segment);
        Ok(())
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SUFFIX}"))
}

fn new_segment(dir: &Path, first: u64) -> Result<Segment, WalError> {
    let path = segment_path(dir, first);
    let salt = new_salt();
    let mut file = File::create(&path).map_err(io_error("create", &path))?;
    file.write_all(&record::segment_header(Version::V3, salt)).map_err(io_error("write", &path))?;
    file.sync_all().map_err(io_error("sync", &path))?;
    crate::store::sync_dir(dir)?;
    Ok(Segment { first, last: None, path, salt })
}

fn new_salt() -> u64 {
    let mut bytes = [0u8; 8];
    // Without the system's randomness, the clock still differs from segment to segment.
    if getrandom::fill(&mut bytes).is_err() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes = (now.as_nanos() as u64).to_le_bytes();
    }
    u64::from_le_bytes(bytes)
}

/// The seq up to which every record was committed, as the last `release` noted it (0 if
/// it never did, or the note is unreadable).
fn read_committed(dir: &Path) -> u64 {
    fs::read_to_string(dir.join(COMMITTED)).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
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
        segments.push(Segment { first, last: None, path: entry.path(), salt: 0 });
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
    salt: u64,
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
        // An empty segment still holds the numbers from its first on.
        next_seq: scan.last_seq.map_or(segment.first, |s| s + 1),
        kept: Vec::new(),
        salt: scan.salt.unwrap_or_default(),
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
                let records = (range.end - range.start) / Version::V2.header_len() as u64 + 1;
                let most = records * u64::from(pack::MAX_ENTRIES);
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
        found.salt = rewrite(segment, &file, &scan)?;
    }
    Ok(found)
}

/// Replaces the segment by its header and its valid records, so that it reads straight
/// through from then on; returns its salt (a new one if no copy of the old one was left,
/// and so no record either).
fn rewrite(segment: &Segment, file: &File, scan: &recover::Scan) -> Result<u64, WalError> {
    let path = &segment.path;
    let salt = scan.salt.unwrap_or_else(new_salt);
    let mut bytes = record::segment_header(scan.version, salt);
    for &(start, end) in &scan.valid {
        let at = bytes.len();
        bytes.resize(at + (end - start) as usize, 0);
        file.read_exact_at(&mut bytes[at..], start).map_err(io_error("read", path))?;
    }
    crate::store::write_atomic(path, &bytes)?;
    Ok(salt)
}

fn segment_version(path: &Path) -> Option<Version> {
    let mut magic = [0u8; 8];
    let file = File::open(path).ok()?;
    file.read_exact_at(&mut magic, 0).ok()?;
    Version::of_magic(&magic)
}

#[cfg(test)]
mod tests;
