//! Sending a tracker's messages to a gateway (or any broker or server of the protocol) and
//! learning the outcome: one sender per device, one message in flight at a time, as a real
//! tracker does.

mod coap;
mod http;
mod mqtt;

pub(crate) use http::connect as connect_http;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::gps::{Transport, Vendor};

/// Where the devices send, and how.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub dataset: String,
    pub mqtt_port: u16,
    pub http_port: u16,
    pub coap_port: u16,
    /// MQTT topic for vendor A; `{dataset}`, `{source}` and `{device}` are filled in.
    pub mqtt_topic: String,
    /// 0, 1 or 2.
    pub qos: u8,
    pub mqtt_tls: Option<MqttTls>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A bearer token for HTTP, and the CoAP key (`?key=`).
    pub token: Option<String>,
    /// How long a message may wait for its answer before it counts as failed.
    pub timeout: Duration,
}

/// MQTT over TLS: the CA to trust and an optional client certificate and key (PEM), read
/// once at start and shared by every device.
#[derive(Debug, Clone)]
pub struct MqttTls {
    pub ca: Vec<u8>,
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

impl MqttTls {
    pub fn read(ca: &Path, cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<MqttTls> {
        let read = |path: &Path| std::fs::read(path).with_context(|| format!("read {}", path.display()));
        let client_auth = match (cert, key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => anyhow::bail!("a client certificate needs both --cert and --key"),
        };
        Ok(MqttTls { ca: read(ca)?, client_auth })
    }
}

impl Target {
    /// The path (HTTP, CoAP) or topic (MQTT) a vendor's devices write to.
    pub fn path(&self, vendor: Vendor, device: &str) -> String {
        match vendor.transport() {
            Transport::Mqtt => self
                .mqtt_topic
                .replace("{dataset}", &self.dataset)
                .replace("{source}", vendor.source())
                .replace("{device}", device),
            Transport::Http | Transport::Coap => {
                format!("/datasets/{}/sources/{}", self.dataset, vendor.source())
            }
        }
    }
}

/// A message as it goes out: the payload and the sequence numbers of the reports in it.
#[derive(Debug, Clone)]
pub struct Message {
    pub payload: Vec<u8>,
    pub content_type: &'static str,
    pub seqs: Vec<u64>,
}

/// What came of a message.
#[derive(Debug)]
pub enum Outcome {
    /// The receiver took every report in it.
    Acked,
    /// The receiver said no, for good (a 4xx, an MQTT reason code): resending would not help.
    Refused(String),
    /// The receiver is busy: send again after this long.
    Busy(Duration),
    /// No answer (timeout, lost connection): the message may or may not have arrived.
    Failed(String),
}

pub enum Sender {
    Mqtt(Box<mqtt::MqttSender>),
    Http(http::HttpSender),
    Coap(coap::CoapSender),
}

impl Sender {
    /// A sender for one device; it connects when it first sends.
    pub fn new(target: &Target, vendor: Vendor, device: &str) -> Sender {
        match vendor.transport() {
            Transport::Mqtt => Sender::Mqtt(Box::new(mqtt::MqttSender::new(target, vendor, device))),
            Transport::Http => Sender::Http(http::HttpSender::new(target, vendor, device)),
            Transport::Coap => Sender::Coap(coap::CoapSender::new(target, vendor, device)),
        }
    }

    /// Sends one message and waits for its outcome (up to the target's timeout, or a few
    /// seconds once `stop` is cancelled).
    pub async fn send(&mut self, message: &Message, stop: &CancellationToken) -> Outcome {
        match self {
            Sender::Mqtt(s) => s.send(message, stop).await,
            Sender::Http(s) => s.send(message, stop).await,
            Sender::Coap(s) => s.send(message, stop).await,
        }
    }

    /// Sends the last message again as a device does that lost its answer: a CoAP
    /// retransmission (same message id), an MQTT publish or HTTP request of the same payload.
    pub async fn send_again(&mut self, message: &Message, stop: &CancellationToken) -> Outcome {
        match self {
            Sender::Coap(s) => s.retransmit_last(stop).await,
            _ => self.send(message, stop).await,
        }
    }

    /// Waits until `duration` has passed or `stop` is cancelled, keeping the connection
    /// alive meanwhile (MQTT pings).
    pub async fn idle(&mut self, duration: Duration, stop: &CancellationToken) {
        match self {
            Sender::Mqtt(s) => s.idle(duration, stop).await,
            _ => sleep_unless_stopped(duration, stop).await,
        }
    }

    /// The device goes out of coverage: its connection is closed (an MQTT session stays on
    /// the broker, to be resumed).
    pub async fn disconnect(&mut self) {
        match self {
            Sender::Mqtt(s) => s.disconnect().await,
            Sender::Http(s) => s.disconnect(),
            Sender::Coap(_) => {}
        }
    }
}

/// Sleeps for `duration`, or less if `stop` is cancelled meanwhile.
async fn sleep_unless_stopped(duration: Duration, stop: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = stop.cancelled() => {}
    }
}

/// A future that ends a few seconds after `stop` is cancelled: how long a message in flight
/// may still wait for its answer once the run is stopping.
async fn grace_after(stop: &CancellationToken) {
    stop.cancelled().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
}
