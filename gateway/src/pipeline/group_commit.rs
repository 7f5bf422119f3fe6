//! The thread that owns a dataset's write-ahead log: it takes appends from every sender,
//! writes all that are waiting with one write and makes them durable with one fsync (group
//! commit), answers each sender, and hands the entries on to the committer in log order,
//! a group at a time (one wake-up of the committer per write, not per entry).
//! Releases from the committer (entries now in the dataset) come through the same queue, so
//! the log has one owner and no lock.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::committer::Work;
use super::entry::Entry;
use super::shared::{Phase, Shared};
use super::wal::{Wal, WalError};

/// Appends taken into one write at most (the rest wait for the next).
const GROUP_BYTES: usize = 8 * 1024 * 1024;
const GROUP_ENTRIES: usize = 4096;

/// How often the log is written and synced. A group of appends waits for more until
/// `interval` has passed since the last write, unless it already holds `bytes`. Each fsync
/// writes the log's last, partly filled page again (and the file system's journal), so many
/// small syncs wear an SD card far more than the records do: at 1,000 reports/s, unpaced,
/// 175 syncs a second wrote 935 bytes per 194-byte report, paced 246. The first append
/// after a quiet spell is written at once; a steady stream waits at most `interval` for its
/// ack.
#[derive(Debug, Clone, Copy)]
pub struct SyncPacing {
    pub interval: Duration,
    /// A group this big is written at once: its sync is worth its page.
    pub bytes: usize,
}

impl Default for SyncPacing {
    fn default() -> SyncPacing {
        SyncPacing { interval: Duration::from_millis(50), bytes: 16 * 1024 }
    }
}

/// When a sender is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the fsync: the entry survives a crash of the gateway or the machine.
    Synced,
    /// After the write, before the fsync (which follows at once, for the whole group): a
    /// crash of the machine in between can lose it.
    Written,
}

pub enum Command {
    Append {
        entry: Entry,
        /// Records the payload holds (as checked), for the batch size.
        records: usize,
        /// Bytes of pending budget the sender reserved, given back after the commit.
        reserved: usize,
        durability: Durability,
        reply: oneshot::Sender<Result<u64, AppendError>>,
    },
    /// Every entry up to this seq is in the dataset.
    Release(u64),
}

/// Why an append was not confirmed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// Not in the log; nothing will be committed.
    #[error("cannot append to the write-ahead log: {0}")]
    NotLogged(String),
    /// Written but not known to be on disk; it goes on to the commit all the same.
    #[error("the write-ahead log could not be synced: {0}")]
    NotSynced(String),
}

/// An entry that is in the log, for the committer.
pub struct Logged {
    pub seq: u64,
    pub entry: Entry,
    pub records: usize,
    pub reserved: usize,
}

/// Starts the log writer of `dataset` on a thread of its own. It ends when every sender of
/// the returned queue is gone, after syncing the log.
pub fn spawn(
    dataset: &str,
    wal: Wal,
    to_committer: std_mpsc::Sender<Work>,
    queue: usize,
    pacing: SyncPacing,
    shared: Arc<Shared>,
) -> Result<(mpsc::Sender<Command>, JoinHandle<()>), String> {
    let (commands, receiver) = mpsc::channel(queue.max(1));
    let name = dataset.to_owned();
    let thread = std::thread::Builder::new()
        .name(format!("wal:{dataset}"))
        .spawn(move || run(&name, wal, receiver, to_committer, pacing, &shared))
        .map_err(|e| format!("cannot start the log writer of '{dataset}': {e}"))?;
    Ok((commands, thread))
}

fn run(
    dataset: &str,
    mut wal: Wal,
    mut commands: mpsc::Receiver<Command>,
    logged: std_mpsc::Sender<Work>,
    pacing: SyncPacing,
    shared: &Shared,
) {
    // A timer for waiting on the queue with a deadline (the queue is tokio's, its senders async).
    let timer = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(timer) => timer,
        Err(e) => {
            tracing::error!(dataset, "cannot start the log writer's timer: {e}");
            shared.set_phase(Phase::Failed(format!("cannot start the log writer: {e}")));
            return;
        }
    };
    let metrics = LogMetrics::of(dataset);
    let mut group = Group::default();
    let mut last_write: Option<Instant> = None;
    while let Some(first) = commands.blocking_recv() {
        group.take(first, dataset, &mut wal);
        group.take_waiting(&mut commands, dataset, &mut wal);
        // Paced: a small group waits for more until the interval since the last write is over.
        if let Some(due) = pacing_deadline(last_write, pacing.interval, Instant::now()) {
            let due = tokio::time::Instant::from_std(due);
            while !group.pending.is_empty() && group.bytes < pacing.bytes && !group.full() {
                match timer.block_on(async { tokio::time::timeout_at(due, commands.recv()).await }) {
                    Ok(Some(command)) => {
                        group.take(command, dataset, &mut wal);
                        group.take_waiting(&mut commands, dataset, &mut wal);
                    }
                    // Time is up, or every sender is gone (the group is written all the same).
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if !group.pending.is_empty() {
            last_write = Some(Instant::now());
            write_group(dataset, &mut wal, &mut group.pending, &logged, shared, &metrics);
            group.bytes = 0;
        }
    }
    if let Err(e) = wal.sync() {
        tracing::error!(dataset, "cannot sync the write-ahead log at shutdown: {e}");
    }
}

/// Until when a group waits for more appends: the interval after the last write, if that is
/// still to come. A deadline already past must not reach the timer, which would hold the
/// group until its next tick (up to a millisecond, five times the fsync on a fast disk).
fn pacing_deadline(last_write: Option<Instant>, interval: Duration, now: Instant) -> Option<Instant> {
    last_write.and_then(|last| last.checked_add(interval)).filter(|due| *due > now)
}

/// The appends to write and sync together.
#[derive(Default)]
struct Group {
    pending: Vec<Pending>,
    bytes: usize,
}

impl Group {
    fn full(&self) -> bool {
        self.bytes >= GROUP_BYTES || self.pending.len() >= GROUP_ENTRIES
    }

    fn take(&mut self, command: Command, dataset: &str, wal: &mut Wal) {
        match command {
            Command::Release(upto) => {
                if let Err(e) = wal.release(upto) {
                    tracing::error!(dataset, "cannot remove committed log segments: {e}");
                }
            }
            Command::Append { entry, records, reserved, durability, reply } => {
                let body = entry.encode();
                self.bytes += body.len();
                self.pending.push(Pending {
                    body,
                    logged: Logged { seq: 0, entry, records, reserved },
                    durability,
                    reply,
                });
            }
        }
    }

    /// Takes what is already in the queue, up to a full group.
    fn take_waiting(&mut self, commands: &mut mpsc::Receiver<Command>, dataset: &str, wal: &mut Wal) {
        while !self.full() {
            match commands.try_recv() {
                Ok(command) => self.take(command, dataset, wal),
                Err(_) => break,
            }
        }
    }
}

struct Pending {
    body: Vec<u8>,
    logged: Logged,
    durability: Durability,
    reply: oneshot::Sender<Result<u64, AppendError>>,
}

/// The log writer's metrics, registered once for its dataset.
struct LogMetrics {
    sync_seconds: metrics::Histogram,
    groups: metrics::Counter,
}

impl LogMetrics {
    fn of(dataset: &str) -> LogMetrics {
        LogMetrics {
            sync_seconds: metrics::histogram!("odf_wal_sync_seconds", "dataset" => dataset.to_owned()),
            groups: metrics::counter!("odf_wal_groups_total", "dataset" => dataset.to_owned()),
        }
    }
}

fn write_group(
    dataset: &str,
    wal: &mut Wal,
    group: &mut Vec<Pending>,
    to_committer: &std_mpsc::Sender<Work>,
    shared: &Shared,
    metrics: &LogMetrics,
) {
    let started = Instant::now();
    let appended = wal.append(group.iter().map(|p| p.body.as_slice()));
    let first = match appended {
        Ok(first) => first,
        Err(e) => return fail(dataset, group, &e),
    };
    let mut entries = Vec::with_capacity(group.len());
    let mut waiting_for_sync = Vec::new();
    for (i, mut pending) in group.drain(..).enumerate() {
        let seq = first + i as u64;
        pending.logged.seq = seq;
        match pending.durability {
            Durability::Written => {
                let _ = pending.reply.send(Ok(seq));
            }
            Durability::Synced => waiting_for_sync.push((seq, pending.reply)),
        }
        entries.push(pending.logged);
    }
    let sync_error = wal.sync().err();
    if let Some(e) = &sync_error {
        // The records may or may not be on disk. The senders waiting are not told they are;
        // the entries are committed all the same (a commit makes them durable), because
        // later entries will be and a replay skips what lies below a committed position.
        tracing::error!(
            dataset,
            "the write-ahead log could not be synced: {e}; it takes nothing more until a restart"
        );
        shared.set_phase(Phase::Failed(format!(
            "the write-ahead log could not be synced ({e}); restart the gateway"
        )));
    }
    metrics.sync_seconds.record(started.elapsed().as_secs_f64());
    metrics.groups.increment(1);
    for (seq, reply) in waiting_for_sync {
        let _ = reply.send(match &sync_error {
            None => Ok(seq),
            Some(e) => Err(AppendError::NotSynced(e.to_string())),
        });
    }
    // The committer is gone only at shutdown; the entries are in the log for the next start.
    let _ = to_committer.send(Work::Logged(entries));
}

fn fail(dataset: &str, group: &mut Vec<Pending>, error: &WalError) {
    tracing::error!(dataset, "cannot append to the write-ahead log: {error}");
    for pending in group.drain(..) {
        let _ = pending.reply.send(Err(AppendError::NotLogged(error.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_waits_only_for_an_interval_still_to_come() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        // Unpaced, the first write, or a quiet spell longer than the interval: at once.
        assert_eq!(pacing_deadline(Some(now), Duration::ZERO, now), None);
        assert_eq!(pacing_deadline(None, ms(50), now), None);
        assert_eq!(pacing_deadline(now.checked_sub(ms(80)), ms(50), now), None);
        // A steady stream: until 50 ms after the last write.
        let last = now.checked_sub(ms(20)).unwrap();
        assert_eq!(pacing_deadline(Some(last), ms(50), now), Some(last + ms(50)));
    }
}
