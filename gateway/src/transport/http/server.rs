//! The HTTP accept loop: a bound listener in, connections served until shutdown. At most
//! `max_connections` are served at once (the rest wait in the kernel's backlog); a failing
//! `accept` (out of file descriptors) backs off instead of spinning; a TLS handshake has
//! ten seconds. At shutdown the loop stops accepting, lets requests in flight finish (for up
//! to ten seconds) and returns.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::Peer;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` turns true.
pub async fn run(
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    max_connections: usize,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let stop = stopping(shutdown);
    tokio::pin!(stop);
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut pause = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            _ = &mut stop => break,
        };
        let Ok(permit) = permit else { break };
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
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve(stream, Peer { addr, cert: None }, app, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| subject(c));
                            serve(stream, Peer { addr, cert }, app, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(peer = %addr, "https: handshake failed: {e}"),
                        Err(_) => tracing::debug!(peer = %addr, "https: handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("http: some connections were still open after {DRAIN_TIMEOUT:?}; closed");
    }
    Ok(())
}

async fn serve<S>(stream: S, peer: Peer, app: Router, watcher: hyper_util::server::graceful::Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = peer.addr;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(peer.clone());
        app.clone().oneshot(request)
    });
    let mut builder = Builder::new(TokioExecutor::new());
    // A client that sends its headers slowly (or not at all) must not hold a connection.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30)));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(peer = %addr, "http: connection ended: {e}");
    }
}

/// The subject (RFC 4514) and common name of a client certificate.
fn subject(der: &rustls_pki_types::CertificateDer<'_>) -> Option<(String, Option<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject();
    let common_name = subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
    Some((subject.to_string(), common_name))
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopping(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}
