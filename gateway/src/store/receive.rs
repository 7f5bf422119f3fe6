//! Taking in a chain made elsewhere (`odf-gateway pull`): a new dataset is built in a temp
//! folder and appears under its name only when whole; blocks are checked against their hashes
//! and the chain rules before any is written, and the head moves last. The objects they
//! refer to are put in place (and checked) by the caller before the blocks are appended.

use std::fs;
use std::path::PathBuf;

use super::data_dir::DataDir;
use super::dataset::{BLOCKS, Dataset, HEAD, WriteLock};
use super::error::StoreError;
use super::fsio::{self, Context};
use super::objects::ObjectKind;
use crate::odf::{self, DatasetName, MetadataBlock, Multihash};

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
    pub fn finish(mut self) -> Result<Dataset, StoreError> {
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
        fsio::sync_dir(self.data_dir.root())?;
        Dataset::open(&self.target, self.dataset.name().clone())
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
    /// Where the object `hash` of `kind` lives.
    pub fn object_path(&self, kind: ObjectKind, hash: &Multihash) -> PathBuf {
        self.root().join(kind.folder()).join(hash.to_string())
    }

    /// A temp path beside the objects of `kind`, for receiving one (removed by the next
    /// writer if abandoned); `publish` moves it under its hash.
    pub fn receiving_path(&self, kind: ObjectKind) -> PathBuf {
        fsio::temp_path(&self.root().join(kind.folder()))
    }

    /// Appends blocks encoded elsewhere, oldest first, after checking each one's bytes against
    /// its hash and the whole run against the chain rules; then moves the head to the last.
    /// Returns the decoded blocks. The objects they refer to must already be in place.
    pub fn append_blocks(
        &mut self,
        _lock: &WriteLock,
        blocks: &[(Multihash, Vec<u8>)],
    ) -> Result<Vec<MetadataBlock>, StoreError> {
        let mut state = self.state().clone();
        let mut decoded = Vec::with_capacity(blocks.len());
        for (hash, bytes) in blocks {
            let actual = odf::block_hash(bytes);
            if &actual != hash {
                return Err(StoreError::BadBlock {
                    hash: hash.clone(),
                    reason: format!("content hashes to {actual}"),
                });
            }
            let block = odf::decode_block(bytes)
                .map_err(|reason| StoreError::Undecodable { hash: hash.clone(), reason })?;
            state.apply(hash, &block)?;
            decoded.push(block);
        }
        let Some(head) = state.head.clone().filter(|_| !blocks.is_empty()) else {
            return Err(StoreError::EmptyCommit);
        };
        let blocks_dir = self.root().join(BLOCKS);
        for (hash, bytes) in blocks {
            self.write_object(&blocks_dir, hash, bytes)?;
        }
        fsio::sync_dir(&blocks_dir)?;
        fsio::write_atomic(&self.root().join(HEAD), head.to_string().as_bytes())?;
        self.set_state(state);
        Ok(decoded)
    }
}
