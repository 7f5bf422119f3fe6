//! What a caller hands the writer (messages, a request, options) and what it gets back.

use std::io::{BufRead, Cursor};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::binding::ColumnBinding;
use super::format::InputFormat;
use super::merge::ledger_index::IndexConfig;
use super::read::RecordError;
use crate::odf::{Multihash, OffsetInterval};
use crate::store::DEFAULT_LOCK_TIMEOUT;

/// One message of a batch: a device's payload, a file, stdin.
#[derive(Debug, Clone)]
pub struct Message {
    /// Shared, not copied, from the transport that received it to the commit.
    pub bytes: Bytes,
    /// The format the sender declared; `None` means the source's own format.
    pub format: Option<InputFormat>,
    /// Where it came from, for errors: a file name, a device, a topic.
    pub origin: String,
    /// When the gateway received it: the event time of its records that carry none, so a
    /// batch gathered over a second, or replayed after a crash, keeps each message's time.
    pub received: Option<DateTime<Utc>>,
    /// Values from outside the payload (a device id captured from a topic or a path), as
    /// text, for read-schema columns the payload leaves out.
    pub columns: Vec<(String, String)>,
    /// Rules each record must keep (a device id bound to the sender's identity).
    pub bindings: Vec<ColumnBinding>,
}

impl Message {
    pub fn new(bytes: impl Into<Bytes>, origin: impl Into<String>) -> Message {
        Message {
            bytes: bytes.into(),
            format: None,
            origin: origin.into(),
            received: None,
            columns: Vec::new(),
            bindings: Vec::new(),
        }
    }

    pub fn with_format(mut self, format: Option<InputFormat>) -> Message {
        self.format = format;
        self
    }

    pub fn received_at(mut self, time: DateTime<Utc>) -> Message {
        self.received = Some(time);
        self
    }

    pub fn with_column(mut self, name: impl Into<String>, value: impl Into<String>) -> Message {
        self.columns.push((name.into(), value.into()));
        self
    }
}

/// A message read as a stream (a file, stdin), for inputs too big to hold in memory.
pub struct MessageStream {
    pub body: Box<dyn BufRead + Send>,
    pub format: Option<InputFormat>,
    pub origin: String,
    pub received: Option<DateTime<Utc>>,
    pub columns: Vec<(String, String)>,
    pub bindings: Vec<ColumnBinding>,
}

impl MessageStream {
    pub fn new(body: impl BufRead + Send + 'static, origin: impl Into<String>) -> MessageStream {
        MessageStream {
            body: Box::new(body),
            format: None,
            origin: origin.into(),
            received: None,
            columns: Vec::new(),
            bindings: Vec::new(),
        }
    }

    pub fn with_format(mut self, format: Option<InputFormat>) -> MessageStream {
        self.format = format;
        self
    }
}

impl From<Message> for MessageStream {
    fn from(message: Message) -> MessageStream {
        MessageStream {
            body: Box::new(Cursor::new(message.bytes)),
            format: message.format,
            origin: message.origin,
            received: message.received,
            columns: message.columns,
            bindings: message.bindings,
        }
    }
}

/// An opaque position a sender records with its data, e.g. how far a write-ahead log has
/// been committed. It goes into the AddData as the source's `newSourceState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    pub kind: String,
    pub value: String,
}

/// One commit's worth of messages. For a Snapshot source the request is one snapshot: its
/// messages together are the whole state (so a sender pushes one snapshot per request), and
/// a request with no records changes nothing.
#[derive(Debug, Clone, Default)]
pub struct IngestRequest {
    /// The push source; may be left out when the dataset has only one.
    pub source: Option<String>,
    pub messages: Vec<Message>,
    /// Event time for records that carry none and whose message has no receive time (else
    /// the system time).
    pub event_time: Option<DateTime<Utc>>,
    /// Recorded in the same AddData as the records; committed on its own (an AddData
    /// without data) when every record merges away, so a recorded position is never lost.
    pub source_state: Option<SourcePosition>,
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub system_time: DateTime<Utc>,
    /// Commit the good records even if some were rejected (else commit nothing).
    pub skip_bad_records: bool,
}

/// How a writer behaves over time.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// How long to wait for another writer's lock before giving up (a retryable error).
    pub lock_timeout: Duration,
    /// A checkpoint of the merge states is written no more often than every this many rows
    /// (and never before a quarter of the state's size has changed, up to 100,000 rows).
    pub checkpoint_min_rows: u64,
    /// ... and no more often than this. A root dataset keeps every checkpoint for good, and
    /// another node pulls every one.
    pub checkpoint_min_interval: Duration,
    /// Records read before they are transformed, merged and written as one chunk: bounds
    /// the memory of a big ingest (64k GPS records are a few MB in Arrow).
    pub chunk_rows: usize,
    /// The memory a Ledger's key index may hold (cache, write buffer, recent keys).
    pub ledger_index: IndexConfig,
}

impl Default for WriterOptions {
    fn default() -> WriterOptions {
        WriterOptions {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            checkpoint_min_rows: 0,
            checkpoint_min_interval: Duration::ZERO,
            chunk_rows: 64 * 1024,
            ledger_index: IndexConfig::default(),
        }
    }
}

#[derive(Debug, Default)]
pub struct IngestOutcome {
    pub source: String,
    /// Records read that fit the schema (before preprocess and merge).
    pub records_read: usize,
    pub rejected: Vec<RecordError>,
    /// `None`: nothing new to commit (e.g. every record was a Ledger duplicate).
    pub committed: Option<Committed>,
}

#[derive(Debug, Clone)]
pub struct Committed {
    pub head: Multihash,
    pub records: u64,
    /// `None` for a commit of a source state alone.
    pub offsets: Option<OffsetInterval>,
    pub watermark: Option<DateTime<Utc>>,
}
