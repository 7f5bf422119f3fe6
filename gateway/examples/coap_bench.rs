//! CoAP benchmark: confirmable requests per second with 1 and 64 concurrent clients (one in
//! flight each, over their own UDP sockets), into `odf-gateway serve` (each answered once the
//! report is in the write-ahead log) and into libcoap's `coap-server` (its example resource,
//! answered from memory), with the same client and requests on the same machine. The
//! requests are PUTs, which both take (the example resource refuses POST with 4.05; the
//! gateway takes PUT and POST alike). Prints requests/s, p50/p99 latency and the ratio
//! gateway / coap-server.
//!
//!     cargo build --release --bin odf-gateway   # or set ODF_GATEWAY_BIN
//!     cargo run --release --example coap_bench [-- --seconds 10]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};

const MANIFEST: &str = include_str!("../../schemas/gps.yaml");

struct Server {
    child: Child,
    addr: SocketAddr,
    path: &'static str,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn gateway(bin: &Path) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("schemas"))?;
    std::fs::write(dir.path().join("schemas/gps.yaml"), MANIFEST)?;
    let config = "[http]\nlisten = [\"127.0.0.1:0\"]\n[mqtt]\nenabled = false\n[coap]\nlisten = [\"127.0.0.1:0\"]\n\
                  [anonymous]\nwrite = [\"*\"]\nquery = [\"*\"]\n";
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
    let addr = value["coap"]["udp"][0].as_str().context("no coap address")?.parse()?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(Server { child, addr, path: "/datasets/gps/sources/vendorC", _dir: dir })
}

fn coap_server() -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("coap-server-notls")
        .args(["-A", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("coap-server-notls (apt-get install libcoap3-bin)")?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(Server { child, addr: ([127, 0, 0, 1], port).into(), path: "/example_data", _dir: dir })
}

fn put(id: u16, path: &str, payload: &[u8]) -> Vec<u8> {
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Confirmable);
    packet.header.code = MessageClass::Request(RequestType::Put);
    packet.header.message_id = id;
    packet.set_token(id.to_be_bytes().to_vec());
    for segment in path.trim_start_matches('/').split('/') {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    packet.add_option(CoapOption::ContentFormat, vec![50]);
    packet.payload = payload.to_vec();
    packet.to_bytes().unwrap_or_default()
}

/// `clients` threads, each posting CON requests one at a time for `seconds`.
fn load(server: &Server, clients: usize, seconds: f64) -> anyhow::Result<(usize, Vec<f64>, usize)> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut threads = Vec::new();
    for client in 0..clients {
        let (addr, path) = (server.addr, server.path);
        threads.push(std::thread::spawn(move || -> anyhow::Result<(Vec<f64>, usize)> {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_read_timeout(Some(Duration::from_secs(2)))?;
            let (mut latencies, mut failures) = (Vec::new(), 0);
            let mut buf = [0u8; 2048];
            let mut id: u16 = (client as u16).wrapping_mul(977);
            let mut seq = 0u64;
            while Instant::now() < deadline {
                id = id.wrapping_add(1);
                seq += 1;
                let report =
                    format!(r#"{{"i":"K-{client}","n":{seq},"ts":1767268800,"la":49.28,"lo":-123.12}}"#);
                let request = put(id, path, report.as_bytes());
                let sent = Instant::now();
                socket.send_to(&request, addr)?;
                loop {
                    match socket.recv_from(&mut buf) {
                        Ok((n, _)) => {
                            let Ok(reply) = Packet::from_bytes(&buf[..n]) else { continue };
                            if reply.header.message_id != id {
                                continue;
                            }
                            match reply.header.code {
                                MessageClass::Response(code) if !code.is_error() => {
                                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0)
                                }
                                _ => failures += 1,
                            }
                            break;
                        }
                        Err(_) => {
                            failures += 1;
                            break;
                        }
                    }
                }
            }
            Ok((latencies, failures))
        }));
    }
    let (mut all, mut failures) = (Vec::new(), 0);
    for thread in threads {
        let (latencies, failed) = thread.join().map_err(|_| anyhow::anyhow!("a client panicked"))??;
        all.extend(latencies);
        failures += failed;
    }
    all.sort_by(f64::total_cmp);
    Ok((all.len(), all, failures))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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
    println!("CON PUT, one request in flight per client, {seconds} s per run");
    println!(
        "{:<12} {:>7} {:>10} {:>9} {:>9} {:>8} {:>7}",
        "server", "clients", "req/s", "p50 ms", "p99 ms", "failed", "ratio"
    );
    for clients in [1, 64] {
        let reference = {
            let server = coap_server()?;
            load(&server, clients, seconds)?
        };
        let measured = {
            let server = gateway(&bin)?;
            load(&server, clients, seconds)?
        };
        for (name, (done, latencies, failed), ratio) in [
            ("coap-server", &reference, None),
            ("gateway", &measured, Some(measured.0 as f64 / reference.0.max(1) as f64)),
        ] {
            println!(
                "{:<12} {:>7} {:>10.0} {:>9.3} {:>9.3} {:>8} {:>7}",
                name,
                clients,
                *done as f64 / seconds,
                percentile(latencies, 0.5),
                percentile(latencies, 0.99),
                failed,
                ratio.map_or(String::new(), |r| format!("{r:.2}"))
            );
        }
    }
    Ok(())
}
