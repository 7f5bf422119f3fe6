//! Ledger: the set of primary keys the dataset has ever held, kept in a `LedgerIndex` on
//! disk beside the dataset (memory stays bounded however many keys there are).
//!
//! Keys are Arrow's row encoding of the key columns. A merge finds the new keys and holds
//! them pending; they are written to the index only once the dataset has committed them
//! (`committed`), so the index never runs ahead of the chain. Slices committed by anyone
//! else, or before a crash, are caught up with `absorb`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Int32Array, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::keys::KeyEncoder;
use super::ledger_index::{IndexConfig, IndexError, LedgerIndex};
use super::{APPEND, split_op, with_op};
use crate::ingest::error::IngestError;

pub struct LedgerState {
    /// The data's columns, by position in the data schema, that make the key.
    key_columns: Vec<usize>,
    encoder: KeyEncoder,
    index: LedgerIndex,
    /// A private index of this writer's, removed after `index` is closed (fields drop in
    /// order): made when another process holds the shared one.
    _private: Option<RemoveOnDrop>,
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!("cannot remove the private ledger index {}: {e}", self.0.display());
        }
    }
}

impl LedgerState {
    /// Opens (or creates, or rebuilds when foreign or damaged) the index in `dir` for keys of
    /// `primary_key` in data of `schema`.
    pub fn open(
        schema: &Schema,
        primary_key: &[String],
        dir: &Path,
        config: &IndexConfig,
    ) -> Result<LedgerState, IngestError> {
        let key_columns = KeyEncoder::new(schema, primary_key, "primary key")?.columns().to_vec();
        let key_schema: SchemaRef = Arc::new(schema.project(&key_columns)?);
        let types: Vec<String> = key_schema.fields().iter().map(|f| f.data_type().to_string()).collect();
        // Keys of another shape must never be compared with these.
        let fingerprint = format!("ledger:{}|{}", primary_key.join(","), types.join(","));
        let (index, private) = match LedgerIndex::open_or_recreate(dir, &fingerprint, config) {
            Ok(index) => (index, None),
            // Another process (a running gateway beside a CLI ingest) writes the dataset
            // too: the index is a cache, so this writer builds its own from the slices.
            Err(IndexError::Locked { .. }) => {
                let private = dir.with_extension(format!("private-{}", std::process::id()));
                tracing::warn!(
                    "ledger index {} is held by another process; building a private one from the slices (slower)",
                    dir.display()
                );
                let _ = std::fs::remove_dir_all(&private);
                let index =
                    LedgerIndex::open_or_recreate(&private, &fingerprint, config).map_err(index_error)?;
                (index, Some(RemoveOnDrop(private)))
            }
            Err(e) => return Err(index_error(e)),
        };
        Ok(LedgerState {
            encoder: KeyEncoder::new(&key_schema, primary_key, "primary key")?,
            key_columns,
            index,
            _private: private,
        })
    }

    /// The last dataset offset whose keys the index holds.
    pub fn covered(&self) -> Option<u64> {
        self.index.covered()
    }

    /// Keys in the index (approximately: the store counts them lazily).
    pub fn len(&self) -> usize {
        self.index.approximate_len()
    }

    /// Keeps the records whose key is new to the history and to the batch (first wins).
    /// Their keys are pending until `committed` (or `rollback`).
    pub fn merge(&mut self, data: &RecordBatch, op_name: &str) -> Result<RecordBatch, IngestError> {
        let rows = self.encoder.encode(&data.project(&self.key_columns)?)?;
        let new = self.index.find_new(rows.iter().map(|r| r.data())).map_err(index_error)?;
        let kept: Vec<u32> = new.iter().enumerate().filter(|(_, new)| **new).map(|(i, _)| i as u32).collect();
        let data = if kept.len() == data.num_rows() {
            data.clone()
        } else {
            take_record_batch(data, &UInt32Array::from(kept))?
        };
        with_op(&data, &Int32Array::from(vec![APPEND; data.num_rows()]), op_name)
    }

    /// The dataset committed the merged records, up to `last_offset`.
    pub fn committed(&mut self, last_offset: u64) -> Result<(), IngestError> {
        self.index.commit_pending(last_offset).map_err(index_error)
    }

    /// Takes in every key of a committed slice (`op` then the data columns), whatever its
    /// op, up to `last_offset`.
    pub fn absorb(&mut self, slice: &RecordBatch, last_offset: u64) -> Result<(), IngestError> {
        self.catch_up(slice, last_offset)?;
        self.caught_up()
    }

    /// As `absorb`, for catching up from many slices: the keys are written in big loads,
    /// the last by `caught_up`.
    pub fn catch_up(&mut self, slice: &RecordBatch, last_offset: u64) -> Result<(), IngestError> {
        let (_, data) = split_op(slice)?;
        let rows = self.encoder.encode(&data.project(&self.key_columns)?)?;
        let keys: Vec<&[u8]> = rows.iter().map(|r| r.data()).collect();
        self.index.catch_up(&keys, last_offset).map_err(index_error)
    }

    pub fn caught_up(&mut self) -> Result<(), IngestError> {
        self.index.finish_catch_up().map_err(index_error)
    }

    /// Empties the index, to rebuild it from every slice (the dataset is not the history it
    /// was built from).
    pub fn reset(&mut self) -> Result<(), IngestError> {
        self.index.reset().map_err(index_error)
    }
}

fn index_error(e: IndexError) -> IngestError {
    IngestError::Internal(e.to_string())
}
