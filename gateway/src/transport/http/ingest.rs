//! Pushing data over HTTP: `POST /datasets/{dataset}/sources/{source}` (and
//! `/datasets/{dataset}`, and any configured route), and kamu's own
//! `POST /{dataset}/ingest?sourceName=` with its `odf-event-time` header.
//!
//! The Content-Type chooses the format (NdJson, Json, CSV, CBOR); none, `text/plain`,
//! `application/octet-stream` or curl's default form type mean the source's own. The reply
//! is 202 once the payload is in the write-ahead log (200 after the commit with
//! `?wait=commit`, and always for kamu's endpoint), with the records accepted and each one
//! rejected; 400 when none fits; 413 past the body limit; 408 for a body that came too
//! slowly; 503 with Retry-After under backpressure, or when the bodies being received hold
//! `http.max_body_buffer` already.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::HttpState;
use super::auth::{Peer, principal};
use super::body::{self, BodyError};
use super::reply::ApiError;
use crate::access::Caller;
use crate::intake::{Parcel, declared_format};
use crate::pipeline::Durability;
use crate::routes::{Resolved, Transport};

/// How long the body of a refused request is read for before the answer goes out anyway.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The header kamu's clients send with the event time of records that carry none.
const EVENT_TIME_HEADER: &str = "odf-event-time";

pub async fn routed(State(state): State<Arc<HttpState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(peer) = parts.extensions.get::<Peer>().cloned() else {
        return ApiError::internal("the request has no connection information").into_response();
    };
    let path = parts.uri.path();
    let wait = parts.uri.query().is_some_and(|q| q.split('&').any(|p| p == "wait=commit"));
    let push =
        Push { to: To::Address(path.to_owned()), line: format!("POST {path}"), event_time: None, wait };
    push.answer(&state, &peer, &parts.headers, body).await
}

pub async fn kamu(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    Path(dataset): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let event_time = match headers.get(EVENT_TIME_HEADER).map(|v| v.to_str().map(str::to_owned)) {
        None => None,
        Some(Ok(text)) => match DateTime::parse_from_rfc3339(text.trim()) {
            Ok(time) => Some(time.with_timezone(&Utc)),
            Err(e) => {
                return ApiError::bad_request(format!(
                    "{EVENT_TIME_HEADER}: '{text}' is not an RFC 3339 time: {e}"
                ))
                .into_response();
            }
        },
        Some(Err(_)) => {
            return ApiError::bad_request(format!("{EVENT_TIME_HEADER} is not text")).into_response();
        }
    };
    let push = Push {
        line: format!("POST /{dataset}/ingest"),
        to: To::Route(Resolved {
            dataset,
            source: params.get("sourceName").cloned(),
            columns: Vec::new(),
            route: "{dataset}/ingest".into(),
            bind_captures: false,
        }),
        event_time,
        wait: true,
    };
    push.answer(&state, &peer, &headers, body).await
}

/// A push, before the intake has admitted it.
struct Push {
    to: To,
    /// The request line, for the quarantine.
    line: String,
    event_time: Option<DateTime<Utc>>,
    /// Answer after the commit rather than after the write-ahead log.
    wait: bool,
}

/// Where a push is addressed.
enum To {
    /// A path, for the route table.
    Address(String),
    /// A route the endpoint itself names (kamu's).
    Route(Resolved),
}

impl Push {
    /// The reply. A request refused before its body was read has the body read and dropped
    /// first (up to the body limit), so that the client sees the answer rather than a reset
    /// connection or stream.
    async fn answer(self, state: &HttpState, peer: &Peer, headers: &HeaderMap, body: Body) -> Response {
        let mut body = Some(body);
        match self.run(state, peer, headers, &mut body).await {
            Ok(response) => response,
            Err(error) => {
                if let Some(body) = body.filter(|_| announced(headers).is_none_or(|n| n <= state.max_body)) {
                    body::drain(body, state.max_body, DRAIN_TIMEOUT).await;
                }
                error.into_response()
            }
        }
    }

    async fn run(
        self,
        state: &HttpState,
        peer: &Peer,
        headers: &HeaderMap,
        body: &mut Option<Body>,
    ) -> Result<Response, ApiError> {
        let Push { to, line, event_time, wait } = self;
        let who = principal(&state.access, headers, peer).await?;
        let caller = Caller {
            principal: &who,
            transport: Transport::Http,
            client_id: None,
            cert: peer.cert.as_ref().map(|(subject, cn)| (subject.as_str(), cn.as_deref())),
        };
        let target = match to {
            To::Address(path) => state.intake.admit(&path, &caller),
            To::Route(route) => state.intake.admit_to(route, &caller),
        }?;
        let media_type = headers.get(header::CONTENT_TYPE).map(|v| v.to_str());
        let format = match media_type {
            None => None,
            Some(Ok(text)) => declared_format(Some(text))?,
            Some(Err(_)) => return Err(ApiError::bad_request("Content-Type is not text")),
        };
        let dataset = target.dataset().clone();
        // Refused before the body is read when it could not be taken anyway.
        let announced = announced(headers);
        if let Some(length) = announced {
            if length > state.max_body {
                return Err(too_big(state.max_body));
            }
            dataset.would_take(length)?;
        }
        let body = body.as_mut().ok_or_else(|| ApiError::internal("the body was read already"))?;
        // Held against the body budget until the pipeline has taken the payload.
        let (payload, held) = body::collect(body, state.max_body, announced, &state.body_budget)
            .await
            .map_err(|e| match e {
                BodyError::TooBig { limit } => too_big(limit),
                e => body_error(e),
            })?;
        let parcel = Parcel {
            payload: payload.into(),
            format,
            event_time,
            address: line,
            sender: peer.describe(&who),
            durability: Durability::Synced,
        };
        let accepted = target.submit(parcel).await;
        // The pipeline's own budget holds the payload from here on.
        drop(held);
        let accepted = accepted?;
        let committed = match (wait, accepted.seq) {
            (true, Some(seq)) => dataset.wait_committed(seq, state.commit_wait).await,
            (true, None) => true,
            (false, _) => false,
        };
        let status = if committed { StatusCode::OK } else { StatusCode::ACCEPTED };
        let body = json!({
            "dataset": accepted.dataset,
            "source": accepted.source,
            "accepted": accepted.records,
            "rejected": accepted.rejected,
            "quarantine_id": accepted.quarantine_id,
            "committed": committed,
        });
        Ok((status, axum::Json(body)).into_response())
    }
}

/// The length a request announces.
fn announced(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
}

/// A body that could not be read, in HTTP terms.
pub(super) fn body_error(error: BodyError) -> ApiError {
    let message = error.to_string();
    match error {
        BodyError::TooBig { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message),
        BodyError::Busy { .. } => ApiError::unavailable(message, std::time::Duration::from_secs(1)),
        BodyError::TooSlow(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, message),
        BodyError::Read(_) => ApiError::bad_request(message),
    }
}

fn too_big(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is over the limit of {limit} bytes (http.max_body); send smaller batches"),
    )
}
