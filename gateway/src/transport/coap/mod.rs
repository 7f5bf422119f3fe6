//! CoAP (RFC 7252) on UDP for constrained devices: coap-lite's codec on tokio sockets, into
//! the same routes and pipeline as HTTP and MQTT.
//!
//! A CON request is answered with a piggybacked ACK once its payload is in the write-ahead
//! log; if that takes longer than `separate_after` (well inside the client's ACK timeout),
//! an empty ACK goes first and the answer follows as a separate CON response, retransmitted
//! until the client acknowledges it. A NON request gets a NON answer. A retransmitted
//! request (same sender and message id, within EXCHANGE_LIFETIME) is answered from
//! `exchanges` and never handled twice. A request is first refused for options it cannot
//! honour (`message`), then admitted or refused by `resource` (key, grant, resource, format,
//! preconditions) before anything of its body is kept; bodies bigger than a datagram then
//! arrive block-wise (`blockwise`), and `resource` answers the request itself. A datagram
//! that does not parse is dropped and counted (a CON one gets a RST), and never stops the
//! listener.

mod blockwise;
mod conditions;
mod exchanges;
mod message;
mod resource;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use self::blockwise::{Assemblies, Step, TransferLimits};
use self::exchanges::{ExchangeLimits, Exchanges, Seen};
use self::message::Block;
use self::resource::{Admission, Reply, Resources, Write};
use crate::access::AccessTable;
use crate::intake::Intake;
use crate::pipeline::Pipeline;
use crate::transport::stopping;

/// RFC 7252 §4.8: ACK_TIMEOUT and MAX_RETRANSMIT, for the separate responses we send.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_RETRANSMIT: u32 = 4;
/// The biggest datagram read (UDP's own limit).
const MAX_DATAGRAM: usize = 65_535;

#[derive(Debug, Clone)]
pub struct CoapOptions {
    pub listen: Vec<SocketAddr>,
    /// A body sent block-wise may be at most this big.
    pub max_body: usize,
    /// Bodies being assembled, all together, at most (with what each transfer holds).
    pub max_assembling: usize,
    /// Block-wise transfers at once from one endpoint.
    pub max_transfers_per_endpoint: usize,
    /// An empty ACK goes out if the answer is not ready by then.
    pub separate_after: Duration,
    /// Requests remembered for duplicate detection.
    pub max_exchanges: usize,
    /// Bytes of answers remembered for duplicate detection, all together.
    pub max_exchange_bytes: usize,
    /// Requests remembered for duplicate detection, per endpoint.
    pub max_exchanges_per_endpoint: usize,
}

/// Where the listeners are.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CoapAddresses {
    pub udp: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("coap: cannot listen on {addr}: {error}")]
pub struct CoapError {
    addr: SocketAddr,
    error: std::io::Error,
}

pub struct CoapServer {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub addresses: CoapAddresses,
}

/// What a request comes to before anything is awaited.
enum Decision {
    /// Answered at once: a refusal, a read, a block taken.
    Reply(Reply),
    /// A whole body to ingest, for a sender allowed to write it.
    Ingest { write: Write, path: String, body: Vec<u8> },
}

struct Listener {
    socket: UdpSocket,
    resources: Resources,
    exchanges: Exchanges,
    assemblies: Assemblies,
    separate_after: Duration,
    next_message_id: AtomicU16,
}

impl CoapServer {
    /// Binds every listener and serves until `shutdown` turns true.
    pub async fn start(
        options: &CoapOptions,
        intake: Arc<Intake>,
        pipeline: Arc<Pipeline>,
        access: Arc<AccessTable>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<CoapServer, CoapError> {
        let mut tasks = Vec::new();
        let mut addresses = CoapAddresses::default();
        for addr in &options.listen {
            let socket = UdpSocket::bind(addr).await.map_err(|error| CoapError { addr: *addr, error })?;
            let local = socket.local_addr().map_err(|error| CoapError { addr: *addr, error })?;
            addresses.udp.push(local.to_string());
            let listener = Arc::new(Listener {
                socket,
                resources: Resources {
                    intake: intake.clone(),
                    pipeline: pipeline.clone(),
                    access: access.clone(),
                },
                exchanges: Exchanges::new(ExchangeLimits {
                    entries: options.max_exchanges,
                    bytes: options.max_exchange_bytes,
                    per_endpoint: options.max_exchanges_per_endpoint,
                }),
                assemblies: Assemblies::new(TransferLimits {
                    max_body: options.max_body,
                    max_total: options.max_assembling,
                    per_endpoint: options.max_transfers_per_endpoint,
                    timeout: exchanges::EXCHANGE_LIFETIME,
                }),
                separate_after: options.separate_after,
                next_message_id: AtomicU16::new(rand_u16()),
            });
            tasks.push(tokio::spawn(listener.serve(shutdown.clone())));
        }
        Ok(CoapServer { tasks, addresses })
    }

    /// Waits for the listeners to stop (after the shutdown signal).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl Listener {
    async fn serve(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let stop = stopping(shutdown);
        tokio::pin!(stop);
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        loop {
            let received = tokio::select! {
                received = self.socket.recv_from(&mut buffer) => received,
                _ = &mut stop => break,
            };
            match received {
                Ok((n, peer)) => self.clone().datagram(peer, &buffer[..n]),
                // An ICMP error for an earlier send (the peer went away) and the like.
                Err(e) => tracing::debug!("coap: receive failed: {e}"),
            }
        }
    }

    fn datagram(self: Arc<Self>, peer: SocketAddr, bytes: &[u8]) {
        metrics::counter!("odf_coap_datagrams_total").increment(1);
        metrics::counter!("odf_coap_bytes_total").increment(bytes.len() as u64);
        let packet = match Packet::from_bytes(bytes) {
            Ok(packet) if packet.header.get_version() == 1 => packet,
            _ => {
                metrics::counter!("odf_coap_malformed_total").increment(1);
                // A CON message that cannot be processed is rejected with a RST (§4.2).
                if let Some((MessageType::Confirmable, id)) = message::header_of(bytes) {
                    self.send_packet(peer, &message::empty(MessageType::Reset, id));
                }
                return;
            }
        };
        let id = packet.header.message_id;
        match (packet.header.get_type(), packet.header.code) {
            (MessageType::Acknowledgement | MessageType::Reset, _) => self.exchanges.acknowledged(peer, id),
            // A "CoAP ping": an empty CON is answered with a RST (§4.3).
            (MessageType::Confirmable, MessageClass::Empty) => {
                self.send_packet(peer, &message::empty(MessageType::Reset, id))
            }
            (_, MessageClass::Request(_)) => self.request(peer, packet),
            (MessageType::Confirmable, _) => {
                metrics::counter!("odf_coap_malformed_total").increment(1);
                self.send_packet(peer, &message::empty(MessageType::Reset, id));
            }
            _ => metrics::counter!("odf_coap_malformed_total").increment(1),
        }
    }

    fn request(self: Arc<Self>, peer: SocketAddr, request: Packet) {
        let id = request.header.message_id;
        let confirmable = request.header.get_type() == MessageType::Confirmable;
        match self.exchanges.begin(peer, id) {
            Seen::Answered(reply) => {
                metrics::counter!("odf_coap_duplicates_total").increment(1);
                self.send(peer, &reply);
                return;
            }
            Seen::InProgress => {
                metrics::counter!("odf_coap_duplicates_total").increment(1);
                if confirmable {
                    self.send_packet(peer, &message::empty(MessageType::Acknowledgement, id));
                }
                return;
            }
            Seen::New => {}
        }
        let started = std::time::Instant::now();
        // Everything up to the write itself is decided here, in the receive loop: a refusal
        // or a read costs no task and nothing is kept for it.
        let (write, path, body) = match self.decide(peer, &request) {
            Decision::Reply(reply) => return self.finish(peer, &request, reply, started),
            Decision::Ingest { write, path, body } => (write, path, body),
        };
        tokio::spawn(async move {
            let answering = self.resources.ingest(peer, write, &path, body);
            tokio::pin!(answering);
            let reply = if confirmable {
                tokio::select! {
                    // The deadline first: with none (0), every answer is a separate one.
                    biased;
                    _ = std::future::ready(()), if self.separate_after.is_zero() => None,
                    reply = &mut answering => Some(reply),
                    _ = tokio::time::sleep(self.separate_after) => None,
                }
            } else {
                Some(answering.as_mut().await)
            };
            let Some(reply) = reply else {
                // Not ready in time: an empty ACK now, the answer as its own CON later.
                let ack = message::empty(MessageType::Acknowledgement, id);
                if let Ok(bytes) = ack.to_bytes() {
                    self.exchanges.answer(peer, id, bytes.clone());
                    self.send(peer, &bytes);
                }
                let reply = answering.await;
                if !reply.acted {
                    self.exchanges.forget(peer, id);
                }
                self.separate(peer, &request, reply).await;
                return;
            };
            self.finish(peer, &request, reply, started);
        });
    }

    /// Sends the answer to a request (piggybacked on the ACK of a CON one), and remembers it
    /// for duplicates if the request changed something.
    fn finish(&self, peer: SocketAddr, request: &Packet, reply: Reply, started: std::time::Instant) {
        let id = request.header.message_id;
        let (code, acted) = (reply.code, reply.acted);
        match self.packet(request, reply).to_bytes() {
            Ok(bytes) => {
                if acted {
                    self.exchanges.answer(peer, id, bytes.clone());
                } else {
                    self.exchanges.forget(peer, id);
                }
                self.send(peer, &bytes);
            }
            Err(_) => self.exchanges.forget(peer, id),
        }
        metrics::counter!("odf_coap_responses_total", "code" => format!("{code:?}")).increment(1);
        metrics::histogram!("odf_coap_request_seconds").record(started.elapsed().as_secs_f64());
    }

    /// What to do with a request: refused on its options alone, or admitted (key, grant,
    /// resource) before anything of it is kept; then the block of a body sent block-wise, or
    /// the whole body to ingest.
    fn decide(&self, peer: SocketAddr, request: &Packet) -> Decision {
        if let Some((code, why)) = message::option_problem(request) {
            return Decision::Reply(Reply::diagnostic(code, &why));
        }
        let path = match message::path(request) {
            Ok(path) => path,
            Err(e) => return Decision::Reply(Reply::diagnostic(ResponseType::BadRequest, &e)),
        };
        let write = match self.resources.admit(request, &path) {
            Admission::Answered(reply) => return Decision::Reply(reply),
            Admission::Write(write) => write,
        };
        let body = match request.get_first_option(CoapOption::Block1) {
            None => request.payload.clone(),
            Some(value) => match self.block1(peer, request, value) {
                Ok(body) => body,
                Err(reply) => return Decision::Reply(reply),
            },
        };
        Decision::Ingest { write, path, body }
    }

    /// Takes a block of a body sent block-wise: the whole body with the last block, else
    /// the reply (2.31 Continue, or why the transfer ends).
    fn block1(&self, peer: SocketAddr, request: &Packet, value: &[u8]) -> Result<Vec<u8>, Reply> {
        let Some(block) = Block::decode(value) else {
            return Err(Reply::diagnostic(ResponseType::BadOption, "Block1 is malformed"));
        };
        let size1 = message::uint_option(request, CoapOption::Size1).and_then(Result::ok);
        let key = blockwise::Key::of(peer, request);
        let limits = self.assemblies.limits;
        let reply = match self.assemblies.take(key, block, &request.payload, size1) {
            Step::Complete(body) => return Ok(body),
            Step::Continue(block) => Reply { block1_echo: Some(block), ..Reply::new(ResponseType::Continue) },
            Step::Incomplete(why) => Reply::diagnostic(ResponseType::RequestEntityIncomplete, &why),
            Step::TooLarge => Reply {
                size1: Some(u32::try_from(limits.max_body).unwrap_or(u32::MAX)),
                ..Reply::diagnostic(
                    ResponseType::RequestEntityTooLarge,
                    &format!("the body is over {} bytes (coap.max_body)", limits.max_body),
                )
            },
            Step::Busy => Reply {
                max_age: Some(5),
                ..Reply::diagnostic(
                    ResponseType::ServiceUnavailable,
                    &format!(
                        "block-wise transfers hold {} bytes at once already (coap.max_assembling)",
                        limits.max_total
                    ),
                )
            },
            Step::EndpointBusy => Reply {
                max_age: Some(5),
                ..Reply::diagnostic(
                    ResponseType::ServiceUnavailable,
                    &format!(
                        "this endpoint has {} block-wise transfers under way already \
                         (coap.max_transfers_per_endpoint): finish one first",
                        limits.per_endpoint
                    ),
                )
            },
        };
        // Each changed (or ended) a transfer: a duplicate block must get the same reply.
        Err(reply.acted())
    }

    /// Sends an answer as a separate CON response, until the client acknowledges it.
    async fn separate(&self, peer: SocketAddr, request: &Packet, reply: Reply) {
        let mut packet = self.packet(request, reply);
        let id = self.next_message_id.fetch_add(1, Ordering::Relaxed);
        packet.header.set_type(MessageType::Confirmable);
        packet.header.message_id = id;
        let Ok(bytes) = packet.to_bytes() else { return };
        let mut acked = self.exchanges.expect_ack(peer, id);
        let mut timeout = ACK_TIMEOUT;
        for _ in 0..=MAX_RETRANSMIT {
            self.send(peer, &bytes);
            tokio::select! {
                _ = &mut acked => return,
                _ = tokio::time::sleep(timeout) => timeout *= 2,
            }
        }
        self.exchanges.give_up(peer, id);
        tracing::debug!(%peer, "coap: a separate response was never acknowledged");
    }

    fn packet(&self, request: &Packet, reply: Reply) -> Packet {
        let mut packet = message::reply_to(request, reply.code);
        if let Some(format) = reply.content_format {
            packet.add_option(CoapOption::ContentFormat, message::uint(u32::from(format)));
        }
        if let Some(age) = reply.max_age {
            packet.add_option(CoapOption::MaxAge, message::uint(age));
        }
        if let Some(etag) = reply.etag {
            packet.add_option(CoapOption::ETag, etag.to_vec());
        }
        if let Some(block) = reply.block2 {
            packet.add_option(CoapOption::Block2, block.encode());
        }
        if let Some(block) = reply.block1_echo {
            packet.add_option(CoapOption::Block1, block.encode());
        }
        if let Some(size) = reply.size1 {
            packet.add_option(CoapOption::Size1, message::uint(size));
        }
        packet.payload = reply.payload;
        packet
    }

    fn send_packet(&self, peer: SocketAddr, packet: &Packet) {
        if let Ok(bytes) = packet.to_bytes() {
            self.send(peer, &bytes);
        }
    }

    fn send(&self, peer: SocketAddr, bytes: &[u8]) {
        // UDP: a send that fails (the peer unreachable) is as lost as a dropped datagram.
        if let Err(e) = self.socket.try_send_to(bytes, peer) {
            tracing::debug!(%peer, "coap: cannot send: {e}");
        }
    }
}

fn rand_u16() -> u16 {
    let mut bytes = [0u8; 2];
    let _ = getrandom::fill(&mut bytes);
    u16::from_le_bytes(bytes)
}
