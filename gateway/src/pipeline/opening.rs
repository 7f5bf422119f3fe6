//! Opening a dataset's write-ahead log for the pipeline: taking it for this process, then, on
//! the committer's thread, replaying what it holds and opening the queue to senders; and
//! saying what damage the log holds.

use std::fs::File;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::committer::Committer;
use super::dataset::Queue;
use super::group_commit::{self, SyncPacing};
use super::shared::{Phase, Shared};
use super::wal::Wal;
use super::{LogDamage, LostSeqs, PipelineError};
use crate::odf::ChainState;

/// Appends waiting for the log writer before senders wait for room in its queue.
const LOG_QUEUE: usize = 1024;

/// Takes the log folder for this process (one server per data directory) and checks that it
/// belongs to this dataset and not to one deleted and made again under the same name.
pub(super) fn lock_wal(dir: &std::path::Path, state: &ChainState) -> Result<File, PipelineError> {
    let fail = |e: String| PipelineError::Log(e);
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let lock = crate::store::lock_file(&dir.join("lock"), Duration::ZERO)
        .map_err(|e| PipelineError::Locked(e.to_string()))?;
    let id = state.dataset_id.as_ref().map(ToString::to_string).unwrap_or_default();
    let id_file = dir.join("dataset-id");
    match std::fs::read_to_string(&id_file) {
        Ok(found) if found.trim() == id => {}
        Ok(found) => {
            return Err(fail(format!(
                "the write-ahead log in {} belongs to dataset {} and this one is {id}: move the folder away if its entries are no longer wanted",
                dir.display(),
                found.trim()
            )));
        }
        Err(_) => crate::store::write_atomic(&id_file, id.as_bytes()).map_err(|e| fail(e.to_string()))?,
    }
    Ok(lock)
}

/// Opening the log and replaying it, on the committer's thread, then committing as entries
/// arrive.
pub(super) struct Start {
    pub(super) name: String,
    pub(super) wal_dir: std::path::PathBuf,
    pub(super) segment_bytes: u64,
    pub(super) sync_pacing: SyncPacing,
    pub(super) shared: Arc<Shared>,
    pub(super) commands: Arc<Mutex<Queue>>,
    pub(super) lock: File,
}

impl Start {
    pub(super) fn run(self, mut committer: Committer) {
        let name = self.name.as_str();
        let floor = committer.recorded_floor();
        let committed = committer.committed_by_every_source();
        let (mut wal, recovery) = match Wal::open(&self.wal_dir, self.segment_bytes, floor, committed) {
            Ok(opened) => opened,
            Err(e) => {
                tracing::error!(dataset = name, "cannot open the write-ahead log: {e}");
                self.shared.set_phase(Phase::Failed(format!("cannot open the write-ahead log: {e}")));
                return;
            }
        };
        if recovery.torn_bytes > 0 {
            tracing::warn!(
                dataset = name,
                bytes = recovery.torn_bytes,
                "cut an unfinished write off the end of the write-ahead log (never acknowledged)"
            );
        }
        let lost = report_damage(name, recovery.damage);
        self.shared.set_log_damage(lost);
        self.shared.set_phase(Phase::Replaying);
        match committer.replay(&mut wal) {
            Ok(replayed) => {
                tracing::info!(dataset = name, records = committer.records(), replayed, "dataset ready")
            }
            Err(e) => {
                tracing::error!(dataset = name, "{e}");
                self.shared.set_phase(Phase::Failed(e));
                return;
            }
        }
        let (to_committer, work) = std_mpsc::channel();
        let (commands, log_thread) = match group_commit::spawn(
            name,
            wal,
            to_committer.clone(),
            LOG_QUEUE,
            self.sync_pacing,
            self.shared.clone(),
        ) {
            Ok(spawned) => spawned,
            Err(e) => {
                self.shared.set_phase(Phase::Failed(e));
                return;
            }
        };
        let weak = commands.downgrade();
        {
            let mut queue = self.commands.lock().unwrap_or_else(|e| e.into_inner());
            // Stopped while replaying: the queue stays closed and the threads end at once.
            if matches!(*queue, Queue::Waiting) {
                *queue = Queue::Open(commands, to_committer);
                self.shared.set_phase(Phase::Ready);
            } else {
                // Stopped while replaying: without these senders the threads end at once.
                drop((commands, to_committer));
            }
        }
        committer.run(work, weak);
        let _ = log_thread.join();
        drop(self.lock);
    }
}

/// Says, loudly, what damage the log holds: each range found now as an error, the ones kept
/// from earlier as a warning, and both as metrics. Returns the ranges that held records not
/// committed.
fn report_damage(dataset: &str, damage: Vec<LogDamage>) -> Vec<LogDamage> {
    let found_now = damage.iter().filter(|d| d.found_now);
    metrics::counter!("odf_wal_damaged_ranges_found_total", "dataset" => dataset.to_owned())
        .increment(found_now.clone().count() as u64);
    metrics::counter!("odf_wal_damaged_bytes_found_total", "dataset" => dataset.to_owned())
        .increment(found_now.map(|d| d.end - d.start).sum());
    metrics::gauge!("odf_wal_damaged_ranges_kept", "dataset" => dataset.to_owned()).set(damage.len() as f64);
    let mut lost = Vec::new();
    for d in damage {
        let (segment, bytes, seqs, kept_in) =
            (d.segment.as_str(), format!("{}..{}", d.start, d.end), d.seqs.to_string(), d.kept_in.display());
        match (d.found_now, d.seqs) {
            (true, LostSeqs::None) => tracing::warn!(
                dataset,
                segment,
                bytes,
                %kept_in,
                "the write-ahead log is damaged where it held no record not yet committed; nothing is lost"
            ),
            (true, _) => tracing::error!(
                dataset,
                segment,
                bytes,
                seqs,
                %kept_in,
                "the write-ahead log is damaged: the acknowledged records it held there cannot be committed; the records after them were recovered"
            ),
            (false, _) => tracing::warn!(
                dataset,
                segment,
                bytes,
                seqs,
                %kept_in,
                "damaged write-ahead log bytes found earlier are still kept aside"
            ),
        }
        if d.seqs != LostSeqs::None {
            lost.push(d);
        }
    }
    lost
}
