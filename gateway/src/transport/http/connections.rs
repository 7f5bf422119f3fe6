//! The open HTTP connections, and what each is doing: still in its handshake (no request
//! yet), idle (between requests), or busy (a request or its answer in progress). The
//! accept loop admits a connection only under the cap; at the cap it closes the connection
//! that has waited longest without a request rather than keep the newcomer waiting, so
//! clients that open connections and send nothing cannot lock out health checks and real
//! clients. Each connection's task learns here when it must close: its handshake or idle
//! time is up, or it was chosen to make room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a connection may go without a request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From accept to the first request's head: TLS handshake, HTTP/2 preface, head.
    pub handshake: Duration,
    /// With no request in progress, from the end of the last answer.
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Handshake {
        since: Instant,
    },
    Idle {
        since: Instant,
    },
    Busy {
        requests: usize,
    },
    /// Chosen to make room for a newcomer.
    Evicted,
}

struct Entry {
    state: State,
    /// Wakes the connection's task when its state changes.
    changed: Arc<Notify>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// Accept loops waiting for room.
    waiting: usize,
}

/// Every open connection of the HTTP listeners, under one cap.
pub struct Connections {
    max: usize,
    timeouts: Timeouts,
    open: Mutex<Open>,
    /// Wakes the accept loops waiting for room: a connection closed or went idle.
    room: Notify,
}

/// Why a connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    HandshakeTimedOut,
    IdleTimedOut,
    Evicted,
}

impl Closing {
    /// The label of `odf_http_connections_closed_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Closing::HandshakeTimedOut => "handshake_timeout",
            Closing::IdleTimedOut => "idle_timeout",
            Closing::Evicted => "evicted",
        }
    }
}

impl Connections {
    pub fn new(max: usize, timeouts: Timeouts) -> Arc<Connections> {
        Arc::new(Connections { max: max.max(1), timeouts, open: Mutex::default(), room: Notify::new() })
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection: at once under the cap; at the cap, the connection
    /// longest without a request is told to close and its place is taken once it has;
    /// when every connection is busy, the first to finish or go idle makes room.
    pub async fn admit(self: &Arc<Self>) -> Admitted {
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut open = self.lock();
                if open.entries.len() < self.max {
                    let id = open.next_id;
                    open.next_id += 1;
                    let state = State::Handshake { since: Instant::now() };
                    open.entries.insert(id, Entry { state, changed: Arc::default() });
                    drop(open);
                    drop(waiting);
                    return Admitted { connections: self.clone(), id };
                }
                if waiting.is_none() {
                    open.waiting += 1;
                    waiting = Some(Waiting(self));
                }
                // One at a time: when none is on its way out already, make room.
                if !open.entries.values().any(|e| matches!(e.state, State::Evicted)) {
                    evict_longest_waiting(&mut open);
                }
            }
            room.await;
        }
    }
}

/// An accept loop counted as waiting for room, until it has it or gives up.
struct Waiting<'a>(&'a Connections);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut open = self.0.lock();
        open.waiting = open.waiting.saturating_sub(1);
    }
}

/// Tells the connection longest without a request (in its handshake or idle) to close.
fn evict_longest_waiting(open: &mut Open) {
    let oldest = open
        .entries
        .iter()
        .filter_map(|(id, e)| match e.state {
            State::Handshake { since } | State::Idle { since } => Some((since, *id)),
            State::Busy { .. } | State::Evicted => None,
        })
        .min();
    if let Some(entry) = oldest.and_then(|(_, id)| open.entries.get_mut(&id)) {
        entry.state = State::Evicted;
        entry.changed.notify_one();
        tracing::debug!("http: at the connection cap; closing the connection idle the longest");
    }
}

/// A connection's place; given back when dropped.
pub struct Admitted {
    connections: Arc<Connections>,
    id: u64,
}

impl Admitted {
    /// Resolves when the connection must close: its handshake or idle time is up, or it
    /// was chosen to make room. Never while a request is in progress.
    pub async fn closing(&self) -> Closing {
        loop {
            let (changed, deadline) = {
                let open = self.connections.lock();
                let Some(entry) = open.entries.get(&self.id) else { return Closing::Evicted };
                let timeouts = self.connections.timeouts;
                let deadline = match entry.state {
                    State::Evicted => return Closing::Evicted,
                    State::Handshake { since } => {
                        Some((since + timeouts.handshake, Closing::HandshakeTimedOut))
                    }
                    State::Idle { since } => Some((since + timeouts.idle, Closing::IdleTimedOut)),
                    State::Busy { .. } => None,
                };
                (entry.changed.clone(), deadline)
            };
            match deadline {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => {
                    tokio::select! {
                        _ = changed.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => changed.notified().await,
            }
        }
    }

    /// What the connection's service keeps to mark requests begun.
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle { connections: self.connections.clone(), id: self.id }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.lock().entries.remove(&self.id);
        self.connections.room.notify_waiters();
    }
}

/// A connection, as its service sees it.
#[derive(Clone)]
pub struct ConnectionHandle {
    connections: Arc<Connections>,
    id: u64,
}

impl ConnectionHandle {
    /// Marks a request begun; it ends when the returned guard is dropped (with its answer).
    pub fn begin_request(&self) -> RequestGuard {
        let mut open = self.connections.lock();
        if let Some(entry) = open.entries.get_mut(&self.id) {
            entry.state = match entry.state {
                State::Busy { requests } => State::Busy { requests: requests + 1 },
                // A request that arrived as the connection was chosen to close still runs.
                State::Handshake { .. } | State::Idle { .. } | State::Evicted => State::Busy { requests: 1 },
            };
            entry.changed.notify_one();
        }
        RequestGuard { connections: self.connections.clone(), id: self.id }
    }
}

/// A request in progress; the connection is idle again when its last one is dropped.
pub struct RequestGuard {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        let waiting = open.waiting > 0;
        let Some(entry) = open.entries.get_mut(&self.id) else { return };
        let State::Busy { requests } = entry.state else { return };
        entry.state = match requests {
            0 | 1 => State::Idle { since: Instant::now() },
            n => State::Busy { requests: n - 1 },
        };
        entry.changed.notify_one();
        let idle = matches!(entry.state, State::Idle { .. });
        drop(open);
        // An accept loop at the cap may now make room by closing this one.
        if waiting && idle {
            self.connections.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_makes_room_and_a_busy_one_never_does() {
        let hour = Duration::from_secs(3600);
        let connections = Connections::new(2, Timeouts { handshake: hour, idle: hour });
        let busy = connections.admit().await;
        let idle = connections.admit().await;
        let request = busy.handle().begin_request();
        let newcomer = tokio::spawn({
            let connections = connections.clone();
            async move { connections.admit().await }
        });
        assert_eq!(idle.closing().await, Closing::Evicted);
        assert!(!newcomer.is_finished(), "admitted before the evicted one closed");
        drop(idle);
        let newcomer = newcomer.await.unwrap();
        assert_eq!(connections.open(), 2);

        // Both busy: a fourth waits until one goes idle, and that one makes room.
        let second = newcomer.handle().begin_request();
        let fourth = tokio::spawn({
            let connections = connections.clone();
            async move { connections.admit().await }
        });
        tokio::task::yield_now().await;
        drop(request);
        assert_eq!(busy.closing().await, Closing::Evicted);
        drop(busy);
        let _fourth = fourth.await.unwrap();
        drop(second);
    }

    #[tokio::test]
    async fn a_connection_without_a_request_is_told_to_close_when_its_time_is_up() {
        let connections = Connections::new(
            4,
            Timeouts { handshake: Duration::from_millis(10), idle: Duration::from_millis(10) },
        );
        let fresh = connections.admit().await;
        assert_eq!(fresh.closing().await, Closing::HandshakeTimedOut);
        let served = connections.admit().await;
        drop(served.handle().begin_request());
        assert_eq!(served.closing().await, Closing::IdleTimedOut);
    }
}
