//! The quarantine over HTTP: `GET /datasets/{ds}/quarantine` (entries without payloads),
//! `GET /datasets/{ds}/quarantine/{id}` (one, with its payload as base64) and
//! `DELETE /datasets/{ds}/quarantine[?before=RFC3339]`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::HttpState;
use super::auth::{Peer, principal};
use super::datasets::readable;
use super::reply::ApiError;
use crate::pipeline::QuarantineError;

pub async fn list(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pipeline = readable(&state, &peer, &headers, &name).await?;
    let listed = tokio::task::spawn_blocking(move || pipeline.quarantine().list())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(quarantine_error)?;
    let mut entries = Vec::new();
    let mut unreadable = Vec::new();
    for entry in listed {
        match entry {
            Ok(summary) => entries.push(summary),
            Err(e) => unreadable.push(e.to_string()),
        }
    }
    Ok(axum::Json(json!({ "dataset": name, "entries": entries, "unreadable": unreadable })).into_response())
}

pub async fn show(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pipeline = readable(&state, &peer, &headers, &name).await?;
    let entry = tokio::task::spawn_blocking(move || pipeline.quarantine().get(&id))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(quarantine_error)?;
    Ok(axum::Json(entry).into_response())
}

pub async fn purge(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pipeline = readable(&state, &peer, &headers, &name).await?;
    // Reading the quarantine takes a read grant; clearing it takes a write grant as well.
    let who = principal(&state.access, &headers, &peer).await?;
    if !state.access.may_write_some(&who, &name) {
        return Err(ApiError::forbidden(format!("{who} may not purge the quarantine of '{name}'")));
    }
    let before = match params.get("before") {
        None => None,
        Some(text) => Some(
            DateTime::parse_from_rfc3339(text)
                .map_err(|e| ApiError::bad_request(format!("before: '{text}' is not an RFC 3339 time: {e}")))?
                .with_timezone(&Utc),
        ),
    };
    let removed = tokio::task::spawn_blocking(move || pipeline.quarantine().purge(before))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(quarantine_error)?;
    Ok(axum::Json(json!({ "dataset": name, "removed": removed })).into_response())
}

fn quarantine_error(e: QuarantineError) -> ApiError {
    match e {
        QuarantineError::NotFound(_) => ApiError::not_found(e.to_string()),
        e => ApiError::internal(e.to_string()),
    }
}
