//! MQTT (3.1.1, rumqttc): one connection per device, with a persistent session (clean session
//! off) that the device resumes after it was offline, so the broker keeps its subscriptions
//! and rumqttc resends an unacknowledged publish (DUP) after a reconnect.

use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration,
    Transport,
};
use tokio_util::sync::CancellationToken;

use super::{Message, Outcome, Target, grace_after, sleep_unless_stopped};
use crate::gps::Vendor;

pub struct MqttSender {
    options: MqttOptions,
    topic: String,
    qos: QoS,
    timeout: Duration,
    connection: Option<(AsyncClient, EventLoop)>,
    /// Whether the connection is up (a CONNACK came and no error since).
    connected: bool,
}

impl MqttSender {
    pub fn new(target: &Target, vendor: Vendor, device: &str) -> MqttSender {
        let mut options = MqttOptions::new(device, target.host.clone(), target.mqtt_port);
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1 << 20, 1 << 20);
        options.set_inflight(1);
        if let (Some(user), Some(password)) = (&target.username, &target.password) {
            options.set_credentials(user, password);
        }
        if let Some(tls) = &target.mqtt_tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca: tls.ca.clone(),
                alpn: None,
                client_auth: tls.client_auth.clone(),
            }));
        }
        let qos = match target.qos {
            0 => QoS::AtMostOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
        };
        MqttSender {
            options,
            topic: target.path(vendor, device),
            qos,
            timeout: target.timeout,
            connection: None,
            connected: false,
        }
    }

    pub async fn send(&mut self, message: &Message, stop: &CancellationToken) -> Outcome {
        let (client, events) =
            self.connection.get_or_insert_with(|| AsyncClient::new(self.options.clone(), 10));
        if let Err(e) = client.publish(&self.topic, self.qos, false, message.payload.clone()).await {
            self.connection = None;
            return Outcome::Failed(format!("MQTT client: {e}"));
        }
        let deadline = tokio::time::sleep(self.timeout);
        let grace = grace_after(stop);
        tokio::pin!(deadline, grace);
        let mut backoff = Duration::from_millis(100);
        // Set when a connection broke with the publish unacknowledged: rumqttc then keeps it
        // to resend in a resumed session, but drops it when the broker has no session for
        // us any more (it restarted), and we publish it again ourselves.
        let mut cut_off = false;
        let outcome = loop {
            let event = tokio::select! {
                event = events.poll() => event,
                _ = &mut deadline => break Outcome::Failed(format!("no acknowledgement in {:?}", self.timeout)),
                _ = &mut grace => break Outcome::Failed("stopped before the acknowledgement".into()),
            };
            match event {
                Ok(Event::Incoming(Packet::PubAck(_))) if self.qos == QoS::AtLeastOnce => {
                    break Outcome::Acked;
                }
                Ok(Event::Incoming(Packet::PubComp(_))) if self.qos == QoS::ExactlyOnce => {
                    break Outcome::Acked;
                }
                Ok(Event::Outgoing(Outgoing::Publish(_))) if self.qos == QoS::AtMostOnce => {
                    break Outcome::Acked;
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code != ConnectReturnCode::Success => {
                    break Outcome::Refused(format!("the broker refused the connection: {:?}", ack.code));
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.connected = true;
                    backoff = Duration::from_millis(100);
                    if cut_off && !ack.session_present {
                        cut_off = false;
                        if client.try_publish(&self.topic, self.qos, false, message.payload.clone()).is_err()
                        {
                            break Outcome::Failed("MQTT client: cannot publish again".into());
                        }
                    }
                }
                Ok(_) => {}
                // The connection is gone (or never came): rumqttc reconnects on the next poll
                // and resends the publish; meanwhile, back off.
                Err(_) => {
                    cut_off |= std::mem::take(&mut self.connected);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut deadline => break Outcome::Failed(format!("no connection in {:?}", self.timeout)),
                        _ = &mut grace => break Outcome::Failed("stopped before the acknowledgement".into()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        if !matches!(outcome, Outcome::Acked) {
            self.connected = false;
            // A publish still in rumqttc's state would be resent and acknowledged later, in
            // the middle of another message's wait: start afresh.
            self.connection = None;
        }
        outcome
    }

    pub async fn idle(&mut self, duration: Duration, stop: &CancellationToken) {
        let until = Instant::now() + duration;
        let Some((_, events)) = self.connection.as_mut() else {
            return sleep_unless_stopped(duration, stop).await;
        };
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || stop.is_cancelled() {
                return;
            }
            let lost = tokio::select! {
                event = events.poll() => event.is_err(),
                _ = tokio::time::sleep(left) => return,
                _ = stop.cancelled() => return,
            };
            if lost {
                self.connected = false;
                // Reconnecting is for the next send; wait out the rest.
                self.connection = None;
                return sleep_unless_stopped(left, stop).await;
            }
        }
    }

    /// Closes the connection with a DISCONNECT; the session stays on the broker.
    pub async fn disconnect(&mut self) {
        self.connected = false;
        if let Some((client, mut events)) = self.connection.take() {
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(event) = events.poll().await {
                    if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}
