//! Taking in a chain made elsewhere (`odf-gateway pull`): the caller receives blocks and the
//! objects they add under temp names (checking each against its hash as it arrives); then,
//! under the dataset's lock, the blocks are read back and checked against their hashes and
//! the chain rules, everything is moved in place, objects before blocks, and the head moves
//! last. A new dataset is built in a temp folder and appears under its name only when whole.

use std::fs;
use std::path::PathBuf;

use super::data_dir::DataDir;
use super::dataset::{Dataset, HEAD, WriteLock, decode_checked};
use super::error::StoreError;
use super::fsio::{self, Context, TEMP_PREFIX};
use super::objects::{ObjectKind, objects_of};
use crate::odf::{DatasetName, Multihash};

/// A dataset being received into a temp folder of the data directory.
pub struct StagedDataset {
    dataset: Dataset,
    staging: PathBuf,
    finished: bool,
    target: PathBuf,
    data_dir: DataDir,
}

impl DataDir {
    /// Starts a new dataset named `name` in a temp folder; `StagedDataset::finish` moves it
    /// into place. Fails if the name is taken.
    pub fn stage_dataset(&self, name: &DatasetName) -> Result<StagedDataset, StoreError> {
        let target = self.root().join(name.as_str());
        if target.exists() {
            return Err(StoreError::AlreadyExists(name.clone()));
        }
        let staging = fsio::temp_path(self.root());
        let dataset = Dataset::create_empty(&staging, name.clone())?;
        Ok(StagedDataset { dataset, staging, finished: false, target, data_dir: self.clone() })
    }
}

impl StagedDataset {
    pub fn dataset(&mut self) -> &mut Dataset {
        &mut self.dataset
    }

    /// Moves the dataset under its name, once its folder's entries are durable. Refused if
    /// the dataset has no head yet or the name was taken meanwhile.
    pub fn finish(mut self) -> Result<(), StoreError> {
        if self.dataset.head().is_none() {
            return Err(StoreError::EmptyCommit);
        }
        let _lock = self.data_dir.lock()?;
        if self.target.exists() {
            return Err(StoreError::AlreadyExists(self.dataset.name().clone()));
        }
        for dir in ["refs", "blocks", "data", "checkpoints", "info", ""] {
            fsio::sync_dir(&self.staging.join(dir))?;
        }
        fs::rename(&self.staging, &self.target).context("rename into place", &self.target)?;
        self.finished = true;
        Ok(fsio::sync_dir(self.data_dir.root())?)
    }
}

impl Drop for StagedDataset {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

impl Dataset {
    /// Where a pull keeps the object `hash` of `kind` until `adopt_received` puts it in
    /// place: a temp name of this process, which `gc` and other writers leave alone while
    /// it runs and remove once it is gone.
    pub fn receiving_path(&self, kind: ObjectKind, hash: &Multihash) -> PathBuf {
        let name = format!("{TEMP_PREFIX}{}-received-{hash}", std::process::id());
        self.root().join(kind.folder()).join(name)
    }

    /// Takes in the blocks `blocks` (oldest first) received at their `receiving_path`, with
    /// the data slices and checkpoints they add (received, or already in place), and moves
    /// the head to the last. Every block is read back, checked against its hash and the
    /// chain rules, and every object found, before anything is moved in place; objects go
    /// first, the head last. Under the lock, so that `gc` cannot take an object between
    /// the check and the head.
    pub fn adopt_received(&mut self, _lock: &WriteLock, blocks: &[Multihash]) -> Result<(), StoreError> {
        let mut state = self.state().clone();
        // Every object before every block, so no block is in place before what it names.
        let (mut objects, mut block_files) = (Vec::new(), Vec::new());
        for hash in blocks {
            let path = self.receiving_path(ObjectKind::Block, hash);
            let bytes = fs::read(&path).context("read", &path)?;
            let block = decode_checked(hash, &bytes)?;
            state.apply(hash, &block)?;
            for object in objects_of(&block) {
                let (received, in_place) = (
                    self.receiving_path(object.kind, &object.hash),
                    self.object_path(object.kind, &object.hash),
                );
                if received.exists() {
                    objects.push((received, in_place));
                } else if !in_place.exists() {
                    return Err(StoreError::BadBlock {
                        hash: hash.clone(),
                        reason: format!("its {} {} was not received", object.kind, object.hash),
                    });
                }
            }
            block_files.push((path, self.object_path(ObjectKind::Block, hash)));
        }
        let head = state.head.clone().filter(|_| !blocks.is_empty()).ok_or(StoreError::EmptyCommit)?;
        for (from, to) in objects.iter().chain(&block_files) {
            fs::rename(from, to).context("rename into place", to)?;
        }
        for kind in [ObjectKind::Data, ObjectKind::Checkpoint, ObjectKind::Block] {
            fsio::sync_dir(&self.root().join(kind.folder()))?;
        }
        fsio::write_atomic(&self.root().join(HEAD), head.to_string().as_bytes())?;
        self.set_state(state);
        Ok(())
    }

    /// Removes what a pull received and did not adopt.
    pub fn discard_received(&self) {
        let mine = format!("{TEMP_PREFIX}{}-received-", std::process::id());
        for kind in [ObjectKind::Data, ObjectKind::Checkpoint, ObjectKind::Block] {
            let Ok(entries) = fs::read_dir(self.root().join(kind.folder())) else { continue };
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&mine) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}
