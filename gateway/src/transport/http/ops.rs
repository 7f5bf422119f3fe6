//! For operators and orchestrators: `GET /healthz` (the process answers), `GET /readyz`
//! (every dataset has replayed its log and takes data; 503 with the reasons otherwise; and
//! any damaged write-ahead log bytes, with the acknowledged records they held) and
//! `GET /metrics` (Prometheus text: requests, bytes, records accepted and rejected per
//! route, commit latency, log depth, flushes, quarantine size).

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use super::HttpState;
use super::datasets::{describe_log_damage, phase_name};
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

pub async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let mut waiting = Vec::new();
    let mut lost = Vec::new();
    for dataset in state.pipeline.datasets() {
        let health = dataset.health();
        for damage in &health.log_damage {
            let mut described = describe_log_damage(damage);
            described["dataset"] = json!(dataset.name());
            lost.push(described);
        }
        if health.phase != Phase::Ready {
            waiting.push(json!({ "dataset": dataset.name(), "state": phase_name(&health.phase) }));
        } else if let Some(failing) = health.failing {
            waiting.push(json!({ "dataset": dataset.name(), "state": "ready", "failing": failing }));
        }
    }
    for (dataset, reason) in state.pipeline.failed() {
        waiting.push(json!({ "dataset": dataset, "state": format!("failed: {reason}") }));
    }
    let ready = state.pipeline.ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    // Lost records do not make the gateway unready (it takes data as well as before), but
    // they are said here until an operator moves the damaged bytes away.
    (status, axum::Json(json!({ "ready": ready, "datasets": waiting, "lost_records": lost }))).into_response()
}

pub async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    for dataset in state.pipeline.datasets() {
        let name = dataset.name().to_owned();
        let (pending, limit) = dataset.pending();
        metrics::gauge!("odf_pending_bytes", "dataset" => name.clone()).set(pending as f64);
        metrics::gauge!("odf_pending_limit_bytes", "dataset" => name.clone()).set(limit as f64);
        let ready = dataset.health().phase == Phase::Ready;
        metrics::gauge!("odf_dataset_ready", "dataset" => name.clone()).set(if ready { 1.0 } else { 0.0 });
        if let Ok(entries) = dataset.quarantine().len() {
            metrics::gauge!("odf_quarantine_entries", "dataset" => name).set(entries as f64);
        }
    }
    state.metrics.run_upkeep();
    let text = state.metrics.render();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], text).into_response()
}
