//! The thread that owns a dataset's write-ahead log: it takes appends from every sender,
//! writes all that are waiting with one write and makes them durable with one fsync (group
//! commit), answers each sender, and hands the entries on to the committer in log order.
//! Releases from the committer (entries now in the dataset) come through the same queue, so
//! the log has one owner and no lock.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::entry::Entry;
use super::shared::{Phase, Shared};
use super::wal::{Wal, WalError};

/// Appends taken into one write at most (the rest wait for the next).
const GROUP_BYTES: usize = 8 * 1024 * 1024;
const GROUP_ENTRIES: usize = 4096;

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
    to_committer: std_mpsc::Sender<Logged>,
    queue: usize,
    shared: Arc<Shared>,
) -> Result<(mpsc::Sender<Command>, JoinHandle<()>), String> {
    let (commands, receiver) = mpsc::channel(queue.max(1));
    let name = dataset.to_owned();
    let thread = std::thread::Builder::new()
        .name(format!("wal:{dataset}"))
        .spawn(move || run(&name, wal, receiver, to_committer, &shared))
        .map_err(|e| format!("cannot start the log writer of '{dataset}': {e}"))?;
    Ok((commands, thread))
}

fn run(
    dataset: &str,
    mut wal: Wal,
    mut commands: mpsc::Receiver<Command>,
    logged: std_mpsc::Sender<Logged>,
    shared: &Shared,
) {
    let mut group = Vec::new();
    while let Some(first) = commands.blocking_recv() {
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Release(upto) => {
                    if let Err(e) = wal.release(upto) {
                        tracing::error!(dataset, "cannot remove committed log segments: {e}");
                    }
                }
                Command::Append { entry, records, reserved, durability, reply } => {
                    let body = entry.encode();
                    bytes += body.len();
                    group.push(Pending {
                        body,
                        logged: Logged { seq: 0, entry, records, reserved },
                        durability,
                        reply,
                    });
                }
            }
            if bytes < GROUP_BYTES && group.len() < GROUP_ENTRIES {
                next = commands.try_recv().ok();
            }
        }
        if !group.is_empty() {
            write_group(dataset, &mut wal, &mut group, &logged, shared);
        }
    }
    if let Err(e) = wal.sync() {
        tracing::error!(dataset, "cannot sync the write-ahead log at shutdown: {e}");
    }
}

struct Pending {
    body: Vec<u8>,
    logged: Logged,
    durability: Durability,
    reply: oneshot::Sender<Result<u64, AppendError>>,
}

fn write_group(
    dataset: &str,
    wal: &mut Wal,
    group: &mut Vec<Pending>,
    to_committer: &std_mpsc::Sender<Logged>,
    shared: &Shared,
) {
    let started = Instant::now();
    let appended = wal.append(group.iter().map(|p| p.body.as_slice()));
    let first = match appended {
        Ok(first) => first,
        Err(e) => return fail(dataset, group, &e),
    };
    let mut synced = Vec::with_capacity(group.len());
    for (i, mut pending) in group.drain(..).enumerate() {
        let seq = first + i as u64;
        pending.logged.seq = seq;
        let reply = match pending.durability {
            Durability::Written => {
                let _ = pending.reply.send(Ok(seq));
                None
            }
            Durability::Synced => Some(pending.reply),
        };
        synced.push((pending.logged, reply));
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
    metrics::histogram!("odf_wal_sync_seconds", "dataset" => dataset.to_owned())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("odf_wal_groups_total", "dataset" => dataset.to_owned()).increment(1);
    for (logged, reply) in synced {
        if let Some(reply) = reply {
            let _ = reply.send(match &sync_error {
                None => Ok(logged.seq),
                Some(e) => Err(AppendError::NotSynced(e.to_string())),
            });
        }
        // The committer is gone only at shutdown; the entry is in the log for the next start.
        let _ = to_committer.send(logged);
    }
}

fn fail(dataset: &str, group: &mut Vec<Pending>, error: &WalError) {
    tracing::error!(dataset, "cannot append to the write-ahead log: {error}");
    for pending in group.drain(..) {
        let _ = pending.reply.send(Err(AppendError::NotLogged(error.to_string())));
    }
}
