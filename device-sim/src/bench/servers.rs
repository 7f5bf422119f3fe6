//! The servers a bench run loads, each started fresh and stopped when dropped:
//! `odf-gateway serve`, mosquitto, libcoap's coap-server, and an HTTP server that only reads.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The manifest the gateway is benchmarked with: the one `serve` ships.
const GPS_MANIFEST: &str = include_str!("../../../schemas/gps.yaml");

/// A process of ours that is stopped when dropped.
pub(super) struct Process(Child);

impl Process {
    pub(super) fn id(&self) -> u32 {
        self.0.id()
    }

    /// Its peak resident memory so far, in MiB (Linux's VmHWM).
    pub(super) fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `odf-gateway serve` on a fresh data directory with the shipped GPS manifest and its
/// defaults (durable acks, a commit at most every second per source) but the log's sync
/// pacing, which the bench sets, on loopback.
pub(super) struct Gateway {
    pub(super) process: Process,
    pub(super) http_port: u16,
    pub(super) mqtt_port: u16,
    pub(super) coap_port: u16,
    _dir: tempfile::TempDir,
}

impl Gateway {
    pub(super) async fn start(bin: &Path, wal_sync_interval: Duration) -> anyhow::Result<Gateway> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::create_dir(root.join("schemas"))?;
        std::fs::write(root.join("schemas/gps.yaml"), GPS_MANIFEST)?;
        std::fs::write(
            root.join("gateway.toml"),
            format!(
                "[http]\nlisten = [\"127.0.0.1:0\"]\n[mqtt]\nlisten = [\"127.0.0.1:0\"]\n\
                 [coap]\nlisten = [\"127.0.0.1:0\"]\n[anonymous]\nwrite = [\"*\"]\nquery = [\"*\"]\n\
                 [pipeline]\nwal_sync_interval = \"{}\"\n",
                humantime::format_duration(wal_sync_interval)
            ),
        )?;
        let log = std::fs::File::create(root.join("gateway.log"))?;
        let mut process = Process(
            Command::new(bin)
                .current_dir(root)
                .args(["serve", "--config", "gateway.toml", "--data-dir", "data"])
                .args(["--addresses-file", "addresses.json"])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("start {} (build it, or give --gateway-bin)", bin.display()))?,
        );
        let addresses = root.join("addresses.json");
        let started = Instant::now();
        while !addresses.exists() {
            let log = || std::fs::read_to_string(root.join("gateway.log")).unwrap_or_default();
            if let Some(status) = process.0.try_wait()? {
                bail!("odf-gateway exited with {status} at start: {}", log());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("odf-gateway did not start in 60 s: {}", log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let addresses: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&addresses)?)?;
        let port = |address: &serde_json::Value| -> anyhow::Result<u16> {
            let address = address.as_str().context("addresses.json lacks a listener")?;
            Ok(address.parse::<std::net::SocketAddr>()?.port())
        };
        Ok(Gateway {
            http_port: port(&addresses["http"][0])?,
            mqtt_port: port(&addresses["mqtt"]["tcp"][0])?,
            coap_port: port(&addresses["coap"]["udp"][0])?,
            process,
            _dir: dir,
        })
    }
}

/// mosquitto on loopback, storing nothing, queueing without limit for its one subscriber.
pub(super) struct Mosquitto {
    pub(super) process: Process,
    pub(super) port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub(super) fn start() -> anyhow::Result<Mosquitto> {
        let dir = tempfile::tempdir()?;
        let port = free_tcp_port()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_connections -1\nmax_queued_messages 0\n"
            ),
        )?;
        let process = Process(
            Command::new("mosquitto")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("mosquitto is not installed (apt-get install mosquitto)")?,
        );
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                bail!("mosquitto did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Mosquitto { process, port, _dir: dir })
    }

    /// One QoS 1 subscriber to every report; returns its count of deliveries.
    pub(super) async fn subscribe(&self) -> anyhow::Result<Arc<AtomicU64>> {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let options = MqttOptions::new("bench-subscriber", "127.0.0.1", self.port);
        let (client, mut events) = AsyncClient::new(options, 1000);
        client.subscribe("datasets/#", QoS::AtLeastOnce).await?;
        let delivered = Arc::new(AtomicU64::new(0));
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let count = delivered.clone();
        tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            // The client stays alive as long as its event loop is polled.
            let _client = client;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(_))) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    // The broker is gone: the run is over.
                    Err(_) => break,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .context("mosquitto did not confirm the subscription")??;
        Ok(delivered)
    }
}

/// libcoap's example server, creating a resource for whatever is POSTed to.
pub(super) struct CoapServer {
    pub(super) process: Process,
    pub(super) port: u16,
}

impl CoapServer {
    pub(super) fn start(devices: usize) -> anyhow::Result<CoapServer> {
        let port = free_udp_port()?;
        let process = Process(
            Command::new("coap-server-notls")
                .args(["-A", "127.0.0.1", "-p", &port.to_string()])
                .args(["-d", &(devices + 10).to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("coap-server-notls is not installed (apt-get install libcoap3-bin)")?,
        );
        // It binds at once; a request sent before that would only be retransmitted.
        std::thread::sleep(Duration::from_millis(300));
        Ok(CoapServer { process, port })
    }
}

/// The names of the HTTP peer's threads, by which its CPU time is found.
pub(super) const HTTP_SINK_THREADS: &str = "bench-http-sink";

/// An HTTP/1.1 server on its own two threads that reads each body and answers 202.
pub(super) struct HttpSink {
    runtime: Option<tokio::runtime::Runtime>,
    pub(super) port: u16,
}

impl HttpSink {
    pub(super) fn start() -> anyhow::Result<HttpSink> {
        use http_body_util::{BodyExt, Full};
        use hyper::body::{Bytes, Incoming};
        use hyper::{Request, Response, StatusCode};

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(HTTP_SINK_THREADS)
            .enable_all()
            .build()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                        let _body = request.into_body().collect().await?;
                        Response::builder()
                            .status(StatusCode::ACCEPTED)
                            .body(Full::new(Bytes::new()))
                            .map_err(anyhow::Error::from)
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Ok(HttpSink { runtime: Some(runtime), port })
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropped inside the caller's runtime, where blocking on a shutdown is not allowed.
            runtime.shutdown_background();
        }
    }
}
