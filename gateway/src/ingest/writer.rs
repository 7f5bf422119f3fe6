//! `DatasetWriter`: one dataset open for pushing data. An ingest is prepared, then committed:
//!
//! 1. `prepare` takes the dataset's write lock (waiting at most `lock_timeout`), resolves the
//!    push source, and reads the messages a chunk of records at a time (bad records are
//!    collected): each chunk is preprocessed, shaped to the dataset's columns, merged against
//!    the merge state and written into the Parquet slice being staged, so a big input never
//!    sits in memory whole. Then the slice is closed and, when due, a checkpoint written.
//!    Nothing is visible yet.
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
use std::ops::Range;
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
use super::prepared::{Prepared, Staged};
use super::preprocess::Preprocess;
use super::read::{Problem, ReadBatch, ReadOptions, Reader, RecordError};
use super::read_schema::ReadSchema;
use super::request::{IngestOptions, IngestOutcome, IngestRequest, MessageStream, WriterOptions};
use super::slice::{SliceWriter, with_system_columns};
use crate::odf::arrow_schema::{data_columns, to_arrow, to_odf};
use crate::odf::{
    AddData, AddPushSource, ChainState, DataSchema, DataSlice, MergeStrategy, MetadataEvent, OffsetInterval,
    SetDataSchema, SourceState, Transform, Vocab,
};
use crate::store::{Dataset, IoError};

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
    pub(super) dataset: Dataset,
    options: WriterOptions,
    /// Runs DataFusion (the preprocess) on the writer's own thread.
    runtime: tokio::runtime::Runtime,
    plans: HashMap<String, Arc<SourcePlan>>,
    pub(super) states: MergeStates,
}

impl DatasetWriter {
    /// Opens `dataset` for writing: removes the temp files (and private indexes) writers no
    /// longer running left, and refuses a dataset whose slices are missing or truncated.
    pub fn open(dataset: Dataset, options: WriterOptions) -> Result<DatasetWriter, IngestError> {
        dataset.remove_stale_temp_files()?;
        dataset.check_slice_files()?;
        let removed = super::merge_states::remove_stale_private_indexes(&dataset)?;
        if removed > 0 {
            tracing::info!(dataset = %dataset.name(), removed, "removed private Ledger indexes of writers no longer running");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| IngestError::Internal(format!("cannot start a runtime for the preprocess: {e}")))?;
        let states = MergeStates::new(
            CheckpointPolicy {
                min_rows: options.checkpoint_min_rows,
                min_interval: options.checkpoint_min_interval,
            },
            options.ledger_index.clone(),
        );
        Ok(DatasetWriter { dataset, options, runtime, plans: HashMap::new(), states })
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// Takes in what other writers committed since the last look (a prepare does this too,
    /// under the lock).
    pub fn catch_up(&mut self) -> Result<(), IngestError> {
        self.dataset.catch_up()?;
        Ok(())
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
        self.prepare_streams(request, std::iter::empty(), options)
    }

    /// As `prepare`, with more messages read as streams after the request's own (files,
    /// stdin): records are read, merged and written a chunk at a time, so memory stays
    /// bounded however big the input (but a Snapshot merges its whole input at once, and a
    /// JSON document is read whole).
    pub fn prepare_streams(
        &mut self,
        request: IngestRequest,
        streams: impl IntoIterator<Item = Result<MessageStream, IngestError>>,
        options: &IngestOptions,
    ) -> Result<Prepared<'_>, IngestError> {
        let lock = self.dataset.lock(self.options.lock_timeout)?;
        let source = self.resolve_source(request.source.as_deref())?;
        let plan = self.plan(&source)?;
        let chain = self.dataset.state().clone();
        let shape = Shape::of(&chain)?;
        let position = request.source_state.map(|p| SourceState {
            source_name: source.source_name.clone(),
            kind: p.kind,
            value: p.value,
        });
        // The chain's system time never goes back; the records carry the block's.
        let system_time =
            chain.last_system_time.map_or(options.system_time, |last| last.max(options.system_time));
        let mut stager = Stager {
            signature: MergeState::signature(&source.merge),
            fallback: request.event_time.unwrap_or(options.system_time),
            skip_bad_records: options.skip_bad_records,
            system_time,
            source,
            plan,
            chain,
            shape,
            messages: Vec::new(),
            rejected: Vec::new(),
            records_read: 0,
            synced: false,
            slice: None,
            odf_schema: None,
            watermark: None,
            snapshot: Vec::new(),
            merged: Merged::Nothing,
        };
        let inputs = request.messages.into_iter().map(|m| Ok(MessageStream::from(m))).chain(streams);
        let staged = match self.stage_inputs(&mut stager, inputs, position) {
            Ok(staged) => staged,
            Err(e) => {
                if let Some(slice) = stager.slice.take() {
                    let _ = std::fs::remove_file(slice.temp());
                }
                if stager.synced {
                    // The merge states may hold records that were not committed: rebuild them.
                    self.states.forget();
                }
                return Err(e);
            }
        };
        let outcome = IngestOutcome {
            source: stager.source.source_name,
            records_read: stager.records_read,
            rejected: stager.rejected,
            committed: None,
        };
        Ok(Prepared::new(self, lock, outcome, staged))
    }

    /// Reads every input a chunk at a time, and finishes the slice and the events.
    fn stage_inputs(
        &mut self,
        st: &mut Stager,
        inputs: impl Iterator<Item = Result<MessageStream, IngestError>>,
        position: Option<SourceState>,
    ) -> Result<Option<Staged>, IngestError> {
        let mut reader = Reader::new(st.plan.schema.clone(), st.plan.options.clone());
        let chunk_rows = self.options.chunk_rows.max(1);
        let fill_event_time = event_time_filled_at_read(&st.plan, &st.shape.vocab);
        for input in inputs {
            let input = input?;
            let format = input.format.unwrap_or(st.plan.declared);
            let mut defaults = input.columns;
            if let Some(time) = input.received.filter(|_| fill_event_time) {
                let time = time.to_rfc3339_opts(SecondsFormat::Millis, true);
                defaults.push((st.shape.vocab.event_time.clone(), time));
            }
            let origin = input.origin;
            let failed =
                |error| IngestError::Io(IoError { action: "read", path: origin.clone().into(), error });
            reader
                .begin(input.body, format, &origin, &defaults, &input.bindings, &mut st.rejected)
                .map_err(failed)?;
            st.messages.push(MessageMeta { origin: origin.clone(), received: input.received });
            loop {
                let ended = reader.read_some(chunk_rows, &mut st.rejected).map_err(failed)?;
                if reader.rows() >= chunk_rows {
                    self.take(st, reader.finish()?)?;
                }
                if ended {
                    break;
                }
            }
        }
        self.take(st, reader.finish()?)?;
        self.finish_staging(st, position)
    }

    /// Transforms, merges and writes one chunk of records read.
    fn take(&mut self, st: &mut Stager, read: ReadBatch) -> Result<(), IngestError> {
        let rows = read.records.num_rows();
        st.records_read += rows;
        // Once a record is rejected without --skip-bad-records, nothing will be committed:
        // the rest is only read, for the list of errors.
        let doomed = |st: &Stager| !st.rejected.is_empty() && !st.skip_bad_records;
        if rows == 0 || doomed(st) {
            return Ok(());
        }
        let normalized =
            self.transform(&st.plan, &read, &st.messages, st.fallback, &st.shape, &mut st.rejected)?;
        let Some(normalized) = normalized.filter(|_| !doomed(st)) else { return Ok(()) };
        if st.shape.data_schema.is_none() {
            // The first records of a dataset set its columns; the next chunks must fit them.
            st.shape.data_schema = Some(normalized.batch.schema());
        }
        if matches!(st.source.merge, MergeStrategy::Snapshot(_)) {
            // A snapshot is the whole state: merged at the end, all at once.
            st.snapshot.push(normalized);
            return Ok(());
        }
        self.merge_and_write(st, normalized)
    }

    fn merge_and_write(&mut self, st: &mut Stager, normalized: Normalized) -> Result<(), IngestError> {
        if !st.synced {
            let data_schema = st.shape.data_schema.clone().unwrap_or_else(|| normalized.batch.schema());
            self.states.sync(&self.dataset, &data_schema)?;
            st.synced = true;
        }
        let state = st.signature.as_deref().and_then(|s| self.states.get_mut(s));
        let merged = merge(&st.source.merge, state, normalized, &st.shape.vocab.op)?;
        if merged.num_rows() == 0 {
            return Ok(());
        }
        let vocab = &st.shape.vocab;
        let written = st.slice.as_ref().map_or(0, SliceWriter::rows);
        let first_offset = st
            .chain
            .next_offset()
            .ok()
            .and_then(|next| next.checked_add(written))
            .ok_or(IngestError::OffsetsExhausted)?;
        let slice = with_system_columns(&merged, vocab, first_offset, st.system_time)?;
        let writer = match &mut st.slice {
            Some(writer) => writer,
            None => {
                // Every column must be one ODF describes (and arrow-digest hashes) before writing.
                st.odf_schema = Some(to_odf(&slice.schema())?);
                st.slice.insert(SliceWriter::create(&self.dataset.staging_path(), &slice.schema())?)
            }
        };
        writer.write(&slice)?;
        st.watermark = st.watermark.max(max_event_time(&slice, vocab)?);
        let last_offset = first_offset + merged.num_rows() as u64 - 1;
        // The in-memory states take the new records in now, for the checkpoint; if the commit
        // does not happen they are forgotten and rebuilt from disk, so they never run ahead
        // of the chain. A Ledger's index takes them after the commit.
        self.states.absorb_prepared(&merged, last_offset)?;
        st.merged = match std::mem::replace(&mut st.merged, Merged::Many) {
            Merged::Nothing => Merged::One(merged),
            _ => Merged::Many,
        };
        Ok(())
    }

    /// Completes the slice and the events: AddData (after SetDataSchema for a dataset's
    /// first data), or an AddData of the source state alone, or nothing.
    fn finish_staging(
        &mut self,
        st: &mut Stager,
        position: Option<SourceState>,
    ) -> Result<Option<Staged>, IngestError> {
        let snapshot = matches!(st.source.merge, MergeStrategy::Snapshot(_));
        // A snapshot without the skipped records would retract their keys.
        if !st.rejected.is_empty() && (!st.skip_bad_records || snapshot) {
            return Err(IngestError::BadRecords(std::mem::take(&mut st.rejected)));
        }
        if !st.snapshot.is_empty() {
            let whole = concat_normalized(std::mem::take(&mut st.snapshot))?;
            if let Some(whole) = whole {
                self.merge_and_write(st, whole)?;
            }
        }
        let chain = &st.chain;
        let Some(writer) = st.slice.take() else {
            return Ok(Staged::state_only(chain, position, st.system_time));
        };
        let temp = writer.temp().to_owned();
        let finished = writer.finish().and_then(|staged| {
            let checkpoint = self.states.checkpoint(&self.dataset, st.system_time)?;
            Ok((staged, checkpoint))
        });
        let (staged, new_checkpoint) = match finished {
            Ok(finished) => finished,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        let start = chain.next_offset().map_err(|_| IngestError::OffsetsExhausted)?;
        let offsets = OffsetInterval { start, end: start + staged.rows - 1 };
        let watermark = st.watermark.into_iter().chain(chain.watermark).max();
        let mut events = Vec::new();
        if chain.schema.is_none() {
            events.push(MetadataEvent::SetDataSchema(SetDataSchema {
                raw_arrow_schema: None,
                schema: st.odf_schema.take(),
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
        let merged = match std::mem::replace(&mut st.merged, Merged::Many) {
            Merged::One(merged) => Some(merged),
            _ => None,
        };
        Ok(Some(Staged {
            records: staged.rows,
            merged,
            signature: st.signature.clone(),
            slice: Some(staged),
            events,
            system_time: st.system_time,
            offsets: Some(offsets),
            watermark,
        }))
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
    /// query failing on its values, an `op` out of range) is rejected and the others go on;
    /// which one failed is found by running them one by one.
    fn transform(
        &self,
        plan: &SourcePlan,
        read: &ReadBatch,
        messages: &[MessageMeta],
        fallback: DateTime<Utc>,
        shape: &Shape,
        rejected: &mut Vec<RecordError>,
    ) -> Result<Option<Normalized>, IngestError> {
        let parts: Vec<(usize, Range<usize>)> =
            read.message_rows().filter(|(_, rows)| !rows.is_empty()).collect();
        let received = parts.iter().any(|(i, _)| messages.get(*i).is_some_and(|m| m.received.is_some()));
        let filled_at_read = event_time_filled_at_read(plan, &shape.vocab);
        // With a preprocess, rows cannot be traced to their message: a receive time that
        // was not filled in at read takes a run per message.
        let per_message = plan.preprocess.is_some() && received && !filled_at_read;
        // Most often every record carries its own event time, and no receive time is
        // needed: one run for the whole chunk then does (a run per message costs a
        // DataFusion execution each, thousands a second from a busy fleet).
        if per_message {
            if let Some(normalized) = self.transform_whole_if_timed(plan, read, shape)? {
                return Ok(Some(normalized));
            }
        }
        if !per_message {
            let fallback = match plan.preprocess.is_none() && received {
                true => per_record_fallback(read, messages, fallback),
                false => Fallback::One(fallback),
            };
            match self.transform_rows(plan, read.records.clone(), &fallback, shape) {
                Ok(normalized) => return Ok(Some(normalized)),
                Err(e) if e.kind() == ErrorKind::BadInput && parts.len() > 1 => {}
                Err(e) if e.kind() == ErrorKind::BadInput => {
                    let message = parts.first().map_or(0, |(i, _)| *i);
                    rejected.push(message_error(message, messages, &e));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        let mut normalized = Vec::new();
        for (i, rows) in parts {
            let records = read.records.slice(rows.start, rows.len());
            let received = messages.get(i).and_then(|m| m.received);
            let fallback = Fallback::One(received.unwrap_or(fallback));
            match self.transform_rows(plan, records, &fallback, shape) {
                Ok(part) => normalized.push(part),
                Err(e) if e.kind() == ErrorKind::BadInput => rejected.push(message_error(i, messages, &e)),
                Err(e) => return Err(e),
            }
        }
        concat_normalized(normalized)
    }

    /// The chunk preprocessed in one run, if every output row has its event time (so no
    /// message's receive time is needed); `None` otherwise, or when the run fails on the
    /// values (the per-message runs then find the message to blame).
    fn transform_whole_if_timed(
        &self,
        plan: &SourcePlan,
        read: &ReadBatch,
        shape: &Shape,
    ) -> Result<Option<Normalized>, IngestError> {
        let Some(preprocess) = &plan.preprocess else { return Ok(None) };
        let output = match self.runtime.block_on(preprocess.run(read.records.clone())) {
            Ok(output) => output,
            Err(e) if e.kind() == ErrorKind::BadInput => return Ok(None),
            Err(e) => return Err(e),
        };
        let timed = output
            .schema()
            .index_of(&shape.vocab.event_time)
            .is_ok_and(|i| output.column(i).null_count() == 0);
        if !timed {
            return Ok(None);
        }
        let takes_op = matches!(
            plan.definition.merge,
            MergeStrategy::ChangelogStream(_) | MergeStrategy::UpsertStream(_)
        );
        // The fallback is never used: every row has its time.
        let fallback = Fallback::One(DateTime::<Utc>::UNIX_EPOCH);
        match normalize(output, &shape.vocab, takes_op, &fallback, shape.data_schema.as_ref()) {
            Ok(normalized) => Ok(Some(normalized)),
            Err(e) if e.kind() == ErrorKind::BadInput => Ok(None),
            Err(e) => Err(e),
        }
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
}

/// A commit being staged, a chunk of records at a time.
struct Stager {
    source: AddPushSource,
    /// The merge state the source merges against, by signature.
    signature: Option<String>,
    plan: Arc<SourcePlan>,
    chain: ChainState,
    shape: Shape,
    /// The event time of records without one whose message has no receive time.
    fallback: DateTime<Utc>,
    skip_bad_records: bool,
    /// The block's system time, which every record carries.
    system_time: DateTime<Utc>,
    /// Every message begun, by index.
    messages: Vec<MessageMeta>,
    rejected: Vec<RecordError>,
    records_read: usize,
    /// Whether the merge states were brought up to the chain (they then hold this commit's
    /// records as it goes).
    synced: bool,
    slice: Option<SliceWriter>,
    odf_schema: Option<DataSchema>,
    /// The latest event time written.
    watermark: Option<DateTime<Utc>>,
    /// A Snapshot source's records, merged at the end.
    snapshot: Vec<Normalized>,
    merged: Merged,
}

/// The merged records while they are one chunk, for the states on disk that take them in
/// after the commit (beyond one chunk those catch up from the slice instead).
enum Merged {
    Nothing,
    One(RecordBatch),
    Many,
}

/// What the chunks of a message need to know about it.
struct MessageMeta {
    origin: String,
    received: Option<DateTime<Utc>>,
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

/// Whether a message's receive time is filled into the event time column as it is read:
/// when the read schema has that column, optional.
fn event_time_filled_at_read(plan: &SourcePlan, vocab: &Vocab) -> bool {
    plan.schema.fields.iter().any(|f| f.name == vocab.event_time && f.nullable)
}

/// Each record's fallback event time: its message's receive time, else `default`.
fn per_record_fallback(read: &ReadBatch, messages: &[MessageMeta], default: DateTime<Utc>) -> Fallback {
    let mut times = Vec::with_capacity(read.records.num_rows());
    for (i, rows) in read.message_rows() {
        let time = messages.get(i).and_then(|m| m.received).unwrap_or(default).timestamp_millis();
        times.extend(std::iter::repeat_n(time, rows.len()));
    }
    Fallback::PerRecord(times)
}

fn message_error(i: usize, messages: &[MessageMeta], error: &IngestError) -> RecordError {
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

fn max_event_time(slice: &RecordBatch, vocab: &Vocab) -> Result<Option<DateTime<Utc>>, IngestError> {
    let column = slice.column(slice.schema().index_of(&vocab.event_time)?).clone();
    let Some(times) = column.as_any().downcast_ref::<TimestampMillisecondArray>() else {
        return Err(IngestError::Internal("the event time column is not Timestamp(ms)".into()));
    };
    Ok(max(times).filter(|_| times.len() > 0).and_then(DateTime::from_timestamp_millis))
}
