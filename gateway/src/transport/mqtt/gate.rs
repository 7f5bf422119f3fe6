//! The one place an MQTT publish is accepted: the broker's publish-ACL hook. rmqtt sends the
//! QoS 1 PUBACK (QoS 2 PUBREC) only after this hook returns, with its verdict as the reason
//! code, so the hook resolves the route, checks who may write there, checks the payload
//! against the source's schema, applies backpressure and waits for the write-ahead log's
//! fsync before it allows the publish. The same hook answers authentication (CONNECT) and
//! subscriptions.
//!
//! MQTT 5 clients get a reason code: 0x87 not authorized, 0x90 no route for the topic, 0x99
//! no record of the payload fits (the payload is in the quarantine), 0x97 quota exceeded
//! (backpressure: retry later), 0x80 the gateway cannot take it now. MQTT 3.1.1 has no
//! reason codes, so each case is decided so that a device never resends for ever what can
//! never be accepted: a payload that does not fit is acknowledged (it is in the quarantine,
//! resending it would not help); everything else closes the connection without an
//! acknowledgement (the device keeps the message and sends it again after reconnecting,
//! which is right for backpressure and an outage, and shows up as a failing connection for
//! a device writing where it may not).

use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use rmqtt::codec::types::MQTT_LEVEL_5;
use rmqtt::codec::v5::{self, DisconnectReasonCode, PublishAckReason, PublishProperties, SubscribeAckReason};
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::session::{Session, SessionState};
use rmqtt::types::{
    AuthResult, ClientId, CodecPublish, ConnectInfo, Disconnect, From, FromType, Id, Publish,
    PublishAclResult, PublishResult, QoS, Reason, SubscribeAclResult,
};
use serde_json::json;

use super::client_ids::ClientIds;
use super::exactly_once::Receipts;
use crate::access::{AccessTable, Caller, Denied, Principal};
use crate::intake::{Intake, IntakeError, Parcel, declared_format};
use crate::pipeline::{Accepted, Durability, SubmitError};
use crate::routes::Transport;

/// When a publish is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckPolicy {
    /// After the write-ahead log's fsync: an acknowledged publish survives a crash.
    Durable,
    /// After the write, before the group's fsync: a crash of the machine (not only of the
    /// gateway) in between can lose it; for those who trade the guarantee for speed.
    Received,
}

pub struct Gate {
    pub intake: Arc<Intake>,
    pub access: Arc<AccessTable>,
    pub ack: AckPolicy,
    /// For replies to MQTT 5 response topics; set once the broker's context exists.
    pub scx: ServerContext,
    /// Who each client id belongs to.
    pub client_ids: ClientIds,
    /// The QoS 2 publishes each session took, to know their DUP resends.
    pub receipts: Receipts,
    /// The Topic Alias Maximum the CONNACK announces (rmqtt counts aliases, but lets any
    /// value in).
    pub max_topic_aliases: u16,
    pub metrics: PublishMetrics,
}

/// The publish metrics, registered at first use and kept (not looked up per publish).
#[derive(Default)]
pub struct PublishMetrics {
    by_reason: std::sync::Mutex<Vec<(PublishAckReason, metrics::Counter)>>,
    bytes: std::sync::OnceLock<metrics::Counter>,
    to_ack: std::sync::OnceLock<metrics::Histogram>,
}

impl PublishMetrics {
    fn record(&self, reason: PublishAckReason, bytes: usize, to_ack: Option<std::time::Duration>) {
        let counter = {
            let mut known = self.by_reason.lock().unwrap_or_else(|e| e.into_inner());
            match known.iter().find(|(r, _)| *r == reason) {
                Some((_, counter)) => counter.clone(),
                None => {
                    let counter =
                        metrics::counter!("odf_mqtt_publishes_total", "reason" => format!("{reason:?}"));
                    known.push((reason, counter.clone()));
                    counter
                }
            }
        };
        counter.increment(1);
        self.bytes.get_or_init(|| metrics::counter!("odf_mqtt_publish_bytes_total")).increment(bytes as u64);
        if let Some(to_ack) = to_ack {
            let histogram =
                self.to_ack.get_or_init(|| metrics::histogram!("odf_mqtt_publish_to_ack_seconds"));
            histogram.record(to_ack.as_secs_f64());
        }
    }
}

#[async_trait::async_trait]
impl Handler for Gate {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(info) => {
                (false, Some(HookResult::AuthResult(self.authenticate(info).await)))
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                let client: &str = &session.id.client_id;
                let verdict = match self.topic_alias_invalid(session, publish).await {
                    Some(refused) => refused,
                    None if self.receipts.is_resend(client, publish) => {
                        // Taken before the connection was lost: acknowledged, not again.
                        metrics::counter!("odf_mqtt_qos2_resends_total").increment(1);
                        tracing::debug!(client, "a QoS 2 resend of a publish already taken");
                        PublishAclResult::allow()
                    }
                    None => {
                        let verdict = self.publish(session, publish).await;
                        if verdict.is_allow() {
                            self.receipts.took(client, publish);
                        }
                        verdict
                    }
                };
                (false, Some(HookResult::PublishAclResult(verdict)))
            }
            // Before the ACL hook: a resend of a publish already taken is not relayed again.
            Parameter::MessagePublish(Some(session), _, publish)
                if self.receipts.is_resend(&session.id.client_id, publish) =>
            {
                (false, Some(HookResult::Publish((*publish).clone().target_clientid(ClientId::default()))))
            }
            Parameter::MessagePublish(Some(session), from, publish)
                if matches!(from.typ(), FromType::LastWill) =>
            {
                match self.will(session, publish).await {
                    Some(stopped) => (false, Some(HookResult::Publish(stopped))),
                    None => (true, acc),
                }
            }
            Parameter::ClientSubscribeCheckAcl(session, subscribe) => {
                let principal = principal_of(&self.access, session.connect_info().await.ok().as_deref());
                let filter: &str = &subscribe.topic_filter;
                let verdict = if self.access.may_subscribe(&principal, filter) {
                    SubscribeAclResult::new_success(subscribe.opts.qos(), None)
                } else {
                    metrics::counter!("odf_mqtt_subscribes_refused_total").increment(1);
                    SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized)
                };
                (false, Some(HookResult::SubscribeAclResult(verdict)))
            }
            // A CONNECT let in here but refused later (by rmqtt) frees the id it claimed.
            Parameter::ClientConnack(info, reason) if !reason.success() => {
                self.client_ids.release(&info.id().client_id, &principal_of(&self.access, Some(info)));
                (true, acc)
            }
            Parameter::ClientConnected(session) => {
                self.client_ids.settled(&session.id.client_id);
                if session.connect_info().await.is_ok_and(|info| info.clean_start()) {
                    self.receipts.forget(&session.id.client_id);
                }
                metrics::gauge!("odf_mqtt_connected_clients").increment(1.0);
                (true, acc)
            }
            Parameter::SessionTerminated(session, _) => {
                // Unless a newer session holds the client id already.
                let entry = self.scx.extends.shared().await.entry(session.id.clone());
                if entry.id_same() != Some(false) {
                    self.receipts.forget(&session.id.client_id);
                }
                (true, acc)
            }
            // A message for a subscriber that was not delivered. (rmqtt also reports publishes
            // this hook refused, with no subscriber: those are counted as publishes.)
            Parameter::MessageDropped(Some(to), _, _, reason) => {
                let reason = match reason {
                    Reason::MessageQueueFull => "queue_full",
                    Reason::MessageExpiration => "expired",
                    Reason::InflightWindowFull => "inflight_full",
                    _ => "other",
                };
                tracing::debug!(to = %to.client_id, reason, "a message for a subscriber dropped");
                metrics::counter!("odf_mqtt_messages_dropped_total", "reason" => reason).increment(1);
                (true, acc)
            }
            Parameter::ClientDisconnected(_, _) => {
                metrics::gauge!("odf_mqtt_connected_clients").decrement(1.0);
                (true, acc)
            }
            _ => (true, acc),
        }
    }
}

impl Gate {
    /// A CONNECT: a username and password, a client certificate, or nobody (where anonymous
    /// clients are allowed). Never a superuser: a superuser skips the publish hook. Then
    /// the client id must be the identity's to use, and a will must go where the identity
    /// may publish; else 0x87 not authorized (v3.1.1: 5), the only refusals rmqtt lets a
    /// hook give besides a bad password.
    async fn authenticate(&self, info: &ConnectInfo) -> AuthResult {
        let verdict = match (info.username(), info.password(), info.cert()) {
            (Some(name), Some(password), _) => self.access.by_password_async(name, password).await,
            (Some(_), None, _) => Err(Denied::BadCredentials),
            (None, _, Some(cert)) => self.access.by_certificate(&cert.subject, cert.common_name.as_deref()),
            (None, _, None) => self.access.anonymous(),
        };
        let who = match verdict {
            Ok(who) => who,
            Err(Denied::NoCredentials) => return AuthResult::NotAuthorized,
            Err(Denied::BadCredentials) => return AuthResult::BadUsernameOrPassword,
        };
        // The will first: a CONNECT refused for it leaves no claim on its client id.
        let refused = match self.will_refused(info, &who) {
            Some(reason) => Some(("will", reason)),
            None => self
                .client_ids
                .claim(&self.scx, &self.access, info, &who)
                .await
                .err()
                .map(|r| ("client_id", r)),
        };
        if let Some((what, reason)) = refused {
            metrics::counter!("odf_mqtt_connects_refused_total", "reason" => what).increment(1);
            tracing::info!(client = %info.id().client_id, "CONNECT refused: {reason}");
            return AuthResult::NotAuthorized;
        }
        AuthResult::Allow(false, None)
    }

    /// Why the will of a CONNECT may not be sent, if it may not: a will is a publish the
    /// broker makes for the client later, so it must go where the client may publish now.
    fn will_refused(&self, info: &ConnectInfo, who: &Principal) -> Option<String> {
        let will = info.last_will()?;
        let will = match Publish::try_from(will) {
            Ok(will) => will,
            Err(e) => return Some(format!("the will cannot be read: {e}")),
        };
        match self.intake.admit(&will.topic, &caller_of(who, info)) {
            Ok(_) => None,
            Err(refusal) => Some(format!("the will's topic: {refusal}")),
        }
    }

    /// A will, as the broker is about to send it: ingested like the publish it stands for,
    /// durably, its grants checked again. One that cannot be taken is not relayed to
    /// subscribers either: it is returned addressed to no client (a hook cannot drop it).
    async fn will(&self, session: &Session, will: &Publish) -> Option<Publish> {
        let info = session.connect_info().await.ok();
        let who = principal_of(&self.access, info.as_deref());
        let outcome = self.ingest(session, will, info.as_deref(), &who).await;
        let reason = reason_code(&outcome);
        metrics::counter!("odf_mqtt_wills_total", "reason" => format!("{reason:?}")).increment(1);
        match outcome {
            Ok(_) => None,
            Err(refusal) => {
                tracing::warn!(client = %session.id.client_id, "will not taken ({reason:?}): {refusal}");
                Some(will.clone().target_clientid(ClientId::default()))
            }
        }
    }

    /// A Topic Alias above the maximum the CONNACK announced is a protocol error (MQTT 5
    /// §3.3.2.3.4, 0x94 topic alias invalid): no acknowledgement, the connection is closed.
    /// rmqtt counts the aliases in use but takes any value, and ignores aliases when the
    /// maximum is 0; an alias of 0 does not decode, and closes the connection before this.
    /// 0x94 is the session's disconnect reason (logs, hooks); rmqtt 0.24.0 shuts its side
    /// of the connection before it writes a server DISCONNECT, so none reaches the client.
    async fn topic_alias_invalid(&self, session: &Session, publish: &Publish) -> Option<PublishAclResult> {
        let alias = publish.properties.as_ref()?.topic_alias?.get();
        if alias <= self.max_topic_aliases {
            return None;
        }
        let text = format!("topic alias {alias} is above the Topic Alias Maximum {}", self.max_topic_aliases);
        tracing::debug!(client = %session.id.client_id, "{text}");
        metrics::counter!("odf_mqtt_protocol_errors_total", "error" => "topic_alias").increment(1);
        // The reason the session gives first is the one its DISCONNECT carries.
        let disconnect = v5::Disconnect {
            reason_code: DisconnectReasonCode::TopicAliasInvalid,
            reason_string: Some(ByteString::from(text.clone())),
            ..v5::Disconnect::default()
        };
        let reason = Reason::ConnectDisconnect(Some(Disconnect::V5(disconnect)));
        if let Err(e) = session.disconnected_reason_add(reason).await {
            tracing::debug!("cannot note the disconnect reason: {e}");
        }
        Some(PublishAclResult(PublishResult::reason_code(
            PublishAckReason::TopicNameInvalid,
            Some(ByteString::from(text)),
            true,
        )))
    }

    async fn publish(&self, session: &Session, publish: &Publish) -> PublishAclResult {
        let started = Instant::now();
        let info = session.connect_info().await.ok();
        let v5 = info.as_ref().is_some_and(|c| c.proto_ver() == MQTT_LEVEL_5);
        let principal = principal_of(&self.access, info.as_deref());
        let outcome = self.ingest(session, publish, info.as_deref(), &principal).await;
        let reason = reason_code(&outcome);
        self.metrics.record(reason, publish.payload.len(), outcome.is_ok().then(|| started.elapsed()));
        if let Some(properties) = publish.properties.as_ref().filter(|p| p.response_topic.is_some()) {
            self.reply(session, properties, &outcome).await;
        }
        verdict(outcome, v5)
    }

    async fn ingest(
        &self,
        session: &Session,
        publish: &Publish,
        info: Option<&ConnectInfo>,
        who: &Principal,
    ) -> Result<Accepted, IntakeError> {
        let topic: &str = &publish.topic;
        let client: &str = &session.id.client_id;
        let caller = match info {
            Some(info) => caller_of(who, info),
            None => {
                Caller { principal: who, transport: Transport::Mqtt, client_id: Some(client), cert: None }
            }
        };
        let target = self.intake.admit(topic, &caller)?;
        let media_type = publish.properties.as_ref().and_then(|p| p.content_type.as_deref());
        let format = declared_format(media_type)?;
        let durability = match (self.ack, publish.qos) {
            // Nobody waits for a QoS 0 publish; the group's fsync follows all the same.
            (_, QoS::AtMostOnce) | (AckPolicy::Received, _) => Durability::Written,
            (AckPolicy::Durable, _) => Durability::Synced,
        };
        let sender = match (who, session.id.remote_addr) {
            (Principal::Anonymous, Some(addr)) => format!("mqtt client '{client}' {addr}"),
            (Principal::Identity(name), Some(addr)) => format!("mqtt client '{client}' {addr} ({name})"),
            (_, None) => format!("mqtt client '{client}' ({who})"),
        };
        let parcel = Parcel {
            payload: publish.payload.clone(),
            format,
            event_time: None,
            address: format!("topic {topic}"),
            sender,
            durability,
        };
        Ok(target.submit(parcel).await?)
    }

    /// Publishes the outcome to the MQTT 5 response topic, for the sender alone, with its
    /// correlation data.
    async fn reply(
        &self,
        session: &Session,
        properties: &PublishProperties,
        outcome: &Result<Accepted, IntakeError>,
    ) {
        let Some(topic) = properties.response_topic.clone() else { return };
        if topic.contains(['+', '#']) {
            return;
        }
        let body = match outcome {
            Ok(accepted) => json!({
                "dataset": accepted.dataset,
                "source": accepted.source,
                "accepted": accepted.records,
                "rejected": accepted.rejected,
                "quarantine_id": accepted.quarantine_id,
            }),
            Err(IntakeError::Submit(SubmitError::Rejected { source_name, rejections, quarantine_id })) => {
                json!({
                    "source": source_name,
                    "accepted": 0,
                    "rejected": rejections,
                    "quarantine_id": quarantine_id,
                    "error": "no record of the payload fits the source",
                })
            }
            Err(refusal) => json!({ "accepted": 0, "error": refusal.to_string() }),
        };
        let properties = PublishProperties {
            correlation_data: properties.correlation_data.clone(),
            content_type: Some(ByteString::from_static("application/json")),
            ..PublishProperties::default()
        };
        let publish = CodecPublish {
            dup: false,
            retain: false,
            qos: QoS::AtMostOnce,
            topic,
            packet_id: None,
            payload: serde_json::to_vec(&body).unwrap_or_default().into(),
            properties: Some(properties),
        };
        let from = From::from_system(Id::new(
            self.scx.node.id(),
            0,
            None,
            None,
            ByteString::from_static("odf-gateway"),
            None,
        ));
        let message = Publish::from(publish)
            .target_clientid(session.id.client_id.clone())
            .create_time(chrono::Utc::now().timestamp_millis());
        if let Err(e) = SessionState::forwards(&self.scx, from, message, false, None).await {
            tracing::debug!(client = %session.id.client_id, "cannot send the reply to the response topic: {e}");
        }
    }
}

/// Who a connection is: the identity its username named (its password was verified at
/// CONNECT), the identity of its client certificate, or anonymous.
pub(super) fn principal_of(access: &AccessTable, info: Option<&ConnectInfo>) -> Principal {
    let Some(info) = info else { return Principal::Anonymous };
    if let Some(name) = info.username() {
        return Principal::Identity(name.to_string());
    }
    if let Some(cert) = info.cert() {
        if let Ok(principal) = access.by_certificate(&cert.subject, cert.common_name.as_deref()) {
            return principal;
        }
    }
    Principal::Anonymous
}

/// What the intake knows of an MQTT sender.
fn caller_of<'a>(who: &'a Principal, info: &'a ConnectInfo) -> Caller<'a> {
    let cert = info.cert().map(|c| (c.subject.as_str(), c.common_name.as_deref()));
    Caller { principal: who, transport: Transport::Mqtt, client_id: Some(&info.id().client_id), cert }
}

fn reason_code(outcome: &Result<Accepted, IntakeError>) -> PublishAckReason {
    match outcome {
        Ok(_) => PublishAckReason::Success,
        Err(IntakeError::NoRoute(_)) => PublishAckReason::TopicNameInvalid,
        Err(IntakeError::CredentialsRequired(_) | IntakeError::Forbidden(_)) => {
            PublishAckReason::NotAuthorized
        }
        Err(IntakeError::UnsupportedFormat(_)) => PublishAckReason::PayloadFormatInvalid,
        Err(IntakeError::Submit(e)) => match e {
            SubmitError::Rejected { .. } => PublishAckReason::PayloadFormatInvalid,
            SubmitError::Busy { .. } => PublishAckReason::QuotaExceeded,
            SubmitError::UnknownDataset { .. } | SubmitError::Source(_) => PublishAckReason::TopicNameInvalid,
            SubmitError::Unavailable(_) | SubmitError::Uncertain(_) => PublishAckReason::UnspecifiedError,
        },
    }
}

/// The hook's verdict: the reason code for MQTT 5; for 3.1.1, an acknowledgement or a
/// disconnect (see the module's doc).
fn verdict(outcome: Result<Accepted, IntakeError>, v5: bool) -> PublishAclResult {
    let reason = reason_code(&outcome);
    let Err(refusal) = outcome else { return PublishAclResult::allow() };
    let text = refusal.to_string();
    tracing::debug!("publish refused ({reason:?}): {text}");
    if v5 {
        // A reason string is for people; MQTT caps it with the packet, so keep it short.
        let text: String = text.chars().take(256).collect();
        return PublishAclResult(PublishResult::reason_code(reason, Some(ByteString::from(text)), false));
    }
    match reason {
        // In the quarantine already: acknowledged, so that it is not sent again for ever.
        PublishAckReason::PayloadFormatInvalid => PublishAclResult::allow(),
        _ => PublishAclResult(PublishResult::reason_code(reason, Some(ByteString::from(text)), true)),
    }
}
