//! Block-wise transfer of request bodies (RFC 7959 Block1): a payload bigger than a datagram
//! arrives as numbered blocks, each its own request; the listener keeps the blocks of each
//! transfer (by sender and request: path, query, Content-Format) until the last, answering
//! 2.31 Continue to the others. Only a request already allowed to write gets here.
//!
//! Memory is bounded: a transfer is at most `max_body` bytes (beyond, 4.13 with Size1); all
//! transfers together hold at most `max_total` bytes, counting what each really holds (the
//! memory reserved for its body and a fixed cost for its key and bookkeeping: the request's
//! options are not kept, only a digest of them); one endpoint has at most `per_endpoint`
//! transfers at once (5.03 beyond either); one left unfinished for `timeout` is dropped (a
//! late block then gets 4.08 Request Entity Incomplete).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, Packet};
use sha2::{Digest, Sha256};

use super::message::Block;

/// What a transfer costs besides its body: its key, its entry in the map, its counters.
pub const TRANSFER_BYTES: usize = 128;

/// A transfer: who sends, and a digest of the request it sends (path, query, format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    peer: SocketAddr,
    request: [u8; 32],
}

impl Key {
    /// The transfer a block of `request` from `peer` belongs to: the blocks of one body
    /// repeat the same Uri-Path, Uri-Query and Content-Format.
    pub fn of(peer: SocketAddr, request: &Packet) -> Key {
        let mut digest = Sha256::new();
        for option in [CoapOption::UriPath, CoapOption::UriQuery, CoapOption::ContentFormat] {
            digest.update(u16::from(option).to_be_bytes());
            for value in request.get_option(option).into_iter().flatten() {
                digest.update((value.len() as u32).to_be_bytes());
                digest.update(value);
            }
        }
        Key { peer, request: digest.finalize().into() }
    }
}

/// What a block means for its transfer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// More to come: answer 2.31 with this Block1.
    Continue(Block),
    /// The last block: the whole body.
    Complete(Vec<u8>),
    /// A block out of order, or of a transfer not begun or dropped (4.08).
    Incomplete(String),
    /// Over `max_body` (4.13 with Size1 = the limit).
    TooLarge,
    /// Too many bytes in transfers at once (5.03).
    Busy,
    /// Too many transfers from this endpoint at once (5.03).
    EndpointBusy,
}

/// How much block-wise transfers may hold.
#[derive(Debug, Clone, Copy)]
pub struct TransferLimits {
    /// One body, at most.
    pub max_body: usize,
    /// Every transfer together, bodies and `TRANSFER_BYTES` each.
    pub max_total: usize,
    /// Transfers at once from one endpoint (address and port).
    pub per_endpoint: usize,
    /// An unfinished transfer untouched this long is dropped.
    pub timeout: Duration,
}

struct Transfer {
    data: Vec<u8>,
    next: u32,
    touched: Instant,
}

impl Transfer {
    /// The memory it holds, as counted against `max_total`.
    fn held(&self) -> usize {
        TRANSFER_BYTES + self.data.capacity()
    }
}

pub struct Assemblies {
    pub limits: TransferLimits,
    state: Mutex<State>,
}

struct State {
    transfers: HashMap<Key, Transfer>,
    per_endpoint: HashMap<SocketAddr, usize>,
    /// The sum of `Transfer::held`.
    held: usize,
    swept: Instant,
}

impl Assemblies {
    pub fn new(limits: TransferLimits) -> Assemblies {
        let state =
            State { transfers: HashMap::new(), per_endpoint: HashMap::new(), held: 0, swept: Instant::now() };
        Assemblies { limits, state: Mutex::new(state) }
    }

    /// Takes one block; `size1` is the size the sender announced for the whole body.
    pub fn take(&self, key: Key, block: Block, payload: &[u8], size1: Option<u32>) -> Step {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        let now = Instant::now();
        state.sweep(now, self.limits.timeout);
        if size1.is_some_and(|s| s as usize > self.limits.max_body) {
            state.remove(&key);
            return Step::TooLarge;
        }
        if block.more && payload.len() != block.size() {
            state.remove(&key);
            return Step::Incomplete(format!(
                "block {} holds {} bytes, not its size {}",
                block.num,
                payload.len(),
                block.size()
            ));
        }
        if block.num == 0 {
            // A transfer begun again replaces the old one.
            state.remove(&key);
            if state.per_endpoint.get(&key.peer).is_some_and(|&n| n >= self.limits.per_endpoint) {
                return Step::EndpointBusy;
            }
            state.insert(key, Transfer { data: Vec::new(), next: 0, touched: now });
        }
        let Some(transfer) = state.transfers.get_mut(&key) else {
            return Step::Incomplete(format!(
                "block {} of a transfer that was not begun (or was dropped after {} s)",
                block.num,
                self.limits.timeout.as_secs()
            ));
        };
        // The same block again (its 2.31 was lost): take it in once.
        if block.num + 1 == transfer.next && block.more {
            transfer.touched = now;
            return Step::Continue(block);
        }
        if block.num != transfer.next {
            let expected = transfer.next;
            state.remove(&key);
            return Step::Incomplete(format!(
                "block {} arrived where block {expected} was expected",
                block.num
            ));
        }
        // Every block but the last has the same size, so block n starts at n * size.
        let offset = block.num as usize * block.size();
        if offset != transfer.data.len() || offset + payload.len() > self.limits.max_body {
            let too_large = offset + payload.len() > self.limits.max_body;
            state.remove(&key);
            return if too_large {
                Step::TooLarge
            } else {
                Step::Incomplete("the block size changed within the transfer".into())
            };
        }
        // What the body will reserve once this block is in: room to double, as a Vec grows,
        // within the limit.
        let needed = offset + payload.len();
        let reserved =
            needed.next_power_of_two().min(self.limits.max_body).max(needed).max(transfer.data.capacity());
        let before = transfer.held();
        if state.held.saturating_sub(before) + TRANSFER_BYTES + reserved > self.limits.max_total {
            state.remove(&key);
            return Step::Busy;
        }
        transfer.data.reserve_exact(reserved - transfer.data.len());
        transfer.data.extend_from_slice(payload);
        transfer.next += 1;
        transfer.touched = now;
        state.held = state.held.saturating_sub(before) + transfer.held();
        if block.more {
            return Step::Continue(block);
        }
        let done = state.remove(&key).map(|t| t.data).unwrap_or_default();
        Step::Complete(done)
    }

    /// Transfers under way and the bytes counted for them.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.transfers.len(), state.held)
    }
}

impl State {
    /// Drops transfers left unfinished for `timeout`; a full pass at most once a second, so
    /// that a flood of blocks does not walk every transfer for each.
    fn sweep(&mut self, now: Instant, timeout: Duration) {
        if now.duration_since(self.swept) < Duration::from_secs(1) {
            return;
        }
        self.swept = now;
        let stale: Vec<Key> = self
            .transfers
            .iter()
            .filter(|(_, t)| now.duration_since(t.touched) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.remove(&key);
        }
    }

    fn insert(&mut self, key: Key, transfer: Transfer) {
        self.held += transfer.held();
        *self.per_endpoint.entry(key.peer).or_default() += 1;
        self.transfers.insert(key, transfer);
    }

    fn remove(&mut self, key: &Key) -> Option<Transfer> {
        let transfer = self.transfers.remove(key)?;
        self.held = self.held.saturating_sub(transfer.held());
        if let Some(n) = self.per_endpoint.get_mut(&key.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_endpoint.remove(&key.peer);
            }
        }
        Some(transfer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(peer: &str, path: &str) -> Key {
        let mut packet = Packet::new();
        packet.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
        Key::of(peer.parse().unwrap(), &packet)
    }

    fn key() -> Key {
        key_of("127.0.0.1:5683", "gps")
    }

    fn block(num: u32, more: bool) -> Block {
        Block { num, more, szx: 0 }
    }

    fn limits(max_body: usize, max_total: usize, per_endpoint: usize) -> TransferLimits {
        TransferLimits { max_body, max_total, per_endpoint, timeout: Duration::from_secs(60) }
    }

    #[test]
    fn blocks_in_order_make_the_body_and_gaps_are_incomplete() {
        let a = Assemblies::new(limits(64, 4096, 4));
        assert_eq!(a.take(key(), block(0, true), &[1; 16], None), Step::Continue(block(0, true)));
        assert_eq!(
            a.take(key(), block(0, true), &[1; 16], None),
            Step::Continue(block(0, true)),
            "a retransmission"
        );
        assert_eq!(a.take(key(), block(1, true), &[2; 16], None), Step::Continue(block(1, true)));
        match a.take(key(), block(2, false), &[3; 5], None) {
            Step::Complete(body) => assert_eq!(body.len(), 37),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.held(), (0, 0));
        assert!(matches!(a.take(key(), block(3, false), &[3], None), Step::Incomplete(_)));
        assert_eq!(a.take(key(), block(0, true), &[1; 16], None), Step::Continue(block(0, true)));
        assert!(matches!(a.take(key(), block(2, true), &[1; 16], None), Step::Incomplete(_)));
        assert_eq!(a.held(), (0, 0));
    }

    #[test]
    fn limits_are_kept() {
        let a = Assemblies::new(limits(32, 2 * TRANSFER_BYTES + 40, 4));
        assert_eq!(a.take(key(), block(0, true), &[0; 16], Some(100)), Step::TooLarge);
        a.take(key(), block(0, true), &[0; 16], None);
        a.take(key(), block(1, true), &[0; 16], None);
        assert_eq!(a.take(key(), block(2, false), &[0; 1], None), Step::TooLarge);
        let other = key_of("127.0.0.1:1", "x");
        a.take(key(), block(0, true), &[0; 16], None);
        a.take(key(), block(1, true), &[0; 16], None);
        assert_eq!(a.take(other, block(0, true), &[0; 16], None), Step::Busy);
        let (transfers, held) = a.held();
        assert!(transfers == 1 && held <= 2 * TRANSFER_BYTES + 40, "{transfers} {held}");
    }

    #[test]
    fn what_transfers_hold_stays_within_the_total() {
        let a = Assemblies::new(limits(64 * 1024, 256 * 1024, 8));
        let taken = (0..512)
            .filter(|i| {
                let key = key_of(&format!("127.0.0.1:{}", 1000 + i / 8), &format!("k{i}"));
                a.take(key, Block { num: 0, more: true, szx: 6 }, &[0; 1024], None) != Step::Busy
            })
            .count();
        assert_eq!(taken, 256 * 1024 / (TRANSFER_BYTES + 1024));
        assert!(a.held().1 <= 256 * 1024);
    }

    #[test]
    fn an_endpoint_has_few_transfers_and_the_request_is_not_kept() {
        let a = Assemblies::new(limits(1024, 1 << 20, 2));
        let long_query = "q".repeat(250);
        let mut keys = Vec::new();
        for i in 0..3 {
            let mut packet = Packet::new();
            packet.add_option(CoapOption::UriPath, b"gps".to_vec());
            for _ in 0..100 {
                packet.add_option(CoapOption::UriQuery, format!("{i}{long_query}").into_bytes());
            }
            keys.push(Key::of("127.0.0.1:9".parse().unwrap(), &packet));
        }
        assert_eq!(a.take(keys[0], block(0, true), &[0; 16], None), Step::Continue(block(0, true)));
        assert_eq!(a.take(keys[1], block(0, true), &[0; 16], None), Step::Continue(block(0, true)));
        assert_eq!(a.take(keys[2], block(0, true), &[0; 16], None), Step::EndpointBusy);
        // Another endpoint is not affected, and the same transfer begun again replaces itself.
        assert!(matches!(a.take(key(), block(0, true), &[0; 16], None), Step::Continue(_)));
        assert!(matches!(a.take(keys[1], block(0, true), &[0; 16], None), Step::Continue(_)));
        let (transfers, held) = a.held();
        assert_eq!(transfers, 3);
        assert!(held < 3 * (TRANSFER_BYTES + 64), "25 KB of query each is not held: {held}");
    }
}
