//! A commit staged by `DatasetWriter::prepare`, and making it visible: the slice moved into
//! place, the blocks appended, the head moved last; the merge states on disk told after.

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use super::error::IngestError;
use super::request::{Committed, IngestOutcome};
use super::slice::StagedSlice;
use super::writer::DatasetWriter;
use crate::odf::{AddData, ChainState, MetadataEvent, OffsetInterval, SourceState};
use crate::store::WriteLock;

/// What a prepared commit will write.
pub(super) struct Staged {
    pub slice: Option<StagedSlice>,
    /// The merged records (unless there were several chunks) and the signature of the state
    /// that merged them, for the states that take them in after the commit.
    pub merged: Option<RecordBatch>,
    pub signature: Option<String>,
    pub events: Vec<MetadataEvent>,
    pub system_time: DateTime<Utc>,
    pub records: u64,
    pub offsets: Option<OffsetInterval>,
    pub watermark: Option<DateTime<Utc>>,
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

impl<'w> Prepared<'w> {
    pub(super) fn new(
        writer: &'w mut DatasetWriter,
        lock: WriteLock,
        outcome: IngestOutcome,
        staged: Option<Staged>,
    ) -> Prepared<'w> {
        Prepared { writer, lock, outcome, staged, done: false }
    }

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
        if let Some(offsets) = staged.offsets {
            let writer = &mut *self.writer;
            let (merged, signature) = (staged.merged.as_ref(), staged.signature.as_deref());
            writer.states.absorb_committed(&writer.dataset, merged, signature, offsets.end);
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

impl Staged {
    /// An AddData that records a source state alone, when it differs from the previous
    /// AddData's (kamu's rule for a block without data); `system_time` is the block's, never
    /// before the chain's last.
    pub fn state_only(
        chain: &ChainState,
        position: Option<SourceState>,
        system_time: DateTime<Utc>,
    ) -> Option<Staged> {
        let position = position.filter(|p| chain.last_add_data_state.as_ref() != Some(p))?;
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
            signature: None,
            events: vec![MetadataEvent::AddData(add)],
            system_time,
            records: 0,
            offsets: None,
            watermark: chain.watermark,
        })
    }
}
