//! The thread that commits a dataset's logged entries: it gathers them into batches (by
//! records, bytes or age), ingests each batch through the engine, one commit per source,
//! with the log position in the commit's source state, and then lets the log drop them.
//!
//! Exactly once: a commit records the seq of the last entry it covers as its source's state
//! (`odf-gateway/wal-seq`). At start the log is replayed, and an entry is committed only if
//! its seq is above its source's recorded one; a crash before, during or after a commit
//! therefore neither loses an entry nor commits one twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::entry::Entry;
use super::group_commit::{Command, Logged};
use super::quarantine::{Quarantine, QuarantineEntry};
use super::rejection::Rejection;
use super::shared::Shared;
use super::wal::Wal;
use crate::ingest::{
    DatasetWriter, ErrorKind, IngestError, IngestOptions, IngestOutcome, IngestRequest, Message, Problem,
    SourcePosition,
};
use crate::odf::MergeStrategy;

/// The source-state kind under which a commit records its log position.
pub const WAL_STATE_KIND: &str = "odf-gateway/wal-seq";

/// When a batch is committed.
#[derive(Debug, Clone)]
pub struct FlushPolicy {
    /// The oldest entry waits at most this long.
    pub interval: Duration,
    /// ... or a batch is committed once it holds this many records,
    pub max_records: usize,
    /// ... or this many bytes of payload.
    pub max_bytes: usize,
    /// How long to wait before retrying a commit that failed for a passing reason.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// The system time to write, for reproducible tests; `None` is the clock.
    pub system_time: Option<DateTime<Utc>>,
}

pub struct Committer {
    dataset: String,
    writer: DatasetWriter,
    quarantine: Arc<Quarantine>,
    policy: FlushPolicy,
    shared: Arc<Shared>,
    /// Where releases go; weak, so that the log writer ends when the senders are gone.
    commands: Option<mpsc::WeakSender<Command>>,
}

/// Entries waiting for a commit.
#[derive(Default)]
struct Batch {
    entries: Vec<Logged>,
    records: usize,
    bytes: usize,
    /// Bytes the senders reserved for these entries (none for replayed ones).
    reserved: usize,
    since: Option<Instant>,
}

impl Committer {
    pub fn new(
        dataset: &str,
        writer: DatasetWriter,
        quarantine: Arc<Quarantine>,
        policy: FlushPolicy,
        shared: Arc<Shared>,
    ) -> Committer {
        Committer { dataset: dataset.to_owned(), writer, quarantine, policy, shared, commands: None }
    }

    /// The highest seq the dataset records for any source: the log numbers above it.
    pub fn recorded_floor(&self) -> u64 {
        self.recorded().values().copied().max().unwrap_or(0)
    }

    /// The log position each source's last commit recorded.
    fn recorded(&self) -> HashMap<String, u64> {
        let state = self.writer.dataset().state();
        state
            .source_states
            .iter()
            .filter(|(_, s)| s.kind == WAL_STATE_KIND)
            .filter_map(|(name, s)| s.value.parse().ok().map(|seq| (name.clone(), seq)))
            .collect()
    }

    /// Commits every entry of the log that its source has not recorded, then releases the
    /// log up to where the dataset now is. Returns how many entries were replayed.
    pub fn replay(&mut self, wal: &mut Wal) -> Result<usize, String> {
        let recorded = self.recorded();
        let end = wal.next_seq();
        let mut batch = Batch::default();
        let mut replayed = 0;
        let mut last = 0;
        for record in wal.read_after(0) {
            let record = record.map_err(|e| format!("cannot read the write-ahead log: {e}"))?;
            if record.seq >= end {
                break;
            }
            last = record.seq;
            let entry = match Entry::decode(&record.body) {
                Ok(entry) => entry,
                Err(reason) => {
                    self.quarantine_damaged(record.seq, record.body, &reason);
                    continue;
                }
            };
            if recorded.get(&entry.source).is_some_and(|&done| record.seq <= done) {
                continue;
            }
            replayed += 1;
            batch.push(Logged { seq: record.seq, entry, records: 1, reserved: 0 });
            if batch.full(&self.policy) {
                self.flush(&mut batch, false);
            }
        }
        self.flush(&mut batch, false);
        self.shared.set_committed(last.max(end.saturating_sub(1)));
        if let Err(e) = wal.release(end.saturating_sub(1)) {
            tracing::warn!(dataset = %self.dataset, "cannot remove replayed log segments: {e}");
        }
        Ok(replayed)
    }

    /// Commits entries as they are logged until the log writer ends, then the rest.
    pub fn run(mut self, logged: std_mpsc::Receiver<Logged>, commands: mpsc::WeakSender<Command>) {
        self.commands = Some(commands);
        let mut batch = Batch::default();
        loop {
            let received = match batch.since {
                None => logged.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(since) => logged.recv_timeout(self.policy.interval.saturating_sub(since.elapsed())),
            };
            match received {
                Ok(item) => {
                    batch.push(item);
                    if batch.full(&self.policy) {
                        self.flush(&mut batch, false);
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.flush(&mut batch, false),
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush(&mut batch, true);
                    return;
                }
            }
        }
    }

    /// Commits the batch, source by source in log order. A commit that fails for a passing
    /// reason is retried (with back-off) until it succeeds, or once more at shutdown: what is
    /// not committed stays in the log for the next start.
    fn flush(&mut self, batch: &mut Batch, stopping: bool) {
        let taken = std::mem::take(batch);
        let (entries, reserved) = (taken.entries, taken.reserved);
        let Some(last) = entries.last().map(|e| e.seq) else { return };
        let started = Instant::now();
        let mut groups: Vec<(String, Vec<Logged>)> = Vec::new();
        for logged in entries {
            match groups.iter_mut().find(|(source, _)| *source == logged.entry.source) {
                Some((_, group)) => group.push(logged),
                None => groups.push((logged.entry.source.clone(), vec![logged])),
            }
        }
        let mut complete = true;
        for (source, group) in groups {
            let snapshot = self.is_snapshot(&source);
            let parts: Vec<Vec<Logged>> = match snapshot {
                // A Snapshot source takes each payload as a whole snapshot of its own.
                true => group.into_iter().map(|e| vec![e]).collect(),
                false => vec![group],
            };
            for part in parts {
                complete &= self.commit_with_retries(&source, part, stopping);
            }
        }
        metrics::histogram!("odf_commit_seconds", "dataset" => self.dataset.clone())
            .record(started.elapsed().as_secs_f64());
        if !complete {
            // Stopping with entries not committed: they stay in the log for the next start.
            return;
        }
        self.shared.release_pending(reserved);
        self.shared.set_committed(last);
        if let Some(commands) = self.commands.as_ref().and_then(|c| c.upgrade()) {
            let _ = commands.blocking_send(Command::Release(last));
        }
    }

    fn is_snapshot(&self, source: &str) -> bool {
        matches!(
            self.writer.dataset().state().push_sources.get(source),
            Some((s, _)) if matches!(s.merge, MergeStrategy::Snapshot(_))
        )
    }

    /// Commits one source's entries; `false` if they could not be (only when stopping).
    fn commit_with_retries(&mut self, source: &str, entries: Vec<Logged>, stopping: bool) -> bool {
        let mut pause = self.policy.retry_min;
        loop {
            match self.commit(source, &entries) {
                Ok(()) => {
                    self.shared.set_failing(None);
                    return true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::BadInput) && entries.len() > 1 => {
                    // One of them is to blame: commit them one at a time.
                    return entries.into_iter().all(|e| self.commit_with_retries(source, vec![e], stopping));
                }
                Err(e)
                    if matches!(e.kind(), ErrorKind::BadInput | ErrorKind::NotFound | ErrorKind::Refused) =>
                {
                    // Never going to fit: quarantined, and the position moved past them.
                    self.quarantine_entries(&entries, &e.to_string());
                    match self.commit_position(source, &entries) {
                        Ok(()) => return true,
                        Err(e) => {
                            tracing::error!(dataset = %self.dataset, source, "cannot record the log position: {e}")
                        }
                    }
                }
                Err(e) => {
                    let reason = format!("commit failed: {e}");
                    tracing::error!(dataset = %self.dataset, source, retry_in = ?pause, "{reason}");
                    self.shared.set_failing(Some(reason));
                    metrics::counter!("odf_commit_failures_total", "dataset" => self.dataset.clone())
                        .increment(1);
                }
            }
            if stopping {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(self.policy.retry_max);
        }
    }

    fn options(&self) -> IngestOptions {
        let now = self.policy.system_time.unwrap_or_else(Utc::now);
        let system_time = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        IngestOptions { system_time, skip_bad_records: true }
    }

    fn commit(&mut self, source: &str, entries: &[Logged]) -> Result<(), IngestError> {
        let Some(last) = entries.last() else { return Ok(()) };
        let messages = entries.iter().map(|l| message(&l.entry)).collect();
        let request = IngestRequest {
            source: Some(source.to_owned()),
            messages,
            event_time: None,
            source_state: Some(position(last.seq)),
        };
        let outcome = self.writer.ingest(request, &self.options())?;
        self.after_commit(source, entries, &outcome);
        Ok(())
    }

    /// Records the position alone (an AddData without data) past entries that were
    /// quarantined, so that a replay does not take them again.
    fn commit_position(&mut self, source: &str, entries: &[Logged]) -> Result<(), IngestError> {
        let Some(last) = entries.last() else { return Ok(()) };
        let request = IngestRequest {
            source: Some(source.to_owned()),
            messages: Vec::new(),
            event_time: None,
            source_state: Some(position(last.seq)),
        };
        self.writer.ingest(request, &self.options()).map(|_| ())
    }

    fn after_commit(&self, source: &str, entries: &[Logged], outcome: &IngestOutcome) {
        let labels = [("dataset", self.dataset.clone()), ("source", source.to_owned())];
        let records = outcome.committed.as_ref().map_or(0, |c| c.records);
        metrics::counter!("odf_records_committed_total", &labels).increment(records);
        metrics::counter!("odf_commits_total", &labels).increment(1);
        // Records refused after reading (a preprocess failing on their values) were not seen
        // when the payload was accepted: they go to the quarantine now. Those that did not
        // read were quarantined before the sender was answered.
        let mut refused: HashMap<usize, Vec<Rejection>> = HashMap::new();
        for error in &outcome.rejected {
            if matches!(error.problem, Problem::Refused(_)) {
                refused.entry(error.message).or_default().push(Rejection::from(error));
            }
        }
        for (index, reasons) in refused {
            if let Some(logged) = entries.get(index) {
                self.put_quarantine(&logged.entry, reasons, 0);
            }
        }
    }

    fn quarantine_entries(&self, entries: &[Logged], reason: &str) {
        for logged in entries {
            self.put_quarantine(&logged.entry, vec![Rejection::whole(reason)], 0);
        }
    }

    fn put_quarantine(&self, entry: &Entry, reasons: Vec<Rejection>, accepted: usize) {
        let rejected = reasons.len();
        let quarantined = QuarantineEntry {
            id: String::new(),
            time: entry.received,
            dataset: self.dataset.clone(),
            source: Some(entry.source.clone()),
            route: entry.route.clone(),
            sender: entry.sender.clone(),
            format: entry.format.map(|f| f.to_string()),
            reasons,
            accepted,
            payload: entry.payload.clone(),
        };
        metrics::counter!("odf_records_quarantined_total", "dataset" => self.dataset.clone())
            .increment(rejected as u64);
        if let Err(e) = self.quarantine.put(quarantined) {
            // The payload stays in the write-ahead log's damaged copy only if it was damage;
            // here the reason is logged with the sender so an operator can find it.
            tracing::error!(dataset = %self.dataset, sender = %entry.sender, "cannot write to the quarantine: {e}");
        }
    }

    fn quarantine_damaged(&self, seq: u64, body: Vec<u8>, reason: &str) {
        tracing::error!(dataset = %self.dataset, seq, "a write-ahead log record cannot be decoded: {reason}");
        let entry = QuarantineEntry {
            id: String::new(),
            time: Utc::now(),
            dataset: self.dataset.clone(),
            source: None,
            route: String::new(),
            sender: format!("write-ahead log record {seq}"),
            format: None,
            reasons: vec![Rejection::whole(&format!("damaged log record: {reason}"))],
            accepted: 0,
            payload: body,
        };
        if let Err(e) = self.quarantine.put(entry) {
            tracing::error!(dataset = %self.dataset, "cannot write to the quarantine: {e}");
        }
    }
}

impl Batch {
    fn push(&mut self, logged: Logged) {
        self.since.get_or_insert_with(Instant::now);
        self.records += logged.records;
        self.bytes += logged.entry.payload.len();
        self.reserved += logged.reserved;
        self.entries.push(logged);
    }

    fn full(&self, policy: &FlushPolicy) -> bool {
        self.records >= policy.max_records || self.bytes >= policy.max_bytes
    }
}

fn position(seq: u64) -> SourcePosition {
    SourcePosition { kind: WAL_STATE_KIND.to_owned(), value: seq.to_string() }
}

fn message(entry: &Entry) -> Message {
    let mut message = Message::new(entry.payload.clone(), format!("{} via {}", entry.sender, entry.route))
        .with_format(entry.format)
        .received_at(entry.received);
    message.columns = entry.columns.clone();
    message
}
