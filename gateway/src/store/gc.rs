//! Removing what crashes and failed commits left behind: blocks, data slices and checkpoints
//! that no block reachable from the head references. Done under the dataset's write lock, so
//! no writer can be about to link a file (a writer holds the lock from staging a slice to
//! moving the head); temp files of writers still running are kept.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use super::dataset::{BLOCKS, CHECKPOINTS, DATA, DEFAULT_LOCK_TIMEOUT, Dataset};
use super::error::StoreError;
use super::fsio::{self, Context, TEMP_PREFIX};
use super::objects::objects_of;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub files: u64,
    pub bytes: u64,
}

/// Removes every object of `dataset` that its chain does not reference.
pub fn collect_garbage(dataset: &mut Dataset) -> Result<GcReport, StoreError> {
    let _lock = dataset.lock(DEFAULT_LOCK_TIMEOUT)?;
    let mut live: HashSet<String> = HashSet::new();
    for (hash, block) in dataset.blocks()? {
        live.insert(hash.to_string());
        live.extend(objects_of(&block).into_iter().map(|object| object.hash.to_string()));
    }
    let mut report = GcReport::default();
    for folder in [BLOCKS, DATA, CHECKPOINTS] {
        let dir = dataset.root().join(folder);
        fsio::remove_temp_files(&dir)?;
        sweep(&dir, &live, &mut report)?;
    }
    Ok(report)
}

fn sweep(dir: &Path, live: &HashSet<String>, report: &mut GcReport) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("list", dir)?,
    };
    let mut removed = false;
    for entry in entries {
        let entry = entry.context("list", dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Temp files are another writer's business (removed above once it is gone).
        if name.starts_with(TEMP_PREFIX) || live.contains(&name) {
            continue;
        }
        let path = entry.path();
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        fs::remove_file(&path).context("remove unreferenced object", &path)?;
        report.files += 1;
        report.bytes += size;
        removed = true;
    }
    if removed {
        fsio::sync_dir(dir)?;
    }
    Ok(())
}
