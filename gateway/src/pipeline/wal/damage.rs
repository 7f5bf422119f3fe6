//! Damaged bytes of the log kept in `damaged/` for an operator, each file named after its
//! segment, its byte range and the seqs of the records it held, so that every open can say
//! again what was lost without any other record of it.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{SUFFIX, Segment, WalError, io_error, recover};

const DAMAGED: &str = "damaged";

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

/// Copies a damaged range of `segment` into `damaged/`, named after the segment, the range
/// and the seqs it held.
pub(super) fn keep_aside(
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
pub(super) fn list_damage(dir: &Path) -> Result<Vec<Damage>, WalError> {
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
