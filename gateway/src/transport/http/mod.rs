//! The HTTP API (axum over hyper, HTTPS with rustls):
//!
//! - ingest: `POST /datasets/{ds}/sources/{src}`, `POST /datasets/{ds}`, configured routes,
//!   and kamu's `POST /{ds}/ingest?sourceName=` (`ingest`);
//! - reading: `GET /datasets`, `/datasets/{ds}`, `/datasets/{ds}/sources/{src}`,
//!   `/datasets/{ds}/tail`, `POST /query` (`datasets`, `query`);
//! - the ODF Simple Transfer Protocol under `/datasets/{ds}/` (`transfer`);
//! - the quarantine (`quarantine`); `/healthz`, `/readyz`, `/metrics` (`ops`).
//!
//! `server` is the accept loop (TLS handshake, timeouts, graceful shutdown) and
//! `connections` the open connections under their cap; `body` bounds request bodies in time
//! and memory; `auth` finds the caller; `reply` turns errors into JSON replies.

mod auth;
mod body;
mod connections;
mod datasets;
mod ingest;
mod ops;
mod quarantine;
mod query;
mod reply;
mod server;
mod transfer;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use auth::Peer;
pub use body::{BodyBudget, BodyPace};
pub use connections::{Connections, Timeouts};
pub use ops::metrics_handle;
pub use query::QueryLimits;
pub use server::{ServerLimits, run};

use crate::access::AccessTable;
use crate::intake::Intake;
use crate::pipeline::Pipeline;
use crate::query::Readers;

/// What every handler reads.
pub struct HttpState {
    pub pipeline: Arc<Pipeline>,
    pub intake: Arc<Intake>,
    pub access: Arc<AccessTable>,
    pub readers: Readers,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The open connections (for the metrics).
    pub connections: Arc<Connections>,
    pub max_body: usize,
    /// What request bodies being received may hold in memory, together.
    pub body_budget: Arc<BodyBudget>,
    pub commit_wait: Duration,
    pub query: QueryLimits,
    /// One permit a query running (`http.max_queries`).
    pub query_slots: Arc<tokio::sync::Semaphore>,
    /// Where each dataset's `[[sync]]` stands.
    pub sync: Arc<crate::sync::SyncBoard>,
    /// Where each `[[kafka]]` consumer stands.
    pub kafka: Arc<crate::transport::kafka::ConsumerBoard>,
}

impl HttpState {
    /// The datasets `who` may read.
    pub fn readable_datasets(&self, who: &crate::access::Principal) -> Vec<String> {
        self.pipeline
            .datasets()
            .map(|d| d.name().to_string())
            .filter(|n| self.access.may_query(who, n))
            .collect()
    }
}

pub fn router(state: Arc<HttpState>) -> Router {
    let api = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/query", post(query::run))
        .route("/datasets", get(datasets::list))
        .route("/datasets/{ds}", get(datasets::show).post(ingest::routed))
        .route("/datasets/{ds}/tail", get(datasets::tail))
        .route("/datasets/{ds}/sources/{src}", get(datasets::source).post(ingest::routed))
        .route("/datasets/{ds}/refs/head", get(transfer::head))
        .route("/datasets/{ds}/quarantine", get(quarantine::list).delete(quarantine::purge))
        .route("/datasets/{ds}/quarantine/{id}", get(quarantine::show))
        .route("/datasets/{ds}/{kind}/{hash}", get(transfer::object))
        .route("/{ds}/ingest", post(ingest::kamu))
        .fallback(fallback)
        .with_state(state.clone());
    Router::new().fallback_service(api).layer(axum::middleware::from_fn_with_state(state, configured_first))
}

/// A POST that a configured route matches is ingested there, whatever built-in path it
/// looks like: configured routes are tried first.
async fn configured_first(
    state: axum::extract::State<Arc<HttpState>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let configured =
        state.intake.routes().resolve_configured(request.uri().path(), crate::routes::Transport::Http);
    if request.method() == Method::POST && configured.is_some() {
        return ingest::routed(state, request).await;
    }
    next.run(request).await
}

/// A POST to any other path may be a configured route; anything else is not here.
async fn fallback(state: axum::extract::State<Arc<HttpState>>, request: Request) -> Response {
    if request.method() == Method::POST {
        return ingest::routed(state, request).await;
    }
    reply::ApiError::not_found(format!(
        "no {} {} here: see /datasets, /datasets/{{dataset}}, /query, /healthz, /readyz, /metrics",
        request.method(),
        request.uri().path()
    ))
    .into_response()
}
