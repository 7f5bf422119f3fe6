//! `POST /query`: read-only SQL over the datasets the caller may read, each a table by its
//! name. The body is the query (any text type), or JSON `{"query": "...", "format": "csv"}`;
//! the answer is JSON lines, or CSV with `format=csv` or `Accept: text/csv`.
//!
//! A query is bounded: its operators' memory (`http.query_memory`), its time
//! (`http.query_timeout`, 504 beyond) and its answer, formatted a batch at a time as the
//! query runs, in bytes (`http.query_max_answer`, 413 beyond); and so many run at once
//! (`http.max_queries`, 503 beyond). A query whose client goes away is dropped with its
//! request, which stops it.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::json;

use super::HttpState;
use super::auth::{Peer, principal};
use super::body;
use super::datasets::query_error;
use super::ingest::body_error;
use super::reply::ApiError;
use crate::query::{self as sql, guard};

/// Queries longer than this are refused: a query is typed, not uploaded.
const MAX_QUERY: usize = 256 * 1024;

/// What one query over HTTP may take.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Memory for its operators (sorts, joins, aggregations).
    pub memory: usize,
    /// From the query's arrival to its answer's last byte formatted.
    pub timeout: Duration,
    /// The answer, formatted.
    pub max_answer: usize,
}

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
    mut body: axum::body::Body,
) -> Result<Response, ApiError> {
    let who = principal(&state.access, &headers, &peer).await?;
    let Ok(_slot) = state.query_slots.clone().try_acquire_owned() else {
        metrics::counter!("odf_http_queries_refused_total", "reason" => "busy").increment(1);
        return Err(ApiError::unavailable(
            "as many queries as the gateway runs at once (http.max_queries) are running; retry shortly",
            Duration::from_secs(1),
        ));
    };
    let (body, _held) =
        body::collect(&mut body, MAX_QUERY, None, &state.body_budget).await.map_err(|e| match e {
            body::BodyError::TooBig { .. } => {
                ApiError::bad_request(format!("the query is over {MAX_QUERY} bytes"))
            }
            e => body_error(e),
        })?;
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
        (String::from_utf8(body).map_err(|_| ApiError::bad_request("the query is not UTF-8"))?, None)
    };
    format = format.or_else(|| params.get("format").cloned());
    let csv = format.as_deref() == Some("csv")
        || headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    guard::check_shape(&text).map_err(ApiError::bad_request)?;

    let limits = state.query;
    let names: Vec<String> = state.readable_datasets(&who);
    let work = async {
        let state = state.clone();
        let (ctx, without_data) = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let bounds = sql::Limits { memory: Some(limits.memory), rows: None };
            state.readers.with_all(&refs, |readers| {
                Ok::<_, sql::QueryError>((sql::session_within(readers, &bounds)?, sql::without_data(readers)))
            })
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(query_error)?
        .map_err(query_error)?;
        answer(ctx, &text, &without_data, csv, limits.max_answer).await
    };
    let bytes = match tokio::time::timeout(limits.timeout, work).await {
        Ok(answer) => answer?,
        Err(_) => {
            metrics::counter!("odf_http_queries_refused_total", "reason" => "timeout").increment(1);
            return Err(ApiError {
                body: json!({
                    "error": format!(
                        "the query did not finish within {} (http.query_timeout); narrow it, or aggregate",
                        humantime::format_duration(limits.timeout)
                    ),
                    "limit_seconds": limits.timeout.as_secs_f64(),
                }),
                ..ApiError::new(StatusCode::GATEWAY_TIMEOUT, "")
            });
        }
    };
    let media = if csv { "text/csv" } else { "application/x-ndjson" };
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(media))], bytes).into_response())
}

/// Runs the query and formats its answer a batch at a time, into at most `max` bytes.
async fn answer(
    ctx: datafusion::prelude::SessionContext,
    text: &str,
    without_data: &[String],
    csv: bool,
    max: usize,
) -> Result<Vec<u8>, ApiError> {
    let (schema, mut batches) = sql::stream(ctx, text, without_data).await.map_err(query_error)?;
    let mut out = Capped { bytes: Vec::new(), max, over: false };
    let mut writer = Writer::new(&mut out, csv);
    let mut written = Ok(());
    let mut any = false;
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| query_error(e.into()))?;
        any = true;
        written = writer.write(&batch);
        if written.is_err() {
            break;
        }
        // A query whose batches are always ready must still let its connection notice
        // that the client left (and the timeout fire).
        tokio::task::coop::consume_budget().await;
    }
    let written = written.and_then(|()| writer.finish());
    drop(writer);
    drop(batches);
    if out.over {
        metrics::counter!("odf_http_queries_refused_total", "reason" => "answer_too_big").increment(1);
        return Err(ApiError {
            body: json!({
                "error": format!(
                    "the answer is over the limit of {max} bytes (http.query_max_answer); add a LIMIT, select fewer columns, or aggregate"
                ),
                "limit_bytes": max,
            }),
            ..ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "")
        });
    }
    written.map_err(|e| ApiError::internal(format!("cannot format the result: {e}")))?;
    if csv && !any {
        let header: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        out.bytes = format!("{}\n", header.join(",")).into_bytes();
    }
    Ok(out.bytes)
}

/// The answer's bytes, refusing to grow past `max`.
struct Capped {
    bytes: Vec<u8>,
    max: usize,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.max {
            self.over = true;
            return Err(std::io::Error::other("the answer is over its limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Writer<'a> {
    Csv(arrow::csv::Writer<&'a mut Capped>),
    Json(arrow::json::LineDelimitedWriter<&'a mut Capped>),
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut Capped, csv: bool) -> Writer<'a> {
        match csv {
            true => Writer::Csv(arrow::csv::WriterBuilder::new().with_header(true).build(out)),
            false => Writer::Json(arrow::json::LineDelimitedWriter::new(out)),
        }
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), arrow::error::ArrowError> {
        match self {
            Writer::Csv(w) => w.write(batch),
            Writer::Json(w) => w.write(batch),
        }
    }

    fn finish(&mut self) -> Result<(), arrow::error::ArrowError> {
        match self {
            Writer::Csv(_) => Ok(()),
            Writer::Json(w) => w.finish(),
        }
    }
}
