//! What the CoAP listener remembers between datagrams: requests already seen (RFC 7252
//! §4.5: a sender retransmits a CON request until it is acknowledged, and a duplicate must be
//! answered with the same reply and never handled twice) for EXCHANGE_LIFETIME, and the
//! separate responses still waiting for the client's ACK.
//!
//! The memory is bounded three ways: requests remembered in all, the bytes they hold (each
//! answer plus a fixed cost per request), and requests per endpoint, so that one sender
//! cannot push everyone else's out. Beyond a bound the oldest go first (for an endpoint
//! over its share, its own oldest). Only answers whose request changed something need
//! keeping: the listener forgets a refusal or a read as soon as it is answered (`forget`),
//! since handling a duplicate of it again gives the same answer and does nothing twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// RFC 7252 §4.8.2, with its default transmission parameters.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);

/// What one remembered request costs besides its answer: its entries in the three maps
/// (the endpoint, the message id, the age order) with their allocation overhead.
pub const ENTRY_BYTES: usize = 160;

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

/// How much the cache may hold.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeLimits {
    /// Requests remembered in all.
    pub entries: usize,
    /// Bytes of answers, with `ENTRY_BYTES` for each request.
    pub bytes: usize,
    /// Requests remembered for one endpoint (address and port).
    pub per_endpoint: usize,
}

pub struct Exchanges {
    limits: ExchangeLimits,
    seen: Mutex<Cache>,
    waiting: Mutex<HashMap<Key, oneshot::Sender<()>>>,
}

struct Entry {
    /// Its place in `Cache::by_age`.
    seq: u64,
    reply: Option<Vec<u8>>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Entry>,
    /// Oldest first: when each request came, by sequence number.
    by_age: BTreeMap<u64, (Key, Instant)>,
    /// Each endpoint's message ids, oldest first.
    by_endpoint: HashMap<SocketAddr, VecDeque<u16>>,
    bytes: usize,
    next_seq: u64,
}

impl Exchanges {
    pub fn new(limits: ExchangeLimits) -> Exchanges {
        let limits = ExchangeLimits {
            entries: limits.entries.max(1),
            bytes: limits.bytes.max(ENTRY_BYTES),
            per_endpoint: limits.per_endpoint.max(1),
        };
        Exchanges { limits, seen: Mutex::default(), waiting: Mutex::default() }
    }

    pub fn begin(&self, peer: SocketAddr, message_id: u16) -> Seen {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let key = (peer, message_id);
        match seen.entries.get(&key) {
            Some(Entry { reply: Some(reply), .. }) => return Seen::Answered(reply.clone()),
            Some(Entry { reply: None, .. }) => return Seen::InProgress,
            None => {}
        }
        seen.expire(now);
        let evicted = seen.make_room(peer, ENTRY_BYTES, &self.limits);
        count_evicted(evicted);
        seen.insert(key, now);
        Seen::New
    }

    /// The reply a duplicate of this request gets from now on.
    pub fn answer(&self, peer: SocketAddr, message_id: u16, reply: Vec<u8>) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (peer, message_id);
        let Some(entry) = seen.entries.get_mut(&key) else { return };
        let before = entry.reply.as_ref().map_or(0, Vec::len);
        let added = reply.len();
        entry.reply = Some(reply);
        seen.bytes = seen.bytes.saturating_sub(before) + added;
        // Older requests make way for this answer; if it alone is over the bound, it goes.
        let mut evicted = 0;
        while seen.bytes > self.limits.bytes {
            let Some(oldest) = seen.by_age.first_key_value().map(|(_, (k, _))| *k) else { break };
            seen.remove(oldest);
            evicted += 1;
            if oldest == key {
                break;
            }
        }
        count_evicted(evicted);
    }

    /// Forgets a request whose handling changed nothing (a refusal, a read): a duplicate is
    /// handled again and answered alike.
    pub fn forget(&self, peer: SocketAddr, message_id: u16) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).remove((peer, message_id));
    }

    /// Requests remembered and the bytes counted for them.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        (seen.entries.len(), seen.bytes)
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

impl Cache {
    /// Forgets requests older than EXCHANGE_LIFETIME: a sender never repeats one after that.
    fn expire(&mut self, now: Instant) {
        while let Some(&(key, at)) = self.by_age.first_key_value().map(|(_, v)| v) {
            if now.duration_since(at) < EXCHANGE_LIFETIME {
                break;
            }
            self.remove(key);
        }
    }

    /// Evicts the oldest requests until one more costing `cost` from `peer` fits; how many went.
    fn make_room(&mut self, peer: SocketAddr, cost: usize, limits: &ExchangeLimits) -> u64 {
        let mut evicted = 0;
        while let Some(&oldest) = self
            .by_endpoint
            .get(&peer)
            .filter(|ids| ids.len() >= limits.per_endpoint)
            .and_then(|ids| ids.front())
        {
            self.remove((peer, oldest));
            evicted += 1;
        }
        while self.entries.len() >= limits.entries || self.bytes + cost > limits.bytes {
            let Some(oldest) = self.by_age.first_key_value().map(|(_, (k, _))| *k) else { break };
            self.remove(oldest);
            evicted += 1;
        }
        evicted
    }

    fn insert(&mut self, key: Key, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(key, Entry { seq, reply: None });
        self.by_age.insert(seq, (key, now));
        self.by_endpoint.entry(key.0).or_default().push_back(key.1);
        self.bytes += ENTRY_BYTES;
    }

    fn remove(&mut self, key: Key) {
        let Some(entry) = self.entries.remove(&key) else { return };
        self.by_age.remove(&entry.seq);
        self.bytes = self.bytes.saturating_sub(ENTRY_BYTES + entry.reply.as_ref().map_or(0, Vec::len));
        if let Some(ids) = self.by_endpoint.get_mut(&key.0) {
            // Nearly always the front: requests mostly go oldest first.
            if let Some(at) = ids.iter().position(|&id| id == key.1) {
                ids.remove(at);
            }
            if ids.is_empty() {
                self.by_endpoint.remove(&key.0);
            }
        }
    }
}

fn count_evicted(evicted: u64) {
    if evicted > 0 {
        // Remembered for less than EXCHANGE_LIFETIME: a late duplicate of one would be handled
        // again.
        metrics::counter!("odf_coap_exchanges_evicted_total").increment(evicted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(entries: usize, bytes: usize, per_endpoint: usize) -> ExchangeLimits {
        ExchangeLimits { entries, bytes, per_endpoint }
    }

    #[test]
    fn a_duplicate_gets_the_first_reply_and_the_count_is_bounded() {
        let exchanges = Exchanges::new(limits(2, 1 << 20, 100));
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

    #[test]
    fn answers_are_bounded_by_bytes_oldest_first() {
        let exchanges = Exchanges::new(limits(1000, 4 * (ENTRY_BYTES + 100), 1000));
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        for id in 0..10u16 {
            assert_eq!(exchanges.begin(peer, id), Seen::New);
            exchanges.answer(peer, id, vec![id as u8; 100]);
            let (entries, bytes) = exchanges.held();
            assert!(bytes <= 4 * (ENTRY_BYTES + 100), "{bytes}");
            assert!(entries <= 4);
        }
        assert_eq!(exchanges.begin(peer, 9), Seen::Answered(vec![9; 100]), "the newest stays");
        assert_eq!(exchanges.begin(peer, 0), Seen::New, "the oldest went");
        // An answer bigger than the whole bound is not kept, and takes nothing else with it
        // beyond what it needed.
        let big = Exchanges::new(limits(1000, ENTRY_BYTES + 10, 1000));
        assert_eq!(big.begin(peer, 1), Seen::New);
        big.answer(peer, 1, vec![0; 100]);
        assert_eq!(big.held(), (0, 0));
    }

    #[test]
    fn one_endpoint_cannot_push_out_another() {
        let exchanges = Exchanges::new(limits(1000, 1 << 20, 3));
        let quiet: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let loud: SocketAddr = "127.0.0.1:2".parse().unwrap();
        exchanges.begin(quiet, 7);
        exchanges.answer(quiet, 7, vec![7]);
        for id in 0..1000 {
            exchanges.begin(loud, id);
            exchanges.answer(loud, id, vec![0; 10]);
        }
        assert_eq!(exchanges.begin(quiet, 7), Seen::Answered(vec![7]));
        assert_eq!(exchanges.held().0, 4, "the quiet one and the loud one's last three");
        assert_eq!(exchanges.begin(loud, 999), Seen::Answered(vec![0; 10]));
        assert_eq!(exchanges.begin(loud, 996), Seen::New);
        exchanges.forget(loud, 996);
        exchanges.forget(quiet, 7);
        assert_eq!(exchanges.held(), (2, 2 * (ENTRY_BYTES + 10)));
    }
}
