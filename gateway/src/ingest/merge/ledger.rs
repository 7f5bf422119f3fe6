//! Ledger: the set of primary keys the dataset has ever held.

use std::collections::HashSet;

use arrow::array::{BinaryArray, Int32Array, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;

use super::keys::KeyEncoder;
use super::{split_op, with_op, APPEND};
use crate::ingest::error::IngestError;

pub struct LedgerState {
    encoder: KeyEncoder,
    keys: HashSet<Box<[u8]>>,
}

impl LedgerState {
    pub fn new(schema: &Schema, primary_key: &[String]) -> Result<LedgerState, IngestError> {
        Ok(LedgerState { encoder: KeyEncoder::new(schema, primary_key, "primary key")?, keys: HashSet::new() })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Keeps the records whose key is new to the history and to the batch (first wins).
    pub fn merge(&self, data: &RecordBatch, op_name: &str) -> Result<RecordBatch, IngestError> {
        let rows = self.encoder.encode(data)?;
        let mut seen = HashSet::new();
        let kept: UInt32Array = (0..rows.num_rows())
            .filter(|&i| {
                let key = rows.row(i);
                !self.keys.contains(key.as_ref()) && seen.insert(key)
            })
            .map(|i| i as u32)
            .collect();
        let data = take_record_batch(data, &kept)?;
        with_op(&data, &Int32Array::from(vec![APPEND; data.num_rows()]), op_name)
    }

    /// Every key of a slice joins the history, whatever its op.
    pub fn absorb(&mut self, slice: &RecordBatch) -> Result<(), IngestError> {
        let (_, data) = split_op(slice)?;
        let rows = self.encoder.encode(&data)?;
        self.keys.extend(rows.iter().map(|row| Box::<[u8]>::from(row.as_ref())));
        Ok(())
    }

    /// The keys, in Arrow's row encoding and sorted (so equal states save equal bytes).
    pub fn to_keys(&self) -> BinaryArray {
        let mut keys: Vec<&[u8]> = self.keys.iter().map(AsRef::as_ref).collect();
        keys.sort_unstable();
        keys.into_iter().map(Some).collect()
    }

    pub fn load_keys(&mut self, keys: &BinaryArray) {
        self.keys.extend(keys.iter().flatten().map(Box::<[u8]>::from));
    }
}
