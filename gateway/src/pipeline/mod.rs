//! The durable pipeline between the intake and the ingest engine: one write-ahead log and
//! one committer per dataset. The only code that calls `ingest` for network traffic.
//!
//! A payload is submitted with its (dataset, source), format and origin. It is checked
//! against the source's schema (records that do not fit go to the quarantine, and the sender
//! is told which), appended to the dataset's log and made durable with the other payloads
//! waiting (group commit), and only then is the sender told it is accepted. The committer
//! gathers logged payloads into batches and commits them, recording the log position in each
//! commit, so that a restart replays exactly what is not yet in the dataset.
//!
//! - `wal`: the log's segment files; `entry`: a payload as the log keeps it.
//! - `consumed`: records from an event queue, which skip the log (the queue keeps them).
//! - `group_commit`: the log's writer thread (one fsync for every sender waiting).
//! - `committer`: batching, commits, retries, replay at start.
//! - `quarantine`: what could not be committed, for an operator; `rejection`: one bad
//!   record as senders read it.
//! - `dataset`: one dataset's handle (check, backpressure, append); `opening`: taking its
//!   log and replaying it at start; `shared`: what its
//!   senders and committer share; `request_metrics`: its request counters, kept.

mod committer;
mod consumed;
mod dataset;
mod entry;
mod group_commit;
mod opening;
mod quarantine;
mod rejection;
mod request_metrics;
mod shared;
mod wal;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use committer::{FlushPolicy, WAL_STATE_KIND};
pub use consumed::{Consumed, ConsumedRecord};
pub use dataset::{Accepted, DatasetPipeline, Screened, SourceInfo, Submission};
pub use group_commit::{Durability, SyncPacing};
pub use quarantine::{
    FOLDER as QUARANTINE_FOLDER, Quarantine, QuarantineEntry, QuarantineError, Summary, payload_for_people,
};
pub use rejection::Rejection;
pub use request_metrics::RequestCounters;
pub use shared::{Health, Phase};
pub use wal::{Damage as LogDamage, LostSeqs};

use crate::ingest::{IngestError, WriterOptions};
use crate::odf::DatasetName;
use crate::store::{DataDir, StoreError};

/// The biggest payload the log takes (its records carry a little metadata besides).
pub const MAX_PAYLOAD: usize = wal::MAX_RECORD - 64 * 1024;

/// Where the logs live in a data directory: `<data-dir>/.wal/<dataset>/`.
pub const WAL_FOLDER: &str = ".wal";

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub flush: FlushPolicy,
    /// Bytes accepted and not yet committed, per dataset, before senders are pushed back.
    pub max_pending_bytes: usize,
    pub wal_segment_bytes: u64,
    pub wal_sync: SyncPacing,
    pub quarantine_max_entries: usize,
    pub quarantine_max_bytes: u64,
    pub writer: WriterOptions,
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions {
            flush: FlushPolicy {
                interval: Duration::from_secs(1),
                max_records: 50_000,
                max_bytes: 8 * 1024 * 1024,
                retry_min: Duration::from_millis(500),
                retry_max: Duration::from_secs(30),
                system_time: None,
            },
            max_pending_bytes: 64 * 1024 * 1024,
            wal_segment_bytes: 16 * 1024 * 1024,
            wal_sync: SyncPacing::default(),
            quarantine_max_entries: 10_000,
            quarantine_max_bytes: 256 * 1024 * 1024,
            writer: WriterOptions::default(),
        }
    }
}

/// Why a payload was not accepted; each maps to a reply in every protocol.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("no dataset '{name}' (datasets: {})", if .known.is_empty() { "none".to_string() } else { .known.join(", ") })]
    UnknownDataset { name: String, known: Vec<String> },

    /// No such source, or the request names none where several exist, or it is disabled.
    #[error(transparent)]
    Source(IngestError),

    /// Not one record of the payload fits the source; they are in the quarantine.
    #[error("no record of the payload fits push source '{source_name}': {}", first(.rejections))]
    Rejected { source_name: String, rejections: Vec<Rejection>, quarantine_id: Option<String> },

    /// Too much is waiting to be committed: try again after `retry_after`.
    #[error("{reason}; retry in {}s", .retry_after.as_secs().max(1))]
    Busy { retry_after: Duration, reason: String },

    /// The gateway cannot take it now (stopping, the log failing).
    #[error("{0}")]
    Unavailable(String),

    /// Written to the log but not known to be on disk (its sync failed): it may or may not
    /// be committed. The gateway takes nothing more until it is restarted.
    #[error("{0}; the payload may or may not be stored")]
    Uncertain(String),
}

fn first(rejections: &[Rejection]) -> String {
    rejections.first().map(ToString::to_string).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("{0}")]
    Log(String),
    #[error("{0}: is another `odf-gateway serve` using this data directory?")]
    Locked(String),
}

/// Every dataset's pipeline.
pub struct Pipeline {
    data_dir: DataDir,
    datasets: BTreeMap<DatasetName, Arc<DatasetPipeline>>,
    /// Datasets that could not be opened, and why: the others are served, and `/readyz`
    /// names these.
    failed: BTreeMap<String, String>,
}

impl Pipeline {
    /// Opens every dataset of `data_dir` for pushing: each replays its log on a thread of its
    /// own and takes submissions once that is done (`health` says when).
    pub fn start(data_dir: &DataDir, options: &PipelineOptions) -> Result<Pipeline, PipelineError> {
        let (mut datasets, mut failed) = (BTreeMap::new(), BTreeMap::new());
        for name in data_dir.list()? {
            match DatasetPipeline::start(data_dir, &name, options) {
                Ok(pipeline) => {
                    datasets.insert(name, Arc::new(pipeline));
                }
                // Another server on this data directory: nothing here is ours to serve.
                Err(e @ PipelineError::Locked(_)) => return Err(e),
                Err(e) => {
                    tracing::error!(dataset = %name, "cannot open the dataset, so it is not served: {e}");
                    failed.insert(name.to_string(), e.to_string());
                }
            }
        }
        Ok(Pipeline { data_dir: data_dir.clone(), datasets, failed })
    }

    /// Datasets that could not be opened, with the reason.
    pub fn failed(&self) -> &BTreeMap<String, String> {
        &self.failed
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    pub fn datasets(&self) -> impl Iterator<Item = &Arc<DatasetPipeline>> {
        self.datasets.values()
    }

    pub fn dataset(&self, name: &str) -> Result<&Arc<DatasetPipeline>, SubmitError> {
        if let Some(reason) = self.failed.get(name) {
            return Err(SubmitError::Unavailable(format!("dataset '{name}' could not be opened: {reason}")));
        }
        self.datasets.get(name).ok_or_else(|| SubmitError::UnknownDataset {
            name: name.to_owned(),
            known: self.datasets.keys().map(ToString::to_string).collect(),
        })
    }

    /// Whether every dataset has replayed its log and takes submissions.
    pub fn ready(&self) -> bool {
        self.failed.is_empty() && self.datasets.values().all(|d| d.health().phase == Phase::Ready)
    }

    /// From now on a commit that fails is not retried until it succeeds, so that what is
    /// still handed in at shutdown (a consumer's last batch) cannot hold it up.
    pub fn begin_stopping(&self) {
        for dataset in self.datasets.values() {
            dataset.begin_stopping();
        }
    }

    /// Stops taking submissions, commits what was accepted, and waits for every thread.
    pub fn shutdown(&self) {
        for dataset in self.datasets.values() {
            dataset.close();
        }
        for dataset in self.datasets.values() {
            dataset.join();
        }
    }

    /// The log folder of a dataset.
    pub fn wal_dir(data_dir: &DataDir, dataset: &str) -> PathBuf {
        data_dir.root().join(WAL_FOLDER).join(dataset)
    }
}
