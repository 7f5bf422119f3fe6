//! MQTT: the embedded rmqtt broker (v3.1.1 and v5; TCP, TLS, WebSocket), in the gateway's own
//! runtime, with every publish taken through `gate` (which waits for the write-ahead log
//! before the broker acknowledges), and an upstream bridge (`bridge`).
//!
//! Why rmqtt: its session loop sends the QoS 1 PUBACK and QoS 2 PUBREC only after the
//! publish hooks have run, and the publish-ACL hook's verdict becomes the reason code, so an
//! acknowledgement can mean "on disk". rumqttd queues its PUBACK before the message is even
//! in its own log, has no client identity on a local link and no topic ACLs; mosquitto and
//! EMQX acknowledge before anything is on disk. rmqtt is pinned (`=0.24.0`): that ordering
//! is a fact of its code, not a promise, and `tests/mqtt.rs` fails if a PUBACK ever comes
//! before the fsync.

pub mod bridge;
mod client_ids;
mod exactly_once;
mod gate;

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::hook::Type;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;

pub use gate::AckPolicy;

use crate::access::AccessTable;
use crate::intake::Intake;

/// The broker's settings, checked.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub ws_listen: Vec<SocketAddr>,
    pub tls: Option<TlsFiles>,
    pub ack: AckPolicy,
    pub max_packet_size: u32,
    pub max_inflight: NonZeroU16,
    pub max_connections: usize,
    /// From accept to a complete CONNECT, TLS and WebSocket handshakes included.
    pub connect_timeout: Duration,
    pub session_expiry: Duration,
    /// The Topic Alias Maximum announced to MQTT 5 clients (0: no aliases).
    pub max_topic_aliases: u16,
    /// Messages queued per session for its subscriber (rmqtt's default is 1,000, each up to
    /// `max_packet_size`).
    pub max_queued: usize,
}

/// PEM files for the TLS listeners (rmqtt reads them itself). With `client_ca`, clients
/// must present a certificate it signed.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Where the listeners are, once bound.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BrokerAddresses {
    pub tcp: Vec<String>,
    pub tls: Vec<String>,
    pub ws: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("mqtt: {0}")]
pub struct BrokerError(String);

/// A running broker.
pub struct Broker {
    scx: ServerContext,
    task: tokio::task::JoinHandle<()>,
    pub addresses: BrokerAddresses,
}

impl Broker {
    /// Binds every listener and starts serving.
    pub async fn start(
        options: &BrokerOptions,
        intake: Arc<Intake>,
        access: Arc<AccessTable>,
    ) -> Result<Broker, BrokerError> {
        // The busy check refuses CONNECTs when the machine is loaded: a Pi in the field is.
        let scx = ServerContext::new().busy_check_enable(false).build().await;
        let gate = gate::Gate {
            intake,
            access,
            ack: options.ack,
            scx: scx.clone(),
            client_ids: Default::default(),
            receipts: exactly_once::Receipts::new(options.max_inflight.get()),
            max_topic_aliases: options.max_topic_aliases,
            metrics: Default::default(),
        };
        let gate = Arc::new(gate);
        let register = scx.extends.hook_mgr().register();
        for kind in [
            Type::ClientAuthenticate,
            Type::MessagePublishCheckAcl,
            Type::MessagePublish,
            Type::ClientSubscribeCheckAcl,
            Type::ClientConnack,
            Type::ClientConnected,
            Type::ClientDisconnected,
            Type::SessionTerminated,
            Type::MessageDropped,
        ] {
            register.add(kind, Box::new(Hook(gate.clone()))).await;
        }
        register.start().await;

        let mut server = MqttServer::new(scx.clone());
        let mut addresses = BrokerAddresses::default();
        let mut id: u16 = 0;
        let kinds = [("tcp", &options.listen), ("tls", &options.tls_listen), ("ws", &options.ws_listen)];
        for (kind, addrs) in kinds {
            for addr in addrs {
                id += 1;
                let builder = listener_builder(options, kind, *addr)?;
                let fail = |e: anyhow::Error| BrokerError(format!("cannot listen on {addr} ({kind}): {e}"));
                let bound = builder.bind().map_err(fail)?;
                let listener = match kind {
                    "tls" => bound.tls().map_err(fail)?,
                    "ws" => bound.ws().map_err(fail)?,
                    _ => bound.tcp().map_err(fail)?,
                };
                let local = listener.local_addr().map_err(fail)?.to_string();
                match kind {
                    "tls" => addresses.tls.push(local),
                    "ws" => addresses.ws.push(local),
                    _ => addresses.tcp.push(local),
                }
                server = server.listener_by_id(listener, id);
            }
        }
        let server = server.build();
        let task = tokio::spawn(async move {
            if let Err(e) = server.run().await {
                tracing::error!("the MQTT broker stopped: {e}");
            }
        });
        Ok(Broker { scx, task, addresses })
    }

    /// Stops accepting, and closes every session (their devices resend what was not
    /// acknowledged when they reconnect).
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
        let ids: Vec<_> = self.scx.extends.shared().await.iter().map(|entry| entry.id()).collect();
        for id in ids {
            let mut entry = self.scx.extends.shared().await.entry(id);
            if let Err(e) = entry.kick(true, true, true).await {
                tracing::debug!("mqtt: closing a session at shutdown: {e}");
            }
        }
    }
}

/// The gate behind an `Arc`, registered once per hook type.
struct Hook(Arc<gate::Gate>);

#[async_trait::async_trait]
impl rmqtt::hook::Handler for Hook {
    async fn hook(
        &self,
        param: &rmqtt::hook::Parameter,
        acc: Option<rmqtt::hook::HookResult>,
    ) -> rmqtt::hook::ReturnType {
        self.0.hook(param, acc).await
    }
}

fn listener_builder(options: &BrokerOptions, kind: &str, addr: SocketAddr) -> Result<Builder, BrokerError> {
    let mut builder = Builder::new()
        .name(format!("{kind}/{addr}"))
        .laddr(addr)
        // Our hook decides about anonymous clients; with rmqtt's own default (allow) a
        // CONNECT without a username would never reach it.
        .allow_anonymous(false)
        .max_packet_size(options.max_packet_size)
        .max_inflight(options.max_inflight)
        .max_topic_aliases(options.max_topic_aliases)
        .max_mqueue_len(options.max_queued)
        .max_connections(options.max_connections)
        // Also bounds the CONNECT's first bytes, with the patch in vendor/rmqtt-net.
        .handshake_timeout(options.connect_timeout)
        .session_expiry_interval(options.session_expiry)
        .max_session_expiry_interval(options.session_expiry)
        .collect_cert_info(true)
        .reuseaddr(Some(true));
    if kind == "tls" {
        let tls = options
            .tls
            .as_ref()
            .ok_or_else(|| BrokerError("mqtt.tls_listen needs [mqtt.tls] cert and key".into()))?;
        builder = builder
            .tls_cert(Some(tls.cert.display().to_string()))
            .tls_key(Some(tls.key.display().to_string()));
        if let Some(ca) = &tls.client_ca {
            builder = builder.tls_cross_certificate(true).tls_client_ca_certs(Some(ca.display().to_string()));
        }
    }
    Ok(builder)
}
