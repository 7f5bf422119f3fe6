//! CoAP (RFC 7252, coap-lite's codec on a tokio UDP socket): confirmable POSTs, retransmitted
//! with exponential back-off until acknowledged; a piggybacked answer, or an empty ACK and
//! then a separate CON answer (which is acknowledged). One socket per device.

use std::net::SocketAddr;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{Message, Outcome, Target, grace_after};
use crate::gps::Vendor;

/// RFC 7252's transmission parameters.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_RETRANSMIT: u32 = 4;

pub struct CoapSender {
    address: String,
    path: String,
    key: Option<String>,
    timeout: Duration,
    socket: Option<(UdpSocket, SocketAddr)>,
    message_id: u16,
    token: u32,
    /// The last request as sent, with its message id and token, for a retransmission.
    last: Option<(Vec<u8>, u16, Vec<u8>)>,
}

impl CoapSender {
    pub fn new(target: &Target, vendor: Vendor, device: &str) -> CoapSender {
        // Message ids start somewhere of the device's own, so two devices' ids rarely meet.
        let start = device.bytes().fold(0u16, |h, b| h.wrapping_mul(31).wrapping_add(b as u16));
        CoapSender {
            address: format!("{}:{}", target.host, target.coap_port),
            path: target.path(vendor, device),
            key: target.token.clone(),
            timeout: target.timeout,
            socket: None,
            message_id: start,
            token: u32::from(start) << 16,
            last: None,
        }
    }

    pub async fn send(&mut self, message: &Message, stop: &CancellationToken) -> Outcome {
        self.message_id = self.message_id.wrapping_add(1);
        self.token = self.token.wrapping_add(1);
        let token = self.token.to_be_bytes().to_vec();
        let request = match self.request(message, self.message_id, &token) {
            Ok(bytes) => bytes,
            Err(e) => return Outcome::Refused(e),
        };
        self.last = Some((request.clone(), self.message_id, token.clone()));
        self.exchange(&request, self.message_id, &token, stop).await
    }

    /// The last request again, byte for byte (same message id): the receiver must answer
    /// from its memory of the exchange and not take the payload twice.
    pub async fn retransmit_last(&mut self, stop: &CancellationToken) -> Outcome {
        match self.last.clone() {
            Some((request, id, token)) => self.exchange(&request, id, &token, stop).await,
            None => Outcome::Failed("nothing to retransmit".into()),
        }
    }

    fn request(&self, message: &Message, id: u16, token: &[u8]) -> Result<Vec<u8>, String> {
        let mut packet = Packet::new();
        packet.header.set_type(MessageType::Confirmable);
        packet.header.code = MessageClass::Request(RequestType::Post);
        packet.header.message_id = id;
        packet.set_token(token.to_vec());
        for segment in self.path.trim_start_matches('/').split('/') {
            packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        let format: u16 = match message.content_type {
            "application/json" => 50,
            "application/cbor" => 60,
            "application/senml+json" => 110,
            "application/senml+cbor" => 112,
            _ => 0,
        };
        if format != 0 {
            packet.add_option(CoapOption::ContentFormat, minimal_bytes(format.into()));
        }
        if let Some(key) = &self.key {
            packet.add_option(CoapOption::UriQuery, format!("key={key}").into_bytes());
        }
        packet.payload = message.payload.clone();
        packet.to_bytes().map_err(|e| format!("CoAP request: {e:?}"))
    }

    async fn socket(&mut self) -> Result<&(UdpSocket, SocketAddr), String> {
        if self.socket.is_none() {
            let peer = tokio::net::lookup_host(&self.address)
                .await
                .map_err(|e| format!("resolve {}: {e}", self.address))?
                .next()
                .ok_or_else(|| format!("{} has no address", self.address))?;
            let local = if peer.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let socket = UdpSocket::bind(local).await.map_err(|e| format!("UDP socket: {e}"))?;
            self.socket = Some((socket, peer));
        }
        self.socket.as_ref().ok_or_else(|| "no socket".to_owned())
    }

    async fn exchange(&mut self, request: &[u8], id: u16, token: &[u8], stop: &CancellationToken) -> Outcome {
        let timeout = self.timeout;
        let (socket, peer) = match self.socket().await {
            Ok((socket, peer)) => (socket, *peer),
            Err(e) => return Outcome::Failed(e),
        };
        let deadline = tokio::time::sleep(timeout);
        let grace = grace_after(stop);
        tokio::pin!(deadline, grace);
        // The first wait is ACK_TIMEOUT times a random factor in [1, 1.5), then doubles.
        let mut wait = ACK_TIMEOUT.mul_f64(1.0 + f64::from(id % 128) / 256.0);
        let mut retransmissions = 0;
        let mut separate = false;
        let mut buffer = vec![0u8; 64 * 1024];
        if let Err(e) = socket.send_to(request, peer).await {
            return Outcome::Failed(format!("send to {peer}: {e}"));
        }
        loop {
            let next_try = tokio::time::sleep(if separate { timeout } else { wait });
            let received = tokio::select! {
                received = socket.recv_from(&mut buffer) => received,
                _ = next_try => {
                    if separate || retransmissions == MAX_RETRANSMIT {
                        return Outcome::Failed(format!("no answer from {peer} after {retransmissions} retransmissions"));
                    }
                    retransmissions += 1;
                    wait *= 2;
                    let _ = socket.send_to(request, peer).await;
                    continue;
                }
                _ = &mut deadline => return Outcome::Failed(format!("no answer in {timeout:?}")),
                _ = &mut grace => return Outcome::Failed("stopped before the answer".into()),
            };
            let Ok((n, from)) = received else { continue };
            let Ok(packet) = Packet::from_bytes(&buffer[..n]) else { continue };
            if from != peer {
                continue;
            }
            match packet.header.get_type() {
                MessageType::Acknowledgement if packet.header.message_id == id => {
                    if packet.header.code == MessageClass::Empty {
                        separate = true;
                    } else if packet.get_token() == token {
                        return outcome(&packet);
                    }
                }
                MessageType::Reset if packet.header.message_id == id => {
                    return Outcome::Failed(format!("{peer} reset the exchange"));
                }
                kind @ (MessageType::Confirmable | MessageType::NonConfirmable) => {
                    if kind == MessageType::Confirmable {
                        // A separate answer, ours or a late one of an earlier request: ACK it.
                        let _ = socket.send_to(&empty_ack(packet.header.message_id), peer).await;
                    }
                    if packet.get_token() == token {
                        return outcome(&packet);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The outcome a CoAP response code means.
fn outcome(response: &Packet) -> Outcome {
    let code = u8::from(response.header.code);
    let (class, detail) = (code >> 5, code & 0x1f);
    let diagnostic = String::from_utf8_lossy(&response.payload).chars().take(300).collect::<String>();
    match (class, detail) {
        (2, _) => Outcome::Acked,
        (5, 3) => {
            let max_age = response
                .get_option(CoapOption::MaxAge)
                .and_then(|values| values.front())
                .map(|bytes| bytes.iter().fold(0u64, |n, b| n << 8 | u64::from(*b)))
                .unwrap_or(1);
            Outcome::Busy(Duration::from_secs(max_age.clamp(1, 10)))
        }
        (4, _) => Outcome::Refused(format!("{class}.{detail:02} {diagnostic}")),
        _ => Outcome::Failed(format!("{class}.{detail:02} {diagnostic}")),
    }
}

fn empty_ack(id: u16) -> Vec<u8> {
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Acknowledgement);
    packet.header.code = MessageClass::Empty;
    packet.header.message_id = id;
    packet.to_bytes().unwrap_or_default()
}

/// An unsigned option value in as few bytes as it takes (RFC 7252 §3.2).
fn minimal_bytes(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}
