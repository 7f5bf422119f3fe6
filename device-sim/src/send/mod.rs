//! Sending a tracker's messages to a gateway (or any broker or server of the protocol) and
//! learning the outcome: one sender per device, one message in flight at a time, as a real
//! tracker does.

mod coap;
mod http;
mod mqtt;

use std::path::PathBuf;
use std::time::Duration;

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
    pub mqtt_tls: Option<TlsFiles>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A bearer token for HTTP, and the CoAP key (`?key=`).
    pub token: Option<String>,
    /// How long a message may wait for its answer before it counts as failed.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
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
            _ => {
                tokio::select! {
                    _ = tokio::time::sleep(duration) => {}
                    _ = stop.cancelled() => {}
                }
            }
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

/// A future that ends a few seconds after `stop` is cancelled: how long a message in flight
/// may still wait for its answer once the run is stopping.
async fn grace_after(stop: &CancellationToken) {
    stop.cancelled().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
}
