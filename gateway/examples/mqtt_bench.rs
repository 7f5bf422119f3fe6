//! MQTT benchmark: QoS 1 GPS reports from 1, 100 and 1,000 simulated devices (rumqttc, one
//! connection each, one publish in flight each) into `odf-gateway serve`, with the `durable`
//! and `received` ack policies, beside mosquitto on the same machine with the same load
//! generator and one subscriber (a plain broker that stores nothing). Prints one table:
//! messages/s acknowledged, publish -> PUBACK p50/p99, publish -> committed p50/p99 (for
//! mosquitto: publish -> delivered to the subscriber), and the broker's RSS.
//!
//! Publish -> committed is read back from the dataset: each report carries its send time as
//! its event time, and each row carries the system time of the block that committed it.
//!
//!     cargo build --release --bin odf-gateway   # or set ODF_GATEWAY_BIN
//!     cargo run --release --example mqtt_bench [-- --seconds 10]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chrono::{SecondsFormat, Utc};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::Mutex;

const MANIFEST: &str = include_str!("../tests/fixtures/gps-bench.yaml");
const TOPIC: &str = "datasets/gps/sources/default";

struct Broker {
    child: Child,
    mqtt: SocketAddr,
    http: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn gateway(bin: &Path, ack: &str) -> anyhow::Result<Broker> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("schemas"))?;
    std::fs::write(dir.path().join("schemas/gps.yaml"), MANIFEST)?;
    let config = format!(
        "[http]\nlisten = [\"127.0.0.1:0\"]\n[coap]\nenabled = false\n[mqtt]\nlisten = [\"127.0.0.1:0\"]\nack = \"{ack}\"\n\
         [anonymous]\nwrite = [\"*\"]\nquery = [\"*\"]\n"
    );
    std::fs::write(dir.path().join("gateway.toml"), config)?;
    let child = Command::new(bin)
        .current_dir(dir.path())
        .args([
            "serve",
            "--config",
            "gateway.toml",
            "--addresses-file",
            "addresses.json",
            "--data-dir",
            "data",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let addresses = dir.path().join("addresses.json");
    let started = Instant::now();
    while !addresses.exists() {
        ensure!(started.elapsed() < Duration::from_secs(60), "the gateway did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&addresses)?)?;
    let mqtt = value["mqtt"]["tcp"][0].as_str().context("no mqtt address")?.parse()?;
    let http = value["http"][0].as_str().context("no http address")?.parse()?;
    Ok(Broker { child, mqtt, http: Some(http), _dir: dir })
}

fn mosquitto() -> anyhow::Result<Broker> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\n"),
    )?;
    let child =
        Command::new("mosquitto").arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(started.elapsed() < Duration::from_secs(20), "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Broker { child, mqtt: ([127, 0, 0, 1], port).into(), http: None, _dir: dir })
}

fn report(device: usize, seq: u64) -> String {
    let t = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    format!(r#"{{"device_id":"D-{device}","seq":{seq},"t":"{t}","lat":49.28,"long":-123.12}}"#)
}

struct Run {
    acked: usize,
    ack_ms: Vec<f64>,
}

/// `devices` connections, each publishing QoS 1 reports one at a time for `seconds`.
async fn load(addr: SocketAddr, devices: usize, seconds: f64) -> anyhow::Result<Run> {
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new(Run { acked: 0, ack_ms: Vec::new() }));
    let mut tasks = Vec::new();
    for device in 0..devices {
        let (stop, results) = (stop.clone(), results.clone());
        tasks.push(tokio::spawn(async move {
            let mut options = MqttOptions::new(format!("bench-{device}"), addr.ip().to_string(), addr.port());
            options.set_keep_alive(Duration::from_secs(60));
            let (client, mut events) = AsyncClient::new(options, 10);
            let (mut seq, mut sent, mut latencies) = (0u64, Instant::now(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        sent = Instant::now();
                        let _ = client.publish(TOPIC, QoS::AtLeastOnce, false, report(device, seq)).await;
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        seq += 1;
                        sent = Instant::now();
                        let _ = client.publish(TOPIC, QoS::AtLeastOnce, false, report(device, seq)).await;
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            let mut results = results.lock().await;
            results.acked += latencies.len();
            results.ack_ms.extend(latencies);
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        // A connection waiting for an ack ends once the broker answers or the task is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let mut run = std::mem::replace(&mut *results.lock().await, Run { acked: 0, ack_ms: Vec::new() });
    run.ack_ms.sort_by(f64::total_cmp);
    Ok(run)
}

/// One subscriber to mosquitto: publish -> delivered latencies.
async fn subscriber(addr: SocketAddr, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<f64>> {
    let mut options = MqttOptions::new("bench-subscriber", addr.ip().to_string(), addr.port());
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 1000);
    client.subscribe(TOPIC, QoS::AtLeastOnce).await?;
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let event = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) = event {
            let value: serde_json::Value = serde_json::from_slice(&p.payload)?;
            let t = chrono::DateTime::parse_from_rfc3339(value["t"].as_str().unwrap_or_default())?;
            latencies.push((Utc::now() - t.to_utc()).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// Publish -> committed latencies from the dataset: system_time - t, per row.
fn commit_latencies(http: SocketAddr, expected: usize) -> anyhow::Result<Vec<f64>> {
    let query = "SELECT CAST(system_time AS BIGINT) - CAST(t AS BIGINT) AS ms FROM gps";
    let started = Instant::now();
    loop {
        let mut stream = std::net::TcpStream::connect(http)?;
        use std::io::{Read, Write};
        let request = format!(
            "POST /query HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{query}",
            query.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let mut values: Vec<f64> = body
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["ms"].as_f64())
            .collect();
        if values.len() >= expected || started.elapsed() > Duration::from_secs(60) {
            values.sort_by(f64::total_cmp);
            return Ok(values);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(10.0), |s| s.parse())?;
    let exe = std::env::current_exe()?;
    let bin = std::env::var_os("ODF_GATEWAY_BIN").map(PathBuf::from).unwrap_or_else(|| {
        exe.parent().and_then(Path::parent).map(|d| d.join("odf-gateway")).unwrap_or_default()
    });
    ensure!(bin.exists(), "no gateway binary at {} (cargo build --release --bin odf-gateway)", bin.display());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("QoS 1, one publish in flight per device, {seconds} s per run");
    println!(
        "{:<22} {:>7} {:>10} {:>9} {:>9} {:>12} {:>12} {:>8}",
        "broker", "devices", "msgs/s", "ack p50", "ack p99", "commit p50", "commit p99", "RSS MiB"
    );
    for devices in [1, 100, 1000] {
        for target in ["gateway durable", "gateway received", "mosquitto"] {
            let broker = match target {
                "mosquitto" => mosquitto()?,
                "gateway durable" => gateway(&bin, "durable")?,
                _ => gateway(&bin, "received")?,
            };
            let pid = broker.child.id();
            let stop = Arc::new(AtomicBool::new(false));
            let subscribed =
                broker.http.is_none().then(|| runtime.spawn(subscriber(broker.mqtt, stop.clone())));
            std::thread::sleep(Duration::from_millis(300));
            // The broker's RSS halfway through, with every device connected.
            let (run, rss) = runtime.block_on(async {
                let midway = tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs_f64(seconds / 2.0)).await;
                    rss_mib(pid)
                });
                let run = load(broker.mqtt, devices, seconds).await;
                (run, midway.await.unwrap_or(0.0))
            });
            let run = run?;
            let delivered = match (broker.http, subscribed) {
                (Some(http), _) => commit_latencies(http, run.acked)?,
                (None, Some(task)) => {
                    std::thread::sleep(Duration::from_millis(500));
                    stop.store(true, Ordering::Relaxed);
                    runtime.block_on(task)??
                }
                (None, None) => Vec::new(),
            };
            println!(
                "{:<22} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>12.2} {:>12.2} {:>8.1}",
                target,
                devices,
                run.acked as f64 / seconds,
                percentile(&run.ack_ms, 0.5),
                percentile(&run.ack_ms, 0.99),
                percentile(&delivered, 0.5),
                percentile(&delivered, 0.99),
                rss
            );
        }
    }
    Ok(())
}
