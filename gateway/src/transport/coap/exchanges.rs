//! What the CoAP listener remembers between datagrams: requests already seen (RFC 7252
//! §4.5: a sender retransmits a CON request until it is acknowledged, and a duplicate must be
//! answered with the same reply and never handled twice) for EXCHANGE_LIFETIME, and the
//! separate responses still waiting for the client's ACK.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// RFC 7252 §4.8.2, with its default transmission parameters.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);

type Key = (SocketAddr, u16);

/// A request's place in the cache.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// First time: handle it (it is now marked as being handled).
    New,
    /// Being handled: a CON duplicate gets an empty ACK, so the sender waits.
    InProgress,
    /// Handled: the reply to send again.
    Answered(Vec<u8>),
}

pub struct Exchanges {
    max: usize,
    seen: Mutex<Cache>,
    waiting: Mutex<HashMap<Key, oneshot::Sender<()>>>,
}

#[derive(Default)]
struct Cache {
    replies: HashMap<Key, Option<Vec<u8>>>,
    order: VecDeque<(Key, Instant)>,
}

impl Exchanges {
    /// Remembers at most `max` requests (the oldest are forgotten first).
    pub fn new(max: usize) -> Exchanges {
        Exchanges { max: max.max(1), seen: Mutex::default(), waiting: Mutex::default() }
    }

    pub fn begin(&self, peer: SocketAddr, message_id: u16) -> Seen {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while let Some(&(key, at)) = seen.order.front() {
            if now.duration_since(at) < EXCHANGE_LIFETIME && seen.order.len() < self.max {
                break;
            }
            seen.order.pop_front();
            seen.replies.remove(&key);
        }
        let key = (peer, message_id);
        match seen.replies.get(&key) {
            Some(Some(reply)) => Seen::Answered(reply.clone()),
            Some(None) => Seen::InProgress,
            None => {
                seen.replies.insert(key, None);
                seen.order.push_back((key, now));
                Seen::New
            }
        }
    }

    /// The reply a duplicate of this request gets from now on.
    pub fn answer(&self, peer: SocketAddr, message_id: u16, reply: Vec<u8>) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = seen.replies.get_mut(&(peer, message_id)) {
            *slot = Some(reply);
        }
    }

    /// Waits for the ACK (or RST) of a CON message the listener sent.
    pub fn expect_ack(&self, peer: SocketAddr, message_id: u16) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert((peer, message_id), tx);
        rx
    }

    pub fn acknowledged(&self, peer: SocketAddr, message_id: u16) {
        if let Some(tx) = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&(peer, message_id)) {
            let _ = tx.send(());
        }
    }

    pub fn give_up(&self, peer: SocketAddr, message_id: u16) {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&(peer, message_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_gets_the_first_reply_and_the_cache_is_bounded() {
        let exchanges = Exchanges::new(2);
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(exchanges.begin(peer, 1), Seen::New);
        assert_eq!(exchanges.begin(peer, 1), Seen::InProgress);
        exchanges.answer(peer, 1, vec![1, 2, 3]);
        assert_eq!(exchanges.begin(peer, 1), Seen::Answered(vec![1, 2, 3]));
        assert_eq!(exchanges.begin(peer, 2), Seen::New);
        assert_eq!(exchanges.begin(peer, 3), Seen::New);
        // The oldest went when the third came.
        assert_eq!(exchanges.begin(peer, 1), Seen::New);
    }
}
