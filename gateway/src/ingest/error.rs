use std::io;

use super::read::RecordError;
use crate::odf::SchemaError;
use crate::store::{IoError, StoreError};

/// What kind of failure an ingest error is, so that a transport can pick its reply (an HTTP
/// status, a CoAP response code, an MQTT 5 reason code) without reading messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The sender's data does not fit the source: sending it again will not help.
    BadInput,
    /// No such dataset or push source (or the request names none where several exist).
    NotFound,
    /// The source exists but takes nothing now (disabled, offsets exhausted).
    Refused,
    /// A passing condition (the dataset's lock held too long, a full disk): try again later.
    Retryable,
    /// A fault of the gateway, the disk or the dataset's definition.
    Internal,
}

/// Why an ingest failed. `kind()` says what a sender can do about it.
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

    /// Data that read well but failed a later step (preprocess, merge) as a whole, where no
    /// single message could be blamed.
    #[error("{0}")]
    Data(String),

    /// The push source's definition cannot be applied (read options, schema, preprocess
    /// plan, columns that do not fit the dataset): a fault of the manifest, not the data.
    #[error("source definition: {0}")]
    Source(String),

    #[error("checkpoint: {0}")]
    Checkpoint(String),

    #[error("the dataset's offsets are exhausted")]
    OffsetsExhausted,

    #[error("{0}")]
    Internal(String),

    #[error(transparent)]
    Io(#[from] IoError),

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

impl From<SchemaError> for IngestError {
    fn from(e: SchemaError) -> IngestError {
        IngestError::Source(e.0)
    }
}

impl IngestError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            IngestError::UnknownSource { .. }
            | IngestError::SourceNotNamed { .. }
            | IngestError::NoPushSource(_) => ErrorKind::NotFound,
            IngestError::Store(StoreError::NotFound { .. }) => ErrorKind::NotFound,
            IngestError::DisabledSource { .. } | IngestError::OffsetsExhausted => ErrorKind::Refused,
            IngestError::BadRecords(_) | IngestError::Data(_) => ErrorKind::BadInput,
            IngestError::Store(StoreError::LockTimeout { .. }) => ErrorKind::Retryable,
            _ if self.io_kind().is_some_and(is_transient) => ErrorKind::Retryable,
            _ => ErrorKind::Internal,
        }
    }

    /// The kind of the I/O error underneath, if one caused this (a full disk, say).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        // Transparent variants forward `source()` past the `IoError` they wrap.
        match self {
            IngestError::Io(e) | IngestError::Store(StoreError::Io(e)) => return Some(e.error.kind()),
            _ => {}
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = cause {
            if let Some(io) = error.downcast_ref::<io::Error>() {
                return Some(io.kind());
            }
            if let Some(io) = error.downcast_ref::<IoError>() {
                return Some(io.error.kind());
            }
            cause = error.source();
        }
        None
    }
}

/// I/O failures that go away on their own (space freed, a busy file released).
fn is_transient(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        StorageFull | QuotaExceeded | ResourceBusy | WouldBlock | TimedOut | Interrupted | OutOfMemory
    )
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

fn first(errors: &[RecordError]) -> String {
    errors.first().map(ToString::to_string).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_retryable_and_keeps_its_io_kind() {
        let full = IoError {
            action: "write",
            path: "data/x".into(),
            error: io::Error::from(io::ErrorKind::StorageFull),
        };
        let error = IngestError::from(StoreError::from(full));
        assert_eq!(error.kind(), ErrorKind::Retryable);
        assert_eq!(error.io_kind(), Some(io::ErrorKind::StorageFull));
        let denied = IoError {
            action: "write",
            path: "x".into(),
            error: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(IngestError::from(denied).kind(), ErrorKind::Internal);
    }

    #[test]
    fn parquet_io_errors_are_seen_through() {
        let error = IngestError::from(parquet::errors::ParquetError::External(Box::new(io::Error::from(
            io::ErrorKind::StorageFull,
        ))));
        assert_eq!(error.kind(), ErrorKind::Retryable);
    }
}
