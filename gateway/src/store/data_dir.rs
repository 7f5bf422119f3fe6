//! The data directory: one folder per dataset, named by the dataset's name.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::dataset::{Dataset, HEAD};
use super::error::StoreError;
use super::fsio::{self, Context};
use crate::odf::{DatasetId, DatasetKind, DatasetName, DatasetSnapshot, MetadataEvent, Seed};

const LOCK_FILE: &str = ".lock";
/// Dataset identity keys: `<id>.key` (the id without `did:odf:`) holds the hex Ed25519 secret whose public half is the
/// dataset id. Kept beside the datasets, not in them, so a dataset folder can be served as-is.
pub const KEYS_DIR: &str = ".keys";

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`, created if missing.
    pub fn create(root: &Path) -> Result<DataDir, StoreError> {
        fsio::create_dir(root)?;
        Ok(DataDir { root: root.to_owned() })
    }

    /// The data directory at `root`, which must exist: a mistyped path is an error, not a
    /// new empty directory.
    pub fn open(root: &Path) -> Result<DataDir, StoreError> {
        if root.exists() && !root.is_dir() {
            return Err(StoreError::DataDirNotAFolder(root.display().to_string()));
        }
        if !root.is_dir() {
            return Err(StoreError::NoDataDir(root.display().to_string()));
        }
        Ok(DataDir { root: root.to_owned() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Names of the datasets here, sorted. Folders that are not datasets are skipped.
    pub fn list(&self) -> Result<Vec<DatasetName>, StoreError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.root).context("list", &self.root)? {
            let entry = entry.context("list", &self.root)?;
            let Ok(name) = entry.file_name().to_string_lossy().parse::<DatasetName>() else {
                continue;
            };
            if entry.path().join(HEAD).is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn open_dataset(&self, name: &str) -> Result<Dataset, StoreError> {
        let not_found = || -> Result<StoreError, StoreError> {
            Ok(StoreError::NotFound {
                name: name.to_owned(),
                data_dir: self.root.display().to_string(),
                known: self.list()?,
            })
        };
        let Ok(parsed) = name.parse::<DatasetName>() else {
            return Err(not_found()?);
        };
        let root = self.root.join(parsed.as_str());
        if !root.join(HEAD).is_file() {
            return Err(not_found()?);
        }
        Dataset::open(&root, parsed)
    }

    /// Creates a dataset from a snapshot: a new identity (Seed), then the snapshot's events.
    /// The dataset is built in a temp folder and renamed into place, so a crash never leaves
    /// a half-made dataset under its name, and every event is checked before any is written.
    pub fn create_dataset(
        &self,
        snapshot: &DatasetSnapshot,
        system_time: DateTime<Utc>,
    ) -> Result<Dataset, StoreError> {
        let _lock = self.lock()?;
        let target = self.root.join(snapshot.name.as_str());
        if target.exists() {
            return Err(StoreError::AlreadyExists(snapshot.name.clone()));
        }
        fsio::remove_temp_files(&self.root)?;

        let (id, key) = DatasetId::generate().map_err(StoreError::Identity)?;
        let keys = self.root.join(KEYS_DIR);
        fsio::create_dir(&keys)?;
        let key_name = format!("{}.key", id.to_string().trim_start_matches("did:odf:"));
        fsio::write_private(&keys.join(key_name), hex::encode(key.to_bytes()).as_bytes())?;
        fsio::sync_dir(&keys)?;

        let staging = fsio::temp_path(&self.root);
        let result = (|| {
            let mut dataset = Dataset::create_empty(&staging, snapshot.name.clone())?;
            let seed = MetadataEvent::Seed(Seed { dataset_id: id, dataset_kind: DatasetKind::Root });
            let events = std::iter::once(seed).chain(snapshot.metadata.iter().cloned()).collect();
            dataset.commit(events, system_time)?;
            // The folder's entries must be durable before it appears under its name.
            for dir in ["refs", "blocks", "data", "checkpoints", "info", ""] {
                fsio::sync_dir(&staging.join(dir))?;
            }
            fs::rename(&staging, &target).context("rename into place", &target)?;
            fsio::sync_dir(&self.root)?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        Dataset::open(&target, snapshot.name.clone())
    }

    /// Serializes creations, so two processes adding the same name cannot both succeed.
    pub(super) fn lock(&self) -> Result<File, StoreError> {
        super::dataset::take_lock(&self.root.join(LOCK_FILE), super::DEFAULT_LOCK_TIMEOUT)
    }
}
