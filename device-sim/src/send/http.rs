//! HTTP/1.1 (hyper): one keep-alive connection per device, a POST per message, the answer's
//! status and counts read as the gateway writes them (202 with `accepted`, 400 with each
//! rejected record, 503 with Retry-After).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{Message, Outcome, Target, grace_after};
use crate::gps::Vendor;

pub struct HttpSender {
    host: String,
    port: u16,
    path: String,
    authorization: Option<String>,
    timeout: Duration,
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl HttpSender {
    pub fn new(target: &Target, vendor: Vendor, device: &str) -> HttpSender {
        HttpSender {
            host: target.host.clone(),
            port: target.http_port,
            path: target.path(vendor, device),
            authorization: target.token.as_ref().map(|t| format!("Bearer {t}")),
            timeout: target.timeout,
            connection: None,
        }
    }

    pub async fn send(&mut self, message: &Message, stop: &CancellationToken) -> Outcome {
        let timeout = self.timeout;
        let exchange = self.exchange(message);
        let grace = grace_after(stop);
        let outcome = tokio::select! {
            result = tokio::time::timeout(timeout, exchange) => match result {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(e)) => Outcome::Failed(e),
                Err(_) => Outcome::Failed(format!("no answer in {timeout:?}")),
            },
            _ = grace => Outcome::Failed("stopped before the answer".into()),
        };
        if matches!(outcome, Outcome::Failed(_)) {
            self.connection = None;
        }
        outcome
    }

    pub fn disconnect(&mut self) {
        self.connection = None;
    }

    async fn exchange(&mut self, message: &Message) -> Result<Outcome, String> {
        let connection = match &mut self.connection {
            Some(c) if !c.is_closed() => c,
            _ => self.connection.insert(connect(&format!("{}:{}", self.host, self.port)).await?),
        };
        connection.ready().await.map_err(|e| format!("HTTP connection: {e}"))?;
        let mut request = Request::post(&self.path)
            .header(header::HOST, format!("{}:{}", self.host, self.port))
            .header(header::CONTENT_TYPE, message.content_type);
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Full::new(Bytes::from(message.payload.clone())))
            .map_err(|e| format!("HTTP request: {e}"))?;
        let response = connection.send_request(request).await.map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map_or(Duration::from_secs(1), Duration::from_secs);
        let body = response.into_body().collect().await.map_err(|e| format!("HTTP body: {e}"))?.to_bytes();
        Ok(match status {
            StatusCode::OK | StatusCode::ACCEPTED | StatusCode::CREATED => {
                // The gateway says how many records it took; another server's 2xx takes all.
                let accepted = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["accepted"].as_u64());
                match accepted {
                    Some(n) if n < message.seqs.len() as u64 => Outcome::Refused(format!(
                        "{status}: {n} of {} records accepted: {}",
                        message.seqs.len(),
                        text(&body)
                    )),
                    _ => Outcome::Acked,
                }
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => Outcome::Busy(retry_after),
            s if s.is_server_error() => Outcome::Failed(format!("{s}: {}", text(&body))),
            s => Outcome::Refused(format!("{s}: {}", text(&body))),
        })
    }
}

/// An HTTP/1.1 connection to `address` (host:port), driven by a task of its own.
pub async fn connect(address: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(address).await.map_err(|e| format!("connect to {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {address}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A body to show in a message, cut short.
fn text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}
