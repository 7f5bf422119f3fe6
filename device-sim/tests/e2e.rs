//! The simulator against a real `odf-gateway serve`: all three vendors over MQTT, HTTP and
//! CoAP, then `device-sim verify`; and a load while the gateway is killed with SIGKILL and
//! started again three times, after which every acknowledged report must be committed
//! exactly once; and `device-sim bench` against the gateway and each protocol's peer.
//!
//! The gateway binary is the one cargo builds beside this crate's (`cargo test --workspace`
//! builds both), or `ODF_GATEWAY_BIN`.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const GPS: &str = include_str!("../../schemas/gps.yaml");

fn gateway_bin() -> PathBuf {
    let bin = std::env::var_os("ODF_GATEWAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_device-sim")).with_file_name("odf-gateway"));
    assert!(
        bin.exists(),
        "no gateway at {} (cargo build --bin odf-gateway, or cargo test --workspace)",
        bin.display()
    );
    bin
}

struct Ports {
    http: u16,
    mqtt: u16,
    coap: u16,
}

impl Ports {
    /// Free loopback ports, kept across restarts (the simulator reconnects to the same ones).
    fn free() -> Ports {
        let tcp = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let coap = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Ports { http: tcp(), mqtt: tcp(), coap }
    }

    fn args(&self) -> Vec<String> {
        [
            "--http-port",
            &self.http.to_string(),
            "--mqtt-port",
            &self.mqtt.to_string(),
            "--coap-port",
            &self.coap.to_string(),
        ]
        .map(String::from)
        .to_vec()
    }
}

struct Gateway {
    root: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Gateway {
    fn start(root: &Path, ports: &Ports) -> Gateway {
        std::fs::create_dir_all(root.join("schemas")).unwrap();
        std::fs::write(root.join("schemas/gps.yaml"), GPS).unwrap();
        let config = format!(
            "[http]\nlisten = [\"127.0.0.1:{}\"]\n[mqtt]\nlisten = [\"127.0.0.1:{}\"]\n[coap]\nlisten = [\"127.0.0.1:{}\"]\n\
             [pipeline]\nflush_interval = \"200ms\"\n[anonymous]\nwrite = [\"*\"]\nquery = [\"*\"]\n",
            ports.http, ports.mqtt, ports.coap
        );
        std::fs::write(root.join("gateway.toml"), config).unwrap();
        let mut gateway = Gateway { root: root.to_owned(), child: None, starts: 0 };
        gateway.spawn();
        gateway
    }

    fn spawn(&mut self) {
        let addresses = self.root.join("addresses.json");
        let _ = std::fs::remove_file(&addresses);
        self.starts += 1;
        let log = std::fs::File::create(self.root.join(format!("gateway-{}.log", self.starts))).unwrap();
        let mut child = Command::new(gateway_bin())
            .current_dir(&self.root)
            .args([
                "serve",
                "--config",
                "gateway.toml",
                "--data-dir",
                "data",
                "--addresses-file",
                "addresses.json",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !addresses.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the gateway exited with {status} at start:\n{}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the gateway did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// An `odf-gateway` command on this gateway's data directory.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(gateway_bin()).arg("--data-dir").arg(self.root.join("data")).args(args).output().unwrap()
    }

    fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.root.join(format!("gateway-{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: everything accepted is committed before it exits.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let status = child.wait().unwrap();
            assert!(status.success(), "the gateway exited with {status}:\n{}", self.log());
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

fn sim(args: &[&str], ports: &Ports) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_device-sim"));
    command.args(args).args(ports.args());
    command
}

/// `device-sim verify`, which needs only the HTTP port (and takes it from the record).
fn verify(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_device-sim"));
    command.arg("verify").args(args);
    command
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn all_three_vendors_in_real_time_then_verify_finds_each_acknowledged_report_once() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut gateway = Gateway::start(dir.path(), &ports);
    let record = dir.path().join("run.json");
    let record = record.to_str().unwrap();

    let run = sim(
        &[
            "run",
            "--devices",
            "6",
            "--duration",
            "6s",
            "--period",
            "300ms",
            "--offline",
            "0.05",
            "--malformed",
            "0.1",
            "--duplicates",
            "0.1",
            "--record",
            record,
            "--json",
        ],
        &ports,
    )
    .output()
    .unwrap();
    assert!(run.status.success(), "{}\n{}", String::from_utf8_lossy(&run.stderr), gateway.log());
    let summary = json(&run);
    let acked = summary["acked"].as_u64().unwrap();
    assert!(acked > 20, "{summary}");
    for field in ["malformed", "duplicates", "offline"] {
        assert!(summary[field].as_u64().unwrap() > 0, "no {field} in {summary}");
    }
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["refused"], 0, "{summary}");
    // Malformed CSV and CBOR are refused (400, 4.00); MQTT 3.1.1 gets a PUBACK for them.
    assert!(summary["malformed_refused"].as_u64().unwrap() > 0, "{summary}");

    let verify = verify(&["--record", record, "--json"]).output().unwrap();
    assert!(verify.status.success(), "{}\n{}", String::from_utf8_lossy(&verify.stdout), gateway.log());
    let verdict = json(&verify);
    assert_eq!(verdict["missing"], 0);
    assert_eq!(verdict["duplicated"], 0);
    assert_eq!(verdict["devices"], 6);
    for source in ["vendorA", "vendorB", "vendorC"] {
        let s = &verdict["sources"][source];
        assert!(s["acked"].as_u64().unwrap() > 0, "{verdict}");
        assert_eq!(s["acked"], s["found"], "{verdict}");
    }

    let tail = gateway.cli(&["tail", "gps", "-n", "1000", "-o", "csv"]);
    assert!(tail.status.success(), "{}", String::from_utf8_lossy(&tail.stderr));
    let rows = String::from_utf8_lossy(&tail.stdout);
    for device in ["A-0000", "356938035600000", "C-0000"] {
        assert!(rows.contains(&format!(",{device},")), "no rows of {device}:\n{rows}");
    }
    // The quarantine holds the malformed payloads, with the device's source.
    let quarantine = gateway.cli(&["quarantine", "list", "gps"]);
    assert!(String::from_utf8_lossy(&quarantine.stdout).contains("vendor"), "{quarantine:?}");
    gateway.stop();
}

#[test]
fn a_load_while_the_gateway_is_killed_three_times_loses_and_repeats_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut gateway = Gateway::start(dir.path(), &ports);
    let record = dir.path().join("load.json");
    let record = record.to_str().unwrap();

    let mut load = sim(
        &[
            "load",
            "--devices",
            "12",
            "--messages",
            "2400",
            "--rate",
            "200",
            "--timeout",
            "10s",
            "--record",
            record,
            "--json",
        ],
        &ports,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(2500));
        gateway.kill();
        gateway.spawn();
    }
    let started = Instant::now();
    while load.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(240), "the load did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    let load = load.wait_with_output().unwrap();
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    let summary = json(&load);
    eprintln!("load: {summary}");
    assert_eq!(summary["reports"], 2400, "{summary}");
    // The kills cut connections with messages in flight: those were sent again.
    assert!(summary["failed"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["unsent"], 0, "{summary}");
    gateway.stop();

    // Read from the data directory, the gateway stopped.
    let verify = verify(&["--record", record, "--json", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--gateway-bin")
        .arg(gateway_bin())
        .output()
        .unwrap();
    let verdict = json(&verify);
    eprintln!("verify: {verdict}");
    assert!(verify.status.success(), "{verdict}\n{}", gateway.log());
    assert_eq!(verdict["acked"], 2400, "every report was retried until acknowledged: {verdict}");
    assert_eq!(verdict["missing"], 0);
    assert_eq!(verdict["duplicated"], 0);
}

#[test]
fn vendor_c_in_senml_with_backlog_bursts_is_committed_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut gateway = Gateway::start(dir.path(), &ports);
    let record = dir.path().join("run.json");
    let record = record.to_str().unwrap();
    let args =
        ["run", "--vendors", "c", "--senml", "--devices", "3", "--duration", "5s", "--period", "200ms"];
    let run = sim(&args, &ports)
        .args(["--offline", "0.1", "--malformed", "0", "--duplicates", "0.1", "--record", record, "--json"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}\n{}", String::from_utf8_lossy(&run.stderr), gateway.log());
    let summary = json(&run);
    assert!(summary["acked"].as_u64().unwrap() > 20, "{summary}");
    assert!(summary["offline"].as_u64().unwrap() > 0, "no backlog bursts: {summary}");
    assert_eq!(summary["refused"], 0, "{summary}");

    let verify = verify(&["--record", record, "--json"]).output().unwrap();
    assert!(verify.status.success(), "{}\n{}", String::from_utf8_lossy(&verify.stdout), gateway.log());
    let verdict = json(&verify);
    assert_eq!(
        (verdict["missing"].as_u64(), verdict["duplicated"].as_u64()),
        (Some(0), Some(0)),
        "{verdict}"
    );
    // Every field came through the SenML records, in the units the preprocess makes of them.
    let sql = "SELECT COUNT(*) FROM gps WHERE speed IS NULL OR heading IS NULL OR battery IS NULL OR lat < 49 OR lat > 50";
    let nulls = gateway.cli(&["sql", "-o", "csv", sql]);
    assert_eq!(String::from_utf8_lossy(&nulls.stdout).lines().last(), Some("0"), "{nulls:?}");
    gateway.stop();
}

#[test]
fn bench_compares_the_gateway_with_each_protocols_peer_and_counts_every_acknowledged_report() {
    let output = Command::new(env!("CARGO_BIN_EXE_device-sim"))
        .args(["bench", "--duration", "1s", "--only", "mqtt-1,http-1,coap-64", "--json"])
        .arg("--gateway-bin")
        .arg(gateway_bin())
        .output()
        .unwrap();
    assert!(output.status.success(), "bench failed: {}", String::from_utf8_lossy(&output.stderr));
    let report = json(&output);
    let rows = report["rows"].as_array().unwrap();
    let scenarios: Vec<_> = rows.iter().map(|r| r["scenario"].as_str().unwrap()).collect();
    assert_eq!(scenarios, ["mqtt-1", "http-1", "coap-64"]);
    for row in rows {
        let scenario = &row["scenario"];
        // tests/run.sh installs mosquitto and libcoap's coap-server: every peer has figures.
        assert!(row["peer_error"].is_null(), "{scenario}: {}", row["peer_error"]);
        for side in ["gateway", "peer"] {
            let figures = &row[side];
            let acked = figures["acked"].as_u64().unwrap();
            assert!(acked > 0, "{scenario} {side}: nothing acknowledged: {figures}");
            assert_eq!(figures["rows"].as_u64(), Some(acked), "{scenario} {side}: not all counted");
            assert_eq!(figures["failed"].as_u64(), Some(0), "{scenario} {side}: {figures}");
            assert!(figures["ack_p50_ms"].as_f64().unwrap() <= figures["ack_p99_ms"].as_f64().unwrap());
        }
        assert!(row["gateway"]["peak_rss_mib"].as_f64().unwrap() > 1.0, "{scenario}: no RSS");
        let ratio = row["ratio"].as_f64().unwrap();
        let expected =
            row["gateway"]["rows_per_s"].as_f64().unwrap() / row["peer"]["rows_per_s"].as_f64().unwrap();
        assert!((ratio - expected).abs() < 1e-9, "{scenario}: ratio {ratio}, figures say {expected}");
    }
}
