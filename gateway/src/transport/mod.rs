//! The listeners. Each authenticates its sender, asks the intake where its payload goes, and
//! turns the outcome into its protocol's reply; none of them decodes payloads.
//!
//! - `http`: the HTTP API (ingest, datasets, query, ODF transfer, quarantine, metrics).
//! - `mqtt`: the embedded MQTT broker, whose acknowledgement waits for the write-ahead log.
//! - `coap`: CoAP on UDP, with block-wise transfer, discovery and duplicate detection.
//! - `kafka`: a consumer of Kafka topics, exactly once through the source state.
//! - `tls`: TLS settings from PEM files.

pub mod coap;
pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod tls;

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopping(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}
