//! Snapshot and UpsertStream: the current row of every live primary key.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, ArrayRef, Int32Array};
use arrow::compute::interleave;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::Rows;

use super::keys::KeyEncoder;
use super::{APPEND, CORRECT_FROM, CORRECT_TO, RETRACT, split_op, with_op};
use crate::ingest::error::IngestError;

pub struct KeyedState {
    schema: SchemaRef,
    primary_key: Vec<String>,
    encoder: KeyEncoder,
    /// Batches rows live in; rows no longer current are dropped when these are compacted.
    batches: Vec<RecordBatch>,
    /// Key -> (batch, row) of its current row.
    index: HashMap<Box<[u8]>, (usize, usize)>,
}

/// A row of the output: its key (for ordering), its op, and where its values come from.
struct Emit<'k> {
    key: &'k [u8],
    op: i32,
    /// (batch, row), where batch `batches.len()` is the incoming batch.
    from: (usize, usize),
}

impl KeyedState {
    pub fn new(schema: &Schema, primary_key: &[String]) -> Result<KeyedState, IngestError> {
        Ok(KeyedState {
            schema: SchemaRef::new(schema.clone()),
            primary_key: primary_key.to_vec(),
            encoder: KeyEncoder::new(schema, primary_key, "primary key")?,
            batches: Vec::new(),
            index: HashMap::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether saved rows have this state's columns.
    pub fn fits(&self, saved: &RecordBatch) -> bool {
        saved.schema().fields() == self.schema.fields()
    }

    /// Columns that decide whether a row changed: `compare`, or all but the key and the
    /// event time (the first data column, by construction in `normalize`).
    fn comparer(&self, compare: Option<&[String]>) -> Result<KeyEncoder, IngestError> {
        let names: Vec<String> = match compare {
            Some(names) => names.to_vec(),
            None => self
                .schema
                .fields()
                .iter()
                .skip(1)
                .map(|f| f.name().clone())
                .filter(|n| !self.primary_key.contains(n))
                .collect(),
        };
        KeyEncoder::new(&self.schema, &names, "compare")
    }

    /// The incoming batch is the whole state: diff it against the current rows.
    pub fn merge_snapshot(
        &self,
        data: &RecordBatch,
        compare: Option<&[String]>,
        op_name: &str,
    ) -> Result<RecordBatch, IngestError> {
        let keys = self.encoder.encode(data)?;
        let mut present = HashSet::with_capacity(keys.num_rows());
        for (row, key) in keys.iter().enumerate() {
            if !present.insert(key.data()) {
                return Err(IngestError::Data(format!(
                    "record {}: the snapshot has primary key ({}) twice; a snapshot holds each key once",
                    row + 1,
                    self.primary_key.join(", ")
                )));
            }
        }
        let comparer = self.comparer(compare)?;
        let new_values = comparer.encode(data)?;
        let incoming = self.batches.len();
        let mut emits = Vec::new();
        for (row, key) in keys.iter().enumerate() {
            let key = key.data();
            match self.index.get(key) {
                None => emits.push(Emit { key, op: APPEND, from: (incoming, row) }),
                Some(&old) => {
                    if self.changed(&comparer, old, &new_values, row)? {
                        emits.push(Emit { key, op: CORRECT_FROM, from: old });
                        emits.push(Emit { key, op: CORRECT_TO, from: (incoming, row) });
                    }
                }
            }
        }
        for (key, &old) in &self.index {
            if !present.contains(key.as_ref()) {
                emits.push(Emit { key, op: RETRACT, from: old });
            }
        }
        self.output(emits, data, op_name)
    }

    /// Each record upserts its key, or deletes it where `op` is 1; the last per key wins.
    pub fn merge_upserts(
        &self,
        data: &RecordBatch,
        op: Option<&ArrayRef>,
        op_name: &str,
    ) -> Result<RecordBatch, IngestError> {
        let deletes = match op {
            None => None,
            Some(op) => Some(
                op.as_any()
                    .downcast_ref::<Int32Array>()
                    .ok_or_else(|| IngestError::Internal(format!("'{op_name}' must be an Int32 column")))?,
            ),
        };
        if let Some((row, bad)) =
            deletes.and_then(|d| d.iter().enumerate().find(|(_, v)| !matches!(v, None | Some(0..=3))))
        {
            return Err(IngestError::Data(format!(
                "record {}: '{op_name}' is {}, where 1 deletes and 0 (or none) upserts",
                row + 1,
                bad.unwrap_or_default()
            )));
        }
        let keys = self.encoder.encode(data)?;
        let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(keys.num_rows());
        for (row, key) in keys.iter().enumerate() {
            last.insert(key.data(), row);
        }
        let comparer = self.comparer(None)?;
        let new_values = comparer.encode(data)?;
        let incoming = self.batches.len();
        let mut emits = Vec::new();
        let mut winners: Vec<(&[u8], usize)> = last.into_iter().collect();
        winners.sort_unstable_by_key(|(_, row)| *row);
        for (key, row) in winners {
            let delete = deletes.is_some_and(|d| d.is_valid(row) && d.value(row) == RETRACT);
            match (self.index.get(key), delete) {
                (Some(&old), true) => emits.push(Emit { key, op: RETRACT, from: old }),
                (None, true) => {}
                (None, false) => emits.push(Emit { key, op: APPEND, from: (incoming, row) }),
                (Some(&old), false) => {
                    if self.changed(&comparer, old, &new_values, row)? {
                        emits.push(Emit { key, op: CORRECT_FROM, from: old });
                        emits.push(Emit { key, op: CORRECT_TO, from: (incoming, row) });
                    }
                }
            }
        }
        self.output(emits, data, op_name)
    }

    fn changed(
        &self,
        comparer: &KeyEncoder,
        old: (usize, usize),
        new: &Rows,
        row: usize,
    ) -> Result<bool, IngestError> {
        let old_batch = self.batches[old.0].slice(old.1, 1);
        let old_values = comparer.encode(&old_batch)?;
        Ok(old_values.row(0) != new.row(row))
    }

    /// The output rows ordered by key, then op (-C before +C).
    fn output(
        &self,
        mut emits: Vec<Emit>,
        data: &RecordBatch,
        op_name: &str,
    ) -> Result<RecordBatch, IngestError> {
        emits.sort_by(|a, b| a.key.cmp(b.key).then(a.op.cmp(&b.op)));
        let sources: Vec<&RecordBatch> = self.batches.iter().chain(std::iter::once(data)).collect();
        let picks: Vec<(usize, usize)> = emits.iter().map(|e| e.from).collect();
        let columns = (0..self.schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> = sources.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&arrays, &picks)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let merged = RecordBatch::try_new(self.schema.clone(), columns)?;
        let ops = Int32Array::from(emits.iter().map(|e| e.op).collect::<Vec<_>>());
        with_op(&merged, &ops, op_name)
    }

    /// Applies a committed slice: +A/+C make a row current, -R/-C retire it.
    pub fn absorb(&mut self, slice: &RecordBatch) -> Result<(), IngestError> {
        let (ops, data) = split_op(slice)?;
        let keys = self.encoder.encode(&data)?;
        let batch = self.batches.len();
        for (row, key) in keys.iter().enumerate() {
            match ops.value(row) {
                APPEND | CORRECT_TO => {
                    self.index.insert(key.as_ref().into(), (batch, row));
                }
                _ => {
                    self.index.remove(key.as_ref());
                }
            }
        }
        self.batches.push(data);
        let stored: usize = self.batches.iter().map(RecordBatch::num_rows).sum();
        if stored > 2 * self.index.len() + 1024 {
            self.compact()?;
        }
        Ok(())
    }

    /// The current rows, one per live key, in key order.
    pub fn current(&self) -> Result<RecordBatch, IngestError> {
        let mut live: Vec<(&Box<[u8]>, &(usize, usize))> = self.index.iter().collect();
        live.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let picks: Vec<(usize, usize)> = live.into_iter().map(|(_, &at)| at).collect();
        let columns = (0..self.schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> = self.batches.iter().map(|b| b.column(c).as_ref()).collect();
                if arrays.is_empty() {
                    Ok(arrow::array::new_empty_array(self.schema.field(c).data_type()))
                } else {
                    interleave(&arrays, &picks)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// Loads current rows (from a checkpoint) as if they had all been appended.
    pub fn load(&mut self, current: RecordBatch) -> Result<(), IngestError> {
        let ops = Int32Array::from(vec![APPEND; current.num_rows()]);
        self.absorb(&with_op(&current, &ops, "op")?)
    }

    /// Forgets every row (a partly loaded checkpoint that did not fit).
    pub fn clear(&mut self) {
        self.batches.clear();
        self.index.clear();
    }

    fn compact(&mut self) -> Result<(), IngestError> {
        let current = self.current()?;
        self.batches.clear();
        self.index.clear();
        self.load(current)
    }
}
