//! Reading datasets over HTTP: `GET /datasets` (every dataset the caller may read),
//! `GET /datasets/{ds}` (sources, schema, head, records, pipeline state, sync to remotes),
//! `GET /datasets/{ds}/sources/{src}` (a source's read schema and format) and
//! `GET /datasets/{ds}/tail?limit=N` (the last records; JSON lines, or CSV with
//! `format=csv` or `Accept: text/csv`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::HttpState;
use super::auth::{Peer, principal};
use super::reply::ApiError;
use crate::access::Principal;
use crate::pipeline::{DatasetPipeline, Phase};
use crate::query::DatasetReader;
use crate::sync::SyncBoard;

const MAX_TAIL: usize = 10_000;

pub async fn list(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = principal(&state.access, &headers, &peer).await?;
    let names: Vec<String> = state.readable_datasets(&who);
    let state2 = state.clone();
    let described = blocking(move || {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        state2.readers.with_all(&refs, |readers| {
            readers
                .iter()
                .map(|r| describe(r, state2.pipeline.dataset(r.dataset().name().as_str()).ok(), &state2.sync))
                .collect::<Vec<_>>()
        })
    })
    .await?;
    Ok(axum::Json(json!({ "datasets": described })).into_response())
}

pub async fn show(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pipeline = readable(&state, &peer, &headers, &name).await?;
    let state2 = state.clone();
    let body =
        blocking(move || state2.readers.with(&name, |r| describe(r, Some(&pipeline), &state2.sync))).await?;
    Ok(axum::Json(body).into_response())
}

pub async fn source(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    Path((name, source)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pipeline = readable(&state, &peer, &headers, &name).await?;
    // A disabled source is described too (its `active` says so).
    let found = pipeline.sources().iter().find(|s| s.definition.source_name == source);
    match found {
        Some(found) => Ok(axum::Json(describe_source(found)).into_response()),
        None => Err(ApiError::not_found(
            pipeline.resolve(Some(&source)).err().map(|e| e.to_string()).unwrap_or_default(),
        )),
    }
}

pub async fn tail(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    readable(&state, &peer, &headers, &name).await?;
    let limit = match params.get("limit") {
        None => 10,
        Some(text) => text.parse::<usize>().ok().filter(|&n| n > 0 && n <= MAX_TAIL).ok_or_else(|| {
            ApiError::bad_request(format!("limit '{text}' is not a number from 1 to {MAX_TAIL}"))
        })?,
    };
    let csv = params.get("format").is_some_and(|f| f == "csv")
        || headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    let state2 = state.clone();
    let records =
        blocking(move || state2.readers.with(&name, |r| r.tail(limit))).await?.map_err(query_error)?;
    let mut bytes = Vec::new();
    if let Some(records) = records {
        let written = if csv {
            arrow::csv::WriterBuilder::new().with_header(true).build(&mut bytes).write(&records)
        } else {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut bytes);
            writer.write(&records).and_then(|()| writer.finish())
        };
        written.map_err(|e| ApiError::internal(format!("cannot format the records: {e}")))?;
    }
    let media = if csv { "text/csv" } else { "application/x-ndjson" };
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(media))], bytes).into_response())
}

/// The dataset's pipeline, once the caller is known to be allowed to read it.
pub async fn readable(
    state: &HttpState,
    peer: &Peer,
    headers: &HeaderMap,
    name: &str,
) -> Result<Arc<DatasetPipeline>, ApiError> {
    let who = principal(&state.access, headers, peer).await?;
    if !state.access.may_query(&who, name) {
        return Err(denied(&who, name));
    }
    let pipeline = state.pipeline.dataset(name)?.clone();
    Ok(pipeline)
}

pub fn denied(who: &Principal, dataset: &str) -> ApiError {
    ApiError::forbidden(format!("{who} may not read dataset '{dataset}'"))
}

/// Runs blocking work (reading the chain, slices) off the runtime's workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::query::QueryError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(e.to_string()))?.map_err(query_error)
}

pub fn query_error(e: crate::query::QueryError) -> ApiError {
    match e {
        crate::query::QueryError::Store(crate::store::StoreError::NotFound { .. }) => {
            ApiError::not_found(e.to_string())
        }
        crate::query::QueryError::Refused(_) | crate::query::QueryError::Sql(_) => {
            ApiError::bad_request(e.to_string())
        }
        e => ApiError::internal(e.to_string()),
    }
}

fn describe(reader: &DatasetReader, pipeline: Option<&Arc<DatasetPipeline>>, sync: &SyncBoard) -> Value {
    let state = reader.dataset().state();
    let schema = reader.dataset().arrow_schema().ok().flatten();
    let columns: Vec<Value> = schema
        .iter()
        .flat_map(|s| s.fields().iter().map(|f| json!({ "name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable() })).collect::<Vec<_>>())
        .collect();
    let (phase, failing, log_damage, pending, quarantined, sources) = match pipeline {
        Some(p) => {
            let health = p.health();
            let (pending, _) = p.pending();
            let sources: Vec<Value> = p.sources().iter().map(|s| describe_source(s)).collect();
            let damage: Vec<Value> = health.log_damage.iter().map(describe_log_damage).collect();
            (
                phase_name(&health.phase),
                health.failing,
                damage,
                pending,
                p.quarantine().len().unwrap_or(0),
                sources,
            )
        }
        None => ("unknown".to_owned(), None, Vec::new(), 0, 0, Vec::new()),
    };
    json!({
        "name": reader.dataset().name().as_str(),
        "id": state.dataset_id.as_ref().map(ToString::to_string),
        "head": state.head.as_ref().map(ToString::to_string),
        "blocks": state.blocks,
        "records": state.records(),
        "data_slices": reader.slices().len(),
        "data_bytes": state.data_size,
        "watermark": state.watermark,
        "schema": columns,
        "sources": sources,
        "pipeline": {
            "state": phase,
            "failing": failing,
            "pending_bytes": pending,
            "quarantined": quarantined,
            "lost_records": log_damage,
        },
        "sync": sync.of(reader.dataset().name().as_str()),
    })
}

fn describe_source(source: &crate::pipeline::SourceInfo) -> Value {
    let d = &source.definition;
    let read = serde_json::to_value(&d.read).unwrap_or(Value::Null);
    json!({
        "name": d.source_name,
        "active": source.active,
        "format": read.get("kind"),
        "read": read,
        "merge": serde_json::to_value(&d.merge).unwrap_or(Value::Null),
    })
}

/// A damaged range of the write-ahead log, as operators read it: acknowledged records that
/// could not be committed.
pub fn describe_log_damage(damage: &crate::pipeline::LogDamage) -> Value {
    let seqs = match damage.seqs {
        crate::pipeline::LostSeqs::None => json!(null),
        crate::pipeline::LostSeqs::Range(first, last) => json!({ "first": first, "last": last }),
        crate::pipeline::LostSeqs::From(first) => json!({ "first": first, "last": null }),
    };
    json!({
        "segment": damage.segment,
        "bytes": [damage.start, damage.end],
        "seqs": seqs,
        "kept_in": damage.kept_in.display().to_string(),
    })
}

pub fn phase_name(phase: &Phase) -> String {
    match phase {
        Phase::Starting => "starting".into(),
        Phase::Replaying => "replaying".into(),
        Phase::Ready => "ready".into(),
        Phase::Failed(reason) => format!("failed: {reason}"),
        Phase::Stopped => "stopped".into(),
    }
}
