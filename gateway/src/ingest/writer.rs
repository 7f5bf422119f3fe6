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

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, TimestampMillisecondArray};
use arrow::compute::kernels::aggregate::max;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, SecondsFormat, Utc};

use super::error::{ErrorKind, IngestError};
use super::format::InputFormat;
use super::merge::{MergeState, merge};
use super::merge_states::{CheckpointPolicy, MergeStates};
use super::normalize::{Fallback, Normalized, normalize};
use super::preprocess::Preprocess;
use super::read::{Problem, ReadBatch, ReadOptions, Reader, RecordError};
use super::read_schema::ReadSchema;
use super::request::{Committed, IngestOptions, IngestOutcome, IngestRequest, Message, WriterOptions};
use super::slice::{StagedSlice, stage, with_system_columns};
use crate::odf::arrow_schema::{data_columns, to_arrow, to_odf};
use crate::odf::{
    AddData, AddPushSource, ChainState, DataSlice, MergeStrategy, MetadataEvent, OffsetInterval,
    SetDataSchema, SourceState, Transform, Vocab,
};
use crate::store::{Dataset, WriteLock};

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
    states: MergeStates,
}

impl DatasetWriter {
    /// Opens `dataset` for writing; removes the temp files dead writers left in it.
    pub fn open(dataset: Dataset, options: WriterOptions) -> Result<DatasetWriter, IngestError> {
        dataset.remove_stale_temp_files()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| IngestError::Internal(format!("cannot start a runtime for the preprocess: {e}")))?;
        let policy = CheckpointPolicy {
            min_rows: options.checkpoint_min_rows,
            min_interval: options.checkpoint_min_interval,
        };
        Ok(DatasetWriter {
            dataset,
            options,
            runtime,
            plans: HashMap::new(),
            states: MergeStates::new(policy),
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
        let shape = Shape::of(&chain)?;

        let (read, mut rejected) = read_messages(&plan, &request.messages, &shape.vocab)?;
        let mut outcome = IngestOutcome {
            source: source.source_name.clone(),
            records_read: read.records.num_rows(),
            rejected: Vec::new(),
            committed: None,
        };
        let fallback = request.event_time.unwrap_or(options.system_time);
        let normalized = match read.records.num_rows() {
            0 => None,
            _ => self.transform(&plan, &read, &request.messages, fallback, &shape, &mut rejected)?,
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
                self.stage_records(&source, normalized, &chain, &shape, position.clone(), options)
            }
            None => Ok(None),
        };
        let staged = match staged {
            Ok(staged) => staged,
            Err(e) => {
                // The merge states may hold records that were not committed: rebuild them.
                self.states.forget();
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
        shape: &Shape,
        rejected: &mut Vec<RecordError>,
    ) -> Result<Option<Normalized>, IngestError> {
        let received = messages.iter().any(|m| m.received.is_some());
        let filled_at_read = event_time_filled_at_read(plan, &shape.vocab);
        // With a preprocess, rows cannot be traced to their message: a receive time that
        // was not filled in at read takes a run per message.
        let per_message = plan.preprocess.is_some() && received && !filled_at_read;
        if !per_message {
            let fallback = match (plan.preprocess.is_none() && received, read.message_ends.is_empty()) {
                (true, false) => per_record_fallback(read, messages, fallback),
                _ => Fallback::One(fallback),
            };
            match self.transform_rows(plan, read.records.clone(), &fallback, shape) {
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
            match self.transform_rows(plan, records, &fallback, shape) {
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
        shape: &Shape,
    ) -> Result<Normalized, IngestError> {
        let records = match &plan.preprocess {
            Some(preprocess) => self.runtime.block_on(preprocess.run(records))?,
            None => records,
        };
        let takes_op = matches!(
            plan.definition.merge,
            MergeStrategy::ChangelogStream(_) | MergeStrategy::UpsertStream(_)
        );
        normalize(records, &shape.vocab, takes_op, fallback, shape.data_schema.as_ref())
    }

    /// Merges normalized records and stages their slice (and a checkpoint when due). `None`
    /// when every record merged away and there is no source state to record.
    fn stage_records(
        &mut self,
        source: &AddPushSource,
        normalized: Normalized,
        chain: &ChainState,
        shape: &Shape,
        position: Option<SourceState>,
        options: &IngestOptions,
    ) -> Result<Option<Staged>, IngestError> {
        let vocab = &shape.vocab;
        let data_schema = shape.data_schema.clone().unwrap_or_else(|| normalized.batch.schema());
        self.states.sync(&self.dataset, &data_schema)?;
        let signature = MergeState::signature(&source.merge);
        let state = signature.as_deref().and_then(|s| self.states.get_mut(s));
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
        let checkpoint = self.states.absorb_prepared(&self.dataset, &merged, offsets.end, system_time);
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
}

/// The dataset's system column names and its data columns (once it has a schema), worked
/// out once per commit.
struct Shape {
    vocab: Vocab,
    data_schema: Option<SchemaRef>,
}

impl Shape {
    fn of(chain: &ChainState) -> Result<Shape, IngestError> {
        let vocab = Vocab::of(chain.vocab.as_ref());
        let data_schema =
            chain.schema.as_ref().map(|s| to_arrow(s).map(|a| data_columns(&a, &vocab))).transpose()?;
        Ok(Shape { vocab, data_schema })
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
            let writer = &mut *self.writer;
            writer.states.absorb_committed(&writer.dataset, merged, signature.as_deref(), offsets.end);
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
        self.writer.states.forget();
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

fn max_event_time(slice: &RecordBatch, vocab: &Vocab) -> Result<Option<DateTime<Utc>>, IngestError> {
    let column = slice.column(slice.schema().index_of(&vocab.event_time)?).clone();
    let Some(times) = column.as_any().downcast_ref::<TimestampMillisecondArray>() else {
        return Err(IngestError::Internal("the event time column is not Timestamp(ms)".into()));
    };
    Ok(max(times).filter(|_| times.len() > 0).and_then(DateTime::from_timestamp_millis))
}
