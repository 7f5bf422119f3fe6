//! Kafka intake: topics consumed into push sources, every record committed exactly once.
//!
//! Kafka is the log here, so its records skip the write-ahead log. A `[[kafka]]` entry's
//! topics go to push sources (a dataset and source it names, or the route table, a topic's
//! segments separated by `.`: `telemetry.{vendor}.gps`). For each source a stream fetches
//! its partitions, checks each record against the source (a bad one goes to the quarantine
//! with its topic, partition and offset, and the partition moves on), and commits batches
//! through the dataset's committer, recording every partition's next offset as the source's
//! state (`offsets`). At start, and after any error, consumption resumes from the offsets the
//! chain holds, so a crash at any instant neither loses nor repeats a record.
//!
//! - `consumer`: one entry's connection, its topics and streams, retried with backoff.
//! - `stream`: one push source's partitions, batches and commits.
//! - `offsets`: the source state a commit records.
//!
//! The client is rskafka: pure Rust, so it cross-builds with the rest (TLS by rustls, SASL
//! PLAIN and SCRAM). It has no consumer groups, which exactly-once does not need here (the
//! offsets live in the chain); progress is therefore not committed to a group, and lag is
//! read from the metrics and `/readyz` instead of a group's lag tools.

mod consumer;
mod offsets;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use consumer::{ConsumerBoard, ConsumerStatus};
pub use offsets::{Offsets, STATE_KIND};

use crate::intake::Intake;
use crate::pipeline::FlushPolicy;
use crate::routes::Resolved;
use crate::transport::tls::ClientTls;

/// One `[[kafka]]` entry, checked.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// For logs, metrics and `/readyz`: `kafka[0]`.
    pub name: String,
    pub brokers: Vec<String>,
    pub topics: Topics,
    /// The dataset and source every topic goes to; `None`: the route table decides.
    pub target: Option<Resolved>,
    pub start: StartAt,
    /// Columns filled from each record, by column name.
    pub columns: Vec<(String, RecordField)>,
    pub client_id: String,
    pub tls: Option<ClientTls>,
    pub sasl: Option<Sasl>,
    pub max_wait: Duration,
    pub fetch_bytes: i32,
    pub refresh: Duration,
}

#[derive(Debug, Clone)]
pub enum Topics {
    Names(Vec<String>),
    Pattern(regex::Regex),
}

/// Where a partition without a recorded offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    /// The first record at or after this time.
    Time(DateTime<Utc>),
}

/// What of a record fills a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordField {
    Key,
    /// Its timestamp, RFC 3339.
    Timestamp,
    Topic,
    Partition,
    Offset,
    Header(String),
}

impl RecordField {
    pub fn parse(text: &str) -> Result<RecordField, String> {
        Ok(match text {
            "key" => RecordField::Key,
            "timestamp" => RecordField::Timestamp,
            "topic" => RecordField::Topic,
            "partition" => RecordField::Partition,
            "offset" => RecordField::Offset,
            _ => match text.strip_prefix("header:") {
                Some(name) if !name.is_empty() => RecordField::Header(name.to_owned()),
                _ => {
                    return Err(format!(
                        "'{text}' is not key, timestamp, topic, partition, offset or header:NAME"
                    ));
                }
            },
        })
    }
}

#[derive(Debug, Clone)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub fn parse(text: &str) -> Result<SaslMechanism, String> {
        match text.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(format!("'{text}' is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")),
        }
    }
}

/// Consumes one `[[kafka]]` entry until `shutdown` turns true; what a stream holds and has
/// not committed is committed first.
pub fn spawn(
    options: KafkaOptions,
    flush: FlushPolicy,
    intake: Arc<Intake>,
    board: Arc<ConsumerBoard>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(consumer::run(Arc::new(options), flush, intake, board, shutdown))
}
