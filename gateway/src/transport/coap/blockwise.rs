//! Block-wise transfer of request bodies (RFC 7959 Block1): a payload bigger than a datagram
//! arrives as numbered blocks, each its own request; the listener keeps the blocks of each
//! transfer (by sender, resource and Content-Format) until the last, answering 2.31 Continue
//! to the others. Memory is bounded: a transfer is at most `max_body` bytes (beyond, 4.13
//! with Size1), all transfers together at most `max_total`, and one left unfinished for
//! `timeout` is dropped (a late block then gets 4.08 Request Entity Incomplete).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::message::Block;

/// A transfer: who sends, to which resource, in which format.
pub type Key = (SocketAddr, String, Option<u16>);

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
}

struct Transfer {
    data: Vec<u8>,
    next: u32,
    touched: Instant,
}

pub struct Assemblies {
    pub max_body: usize,
    max_total: usize,
    timeout: Duration,
    transfers: Mutex<HashMap<Key, Transfer>>,
}

impl Assemblies {
    pub fn new(max_body: usize, max_total: usize, timeout: Duration) -> Assemblies {
        Assemblies { max_body, max_total, timeout, transfers: Mutex::default() }
    }

    /// Takes one block; `size1` is the size the sender announced for the whole body.
    pub fn take(&self, key: Key, block: Block, payload: &[u8], size1: Option<u32>) -> Step {
        let mut transfers = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        transfers.retain(|_, t| now.duration_since(t.touched) < self.timeout);
        if size1.is_some_and(|s| s as usize > self.max_body) {
            transfers.remove(&key);
            return Step::TooLarge;
        }
        if block.more && payload.len() != block.size() {
            transfers.remove(&key);
            return Step::Incomplete(format!(
                "block {} holds {} bytes, not its size {}",
                block.num,
                payload.len(),
                block.size()
            ));
        }
        if block.num == 0 {
            transfers.insert(key.clone(), Transfer { data: Vec::new(), next: 0, touched: now });
        }
        let in_flight: usize = transfers.values().map(|t| t.data.len()).sum();
        let Some(transfer) = transfers.get_mut(&key) else {
            return Step::Incomplete(format!(
                "block {} of a transfer that was not begun (or was dropped after {} s)",
                block.num,
                self.timeout.as_secs()
            ));
        };
        // The same block again (its 2.31 was lost): take it in once.
        if block.num + 1 == transfer.next && block.more {
            transfer.touched = now;
            return Step::Continue(block);
        }
        if block.num != transfer.next {
            let expected = transfer.next;
            transfers.remove(&key);
            return Step::Incomplete(format!(
                "block {} arrived where block {expected} was expected",
                block.num
            ));
        }
        // Every block but the last has the same size, so block n starts at n * size.
        let offset = block.num as usize * block.size();
        if offset != transfer.data.len() || offset + payload.len() > self.max_body {
            let too_large = offset + payload.len() > self.max_body;
            transfers.remove(&key);
            return if too_large {
                Step::TooLarge
            } else {
                Step::Incomplete("the block size changed within the transfer".into())
            };
        }
        if in_flight + payload.len() > self.max_total {
            transfers.remove(&key);
            return Step::Busy;
        }
        transfer.data.extend_from_slice(payload);
        transfer.next += 1;
        transfer.touched = now;
        if block.more {
            return Step::Continue(block);
        }
        let done = transfers.remove(&key).map(|t| t.data).unwrap_or_default();
        Step::Complete(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        ("127.0.0.1:5683".parse().unwrap(), "/datasets/gps".into(), Some(50))
    }

    fn block(num: u32, more: bool) -> Block {
        Block { num, more, szx: 0 }
    }

    #[test]
    fn blocks_in_order_make_the_body_and_gaps_are_incomplete() {
        let a = Assemblies::new(64, 1024, Duration::from_secs(60));
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
        assert!(matches!(a.take(key(), block(3, false), &[3], None), Step::Incomplete(_)));
        assert_eq!(a.take(key(), block(0, true), &[1; 16], None), Step::Continue(block(0, true)));
        assert!(matches!(a.take(key(), block(2, true), &[1; 16], None), Step::Incomplete(_)));
    }

    #[test]
    fn limits_are_kept() {
        let a = Assemblies::new(32, 40, Duration::from_secs(60));
        assert_eq!(a.take(key(), block(0, true), &[0; 16], Some(100)), Step::TooLarge);
        a.take(key(), block(0, true), &[0; 16], None);
        a.take(key(), block(1, true), &[0; 16], None);
        assert_eq!(a.take(key(), block(2, false), &[0; 1], None), Step::TooLarge);
        let other: Key = ("127.0.0.1:1".parse().unwrap(), "/x".into(), None);
        a.take(key(), block(0, true), &[0; 16], None);
        a.take(key(), block(1, true), &[0; 16], None);
        assert_eq!(a.take(other, block(0, true), &[0; 16], None), Step::Busy);
    }
}
