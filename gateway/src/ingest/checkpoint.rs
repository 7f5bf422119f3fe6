//! Merge state saved in ODF checkpoint files, so a restart does not re-read the history.
//!
//! A checkpoint is an Arrow IPC stream of (state, payload) rows: one per merge-state
//! signature, the payload itself an IPC stream of that state (Ledger: its key columns;
//! Snapshot/Upsert: the current rows). Metadata names the format and the last offset the
//! states have taken in; a checkpoint in another format is ignored and the states rebuilt
//! from the data slices.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, BinaryArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use super::error::IngestError;

/// The one schema metadata entry: its key names the format, its value is the last offset
/// taken in ("" for none). Arrow keeps schema metadata in a HashMap, which the IPC writer
/// walks in a per-process random order; with a single entry the same states always give the
/// same bytes, so the same history gives the same checkpoint hash.
const FORMAT: &str = "odf-gateway.merge-state/2";

/// Saved states and the last offset they have taken in.
pub struct Saved {
    pub last_offset: Option<u64>,
    pub states: HashMap<String, RecordBatch>,
}

fn to_ipc(batch: &RecordBatch) -> Result<Vec<u8>, IngestError> {
    let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema())?;
    writer.write(batch)?;
    Ok(writer.into_inner()?)
}

fn from_ipc(bytes: &[u8]) -> Result<RecordBatch, IngestError> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// A state's rows without schema-level metadata (nothing reads it back, and a HashMap of
/// several entries would make the bytes vary).
fn without_metadata(batch: &RecordBatch) -> Result<RecordBatch, IngestError> {
    let schema = Schema::new(batch.schema().fields().clone());
    Ok(RecordBatch::try_new(Arc::new(schema), batch.columns().to_vec())?)
}

pub fn encode(last_offset: Option<u64>, states: &[(String, RecordBatch)]) -> Result<Vec<u8>, IngestError> {
    let metadata =
        HashMap::from([(FORMAT.to_string(), last_offset.map(|o| o.to_string()).unwrap_or_default())]);
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(
        vec![Field::new("state", DataType::Utf8, false), Field::new("payload", DataType::Binary, false)],
        metadata,
    ));
    // Rows in name order, whatever order the caller keeps its states in.
    let mut states: Vec<&(String, RecordBatch)> = states.iter().collect();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    let names = StringArray::from_iter_values(states.iter().map(|(name, _)| name.as_str()));
    let payloads =
        states.iter().map(|(_, batch)| to_ipc(&without_metadata(batch)?)).collect::<Result<Vec<_>, _>>()?;
    let payloads = BinaryArray::from_iter_values(payloads.iter());
    to_ipc(&RecordBatch::try_new(schema, vec![Arc::new(names), Arc::new(payloads)])?)
}

/// A column of the checkpoint by name, of the type it must have.
fn column<'a, T: Array + 'static>(
    batch: &'a RecordBatch,
    name: &str,
    kind: &str,
) -> Result<&'a T, IngestError> {
    let column = batch.column_by_name(name).ok_or_else(|| {
        IngestError::Checkpoint(format!(
            "the checkpoint has no '{name}' column; it will be rebuilt from the data"
        ))
    })?;
    column.as_any().downcast_ref::<T>().ok_or_else(|| {
        IngestError::Checkpoint(format!(
            "the checkpoint's '{name}' column is {}, not {kind}; it will be rebuilt from the data",
            column.data_type()
        ))
    })
}

/// `None` when the checkpoint was written by something else (or an older format).
pub fn decode(bytes: &[u8]) -> Result<Option<Saved>, IngestError> {
    let outer = from_ipc(bytes)?;
    let Some(last_offset) = outer.schema().metadata().get(FORMAT).cloned() else {
        return Ok(None);
    };
    let last_offset = match last_offset.as_str() {
        "" => None,
        n => Some(n.parse().map_err(|_| {
            IngestError::Checkpoint(format!(
                "last offset '{n}' is not a number; it will be rebuilt from the data"
            ))
        })?),
    };
    let names: &StringArray = column(&outer, "state", "Utf8")?;
    let payloads: &BinaryArray = column(&outer, "payload", "Binary")?;
    let mut states = HashMap::new();
    for i in 0..outer.num_rows() {
        if names.is_valid(i) && payloads.is_valid(i) {
            states.insert(names.value(i).to_owned(), from_ipc(payloads.value(i))?);
        }
    }
    Ok(Some(Saved { last_offset, states }))
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int64Array, RecordBatchOptions, StringArray};

    use super::*;

    fn keys(values: &[i64]) -> RecordBatch {
        let mut schema = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        // Several metadata entries: their order must not reach the bytes.
        schema.metadata = (0..8).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    #[test]
    fn the_same_states_give_the_same_bytes() {
        let states =
            || vec![("ledger:id".to_string(), keys(&[1, 2])), ("snapshot:id".to_string(), keys(&[3]))];
        let first = encode(Some(41), &states()).unwrap();
        let reversed: Vec<_> = states().into_iter().rev().collect();
        assert_eq!(first, encode(Some(41), &reversed).unwrap());
        // Fresh HashMaps (fresh random orders) each time.
        for _ in 0..20 {
            assert_eq!(first, encode(Some(41), &states()).unwrap());
        }
        let saved = decode(&first).unwrap().unwrap();
        assert_eq!(saved.last_offset, Some(41));
        assert_eq!(saved.states["ledger:id"].num_rows(), 2);
    }

    fn outer(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Vec<u8> {
        let metadata = HashMap::from([(FORMAT.to_string(), "3".to_string())]);
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
        let options = RecordBatchOptions::new().with_row_count(Some(1));
        to_ipc(&RecordBatch::try_new_with_options(schema, columns, &options).unwrap()).unwrap()
    }

    #[test]
    fn a_bad_checkpoint_is_an_error_not_a_panic() {
        let names: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
        let missing = outer(vec![Field::new("state", DataType::Utf8, false)], vec![names.clone()]);
        let e = decode(&missing).err().unwrap().to_string();
        assert!(e.contains("no 'payload' column"), "{e}");

        let wrong = outer(
            vec![Field::new("state", DataType::Utf8, false), Field::new("payload", DataType::Int64, false)],
            vec![names, Arc::new(Int64Array::from(vec![1]))],
        );
        let e = decode(&wrong).err().unwrap().to_string();
        assert!(e.contains("'payload' column is Int64, not Binary"), "{e}");

        let no_columns = outer(vec![], vec![]);
        assert!(decode(&no_columns).is_err());
        assert!(decode(b"not arrow").is_err());
        // A payload that is not an IPC stream.
        let garbage = outer(
            vec![Field::new("state", DataType::Utf8, false), Field::new("payload", DataType::Binary, false)],
            vec![Arc::new(StringArray::from(vec!["a"])), Arc::new(BinaryArray::from_vec(vec![b"xx"]))],
        );
        assert!(decode(&garbage).is_err());
    }
}
