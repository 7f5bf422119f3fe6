//! The push ingest engine: bytes for a (dataset, source) become a committed ODF data slice.
//!
//! `read` (NdJson, Json, CSV, CBOR -> records coerced to the source's schema; format
//! translation) -> `preprocess` (DataFusion SQL) -> `normalize` (event time, the dataset's
//! columns) -> `merge` (Append, Ledger, Snapshot, ChangelogStream, UpsertStream) -> `slice`
//! (Parquet, hashes) -> commit. `DatasetWriter` runs it for batches of many messages, as the
//! transports deliver them, or for files, as the CLI does.

mod binding;
mod check;
mod checkpoint;
mod coerce;
mod error;
mod format;
mod manifests;
mod merge;
mod merge_states;
mod normalize;
mod prepared;
mod preprocess;
mod read;
mod read_schema;
mod request;
mod sink;
mod slice;
mod writer;
mod writer_thread;

pub use binding::{BindingRule, ColumnBinding, Part, Pattern};
pub use check::{CheckOutcome, SourceCheck};
pub use error::{ErrorKind, IngestError};
pub use format::InputFormat;
pub use manifests::{Applied, ManifestErrors, apply_manifests, check_manifests, read_manifests};
pub use merge::ledger_index::{IndexConfig, IndexError, IndexStats, LedgerIndex};
pub use merge_states::{checkpointed_rows, remove_stale_private_indexes};
pub use prepared::Prepared;
pub use read::{Position, Problem, RecordError};
pub use request::{
    Committed, IngestOptions, IngestOutcome, IngestRequest, Message, MessageStream, SourcePosition,
    WriterOptions,
};
pub use writer::DatasetWriter;
pub use writer_thread::WriterThread;

use crate::odf::{AddPushSource, Transform};

/// Checks at `add` time what can be checked of a push source before any data arrives: the
/// read schema's types, the read options, and the preprocess queries, planned against the
/// read schema (a query naming a missing column fails here, not at the first push).
pub async fn check_push_source(source: &AddPushSource) -> Result<(), IngestError> {
    let schema = read_schema::ReadSchema::of(&source.read).map_err(IngestError::Source)?;
    read::ReadOptions::of(&source.read).map_err(IngestError::Source)?;
    let columns = match &source.preprocess {
        Some(Transform::Sql(sql)) => preprocess::Preprocess::new(sql, schema.arrow()).await?.output_schema(),
        None => schema.arrow(),
    };
    // The columns must be ones a dataset stores, and not the system columns.
    crate::odf::arrow_schema::to_odf(&columns)?;
    let takes_op = matches!(
        source.merge,
        crate::odf::MergeStrategy::ChangelogStream(_) | crate::odf::MergeStrategy::UpsertStream(_)
    );
    for reserved in ["offset", "system_time"].into_iter().chain((!takes_op).then_some("op")) {
        if columns.index_of(reserved).is_ok() {
            return Err(IngestError::Source(format!("column '{reserved}' is a system column; rename it")));
        }
    }
    for key in source.merge.key_columns() {
        if columns.index_of(key).is_err() {
            let names: Vec<&str> = columns.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(IngestError::Source(format!(
                "merge {} names column '{key}', which the {} does not have (columns: {})",
                source.merge.kind(),
                if source.preprocess.is_some() { "preprocess output" } else { "read schema" },
                names.join(", ")
            )));
        }
    }
    Ok(())
}
