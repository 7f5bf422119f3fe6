//! `DatasetWriter`: one dataset open for pushing data. An ingest is planned and staged under
//! the dataset's write lock, then committed:
//!
//! 1. resolve the push source; read every message of the batch (bad records are collected);
//! 2. preprocess, shape to the dataset's columns, merge against the merge state;
//! 3. stage: the Parquet slice (hashed) and, when due, a checkpoint of the merge state;
//! 4. commit: SetDataSchema before the first data, then AddData; the head moves last.
//!
//! The merge states live as long as the writer, so a long-running server reads the history
//! once (from the last checkpoint), not at every commit.

use std::collections::BTreeMap;

use arrow::array::{Array, TimestampMillisecondArray};
use arrow::compute::kernels::aggregate::max;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use super::checkpoint;
use super::dataset_schema::{data_columns, to_arrow, to_odf};
use super::error::IngestError;
use super::format::InputFormat;
use super::merge::{MergeState, merge};
use super::normalize::normalize;
use super::preprocess::Preprocess;
use super::read::{ReadOptions, Reader, RecordError};
use super::read_schema::ReadSchema;
use super::slice::{stage, with_system_columns};
use super::vocab::Vocab;
use crate::odf::{
    AddData, AddPushSource, Checkpoint, DataSlice, MergeStrategy, MetadataEvent, Multihash, OffsetInterval,
    SetDataSchema, Transform,
};
use crate::store::{Dataset, WriteLock};

/// One message of a batch: a device's payload, a file, stdin.
pub struct Message<'a> {
    pub bytes: &'a [u8],
    /// The format the sender declared; `None` means the source's own format.
    pub format: Option<InputFormat>,
    /// Where it came from, for errors: a file name, a device, a topic.
    pub origin: String,
}

/// One commit's worth of messages. For a Snapshot source the request is one snapshot: its
/// messages together are the whole state (so a sender pushes one snapshot per request), and
/// a request with no records changes nothing.
pub struct IngestRequest<'a> {
    /// The push source; may be left out when the dataset has only one.
    pub source: Option<&'a str>,
    pub messages: Vec<Message<'a>>,
    /// Event time for records that carry none (else the system time).
    pub event_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub system_time: DateTime<Utc>,
    /// Commit the good records even if some were rejected (else commit nothing).
    pub skip_bad_records: bool,
}

#[derive(Debug)]
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
    pub offsets: OffsetInterval,
    pub watermark: Option<DateTime<Utc>>,
}

pub struct DatasetWriter {
    dataset: Dataset,
    /// Merge states by signature, up to date with `states_offset`; `None` until first needed.
    states: Option<BTreeMap<String, MergeState>>,
    states_offset: Option<u64>,
    /// Rows taken into the states since the last checkpoint was written.
    rows_since_checkpoint: u64,
}

impl DatasetWriter {
    pub fn new(dataset: Dataset) -> DatasetWriter {
        DatasetWriter { dataset, states: None, states_offset: None, rows_since_checkpoint: 0 }
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

    pub async fn ingest(
        &mut self,
        request: IngestRequest<'_>,
        options: &IngestOptions,
    ) -> Result<IngestOutcome, IngestError> {
        let lock = self.dataset.lock()?;
        let source = self.resolve_source(request.source)?;
        let schema = ReadSchema::of(&source.read).map_err(IngestError::Schema)?;
        let mut reader = Reader::new(schema, ReadOptions::of(&source.read).map_err(IngestError::Format)?);
        let declared = InputFormat::of_source(&source.read);
        let mut rejected = Vec::new();
        for message in &request.messages {
            let format = message.format.or(declared).unwrap_or(InputFormat::NdJson);
            reader.read(message.bytes, format, &message.origin, &mut rejected);
        }
        if !rejected.is_empty() && !options.skip_bad_records {
            return Err(IngestError::BadRecords(rejected));
        }
        if !rejected.is_empty() && matches!(source.merge, MergeStrategy::Snapshot(_)) {
            // A snapshot without the skipped records would retract their keys.
            return Err(IngestError::BadRecords(rejected));
        }
        let records_read = reader.rows();
        let mut outcome =
            IngestOutcome { source: source.source_name.clone(), records_read, rejected, committed: None };
        if records_read == 0 {
            return Ok(outcome);
        }

        let mut batch = reader.finish()?;
        if let Some(Transform::Sql(sql)) = &source.preprocess {
            batch = Preprocess::of(sql).run(batch).await?;
        }
        let committed = self.commit_records(&lock, &source, batch, request.event_time, options.system_time);
        if committed.is_err() {
            // The merge states may hold records that were not committed: rebuild them.
            self.states = None;
        }
        outcome.committed = committed?;
        Ok(outcome)
    }

    fn commit_records(
        &mut self,
        lock: &WriteLock,
        source: &AddPushSource,
        batch: RecordBatch,
        event_time: Option<DateTime<Utc>>,
        system_time: DateTime<Utc>,
    ) -> Result<Option<Committed>, IngestError> {
        let chain = self.dataset.state().clone();
        let vocab = Vocab::of(chain.vocab.as_ref());
        let dataset_schema = chain.schema.as_ref().map(to_arrow).transpose()?;
        let data_schema = dataset_schema.as_ref().map(|s| data_columns(s, &vocab));
        let takes_op =
            matches!(source.merge, MergeStrategy::ChangelogStream(_) | MergeStrategy::UpsertStream(_));
        let normalized =
            normalize(batch, &vocab, takes_op, event_time.unwrap_or(system_time), data_schema.as_ref())?;

        let data_schema = data_schema.unwrap_or_else(|| normalized.batch.schema());
        self.sync_states(&data_schema)?;
        let signature = MergeState::signature(&source.merge);
        let state =
            signature.as_ref().and_then(|s| self.states.as_mut().and_then(|states| states.get_mut(s)));
        let merged = merge(&source.merge, state, normalized, &vocab.op)?;
        if merged.num_rows() == 0 {
            return Ok(None);
        }

        // The chain's system time never goes back; the records carry the block's.
        let system_time = chain.last_system_time.map_or(system_time, |last| last.max(system_time));
        let first_offset = chain.next_offset().map_err(|_| IngestError::OffsetsExhausted)?;
        let slice = with_system_columns(&merged, &vocab, first_offset, system_time)?;
        // Every column must be one ODF describes (and arrow-digest hashes) before writing.
        let odf_schema = to_odf(&slice.schema())?;
        let staged = stage(&slice, &self.dataset.staging_path())?;
        let offsets = OffsetInterval { start: first_offset, end: first_offset + staged.rows - 1 };
        let watermark = max_event_time(&slice, &vocab)?.into_iter().chain(chain.watermark).max();

        // The states take the new records in now; if the commit fails they are dropped (see
        // `ingest`) and rebuilt from disk, so they never run ahead of the chain.
        self.absorb(&merged)?;
        self.states_offset = Some(offsets.end);
        let new_checkpoint = match self.checkpoint_due() {
            true => Some(self.write_checkpoint()?),
            false => chain.last_checkpoint.clone(),
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
            new_source_state: None,
            extra: None,
        }));

        let result = self
            .dataset
            .publish(&staged.temp, &self.dataset.data_path(&staged.physical_hash))
            .and_then(|()| self.dataset.commit_locked(lock, events, system_time));
        if result.is_err() {
            // Not yet published: the staged file would otherwise wait for this process to end.
            let _ = std::fs::remove_file(&staged.temp);
        }
        let head = result?;
        Ok(Some(Committed { head, records: staged.rows, offsets, watermark }))
    }

    fn absorb(&mut self, merged: &RecordBatch) -> Result<(), IngestError> {
        for state in self.states.iter_mut().flat_map(|s| s.values_mut()) {
            state.absorb(merged)?;
        }
        self.rows_since_checkpoint += merged.num_rows() as u64;
        Ok(())
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
        let fresh = || -> Result<BTreeMap<String, MergeState>, IngestError> {
            let mut states = BTreeMap::new();
            for source in &sources {
                if let Some(signature) = MergeState::signature(&source.merge) {
                    if let (false, Some(state)) =
                        (states.contains_key(&signature), MergeState::new(&source.merge, data_schema)?)
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
            // A checkpoint that is missing or unreadable is rebuilt from the data.
            let saved = std::fs::read(&path).ok().map(|bytes| checkpoint::decode(&bytes));
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
                None => states = fresh()?,
            }
        }
        self.states = Some(states);
        self.rows_since_checkpoint = 0;
        self.replay_after(covered, data_schema)?;
        self.states_offset = self.dataset.state().last_offset;
        Ok(())
    }

    /// Feeds the data slices with offsets after `covered` into the states.
    fn replay_after(&mut self, covered: Option<u64>, data_schema: &SchemaRef) -> Result<(), IngestError> {
        if self.states.as_ref().is_none_or(BTreeMap::is_empty) {
            return Ok(());
        }
        let vocab = Vocab::of(self.dataset.state().vocab.as_ref());
        let slices = self.dataset.slices()?;
        for slice in slices.iter().filter(|s| covered.is_none_or(|c| s.offset_interval.end > c)) {
            for batch in self.dataset.read_slice(slice)? {
                let mut columns = vec![batch.schema().index_of(&vocab.op)?];
                for field in data_schema.fields() {
                    columns.push(batch.schema().index_of(field.name())?);
                }
                self.absorb(&batch.project(&columns)?)?;
            }
        }
        Ok(())
    }

    /// A checkpoint is written once the rows taken in since the last one reach a quarter of
    /// the state (or 100k): checkpoint writes stay proportional to the data, and a restart
    /// replays at most that much.
    fn checkpoint_due(&self) -> bool {
        let Some(states) = &self.states else { return false };
        if states.is_empty() {
            return false;
        }
        let size: u64 = states.values().map(|s| s.len() as u64).sum();
        self.rows_since_checkpoint >= (size / 4).clamp(1, 100_000)
    }

    fn write_checkpoint(&mut self) -> Result<Checkpoint, IngestError> {
        let states = self.states.as_ref().map(|s| s.iter().collect::<Vec<_>>()).unwrap_or_default();
        let saved = states
            .into_iter()
            .map(|(name, state)| Ok((name.clone(), state.save()?)))
            .collect::<Result<Vec<_>, IngestError>>()?;
        let bytes = checkpoint::encode(self.states_offset, &saved)?;
        let (physical_hash, size) = self.dataset.put_checkpoint(&bytes)?;
        self.rows_since_checkpoint = 0;
        Ok(Checkpoint { physical_hash, size })
    }
}

/// Loads saved states into matching ones; `false` if any state is missing from the save
/// (then everything is rebuilt from the slices).
fn load_states(
    states: &mut BTreeMap<String, MergeState>,
    mut saved: std::collections::HashMap<String, RecordBatch>,
) -> Result<bool, IngestError> {
    if states.keys().any(|name| !saved.contains_key(name)) {
        return Ok(false);
    }
    for (name, state) in states.iter_mut() {
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
        return Err(IngestError::Schema("the event time column is not Timestamp(ms)".into()));
    };
    Ok(max(times).filter(|_| times.len() > 0).and_then(DateTime::from_timestamp_millis))
}
