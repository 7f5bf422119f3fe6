//! What a dataset's senders and its committer share: the budget of bytes accepted but not
//! yet committed (the backpressure), how far the log is committed (for senders that wait for
//! the commit), and the dataset's health (for `/readyz`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::watch;

use super::LogDamage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Opening the dataset and its log.
    Starting,
    /// Committing what the log held at start; nothing new is taken yet.
    Replaying,
    Ready,
    /// The dataset could not be opened; the reason.
    Failed(String),
    Stopped,
}

#[derive(Debug, Clone)]
pub struct Health {
    pub phase: Phase,
    /// Why commits are failing now (they are being retried), if they are.
    pub failing: Option<String>,
    /// Damaged bytes of the write-ahead log kept in its `damaged/` folder: acknowledged
    /// records that could not be committed, until an operator deals with them.
    pub log_damage: Vec<LogDamage>,
}

pub struct Shared {
    pending: AtomicUsize,
    max_pending: usize,
    committed: watch::Sender<u64>,
    health: Mutex<Health>,
    stopping: AtomicBool,
}

impl Shared {
    pub fn new(max_pending: usize) -> Shared {
        Shared {
            pending: AtomicUsize::new(0),
            max_pending,
            committed: watch::Sender::new(0),
            health: Mutex::new(Health { phase: Phase::Starting, failing: None, log_damage: Vec::new() }),
            stopping: AtomicBool::new(false),
        }
    }

    /// Reserves `bytes` of the budget; `false` (nothing reserved) when it would go over. A
    /// payload bigger than the whole budget is taken when nothing else is pending, so that
    /// it is not refused for ever.
    pub fn reserve(&self, bytes: usize) -> bool {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
                (pending == 0 || pending.saturating_add(bytes) <= self.max_pending).then(|| pending + bytes)
            })
            .is_ok()
    }

    pub fn release_pending(&self, bytes: usize) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| Some(pending.saturating_sub(bytes)));
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// The gateway is stopping: a commit that keeps failing is not retried for ever.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn set_committed(&self, seq: u64) {
        self.committed.send_if_modified(|current| {
            let moved = seq > *current;
            *current = (*current).max(seq);
            moved
        });
    }

    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    pub fn health(&self) -> Health {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).phase = phase;
    }

    pub fn set_failing(&self, reason: Option<String>) {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).failing = reason;
    }

    pub fn set_log_damage(&self, damage: Vec<LogDamage>) {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).log_damage = damage;
    }
}
