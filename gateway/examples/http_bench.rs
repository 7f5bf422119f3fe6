//! HTTP benchmark: GPS records from `POST` to committed row through `odf-gateway serve`, with
//! 1 and 64 concurrent clients, bodies of 1 record and of 100, each run on a fresh gateway
//! and data directory. Prints, per run: records/s from the first request to the commit of the
//! last acknowledged record, request latency p50/p99 (the 202: in the write-ahead log), and
//! the gateway's peak RSS. Beside it, the same clients against a plain HTTP server in this
//! process that reads each body and answers 202 (no parsing, no disk): the ratio is what the
//! gateway's work costs per request.
//!
//!     cargo build --release --bin odf-gateway   # or set ODF_GATEWAY_BIN
//!     cargo run --release --example http_bench [-- --seconds 10]
//!     BENCH_ONLY=64x100 cargo run --release --example http_bench   # one run: clients x batch

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

#[path = "support/gps_records.rs"]
mod gps_records;

const MANIFEST: &str = include_str!("../tests/fixtures/gps-bench.yaml");
const PATH: &str = "/datasets/gps/sources/default";

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Connection { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Sends a POST and returns the status (the body is read and dropped).
    fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<u16> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.writer.write_all(head.as_bytes())?;
        self.writer.write_all(body)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status =
            line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("bad status line")?;
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
        }
        let mut sink = vec![0; length];
        self.reader.read_exact(&mut sink)?;
        Ok(status)
    }
}

struct Load {
    acked_records: usize,
    requests: usize,
    /// Pushed back (503, or the connection closed on an unread body).
    busy: usize,
    latencies_ms: Vec<f64>,
    elapsed: Duration,
}

/// `clients` threads posting `batch`-record bodies for `seconds`.
fn load(addr: SocketAddr, clients: usize, batch: usize, seconds: f64) -> anyhow::Result<Load> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut threads = Vec::new();
    for _ in 0..clients {
        let next = next.clone();
        threads.push(std::thread::spawn(move || -> anyhow::Result<(usize, Vec<f64>, usize)> {
            let mut connection = Connection::open(addr)?;
            let (mut acked, mut latencies, mut busy) = (0, Vec::new(), 0);
            let mut body = Vec::with_capacity(batch * 160);
            while Instant::now() < deadline {
                let from = next.fetch_add(batch, Ordering::Relaxed);
                body.clear();
                gps_records::write_records(&mut body, from, batch)?;
                let sent = Instant::now();
                let status = match connection.post(PATH, &body) {
                    Ok(status) => status,
                    // A server that refuses a body before reading it (503) closes the
                    // connection: open another and go on.
                    Err(_) => {
                        busy += 1;
                        connection = Connection::open(addr)?;
                        continue;
                    }
                };
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                match status {
                    200 | 202 => acked += batch,
                    // Pushed back: wait as told, and go on.
                    503 => {
                        busy += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    other => bail!("unexpected status {other}"),
                }
            }
            Ok((acked, latencies, busy))
        }));
    }
    let mut result =
        Load { acked_records: 0, requests: 0, busy: 0, latencies_ms: Vec::new(), elapsed: Duration::ZERO };
    for thread in threads {
        let (acked, latencies, busy) = thread.join().map_err(|_| anyhow::anyhow!("a client panicked"))??;
        result.acked_records += acked;
        result.busy += busy;
        result.requests += latencies.len();
        result.latencies_ms.extend(latencies);
    }
    result.elapsed = started.elapsed();
    result.latencies_ms.sort_by(f64::total_cmp);
    Ok(result)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Gateway {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    /// A run that fails part way must not leave a gateway running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(bin: &Path) -> anyhow::Result<Gateway> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("schemas"))?;
    std::fs::write(dir.path().join("schemas/gps.yaml"), MANIFEST)?;
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[http]\nlisten = [\"127.0.0.1:0\"]\n[mqtt]\nenabled = false\n[coap]\nenabled = false\n[anonymous]\nwrite = [\"*\"]\nquery = [\"*\"]\n",
    )?;
    let addresses = dir.path().join("addresses.json");
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
    let started = Instant::now();
    while !addresses.exists() {
        ensure!(started.elapsed() < Duration::from_secs(60), "the gateway did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&addresses)?;
    let value: serde_json::Value = serde_json::from_str(&text)?;
    let addr = value["http"][0].as_str().context("no http address")?.parse()?;
    Ok(Gateway { child, addr, _dir: dir })
}

/// Records the gateway has committed, from `GET /datasets/gps`.
fn committed(addr: SocketAddr) -> anyhow::Result<u64> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(b"GET /datasets/gps HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(body)?;
    value["records"].as_u64().context("no record count")
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A plain server: reads the body, answers 202. The reference for the same clients.
fn reference_server() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let app = axum::Router::new().fallback(|body: axum::body::Bytes| async move {
                (axum::http::StatusCode::ACCEPTED, format!("{{\"accepted\":{}}}", body.len()))
            });
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    Ok(addr)
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
    let reference = reference_server()?;
    println!("{seconds} s per run; records/s = acknowledged records / time until the last is committed");
    println!(
        "{:>7} {:>6}  {:>11} {:>9} {:>9} {:>6} {:>9}  {:>13} {:>7}",
        "clients", "batch", "records/s", "p50 ms", "p99 ms", "503s", "RSS MiB", "reference r/s", "ratio"
    );
    let runs: Vec<(usize, usize)> = match std::env::var("BENCH_ONLY") {
        Ok(only) => only
            .split(',')
            .filter_map(|r| r.split_once('x'))
            .filter_map(|(c, b)| Some((c.parse().ok()?, b.parse().ok()?)))
            .collect(),
        Err(_) => vec![(1, 1), (64, 1), (1, 100), (64, 100)],
    };
    for (clients, batch) in runs {
        let mut gateway = start_gateway(&bin)?;
        let run = load(gateway.addr, clients, batch, seconds)?;
        let waiting = Instant::now();
        while committed(gateway.addr)? < run.acked_records as u64 {
            ensure!(
                waiting.elapsed() < Duration::from_secs(120),
                "records were acknowledged and never committed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let total = run.elapsed + waiting.elapsed();
        let rate = run.acked_records as f64 / total.as_secs_f64();
        let rss = peak_rss_mib(gateway.child.id());
        let _ = Command::new("kill").arg("-TERM").arg(gateway.child.id().to_string()).status();
        let stopping = Instant::now();
        let status = gateway.child.wait()?;
        eprintln!("gateway stopped in {:.1} s: {status}", stopping.elapsed().as_secs_f64());

        let plain = load(reference, clients, batch, seconds.min(5.0))?;
        let plain_rate = plain.acked_records as f64 / plain.elapsed.as_secs_f64();
        println!(
            "{:>7} {:>6}  {:>11.0} {:>9.2} {:>9.2} {:>6} {:>9.1}  {:>13.0} {:>7.2}",
            clients,
            batch,
            rate,
            percentile(&run.latencies_ms, 0.5),
            percentile(&run.latencies_ms, 0.99),
            run.busy,
            rss,
            plain_rate,
            rate / plain_rate
        );
    }
    Ok(())
}
