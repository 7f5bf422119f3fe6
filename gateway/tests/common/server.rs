//! `odf-gateway serve` run as an operator runs it, on loopback ports it picks itself, and a
//! plain HTTP/1.1 client that speaks to it over a socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a start (replaying a log) may take before a test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Server {
    child: Option<Child>,
    pub root: PathBuf,
    pub http: SocketAddr,
    /// The first plain MQTT listener, when MQTT is on.
    pub mqtt: Option<SocketAddr>,
    /// The first MQTT over TLS listener.
    pub mqtts: Option<SocketAddr>,
    /// The CoAP listeners (IPv4, then IPv6).
    pub coap: Vec<SocketAddr>,
    config: PathBuf,
    log: PathBuf,
}

/// What a service manager adds to a start.
#[derive(Default)]
pub struct Launch {
    pub env: Vec<(String, String)>,
    /// `JOURNAL_STREAM` naming the log file, as systemd names the journal's socket.
    pub journal_stream: bool,
    /// Return once the listeners are bound, without waiting for `/readyz` (which a dataset
    /// that cannot be opened keeps at 503).
    pub unready: bool,
}

/// A config for tests: HTTP and MQTT on free loopback ports, a short flush interval,
/// anonymous clients allowed.
pub fn config(extra: &str) -> String {
    config_with("", "write = [\"*\"]\nquery = [\"*\"]\nsubscribe = [\"#\"]\n", extra)
}

/// As `config`, with more `[mqtt]` keys and the `[anonymous]` grants given.
pub fn config_with(mqtt: &str, anonymous: &str, extra: &str) -> String {
    format!(
        "[http]\nlisten = [\"127.0.0.1:0\"]\n\n[coap]\nlisten = [\"127.0.0.1:0\", \"[::1]:0\"]\n\n[mqtt]\nlisten = [\"127.0.0.1:0\"]\n{mqtt}\n\n[pipeline]\nflush_interval = \"100ms\"\n\n[anonymous]\n{anonymous}\n{extra}"
    )
}

impl Server {
    /// Starts the gateway in `root` (data in `root/data`, manifests in `root/schemas`) with
    /// `config` as its configuration, and waits until it is ready.
    pub fn start(root: &Path, config: &str) -> Server {
        let path = root.join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        Server::start_with(root, path, &Launch::default())
    }

    /// As `start`, with more environment (as a service manager would set it).
    pub fn start_launched(root: &Path, config: &str, launch: &Launch) -> Server {
        let path = root.join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        Server::start_with(root, path, launch)
    }

    fn start_with(root: &Path, config: PathBuf, launch: &Launch) -> Server {
        let addresses = root.join("addresses.json");
        let _ = std::fs::remove_file(&addresses);
        let log = root.join(format!(
            "gateway-{}.log",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let stderr = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(super::gateway_bin());
        command.envs(launch.env.iter().cloned());
        if launch.journal_stream {
            use std::os::unix::fs::MetadataExt;
            let file = stderr.metadata().unwrap();
            command.env("JOURNAL_STREAM", format!("{}:{}", file.dev(), file.ino()));
        }
        let child = command
            .current_dir(root)
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--addresses-file")
            .arg(&addresses)
            .env("ODF_GATEWAY_DATA_DIR", root.join("data"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut server = Server {
            child: Some(child),
            root: root.to_owned(),
            http: "127.0.0.1:1".parse().unwrap(),
            mqtt: None,
            mqtts: None,
            coap: Vec::new(),
            config,
            log,
        };
        let started = Instant::now();
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&addresses) {
                break text;
            }
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the gateway exited with {status} at start:\n{}", server.log());
            }
            assert!(started.elapsed() < START_TIMEOUT, "the gateway did not start:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(20));
        };
        let addresses: Value = serde_json::from_str(&text).unwrap();
        server.http = addresses["http"][0].as_str().unwrap().parse().unwrap();
        server.mqtt = addresses["mqtt"]["tcp"][0].as_str().map(|a| a.parse().unwrap());
        server.mqtts = addresses["mqtt"]["tls"][0].as_str().map(|a| a.parse().unwrap());
        server.coap = addresses["coap"]["udp"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str()?.parse().ok())
            .collect();
        while !launch.unready && server.get("/readyz").status != 200 {
            assert!(started.elapsed() < START_TIMEOUT, "the gateway did not get ready:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Starts it again on the same folder and configuration (after a stop or a kill).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill it first");
        let again = Server::start_with(&self.root, self.config.clone(), &Launch::default());
        *self = again;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A `kB` line of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
    pub fn memory(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// The CPU time the process has used (user and system), in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The fields after the command (which may hold spaces) in brackets.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("the gateway did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush or commit.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.http, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Response {
        let headers: Vec<(&str, &str)> = content_type.map(|t| ("Content-Type", t)).into_iter().collect();
        request(self.http, "POST", path, &headers, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// JSON lines (tail, query) as values.
    pub fn lines(&self) -> Vec<Value> {
        self.text().lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// One HTTP/1.1 request on a new connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size =
                usize::from_str_radix(line.trim(), 16).map_err(|_| std::io::Error::other("bad chunk"))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(Response { status, headers, body })
}

/// Copies the repository's manifests (or the given ones) into `root/schemas`.
pub fn schemas(root: &Path, manifests: &[(&str, &str)]) {
    let dir = root.join("schemas");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in manifests {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

pub const GPS: &str = include_str!("../../../schemas/gps.yaml");
