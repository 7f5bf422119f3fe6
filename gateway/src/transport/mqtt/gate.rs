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
use rmqtt::codec::v5::{PublishAckReason, PublishProperties, SubscribeAckReason};
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::session::{Session, SessionState};
use rmqtt::types::{
    AuthResult, CodecPublish, ConnectInfo, From, Id, Publish, PublishAclResult, PublishResult, QoS,
    SubscribeAclResult,
};
use serde_json::json;

use crate::access::{AccessTable, Caller, Denied, Principal};
use crate::ingest::InputFormat;
use crate::pipeline::{Accepted, Durability, Pipeline, Submission, SubmitError};
use crate::routes::{RouteTable, Transport};

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
    pub pipeline: Arc<Pipeline>,
    pub routes: Arc<RouteTable>,
    pub access: Arc<AccessTable>,
    pub ack: AckPolicy,
    /// For replies to MQTT 5 response topics; set once the broker's context exists.
    pub scx: ServerContext,
}

/// Why a publish was not taken.
enum Refusal {
    NoRoute(String),
    NotAuthorized(String),
    BadFormat(String),
    Submit(SubmitError),
}

#[async_trait::async_trait]
impl Handler for Gate {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(info) => {
                (false, Some(HookResult::AuthResult(self.authenticate(info).await)))
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                (false, Some(HookResult::PublishAclResult(self.publish(session, publish).await)))
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
            Parameter::ClientConnected(_) => {
                metrics::gauge!("odf_mqtt_connected_clients").increment(1.0);
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
    /// clients are allowed). Never a superuser: a superuser skips the publish hook.
    async fn authenticate(&self, info: &ConnectInfo) -> AuthResult {
        let verdict = match (info.username(), info.password(), info.cert()) {
            (Some(name), Some(password), _) => self.access.by_password_async(name, password).await,
            (Some(_), None, _) => Err(Denied::BadCredentials),
            (None, _, Some(cert)) => self.access.by_certificate(&cert.subject, cert.common_name.as_deref()),
            (None, _, None) => self.access.anonymous(),
        };
        match verdict {
            Ok(_) => AuthResult::Allow(false, None),
            Err(Denied::NoCredentials) => AuthResult::NotAuthorized,
            Err(Denied::BadCredentials) => AuthResult::BadUsernameOrPassword,
        }
    }

    async fn publish(&self, session: &Session, publish: &Publish) -> PublishAclResult {
        let started = Instant::now();
        let info = session.connect_info().await.ok();
        let v5 = info.as_ref().is_some_and(|c| c.proto_ver() == MQTT_LEVEL_5);
        let principal = principal_of(&self.access, info.as_deref());
        let outcome = self.ingest(session, publish, &principal).await;
        let reason = reason_code(&outcome);
        metrics::counter!("odf_mqtt_publishes_total", "reason" => format!("{reason:?}")).increment(1);
        metrics::counter!("odf_mqtt_publish_bytes_total").increment(publish.payload.len() as u64);
        if outcome.is_ok() {
            metrics::histogram!("odf_mqtt_publish_to_ack_seconds").record(started.elapsed().as_secs_f64());
        }
        if let Some(properties) = publish.properties.as_ref().filter(|p| p.response_topic.is_some()) {
            self.reply(session, properties, &outcome).await;
        }
        verdict(outcome, v5)
    }

    async fn ingest(
        &self,
        session: &Session,
        publish: &Publish,
        who: &Principal,
    ) -> Result<Accepted, Refusal> {
        let topic: &str = &publish.topic;
        let target = self
            .routes
            .resolve(topic, Transport::Mqtt)
            .ok_or_else(|| Refusal::NoRoute(format!("no route for topic '{topic}': publish to datasets/{{dataset}}/sources/{{source}} or a configured route")))?;
        if !self.access.may_write_some(who, &target.dataset) {
            return Err(Refusal::NotAuthorized(format!(
                "{who} may not write to dataset '{}'",
                target.dataset
            )));
        }
        let dataset = self.pipeline.dataset(&target.dataset).map_err(|e| Refusal::NoRoute(e.to_string()))?;
        let source =
            dataset.resolve(target.source.as_deref()).map_err(|e| Refusal::NoRoute(e.to_string()))?;
        let source_name = source.definition.source_name.clone();
        if !self.access.may_write(who, &target.dataset, &source_name) {
            return Err(Refusal::NotAuthorized(format!(
                "{who} may not write to {}/{source_name}",
                target.dataset
            )));
        }
        let format = match publish.properties.as_ref().and_then(|p| p.content_type.as_ref()) {
            None => None,
            Some(media) => Some(InputFormat::from_media_type(media).map_err(Refusal::BadFormat)?),
        };
        let durability = match (self.ack, publish.qos) {
            // Nobody waits for a QoS 0 publish; the group's fsync follows all the same.
            (_, QoS::AtMostOnce) | (AckPolicy::Received, _) => Durability::Written,
            (AckPolicy::Durable, _) => Durability::Synced,
        };
        let client: &str = &session.id.client_id;
        let info = session.connect_info().await.ok();
        let cert = info.as_ref().and_then(|i| i.cert());
        let caller = Caller {
            principal: who,
            transport: Transport::Mqtt.as_str(),
            client_id: Some(client),
            cert: cert.map(|c| (c.subject.as_str(), c.common_name.as_deref())),
        };
        let bindings = self.access.bindings(&caller, &target, &source_name);
        let sender = match (who, session.id.remote_addr) {
            (Principal::Anonymous, Some(addr)) => format!("mqtt client '{client}' {addr}"),
            (Principal::Identity(name), Some(addr)) => format!("mqtt client '{client}' {addr} ({name})"),
            (_, None) => format!("mqtt client '{client}' ({who})"),
        };
        let submission = Submission {
            dataset: target.dataset,
            source: Some(source_name),
            format,
            payload: publish.payload.to_vec(),
            columns: target.columns,
            bindings,
            event_time: None,
            transport: Transport::Mqtt.as_str(),
            route: target.route,
            address: format!("topic {topic}"),
            sender,
            durability,
        };
        dataset.submit(submission).await.map_err(Refusal::Submit)
    }

    /// Publishes the outcome to the MQTT 5 response topic, for the sender alone, with its
    /// correlation data.
    async fn reply(
        &self,
        session: &Session,
        properties: &PublishProperties,
        outcome: &Result<Accepted, Refusal>,
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
            Err(Refusal::Submit(SubmitError::Rejected { source_name, rejections, quarantine_id })) => json!({
                "source": source_name,
                "accepted": 0,
                "rejected": rejections,
                "quarantine_id": quarantine_id,
                "error": "no record of the payload fits the source",
            }),
            Err(refusal) => json!({ "accepted": 0, "error": describe(refusal) }),
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
fn principal_of(access: &AccessTable, info: Option<&ConnectInfo>) -> Principal {
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

fn reason_code(outcome: &Result<Accepted, Refusal>) -> PublishAckReason {
    match outcome {
        Ok(_) => PublishAckReason::Success,
        Err(Refusal::NoRoute(_)) => PublishAckReason::TopicNameInvalid,
        Err(Refusal::NotAuthorized(_)) => PublishAckReason::NotAuthorized,
        Err(Refusal::BadFormat(_)) => PublishAckReason::PayloadFormatInvalid,
        Err(Refusal::Submit(e)) => match e {
            SubmitError::Rejected { .. } => PublishAckReason::PayloadFormatInvalid,
            SubmitError::Busy { .. } => PublishAckReason::QuotaExceeded,
            SubmitError::UnknownDataset { .. } | SubmitError::Source(_) => PublishAckReason::TopicNameInvalid,
            SubmitError::Unavailable(_) | SubmitError::Uncertain(_) => PublishAckReason::UnspecifiedError,
        },
    }
}

fn describe(refusal: &Refusal) -> String {
    match refusal {
        Refusal::NoRoute(m) | Refusal::NotAuthorized(m) | Refusal::BadFormat(m) => m.clone(),
        Refusal::Submit(e) => e.to_string(),
    }
}

/// The hook's verdict: the reason code for MQTT 5; for 3.1.1, an acknowledgement or a
/// disconnect (see the module's doc).
fn verdict(outcome: Result<Accepted, Refusal>, v5: bool) -> PublishAclResult {
    let reason = reason_code(&outcome);
    let Err(refusal) = outcome else { return PublishAclResult::allow() };
    let text = describe(&refusal);
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
