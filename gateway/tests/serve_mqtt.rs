//! The embedded MQTT broker as devices use it, with clients we did not write (mosquitto's
//! `mosquitto_pub`, `mosquitto_sub`, `mosquitto_rr`; rumqttc for the crash test): every
//! protocol version and QoS, topic routes, content types, credentials and authorization,
//! reason codes, TLS, and the acknowledgement that means "on disk".

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "common/mqtt_wire.rs"]
mod wire;

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::server::{GPS, Server, config, config_with, schemas};
use serde_json::Value;

const TOPIC_A: &str = "datasets/gps/sources/vendorA";

fn report(device: &str, seq: u64) -> String {
    format!(
        r#"{{"device_id":"{device}","seq":{seq},"t":"2026-01-01T00:00:{:02}Z","lat":49.2,"lon":-123.1}}"#,
        seq % 60
    )
}

fn gps_server(toml: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    let server = Server::start(dir.path(), toml);
    (dir, server)
}

/// `mosquitto_pub` against the gateway's plain MQTT listener.
fn publish(server: &Server, args: &[&str]) -> Output {
    let addr = server.mqtt.expect("mqtt is on");
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .expect("mosquitto_pub (tests/run.sh installs mosquitto-clients)")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The dataset's records, once there are `n` (the commit follows within the flush interval).
fn records(server: &Server, dataset: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let response = server.get(&format!("/datasets/{dataset}/tail?limit=10000"));
        assert_eq!(response.status, 200, "{}", response.text());
        let rows = response.lines();
        if rows.len() >= n || started.elapsed() > Duration::from_secs(30) {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_protocol_version_and_qos_is_committed() {
    let (_dir, server) = gps_server(&config(""));
    let mut seq = 0;
    for version in ["mqttv311", "mqttv5"] {
        for qos in ["0", "1", "2"] {
            seq += 1;
            let out = publish(&server, &["-V", version, "-q", qos, "-t", TOPIC_A, "-m", &report("A-1", seq)]);
            assert!(out.status.success(), "{version} qos {qos}: {}", text(&out));
        }
    }
    let rows = records(&server, "gps", 6);
    let mut seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>(), "{rows:?}");
}

#[test]
fn a_topic_route_fills_a_column_and_the_content_type_chooses_the_format() {
    let extra =
        "[[route]]\npattern = \"trackers/{device_id}/gps\"\ndataset = \"gps\"\nsource = \"vendorA\"\n";
    let (_dir, server) = gps_server(&config(extra));
    let csv = "seq,t,lat,lon\n7,2026-01-01T00:00:00Z,49.2,-123.1\n";
    let out = publish(
        &server,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "trackers/A-42/gps",
            "-D",
            "publish",
            "content-type",
            "text/csv",
            "-m",
            csv,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let rows = records(&server, "gps", 1);
    assert_eq!((rows[0]["device_id"].as_str(), rows[0]["seq"].as_u64()), (Some("A-42"), Some(7)), "{rows:?}");
}

#[test]
fn v5_reason_codes_say_what_was_wrong() {
    let (_dir, server) = gps_server(&config(""));
    // `-d` shows the PUBACK's reason code; the reason string follows the warning.
    let v5 = |topic: &str, message: &str| {
        text(&publish(&server, &["-d", "-V", "mqttv5", "-q", "1", "-t", topic, "-m", message]))
    };
    let out = v5(TOPIC_A, "not json at all");
    assert!(out.contains("RC:153") && out.contains("malformed JSON"), "0x99 payload format invalid: {out}");
    let out = v5("somewhere/else", &report("A-1", 1));
    assert!(out.contains("RC:144") && out.contains("no route for topic"), "0x90 topic name invalid: {out}");
    let out = v5(TOPIC_A, &report("A-1", 1));
    assert!(out.contains("received PUBACK (Mid: 1, RC:0)"), "{out}");
    // The bad payload is in the quarantine, with the topic and the client.
    let listed = server.get("/datasets/gps/quarantine").json();
    let entry = &listed["entries"][0];
    assert!(entry["sender"].as_str().unwrap().starts_with("mqtt client"), "{listed}");
    assert!(entry["route"].as_str().unwrap().contains(TOPIC_A), "{listed}");
}

#[test]
fn a_response_topic_gets_the_outcome_with_the_correlation_data() {
    let (_dir, server) = gps_server(&config(""));
    let addr = server.mqtt.unwrap();
    let out = Command::new("mosquitto_rr")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-V", "mqttv5", "-q", "1"])
        .args(["-t", TOPIC_A, "-e", "replies/A-1", "-D", "publish", "correlation-data", "req-17", "-W", "20"])
        .args(["-m", &format!("{}\n{{\"seq\": \"x\"}}\n", report("A-1", 1))])
        .output()
        .expect("mosquitto_rr");
    assert!(out.status.success(), "{}", text(&out));
    let reply: Value =
        serde_json::from_slice(out.stdout.trim_ascii()).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(reply["rejected"][0]["field"], "seq", "{reply}");
}

#[test]
fn credentials_and_grants_keep_each_vendor_to_its_own_source() {
    let hash = odf_gateway::access::hash_password(b"secret-a").unwrap();
    let extra = format!(
        "[[identity]]\nname = \"vendorA\"\npassword_hash = \"{hash}\"\nwrite = [\"gps/vendorA\"]\nsubscribe = [\"replies/vendorA/#\"]\n"
    );
    // Anonymous clients may read (for this test's checks) but not write.
    let (_dir, server) = gps_server(&config_with("", "query = [\"*\"]\n", &extra));
    let as_a = ["-u", "vendorA", "-P", "secret-a"];
    let out = publish(
        &server,
        &[&as_a[..], &["-V", "mqttv5", "-q", "1", "-t", TOPIC_A, "-m", &report("A-1", 1)]].concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = publish(
        &server,
        &[&as_a[..], &["-d", "-V", "mqttv5", "-q", "1", "-t", "datasets/gps/sources/vendorB", "-m", "x"]]
            .concat(),
    );
    assert!(text(&out).contains("RC:135") && text(&out).contains("may not write"), "0x87: {}", text(&out));
    let out = publish(&server, &["-d", "-V", "mqttv5", "-q", "1", "-t", TOPIC_A, "-m", &report("A-1", 2)]);
    assert!(text(&out).contains("RC:135"), "anonymous: {}", text(&out));
    let out = publish(
        &server,
        &["-u", "vendorA", "-P", "wrong", "-q", "1", "-t", TOPIC_A, "-m", &report("A-1", 3)],
    );
    assert!(!out.status.success(), "a wrong password: {}", text(&out));
    // v3.1.1 writing where it may not is disconnected, never acknowledged.
    let out = publish(
        &server,
        &[&as_a[..], &["-V", "mqttv311", "-q", "1", "-t", "datasets/gps/sources/vendorB", "-m", "x"]]
            .concat(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    // Subscriptions only to what the grants say.
    let port = server.mqtt.unwrap().port().to_string();
    let sub = |topic: &str| {
        Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "vendorA",
                "-P",
                "secret-a",
                "-V",
                "mqttv5",
                "-t",
                topic,
                "-W",
                "1",
            ])
            .output()
            .unwrap()
    };
    assert!(
        text(&sub("datasets/#")).contains("subscription requests were denied"),
        "{}",
        text(&sub("datasets/#"))
    );
    assert!(!text(&sub("replies/vendorA/x")).contains("denied"));
    assert_eq!(records(&server, "gps", 1).len(), 1);
}

#[test]
fn backpressure_is_quota_exceeded() {
    // Nothing is committed within the hour, and the pending budget is tiny.
    let toml =
        config("").replace("flush_interval = \"100ms\"", "flush_interval = \"1h\"\nmax_pending_bytes = 300");
    let (_dir, server) = gps_server(&toml);
    let mut codes = Vec::new();
    for seq in 0..10 {
        let out = text(&publish(
            &server,
            &["-d", "-V", "mqttv5", "-q", "1", "-t", TOPIC_A, "-m", &report("A-1", seq)],
        ));
        let code = out.split("RC:").nth(1).and_then(|r| r.split(')').next()).unwrap_or("?").to_owned();
        codes.push(code.clone());
        if code == "151" {
            assert!(out.contains("not yet committed"), "{out}");
            break;
        }
    }
    assert!(
        codes.first().map(String::as_str) == Some("0") && codes.last().map(String::as_str) == Some("151"),
        "{codes:?}"
    );
}

#[test]
fn v311_acknowledges_a_bad_payload_it_quarantined_so_a_device_never_loops() {
    let (_dir, server) = gps_server(&config(""));
    let out = publish(&server, &["-V", "mqttv311", "-q", "1", "-t", TOPIC_A, "-m", "garbage"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = server.get("/datasets/gps/quarantine").json();
    assert_eq!(listed["entries"].as_array().unwrap().len(), 1, "{listed}");
}

#[test]
fn a_retained_publish_is_ingested_once() {
    let (_dir, server) = gps_server(&config(""));
    let out = publish(&server, &["-V", "mqttv311", "-q", "1", "-r", "-t", TOPIC_A, "-m", &report("A-1", 1)]);
    assert!(out.status.success(), "{}", text(&out));
    let port = server.mqtt.unwrap().port().to_string();
    for _ in 0..2 {
        let _ = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-t", TOPIC_A, "-W", "1"])
            .output()
            .unwrap();
    }
    assert_eq!(records(&server, "gps", 1).len(), 1);
    // Delivering it to the subscribers did not ingest it again.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(records(&server, "gps", 1).len(), 1);
}

/// The acknowledgement means "on disk": traced with strace, every PUBACK the gateway writes
/// to a client comes after an fdatasync of the write-ahead log that followed the publish.
#[test]
fn a_puback_never_comes_before_the_fsync() {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    std::fs::write(dir.path().join("gateway.toml"), config("")).unwrap();
    let addresses = dir.path().join("addresses.json");
    let trace = dir.path().join("trace.txt");
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-xx", "-e", "trace=fdatasync,write,writev,sendto,sendmsg", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_odf-gateway"))
        .args(["serve", "--config", "gateway.toml", "--addresses-file"])
        .arg(&addresses)
        .current_dir(dir.path())
        .env("ODF_GATEWAY_DATA_DIR", dir.path().join("data"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("strace (tests/run.sh installs it)");
    let started = Instant::now();
    while !addresses.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no start: {}",
            std::fs::read_to_string(&trace).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let port = serde_json::from_str::<Value>(&std::fs::read_to_string(&addresses).unwrap()).unwrap()["mqtt"]
        ["tcp"][0]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    for seq in 1..=5 {
        let out = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                "mqttv311",
                "-q",
                "1",
                "-t",
                TOPIC_A,
                "-m",
                &report("A-1", seq),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    // SIGTERM to the gateway, strace's child: strace ends with it.
    let _ = Command::new("pkill").args(["-TERM", "-P", &child.id().to_string()]).status();
    let _ = child.wait();
    let trace = std::fs::read_to_string(&trace).unwrap();
    // A v3.1.1 PUBACK is four bytes: 0x40 0x02 and the packet id.
    let (mut synced, mut pubacks) = (false, 0);
    for line in trace.lines() {
        if line.contains("fdatasync(") {
            synced = true;
        } else if line.contains("\"\\x40\\x02\\x00") {
            assert!(synced, "a PUBACK was written before the write-ahead log was synced:\n{line}");
            synced = false;
            pubacks += 1;
        }
    }
    assert_eq!(pubacks, 5, "five PUBACKs in the trace:\n{trace}");
}

#[test]
fn tls_with_a_password_and_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = Command::new(env!("CARGO_BIN_EXE_odf-gateway"))
        .args(["certs", "--client", "vendorA", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let c = |name: &str| certs.join(name).display().to_string();
    let hash = odf_gateway::access::hash_password(b"secret-a").unwrap();
    let mqtt = format!(
        "tls_listen = [\"127.0.0.1:0\"]\n[mqtt.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        c("server.pem"),
        c("server.key"),
        c("ca.pem")
    );
    let extra = format!(
        "[[identity]]\nname = \"vendorA\"\npassword_hash = \"{hash}\"\ncert_subject = \"CN=vendorA\"\nwrite = [\"gps/vendorA\"]\n"
    );
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    let server = Server::start(dir.path(), &config_with(&mqtt, "query = [\"*\"]\n", &extra));
    let port = server.mqtts.expect("a TLS listener").port().to_string();
    let tls = |args: &[&str]| {
        Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &port, "--cafile", &c("ca.pem"), "-q", "1", "-t", TOPIC_A])
            .args(args)
            .output()
            .unwrap()
    };
    let (cert, key) = (c("client-vendorA.pem"), c("client-vendorA.key"));
    let out = tls(&["--cert", &cert, "--key", &key, "-m", &report("A-1", 1)]);
    assert!(out.status.success(), "client certificate: {}", text(&out));
    let out =
        tls(&["--cert", &cert, "--key", &key, "-u", "vendorA", "-P", "secret-a", "-m", &report("A-1", 2)]);
    assert!(out.status.success(), "certificate and password: {}", text(&out));
    let out = tls(&["-u", "vendorA", "-P", "secret-a", "-m", &report("A-1", 3)]);
    assert!(!out.status.success(), "the listener requires a client certificate: {}", text(&out));
    assert_eq!(records(&server, "gps", 2).len(), 2);
}

/// QoS 1 publishes from several clients while the gateway is killed with SIGKILL: every
/// publish that got its PUBACK is committed exactly once.
#[test]
fn acknowledged_publishes_survive_kills_exactly_once() {
    use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("counts.yaml", COUNTS)]);
    let server = std::sync::Arc::new(std::sync::Mutex::new(Server::start(dir.path(), &config(""))));
    let acked: std::sync::Arc<std::sync::Mutex<Vec<(usize, u64)>>> = Default::default();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..3 {
        let (server, acked, done) = (server.clone(), acked.clone(), done.clone());
        clients.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let port = server.lock().unwrap().mqtt.unwrap().port();
                let mut options = MqttOptions::new(format!("counter-{c}-{n}"), "127.0.0.1", port);
                options.set_keep_alive(Duration::from_secs(5));
                let (client, mut connection) = Client::new(options, 10);
                // One publish at a time, so each PUBACK names the record it acknowledges.
                let mut in_flight: Option<u64> = None;
                for event in connection.iter() {
                    match event {
                        Ok(Event::Incoming(Packet::ConnAck(_))) | Ok(Event::Incoming(Packet::PubAck(_))) => {
                            if let (Some(sent), Ok(Event::Incoming(Packet::PubAck(_)))) =
                                (in_flight.take(), &event)
                            {
                                acked.lock().unwrap().push((c, sent));
                            }
                            if done.load(std::sync::atomic::Ordering::SeqCst) {
                                break;
                            }
                            n += 1;
                            let body = format!("{{\"client\":\"c{c}\",\"n\":{n}}}");
                            in_flight = Some(n);
                            if client
                                .try_publish("datasets/counts/sources/clients", QoS::AtLeastOnce, false, body)
                                .is_err()
                            {
                                break;
                            }
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        // Killed: a record in flight is of unknown fate; reconnect and go on.
                        Err(_) => break,
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    for pause in [300, 700, 400] {
        std::thread::sleep(Duration::from_millis(pause));
        let mut server = server.lock().unwrap();
        server.kill();
        server.restart();
    }
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let mut server = server.lock().unwrap();
    assert!(server.stop().success());
    let out = Command::new(env!("CARGO_BIN_EXE_odf-gateway"))
        .args(["tail", "counts", "-n", "10000000", "-o", "json"])
        .env("ODF_GATEWAY_DATA_DIR", server.data())
        .output()
        .unwrap();
    let mut committed: HashMap<(String, u64), usize> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        *committed
            .entry((row["client"].as_str().unwrap().to_owned(), row["n"].as_u64().unwrap()))
            .or_default() += 1;
    }
    let twice: Vec<_> = committed.iter().filter(|&(_, &count)| count > 1).collect();
    assert!(twice.is_empty(), "committed twice: {twice:?}");
    let acked = acked.lock().unwrap();
    assert!(acked.len() > 10, "only {} acknowledged", acked.len());
    for (c, n) in acked.iter() {
        assert!(committed.contains_key(&(format!("c{c}"), *n)), "acknowledged and lost: c{c} {n}");
    }
    eprintln!("{} acknowledged, {} committed", acked.len(), committed.len());
}

const COUNTS: &str = include_str!("fixtures/counts.yaml");

/// A mosquitto broker on a free loopback port, stopped when dropped.
struct Mosquitto {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto (tests/run.sh installs it)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto { child, port, _dir: dir }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_gateways_split_a_shared_subscription_and_commit_each_record_once() {
    let upstream = Mosquitto::start();
    let gateway = |n: usize| {
        let extra = format!(
            "[[route]]\npattern = \"trackers/{{device_id}}/gps\"\ndataset = \"gps\"\nsource = \"vendorA\"\n\n\
             [[mqtt.bridge]]\nname = \"site\"\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"gateway-{n}\"\n\
             subscribe = [\"$share/gateways/trackers/+/gps\"]\n",
            upstream.port
        );
        gps_server(&config(&extra))
    };
    let (_a_dir, a) = gateway(1);
    let (_b_dir, b) = gateway(2);
    // Both bridges have subscribed once a first message reaches one of them.
    let started = Instant::now();
    loop {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &upstream.port.to_string(), "-q", "1", "-t", "trackers/T-0/gps"])
            .args(["-m", &format!(r#"{{"seq":0,"t":"2026-01-01T00:00:00Z","lat":1,"lon":2}}"#)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        std::thread::sleep(Duration::from_millis(300));
        let total = |s: &Server| s.get("/datasets/gps").json()["records"].as_u64().unwrap_or(0);
        if total(&a) + total(&b) > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the bridges never received anything");
    }
    std::thread::sleep(Duration::from_millis(500));
    let lines: String = (1..=200)
        .map(|seq| format!(r#"{{"seq":{seq},"t":"2026-01-01T00:00:00Z","lat":1,"lon":2}}"#) + "\n")
        .collect();
    let mut publisher = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &upstream.port.to_string(),
            "-q",
            "1",
            "-t",
            "trackers/T-1/gps",
            "-l",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    publisher.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(publisher.wait().unwrap().success());

    let seqs = |s: &Server| -> Vec<u64> {
        s.get("/datasets/gps/tail?limit=10000")
            .lines()
            .iter()
            .filter(|r| r["device_id"] == "T-1")
            .map(|r| r["seq"].as_u64().unwrap())
            .collect()
    };
    let started = Instant::now();
    let (mut from_a, mut from_b) = (seqs(&a), seqs(&b));
    while from_a.len() + from_b.len() < 200 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
        (from_a, from_b) = (seqs(&a), seqs(&b));
    }
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "the load was not shared: {} and {}",
        from_a.len(),
        from_b.len()
    );
    let mut all: Vec<u64> = from_a.iter().chain(&from_b).copied().collect();
    all.sort();
    assert_eq!(all, (1..=200).collect::<Vec<_>>(), "each record exactly once across the two gateways");
}

/// Three identities for the session and will tests: vendorA and vendorB write their own
/// source; vendorA may subscribe to its own topic, vendorB to nothing; watcher may only
/// subscribe, to everything; vendorC's client ids are bound to it by configuration.
/// Anonymous clients may only read over HTTP.
fn identities_server() -> (tempfile::TempDir, Server) {
    let hash = |p: &[u8]| odf_gateway::access::hash_password(p).unwrap();
    let extra = format!(
        "[[identity]]\nname = \"vendorA\"\npassword_hash = \"{}\"\nwrite = [\"gps/vendorA\"]\nsubscribe = [\"{TOPIC_A}\"]\n\n\
         [[identity]]\nname = \"vendorB\"\npassword_hash = \"{}\"\nwrite = [\"gps/vendorB\"]\n\n\
         [[identity]]\nname = \"vendorC\"\npassword_hash = \"{}\"\nclient_ids = [\"vendorC-*\"]\nwrite = [\"gps/vendorA\"]\n\n\
         [[identity]]\nname = \"watcher\"\npassword_hash = \"{}\"\nsubscribe = [\"#\"]\n",
        hash(b"secret-a"),
        hash(b"secret-b"),
        hash(b"secret-c"),
        hash(b"secret-w"),
    );
    gps_server(&config_with("", "query = [\"*\"]\n", &extra))
}

const A: Option<(&str, &str)> = Some(("vendorA", "secret-a"));
const B: Option<(&str, &str)> = Some(("vendorB", "secret-b"));
const C: Option<(&str, &str)> = Some(("vendorC", "secret-c"));
const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_persistent_session_is_never_handed_to_another_identity() {
    use wire::{Client, Connect};
    let (_dir, server) = identities_server();
    let addr = server.mqtt.unwrap();
    // vendorA's tracker subscribes in a persistent session and goes away.
    let persistent = |credentials, v5| Connect {
        v5,
        client_id: "tracker-1",
        credentials,
        clean_start: false,
        session_expiry: 3600,
        will: None,
    };
    let (mut a, connack) = Client::connect(addr, &persistent(A, true));
    assert_eq!(connack.map(|c| c.connack_code()), Some(0));
    a.send(&wire::subscribe(true, TOPIC_A, 1, 1));
    assert_eq!(a.expect(wire::SUBACK, 10 * SECOND).body[3], 1, "granted QoS 1");
    a.send(&wire::disconnect());
    drop(a.stream.shutdown(std::net::Shutdown::Write));
    assert!(a.closed(10 * SECOND));
    // Two reports are queued for it.
    for seq in 1..=2 {
        let out = publish(
            &server,
            &["-u", "vendorA", "-P", "secret-a", "-q", "1", "-t", TOPIC_A, "-m", &report("A-1", seq)],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    // vendorB, who may subscribe to nothing, takes the client id: refused, and given nothing.
    for v5 in [true, false] {
        let (mut b, connack) = Client::connect(addr, &persistent(B, v5));
        let connack = connack.expect("a CONNACK");
        assert_eq!(connack.connack_code(), if v5 { 0x87 } else { 5 }, "v5 {v5}: {connack:?}");
        let after = b.drain(SECOND);
        assert!(after.iter().all(|p| p.kind != wire::PUBLISH), "v5 {v5}: {after:?}");
    }
    // The session is intact: vendorA finds both reports in it.
    let (mut a, connack) = Client::connect(addr, &persistent(A, true));
    let connack = connack.expect("a CONNACK");
    assert_eq!((connack.connack_code(), connack.session_present()), (0, true), "{connack:?}");
    let delivered: Vec<_> = a.drain(2 * SECOND).into_iter().filter(|p| p.kind == wire::PUBLISH).collect();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
}

#[test]
fn a_client_id_in_use_stays_with_its_identity_and_its_connection() {
    use wire::{Client, Connect};
    let (_dir, server) = identities_server();
    let addr = server.mqtt.unwrap();
    let connect = |client_id, credentials| {
        Client::connect(addr, &Connect { client_id, credentials, ..Connect::default() })
    };
    let (mut a, connack) = connect("tracker-2", A);
    assert_eq!(connack.map(|c| c.connack_code()), Some(0));
    // vendorB with the same client id is refused; vendorA's connection is not kicked.
    let (_b, connack) = connect("tracker-2", B);
    assert_eq!(connack.map(|c| c.connack_code()), Some(0x87));
    a.send(&wire::pingreq());
    a.expect(wire::PINGRESP, 10 * SECOND);
    a.send(&wire::publish(true, TOPIC_A, report("A-2", 1).as_bytes(), 1, 7, false, None));
    assert_eq!(a.expect(wire::PUBACK, 10 * SECOND).reason(), 0);
    // vendorA taking over its own client id is MQTT's session takeover.
    let (mut a2, connack) = connect("tracker-2", A);
    assert_eq!(connack.map(|c| c.connack_code()), Some(0));
    assert!(a.closed(10 * SECOND), "the connection taken over is closed");
    a2.send(&wire::pingreq());
    a2.expect(wire::PINGRESP, 10 * SECOND);
    // Client ids bound by configuration: vendorC's alone, and vendorC uses only those.
    let (_c, connack) = connect("vendorC-1", C);
    assert_eq!(connack.map(|c| c.connack_code()), Some(0));
    let (_c, connack) = connect("vendorC-2", A);
    assert_eq!(connack.map(|c| c.connack_code()), Some(0x87), "bound to vendorC");
    let (_c, connack) = connect("tracker-3", C);
    assert_eq!(connack.map(|c| c.connack_code()), Some(0x87), "vendorC uses only vendorC-*");
}

#[test]
fn a_will_goes_only_where_its_client_may_publish_and_is_ingested() {
    use wire::{Client, Connect};
    let (_dir, server) = identities_server();
    let addr = server.mqtt.unwrap();
    let (mut watcher, connack) = Client::connect(
        addr,
        &Connect { client_id: "watcher", credentials: Some(("watcher", "secret-w")), ..Connect::default() },
    );
    assert_eq!(connack.map(|c| c.connack_code()), Some(0));
    watcher.send(&wire::subscribe(true, "#", 0, 1));
    assert_eq!(watcher.expect(wire::SUBACK, 10 * SECOND).body[3], 0);
    let forged = report("B-1", 666);
    for topic in ["replies/vendorB/cmd", "datasets/gps/sources/vendorB"] {
        for v5 in [true, false] {
            let connect = Connect {
                v5,
                client_id: "forger",
                credentials: A,
                will: Some((topic, forged.as_bytes(), 1)),
                ..Connect::default()
            };
            let (forger, connack) = Client::connect(addr, &connect);
            let code = connack.map(|c| c.connack_code());
            assert_eq!(code, Some(if v5 { 0x87 } else { 5 }), "a will on {topic} (v5 {v5})");
            // Dropped without DISCONNECT: a will that had been taken would be sent now.
            drop(forger.stream.shutdown(std::net::Shutdown::Both));
        }
    }
    let seen = watcher.drain(2 * SECOND);
    assert!(seen.iter().all(|p| p.kind != wire::PUBLISH), "a forged will was relayed: {seen:?}");
    // A will on its own source is a publish like any: relayed and committed.
    let will = report("A-9", 9);
    let (device, connack) = Client::connect(
        addr,
        &Connect {
            client_id: "device-9",
            credentials: A,
            will: Some((TOPIC_A, will.as_bytes(), 1)),
            ..Connect::default()
        },
    );
    assert_eq!(connack.map(|c| c.connack_code()), Some(0));
    drop(device.stream.shutdown(std::net::Shutdown::Both));
    let relayed = watcher.expect(wire::PUBLISH, 10 * SECOND);
    assert_eq!(relayed.payload(true), will.as_bytes());
    let rows = records(&server, "gps", 1);
    assert_eq!((rows.len(), rows[0]["seq"].as_u64()), (1, Some(9)), "{rows:?}");
    // One whose payload does not fit goes to the quarantine, and is not relayed either.
    let (device, connack) = Client::connect(
        addr,
        &Connect {
            client_id: "device-10",
            credentials: A,
            will: Some((TOPIC_A, b"garbage", 1)),
            ..Connect::default()
        },
    );
    assert_eq!(connack.map(|c| c.connack_code()), Some(0));
    drop(device.stream.shutdown(std::net::Shutdown::Both));
    let started = Instant::now();
    let mut quarantined = Value::Null;
    while started.elapsed() < Duration::from_secs(20) {
        quarantined = server.get("/datasets/gps/quarantine").json();
        if quarantined["entries"].as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(quarantined["entries"].as_array().map(Vec::len), Some(1), "{quarantined}");
    let seen = watcher.drain(SECOND);
    assert!(seen.iter().all(|p| p.kind != wire::PUBLISH), "a will not taken was relayed: {seen:?}");
    assert_eq!(records(&server, "gps", 1).len(), 1);
}

#[test]
fn a_topic_alias_above_the_maximum_is_a_protocol_error() {
    use wire::{Client, Connect};
    let anonymous = "write = [\"*\"]\nquery = [\"*\"]\n";
    let (_dir, server) = gps_server(&config_with("max_topic_aliases = 4\n", anonymous, ""));
    let addr = server.mqtt.unwrap();
    let (mut client, connack) =
        Client::connect(addr, &Connect { client_id: "aliases", ..Connect::default() });
    assert_eq!(connack.map(|c| c.connack_code()), Some(0));
    // Alias 4 is the last one allowed: set, then used without the topic.
    client.send(&wire::publish(true, TOPIC_A, report("A-1", 1).as_bytes(), 1, 1, false, Some(4)));
    assert_eq!(client.expect(wire::PUBACK, 10 * SECOND).reason(), 0);
    client.send(&wire::publish(true, "", report("A-1", 2).as_bytes(), 1, 2, false, Some(4)));
    assert_eq!(client.expect(wire::PUBACK, 10 * SECOND).reason(), 0);
    // Alias 5 is above the maximum: no PUBACK, the connection closed (with a DISCONNECT
    // 0x94 first where rmqtt writes it; 0.24.0 closes its side before it writes one).
    client.send(&wire::publish(true, TOPIC_A, report("A-1", 3).as_bytes(), 1, 3, false, Some(5)));
    if let Some(answer) = client.next(10 * SECOND) {
        assert_eq!((answer.kind, answer.reason()), (wire::DISCONNECT, 0x94), "{answer:?}");
    }
    assert!(client.closed(10 * SECOND));
    std::thread::sleep(Duration::from_millis(500));
    let rows = records(&server, "gps", 2);
    assert_eq!(rows.len(), 2, "{rows:?}");
}

#[test]
fn a_qos2_resend_after_a_lost_connection_is_acknowledged_not_ingested_again() {
    use wire::{Client, Connect};
    // An Append dataset: nothing would hide a second ingest (a Ledger drops a repeated key).
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("counts.yaml", COUNTS)]);
    let server = Server::start(dir.path(), &config(""));
    let addr = server.mqtt.unwrap();
    let topic = "datasets/counts/sources/clients";
    let count = |client: &str, n: u64| format!(r#"{{"client":"{client}","n":{n}}}"#);
    let (mut watcher, _) = Client::connect(addr, &Connect { client_id: "watcher", ..Connect::default() });
    watcher.send(&wire::subscribe(true, topic, 2, 1));
    watcher.expect(wire::SUBACK, 10 * SECOND);
    for v5 in [true, false] {
        let device = if v5 { "A-5" } else { "A-3" };
        let persistent =
            Connect { v5, client_id: device, clean_start: false, session_expiry: 3600, ..Connect::default() };
        let first = count(device, 1);
        let (mut client, connack) = Client::connect(addr, &persistent);
        assert_eq!(connack.map(|c| c.connack_code()), Some(0));
        client.send(&wire::publish(v5, topic, first.as_bytes(), 2, 1, false, None));
        assert_eq!(client.expect(wire::PUBREC, 10 * SECOND).reason(), 0);
        // The connection is lost before the PUBREL; the device did not see the PUBREC.
        drop(client.stream.shutdown(std::net::Shutdown::Both));
        std::thread::sleep(Duration::from_millis(300));
        let (mut client, connack) = Client::connect(addr, &persistent);
        let connack = connack.expect("a CONNACK");
        assert_eq!((connack.connack_code(), connack.session_present()), (0, true), "{connack:?}");
        client.send(&wire::publish(v5, topic, first.as_bytes(), 2, 1, true, None));
        assert_eq!(client.expect(wire::PUBREC, 10 * SECOND).reason(), 0, "v5 {v5}");
        client.send(&wire::pubrel(1));
        client.expect(wire::PUBCOMP, 10 * SECOND);
        // The packet id, released, carries a new message.
        client.send(&wire::publish(v5, topic, count(device, 2).as_bytes(), 2, 1, false, None));
        assert_eq!(client.expect(wire::PUBREC, 10 * SECOND).reason(), 0);
        client.send(&wire::pubrel(1));
        client.expect(wire::PUBCOMP, 10 * SECOND);
    }
    records(&server, "counts", 4);
    std::thread::sleep(Duration::from_millis(500));
    let rows = records(&server, "counts", 4);
    let mut seen: Vec<(String, u64)> =
        rows.iter().map(|r| (r["client"].as_str().unwrap().to_owned(), r["n"].as_u64().unwrap())).collect();
    seen.sort();
    let expected: Vec<(String, u64)> =
        [("A-3", 1), ("A-3", 2), ("A-5", 1), ("A-5", 2)].iter().map(|(d, s)| (d.to_string(), *s)).collect();
    assert_eq!(seen, expected, "each report committed once");
    let relayed = watcher.drain(SECOND).into_iter().filter(|p| p.kind == wire::PUBLISH).count();
    assert_eq!(relayed, 4, "each report relayed once");
}

#[test]
fn a_tracker_bound_to_its_client_id_writes_only_its_own_reports() {
    let hash = odf_gateway::access::hash_password(b"fleet-pw").unwrap();
    let extra = format!(
        "[[identity]]\nname = \"trackersA\"\npassword_hash = \"{hash}\"\nwrite = [\"gps/vendorA\"]\n\
         bind = [{{ column = \"device_id\", value = \"{{client_id}}\" }}]\n"
    );
    // Anonymous clients stand for vendorB here: they may write its source, and read.
    let anonymous = "query = [\"*\"]\nwrite = [\"gps/vendorB\"]\n";
    let (_dir, server) = gps_server(&config_with("", anonymous, &extra));
    let as_tracker = |client: &str, message: &str| {
        let login = ["-i", client, "-u", "trackersA", "-P", "fleet-pw"];
        text(&publish(
            &server,
            &[&login[..], &["-d", "-V", "mqttv5", "-q", "1", "-t", TOPIC_A, "-m", message]].concat(),
        ))
    };
    let out = as_tracker("A-1", &report("A-1", 1));
    assert!(out.contains("received PUBACK (Mid: 1, RC:0)"), "{out}");
    // Another tracker's report, or another vendor's tracker (the Ledger key poisoning).
    for forged in [report("A-2", 1), report("356938035643809", 42)] {
        let out = as_tracker("A-1", &forged);
        assert!(out.contains("RC:153") && out.contains("binds column 'device_id' to 'A-1'"), "0x99: {out}");
    }
    // In one payload, the tracker's own report goes on and the other is rejected.
    let out = as_tracker("A-1", &format!("{}\n{}\n", report("A-1", 2), report("A-3", 2)));
    assert!(out.contains("received PUBACK (Mid: 1, RC:0)"), "{out}");
    let rows = records(&server, "gps", 2);
    let mut seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, vec![1, 2], "{rows:?}");
    assert!(rows.iter().all(|r| r["device_id"] == "A-1"), "{rows:?}");
    let listed = server.get("/datasets/gps/quarantine").json();
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{listed}");
    assert!(entries.iter().all(|e| e["sender"].as_str().unwrap().contains("'A-1'")), "{listed}");
    // vendorB's real report #42 is committed: the forged one never took its Ledger key.
    let csv = "imei,ts,latitude,longitude,speed_knots,course,battery,counter\n\
               356938035643809,1767268800000,49.28,-123.12,17.0,270.0,87,42\n";
    let out = text(&publish(
        &server,
        &["-d", "-V", "mqttv5", "-q", "1", "-t", "datasets/gps/sources/vendorB", "-m", csv],
    ));
    assert!(out.contains("received PUBACK (Mid: 1, RC:0)"), "{out}");
    let rows = records(&server, "gps", 3);
    let b: Vec<&Value> = rows.iter().filter(|r| r["device_id"] == "356938035643809").collect();
    assert_eq!(b.len(), 1, "{rows:?}");
    assert_eq!((b[0]["seq"].as_u64(), b[0]["lat"].as_f64()), (Some(42), Some(49.28)), "{rows:?}");
}

#[test]
fn a_csv_report_without_its_header_is_payload_format_invalid() {
    let (_dir, server) = gps_server(&config(""));
    let line = "356938035643809,1767268800000,49.28,-123.12,17.0,270.0,87,42";
    let out = text(&publish(
        &server,
        &["-d", "-V", "mqttv5", "-q", "1", "-t", "datasets/gps/sources/vendorB", "-m", line],
    ));
    assert!(out.contains("RC:153") && out.contains("not a header"), "0x99: {out}");
    let listed = server.get("/datasets/gps/quarantine").json();
    assert_eq!(listed["entries"].as_array().unwrap().len(), 1, "{listed}");
}

#[test]
fn a_subscriber_away_is_kept_at_most_max_queued_messages() {
    let (_dir, server) = gps_server(&config_with(
        "max_queued = 10\n",
        "write = [\"*\"]\nquery = [\"*\"]\nsubscribe = [\"#\"]\n",
        "",
    ));
    let port = server.mqtt.unwrap().port().to_string();
    let watcher = |extra: &[&str]| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-c", "-i", "watcher", "-q", "1"])
            .args(["-t", TOPIC_A])
            .args(extra)
            .output()
            .expect("mosquitto_sub")
    };
    // A persistent session, then the watcher goes away.
    let out = watcher(&["-E"]);
    assert!(out.status.success(), "{}", text(&out));
    let reports: String = (1..=30).map(|seq| report("A-1", seq) + "\n").collect();
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", TOPIC_A, "-l"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_pub");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), reports.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(records(&server, "gps", 30).len(), 30, "every publish ingested all the same");
    // Back: the session kept the first ten; the rest were dropped and counted.
    let out = watcher(&["-W", "2"]);
    let got = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("\"seq\"")).count();
    assert_eq!(got, 10, "{}", text(&out));
    let metrics = server.get("/metrics").text();
    let dropped: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("odf_mqtt_messages_dropped_total") && l.contains("queue_full"))
        .filter_map(|l| l.rsplit(" ").next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(dropped, 20, "{metrics}");
}
