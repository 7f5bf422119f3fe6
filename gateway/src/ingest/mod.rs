//! The push ingest engine: bytes for a (dataset, source) become a committed ODF data slice.
//!
//! `read` (NdJson, Json, CSV, CBOR -> records coerced to the source's schema; format
//! translation) -> `preprocess` (DataFusion SQL) -> `normalize` (event time, the dataset's
//! columns) -> `merge` (Append, Ledger, Snapshot, ChangelogStream, UpsertStream) -> `slice`
//! (Parquet, hashes) -> commit. `DatasetWriter` runs it for batches of many messages, as the
//! transports deliver them, or for files, as the CLI does.

mod checkpoint;
mod coerce;
mod dataset_schema;
mod error;
mod format;
mod merge;
mod normalize;
mod preprocess;
mod read;
mod read_schema;
mod sink;
mod slice;
mod vocab;
mod writer;

pub use error::IngestError;
pub use format::InputFormat;
pub use read::{Position, Problem, RecordError};
pub use vocab::Vocab;
pub use writer::{Committed, DatasetWriter, IngestOptions, IngestOutcome, IngestRequest, Message};

use crate::odf::{AddPushSource, Transform};
use crate::store::Dataset;

/// Re-reads a data slice and recomputes its logical hash (arrow-digest of its records).
pub fn check_logical_hash(dataset: &Dataset, slice: &crate::odf::DataSlice) -> Result<(), String> {
    let batches = dataset.read_slice(slice).map_err(|e| e.to_string())?;
    let Some(schema) = batches.first().map(|b| b.schema()) else {
        return Err("the file holds no records".into());
    };
    let actual = slice::logical_hash(&schema, &batches);
    if actual != slice.logical_hash {
        return Err(format!("records digest to {actual}, the block says {}", slice.logical_hash));
    }
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let expected = slice.offset_interval.end.saturating_sub(slice.offset_interval.start).saturating_add(1);
    if rows != expected {
        return Err(format!("{rows} records, the block's offsets say {expected}"));
    }
    Ok(())
}

/// The Arrow schema of a dataset's slices, once it has one (after the first data commit).
pub fn dataset_arrow_schema(dataset: &Dataset) -> Result<Option<arrow::datatypes::SchemaRef>, IngestError> {
    dataset.state().schema.as_ref().map(dataset_schema::to_arrow).transpose()
}

/// Checks at `add` time what can be checked of a push source before any data arrives: the
/// read schema's types, the read options, and the preprocess queries, planned against the
/// read schema (a query naming a missing column fails here, not at the first push).
pub async fn check_push_source(source: &AddPushSource) -> Result<(), IngestError> {
    let schema = read_schema::ReadSchema::of(&source.read).map_err(IngestError::Schema)?;
    read::ReadOptions::of(&source.read).map_err(IngestError::Format)?;
    let columns = match &source.preprocess {
        Some(Transform::Sql(sql)) => preprocess::Preprocess::of(sql).plan(schema.arrow()).await?,
        None => schema.arrow(),
    };
    // The columns must be ones a dataset stores, and not the system columns.
    dataset_schema::to_odf(&columns)?;
    let takes_op = matches!(
        source.merge,
        crate::odf::MergeStrategy::ChangelogStream(_) | crate::odf::MergeStrategy::UpsertStream(_)
    );
    for reserved in ["offset", "system_time"].into_iter().chain((!takes_op).then_some("op")) {
        if columns.index_of(reserved).is_ok() {
            return Err(IngestError::Schema(format!("column '{reserved}' is a system column; rename it")));
        }
    }
    for key in source.merge.key_columns() {
        if columns.index_of(key).is_err() {
            let names: Vec<&str> = columns.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(IngestError::Schema(format!(
                "merge {} names column '{key}', which the {} does not have (columns: {})",
                source.merge.kind(),
                if source.preprocess.is_some() { "preprocess output" } else { "read schema" },
                names.join(", ")
            )));
        }
    }
    Ok(())
}
