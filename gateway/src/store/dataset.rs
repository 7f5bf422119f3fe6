//! One dataset on disk, in the layout the ODF Simple Transfer Protocol serves as-is:
//!
//! ```text
//! <dataset>/refs/head              multibase hash of the newest block, no newline
//! <dataset>/blocks/<hash>          metadata blocks (Manifest-wrapped FlatBuffers)
//! <dataset>/data/<hash>            Parquet data slices, named by physical hash
//! <dataset>/checkpoints/<hash>     merge-strategy state, named by physical hash
//! <dataset>/info/lock              local only: the writers' lock
//! ```
//!
//! Objects are named by their content hash, so writing one is idempotent. A commit writes its
//! objects durably, then swaps `refs/head`: until that rename the previous head stands.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::StoreError;
use super::fsio::{self, Context};
use super::objects::ObjectKind;
use crate::odf::{self, ChainState, DatasetName, MetadataBlock, MetadataEvent, Multihash};

pub const HEAD: &str = "refs/head";
pub const BLOCKS: &str = "blocks";
pub const DATA: &str = "data";
pub const CHECKPOINTS: &str = "checkpoints";
pub const INFO: &str = "info";
const LOCK_FILE: &str = "info/lock";

/// How long a writer waits for another one's lock unless told otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Decodes a block's bytes once they are found to hash to its name.
pub fn decode_checked(hash: &Multihash, bytes: &[u8]) -> Result<MetadataBlock, StoreError> {
    let actual = odf::block_hash(bytes);
    if &actual != hash {
        return Err(StoreError::BadBlock {
            hash: hash.clone(),
            reason: format!("content hashes to {actual}: the file is corrupted"),
        });
    }
    odf::decode_block(bytes).map_err(|reason| StoreError::Undecodable { hash: hash.clone(), reason })
}

/// Takes the lock file at `path` (see `fsio::lock_file`).
pub fn take_lock(path: &Path, timeout: Duration) -> Result<File, StoreError> {
    fsio::lock_file(path, timeout).map_err(|e| match e {
        fsio::LockError::Io(e) => StoreError::Io(e),
        fsio::LockError::TimedOut { holder, waited } => {
            StoreError::LockTimeout { path: path.display().to_string(), holder, waited }
        }
    })
}

/// What `catch_up` found.
#[derive(Debug)]
pub enum CatchUp {
    /// The blocks after the head the handle knew, oldest first.
    New(Vec<MetadataBlock>),
    /// The chain is not a continuation of the one the handle knew; it was read whole.
    Replaced,
}

/// Proof that the dataset's write lock is held.
pub struct WriteLock {
    _file: File,
}

/// An open dataset with the state of its chain at the head it last saw.
#[derive(Debug)]
pub struct Dataset {
    root: PathBuf,
    name: DatasetName,
    state: ChainState,
}

impl Dataset {
    /// Opens the dataset at `root`, reading and checking its whole chain.
    pub fn open(root: &Path, name: DatasetName) -> Result<Dataset, StoreError> {
        let mut dataset = Dataset { root: root.to_owned(), name, state: ChainState::default() };
        dataset.reload()?;
        Ok(dataset)
    }

    /// Lays out an empty dataset (no head yet) at `root`.
    pub(super) fn create_empty(root: &Path, name: DatasetName) -> Result<Dataset, StoreError> {
        for dir in ["refs", BLOCKS, DATA, CHECKPOINTS, INFO] {
            fsio::create_dir(&root.join(dir))?;
        }
        Ok(Dataset { root: root.to_owned(), name, state: ChainState::default() })
    }

    pub fn name(&self) -> &DatasetName {
        &self.name
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn state(&self) -> &ChainState {
        &self.state
    }

    pub fn head(&self) -> Option<&Multihash> {
        self.state.head.as_ref()
    }

    /// Where the object `hash` of `kind` lives.
    pub fn object_path(&self, kind: ObjectKind, hash: &Multihash) -> PathBuf {
        self.root.join(kind.folder()).join(hash.to_string())
    }

    pub fn block_path(&self, hash: &Multihash) -> PathBuf {
        self.object_path(ObjectKind::Block, hash)
    }

    pub fn data_path(&self, hash: &Multihash) -> PathBuf {
        self.object_path(ObjectKind::Data, hash)
    }

    pub fn checkpoint_path(&self, hash: &Multihash) -> PathBuf {
        self.object_path(ObjectKind::Checkpoint, hash)
    }

    /// The head as written in `refs/head`, or `None` for a dataset still being created.
    pub fn read_head(&self) -> Result<Option<Multihash>, StoreError> {
        let path = self.root.join(HEAD);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("read", &path)?,
        };
        // Written without a newline; one added by hand (an editor, `echo`) is not damage.
        text.trim_end().parse().map(Some).map_err(|e| StoreError::NotADataset {
            path: path.display().to_string(),
            reason: format!("refs/head does not hold a block hash: {e}"),
        })
    }

    /// Reads a block and checks that its bytes hash to its name.
    pub fn read_block(&self, hash: &Multihash) -> Result<MetadataBlock, StoreError> {
        let path = self.block_path(hash);
        let bytes = fs::read(&path).map_err(|e| StoreError::BadBlock {
            hash: hash.clone(),
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        decode_checked(hash, &bytes)
    }

    /// Every block, newest first, following `prevBlockHash` from the head.
    pub fn blocks(&self) -> Result<Vec<(Multihash, MetadataBlock)>, StoreError> {
        self.blocks_from(self.head().cloned())
    }

    fn blocks_from(&self, head: Option<Multihash>) -> Result<Vec<(Multihash, MetadataBlock)>, StoreError> {
        let mut blocks = Vec::with_capacity(self.state.blocks as usize);
        let mut next = head;
        while let Some(hash) = next {
            let block = self.read_block(&hash)?;
            next = block.prev_block_hash.clone();
            blocks.push((hash, block));
        }
        Ok(blocks)
    }

    /// Re-reads the chain from `refs/head` (after another writer committed). The handle's
    /// state changes only once the whole chain has been read and checked.
    fn reload(&mut self) -> Result<(), StoreError> {
        let mut state = ChainState::default();
        for (hash, block) in self.blocks_from(self.read_head()?)?.iter().rev() {
            state.apply(hash, block)?;
        }
        self.state = state;
        Ok(())
    }

    /// Takes the dataset's write lock (one writer at a time, across processes), waiting at
    /// most `timeout` for another writer, and catches up with whatever another writer
    /// committed. Held until the guard is dropped; a writer that reads the state, prepares a
    /// commit and commits holds it throughout.
    pub fn lock(&mut self, timeout: Duration) -> Result<WriteLock, StoreError> {
        let file = take_lock(&self.root.join(LOCK_FILE), timeout)?;
        self.catch_up()?;
        Ok(WriteLock { _file: file })
    }

    /// Takes in the blocks committed since this handle last looked (by another writer or
    /// process) and returns them, oldest first. Only the new blocks are read, so a handle
    /// kept open for months stays cheap to bring up to date.
    pub fn catch_up(&mut self) -> Result<CatchUp, StoreError> {
        let head = self.read_head()?;
        if head == self.state.head {
            return Ok(CatchUp::New(Vec::new()));
        }
        tracing::debug!(dataset = %self.name, "head moved; reading the new blocks");
        let mut new = Vec::new();
        let mut next = head;
        while let Some(hash) = next {
            if Some(&hash) == self.state.head.as_ref() {
                break;
            }
            let block = self.read_block(&hash)?;
            next = block.prev_block_hash.clone();
            new.push((hash, block));
            if next.is_none() && self.state.head.is_some() {
                // Not a descendant of the head we knew: the chain was replaced; read it all.
                self.reload()?;
                return Ok(CatchUp::Replaced);
            }
        }
        let mut state = self.state.clone();
        for (hash, block) in new.iter().rev() {
            state.apply(hash, block)?;
        }
        self.state = state;
        Ok(CatchUp::New(new.into_iter().rev().map(|(_, block)| block).collect()))
    }

    /// Removes the temp files that writers which are no longer running left behind. A writer
    /// does this once when it opens the dataset, not at every commit: listing folders that
    /// grow by a file a second would make each commit slower than the last.
    pub fn remove_stale_temp_files(&self) -> Result<(), StoreError> {
        for dir in ["refs", BLOCKS, DATA, CHECKPOINTS] {
            fsio::remove_temp_files(&self.root.join(dir))?;
        }
        Ok(())
    }

    /// Appends `events` as new blocks, taking the lock for just this commit.
    pub fn commit(
        &mut self,
        events: Vec<MetadataEvent>,
        system_time: DateTime<Utc>,
    ) -> Result<Multihash, StoreError> {
        let lock = self.lock(DEFAULT_LOCK_TIMEOUT)?;
        self.commit_locked(&lock, events, system_time)
    }

    /// Appends `events` as new blocks and moves the head to the last of them. Every block is
    /// checked against the chain before anything is written; nothing is visible until the
    /// head moves. Objects the blocks refer to (data, checkpoints) must already be in place.
    pub fn commit_locked(
        &mut self,
        _lock: &WriteLock,
        events: Vec<MetadataEvent>,
        system_time: DateTime<Utc>,
    ) -> Result<Multihash, StoreError> {
        let mut state = self.state.clone();
        let mut encoded = Vec::with_capacity(events.len());
        let mut disabling = Vec::new();
        for event in events {
            // The chain's system time never goes back, even if the clock does.
            let system_time = state.last_system_time.map_or(system_time, |last| last.max(system_time));
            let block = MetadataBlock {
                system_time,
                prev_block_hash: state.head.clone(),
                sequence_number: state.blocks,
                event,
            };
            let bytes = odf::encode_block(&block);
            let hash = odf::block_hash(&bytes);
            // Never write a block this gateway could not read back (e.g. a schema nested
            // deeper than the decoder allows): the dataset would become unreadable.
            odf::decode_block(&bytes)
                .map_err(|reason| StoreError::Undecodable { hash: hash.clone(), reason })?;
            state.apply(&hash, &block)?;
            if block.event.unreadable_by_kamu() {
                disabling.push((hash.clone(), block.event.kind()));
            }
            encoded.push((hash, bytes));
        }
        if encoded.is_empty() {
            return Err(StoreError::EmptyCommit);
        }
        let head = state.head.clone().ok_or(StoreError::EmptyCommit)?;

        let blocks_dir = self.root.join(BLOCKS);
        for (hash, bytes) in &encoded {
            self.write_object(&blocks_dir, hash, bytes)?;
        }
        fsio::sync_dir(&blocks_dir)?;
        fsio::write_atomic(&self.root.join(HEAD), head.to_string().as_bytes())?;
        self.state = state;
        for (hash, event) in &disabling {
            tracing::warn!(dataset = %self.name, block = %hash, "{}: {}", event, odf::KAMU_DISABLE_WARNING);
        }
        Ok(head)
    }

    /// Moves a staged, synced file into `data/` or `checkpoints/` under its hash.
    pub fn publish(&self, staged: &Path, path: &Path) -> Result<(), StoreError> {
        fs::rename(staged, path).context("rename into place", path)?;
        fsio::sync_dir(path.parent().unwrap_or(&self.root))?;
        Ok(())
    }

    /// Stores a checkpoint file under its hash; returns the hash and size.
    pub fn put_checkpoint(&self, bytes: &[u8]) -> Result<(Multihash, u64), StoreError> {
        let hash = Multihash::sha3_256(bytes);
        let dir = self.root.join(CHECKPOINTS);
        self.write_object(&dir, &hash, bytes)?;
        fsio::sync_dir(&dir)?;
        Ok((hash, bytes.len() as u64))
    }

    /// A temp path in `data/` for staging a file (removed by the next writer if abandoned).
    pub fn staging_path(&self) -> PathBuf {
        fsio::temp_path(&self.root.join(DATA))
    }

    pub(super) fn set_state(&mut self, state: ChainState) {
        self.state = state;
    }

    /// Writes a content-addressed object unless it is already there intact.
    fn write_object(&self, dir: &Path, hash: &Multihash, bytes: &[u8]) -> Result<(), StoreError> {
        let path = dir.join(hash.to_string());
        if fs::read(&path).is_ok_and(|existing| existing == bytes) {
            return Ok(());
        }
        let temp = fsio::temp_path(dir);
        fsio::write_synced(&temp, bytes)?;
        fs::rename(&temp, &path).context("rename into place", &path)?;
        Ok(())
    }
}
