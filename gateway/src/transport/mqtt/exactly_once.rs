//! QoS 2 across a reconnect. A QoS 2 publish is ingested once, when the broker first takes
//! it (its PUBREC follows); if that PUBREC is lost with the connection, the device resends
//! the PUBLISH with DUP set in its next connection, and rmqtt, which keeps the packet ids
//! awaiting PUBREL with the connection and not with the session, would take it again. So the
//! gate remembers, with the session (per client id), the QoS 2 publishes it took: a DUP
//! resend of one (same packet id, same topic and payload) is acknowledged, not ingested
//! again, and not relayed again.
//!
//! No hook tells of a PUBREL, so a packet id is remembered until the session ends, a clean
//! start replaces it, or newer QoS 2 publishes push it out: a device has at most its receive
//! maximum (`mqtt.max_inflight`) of them unreleased, and the gate keeps four times that many
//! per session. A packet id used again for a new message comes first without DUP, and
//! replaces what was remembered under it. All of it is in memory, like the sessions.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;

use rmqtt::types::Publish;

pub struct Receipts {
    per_session: usize,
    taken: Mutex<HashMap<String, VecDeque<(u16, u64)>>>,
    /// Keyed per process, so a device cannot aim at a digest.
    hasher: std::collections::hash_map::RandomState,
}

impl Receipts {
    pub fn new(max_inflight: u16) -> Receipts {
        Receipts {
            per_session: usize::from(max_inflight).max(1) * 4,
            taken: Mutex::default(),
            hasher: Default::default(),
        }
    }

    /// Whether `publish` is the DUP resend of a QoS 2 publish this session already took.
    pub fn is_resend(&self, client_id: &str, publish: &Publish) -> bool {
        let Some(packet_id) = qos2_resend_id(publish) else { return false };
        let digest = self.digest(publish);
        let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        taken.get(client_id).is_some_and(|ids| ids.contains(&(packet_id, digest)))
    }

    /// `publish` was taken: remembered if it is QoS 2.
    pub fn took(&self, client_id: &str, publish: &Publish) {
        let Some(packet_id) = publish.packet_id.filter(|_| publish.qos == rmqtt::types::QoS::ExactlyOnce)
        else {
            return;
        };
        let entry = (packet_id.get(), self.digest(publish));
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let ids = taken.entry(client_id.to_owned()).or_default();
        ids.retain(|(id, _)| *id != entry.0);
        ids.push_back(entry);
        while ids.len() > self.per_session {
            ids.pop_front();
        }
    }

    /// The session of `client_id` ended or started afresh.
    pub fn forget(&self, client_id: &str) {
        self.taken.lock().unwrap_or_else(|e| e.into_inner()).remove(client_id);
    }

    fn digest(&self, publish: &Publish) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        publish.topic.as_bytes().hash(&mut hasher);
        publish.payload.as_ref().hash(&mut hasher);
        hasher.finish()
    }
}

fn qos2_resend_id(publish: &Publish) -> Option<u16> {
    let resend = publish.dup && publish.qos == rmqtt::types::QoS::ExactlyOnce;
    publish.packet_id.filter(|_| resend).map(|id| id.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmqtt::types::{CodecPublish, QoS};

    fn publish(packet_id: u16, dup: bool, payload: &'static [u8]) -> Publish {
        Publish::from(CodecPublish {
            dup,
            retain: false,
            qos: QoS::ExactlyOnce,
            topic: "datasets/counts".into(),
            packet_id: std::num::NonZeroU16::new(packet_id),
            payload: payload.into(),
            properties: None,
        })
    }

    #[test]
    fn a_resend_is_known_by_its_packet_id_and_content_within_a_bound() {
        let receipts = Receipts::new(2);
        receipts.took("c", &publish(1, false, b"one"));
        assert!(receipts.is_resend("c", &publish(1, true, b"one")));
        assert!(!receipts.is_resend("c", &publish(1, false, b"one")), "without DUP it is a new message");
        assert!(!receipts.is_resend("c", &publish(1, true, b"other")), "another message under the id");
        assert!(!receipts.is_resend("d", &publish(1, true, b"one")), "another session");
        // The id carries a new message: the old one is forgotten.
        receipts.took("c", &publish(1, false, b"two"));
        assert!(!receipts.is_resend("c", &publish(1, true, b"one")));
        // Four times the receive maximum are kept; older ones go.
        for id in 2..=9 {
            receipts.took("c", &publish(id, false, b"x"));
        }
        assert!(!receipts.is_resend("c", &publish(1, true, b"two")));
        assert!(receipts.is_resend("c", &publish(2, true, b"x")));
        receipts.forget("c");
        assert!(!receipts.is_resend("c", &publish(9, true, b"x")));
    }
}
