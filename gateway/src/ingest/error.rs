use super::read::RecordError;
use crate::store::StoreError;

/// Why an ingest failed. Variants a transport maps to its own codes (unknown source: 404,
/// bad records: 400, ...) are distinct; the rest are internal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("dataset '{dataset}' has no push source '{source_name}' (sources: {})", list(.known))]
    UnknownSource { dataset: String, source_name: String, known: Vec<String> },

    #[error("push source '{source_name}' of dataset '{dataset}' is disabled")]
    DisabledSource { dataset: String, source_name: String },

    #[error("dataset '{dataset}' has several push sources; name one of: {}", list(.known))]
    SourceNotNamed { dataset: String, known: Vec<String> },

    #[error("dataset '{0}' has no push source to ingest into")]
    NoPushSource(String),

    #[error("{} record(s) rejected, nothing was committed; the first: {}", .0.len(), first(.0))]
    BadRecords(Vec<RecordError>),

    #[error("{0}")]
    Format(String),

    #[error("schema: {0}")]
    Schema(String),

    #[error("preprocess: {0}")]
    Preprocess(String),

    #[error("merge: {0}")]
    Merge(String),

    #[error("checkpoint: {0}")]
    Checkpoint(String),

    #[error("the dataset's offsets are exhausted")]
    OffsetsExhausted,

    #[error("{0}")]
    Io(String),

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

fn first(errors: &[RecordError]) -> String {
    errors.first().map(ToString::to_string).unwrap_or_default()
}
