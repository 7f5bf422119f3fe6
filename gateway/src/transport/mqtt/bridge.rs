//! The upstream bridge: the gateway subscribes, as an MQTT client (rumqttc), to topics on
//! another broker (a vendor's cloud, a site's broker) and ingests what arrives through the
//! same routes and pipeline as its own listeners. Acknowledgements are manual: a QoS 1
//! message is acknowledged upstream only once the write-ahead log has it, so the upstream
//! broker redelivers what a crash lost. A filter `$share/{group}/...` (a shared
//! subscription) lets several gateways split one broker's load.
//!
//! What can never be taken (no route, a payload of which no record fits) is acknowledged all
//! the same, so that the upstream broker does not redeliver it for ever: a bad payload is in
//! the quarantine, and the rest is logged and counted (`odf_bridge_dropped_total`).
//! Backpressure and outages are not acknowledged: the message is retried until taken.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport as MqttTransport,
};
use tokio::sync::{Semaphore, watch};

use crate::access::{Caller, Principal};
use crate::intake::{Intake, IntakeError, Parcel};
use crate::pipeline::{Durability, SubmitError};
use crate::routes::Transport;
use crate::transport::stopping;
use crate::transport::tls::{ClientTls, client_config};

/// Messages being ingested at once (acknowledgements may go out of order).
const IN_FLIGHT: usize = 32;

#[derive(Debug, Clone)]
pub struct BridgeOptions {
    /// For logs and metrics.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<ClientTls>,
    /// Topic filters; `$share/{group}/{filter}` for a shared subscription.
    pub subscribe: Vec<String>,
    pub qos: u8,
    /// Off: a persistent session upstream, which keeps what arrives while the gateway is down.
    pub clean_session: bool,
    /// An identity whose grants bound what the bridge may write; `None`: wherever routes lead.
    pub identity: Option<String>,
}

/// Runs the bridge until `shutdown` turns true, reconnecting with back-off.
pub fn spawn(
    options: BridgeOptions,
    intake: Arc<Intake>,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut mqtt = MqttOptions::new(options.client_id.clone(), options.host.clone(), options.port);
    mqtt.set_manual_acks(true);
    mqtt.set_clean_session(options.clean_session);
    mqtt.set_keep_alive(Duration::from_secs(30));
    mqtt.set_max_packet_size(crate::pipeline::MAX_PAYLOAD, 64 * 1024);
    if let (Some(user), Some(password)) = (&options.username, &options.password) {
        mqtt.set_credentials(user.clone(), password.clone());
    }
    if let Some(tls) = &options.tls {
        mqtt.set_transport(MqttTransport::tls_with_config(TlsConfiguration::Rustls(client_config(tls)?)));
    }
    let (client, events) = AsyncClient::new(mqtt, IN_FLIGHT * 2);
    let bridge = Arc::new(Bridge { options, intake, client });
    Ok(tokio::spawn(bridge.run(events, shutdown)))
}

struct Bridge {
    options: BridgeOptions,
    intake: Arc<Intake>,
    client: AsyncClient,
}

impl Bridge {
    async fn run(self: Arc<Self>, mut events: rumqttc::EventLoop, shutdown: watch::Receiver<bool>) {
        let stop = stopping(shutdown);
        tokio::pin!(stop);
        let name = self.options.name.clone();
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let qos = match self.options.qos {
            0 => QoS::AtMostOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
        };
        let mut pause = Duration::from_millis(200);
        loop {
            let event = tokio::select! {
                event = events.poll() => event,
                _ = &mut stop => break,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    pause = Duration::from_millis(200);
                    tracing::info!(bridge = %name, "connected upstream to {}:{}", self.options.host, self.options.port);
                    for filter in &self.options.subscribe {
                        if let Err(e) = self.client.subscribe(filter.clone(), qos).await {
                            tracing::error!(bridge = %name, "cannot subscribe to '{filter}': {e}");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let Ok(slot) = slots.clone().acquire_owned().await else { break };
                    let bridge = self.clone();
                    tokio::spawn(async move {
                        bridge.take(publish).await;
                        drop(slot);
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(bridge = %name, "upstream connection: {e}; retrying in {pause:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = &mut stop => break,
                    }
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        }
        // Messages being ingested finish (and are acknowledged) before the bridge ends.
        let _ = slots.acquire_many(IN_FLIGHT as u32).await;
        let _ = self.client.disconnect().await;
    }

    /// Ingests one message, retrying while the gateway pushes back; acknowledges it upstream
    /// once it is taken or can never be.
    async fn take(&self, publish: Publish) {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.ingest(&publish).await {
                Ok(()) => break,
                Err(Taken::Never(reason)) => {
                    tracing::warn!(bridge = %self.options.name, topic = %publish.topic, "dropped: {reason}");
                    metrics::counter!("odf_bridge_dropped_total", "bridge" => self.options.name.clone())
                        .increment(1);
                    break;
                }
                Err(Taken::Later(reason)) => {
                    tracing::debug!(bridge = %self.options.name, "retrying in {pause:?}: {reason}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
        metrics::counter!("odf_bridge_messages_total", "bridge" => self.options.name.clone()).increment(1);
        if let Err(e) = self.client.ack(&publish).await {
            tracing::warn!(bridge = %self.options.name, "cannot acknowledge upstream: {e}");
        }
    }

    async fn ingest(&self, publish: &Publish) -> Result<(), Taken> {
        let topic = publish.topic.as_str();
        // A bridge without an identity is the operator's own: only its routes bind it.
        let admitted = match &self.options.identity {
            Some(name) => {
                let who = Principal::Identity(name.clone());
                let caller =
                    Caller { principal: &who, transport: Transport::Mqtt, client_id: None, cert: None };
                self.intake.admit(topic, &caller)
            }
            None => self.intake.admit_configured(topic, Transport::Mqtt),
        };
        let target = admitted.map_err(|e| match e {
            IntakeError::Submit(SubmitError::Unavailable(reason)) => Taken::Later(reason),
            e => Taken::Never(e.to_string()),
        })?;
        let parcel = Parcel {
            payload: publish.payload.clone(),
            format: None,
            event_time: None,
            address: format!("topic {topic} (bridge {})", self.options.name),
            sender: format!("bridge {} ({}:{})", self.options.name, self.options.host, self.options.port),
            durability: Durability::Synced,
        };
        match target.submit(parcel).await {
            Ok(_) => Ok(()),
            // In the quarantine: taken as far as it ever can be.
            Err(SubmitError::Rejected { .. }) => Ok(()),
            Err(e @ (SubmitError::Busy { .. } | SubmitError::Unavailable(_))) => {
                Err(Taken::Later(e.to_string()))
            }
            Err(e) => Err(Taken::Never(e.to_string())),
        }
    }
}

enum Taken {
    Never(String),
    Later(String),
}
