//! Merge strategies: how new records combine with the dataset's history, per the spec.
//!
//! - Append: every record is +A.
//! - Ledger: a record whose primary key is in the history, or earlier in the same batch, is
//!   dropped; the rest are +A.
//! - Snapshot: the batch is the whole current state. New keys are +A, changed rows -C (old
//!   values) then +C (new), keys that disappeared -R (old values). Rows are compared on
//!   `compareColumns`, or on every column but the key and the event time.
//! - ChangelogStream: records carry their own `op` (0..=3) and pass through.
//! - UpsertStream: records are upserts, or deletes where `op` is 1; the last per key wins.
//!   They become +A, -C/+C or -R against the current state; a delete of an unknown key and an
//!   upsert that changes nothing produce no record.
//!
//! Ledger, Snapshot and UpsertStream keep state about the history (`MergeState`), updated
//! after each commit, so no commit re-reads the history. A Ledger's keys live in an index on
//! disk beside the dataset (`ledger_index`), which records the offset it covers; Snapshot and
//! UpsertStream keep the current rows in memory and in the dataset's checkpoints.

mod keyed;
mod keys;
mod ledger;
pub mod ledger_index;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

pub use keyed::KeyedState;
pub use ledger::LedgerState;

use self::ledger_index::IndexConfig;
use super::error::IngestError;
use super::normalize::Normalized;
use crate::odf::MergeStrategy;

/// ODF operation types, as stored in the `op` column.
pub const APPEND: i32 = 0;
pub const RETRACT: i32 = 1;
pub const CORRECT_FROM: i32 = 2;
pub const CORRECT_TO: i32 = 3;

/// What a strategy remembers of the history. Strategies with the same state signature share it.
pub enum MergeState {
    Ledger(LedgerState),
    Keyed(KeyedState),
}

impl MergeState {
    /// Which state a strategy needs, named so that sources sharing it share one.
    pub fn signature(strategy: &MergeStrategy) -> Option<String> {
        match strategy {
            MergeStrategy::Append(_) | MergeStrategy::ChangelogStream(_) => None,
            MergeStrategy::Ledger(k) => Some(format!("ledger:{}", k.primary_key.join(","))),
            MergeStrategy::Snapshot(s) => Some(format!("keyed:{}", s.primary_key.join(","))),
            MergeStrategy::UpsertStream(k) => Some(format!("keyed:{}", k.primary_key.join(","))),
        }
    }

    /// The state for `strategy` over data with `schema` (event time and user columns): a
    /// Ledger's index opened in `index_dir`, an empty state otherwise.
    pub fn new(
        strategy: &MergeStrategy,
        schema: &Schema,
        index_dir: &Path,
        index: &IndexConfig,
    ) -> Result<Option<MergeState>, IngestError> {
        Ok(match strategy {
            MergeStrategy::Append(_) | MergeStrategy::ChangelogStream(_) => None,
            MergeStrategy::Ledger(k) => {
                Some(MergeState::Ledger(LedgerState::open(schema, &k.primary_key, index_dir, index)?))
            }
            MergeStrategy::Snapshot(s) => Some(MergeState::Keyed(KeyedState::new(schema, &s.primary_key)?)),
            MergeStrategy::UpsertStream(k) => {
                Some(MergeState::Keyed(KeyedState::new(schema, &k.primary_key)?))
            }
        })
    }

    /// Rows (Ledger: keys) the state holds.
    pub fn len(&self) -> usize {
        match self {
            MergeState::Ledger(state) => state.len(),
            MergeState::Keyed(state) => state.len(),
        }
    }

    /// Whether the state goes into the dataset's checkpoints (a Ledger's index does not).
    pub fn checkpointed(&self) -> bool {
        matches!(self, MergeState::Keyed(_))
    }

    /// The last offset a state kept on disk covers: `Some` for a Ledger's index.
    pub fn covered_on_disk(&self) -> Option<Option<u64>> {
        match self {
            MergeState::Ledger(state) => Some(state.covered()),
            MergeState::Keyed(_) => None,
        }
    }

    /// The state as one batch, for a checkpoint (a Ledger has none).
    pub fn save(&self) -> Result<Option<RecordBatch>, IngestError> {
        match self {
            MergeState::Ledger(_) => Ok(None),
            MergeState::Keyed(state) => state.current().map(Some),
        }
    }

    /// Takes in a saved state; `false` if it does not fit this one (it is then not used).
    pub fn load(&mut self, saved: RecordBatch) -> Result<bool, IngestError> {
        match self {
            MergeState::Ledger(_) => Ok(false),
            MergeState::Keyed(state) => {
                if !state.fits(&saved) {
                    return Ok(false);
                }
                state.load(saved)?;
                Ok(true)
            }
        }
    }

    /// Takes in a committed slice's records (`op` then the data columns) whose last offset
    /// is `last_offset`: slices written by others, or before this state was made.
    pub fn absorb(&mut self, slice: &RecordBatch, last_offset: u64) -> Result<(), IngestError> {
        match self {
            MergeState::Ledger(state) => state.absorb(slice, last_offset),
            MergeState::Keyed(state) => state.absorb(slice),
        }
    }

    /// As `absorb`, while catching up from many slices; `caught_up` ends it.
    pub fn catch_up(&mut self, slice: &RecordBatch, last_offset: u64) -> Result<(), IngestError> {
        match self {
            MergeState::Ledger(state) => state.catch_up(slice, last_offset),
            MergeState::Keyed(state) => state.absorb(slice),
        }
    }

    pub fn caught_up(&mut self) -> Result<(), IngestError> {
        match self {
            MergeState::Ledger(state) => state.caught_up(),
            MergeState::Keyed(_) => Ok(()),
        }
    }

    /// The dataset committed what this state merged, up to `last_offset` (a Ledger's
    /// pending keys; an in-memory state took its records in as they were merged).
    pub fn committed(&mut self, last_offset: u64) -> Result<(), IngestError> {
        match self {
            MergeState::Ledger(state) => state.committed(last_offset),
            MergeState::Keyed(_) => Ok(()),
        }
    }

    /// Empties an in-memory state (a checkpoint that did not fit was partly loaded).
    pub fn clear(&mut self) {
        if let MergeState::Keyed(state) = self {
            state.clear();
        }
    }

    /// Empties a state kept on disk that is ahead of the dataset.
    pub fn reset(&mut self) -> Result<(), IngestError> {
        match self {
            MergeState::Ledger(state) => state.reset(),
            MergeState::Keyed(_) => Ok(()),
        }
    }
}

/// Merges normalized records against `state`, giving `op` then the data columns. Once the
/// result is committed the caller calls `committed`; if it is not, the state must be
/// discarded (a Ledger holds the new keys pending).
pub fn merge(
    strategy: &MergeStrategy,
    state: Option<&mut MergeState>,
    input: Normalized,
    op_name: &str,
) -> Result<RecordBatch, IngestError> {
    let rows = input.batch.num_rows();
    match (strategy, state) {
        (MergeStrategy::Append(_), _) => {
            with_op(&input.batch, &Int32Array::from(vec![APPEND; rows]), op_name)
        }
        (MergeStrategy::ChangelogStream(_), _) => {
            let op = input.op.ok_or_else(|| {
                IngestError::Source(format!(
                    "a ChangelogStream source needs an '{op_name}' column in its data"
                ))
            })?;
            let op = op
                .as_any()
                .downcast_ref::<Int32Array>()
                .cloned()
                .ok_or_else(|| IngestError::Internal(format!("'{op_name}' must be an Int32 column")))?;
            if let Some((row, bad)) = op.iter().enumerate().find(|(_, v)| !matches!(v, Some(0..=3))) {
                return Err(IngestError::Data(format!(
                    "record {}: '{op_name}' is {}, where 0 (+A), 1 (-R), 2 (-C) or 3 (+C) is expected",
                    row + 1,
                    bad.map_or("null".to_string(), |v| v.to_string())
                )));
            }
            with_op(&input.batch, &op, op_name)
        }
        (MergeStrategy::Ledger(_), Some(MergeState::Ledger(state))) => state.merge(&input.batch, op_name),
        (MergeStrategy::Snapshot(s), Some(MergeState::Keyed(state))) => {
            state.merge_snapshot(&input.batch, s.compare_columns.as_deref(), op_name)
        }
        (MergeStrategy::UpsertStream(_), Some(MergeState::Keyed(state))) => {
            state.merge_upserts(&input.batch, input.op.as_ref(), op_name)
        }
        (other, _) => {
            Err(IngestError::Internal(format!("no state was prepared for the {} merge", other.kind())))
        }
    }
}

/// `op` in front of `data`'s columns.
pub fn with_op(data: &RecordBatch, op: &Int32Array, op_name: &str) -> Result<RecordBatch, IngestError> {
    let mut fields = vec![Arc::new(Field::new(op_name, DataType::Int32, false))];
    fields.extend(data.schema().fields().iter().cloned());
    let mut columns: Vec<ArrayRef> = vec![Arc::new(op.clone())];
    columns.extend(data.columns().iter().cloned());
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// Splits a slice (`op` then data columns) into its ops and its data.
pub fn split_op(slice: &RecordBatch) -> Result<(Int32Array, RecordBatch), IngestError> {
    let op =
        slice.column(0).as_any().downcast_ref::<Int32Array>().cloned().ok_or_else(|| {
            IngestError::Internal("the first column of a slice must be the Int32 op".into())
        })?;
    Ok((op, slice.project(&(1..slice.num_columns()).collect::<Vec<_>>())?))
}

#[cfg(test)]
mod tests;
