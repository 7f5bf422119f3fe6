//! Records consumed from an event queue (Kafka). The queue keeps them until they are
//! committed, so they skip the write-ahead log: a commit records the queue's offsets as its
//! source's state instead (a kind of its own, beside the log position), and a restart
//! resumes from the offsets the chain holds. A crash before the commit re-reads the records;
//! after it, never.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::entry::Entry;
use crate::ingest::{ColumnBinding, InputFormat};
use crate::odf::SourceName;

/// One record, checked against its source, waiting for the commit.
pub struct ConsumedRecord {
    pub payload: Bytes,
    /// The format it declared (a `content-type` header); `None` reads it in the source's own.
    pub format: Option<InputFormat>,
    /// Values for columns the payload leaves out (topic captures, the record's key, ...).
    pub columns: Vec<(String, String)>,
    /// Rules its rows must keep (a route's bound captures), checked again at the commit.
    pub bindings: Vec<ColumnBinding>,
    /// Where it was read (topic, partition, offset), for the quarantine.
    pub address: String,
    pub sender: String,
    /// The event time of rows that carry none: the record's own timestamp.
    pub time: DateTime<Utc>,
}

/// A batch of consumed records for one push source, with the state each prefix of it
/// leaves the source in.
pub struct Consumed {
    pub(super) source: SourceName,
    pub(super) kind: String,
    pub(super) records: Vec<Entry>,
    /// The state to record once the first `k` records are committed; `k` = all of them is
    /// the whole batch's, records skipped after the last one included.
    pub(super) state_after: Box<dyn Fn(usize) -> String + Send>,
}

impl Consumed {
    pub fn new(
        source: SourceName,
        kind: &str,
        records: Vec<ConsumedRecord>,
        state_after: impl Fn(usize) -> String + Send + 'static,
    ) -> Consumed {
        let entry = |r: ConsumedRecord| Entry {
            source: source.to_string(),
            format: r.format,
            route: r.address,
            sender: r.sender,
            received: r.time,
            columns: r.columns,
            bindings: r.bindings,
            payload: r.payload,
        };
        let records = records.into_iter().map(entry).collect();
        Consumed { source, kind: kind.to_owned(), records, state_after: Box::new(state_after) }
    }
}
