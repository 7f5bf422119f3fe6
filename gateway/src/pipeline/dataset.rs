//! One dataset's pipeline as the intake sees it: `submit` checks a payload against the push
//! source the intake chose, applies the backpressure, appends it to the log and waits for the
//! group commit; `wait_committed` lets a sender wait for the commit as well.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::committer::{Committer, Work};
use super::consumed::Consumed;
use super::entry::Entry;
use super::group_commit::{AppendError, Command, Durability, Logged};
use super::opening::{Start, lock_wal};
use super::quarantine::{Quarantine, QuarantineEntry};
use super::rejection::Rejection;
use super::request_metrics::{RequestCounters, RequestMetrics};
use super::shared::{Health, Phase, Shared};
use super::{Pipeline, PipelineError, PipelineOptions, SubmitError};
use crate::ingest::{CheckOutcome, ColumnBinding, DatasetWriter, IngestError, InputFormat, SourceCheck};
use crate::odf::{AddPushSource, ChainState, DatasetName, MergeStrategy, NameError, SourceName};
use crate::routes::Transport;
use crate::store::DataDir;

/// Payloads up to this size are checked on the sender's task; bigger ones on a blocking
/// thread, so that a megabyte of CSV does not hold up a runtime worker.
const CHECK_INLINE: usize = 64 * 1024;

/// A payload for a push source of a dataset, as the intake hands it on.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The format the sender declared; `None` reads it in the source's own.
    pub format: Option<InputFormat>,
    /// Shared with the transport's buffer, not copied.
    pub payload: Bytes,
    /// Values for columns the payload leaves out (captured from a topic or path).
    pub columns: Vec<(String, String)>,
    /// Rules every record must keep (a device id bound to the sender's identity or route);
    /// a record that breaks one is rejected and quarantined, the rest go on.
    pub bindings: Vec<ColumnBinding>,
    /// The event time of records that carry none (kamu's `odf-event-time`); else the time
    /// the gateway received the payload.
    pub event_time: Option<DateTime<Utc>>,
    /// For the metrics.
    pub transport: Transport,
    /// The route pattern it matched, for the metrics (`datasets/{dataset}/sources/{source}`).
    pub route: String,
    /// The concrete path or topic, for the quarantine.
    pub address: String,
    /// Who sent it (peer, client id, identity), for errors and the quarantine.
    pub sender: String,
    pub durability: Durability,
}

impl Submission {
    /// What its entry holds in memory until it is committed: the payload and what travels
    /// with it (origin, column values and rules, the entry itself). The pending budget counts
    /// this, not the payload alone: a report of 200 bytes costs about three times that.
    fn footprint(&self, source: &str) -> usize {
        /// A heap block's allocator header and rounding, about.
        const BLOCK: usize = 32;
        /// A binding's rule (a pattern: pieces in a vector) besides its strings.
        const RULE: usize = 96;
        // The entry with its log bookkeeping, and its blocks: source, route, sender, the
        // payload's shared header.
        let entry = std::mem::size_of::<Logged>() + 4 * BLOCK;
        let columns: usize =
            self.columns.iter().map(|(name, value)| 2 * BLOCK + name.len() + value.len()).sum();
        let bindings: usize =
            self.bindings.iter().map(|b| RULE + 2 * BLOCK + b.column.len() + b.by.len()).sum();
        entry
            + source.len()
            + self.payload.len()
            + self.address.len()
            + self.sender.len()
            + columns
            + bindings
    }
}

/// A payload accepted: in the log (on disk, unless the durability said otherwise).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub dataset: DatasetName,
    pub source: SourceName,
    /// Its log position (for `wait_committed`); `None` when it held no record.
    pub seq: Option<u64>,
    pub records: usize,
    /// Records that did not fit: in the quarantine, under `quarantine_id`.
    pub rejected: Vec<Rejection>,
    pub quarantine_id: Option<String>,
}

/// What a payload held, checked: records that fit, and those quarantined.
pub struct Screened {
    pub records: usize,
    pub rejected: Vec<Rejection>,
    pub quarantine_id: Option<String>,
}

/// A push source as the pipeline knows it.
pub struct SourceInfo {
    pub name: SourceName,
    pub definition: AddPushSource,
    pub active: bool,
    check: Option<SourceCheck>,
}

pub struct DatasetPipeline {
    name: DatasetName,
    sources: Vec<Arc<SourceInfo>>,
    /// Active push sources whose names cannot be routed to (another tool wrote them): a
    /// request naming no source is never taken to be for the one left.
    unroutable: usize,
    shared: Arc<Shared>,
    quarantine: Arc<Quarantine>,
    /// The log writer's queue: open once the log is replayed, closed at shutdown.
    commands: Arc<Mutex<Queue>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    busy_retry: Duration,
    counters: RequestMetrics,
}

impl DatasetPipeline {
    pub(super) fn start(
        data_dir: &DataDir,
        name: &DatasetName,
        options: &PipelineOptions,
    ) -> Result<DatasetPipeline, PipelineError> {
        let dataset = data_dir.open_dataset(name.as_str())?;
        let (sources, unroutable) = sources_of(dataset.state());
        let name = name.as_str();
        let wal_dir = Pipeline::wal_dir(data_dir, name);
        let lock = lock_wal(&wal_dir, dataset.state())?;
        let writer = DatasetWriter::open(dataset, options.writer.clone())?;
        let shared = Arc::new(Shared::new(options.max_pending_bytes));
        let quarantine = Arc::new(Quarantine::new(
            data_dir.root(),
            name,
            options.quarantine_max_entries,
            options.quarantine_max_bytes,
        ));
        let committer =
            Committer::new(name, writer, quarantine.clone(), options.flush.clone(), shared.clone());
        let commands = Arc::new(Mutex::new(Queue::Waiting));
        let start = Start {
            name: name.to_owned(),
            wal_dir,
            segment_bytes: options.wal_segment_bytes,
            sync_pacing: options.wal_sync,
            shared: shared.clone(),
            commands: commands.clone(),
            lock,
        };
        let thread = std::thread::Builder::new()
            .name(format!("commit:{name}"))
            .spawn(move || start.run(committer))
            .map_err(|e| PipelineError::Log(format!("cannot start the committer of '{name}': {e}")))?;
        Ok(DatasetPipeline {
            name: name.parse().map_err(|e: NameError| PipelineError::Log(e.to_string()))?,
            sources,
            unroutable,
            shared,
            quarantine,
            commands,
            committer: Mutex::new(Some(thread)),
            busy_retry: options.flush.interval.max(Duration::from_secs(1)),
            counters: RequestMetrics::new(name),
        })
    }

    pub fn name(&self) -> &DatasetName {
        &self.name
    }

    pub fn sources(&self) -> &[Arc<SourceInfo>] {
        &self.sources
    }

    pub fn quarantine(&self) -> &Quarantine {
        &self.quarantine
    }

    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// Bytes accepted and not yet committed, and the limit.
    pub fn pending(&self) -> (usize, usize) {
        (self.shared.pending(), self.shared.max_pending())
    }

    /// The push source a request names, or the only active one.
    pub fn resolve(&self, name: Option<&str>) -> Result<&Arc<SourceInfo>, IngestError> {
        let dataset = self.name.to_string();
        let known = || self.sources.iter().map(|s| s.name.to_string()).collect();
        match name {
            Some(name) => match self.sources.iter().find(|s| s.name.as_str() == name) {
                Some(source) if source.active => Ok(source),
                Some(_) => Err(IngestError::DisabledSource { dataset, source_name: name.to_owned() }),
                None => {
                    Err(IngestError::UnknownSource { dataset, source_name: name.to_owned(), known: known() })
                }
            },
            None => {
                let active: Vec<&Arc<SourceInfo>> = self.sources.iter().filter(|s| s.active).collect();
                match active.as_slice() {
                    [only] if self.unroutable == 0 => Ok(only),
                    [] => Err(IngestError::NoPushSource(dataset)),
                    _ => Err(IngestError::SourceNotNamed {
                        dataset,
                        known: active.iter().map(|s| s.name.to_string()).collect(),
                    }),
                }
            }
        }
    }

    /// Takes a payload for `source`, one of this dataset's (the intake resolved it).
    pub(crate) async fn submit(
        &self,
        source: &SourceInfo,
        submission: Submission,
    ) -> Result<Accepted, SubmitError> {
        let source_name = source.name.clone();
        let counters = self.counters.of(source_name.as_str(), submission.transport, &submission.route);
        counters.requests.increment(1);
        counters.bytes.increment(submission.payload.len() as u64);
        match self.health().phase {
            Phase::Ready => {}
            Phase::Starting | Phase::Replaying => {
                return Err(self.busy("the dataset is replaying its write-ahead log".into()));
            }
            Phase::Failed(reason) => return Err(SubmitError::Unavailable(reason)),
            Phase::Stopped => return Err(SubmitError::Unavailable("the gateway is stopping".into())),
        }
        let size = submission.footprint(source_name.as_str());
        if !self.shared.reserve(size) {
            counters.busy.increment(1);
            let (pending, max) = self.pending();
            return Err(self.busy(format!(
                "dataset '{}' has {pending} bytes accepted and not yet committed (the limit is {max})",
                self.name
            )));
        }
        let reservation = Reservation { shared: &self.shared, bytes: size };
        let received = Utc::now();
        let screened = self.screen(source, &submission, received, &counters).await?;
        if screened.records == 0 {
            return Ok(Accepted {
                dataset: self.name.clone(),
                source: source_name,
                seq: None,
                records: 0,
                rejected: screened.rejected,
                quarantine_id: screened.quarantine_id,
            });
        }
        let Screened { records, rejected, quarantine_id } = screened;
        let entry = Entry {
            source: source_name.to_string(),
            format: submission.format,
            route: submission.address,
            sender: submission.sender,
            received: submission.event_time.unwrap_or(received),
            columns: submission.columns,
            bindings: submission.bindings,
            payload: submission.payload,
        };
        let commands = match &*self.commands.lock().unwrap_or_else(|e| e.into_inner()) {
            Queue::Open(commands, _) => commands.clone(),
            Queue::Waiting | Queue::Closed => {
                return Err(SubmitError::Unavailable("the gateway is stopping".into()));
            }
        };
        let (reply, logged) = oneshot::channel();
        let command =
            Command::Append { entry, records, reserved: size, durability: submission.durability, reply };
        if commands.send(command).await.is_err() {
            return Err(SubmitError::Unavailable("the gateway is stopping".into()));
        }
        let seq = match logged.await {
            Ok(Ok(seq)) => seq,
            // Written but not synced: it goes on to the commit, with its reservation.
            Ok(Err(e @ AppendError::NotSynced(_))) => {
                reservation.hand_over();
                return Err(SubmitError::Uncertain(e.to_string()));
            }
            Ok(Err(e)) => return Err(SubmitError::Unavailable(e.to_string())),
            Err(_) => return Err(SubmitError::Unavailable("the gateway is stopping".into())),
        };
        reservation.hand_over();
        Ok(Accepted {
            dataset: self.name.clone(),
            source: source_name,
            seq: Some(seq),
            records,
            rejected,
            quarantine_id,
        })
    }

    /// Checks a payload against `source` and quarantines the records that do not fit. The
    /// records that do are counted in `Screened`; none fitting is an error (`Rejected`), as
    /// is a Snapshot payload with any bad record (without them it would retract their keys).
    /// The counts go to `counters` (accepted, rejected); the caller counts the request.
    pub async fn screen(
        &self,
        source: &SourceInfo,
        submission: &Submission,
        received: DateTime<Utc>,
        counters: &RequestCounters,
    ) -> Result<Screened, SubmitError> {
        let outcome = check(source, submission).await.map_err(SubmitError::Unavailable)?;
        let mut rejected: Vec<Rejection> = outcome.rejected.iter().map(Rejection::from).collect();
        if outcome.rejected_count > rejected.len() {
            let more = outcome.rejected_count - rejected.len();
            rejected.push(Rejection::whole(&format!("... and {more} more record(s) rejected")));
        }
        counters.accepted.increment(outcome.records as u64);
        counters.rejected.increment(outcome.rejected_count as u64);
        let quarantine_id = match rejected.is_empty() {
            true => None,
            false => Some(
                self.quarantine_payload(
                    submission,
                    source.name.as_str(),
                    &rejected,
                    outcome.records,
                    received,
                )
                .await?,
            ),
        };
        let refused_whole = source.is_snapshot() && !rejected.is_empty();
        if (outcome.records == 0 && !rejected.is_empty()) || refused_whole {
            return Err(SubmitError::Rejected {
                source_name: source.name.to_string(),
                rejections: rejected,
                quarantine_id,
            });
        }
        Ok(Screened { records: outcome.records, rejected, quarantine_id })
    }

    /// The request counters of (source, transport, route), for a sender that takes many
    /// payloads through the same one (a Kafka stream) to resolve once.
    pub fn request_counters(
        &self,
        source: &SourceName,
        transport: Transport,
        route: &str,
    ) -> RequestCounters {
        self.counters.of(source.as_str(), transport, route)
    }

    /// Commits records consumed from an event queue (they skip the log), with the queue's
    /// offsets as their source's state; returns once they are committed.
    pub async fn commit_consumed(&self, consumed: Consumed) -> Result<(), SubmitError> {
        let (reply, committed) = oneshot::channel();
        self.to_committer(Work::Consumed(consumed, reply))?;
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SubmitError::Unavailable(e)),
            Err(_) => Err(SubmitError::Unavailable("the gateway is stopping".into())),
        }
    }

    /// The last state of `kind` that `source` recorded in the dataset (once its log is
    /// replayed).
    pub async fn source_state(&self, source: &SourceName, kind: &str) -> Result<Option<String>, SubmitError> {
        let (reply, state) = oneshot::channel();
        self.to_committer(Work::State { source: source.to_string(), kind: kind.to_owned(), reply })?;
        state.await.map_err(|_| SubmitError::Unavailable("the gateway is stopping".into()))
    }

    fn to_committer(&self, work: Work) -> Result<(), SubmitError> {
        let queue = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        match &*queue {
            Queue::Open(_, committer) => {
                committer.send(work).map_err(|_| SubmitError::Unavailable("the gateway is stopping".into()))
            }
            Queue::Waiting => Err(self.busy("the dataset is replaying its write-ahead log".into())),
            Queue::Closed => Err(SubmitError::Unavailable("the gateway is stopping".into())),
        }
    }

    /// Takes `bytes` of the budget of what is accepted and not yet committed; `false` when it
    /// is full. `release` gives them back.
    pub fn reserve(&self, bytes: usize) -> bool {
        self.shared.reserve(bytes)
    }

    pub fn release(&self, bytes: usize) {
        self.shared.release_pending(bytes);
    }

    /// Whether a payload of `bytes` would be taken now (checked before its body is read).
    pub fn would_take(&self, bytes: usize) -> Result<(), SubmitError> {
        let (pending, max) = self.pending();
        if pending > 0 && pending.saturating_add(bytes) > max {
            return Err(self.busy(format!(
                "dataset '{}' has {pending} bytes accepted and not yet committed (the limit is {max})",
                self.name
            )));
        }
        Ok(())
    }

    /// Waits until the entry at `seq` is committed (or quarantined after it was accepted);
    /// `false` if `timeout` passed first.
    pub async fn wait_committed(&self, seq: u64, timeout: Duration) -> bool {
        let mut committed = self.shared.committed();
        tokio::time::timeout(timeout, committed.wait_for(|&c| c >= seq)).await.is_ok_and(|r| r.is_ok())
    }

    fn busy(&self, reason: String) -> SubmitError {
        SubmitError::Busy { retry_after: self.busy_retry, reason }
    }

    /// Quarantines a whole payload that was not checked (a Kafka record whose declared format
    /// the gateway does not read), with the reason.
    pub async fn quarantine_record(
        &self,
        source: &str,
        address: &str,
        sender: &str,
        payload: Bytes,
        reason: &str,
    ) -> Result<String, SubmitError> {
        let submission = Submission {
            format: None,
            payload,
            columns: Vec::new(),
            bindings: Vec::new(),
            event_time: None,
            transport: Transport::Kafka,
            route: String::new(),
            address: address.to_owned(),
            sender: sender.to_owned(),
            durability: Durability::Synced,
        };
        self.quarantine_payload(&submission, source, &[Rejection::whole(reason)], 0, Utc::now()).await
    }

    async fn quarantine_payload(
        &self,
        submission: &Submission,
        source: &str,
        reasons: &[Rejection],
        accepted: usize,
        time: DateTime<Utc>,
    ) -> Result<String, SubmitError> {
        let entry = QuarantineEntry {
            id: String::new(),
            time,
            dataset: self.name.to_string(),
            source: Some(source.to_owned()),
            route: submission.address.clone(),
            sender: submission.sender.clone(),
            format: submission.format.map(|f| f.to_string()),
            reasons: reasons.to_vec(),
            accepted,
            payload: submission.payload.to_vec(),
        };
        metrics::counter!("odf_records_quarantined_total", "dataset" => self.name.to_string())
            .increment(reasons.len() as u64);
        let quarantine = self.quarantine.clone();
        match tokio::task::spawn_blocking(move || quarantine.put(entry)).await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(e)) => Err(SubmitError::Unavailable(format!(
                "cannot write the rejected records to the quarantine: {e}"
            ))),
            Err(e) => Err(SubmitError::Unavailable(format!("cannot write to the quarantine: {e}"))),
        }
    }

    pub(super) fn begin_stopping(&self) {
        self.shared.stop();
    }

    /// Stops taking submissions; what is accepted is still committed.
    pub(super) fn close(&self) {
        self.shared.stop();
        if self.health().phase == Phase::Ready {
            self.shared.set_phase(Phase::Stopped);
        }
        *self.commands.lock().unwrap_or_else(|e| e.into_inner()) = Queue::Closed;
    }

    /// Waits for the committer to commit everything accepted and end.
    pub(super) fn join(&self) {
        let thread = self.committer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!(dataset = %self.name, "the committer thread panicked");
            }
        }
        self.shared.set_phase(Phase::Stopped);
    }
}

pub(super) enum Queue {
    /// The log is being replayed.
    Waiting,
    /// The log writer's queue, and the committer's (for consumed records).
    Open(mpsc::Sender<Command>, std_mpsc::Sender<Work>),
    Closed,
}

/// Gives reserved bytes back unless the entry went on to the committer.
struct Reservation<'a> {
    shared: &'a Shared,
    bytes: usize,
}

impl Reservation<'_> {
    /// The entry went on to the committer, which gives the bytes back after the commit.
    fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.shared.release_pending(self.bytes);
    }
}

async fn check(source: &SourceInfo, submission: &Submission) -> Result<CheckOutcome, String> {
    let name = &source.definition.source_name;
    let check = source.check.as_ref().ok_or_else(|| {
        format!("push source '{name}' has a read step this gateway cannot apply; see its log at start")
    })?;
    let origin = format!("{} via {}", submission.sender, submission.address);
    if submission.payload.len() <= CHECK_INLINE {
        let Submission { payload, format, columns, bindings, .. } = submission;
        return Ok(check.check(payload, *format, columns, bindings, &origin));
    }
    let (check, payload, format, columns, bindings) = (
        check.clone(),
        submission.payload.clone(),
        submission.format,
        submission.columns.clone(),
        submission.bindings.clone(),
    );
    tokio::task::spawn_blocking(move || check.check(&payload, format, &columns, &bindings, &origin))
        .await
        .map_err(|e| format!("checking the payload failed: {e}"))
}

/// The push sources of a dataset, and how many active ones were left out: a name the gateway
/// cannot route to (another tool wrote it) is, with an error in the log.
fn sources_of(state: &ChainState) -> (Vec<Arc<SourceInfo>>, usize) {
    let source = |(definition, active): &(AddPushSource, bool)| {
        let name = definition
            .source_name
            .parse::<SourceName>()
            .inspect_err(|e| tracing::error!("push source left out, its name cannot be routed to: {e}"))
            .ok()?;
        let check = SourceCheck::new(definition)
            .inspect_err(|e| tracing::error!(source = %name, "the source's read step cannot be applied: {e}"))
            .ok();
        Some(Arc::new(SourceInfo { name, check, definition: definition.clone(), active: *active }))
    };
    let sources: Vec<_> = state.push_sources.values().filter_map(source).collect();
    let active = state.push_sources.values().filter(|(_, active)| *active).count();
    let unroutable = active - sources.iter().filter(|s| s.active).count();
    (sources, unroutable)
}

impl SourceInfo {
    pub fn is_snapshot(&self) -> bool {
        matches!(self.definition.merge, MergeStrategy::Snapshot(_))
    }
}
