//! `POST /query`: read-only SQL over the datasets the caller may read, each a table by its
//! name. The body is the query (any text type), or JSON `{"query": "...", "format": "csv"}`;
//! the answer is JSON lines, or CSV with `format=csv` or `Accept: text/csv`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::auth::{Peer, principal};
use super::datasets::query_error;
use super::reply::ApiError;
use crate::query::{self as sql, guard};

/// Queries longer than this are refused: a query is typed, not uploaded.
const MAX_QUERY: usize = 256 * 1024;
/// What one query over HTTP may take: memory for its operators, and rows in its answer.
const LIMITS: sql::Limits = sql::Limits { memory: Some(256 * 1024 * 1024), rows: Some(1_000_000) };

#[derive(serde::Deserialize)]
struct JsonQuery {
    query: String,
    #[serde(default)]
    format: Option<String>,
}

pub async fn run(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let who = principal(&state.access, &headers, &peer).await?;
    if body.len() > MAX_QUERY {
        return Err(ApiError::bad_request(format!("the query is over {MAX_QUERY} bytes")));
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let (text, mut format) = if is_json {
        let parsed: JsonQuery = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("the JSON body is not {{\"query\": \"...\"}}: {e}"))
        })?;
        (parsed.query, parsed.format)
    } else {
        (String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("the query is not UTF-8"))?, None)
    };
    format = format.or_else(|| params.get("format").cloned());
    let csv = format.as_deref() == Some("csv")
        || headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    guard::check_shape(&text).map_err(ApiError::bad_request)?;

    let names: Vec<String> = state
        .pipeline
        .datasets()
        .map(|d| d.name().to_owned())
        .filter(|n| state.access.may_query(&who, n))
        .collect();
    let state2 = state.clone();
    let (ctx, without_data) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        state2.readers.with_all(&refs, |readers| {
            Ok::<_, sql::QueryError>((sql::session_within(readers, &LIMITS)?, sql::without_data(readers)))
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(query_error)?
    .map_err(query_error)?;
    let (schema, batches) = sql::run(ctx, &text, &without_data, LIMITS.rows).await.map_err(query_error)?;

    let mut bytes = Vec::new();
    let written = if csv {
        let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut bytes);
        batches.iter().try_for_each(|b| writer.write(b))
    } else {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut bytes);
        batches.iter().try_for_each(|b| writer.write(b)).and_then(|()| writer.finish())
    };
    written.map_err(|e| ApiError::internal(format!("cannot format the result: {e}")))?;
    if csv && batches.is_empty() {
        let header: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        bytes = format!("{}\n", header.join(",")).into_bytes();
    }
    let media = if csv { "text/csv" } else { "application/x-ndjson" };
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(media))], bytes).into_response())
}
