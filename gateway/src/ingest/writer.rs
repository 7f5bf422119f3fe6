//! `DatasetWriter`: one dataset open for pushing data. An ingest is prepared, then committed:
//!
//! 1. `prepare` takes the dataset's write lock (waiting at most `lock_timeout`), resolves the
//!    push source, reads every message (bad records are collected), preprocesses, shapes the
//!    records to the dataset's columns, merges them against the merge state and stages the
//!    Parquet slice and, when due, a checkpoint. Nothing is visible yet.
//! 2. `Prepared::commit` moves the slice into place, appends SetDataSchema (before the first
//!    data) and AddData, and moves the head last. A `Prepared` dropped without a commit
//!    removes what it staged.
//!
//! The writer is synchronous: it does blocking I/O (the lock, Parquet, fsync) and runs
//! DataFusion on a runtime of its own, so it must not be called from async code. Servers
//! use `WriterThread`, which owns a writer on a thread of its own.
//!
//! Source plans (read schema, read options, the planned preprocess) are built once per
//! source, and the merge states live as long as the writer: a long-running server reads the
//! history once (from the last checkpoint), not at every commit.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, TimestampMillisecondArray};
use arrow::compute::kernels::aggregate::max;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, SecondsFormat, Utc};

use super::checkpoint;
use super::error::{ErrorKind, IngestError};
use super::format::InputFormat;
use super::merge::{MergeState, merge};
use super::normalize::{Fallback, Normalized, normalize};
use super::preprocess::Preprocess;
use super::read::{Problem, ReadBatch, ReadOptions, Reader, RecordError};
use super::read_schema::ReadSchema;
use super::slice::{StagedSlice, stage, with_system_columns};
use crate::odf::arrow_schema::{data_columns, to_arrow, to_odf};
use crate::odf::{
    AddData, AddPushSource, ChainState, Checkpoint, DataSlice, MergeStrategy, MetadataEvent, Multihash,
    OffsetInterval, SetDataSchema, SourceState, Transform, Vocab,
};
use crate::store::{DEFAULT_LOCK_TIMEOUT, Dataset, WriteLock};

/// Folder of the data directory holding the Ledger indexes (beside `.keys`).
pub const INDEX_DIR: &str = ".index";

/// One message of a batch: a device's payload, a file, stdin.
#[derive(Debug, Clone)]
pub struct Message {
    pub bytes: Vec<u8>,
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
}

impl Message {
    pub fn new(bytes: impl Into<Vec<u8>>, origin: impl Into<String>) -> Message {
        Message {
            bytes: bytes.into(),
            format: None,
            origin: origin.into(),
            received: None,
            columns: Vec::new(),
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
}

impl Default for WriterOptions {
    fn default() -> WriterOptions {
        WriterOptions {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            checkpoint_min_rows: 0,
            checkpoint_min_interval: Duration::ZERO,
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

/// What a source needs to read and preprocess, built once and kept while the source's
/// definition stays the same.
struct SourcePlan {
    definition: AddPushSource,
    schema: ReadSchema,
    options: ReadOptions,
    declared: InputFormat,
    preprocess: Option<Preprocess>,
}

pub struct DatasetWriter {
    dataset: Dataset,
    options: WriterOptions,
    /// Runs DataFusion (the preprocess) on the writer's own thread.
    runtime: tokio::runtime::Runtime,
    plans: HashMap<String, Arc<SourcePlan>>,
    /// Merge states by signature, up to date with `states_offset`; `None` until first needed.
    states: Option<BTreeMap<String, MergeState>>,
    states_offset: Option<u64>,
    /// Rows taken into the states since the last checkpoint was written.
    rows_since_checkpoint: u64,
}

impl DatasetWriter {
    /// Opens `dataset` for writing; removes the temp files dead writers left in it.
    pub fn open(dataset: Dataset, options: WriterOptions) -> Result<DatasetWriter, IngestError> {
        dataset.remove_stale_temp_files()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| IngestError::Internal(format!("cannot start a runtime for the preprocess: {e}")))?;
        Ok(DatasetWriter {
            dataset,
            options,
            runtime,
            plans: HashMap::new(),
            states: None,
            states_offset: None,
            rows_since_checkpoint: 0,
        })
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The push source a request names, or the only one.
    pub fn resolve_source(&self, name: Option<&str>) -> Result<AddPushSource, IngestError> {
        let state = self.dataset.state();
        let dataset = self.dataset.name().to_string();
        let known = state.source_names();
        match name {
            Some(name) => match state.push_sources.get(name) {
                Some((source, true)) => Ok(source.clone()),
                Some((_, false)) => {
                    Err(IngestError::DisabledSource { dataset, source_name: name.to_owned() })
                }
                None => Err(IngestError::UnknownSource { dataset, source_name: name.to_owned(), known }),
            },
            None => {
                let active: Vec<&AddPushSource> = state.active_sources().collect();
                match active.as_slice() {
                    [only] => Ok((*only).clone()),
                    [] => Err(IngestError::NoPushSource(dataset)),
                    _ => Err(IngestError::SourceNotNamed {
                        dataset,
                        known: active.iter().map(|s| s.source_name.clone()).collect(),
                    }),
                }
            }
        }
    }

    /// Prepares and commits in one step.
    pub fn ingest(
        &mut self,
        request: IngestRequest,
        options: &IngestOptions,
    ) -> Result<IngestOutcome, IngestError> {
        self.prepare(request, options)?.commit()
    }

    /// Reads, preprocesses and merges the request's records and stages the slice, under the
    /// dataset's write lock; nothing is visible until the commit.
    pub fn prepare(
        &mut self,
        request: IngestRequest,
        options: &IngestOptions,
    ) -> Result<Prepared<'_>, IngestError> {
        let lock = self.dataset.lock(self.options.lock_timeout)?;
        let source = self.resolve_source(request.source.as_deref())?;
        let plan = self.plan(&source)?;
        let chain = self.dataset.state().clone();
        let vocab = Vocab::of(chain.vocab.as_ref());

        let (read, mut rejected) = read_messages(&plan, &request.messages, &vocab)?;
        let mut outcome = IngestOutcome {
            source: source.source_name.clone(),
            records_read: read.records.num_rows(),
            rejected: Vec::new(),
            committed: None,
        };
        let fallback = request.event_time.unwrap_or(options.system_time);
        let normalized = match read.records.num_rows() {
            0 => None,
            _ => self.transform(&plan, &read, &request.messages, fallback, &chain, &mut rejected)?,
        };
        if !rejected.is_empty() && !options.skip_bad_records {
            return Err(IngestError::BadRecords(rejected));
        }
        if !rejected.is_empty() && matches!(source.merge, MergeStrategy::Snapshot(_)) {
            // A snapshot without the skipped records would retract their keys.
            return Err(IngestError::BadRecords(rejected));
        }
        outcome.rejected = rejected;
        let position = request.source_state.map(|p| SourceState {
            source_name: source.source_name.clone(),
            kind: p.kind,
            value: p.value,
        });
        let staged = match normalized {
            Some(normalized) => {
                self.stage_records(&source, normalized, &chain, &vocab, position.clone(), options)
            }
            None => Ok(None),
        };
        let staged = match staged {
            Ok(staged) => staged,
            Err(e) => {
                // The merge states may hold records that were not committed: rebuild them.
                self.states = None;
                return Err(e);
            }
        };
        let staged = staged.or_else(|| state_only(&chain, position, options.system_time));
        Ok(Prepared { writer: self, lock, outcome, staged, done: false })
    }

    fn plan(&mut self, source: &AddPushSource) -> Result<Arc<SourcePlan>, IngestError> {
        if let Some(plan) = self.plans.get(&source.source_name).filter(|p| &p.definition == source) {
            return Ok(plan.clone());
        }
        let schema = ReadSchema::of(&source.read).map_err(IngestError::Source)?;
        let options = ReadOptions::of(&source.read).map_err(IngestError::Source)?;
        let preprocess = match &source.preprocess {
            Some(Transform::Sql(sql)) => Some(self.runtime.block_on(Preprocess::new(sql, schema.arrow()))?),
            None => None,
        };
        let plan = Arc::new(SourcePlan {
            definition: source.clone(),
            declared: InputFormat::of_source(&source.read).unwrap_or(InputFormat::NdJson),
            schema,
            options,
            preprocess,
        });
        self.plans.insert(source.source_name.clone(), plan.clone());
        Ok(plan)
    }

    /// Preprocesses and normalizes the records read. A message whose records fail there (a
    /// query failing on its values, an `op` out of range) is rejected as a whole and the
    /// others go on; which one failed is found by running them one by one.
    fn transform(
        &self,
        plan: &SourcePlan,
        read: &ReadBatch,
        messages: &[Message],
        fallback: DateTime<Utc>,
        chain: &ChainState,
        rejected: &mut Vec<RecordError>,
    ) -> Result<Option<Normalized>, IngestError> {
        let vocab = Vocab::of(chain.vocab.as_ref());
        let received = messages.iter().any(|m| m.received.is_some());
        let filled_at_read = event_time_filled_at_read(plan, &vocab);
        // With a preprocess, rows cannot be traced to their message: a receive time that
        // was not filled in at read takes a run per message.
        let per_message = plan.preprocess.is_some() && received && !filled_at_read;
        if !per_message {
            let fallback = match (plan.preprocess.is_none() && received, read.message_ends.is_empty()) {
                (true, false) => per_record_fallback(read, messages, fallback),
                _ => Fallback::One(fallback),
            };
            match self.transform_rows(plan, read.records.clone(), &fallback, chain) {
                Ok(normalized) => return Ok(Some(normalized)),
                Err(e) if e.kind() == ErrorKind::BadInput && messages.len() > 1 => {}
                Err(e) if e.kind() == ErrorKind::BadInput => {
                    rejected.push(message_error(0, messages, &e));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        let mut parts = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let rows = read.message_rows(i);
            if rows.is_empty() {
                continue;
            }
            let records = read.records.slice(rows.start, rows.len());
            let fallback = Fallback::One(message.received.unwrap_or(fallback));
            match self.transform_rows(plan, records, &fallback, chain) {
                Ok(normalized) => parts.push(normalized),
                Err(e) if e.kind() == ErrorKind::BadInput => rejected.push(message_error(i, messages, &e)),
                Err(e) => return Err(e),
            }
        }
        concat_normalized(parts)
    }

    fn transform_rows(
        &self,
        plan: &SourcePlan,
        records: RecordBatch,
        fallback: &Fallback,
        chain: &ChainState,
    ) -> Result<Normalized, IngestError> {
        let records = match &plan.preprocess {
            Some(preprocess) => self.runtime.block_on(preprocess.run(records))?,
            None => records,
        };
        let vocab = Vocab::of(chain.vocab.as_ref());
        let dataset_schema = chain.schema.as_ref().map(to_arrow).transpose()?;
        let data_schema = dataset_schema.as_ref().map(|s| data_columns(s, &vocab));
        let takes_op = matches!(
            plan.definition.merge,
            MergeStrategy::ChangelogStream(_) | MergeStrategy::UpsertStream(_)
        );
        normalize(records, &vocab, takes_op, fallback, data_schema.as_ref())
    }

    /// Merges normalized records and stages their slice (and a checkpoint when due). `None`
    /// when every record merged away and there is no source state to record.
    fn stage_records(
        &mut self,
        source: &AddPushSource,
        normalized: Normalized,
        chain: &ChainState,
        vocab: &Vocab,
        position: Option<SourceState>,
        options: &IngestOptions,
    ) -> Result<Option<Staged>, IngestError> {
        let data_schema = match &chain.schema {
            Some(schema) => data_columns(&*to_arrow(schema)?, vocab),
            None => normalized.batch.schema(),
        };
        self.sync_states(&data_schema)?;
        let signature = MergeState::signature(&source.merge);
        let state =
            signature.as_ref().and_then(|s| self.states.as_mut().and_then(|states| states.get_mut(s)));
        let merged = merge(&source.merge, state, normalized, &vocab.op)?;
        if merged.num_rows() == 0 {
            return Ok(state_only(chain, position, options.system_time));
        }

        // The chain's system time never goes back; the records carry the block's.
        let system_time =
            chain.last_system_time.map_or(options.system_time, |last| last.max(options.system_time));
        let first_offset = chain.next_offset().map_err(|_| IngestError::OffsetsExhausted)?;
        let slice = with_system_columns(&merged, vocab, first_offset, system_time)?;
        // Every column must be one ODF describes (and arrow-digest hashes) before writing.
        let odf_schema = to_odf(&slice.schema())?;
        let staged = stage(&slice, &self.dataset.staging_path())?;
        let offsets = OffsetInterval { start: first_offset, end: first_offset + staged.rows - 1 };
        let watermark = max_event_time(&slice, vocab)?.into_iter().chain(chain.watermark).max();

        // The in-memory states take the new records in now, for the checkpoint; if the commit
        // does not happen they are dropped (see `Prepared`) and rebuilt from disk, so they
        // never run ahead of the chain. A Ledger's index takes them after the commit.
        let checkpoint = self.absorb(&merged, offsets.end, chain, system_time);
        let new_checkpoint = match checkpoint {
            Ok(checkpoint) => checkpoint,
            Err(e) => {
                let _ = std::fs::remove_file(&staged.temp);
                return Err(e);
            }
        };

        let mut events = Vec::new();
        if chain.schema.is_none() {
            events.push(MetadataEvent::SetDataSchema(SetDataSchema {
                raw_arrow_schema: None,
                schema: Some(odf_schema),
            }));
        }
        events.push(MetadataEvent::AddData(AddData {
            prev_checkpoint: chain.last_checkpoint.as_ref().map(|c| c.physical_hash.clone()),
            prev_offset: chain.last_offset,
            new_data: Some(DataSlice {
                logical_hash: staged.logical_hash.clone(),
                physical_hash: staged.physical_hash.clone(),
                offset_interval: offsets,
                size: staged.size,
            }),
            new_checkpoint,
            new_watermark: watermark,
            new_source_state: position,
            extra: None,
        }));
        Ok(Some(Staged {
            records: staged.rows,
            merged: Some((merged, signature)),
            slice: Some(staged),
            events,
            system_time,
            offsets: Some(offsets),
            watermark,
        }))
    }

    /// Takes merged records into the states; returns the checkpoint the AddData references
    /// (a new one when due, else the last).
    fn absorb(
        &mut self,
        merged: &RecordBatch,
        last_offset: u64,
        chain: &ChainState,
        system_time: DateTime<Utc>,
    ) -> Result<Option<Checkpoint>, IngestError> {
        self.absorb_rows(merged)?;
        self.states_offset = Some(last_offset);
        Ok(match self.checkpoint_due(chain, system_time) {
            true => Some(self.write_checkpoint()?),
            false => chain.last_checkpoint.clone(),
        })
    }

    /// The in-memory (checkpointed) states take in merged records.
    fn absorb_rows(&mut self, merged: &RecordBatch) -> Result<(), IngestError> {
        for state in self.states.iter_mut().flat_map(|s| s.values_mut()).filter(|s| s.checkpointed()) {
            state.committed(merged, 0)?;
        }
        self.rows_since_checkpoint += merged.num_rows() as u64;
        Ok(())
    }

    /// After a commit: the states kept on disk (Ledger indexes) take in what was committed,
    /// the merging one its pending keys. If that fails the index is behind the chain, which
    /// the next sync catches up.
    fn after_commit(&mut self, merged: &RecordBatch, merging: Option<&str>, last_offset: u64) {
        let Some(states) = self.states.as_mut() else { return };
        let mut result = Ok(());
        for (signature, state) in states.iter_mut().filter(|(_, s)| !s.checkpointed()) {
            result = result.and_then(|()| match Some(signature.as_str()) == merging {
                true => state.committed(merged, last_offset),
                false => state.absorb(merged, last_offset),
            });
        }
        if let Err(e) = result {
            tracing::warn!(dataset = %self.dataset.name(), "ledger index behind the dataset: {e}; catching up at the next commit");
            self.states = None;
        }
    }

    /// Where a Ledger state's index lives: beside the datasets, by dataset id (a dataset
    /// re-created under the same name never meets the old index) and state signature.
    fn index_dir(&self, signature: &str) -> PathBuf {
        let data_dir = self.dataset.root().parent().unwrap_or(self.dataset.root());
        let id = self.dataset.state().dataset_id.as_ref().map(ToString::to_string).unwrap_or_default();
        data_dir.join(INDEX_DIR).join(id.trim_start_matches("did:odf:")).join(hex::encode(signature))
    }

    /// Brings the merge states up to the dataset's last offset: from memory, else from the
    /// last checkpoint plus the slices after it, else from every slice.
    fn sync_states(&mut self, data_schema: &SchemaRef) -> Result<(), IngestError> {
        let chain = self.dataset.state();
        let sources: Vec<AddPushSource> = chain.active_sources().cloned().collect();
        let needed: Vec<String> = sources.iter().filter_map(|s| MergeState::signature(&s.merge)).collect();
        let complete =
            self.states.as_ref().is_some_and(|states| needed.iter().all(|n| states.contains_key(n)));
        // Kept in memory while nothing was committed by another writer and no source was added.
        if complete && self.states_offset == chain.last_offset {
            return Ok(());
        }
        // Dropped first: an index cannot be open twice.
        self.states = None;
        let fresh = || -> Result<BTreeMap<String, MergeState>, IngestError> {
            let mut states = BTreeMap::new();
            for source in &sources {
                if let Some(signature) = MergeState::signature(&source.merge) {
                    if states.contains_key(&signature) {
                        continue;
                    }
                    if let Some(state) =
                        MergeState::new(&source.merge, data_schema, &self.index_dir(&signature))?
                    {
                        states.insert(signature, state);
                    }
                }
            }
            Ok(states)
        };
        let mut states = fresh()?;
        let mut covered = None;
        if let Some(checkpoint) = &chain.last_checkpoint {
            let path = self.dataset.checkpoint_path(&checkpoint.physical_hash);
            // A checkpoint that is missing, damaged (its bytes do not hash to its name) or
            // unreadable is rebuilt from the data.
            let bytes = std::fs::read(&path).ok().filter(|bytes| {
                let intact = Multihash::sha3_256(bytes) == checkpoint.physical_hash;
                if !intact {
                    tracing::warn!(dataset = %self.dataset.name(), "checkpoint {} is damaged; rebuilding from the data", checkpoint.physical_hash);
                }
                intact
            });
            let saved = bytes.map(|bytes| checkpoint::decode(&bytes));
            let loaded = match saved {
                Some(Ok(Some(saved))) => load_states(&mut states, saved.states)?.then_some(saved.last_offset),
                Some(Err(e)) => {
                    let hash = &checkpoint.physical_hash;
                    tracing::warn!(dataset = %self.dataset.name(), "checkpoint {hash}: {e}; rebuilding from the data");
                    None
                }
                _ => None,
            };
            match loaded {
                Some(last_offset) => covered = last_offset,
                None => {
                    for state in states.values_mut().filter(|s| s.checkpointed()) {
                        state.clear();
                    }
                }
            }
        }
        // Each state is caught up from what it covers: the checkpoint's offset for the
        // in-memory ones, the index's own for a Ledger (emptied if ahead of the chain: the
        // dataset is not the history it was built from).
        let last = chain.last_offset;
        let mut from = BTreeMap::new();
        for (signature, state) in &mut states {
            let state_covered = match state.covered_on_disk() {
                Some(on_disk) if on_disk.is_some() && (last.is_none() || on_disk > last) => {
                    tracing::warn!(dataset = %self.dataset.name(), "ledger index ahead of the dataset; rebuilding it");
                    state.reset()?;
                    None
                }
                Some(on_disk) => on_disk,
                None => covered,
            };
            from.insert(signature.clone(), state_covered);
        }
        self.states = Some(states);
        self.rows_since_checkpoint = 0;
        self.catch_up(&from, data_schema)?;
        self.states_offset = self.dataset.state().last_offset;
        Ok(())
    }

    /// Feeds each state the data slices after the offset it covers (`from`, by signature).
    fn catch_up(
        &mut self,
        from: &BTreeMap<String, Option<u64>>,
        data_schema: &SchemaRef,
    ) -> Result<(), IngestError> {
        let Some(oldest) = from.values().min() else { return Ok(()) };
        let oldest = *oldest;
        let vocab = Vocab::of(self.dataset.state().vocab.as_ref());
        let slices = self.dataset.slices()?;
        for slice in slices.iter().filter(|s| oldest.is_none_or(|c| s.offset_interval.end > c)) {
            let mut parts = Vec::new();
            for batch in self.dataset.read_slice(slice)? {
                let mut columns = vec![batch.schema().index_of(&vocab.op)?];
                for field in data_schema.fields() {
                    columns.push(batch.schema().index_of(field.name())?);
                }
                parts.push(batch.project(&columns)?);
            }
            let Some(first) = parts.first() else { continue };
            let records = arrow::compute::concat_batches(&first.schema(), &parts)?;
            let end = slice.offset_interval.end;
            let states = self.states.iter_mut().flat_map(|s| s.iter_mut());
            for (signature, state) in states {
                if from.get(signature).copied().flatten().is_none_or(|c| end > c) {
                    state.absorb(&records, end)?;
                }
            }
            self.rows_since_checkpoint += records.num_rows() as u64;
        }
        Ok(())
    }

    /// A checkpoint is written once the rows taken in since the last one reach a quarter of
    /// the state (at most 100k), and at least `checkpoint_min_rows` and
    /// `checkpoint_min_interval` after the last: checkpoint writes stay proportional to the
    /// data, and a restart replays a bounded amount.
    fn checkpoint_due(&self, chain: &ChainState, system_time: DateTime<Utc>) -> bool {
        let Some(states) = &self.states else { return false };
        if states.is_empty() {
            return false;
        }
        let checkpointed: Vec<&MergeState> = states.values().filter(|s| s.checkpointed()).collect();
        if checkpointed.is_empty() {
            return false;
        }
        let size: u64 = checkpointed.iter().map(|s| s.len() as u64).sum();
        let rows = (size / 4).clamp(1, 100_000).max(self.options.checkpoint_min_rows);
        let interval =
            chrono::Duration::from_std(self.options.checkpoint_min_interval).unwrap_or(chrono::Duration::MAX);
        let waited = chain.last_checkpoint_time.is_none_or(|last| system_time - last >= interval);
        self.rows_since_checkpoint >= rows && waited
    }

    fn write_checkpoint(&mut self) -> Result<Checkpoint, IngestError> {
        let states = self.states.as_ref().map(|s| s.iter().collect::<Vec<_>>()).unwrap_or_default();
        let mut saved = Vec::new();
        for (name, state) in states {
            if let Some(batch) = state.save()? {
                saved.push((name.clone(), batch));
            }
        }
        let bytes = checkpoint::encode(self.states_offset, &saved)?;
        let (physical_hash, size) = self.dataset.put_checkpoint(&bytes)?;
        self.rows_since_checkpoint = 0;
        Ok(Checkpoint { physical_hash, size })
    }
}

/// What a prepared commit will write.
struct Staged {
    slice: Option<StagedSlice>,
    /// The merged records and the signature of the state that merged them, for the states
    /// that take them in after the commit.
    merged: Option<(RecordBatch, Option<String>)>,
    events: Vec<MetadataEvent>,
    system_time: DateTime<Utc>,
    records: u64,
    offsets: Option<OffsetInterval>,
    watermark: Option<DateTime<Utc>>,
}

/// A commit ready to be made visible: the dataset's lock is held until it is committed or
/// dropped. Dropped without a commit, it removes its staged slice and the writer forgets
/// its merge states (they hold the staged records).
pub struct Prepared<'w> {
    writer: &'w mut DatasetWriter,
    lock: WriteLock,
    outcome: IngestOutcome,
    staged: Option<Staged>,
    done: bool,
}

impl Prepared<'_> {
    /// Records read and rejected so far.
    pub fn outcome(&self) -> &IngestOutcome {
        &self.outcome
    }

    /// Records the commit will add.
    pub fn records(&self) -> u64 {
        self.staged.as_ref().map_or(0, |s| s.records)
    }

    /// Moves the slice into place and the head to the new blocks.
    pub fn commit(mut self) -> Result<IngestOutcome, IngestError> {
        let Some(staged) = self.staged.take() else {
            self.done = true;
            return Ok(std::mem::take(&mut self.outcome));
        };
        let dataset = &mut self.writer.dataset;
        let published = match &staged.slice {
            Some(slice) => dataset.publish(&slice.temp, &dataset.data_path(&slice.physical_hash)),
            None => Ok(()),
        };
        let result =
            published.and_then(|()| dataset.commit_locked(&self.lock, staged.events, staged.system_time));
        let head = match result {
            Ok(head) => head,
            Err(e) => {
                if let Some(slice) = &staged.slice {
                    // Not yet published: the staged file would otherwise wait for this process to end.
                    let _ = std::fs::remove_file(&slice.temp);
                }
                return Err(e.into());
            }
        };
        self.done = true;
        if let (Some((merged, signature)), Some(offsets)) = (&staged.merged, staged.offsets) {
            self.writer.after_commit(merged, signature.as_deref(), offsets.end);
        }
        let mut outcome = std::mem::take(&mut self.outcome);
        outcome.committed = Some(Committed {
            head,
            records: staged.records,
            offsets: staged.offsets,
            watermark: staged.watermark,
        });
        Ok(outcome)
    }
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(slice) = self.staged.as_ref().and_then(|s| s.slice.as_ref()) {
            let _ = std::fs::remove_file(&slice.temp);
        }
        self.writer.states = None;
    }
}

/// Reads every message with its format and its values from outside the payload.
fn read_messages(
    plan: &SourcePlan,
    messages: &[Message],
    vocab: &Vocab,
) -> Result<(ReadBatch, Vec<RecordError>), IngestError> {
    let mut reader = Reader::new(plan.schema.clone(), plan.options.clone());
    let fill_event_time = event_time_filled_at_read(plan, vocab);
    let mut rejected = Vec::new();
    for message in messages {
        let format = message.format.unwrap_or(plan.declared);
        let received = message.received.filter(|_| fill_event_time);
        if let Some(time) = received {
            let mut defaults = message.columns.clone();
            defaults.push((vocab.event_time.clone(), time.to_rfc3339_opts(SecondsFormat::Millis, true)));
            reader.read(&message.bytes, format, &message.origin, &defaults, &mut rejected);
        } else {
            reader.read(&message.bytes, format, &message.origin, &message.columns, &mut rejected);
        }
    }
    Ok((reader.finish()?, rejected))
}

/// Whether a message's receive time is filled into the event time column as it is read:
/// when the read schema has that column, optional.
fn event_time_filled_at_read(plan: &SourcePlan, vocab: &Vocab) -> bool {
    plan.schema.fields.iter().any(|f| f.name == vocab.event_time && f.nullable)
}

/// Each record's fallback event time: its message's receive time, else `default`.
fn per_record_fallback(read: &ReadBatch, messages: &[Message], default: DateTime<Utc>) -> Fallback {
    let mut times = Vec::with_capacity(read.records.num_rows());
    for (i, message) in messages.iter().enumerate() {
        let time = message.received.unwrap_or(default).timestamp_millis();
        times.extend(std::iter::repeat_n(time, read.message_rows(i).len()));
    }
    Fallback::PerRecord(times)
}

fn message_error(i: usize, messages: &[Message], error: &IngestError) -> RecordError {
    RecordError {
        message: i,
        origin: messages.get(i).map(|m| m.origin.clone()).unwrap_or_default(),
        record: 0,
        position: None,
        problem: Problem::Refused(error.to_string()),
    }
}

fn concat_normalized(parts: Vec<Normalized>) -> Result<Option<Normalized>, IngestError> {
    let Some(first) = parts.first() else { return Ok(None) };
    let schema = first.batch.schema();
    let batches: Vec<&RecordBatch> = parts.iter().map(|p| &p.batch).collect();
    let batch = arrow::compute::concat_batches(&schema, batches)?;
    let ops: Vec<&dyn Array> = parts.iter().filter_map(|p| p.op.as_deref()).collect();
    let op: Option<ArrayRef> = match ops.len() {
        0 => None,
        n if n == parts.len() => Some(arrow::compute::concat(&ops)?),
        _ => return Err(IngestError::Internal("some messages carried an op column and some not".into())),
    };
    Ok(Some(Normalized { batch, op }))
}

/// An AddData that records a source state alone, when it differs from the previous
/// AddData's (kamu's rule for a block without data).
fn state_only(
    chain: &ChainState,
    position: Option<SourceState>,
    system_time: DateTime<Utc>,
) -> Option<Staged> {
    let position = position.filter(|p| chain.last_add_data_state.as_ref() != Some(p))?;
    let system_time = chain.last_system_time.map_or(system_time, |last| last.max(system_time));
    let add = AddData {
        prev_checkpoint: chain.last_checkpoint.as_ref().map(|c| c.physical_hash.clone()),
        prev_offset: chain.last_offset,
        new_data: None,
        new_checkpoint: chain.last_checkpoint.clone(),
        new_watermark: chain.watermark,
        new_source_state: Some(position),
        extra: None,
    };
    Some(Staged {
        slice: None,
        merged: None,
        events: vec![MetadataEvent::AddData(add)],
        system_time,
        records: 0,
        offsets: None,
        watermark: chain.watermark,
    })
}

/// Loads saved states into matching ones; `false` if any state is missing from the save
/// (then everything is rebuilt from the slices).
fn load_states(
    states: &mut BTreeMap<String, MergeState>,
    mut saved: std::collections::HashMap<String, RecordBatch>,
) -> Result<bool, IngestError> {
    let mut checkpointed = states.iter_mut().filter(|(_, s)| s.checkpointed()).peekable();
    if checkpointed.peek().is_none() {
        return Ok(false);
    }
    let checkpointed: Vec<_> = checkpointed.collect();
    if checkpointed.iter().any(|(name, _)| !saved.contains_key(*name)) {
        return Ok(false);
    }
    for (name, state) in checkpointed {
        if let Some(batch) = saved.remove(name) {
            if !state.load(batch)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn max_event_time(slice: &RecordBatch, vocab: &Vocab) -> Result<Option<DateTime<Utc>>, IngestError> {
    let column = slice.column(slice.schema().index_of(&vocab.event_time)?).clone();
    let Some(times) = column.as_any().downcast_ref::<TimestampMillisecondArray>() else {
        return Err(IngestError::Internal("the event time column is not Timestamp(ms)".into()));
    };
    Ok(max(times).filter(|_| times.len() > 0).and_then(DateTime::from_timestamp_millis))
}
