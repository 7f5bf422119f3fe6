//! The HTTP accept loop: a bound listener in, connections served until shutdown.
//!
//! Every connection lives under the limits of `ServerLimits`: its handshake (TLS, the
//! HTTP/2 preface, the first request's head) must be done within `handshake_timeout`; with
//! no request in progress it is closed after `idle_timeout` (HTTP/1 keep-alive and HTTP/2
//! alike); request bodies keep the pace of `body::BodyPace`. The open connections are
//! counted in `Connections`, which at the cap closes the one idle the longest to admit a
//! new one. A failing `accept` (out of file descriptors) backs off instead of spinning. At
//! shutdown the loop stops accepting, lets requests in flight finish (for up to ten
//! seconds) and returns.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::Peer;
use super::body::{BodyPace, PacedBody};
use super::connections::{Admitted, Connections};
use crate::transport::stopping;

/// How long requests in flight may take to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection told to close (idle, or making room) may take to say goodbye
/// (an HTTP/2 GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// HTTP/2 pings on a quiet connection, to find peers that are gone.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// An HTTP/2 request's headers, at most (HTTP/1's are bounded by hyper's read buffer).
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// What every connection of a listener is held to.
#[derive(Clone)]
pub struct ServerLimits {
    /// The open connections of every HTTP listener, with their cap and timeouts.
    pub connections: Arc<Connections>,
    pub body: BodyPace,
    /// What one connection may buffer of what its client sends before a handler reads it:
    /// HTTP/1's read buffer (so also the largest request head) and HTTP/2's flow-control
    /// windows.
    pub connection_buffer: u32,
}

/// Serves `app` on `listener` until `shutdown` turns true.
pub async fn run(
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ServerLimits,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let stop = stopping(shutdown.clone());
    tokio::pin!(stop);
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut tasks = JoinSet::new();
    let mut pause = Duration::from_millis(5);
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("http: cannot accept a connection: {e}; retrying in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        pause = Duration::from_millis(5);
        let admitted = tokio::select! {
            admitted = limits.connections.admit() => admitted,
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            admitted,
            peer: Peer { addr, cert: None },
            app: app.clone(),
            limits: limits.clone(),
            shutdown: shutdown.clone(),
        };
        let tls = tls.clone();
        tasks.spawn(async move {
            match tls {
                None => connection.serve(stream).await,
                Some(acceptor) => connection.serve_tls(stream, acceptor).await,
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while tasks.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!("http: some connections were still open after {DRAIN_TIMEOUT:?}; closed");
        tasks.abort_all();
    }
    Ok(())
}

/// One accepted connection.
struct Connection {
    admitted: Admitted,
    peer: Peer,
    app: Router,
    limits: ServerLimits,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    async fn serve_tls(mut self, stream: tokio::net::TcpStream, acceptor: TlsAcceptor) {
        let addr = self.peer.addr;
        let handshake = tokio::select! {
            handshake = acceptor.accept(stream) => handshake,
            why = self.admitted.closing() => {
                tracing::debug!(peer = %addr, "https: closed during the TLS handshake: {}", why.reason());
                metrics::counter!("odf_http_connections_closed_total", "reason" => why.reason()).increment(1);
                return;
            }
        };
        match handshake {
            Ok(stream) => {
                self.peer.cert =
                    stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| subject(c));
                self.serve(stream).await
            }
            Err(e) => tracing::debug!(peer = %addr, "https: handshake failed: {e}"),
        }
    }

    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection { admitted, peer, app, limits, shutdown } = self;
        let addr = peer.addr;
        let handle = admitted.handle();
        let pace = limits.body;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            // The connection is busy until the answer's last byte is gone.
            let busy = handle.begin_request();
            let mut request = request.map(|body| axum::body::Body::new(PacedBody::new(body, pace)));
            request.extensions_mut().insert(peer.clone());
            let answer = app.clone().oneshot(request);
            async move {
                let response = answer.await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    axum::body::Body::new(body.map_frame(move |frame| {
                        let _ = &busy;
                        frame
                    }))
                }))
            }
        });
        let mut builder = Builder::new(TokioExecutor::new());
        // HTTP/1 waits this long for a request's head once it is ready for one (the first
        // one is bounded sooner by the handshake timeout).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.connections.timeouts().idle)
            .max_buf_size(limits.connection_buffer as usize);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(PING_INTERVAL))
            .max_header_list_size(MAX_HEADER_LIST)
            .initial_connection_window_size(limits.connection_buffer)
            .initial_stream_window_size(limits.connection_buffer);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let stop = stopping(shutdown);
        tokio::pin!(stop);
        let grace = tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(peer = %addr, "http: connection ended: {e}");
                }
                return;
            }
            why = admitted.closing() => {
                tracing::debug!(peer = %addr, "http: closing a connection without a request: {}", why.reason());
                metrics::counter!("odf_http_connections_closed_total", "reason" => why.reason()).increment(1);
                CLOSE_GRACE
            }
            _ = &mut stop => DRAIN_TIMEOUT,
        };
        connection.as_mut().graceful_shutdown();
        match tokio::time::timeout(grace, connection).await {
            Ok(Err(e)) => tracing::debug!(peer = %addr, "http: connection ended: {e}"),
            Ok(Ok(())) => {}
            Err(_) => {
                tracing::debug!(peer = %addr, "http: connection did not close within {grace:?}; dropped")
            }
        }
    }
}

/// The subject (RFC 4514) and common name of a client certificate.
fn subject(der: &rustls_pki_types::CertificateDer<'_>) -> Option<(String, Option<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject();
    let common_name = subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
    Some((subject.to_string(), common_name))
}
