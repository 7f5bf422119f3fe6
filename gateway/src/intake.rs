//! The one way in for data, whatever carried it: the HTTP API, the MQTT broker and its
//! upstream bridges, CoAP, and the event-queue consumers to come. A transport says where a
//! payload is addressed (a topic or a path) and who sends it; the intake decides, in this
//! order, the route, whether the sender may write to that dataset at all, the dataset, its push
//! source, and whether the sender may write to that source. Grants come before existence, so
//! that a sender learns nothing of a dataset it may not write to, and the datasets and sources
//! an error lists are only those it may write to.
//!
//! The answer is a `Target` that takes the payload, or an `IntakeError` that each transport
//! words once in its own protocol (an HTTP status, an MQTT 5 reason code, a CoAP code). A
//! target holds the dataset's pipeline, the push source itself and the column rules of its
//! sender, so that the pipeline never looks the source up again.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::access::{AccessTable, Caller, Principal};
use crate::ingest::{ColumnBinding, IngestError, InputFormat};
use crate::pipeline::{Accepted, DatasetPipeline, Durability, Pipeline, SourceInfo, Submission, SubmitError};
use crate::routes::{Resolved, RouteTable, Transport};

/// Why a payload is not let in, before or while it is submitted.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// No route matches the topic or path.
    #[error("{0}")]
    NoRoute(String),
    /// An anonymous sender, where anonymous senders may not write: it should bring credentials.
    #[error("{0}")]
    CredentialsRequired(String),
    /// A known sender that may not write there.
    #[error("{0}")]
    Forbidden(String),
    /// The content type the sender declared names no format the gateway reads.
    #[error("{0}")]
    UnsupportedFormat(String),
    /// What the pipeline said: no such dataset or source, a dataset that could not be
    /// opened, no record fits, backpressure, an outage.
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

/// Routes, grants and datasets, for every transport.
pub struct Intake {
    pipeline: Arc<Pipeline>,
    routes: Arc<RouteTable>,
    access: Arc<AccessTable>,
}

/// Where an admitted sender's payloads go.
pub struct Target {
    dataset: Arc<DatasetPipeline>,
    source: Arc<SourceInfo>,
    route: Resolved,
    /// The rules each record must keep: the route's bound captures and the sender's grant's.
    bindings: Vec<ColumnBinding>,
    transport: Transport,
}

/// A payload for a target, with what its transport knows of it.
pub struct Parcel {
    /// Shared with the transport's buffer, not copied.
    pub payload: Bytes,
    /// The format the sender declared; `None` reads it in the source's own.
    pub format: Option<InputFormat>,
    /// The event time of records that carry none; else the time it was received.
    pub event_time: Option<DateTime<Utc>>,
    /// The concrete path or topic, for the quarantine.
    pub address: String,
    /// Who sent it (peer, client id, identity), for errors and the quarantine.
    pub sender: String,
    pub durability: Durability,
}

impl Intake {
    pub fn new(pipeline: Arc<Pipeline>, routes: Arc<RouteTable>, access: Arc<AccessTable>) -> Intake {
        Intake { pipeline, routes, access }
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Where a write from `caller` to `address` goes, once the route, the grants, the dataset
    /// and the source allow it.
    pub fn admit(&self, address: &str, caller: &Caller) -> Result<Target, IntakeError> {
        let route = self.route(address, caller.transport)?;
        self.admit_to(route, caller)
    }

    /// As `admit`, for a route the transport resolved itself (kamu's `/{dataset}/ingest`).
    pub fn admit_to(&self, route: Resolved, caller: &Caller) -> Result<Target, IntakeError> {
        let who = caller.principal;
        if !self.access.may_write_some(who, &route.dataset) {
            return Err(not_allowed(who, &format!("may not write to dataset '{}'", route.dataset)));
        }
        let (dataset, source) = self.locate(&route).map_err(|e| self.within_grants(who, &route, e))?;
        if !self.access.may_write(who, dataset.name().as_str(), source.name.as_str()) {
            return Err(IntakeError::Forbidden(format!(
                "{who} may not write to {}/{}",
                dataset.name(),
                source.name
            )));
        }
        let bindings = self.access.bindings(caller, &route, source.name.as_str());
        Ok(Target { dataset, source, route, bindings, transport: caller.transport })
    }

    /// A write the operator configured (a bridge or consumer without an identity of its own):
    /// wherever its routes lead, bound only by what the routes bind.
    pub fn admit_configured(&self, address: &str, transport: Transport) -> Result<Target, IntakeError> {
        self.admit_configured_to(self.route(address, transport)?, transport)
    }

    /// As `admit_configured`, for a target the configuration names itself.
    pub fn admit_configured_to(&self, route: Resolved, transport: Transport) -> Result<Target, IntakeError> {
        let (dataset, source) = self.locate(&route)?;
        let bindings = route.bindings();
        Ok(Target { dataset, source, route, bindings, transport })
    }

    /// The route an address takes.
    pub fn route(&self, address: &str, transport: Transport) -> Result<Resolved, IntakeError> {
        self.routes.resolve(address, transport).ok_or_else(|| {
            let (what, default) = match transport {
                Transport::Mqtt => ("topic", "publish to datasets/{dataset}/sources/{source}"),
                Transport::Http | Transport::Coap => ("path", "POST to datasets/{dataset}/sources/{source}"),
                Transport::Kafka => ("Kafka topic", "name the topic datasets.{dataset}.sources.{source}"),
            };
            IntakeError::NoRoute(format!("no route for {what} '{address}': {default} or configure a route"))
        })
    }

    /// The dataset and push source a route names, for reads as well as writes; no grant is
    /// checked here.
    pub fn locate(&self, route: &Resolved) -> Result<(Arc<DatasetPipeline>, Arc<SourceInfo>), IntakeError> {
        let dataset = self.pipeline.dataset(&route.dataset)?;
        let source = dataset.resolve(route.source.as_deref()).map_err(SubmitError::Source)?;
        Ok((dataset.clone(), source.clone()))
    }
}

impl Intake {
    /// An error about what does not exist, listing only the datasets and sources `who` may
    /// write to.
    fn within_grants(&self, who: &Principal, route: &Resolved, error: IntakeError) -> IntakeError {
        let may_source = |source: &String| self.access.may_write(who, &route.dataset, source);
        let error = match error {
            IntakeError::Submit(SubmitError::UnknownDataset { name, mut known }) => {
                known.retain(|d| self.access.may_write_some(who, d));
                SubmitError::UnknownDataset { name, known }
            }
            IntakeError::Submit(SubmitError::Source(IngestError::UnknownSource {
                dataset,
                source_name,
                mut known,
            })) => {
                known.retain(may_source);
                SubmitError::Source(IngestError::UnknownSource { dataset, source_name, known })
            }
            IntakeError::Submit(SubmitError::Source(IngestError::SourceNotNamed { dataset, mut known })) => {
                known.retain(may_source);
                SubmitError::Source(IngestError::SourceNotNamed { dataset, known })
            }
            other => return other,
        };
        IntakeError::Submit(error)
    }
}

impl Target {
    pub fn dataset(&self) -> &Arc<DatasetPipeline> {
        &self.dataset
    }

    pub fn source(&self) -> &SourceInfo {
        &self.source
    }

    /// The pattern of the route it took.
    pub fn route(&self) -> &str {
        &self.route.route
    }

    /// Hands a payload to the dataset's pipeline: once it returns `Ok`, the payload is in the
    /// write-ahead log (on disk, unless the parcel's durability said otherwise).
    pub async fn submit(self, parcel: Parcel) -> Result<Accepted, SubmitError> {
        let Target { dataset, source, route, bindings, transport } = self;
        let Parcel { payload, format, event_time, address, sender, durability } = parcel;
        let submission = Submission {
            format,
            payload,
            columns: route.columns,
            bindings,
            event_time,
            transport,
            route: route.route,
            address,
            sender,
            durability,
        };
        dataset.submit(&source, submission).await
    }

    /// A payload for this target as the pipeline takes it, with values for columns besides
    /// the route's captures (a Kafka record's key, say).
    pub fn submission(&self, parcel: Parcel, columns: Vec<(String, String)>) -> Submission {
        let Parcel { payload, format, event_time, address, sender, durability } = parcel;
        let mut all = self.route.columns.clone();
        all.extend(columns);
        Submission {
            format,
            payload,
            columns: all,
            bindings: self.bindings.clone(),
            event_time,
            transport: self.transport,
            route: self.route.route.clone(),
            address,
            sender,
            durability,
        }
    }
}

/// The format a declared media type names; `None` (the source's own) for none and for what
/// generic clients send when nobody chose a type (`curl -d` sends a form type).
pub fn declared_format(media_type: Option<&str>) -> Result<Option<InputFormat>, IntakeError> {
    let Some(text) = media_type else { return Ok(None) };
    let essence = text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if matches!(
        essence.as_str(),
        "" | "text/plain" | "application/octet-stream" | "application/x-www-form-urlencoded"
    ) {
        return Ok(None);
    }
    InputFormat::from_media_type(text).map(Some).map_err(IntakeError::UnsupportedFormat)
}

/// Anonymous senders are asked for credentials; a known one is told it may not.
fn not_allowed(who: &Principal, what: &str) -> IntakeError {
    match who {
        Principal::Anonymous => IntakeError::CredentialsRequired(format!("anonymous senders {what}")),
        who => IntakeError::Forbidden(format!("{who} {what}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_media_types_mean_the_sources_own_format() {
        for generic in [None, Some(""), Some("text/plain; charset=utf-8"), Some("application/octet-stream")] {
            assert!(matches!(declared_format(generic), Ok(None)), "{generic:?}");
        }
        assert!(matches!(declared_format(Some("application/x-ndjson")), Ok(Some(InputFormat::NdJson))));
        assert!(matches!(declared_format(Some("text/csv; header=present")), Ok(Some(InputFormat::Csv))));
        assert!(matches!(declared_format(Some("image/png")), Err(IntakeError::UnsupportedFormat(_))));
    }
}
