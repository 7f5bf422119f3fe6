//! The thread that commits a dataset's logged entries: it gathers them into batches (by
//! records, bytes or age), ingests each batch through the engine, one commit per source,
//! with the log position in the commit's source state, and then lets the log drop them.
//!
//! Exactly once: a commit records the seq of the last entry it covers as its source's state
//! (`odf-gateway/wal-seq`). At start the log is replayed, and an entry is committed only if
//! its seq is above its source's recorded one; a crash before, during or after a commit
//! therefore neither loses an entry nor commits one twice.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::consumed::Consumed;
use super::entry::Entry;
use super::group_commit::{Command, Logged};
use super::quarantine::{Quarantine, QuarantineEntry, QuarantineError};
use super::rejection::Rejection;
use super::shared::Shared;
use super::wal::Wal;
use crate::ingest::{
    DatasetWriter, ErrorKind, IngestError, IngestOptions, IngestRequest, Message, Problem, SourcePosition,
};
use crate::odf::MergeStrategy;

/// The source-state kind under which a commit records its log position.
pub const WAL_STATE_KIND: &str = "odf-gateway/wal-seq";

/// What the committer's thread is given to do, in order.
pub enum Work {
    /// Entries the log writer made durable, in log order.
    Logged(Vec<Logged>),
    /// Records consumed from an event queue, to commit with their offsets as the state.
    Consumed(Consumed, oneshot::Sender<Result<(), String>>),
    /// The last source state of a kind (the committer's thread holds the chain).
    State { source: String, kind: String, reply: oneshot::Sender<Option<String>> },
}

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
    /// A batch could not be committed before the gateway stopped: commit nothing more.
    halted: bool,
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
        Committer {
            dataset: dataset.to_owned(),
            writer,
            quarantine,
            policy,
            shared,
            commands: None,
            halted: false,
        }
    }

    /// Records in the dataset.
    pub fn records(&self) -> u64 {
        self.writer.dataset().state().records()
    }

    /// The highest seq the dataset records for any source: the log numbers above it.
    pub fn recorded_floor(&self) -> u64 {
        self.recorded().values().copied().max().unwrap_or(0)
    }

    /// The highest seq every push source of the dataset has committed up to: an entry at or
    /// below it is in the dataset, whichever source it was for.
    pub fn committed_by_every_source(&self) -> u64 {
        let recorded = self.recorded();
        let state = self.writer.dataset().state();
        state.push_sources.keys().map(|name| recorded.get(name).copied().unwrap_or(0)).min().unwrap_or(0)
    }

    /// The log position each source's last commit recorded.
    fn recorded(&self) -> HashMap<String, u64> {
        let state = self.writer.dataset().state();
        state
            .source_states
            .iter()
            .filter(|((_, kind), _)| kind == WAL_STATE_KIND)
            .filter_map(|((name, _), s)| s.value.parse().ok().map(|seq| (name.clone(), seq)))
            .collect()
    }

    /// Commits every entry of the log that its source has not recorded, then lets the log
    /// drop what it held (a new segment is begun, so that the replayed ones go as a whole).
    /// Returns how many entries were replayed; stopped part way (the gateway is stopping and
    /// a commit keeps failing), the rest stays in the log.
    pub fn replay(&mut self, wal: &mut Wal) -> Result<usize, String> {
        let recorded = self.recorded();
        let end = wal.next_seq();
        let mut batch = Batch::default();
        let mut replayed = 0;
        for record in wal.read_after(0) {
            let record = record.map_err(|e| format!("cannot read the write-ahead log: {e}"))?;
            if record.seq >= end {
                break;
            }
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
            if batch.full(&self.policy) && !self.flush(&mut batch, false) {
                return Ok(replayed);
            }
        }
        if !self.flush(&mut batch, false) {
            return Ok(replayed);
        }
        self.shared.set_committed(end.saturating_sub(1));
        if let Err(e) = wal.rotate().and_then(|()| wal.release(end.saturating_sub(1))) {
            tracing::warn!(dataset = %self.dataset, "cannot remove replayed log segments: {e}");
        }
        Ok(replayed)
    }

    /// Commits entries as they are logged until the log writer ends, then the rest.
    pub fn run(mut self, work: std_mpsc::Receiver<Work>, commands: mpsc::WeakSender<Command>) {
        self.commands = Some(commands);
        let mut batch = Batch::default();
        loop {
            let received = match batch.since {
                None => work.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(since) => work.recv_timeout(self.policy.interval.saturating_sub(since.elapsed())),
            };
            match received {
                Ok(Work::Logged(group)) => {
                    for item in group {
                        batch.push(item);
                        if batch.full(&self.policy) {
                            self.flush(&mut batch, false);
                        }
                    }
                }
                Ok(Work::Consumed(consumed, reply)) => {
                    let _ = reply.send(self.commit_consumed(&consumed, 0..consumed.records.len()));
                }
                Ok(Work::State { source, kind, reply }) => {
                    let state = self.writer.dataset().state().source_state(&source, &kind);
                    let _ = reply.send(state.map(|s| s.value.clone()));
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.flush(&mut batch, false);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush(&mut batch, true);
                    return;
                }
            }
        }
    }

    /// Commits the batch, source by source in log order; `false` if some entries could not
    /// be committed before the gateway stopped (they stay in the log for the next start).
    fn flush(&mut self, batch: &mut Batch, stopping: bool) -> bool {
        let taken = std::mem::take(batch);
        if self.halted {
            // An earlier batch is not committed: nothing after it may be, or a replay would
            // skip it (it lies below the position a later commit records).
            return false;
        }
        let (entries, reserved) = (taken.entries, taken.reserved);
        let Some(last) = entries.last().map(|e| e.seq) else { return true };
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
            let parts: Vec<Vec<Logged>> = match self.is_snapshot(&source) {
                // A Snapshot source takes each payload as a whole snapshot of its own.
                true => group.into_iter().map(|e| vec![e]).collect(),
                false => vec![group],
            };
            for part in parts {
                complete = complete && self.commit_with_retries(&source, part, stopping);
            }
        }
        metrics::histogram!("odf_commit_seconds", "dataset" => self.dataset.clone())
            .record(started.elapsed().as_secs_f64());
        if !complete {
            self.halted = true;
            return false;
        }
        self.shared.release_pending(reserved);
        self.shared.set_committed(last);
        if let Some(commands) = self.commands.as_ref().and_then(|c| c.upgrade()) {
            let _ = commands.blocking_send(Command::Release(last));
        }
        true
    }

    /// Commits consumed records `range` with the state they leave the source in; as
    /// `commit_with_retries`, one at a time when one of them is to blame. An error when they
    /// could not be committed before the gateway stopped (the queue still holds them).
    fn commit_consumed(&mut self, consumed: &Consumed, range: Range<usize>) -> Result<(), String> {
        let source = consumed.source.as_str();
        if range.len() > 1 && self.is_snapshot(source) {
            // A Snapshot source takes each payload as a whole snapshot of its own.
            return range.map(|i| self.commit_consumed(consumed, i..i + 1)).collect();
        }
        let state = SourcePosition { kind: consumed.kind.clone(), value: (consumed.state_after)(range.end) };
        let mut pause = self.policy.retry_min;
        for attempt in 0.. {
            // A commit that failed after its head moved must not be made again.
            if attempt > 0 && self.writer.catch_up().is_ok() && self.records_state(source, &state) {
                return Ok(());
            }
            let entries: Vec<&Entry> = consumed.records[range.clone()].iter().collect();
            let committed = match entries.is_empty() {
                // Every record since the last commit was quarantined: the offsets move alone.
                true => self.commit_position(source, state.clone()).map_err(Failure::Commit),
                false => self.commit(source, &entries, state.clone()),
            };
            let error = match committed {
                Ok(()) => {
                    self.shared.set_failing(None);
                    return Ok(());
                }
                Err(e) => e,
            };
            match verdict(&error, attempt) {
                Verdict::Blame if range.len() > 1 => {
                    // Unless that attempt made it after all (its head moved), one at a time.
                    if self.writer.catch_up().is_ok() && self.records_state(source, &state) {
                        return Ok(());
                    }
                    return range.map(|i| self.commit_consumed(consumed, i..i + 1)).collect();
                }
                Verdict::Blame => {
                    if self.give_up(source, &entries, state.clone(), &error.to_string()) {
                        return Ok(());
                    }
                }
                Verdict::Retry => self.report_failure(source, &error, pause),
            }
            if self.shared.stopping() {
                return Err(format!("not committed before the gateway stopped: {error}"));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(self.policy.retry_max);
        }
        Ok(())
    }

    /// Whether the dataset's last state of that kind for `source` is `state`.
    fn records_state(&self, source: &str, state: &SourcePosition) -> bool {
        let recorded = self.writer.dataset().state().source_state(source, &state.kind);
        recorded.is_some_and(|s| s.value == state.value)
    }

    fn report_failure(&self, source: &str, error: &Failure, retry_in: Duration) {
        let reason = format!("commit failed: {error}");
        tracing::error!(dataset = %self.dataset, source, ?retry_in, "{reason}");
        self.shared.set_failing(Some(reason));
        metrics::counter!("odf_commit_failures_total", "dataset" => self.dataset.clone()).increment(1);
    }

    fn is_snapshot(&self, source: &str) -> bool {
        matches!(
            self.writer.dataset().state().push_sources.get(source),
            Some((s, _)) if matches!(s.merge, MergeStrategy::Snapshot(_))
        )
    }

    /// Commits one source's entries, retrying what fails for a passing reason; `false` if
    /// they could not be committed before the gateway stopped.
    ///
    /// Entries that can never be committed (their records refused as a whole, their source
    /// gone) are quarantined and the log position recorded past them; if even the quarantine
    /// cannot be written, nothing moves and the commit is retried. An internal fault (a bad
    /// plan, a Parquet error) is tried a few times, then blamed on one entry at a time.
    fn commit_with_retries(&mut self, source: &str, mut entries: Vec<Logged>, stopping: bool) -> bool {
        let mut pause = self.policy.retry_min;
        for attempt in 0.. {
            if attempt > 0 {
                // A commit that failed after its head moved (the folder sync, say) must not
                // be made again: leave out what the dataset now records.
                if self.writer.catch_up().is_ok() {
                    let done = self.recorded().get(source).copied().unwrap_or(0);
                    entries.retain(|e| e.seq > done);
                }
                if entries.is_empty() {
                    return true;
                }
            }
            let Some(last) = entries.last().map(|l| l.seq) else { return true };
            let refs: Vec<&Entry> = entries.iter().map(|l| &l.entry).collect();
            let error = match self.commit(source, &refs, position(last)) {
                Ok(()) => {
                    self.shared.set_failing(None);
                    return true;
                }
                Err(e) => e,
            };
            match verdict(&error, attempt) {
                // One of them is to blame: commit them one at a time.
                Verdict::Blame if entries.len() > 1 => {
                    return entries.into_iter().all(|e| self.commit_with_retries(source, vec![e], stopping));
                }
                Verdict::Blame => {
                    if self.give_up(source, &refs, position(last), &error.to_string()) {
                        return true;
                    }
                }
                Verdict::Retry => self.report_failure(source, &error, pause),
            }
            if stopping || self.shared.stopping() {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(self.policy.retry_max);
        }
        false
    }

    /// Quarantines entries that can never be committed and records the log position past
    /// them; `false` if that could not be done yet.
    fn give_up(&mut self, source: &str, entries: &[&Entry], state: SourcePosition, reason: &str) -> bool {
        tracing::warn!(dataset = %self.dataset, source, entries = entries.len(), "cannot be committed, so quarantined: {reason}");
        for entry in entries {
            if let Err(e) = self.put_quarantine(entry, vec![Rejection::whole(reason)], 0) {
                tracing::error!(dataset = %self.dataset, source, "cannot write to the quarantine: {e}; retrying");
                return false;
            }
        }
        match self.commit_position(source, state) {
            Ok(()) => true,
            // The source is gone or disabled: its entries are quarantined, and there is no
            // position to record for it (a restart would quarantine them once more).
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Refused) => true,
            Err(e) => {
                tracing::error!(dataset = %self.dataset, source, "cannot record the log position: {e}");
                false
            }
        }
    }

    fn options(&self) -> IngestOptions {
        let now = self.policy.system_time.unwrap_or_else(Utc::now);
        let system_time = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        IngestOptions { system_time, skip_bad_records: true }
    }

    /// Prepares the commit, quarantines the records a later step refused (so that none is
    /// lost if the quarantine cannot be written), then commits.
    fn commit(&mut self, source: &str, entries: &[&Entry], state: SourcePosition) -> Result<(), Failure> {
        let messages = entries.iter().map(|entry| message(entry)).collect();
        let request = IngestRequest {
            source: Some(source.to_owned()),
            messages,
            event_time: None,
            source_state: Some(state),
        };
        let options = self.options();
        let (dataset, quarantine) = (self.dataset.clone(), self.quarantine.clone());
        let prepared = self.writer.prepare(request, &options).map_err(Failure::Commit)?;
        let mut refused: HashMap<usize, Vec<Rejection>> = HashMap::new();
        for error in &prepared.outcome().rejected {
            // Records that did not read were quarantined before the sender was answered;
            // those refused after reading (a preprocess failing on their values) were not.
            if matches!(error.problem, Problem::Refused(_)) {
                refused.entry(error.message).or_default().push(Rejection::from(error));
            }
        }
        for (index, reasons) in refused {
            if let Some(entry) = entries.get(index) {
                quarantine_entry(&quarantine, &dataset, entry, reasons, 0).map_err(Failure::Quarantine)?;
            }
        }
        let outcome = prepared.commit().map_err(Failure::Commit)?;
        let labels = [("dataset", self.dataset.clone()), ("source", source.to_owned())];
        let records = outcome.committed.as_ref().map_or(0, |c| c.records);
        metrics::counter!("odf_records_committed_total", &labels).increment(records);
        metrics::counter!("odf_commits_total", &labels).increment(1);
        Ok(())
    }

    /// Records the position alone (an AddData without data) past entries that were
    /// quarantined, so that a replay does not take them again.
    fn commit_position(&mut self, source: &str, state: SourcePosition) -> Result<(), IngestError> {
        let request = IngestRequest {
            source: Some(source.to_owned()),
            messages: Vec::new(),
            event_time: None,
            source_state: Some(state),
        };
        self.writer.ingest(request, &self.options()).map(|_| ())
    }

    fn put_quarantine(
        &self,
        entry: &Entry,
        reasons: Vec<Rejection>,
        accepted: usize,
    ) -> Result<String, QuarantineError> {
        quarantine_entry(&self.quarantine, &self.dataset, entry, reasons, accepted)
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

/// A commit attempt that did not happen.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Commit(IngestError),
    #[error("cannot write refused records to the quarantine: {0}")]
    Quarantine(QuarantineError),
}

/// How many times an internal fault is retried before it is blamed on the entries.
const INTERNAL_ATTEMPTS: usize = 5;

/// What a failed commit attempt calls for.
enum Verdict {
    /// The entries themselves: they can never be committed (one of them, if several).
    Blame,
    /// A passing fault (a full disk, say): the same commit again, later.
    Retry,
}

fn verdict(error: &Failure, attempt: usize) -> Verdict {
    let kind = match error {
        Failure::Commit(e) => Some(e.kind()),
        Failure::Quarantine(_) => None,
    };
    let hopeless = matches!(kind, Some(ErrorKind::BadInput | ErrorKind::NotFound | ErrorKind::Refused));
    let internal = matches!(kind, Some(ErrorKind::Internal));
    match hopeless || internal && attempt + 1 >= INTERNAL_ATTEMPTS {
        true => Verdict::Blame,
        false => Verdict::Retry,
    }
}

fn quarantine_entry(
    quarantine: &Quarantine,
    dataset: &str,
    entry: &Entry,
    reasons: Vec<Rejection>,
    accepted: usize,
) -> Result<String, QuarantineError> {
    let rejected = reasons.len();
    let quarantined = QuarantineEntry {
        id: String::new(),
        // When it was quarantined: an entry's receive time may be a sender's own event time.
        time: Utc::now(),
        dataset: dataset.to_owned(),
        source: Some(entry.source.clone()),
        route: entry.route.clone(),
        sender: entry.sender.clone(),
        format: entry.format.map(|f| f.to_string()),
        reasons,
        accepted,
        payload: entry.payload.to_vec(),
    };
    let id = quarantine.put(quarantined)?;
    metrics::counter!("odf_records_quarantined_total", "dataset" => dataset.to_owned())
        .increment(rejected as u64);
    Ok(id)
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
    message.bindings = entry.bindings.clone();
    message
}
