//! For operators and orchestrators: `GET /healthz` (the process answers), `GET /readyz`
//! (every dataset has replayed its log and takes data; 503 with the reasons otherwise; and
//! any damaged write-ahead log bytes, with the acknowledged records they held) and
//! `GET /metrics` (Prometheus text: requests, bytes, records accepted and rejected per
//! route, commit latency, log depth, flushes, quarantine size).
//!
//! Who sees what: `/healthz` and `/readyz`'s status are for anyone (a load balancer has no
//! credentials), but `/readyz` names only the datasets the caller may query. `/metrics`
//! follows the read grants like `/query`: an identity with the `metrics` grant sees every
//! series, one with query grants only the series of its datasets (and those of no
//! dataset); anyone else gets 401 (403 for a known identity).

use std::sync::{Arc, OnceLock};

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use super::HttpState;
use super::auth::{Peer, principal};
use super::datasets::{describe_log_damage, phase_name};
use super::reply::ApiError;
use crate::access::Principal;
use crate::pipeline::Phase;

/// The process's metrics recorder, installed once.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds =
                [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder already installed (a test harness) only means ours records nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

pub async fn readyz(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    // Without credentials that let it read a dataset, a caller learns only the verdict.
    let who = principal(&state.access, &headers, &peer).await.ok();
    let may_read = |dataset: &str| who.as_ref().is_some_and(|who| state.access.may_query(who, dataset));
    let mut waiting = Vec::new();
    let mut not_ready = 0;
    let mut lost = Vec::new();
    for dataset in state.pipeline.datasets() {
        let health = dataset.health();
        if may_read(dataset.name().as_str()) {
            for damage in &health.log_damage {
                let mut described = describe_log_damage(damage);
                described["dataset"] = json!(dataset.name());
                lost.push(described);
            }
        }
        let reason = if health.phase != Phase::Ready {
            json!({ "dataset": dataset.name(), "state": phase_name(&health.phase) })
        } else if let Some(failing) = health.failing {
            json!({ "dataset": dataset.name(), "state": "ready", "failing": failing })
        } else {
            continue;
        };
        not_ready += 1;
        if may_read(dataset.name().as_str()) {
            waiting.push(reason);
        }
    }
    for (dataset, reason) in state.pipeline.failed() {
        not_ready += 1;
        if may_read(dataset) {
            waiting.push(json!({ "dataset": dataset, "state": format!("failed: {reason}") }));
        }
    }
    let ready = state.pipeline.ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    // Lost records do not make the gateway unready (it takes data as well as before), but
    // they are said here until an operator moves the damaged bytes away.
    let may_read_any = state.pipeline.datasets().any(|d| may_read(d.name().as_str()));
    // Consumers do not make the gateway unready either (devices are served without them);
    // their state and lag are here for those who may read where they write.
    let consumers: serde_json::Map<String, serde_json::Value> = state
        .kafka
        .snapshot()
        .into_iter()
        .filter_map(|(name, mut status)| {
            status.partitions.retain(|p| may_read(&p.dataset));
            may_read_any.then(|| (name, json!(status)))
        })
        .collect();
    let body = json!({ "ready": ready, "not_ready": not_ready, "datasets": waiting, "lost_records": lost, "consumers": consumers });
    (status, axum::Json(body)).into_response()
}

pub async fn metrics(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = principal(&state.access, &headers, &peer).await?;
    let everything = state.access.grants(&who).is_some_and(|g| g.metrics);
    let readable: Vec<String> = state.readable_datasets(&who);
    if !everything && readable.is_empty() {
        return Err(match who {
            Principal::Anonymous => ApiError::unauthorized(
                "metrics need credentials with a `metrics` grant or a query grant: send `Authorization: Bearer <token>` or HTTP Basic",
            ),
            who => ApiError::forbidden(format!(
                "{who} may read no dataset's metrics (no `metrics` or query grant)"
            )),
        });
    }
    for dataset in state.pipeline.datasets() {
        let name = dataset.name().to_string();
        let (pending, limit) = dataset.pending();
        metrics::gauge!("odf_pending_bytes", "dataset" => name.clone()).set(pending as f64);
        metrics::gauge!("odf_pending_limit_bytes", "dataset" => name.clone()).set(limit as f64);
        let ready = dataset.health().phase == Phase::Ready;
        metrics::gauge!("odf_dataset_ready", "dataset" => name.clone()).set(if ready { 1.0 } else { 0.0 });
        if let Ok(entries) = dataset.quarantine().len() {
            metrics::gauge!("odf_quarantine_entries", "dataset" => name).set(entries as f64);
        }
    }
    metrics::gauge!("odf_http_body_buffer_bytes").set(state.body_budget.held() as f64);
    metrics::gauge!("odf_http_connections").set(state.connections.open() as f64);
    state.metrics.run_upkeep();
    let mut text = state.metrics.render();
    if !everything {
        text = only_datasets(&text, &readable);
    }
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4");
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

/// Prometheus text without the samples labelled with a dataset not in `datasets`.
fn only_datasets(text: &str, datasets: &[String]) -> String {
    let allowed: Vec<String> =
        datasets.iter().map(|d| d.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")).collect();
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with('#') || dataset_label(line).is_none_or(|d| allowed.iter().any(|a| a == d)) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// The (escaped) value of a sample's `dataset` label. Inside a label value a quote is
/// always escaped, so `{dataset="` or `,dataset="` can only start the label itself.
fn dataset_label(line: &str) -> Option<&str> {
    let labels = &line[line.find('{')?..];
    let start = ["{dataset=\"", ",dataset=\""].iter().find_map(|p| labels.find(p).map(|i| i + p.len()))?;
    let value = &labels[start..];
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(&value[..i]),
            _ => escaped = false,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_series_of_readable_datasets_are_kept() {
        let text = "# TYPE odf_requests_total counter\n\
            odf_requests_total{dataset=\"gps\",source=\"a\"} 3\n\
            odf_requests_total{route=\"x,dataset=\\\"gps\\\"\",dataset=\"fleet\"} 1\n\
            odf_mqtt_connected_clients 2\n";
        let kept = only_datasets(text, &["gps".to_owned()]);
        assert_eq!(
            kept,
            "# TYPE odf_requests_total counter\n\
             odf_requests_total{dataset=\"gps\",source=\"a\"} 3\n\
             odf_mqtt_connected_clients 2\n"
        );
    }
}
