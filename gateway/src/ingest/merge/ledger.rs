//! Ledger: the set of primary keys the dataset has ever held.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{Int32Array, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::keys::KeyEncoder;
use super::{APPEND, split_op, with_op};
use crate::ingest::error::IngestError;

/// Keys in Arrow's row encoding, stored back to back in one buffer (no allocation per key),
/// found through a hash table of (hash, start, end). The key columns themselves are kept too,
/// shared with the slices rather than copied: they are what a checkpoint saves, since the
/// row encoding is internal to Arrow, and larger.
pub struct LedgerState {
    /// The data's columns, by position in the data schema, that make the key.
    key_columns: Vec<usize>,
    key_schema: SchemaRef,
    encoder: KeyEncoder,
    bytes: Vec<u8>,
    table: HashTable<(u64, usize, usize)>,
    hasher: DefaultHashBuilder,
    saved: Vec<RecordBatch>,
    /// Rows of the last `merge` output, whose keys are in the set already: `absorb` of that
    /// output has only to keep its key columns.
    merged: Option<usize>,
}

impl LedgerState {
    pub fn new(schema: &Schema, primary_key: &[String]) -> Result<LedgerState, IngestError> {
        let key_columns = KeyEncoder::new(schema, primary_key, "primary key")?.columns().to_vec();
        let key_schema = Arc::new(schema.project(&key_columns)?);
        Ok(LedgerState {
            encoder: KeyEncoder::new(&key_schema, primary_key, "primary key")?,
            key_columns,
            key_schema,
            bytes: Vec::new(),
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            saved: Vec::new(),
            merged: None,
        })
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    fn contains(&self, hash: u64, key: &[u8]) -> bool {
        self.table.find(hash, |&(_, start, end)| &self.bytes[start..end] == key).is_some()
    }

    /// Inserts a key known not to be in the set.
    fn insert_new(&mut self, hash: u64, key: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        self.table.insert_unique(hash, (hash, start, self.bytes.len()), |&(hash, ..)| hash);
    }

    /// Takes in key columns, whatever keys they repeat.
    fn insert_keys(&mut self, keys: &RecordBatch) -> Result<(), IngestError> {
        let rows = self.encoder.encode(keys)?;
        self.table.reserve(rows.num_rows(), |&(hash, ..)| hash);
        for row in rows.iter() {
            let key = row.data();
            let hash = self.hasher.hash_one(key);
            if !self.contains(hash, key) {
                self.insert_new(hash, key);
            }
        }
        Ok(())
    }

    /// Keeps the records whose key is new to the history and to the batch (first wins).
    /// Their keys join the set at once (one hash lookup per record): the caller absorbs the
    /// output once committed, or discards this state if the commit fails.
    pub fn merge(&mut self, data: &RecordBatch, op_name: &str) -> Result<RecordBatch, IngestError> {
        let rows = self.encoder.encode(&data.project(&self.key_columns)?)?;
        self.table.reserve(rows.num_rows(), |&(hash, ..)| hash);
        let mut kept = Vec::with_capacity(rows.num_rows());
        for (i, row) in rows.iter().enumerate() {
            let key = row.data();
            let hash = self.hasher.hash_one(key);
            if !self.contains(hash, key) {
                self.insert_new(hash, key);
                kept.push(i as u32);
            }
        }
        let data = if kept.len() == data.num_rows() {
            data.clone()
        } else {
            take_record_batch(data, &UInt32Array::from(kept))?
        };
        self.merged = Some(data.num_rows());
        with_op(&data, &Int32Array::from(vec![APPEND; data.num_rows()]), op_name)
    }

    /// Every key of a slice joins the history, whatever its op.
    pub fn absorb(&mut self, slice: &RecordBatch) -> Result<(), IngestError> {
        let (_, data) = split_op(slice)?;
        let keys = data.project(&self.key_columns)?;
        if self.merged.take() != Some(slice.num_rows()) {
            self.insert_keys(&keys)?;
        }
        self.saved.push(keys);
        Ok(())
    }

    /// The key columns of every record taken in, for a checkpoint.
    pub fn save(&self) -> Result<RecordBatch, IngestError> {
        Ok(concat_batches(&self.key_schema, &self.saved)?)
    }

    /// Takes in saved key columns; `false` if they are not this state's key columns.
    pub fn load(&mut self, saved: RecordBatch) -> Result<bool, IngestError> {
        if saved.schema().fields() != self.key_schema.fields() {
            return Ok(false);
        }
        self.insert_keys(&saved)?;
        self.saved.push(saved);
        Ok(true)
    }
}
