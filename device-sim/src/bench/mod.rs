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

mod cpu;
mod report;
mod servers;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use servers::{CoapServer, Gateway, HttpSink, Mosquitto, Process};

use crate::gps::Vendor;
use crate::movement::Area;
use crate::runner::{self, Pace, Plan};
use crate::send::Target;
use crate::verify::{Reader, run_query};

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
    /// The gateway's `pipeline.wal_sync_interval`.
    pub wal_sync_interval: Duration,
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
    /// The server's CPU time (user and system, from `/proc`) from the first message until
    /// every acknowledged report was counted, per row counted, in µs.
    pub cpu_us_per_row: Option<f64>,
    /// The gateway's mean write and fsync of a group of log entries (its
    /// `odf_wal_sync_seconds` on `/metrics`), in ms; none for a peer.
    pub wal_sync_ms: Option<f64>,
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
        let gateway = run_gateway(scenario, options)
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
    Ok(Report { machine: report::machine(), seconds_per_run: options.duration.as_secs_f64(), rows })
}

async fn run_gateway(scenario: &Scenario, options: &Options) -> anyhow::Result<Figures> {
    let duration = options.duration;
    let gateway = Gateway::start(&options.gateway, options.wal_sync_interval).await?;
    let target = Target {
        http_port: gateway.http_port,
        mqtt_port: gateway.mqtt_port,
        coap_port: gateway.coap_port,
        ..target()
    };
    let reader = Reader::Http { host: "127.0.0.1".into(), port: gateway.http_port, token: None };
    let figures =
        measure(scenario, duration, target, Count::Committed(reader), Server::Process(&gateway.process))
            .await?;
    let wal_sync_ms = match wal_sync_ms(gateway.http_port).await {
        Ok(ms) => ms,
        Err(e) => {
            eprintln!("{}: no log sync time from the gateway's /metrics: {e:#}", scenario.name());
            None
        }
    };
    Ok(Figures { wal_sync_ms, ..figures })
}

/// The mean time of the gateway's log writes with their fsync so far, from the sum and
/// count of its `odf_wal_sync_seconds` summary; `None` before the first.
async fn wal_sync_ms(port: u16) -> anyhow::Result<Option<f64>> {
    use http_body_util::{BodyExt, Full};
    let address = format!("127.0.0.1:{port}");
    let mut sender = crate::send::connect_http(&address).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let request = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, &address)
        .body(Full::new(bytes::Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status.is_success(), "GET /metrics answered {status}");
    Ok(mean_ms(&String::from_utf8_lossy(&body), "odf_wal_sync_seconds"))
}

/// The mean of a Prometheus summary in seconds, in ms, over all its label sets.
fn mean_ms(text: &str, name: &str) -> Option<f64> {
    let total = |suffix: &str| -> f64 {
        let metric = format!("{name}_{suffix}");
        text.lines()
            .filter(|l| l.strip_prefix(&metric).is_some_and(|rest| rest.starts_with(['{', ' '])))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let count = total("count");
    (count > 0.0).then(|| total("sum") / count * 1000.0)
}

async fn run_peer(scenario: &Scenario, duration: Duration) -> anyhow::Result<Figures> {
    match scenario.protocol {
        Protocol::Mqtt => {
            let broker = Mosquitto::start()?;
            let delivered = broker.subscribe().await?;
            let target = Target { mqtt_port: broker.port, ..target() };
            measure(
                scenario,
                duration,
                target,
                Count::Delivered(&delivered),
                Server::Process(&broker.process),
            )
            .await
        }
        Protocol::Http => {
            let sink = HttpSink::start()?;
            let target = Target { http_port: sink.port, ..target() };
            measure(scenario, duration, target, Count::Acked, Server::Threads(servers::HTTP_SINK_THREADS))
                .await
        }
        Protocol::Coap => {
            let server = CoapServer::start(scenario.devices)?;
            let target = Target { coap_port: server.port, ..target() };
            measure(scenario, duration, target, Count::Acked, Server::Process(&server.process)).await
        }
    }
}

/// The server under load, whose memory and CPU time are read.
enum Server<'a> {
    Process(&'a Process),
    /// Threads of this process, by name (the in-process HTTP peer).
    Threads(&'static str),
}

impl Server<'_> {
    fn cpu_seconds(&self) -> Option<f64> {
        match self {
            Server::Process(process) => cpu::process_seconds(process.id()),
            Server::Threads(prefix) => cpu::threads_seconds(prefix),
        }
    }

    fn peak_rss_mib(&self) -> Option<f64> {
        match self {
            Server::Process(process) => process.peak_rss_mib(),
            Server::Threads(_) => None,
        }
    }
}

/// Where the reports a run had acknowledged are counted.
enum Count<'a> {
    /// The peer keeps nothing: what it acknowledged is all there is.
    Acked,
    /// Deliveries to mosquitto's subscriber.
    Delivered(&'a AtomicU64),
    /// Rows committed to the gateway's dataset.
    Committed(Reader),
}

/// One run of the scenario's load against `target`, from the first message until every
/// acknowledged report is counted.
async fn measure(
    scenario: &Scenario,
    duration: Duration,
    target: Target,
    count: Count<'_>,
    server: Server<'_>,
) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let summary = runner::run(plan(scenario, duration, dir.path()), target).await?;
    let rows = match count {
        Count::Acked => summary.acked,
        Count::Delivered(delivered) => {
            settle(summary.acked, || async { Ok(delivered.load(Ordering::Relaxed)) }).await?
        }
        Count::Committed(reader) => {
            settle(summary.acked, || async {
                last_number(&run_query(&reader, "SELECT COUNT(*) AS n FROM gps").await?)
            })
            .await?
        }
    };
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let cpu = server.cpu_seconds().zip(cpu_before).map(|(after, before)| after - before);
    let latency = summary.latency_ms.as_ref();
    Ok(Figures {
        acked: summary.acked,
        rows,
        rows_per_s: rows.min(summary.acked) as f64 / elapsed,
        ack_p50_ms: latency.map_or(0.0, |l| l.p50),
        ack_p99_ms: latency.map_or(0.0, |l| l.p99),
        peak_rss_mib: server.peak_rss_mib(),
        wal_sync_ms: None,
        cpu_us_per_row: cpu.filter(|_| rows > 0).map(|seconds| seconds * 1e6 / rows as f64),
        busy: summary.busy,
        failed: summary.failed,
        refused: summary.refused,
    })
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

fn last_number(csv: &str) -> anyhow::Result<u64> {
    let line = csv.lines().rev().find(|l| !l.trim().is_empty()).context("an empty answer to COUNT(*)")?;
    line.trim().parse().with_context(|| format!("COUNT(*) answered {line:?}"))
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
            cpu_us_per_row: Some(53.0),
            wal_sync_ms: None,
            busy: 0,
            failed: 0,
            refused: 0,
        }
    }

    #[test]
    fn the_mean_of_a_summary_adds_up_every_label_set() {
        let text = "# TYPE odf_wal_sync_seconds summary\n\
            odf_wal_sync_seconds{dataset=\"gps\",quantile=\"0.5\"} 0.9\n\
            odf_wal_sync_seconds_sum{dataset=\"gps\"} 0.3\n\
            odf_wal_sync_seconds_count{dataset=\"gps\"} 100\n\
            odf_wal_sync_seconds_sum{dataset=\"other\"} 0.1\n\
            odf_wal_sync_seconds_count{dataset=\"other\"} 100\n\
            odf_wal_sync_seconds_total_sum 7\n";
        let mean = mean_ms(text, "odf_wal_sync_seconds").unwrap();
        assert!((mean - 2.0).abs() < 1e-9, "{mean}");
        assert_eq!(mean_ms("", "odf_wal_sync_seconds"), None);
    }

    #[test]
    fn one_device_is_measured_against_the_fsync_and_a_round_trip() {
        let report = Report {
            machine: "2 cores".into(),
            seconds_per_run: 10.0,
            rows: vec![Row {
                scenario: "mqtt-1".into(),
                protocol: Protocol::Mqtt,
                devices: 1,
                gateway: Figures { wal_sync_ms: Some(1.75), ..figures(400.0, Some(80.0)) },
                peer_name: "mosquitto",
                peer: Some(figures(14000.0, Some(8.0))),
                peer_error: None,
                ratio: Some(400.0 / 14000.0),
            }],
        };
        let text = report.to_string();
        // 1 / (1.75 ms + 0.25 ms) = 500 rows/s, of which 400 is 0.80.
        assert!(text.contains("mqtt-1: one message in flight") && text.contains("1.75 ms"), "{text}");
        assert!(text.contains("at most 500 rows/s; the gateway made 0.80 of it"), "{text}");
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
        assert!(lines[2].starts_with("MQTT QoS 1 publish") && lines[2].ends_with("0.33    1.0"), "{text}");
        assert!(
            lines[2].contains("30000") && lines[2].contains("90000") && lines[2].contains("88.0"),
            "{text}"
        );
        assert!(lines[3].starts_with("CoAP CON POST") && lines[3].trim_end().ends_with('-'), "{text}");
        assert!(text.contains("coap-1 odf-gateway: 0 busy, 0 failed, 0 refused; 90 of 100"), "{text}");
        assert!(text.contains("coap-1 coap-server: coap-server-notls is not installed"), "{text}");
    }
}
