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

const FORMAT: &str = "odf-gateway.merge-state/1";

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

pub fn encode(last_offset: Option<u64>, states: &[(String, RecordBatch)]) -> Result<Vec<u8>, IngestError> {
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("last_offset".to_string(), last_offset.map(|o| o.to_string()).unwrap_or_default()),
    ]);
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(
        vec![Field::new("state", DataType::Utf8, false), Field::new("payload", DataType::Binary, false)],
        metadata,
    ));
    let names = StringArray::from_iter_values(states.iter().map(|(name, _)| name.as_str()));
    let payloads = states.iter().map(|(_, batch)| to_ipc(batch)).collect::<Result<Vec<_>, _>>()?;
    let payloads = BinaryArray::from_iter_values(payloads.iter());
    to_ipc(&RecordBatch::try_new(schema, vec![Arc::new(names), Arc::new(payloads)])?)
}

/// `None` when the checkpoint was written by something else.
pub fn decode(bytes: &[u8]) -> Result<Option<Saved>, IngestError> {
    let outer = from_ipc(bytes)?;
    let metadata = outer.schema().metadata().clone();
    if metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Ok(None);
    }
    let last_offset = match metadata.get("last_offset").map(String::as_str) {
        None | Some("") => None,
        Some(n) => Some(
            n.parse().map_err(|_| IngestError::Checkpoint(format!("last_offset '{n}' is not a number")))?,
        ),
    };
    let column = |i: usize| outer.column(i).clone();
    let names = column(0);
    let payloads = column(1);
    let names = names
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| IngestError::Checkpoint("bad state names".into()))?;
    let payloads = payloads
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| IngestError::Checkpoint("bad payloads".into()))?;
    let mut states = HashMap::new();
    for i in 0..outer.num_rows() {
        if names.is_valid(i) && payloads.is_valid(i) {
            states.insert(names.value(i).to_owned(), from_ipc(payloads.value(i))?);
        }
    }
    Ok(Some(Saved { last_offset, states }))
}
