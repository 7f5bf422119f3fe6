//! `device-sim bench`: the same load as `device-sim load` (one message in flight per device,
//! each sent as soon as the last is answered, one report per message) against odf-gateway and
//! against a plain peer of each protocol on this machine, each run on a fresh process, and one
//! table of figures and ratios:
//!
//! - MQTT QoS 1 from 1, 100 and 1,000 devices, against mosquitto with one subscriber
//!   (nothing stored);
//! - HTTP POST from 1 and 64 devices, against a plain HTTP server in this process (its own
//!   threads) that reads each body and answers 202;
//! - CoAP confirmable POST from 1 and 64 devices, against libcoap's `coap-server` (a dynamic
//!   resource that keeps the last body in memory).
//!
//! Rows/s is from the first message to the last acknowledged report being committed: counted
//! in the dataset for the gateway (so it includes the wait for the flush interval), delivered
//! to the subscriber for mosquitto, acknowledged for the others (which keep nothing).

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::gps::Vendor;
use crate::movement::Area;
use crate::runner::{self, Pace, Plan};
use crate::send::Target;
use crate::stats::Summary;
use crate::verify::{Reader, run_query};

/// The manifest the gateway is benchmarked with: the one `serve` ships.
const GPS_MANIFEST: &str = include_str!("../../schemas/gps.yaml");
/// How long acknowledged reports may take to show up where they are counted.
const SETTLE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Mqtt,
    Http,
    Coap,
}

/// One line of the table: a protocol and a number of devices.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub protocol: Protocol,
    pub devices: usize,
}

pub const SCENARIOS: [Scenario; 7] = [
    Scenario { protocol: Protocol::Mqtt, devices: 1 },
    Scenario { protocol: Protocol::Mqtt, devices: 100 },
    Scenario { protocol: Protocol::Mqtt, devices: 1000 },
    Scenario { protocol: Protocol::Http, devices: 1 },
    Scenario { protocol: Protocol::Http, devices: 64 },
    Scenario { protocol: Protocol::Coap, devices: 1 },
    Scenario { protocol: Protocol::Coap, devices: 64 },
];

impl Scenario {
    /// How `--only` names it: `mqtt-100`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.protocol.key(), self.devices)
    }

    fn vendor(&self) -> Vendor {
        match self.protocol {
            Protocol::Mqtt => Vendor::A,
            Protocol::Http => Vendor::B,
            Protocol::Coap => Vendor::C,
        }
    }
}

impl Protocol {
    fn key(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Http => "http",
            Protocol::Coap => "coap",
        }
    }

    fn load(self) -> &'static str {
        match self {
            Protocol::Mqtt => "MQTT QoS 1 publish",
            Protocol::Http => "HTTP POST",
            Protocol::Coap => "CoAP CON POST",
        }
    }

    fn peer(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mosquitto",
            Protocol::Http => "plain HTTP",
            Protocol::Coap => "coap-server",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub gateway: PathBuf,
    pub duration: Duration,
    pub scenarios: Vec<Scenario>,
}

/// What one server made of the load.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Reports acknowledged, and of them found where they are counted.
    pub acked: u64,
    pub rows: u64,
    pub rows_per_s: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    /// The server process's peak resident memory (none for the in-process HTTP peer).
    pub peak_rss_mib: Option<f64>,
    /// Answers that said "busy" and sends that got none (their reports were sent again).
    pub busy: u64,
    pub failed: u64,
    pub refused: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub protocol: Protocol,
    pub devices: usize,
    pub gateway: Figures,
    pub peer_name: &'static str,
    /// The peer's figures, or why there are none (not installed).
    pub peer: Option<Figures>,
    pub peer_error: Option<String>,
    /// Gateway rows/s over the peer's.
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: String,
    pub seconds_per_run: f64,
    pub rows: Vec<Row>,
}

/// Runs every scenario, the peer first and then the gateway, and returns the table.
pub async fn bench(options: &Options) -> anyhow::Result<Report> {
    let mut rows = Vec::new();
    for scenario in &options.scenarios {
        eprintln!("{}: {} ...", scenario.name(), scenario.protocol.peer());
        let peer = run_peer(scenario, options.duration).await;
        if let Err(e) = &peer {
            eprintln!("{}: no figures from {}: {e}", scenario.name(), scenario.protocol.peer());
        }
        eprintln!("{}: odf-gateway ...", scenario.name());
        let gateway = run_gateway(scenario, &options.gateway, options.duration)
            .await
            .with_context(|| format!("{} against odf-gateway", scenario.name()))?;
        let (peer, peer_error) = match peer {
            Ok(figures) => (Some(figures), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let ratio = peer.as_ref().filter(|p| p.rows_per_s > 0.0).map(|p| gateway.rows_per_s / p.rows_per_s);
        rows.push(Row {
            scenario: scenario.name(),
            protocol: scenario.protocol,
            devices: scenario.devices,
            gateway,
            peer_name: scenario.protocol.peer(),
            peer,
            peer_error,
            ratio,
        });
    }
    Ok(Report { machine: machine(), seconds_per_run: options.duration.as_secs_f64(), rows })
}

async fn run_gateway(scenario: &Scenario, bin: &Path, duration: Duration) -> anyhow::Result<Figures> {
    let gateway = Gateway::start(bin).await?;
    let dir = tempfile::tempdir()?;
    let target = Target {
        http_port: gateway.http_port,
        mqtt_port: gateway.mqtt_port,
        coap_port: gateway.coap_port,
        ..target()
    };
    let reader = Reader::Http { host: "127.0.0.1".into(), port: gateway.http_port, token: None };
    let started = Instant::now();
    let summary = runner::run(plan(scenario, duration, dir.path()), target).await?;
    let rows = settle(summary.acked, || async {
        let csv = run_query(&reader, "SELECT COUNT(*) AS n FROM gps").await?;
        last_number(&csv)
    })
    .await?;
    let elapsed = started.elapsed();
    Ok(figures(&summary, rows, elapsed, peak_rss_mib(gateway.child.id())))
}

async fn run_peer(scenario: &Scenario, duration: Duration) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let plan = plan(scenario, duration, dir.path());
    match scenario.protocol {
        Protocol::Mqtt => {
            let broker = Mosquitto::start(dir.path())?;
            let delivered = broker.subscribe().await?;
            let started = Instant::now();
            let summary = runner::run(plan, Target { mqtt_port: broker.port, ..target() }).await?;
            let rows = settle(summary.acked, || async { Ok(delivered.load(Ordering::Relaxed)) }).await?;
            Ok(figures(&summary, rows, started.elapsed(), peak_rss_mib(broker.process.id())))
        }
        Protocol::Http => {
            let sink = HttpSink::start()?;
            let started = Instant::now();
            let summary = runner::run(plan, Target { http_port: sink.port, ..target() }).await?;
            Ok(figures(&summary, summary.acked, started.elapsed(), None))
        }
        Protocol::Coap => {
            let server = CoapServer::start(scenario.devices)?;
            let started = Instant::now();
            let summary = runner::run(plan, Target { coap_port: server.port, ..target() }).await?;
            Ok(figures(&summary, summary.acked, started.elapsed(), peak_rss_mib(server.process.id())))
        }
    }
}

fn target() -> Target {
    Target {
        host: "127.0.0.1".into(),
        dataset: "gps".into(),
        mqtt_port: 0,
        http_port: 0,
        coap_port: 0,
        mqtt_topic: "datasets/{dataset}/sources/{source}".into(),
        qos: 1,
        mqtt_tls: None,
        username: None,
        password: None,
        token: None,
        timeout: Duration::from_secs(30),
    }
}

fn plan(scenario: &Scenario, duration: Duration, dir: &Path) -> Plan {
    Plan {
        mode: "bench",
        vendors: vec![scenario.vendor()],
        devices: scenario.devices,
        seed: 1,
        area: Area::default(),
        pace: Pace::AsFastAsPossible,
        duration: Some(duration),
        messages: None,
        period: None,
        malformed: 0.0,
        duplicates: 0.0,
        offline: 0.0,
        senml: false,
        record: dir.join("run.json"),
        status_every: None,
    }
}

/// Polls `count` until it reaches `acked`; after SETTLE, returns the last count (or error:
/// the dataset may not be there before its first commit).
async fn settle<F, Fut>(acked: u64, count: F) -> anyhow::Result<u64>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<u64>>,
{
    let started = Instant::now();
    loop {
        let counted = count().await;
        match counted {
            Ok(n) if n >= acked => return Ok(n),
            _ if started.elapsed() > SETTLE => return counted,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn figures(summary: &Summary, rows: u64, elapsed: Duration, peak_rss_mib: Option<f64>) -> Figures {
    let latency = summary.latency_ms.as_ref();
    Figures {
        acked: summary.acked,
        rows,
        rows_per_s: rows.min(summary.acked) as f64 / elapsed.as_secs_f64().max(1e-9),
        ack_p50_ms: latency.map_or(0.0, |l| l.p50),
        ack_p99_ms: latency.map_or(0.0, |l| l.p99),
        peak_rss_mib,
        busy: summary.busy,
        failed: summary.failed,
        refused: summary.refused,
    }
}

fn last_number(csv: &str) -> anyhow::Result<u64> {
    let line = csv.lines().rev().find(|l| !l.trim().is_empty()).context("an empty answer to COUNT(*)")?;
    line.trim().parse().with_context(|| format!("COUNT(*) answered {line:?}"))
}

/// A process of ours that is stopped when dropped.
struct Process(Child);

impl Process {
    fn id(&self) -> u32 {
        self.0.id()
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
/// defaults (durable acks, a commit at most every second per source), on loopback.
struct Gateway {
    child: Process,
    http_port: u16,
    mqtt_port: u16,
    coap_port: u16,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start(bin: &Path) -> anyhow::Result<Gateway> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::create_dir(root.join("schemas"))?;
        std::fs::write(root.join("schemas/gps.yaml"), GPS_MANIFEST)?;
        std::fs::write(
            root.join("gateway.toml"),
            "[http]\nlisten = [\"127.0.0.1:0\"]\n[mqtt]\nlisten = [\"127.0.0.1:0\"]\n\
             [coap]\nlisten = [\"127.0.0.1:0\"]\n[anonymous]\nwrite = [\"*\"]\nquery = [\"*\"]\n",
        )?;
        let log = std::fs::File::create(root.join("gateway.log"))?;
        let mut child = Process(
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
            if let Some(status) = child.0.try_wait()? {
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
            child,
            _dir: dir,
        })
    }
}

/// mosquitto on loopback, storing nothing, queueing without limit for its one subscriber.
struct Mosquitto {
    process: Process,
    port: u16,
}

impl Mosquitto {
    fn start(dir: &Path) -> anyhow::Result<Mosquitto> {
        let port = free_tcp_port()?;
        let conf = dir.join("mosquitto.conf");
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
        Ok(Mosquitto { process, port })
    }

    /// One QoS 1 subscriber to every report; returns its count of deliveries.
    async fn subscribe(&self) -> anyhow::Result<Arc<AtomicU64>> {
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
struct CoapServer {
    process: Process,
    port: u16,
}

impl CoapServer {
    fn start(devices: usize) -> anyhow::Result<CoapServer> {
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

/// An HTTP/1.1 server on its own two threads that reads each body and answers 202.
struct HttpSink {
    runtime: Option<tokio::runtime::Runtime>,
    port: u16,
}

impl HttpSink {
    fn start() -> anyhow::Result<HttpSink> {
        use http_body_util::{BodyExt, Full};
        use hyper::body::{Bytes, Incoming};
        use hyper::{Request, Response, StatusCode};

        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
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

/// A process's peak resident memory in MiB (Linux's VmHWM).
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// "2 cores, AMD EPYC 7B13, 23.5 GiB", as far as this machine tells.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            Some(s.lines().find(|l| l.starts_with("model name"))?.split_once(':')?.1.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(String::new(), |kib| format!(", {:.1} GiB", kib / 1024.0 / 1024.0));
    format!("{cores} cores, {cpu}{memory}, {}", std::env::consts::OS)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:.0} s per run, one message (one report) in flight per device; machine: {}",
            self.seconds_per_run, self.machine
        )?;
        writeln!(
            f,
            "{:<20} {:>7} | {:>9} {:>7} {:>7} {:>7} | {:<11} {:>9} {:>7} {:>7} {:>7} | {:>5}",
            "load",
            "devices",
            "gw rows/s",
            "p50 ms",
            "p99 ms",
            "RSS MiB",
            "peer",
            "rows/s",
            "p50 ms",
            "p99 ms",
            "RSS MiB",
            "ratio"
        )?;
        let rss = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.1}"));
        for row in &self.rows {
            let g = &row.gateway;
            write!(
                f,
                "{:<20} {:>7} | {:>9.0} {:>7.2} {:>7.2} {:>7} | {:<11} ",
                row.protocol.load(),
                row.devices,
                g.rows_per_s,
                g.ack_p50_ms,
                g.ack_p99_ms,
                rss(g.peak_rss_mib),
                row.peer_name
            )?;
            match (&row.peer, row.ratio) {
                (Some(p), ratio) => writeln!(
                    f,
                    "{:>9.0} {:>7.2} {:>7.2} {:>7} | {:>5}",
                    p.rows_per_s,
                    p.ack_p50_ms,
                    p.ack_p99_ms,
                    rss(p.peak_rss_mib),
                    ratio.map_or("-".to_owned(), |r| format!("{r:.2}"))
                )?,
                (None, _) => writeln!(f, "{:>9} {:>7} {:>7} {:>7} | {:>5}", "-", "-", "-", "-", "-")?,
            }
        }
        // What the figures do not show: lost answers, refusals, reports not found.
        for row in &self.rows {
            let peer = row.peer.as_ref().ok_or(row.peer_error.as_deref().unwrap_or("no figures"));
            for (name, side) in [("odf-gateway", Ok(&row.gateway)), (row.peer_name, peer)] {
                match side {
                    Ok(s) if s.busy + s.failed + s.refused > 0 || s.rows < s.acked => writeln!(
                        f,
                        "{} {name}: {} busy, {} failed, {} refused; {} of {} acknowledged reports counted",
                        row.scenario, s.busy, s.failed, s.refused, s.rows, s.acked
                    )?,
                    Ok(_) => {}
                    Err(e) => writeln!(f, "{} {name}: {e}", row.scenario)?,
                }
            }
        }
        Ok(())
    }
}

/// Parses `--only mqtt-1,http-64`.
pub fn scenarios(only: &[String]) -> anyhow::Result<Vec<Scenario>> {
    if only.is_empty() {
        return Ok(SCENARIOS.to_vec());
    }
    only.iter()
        .map(|name| {
            SCENARIOS.iter().copied().find(|s| s.name() == *name).with_context(|| {
                let names: Vec<_> = SCENARIOS.iter().map(Scenario::name).collect();
                format!("no scenario {name:?}; there are {}", names.join(", "))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(rows_per_s: f64, rss: Option<f64>) -> Figures {
        Figures {
            acked: 100,
            rows: 100,
            rows_per_s,
            ack_p50_ms: 0.25,
            ack_p99_ms: 1.5,
            peak_rss_mib: rss,
            busy: 0,
            failed: 0,
            refused: 0,
        }
    }

    #[test]
    fn only_names_scenarios_that_exist() {
        let picked = scenarios(&["coap-64".into(), "mqtt-1".into()]).unwrap();
        assert_eq!(picked.iter().map(Scenario::name).collect::<Vec<_>>(), ["coap-64", "mqtt-1"]);
        assert_eq!(scenarios(&[]).unwrap().len(), SCENARIOS.len());
        let error = scenarios(&["mqtt-7".into()]).unwrap_err().to_string();
        assert!(error.contains("mqtt-7") && error.contains("mqtt-1000"), "{error}");
    }

    #[test]
    fn the_table_has_a_line_per_scenario_and_says_what_a_peer_lacks() {
        let report = Report {
            machine: "2 cores".into(),
            seconds_per_run: 10.0,
            rows: vec![
                Row {
                    scenario: "mqtt-100".into(),
                    protocol: Protocol::Mqtt,
                    devices: 100,
                    gateway: figures(30000.0, Some(88.0)),
                    peer_name: "mosquitto",
                    peer: Some(figures(90000.0, Some(9.1))),
                    peer_error: None,
                    ratio: Some(1.0 / 3.0),
                },
                Row {
                    scenario: "coap-1".into(),
                    protocol: Protocol::Coap,
                    devices: 1,
                    gateway: Figures { rows: 90, ..figures(3500.0, Some(40.0)) },
                    peer_name: "coap-server",
                    peer: None,
                    peer_error: Some("coap-server-notls is not installed".into()),
                    ratio: None,
                },
            ],
        };
        let text = report.to_string();
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].contains("10 s per run") && lines[0].contains("2 cores"), "{text}");
        assert!(lines[2].starts_with("MQTT QoS 1 publish") && lines[2].ends_with("0.33"), "{text}");
        assert!(
            lines[2].contains("30000") && lines[2].contains("90000") && lines[2].contains("88.0"),
            "{text}"
        );
        assert!(lines[3].starts_with("CoAP CON POST") && lines[3].trim_end().ends_with('-'), "{text}");
        assert!(text.contains("coap-1 odf-gateway: 0 busy, 0 failed, 0 refused; 90 of 100"), "{text}");
        assert!(text.contains("coap-1 coap-server: coap-server-notls is not installed"), "{text}");
    }
}
