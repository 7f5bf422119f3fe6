//! `MergeStates`: what a writer remembers of a dataset's history for merging, by state
//! signature, and how it is kept in step with the chain.
//!
//! In-memory states (Snapshot, UpsertStream) take a commit's records in while it is prepared
//! (its checkpoint needs them) and come back from the last checkpoint plus the slices after
//! it. A Ledger's index on disk takes them only after the commit, so it is never ahead of the
//! chain, and is caught up from the slices after the offset it covers. When a commit does not
//! happen the states are forgotten and synced again from disk.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use arrow::array::{Array, Int64Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use super::checkpoint;
use super::error::IngestError;
use super::merge::MergeState;
use super::merge::ledger_index::IndexConfig;
use crate::odf::{AddPushSource, ChainState, Checkpoint, Multihash, Vocab};
use crate::store::{Dataset, IoError};

/// Folder of the data directory holding the Ledger indexes (beside `.keys`).
const INDEX_DIR: &str = ".index";

/// When checkpoints of the in-memory states are written.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    pub min_rows: u64,
    pub min_interval: std::time::Duration,
}

pub struct MergeStates {
    policy: CheckpointPolicy,
    /// The memory bounds of each Ledger's index.
    index: IndexConfig,
    /// By signature, up to date with `offset`; `None` until first needed or once forgotten.
    states: Option<BTreeMap<String, MergeState>>,
    offset: Option<u64>,
    /// Rows taken into the in-memory states since the last checkpoint was written.
    rows_since_checkpoint: u64,
}

impl MergeStates {
    pub fn new(policy: CheckpointPolicy, index: IndexConfig) -> MergeStates {
        MergeStates { policy, index, states: None, offset: None, rows_since_checkpoint: 0 }
    }

    /// Drops the states (they may hold records that were not committed); the next `sync`
    /// rebuilds them from disk.
    pub fn forget(&mut self) {
        self.states = None;
    }

    pub fn get_mut(&mut self, signature: &str) -> Option<&mut MergeState> {
        self.states.as_mut().and_then(|states| states.get_mut(signature))
    }

    /// Brings the states up to the dataset's last offset: kept in memory while nothing was
    /// committed by another writer and no source was added, else from the last checkpoint
    /// and the indexes plus the slices after what they cover.
    pub fn sync(&mut self, dataset: &Dataset, data_schema: &SchemaRef) -> Result<(), IngestError> {
        let chain = dataset.state();
        let sources: Vec<&AddPushSource> = chain.active_sources().collect();
        let needed: Vec<String> = sources.iter().filter_map(|s| MergeState::signature(&s.merge)).collect();
        let complete =
            self.states.as_ref().is_some_and(|states| needed.iter().all(|n| states.contains_key(n)));
        if complete && self.offset == chain.last_offset {
            return Ok(());
        }
        // Dropped first: an index cannot be open twice.
        self.states = None;
        let mut states = BTreeMap::new();
        for source in &sources {
            let Some(signature) = MergeState::signature(&source.merge) else { continue };
            if states.contains_key(&signature) {
                continue;
            }
            if let Some(state) =
                MergeState::new(&source.merge, data_schema, &index_dir(dataset, &signature), &self.index)?
            {
                states.insert(signature, state);
            }
        }
        let checkpointed = load_checkpoint(dataset, &mut states)?;
        // Each state is caught up from what it covers: the checkpoint's offset for the
        // in-memory ones, the index's own for a Ledger (emptied if ahead of the chain: the
        // dataset is not the history it was built from).
        let mut from = BTreeMap::new();
        for (signature, state) in &mut states {
            let covered = match state.covered_on_disk() {
                Some(on_disk) if on_disk.is_some() && on_disk > chain.last_offset => {
                    tracing::warn!(dataset = %dataset.name(), "ledger index ahead of the dataset; rebuilding it");
                    state.reset()?;
                    None
                }
                Some(on_disk) => on_disk,
                None => checkpointed,
            };
            from.insert(signature.clone(), covered);
        }
        self.states = Some(states);
        self.rows_since_checkpoint = 0;
        self.catch_up(dataset, &from, data_schema)?;
        self.offset = chain.last_offset;
        Ok(())
    }

    /// Feeds each state the data slices after the offset it covers (`from`, by signature).
    fn catch_up(
        &mut self,
        dataset: &Dataset,
        from: &BTreeMap<String, Option<u64>>,
        data_schema: &SchemaRef,
    ) -> Result<(), IngestError> {
        let Some(&oldest) = from.values().min() else { return Ok(()) };
        let vocab = Vocab::of(dataset.state().vocab.as_ref());
        for slice in dataset.slices()?.iter().filter(|s| oldest.is_none_or(|c| s.offset_interval.end > c)) {
            let end = slice.offset_interval.end;
            // A batch at a time: a slice of millions of rows never sits in memory whole.
            for batch in dataset.slice_batches(slice)? {
                let batch = batch?;
                let Some(last_offset) = last_offset(&batch, &vocab.offset)? else { continue };
                let mut columns = vec![batch.schema().index_of(&vocab.op)?];
                for field in data_schema.fields() {
                    columns.push(batch.schema().index_of(field.name())?);
                }
                let records = batch.project(&columns)?;
                for (signature, state) in self.states.iter_mut().flat_map(|s| s.iter_mut()) {
                    if from.get(signature).copied().flatten().is_none_or(|c| end > c && last_offset > c) {
                        state.catch_up(&records, last_offset)?;
                    }
                }
                self.rows_since_checkpoint += records.num_rows() as u64;
            }
        }
        for state in self.states.iter_mut().flat_map(|s| s.values_mut()) {
            state.caught_up()?;
        }
        Ok(())
    }

    /// While preparing: the in-memory states take in merged records (up to `last_offset`),
    /// a chunk at a time.
    pub fn absorb_prepared(&mut self, merged: &RecordBatch, last_offset: u64) -> Result<(), IngestError> {
        for state in self.in_memory_mut() {
            state.absorb(merged, last_offset)?;
        }
        self.rows_since_checkpoint += merged.num_rows() as u64;
        self.offset = Some(last_offset);
        Ok(())
    }

    /// Once a commit's records are taken in: the checkpoint its AddData references, a new one
    /// when due.
    pub fn checkpoint(
        &mut self,
        dataset: &Dataset,
        system_time: DateTime<Utc>,
    ) -> Result<Option<Checkpoint>, IngestError> {
        let chain = dataset.state();
        Ok(match self.checkpoint_due(chain, system_time) {
            true => Some(self.write_checkpoint(dataset)?),
            false => chain.last_checkpoint.clone(),
        })
    }

    /// After a commit: the states on disk (Ledger indexes) take in what was committed, the
    /// merging one its pending keys, the others the merged records. Without those records (a
    /// commit of several chunks), or if writing fails, the states are dropped and the next
    /// sync catches the indexes up from the slices.
    pub fn absorb_committed(
        &mut self,
        dataset: &Dataset,
        merged: Option<&RecordBatch>,
        merging: Option<&str>,
        last_offset: u64,
    ) {
        let Some(states) = self.states.as_mut() else { return };
        let mut behind = false;
        for (signature, state) in states.iter_mut().filter(|(_, s)| !s.checkpointed()) {
            let result = match (Some(signature.as_str()) == merging, merged) {
                (true, _) => state.committed(last_offset),
                (false, Some(merged)) => state.absorb(merged, last_offset),
                (false, None) => {
                    behind = true;
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::warn!(dataset = %dataset.name(), "ledger index behind the dataset: {e}; catching up at the next commit");
                behind = true;
            }
        }
        if behind {
            self.states = None;
        }
    }

    fn in_memory_mut(&mut self) -> impl Iterator<Item = &mut MergeState> {
        self.states.iter_mut().flat_map(|s| s.values_mut()).filter(|s| s.checkpointed())
    }

    /// A checkpoint is written once the rows taken in since the last one reach a quarter of
    /// the in-memory states (at most 100k), and at least `min_rows` and `min_interval` after
    /// the last: checkpoint writes stay proportional to the data, and a restart replays a
    /// bounded amount.
    fn checkpoint_due(&self, chain: &ChainState, system_time: DateTime<Utc>) -> bool {
        let in_memory: Vec<&MergeState> =
            self.states.iter().flat_map(|s| s.values()).filter(|s| s.checkpointed()).collect();
        if in_memory.is_empty() {
            return false;
        }
        let size: u64 = in_memory.iter().map(|s| s.len() as u64).sum();
        let rows = (size / 4).clamp(1, 100_000).max(self.policy.min_rows);
        let interval = chrono::Duration::from_std(self.policy.min_interval).unwrap_or(chrono::Duration::MAX);
        let waited = chain.last_checkpoint_time.is_none_or(|last| system_time - last >= interval);
        self.rows_since_checkpoint >= rows && waited
    }

    fn write_checkpoint(&mut self, dataset: &Dataset) -> Result<Checkpoint, IngestError> {
        let mut saved = Vec::new();
        for (name, state) in self.states.iter().flat_map(|s| s.iter()) {
            if let Some(batch) = state.save()? {
                saved.push((name.clone(), batch));
            }
        }
        let bytes = checkpoint::encode(self.offset, &saved)?;
        let (physical_hash, size) = dataset.put_checkpoint(&bytes)?;
        self.rows_since_checkpoint = 0;
        Ok(Checkpoint { physical_hash, size })
    }
}

/// The last offset in a batch of a slice (offsets ascend); `None` for an empty batch.
fn last_offset(batch: &RecordBatch, offset_column: &str) -> Result<Option<u64>, IngestError> {
    let column = batch.column(batch.schema().index_of(offset_column)?);
    let offsets = column
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| IngestError::Internal(format!("'{offset_column}' of a slice is not Int64")))?;
    Ok(offsets.len().checked_sub(1).map(|i| offsets.value(i)).and_then(|o| u64::try_from(o).ok()))
}

/// Where a Ledger state's index lives: beside the datasets, by dataset id (a dataset
/// re-created under the same name never meets the old index) and state signature.
fn index_dir(dataset: &Dataset, signature: &str) -> PathBuf {
    let data_dir = dataset.root().parent().unwrap_or(dataset.root());
    let id = dataset.state().dataset_id.as_ref().map(ToString::to_string).unwrap_or_default();
    data_dir.join(INDEX_DIR).join(id.trim_start_matches("did:odf:")).join(hex::encode(signature))
}

/// Removes the private Ledger indexes (`<state>.private-<pid>`) of this dataset that
/// processes no longer running left behind; returns how many.
pub fn remove_stale_private_indexes(dataset: &Dataset) -> Result<u64, IngestError> {
    let dir = index_dir(dataset, "");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(IoError { action: "list", path: dir, error }.into()),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.rsplit_once(".private-").and_then(|(_, pid)| pid.parse::<u32>().ok()) else {
            continue;
        };
        if !crate::store::process_alive(pid) {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(|error| IoError { action: "remove", path, error })?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Rows the in-memory states (Snapshot, UpsertStream: the current rows) held at the last
/// checkpoint; `None` when the dataset has no checkpoint, or it cannot be read (it is then
/// rebuilt at the next ingest).
pub fn checkpointed_rows(dataset: &Dataset) -> Option<u64> {
    let checkpoint = dataset.state().last_checkpoint.as_ref()?;
    let bytes = std::fs::read(dataset.checkpoint_path(&checkpoint.physical_hash)).ok()?;
    if Multihash::sha3_256(&bytes) != checkpoint.physical_hash {
        return None;
    }
    let saved = checkpoint::decode(&bytes).ok()??;
    Some(saved.states.values().map(|batch| batch.num_rows() as u64).sum())
}

/// Loads the in-memory states from the chain's last checkpoint; returns the offset it
/// covers. A checkpoint that is missing, damaged (its bytes do not hash to its name),
/// unreadable or without every state leaves them empty, to be rebuilt from the slices.
fn load_checkpoint(
    dataset: &Dataset,
    states: &mut BTreeMap<String, MergeState>,
) -> Result<Option<u64>, IngestError> {
    let Some(checkpoint) = &dataset.state().last_checkpoint else { return Ok(None) };
    let hash = &checkpoint.physical_hash;
    let bytes = std::fs::read(dataset.checkpoint_path(hash)).ok().filter(|bytes| {
        let intact = Multihash::sha3_256(bytes) == *hash;
        if !intact {
            tracing::warn!(dataset = %dataset.name(), "checkpoint {hash} is damaged; rebuilding from the data");
        }
        intact
    });
    let saved = match bytes.map(|bytes| checkpoint::decode(&bytes)) {
        Some(Ok(Some(saved))) => saved,
        Some(Err(e)) => {
            tracing::warn!(dataset = %dataset.name(), "checkpoint {hash}: {e}; rebuilding from the data");
            return Ok(None);
        }
        _ => return Ok(None),
    };
    if load_states(states, saved.states)? {
        return Ok(saved.last_offset);
    }
    for state in states.values_mut().filter(|s| s.checkpointed()) {
        state.clear();
    }
    Ok(None)
}

/// Loads saved states into the in-memory ones; `false` if any is missing from the save or
/// does not fit.
fn load_states(
    states: &mut BTreeMap<String, MergeState>,
    mut saved: HashMap<String, RecordBatch>,
) -> Result<bool, IngestError> {
    let in_memory: Vec<_> = states.iter_mut().filter(|(_, s)| s.checkpointed()).collect();
    if in_memory.is_empty() || in_memory.iter().any(|(name, _)| !saved.contains_key(*name)) {
        return Ok(false);
    }
    for (name, state) in in_memory {
        if let Some(batch) = saved.remove(name) {
            if !state.load(batch)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
