//! `odf-gateway serve` over HTTP, as devices and scripts use it: pushes in each format, kamu's
//! ingest endpoint, good and bad records, limits, credentials, backpressure, and reading the
//! data back (tail, query, the ODF transfer protocol).

#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::server::{GPS, Server, config, request, schemas};
use device_sim::gps::{Fleet, Vendor, encode};
use serde_json::Value;

fn fleet(vendor: Vendor, devices: usize) -> Vec<u8> {
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc();
    let mut fleet = Fleet::new(vendor, devices, 7, start, chrono::Duration::seconds(10));
    encode(vendor, &fleet.tick())
}

/// A gateway with the GPS dataset and these keys in its `[http]` table.
fn gps_server_with_http(keys: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    let server = Server::start(dir.path(), &config("").replace("[http]\n", &format!("[http]\n{keys}")));
    (dir, server)
}

fn gps_server(extra: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    let server = Server::start(dir.path(), &config(extra));
    (dir, server)
}

fn tail(server: &Server, dataset: &str) -> Vec<Value> {
    let response = server.get(&format!("/datasets/{dataset}/tail?limit=10000"));
    assert_eq!(response.status, 200, "{}", response.text());
    response.lines()
}

#[test]
fn each_vendor_format_is_committed_and_read_back() {
    let (_dir, mut server) = gps_server("");
    let a = server.post(
        "/datasets/gps/sources/vendorA?wait=commit",
        Some("application/x-ndjson"),
        &fleet(Vendor::A, 3),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["accepted"], 3);
    assert_eq!(a.json()["committed"], true);
    let b = server.post("/datasets/gps/sources/vendorB", Some("text/csv"), &fleet(Vendor::B, 2));
    assert_eq!(b.status, 202, "{}", b.text());
    let c = server.post(
        "/datasets/gps/sources/vendorC?wait=commit",
        Some("application/cbor"),
        &fleet(Vendor::C, 4),
    );
    assert_eq!(c.status, 200, "{}", c.text());

    let rows = tail(&server, "gps");
    assert_eq!(rows.len(), 9, "{rows:?}");
    for prefix in ["A-", "3569", "C-"] {
        assert!(
            rows.iter().any(|r| r["device_id"].as_str().unwrap().starts_with(prefix)),
            "{prefix}: {rows:?}"
        );
    }
    let described = server.get("/datasets/gps").json();
    assert_eq!(described["records"], 9);
    assert_eq!(described["sources"].as_array().unwrap().len(), 3);

    let query = server.post("/query", Some("text/plain"), b"SELECT count(*) AS n FROM gps");
    assert_eq!(query.lines()[0]["n"], 9, "{}", query.text());
    let csv = request(
        server.http,
        "POST",
        "/query?format=csv",
        &[],
        b"SELECT device_id FROM gps ORDER BY device_id LIMIT 1",
    );
    assert!(csv.text().starts_with("device_id\n"), "{}", csv.text());

    let metrics = server.get("/metrics").text();
    assert!(metrics.contains("odf_records_committed_total"), "{metrics}");
    assert!(metrics.contains("odf_commit_seconds_bucket"), "{metrics}");

    assert!(server.stop().success());
    let out = std::process::Command::new(common::gateway_bin())
        .args(["verify", "gps", "--data-dir"])
        .arg(server.data())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_payload_in_another_format_is_translated_and_an_unnamed_source_lists_the_choices() {
    let (_dir, server) = gps_server("");
    let csv = b"device_id,seq,t,lat,lon\nA-9,1,2026-01-01T00:00:00Z,49.2,-123.1\n";
    let r = server.post("/datasets/gps/sources/vendorA?wait=commit", Some("text/csv; charset=utf-8"), csv);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(tail(&server, "gps")[0]["device_id"], "A-9");

    let r = server.post("/datasets/gps", Some("application/x-ndjson"), b"{}");
    assert_eq!(r.status, 404, "{}", r.text());
    let error = r.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("vendorA") && error.contains("vendorB") && error.contains("vendorC"), "{error}");

    let r = server.post("/datasets/gps/sources/vendorA", Some("image/png"), b"x");
    assert_eq!(r.status, 415, "{}", r.text());
    let r = server.post("/datasets/nope/sources/x", None, b"{}");
    assert_eq!(r.status, 404);
    assert!(r.json()["datasets"].as_array().unwrap().iter().any(|d| d == "gps"));
}

#[test]
fn kamus_ingest_endpoint_takes_the_event_time_header() {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("sensors.yaml", include_str!("fixtures/no-event-time.yaml"))]);
    let server = Server::start(dir.path(), &config(""));
    let name = "readings";
    let headers = [("Content-Type", "application/x-ndjson"), ("odf-event-time", "2025-06-01T08:30:00Z")];
    let r = request(
        server.http,
        "POST",
        &format!("/{name}/ingest"),
        &headers,
        b"{\"station\": \"s1\", \"value\": 1}\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rows = tail(&server, name);
    assert_eq!(rows[0]["event_time"], "2025-06-01T08:30:00Z", "{rows:?}");
    let bad = [("odf-event-time", "yesterday")];
    let r = request(server.http, "POST", &format!("/{name}/ingest"), &bad, b"{\"value\": 1}\n");
    assert_eq!(r.status, 400);
}

#[test]
fn good_records_are_committed_and_bad_ones_quarantined_with_reasons() {
    let (dir, server) = gps_server("");
    let mixed = concat!(
        r#"{"device_id":"A-1","seq":1,"t":"2026-01-01T00:00:00Z","lat":49.1,"lon":-123.1}"#,
        "\n",
        r#"{"device_id":"A-1","seq":2,"t":"2026-01-01T00:00:10Z","lat":"north","lon":-123.1}"#,
        "\n",
        r#"{"device_id":"A-1","seq":3,"t":"2026-01-01T00:00:20Z","lat":49.3,"lon":-123.1}"#,
        "\n",
    );
    let r = server.post(
        "/datasets/gps/sources/vendorA?wait=commit",
        Some("application/x-ndjson"),
        mixed.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["accepted"], 2);
    let rejected = &body["rejected"][0];
    assert_eq!((rejected["record"].as_u64(), rejected["field"].as_str()), (Some(2), Some("lat")), "{body}");
    assert_eq!(rejected["value"], "\"north\"");
    assert!(rejected["expected"].as_str().unwrap().contains("Float64"), "{body}");
    assert_eq!(tail(&server, "gps").len(), 2);

    let r = server.post(
        "/datasets/gps/sources/vendorA",
        Some("application/x-ndjson"),
        b"{\"seq\": \"x\"}\nnot json\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["rejected"].as_array().unwrap().len(), 2);

    let listed = server.get("/datasets/gps/quarantine").json();
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listed}");
    let id = entries[0]["id"].as_str().unwrap();
    let entry = server.get(&format!("/datasets/gps/quarantine/{id}")).json();
    assert_eq!(entry["reasons"][0]["field"], "lat");

    // The quarantine survives the server, and the CLI reads it.
    drop(server);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(common::gateway_bin())
            .args(args)
            .env("ODF_GATEWAY_DATA_DIR", dir.path().join("data"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = cli(&["quarantine", "list", "gps"]);
    assert!(listing.contains("field 'lat'"), "{listing}");
    let shown = cli(&["quarantine", "show", "gps", id]);
    assert!(shown.contains("north") && shown.contains("sender:   http 127.0.0.1"), "{shown}");
    cli(&["quarantine", "purge", "gps"]);
    assert!(cli(&["quarantine", "list", "gps", "-o", "json"]).is_empty());
}

#[test]
fn limits_credentials_and_backpressure_answer_in_http_terms() {
    let token = "tok-vendor-a";
    let digest = odf_gateway::access::token_digest(token);
    let extra = format!(
        "[[identity]]\nname = \"vendorA\"\ntoken_sha256 = [\"{digest}\"]\nwrite = [\"gps/vendorA\"]\nquery = [\"gps\"]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    let toml = format!(
        "[http]\nlisten = [\"127.0.0.1:0\"]\nmax_body = \"1 KiB\"\n[mqtt]\nenabled = false\n[coap]\nenabled = false\n\n[pipeline]\nflush_interval = \"1h\"\nmax_pending_bytes = 400\n\n{extra}"
    );
    let server = Server::start(dir.path(), &toml);
    let report = br#"{"device_id":"A-1","seq":1,"t":"2026-01-01T00:00:00Z","lat":1,"lon":2}"#;
    let path = "/datasets/gps/sources/vendorA";
    let auth = format!("Bearer {token}");

    let r = request(server.http, "POST", path, &[], report);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("www-authenticate").is_some());
    let r = request(server.http, "POST", path, &[("Authorization", "Bearer wrong")], report);
    assert_eq!(r.status, 401);
    let r =
        request(server.http, "POST", "/datasets/gps/sources/vendorB", &[("Authorization", &auth)], report);
    assert_eq!(r.status, 403, "{}", r.text());
    let big = vec![b' '; 2048];
    let r = request(server.http, "POST", path, &[("Authorization", &auth)], &big);
    assert_eq!(r.status, 413, "{}", r.text());

    // Nothing is committed within the hour: the pending budget fills, and then the log is full.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = request(server.http, "POST", path, &[("Authorization", &auth)], report);
        statuses.push(r.status);
        if r.status == 503 {
            assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
            assert!(r.text().contains("not yet committed"), "{}", r.text());
            break;
        }
    }
    assert!(statuses.contains(&202) && statuses.last() == Some(&503), "{statuses:?}");
    assert_eq!(request(server.http, "GET", "/datasets", &[], b"").status, 401);
    assert_eq!(request(server.http, "GET", "/datasets/gps", &[("Authorization", &auth)], b"").status, 200);
}

#[test]
fn a_restart_replays_what_was_accepted_and_commits_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    // The commit waits an hour: what was accepted is only in the write-ahead log.
    let mut server = Server::start(dir.path(), &config("").replace("100ms", "1h"));
    let r = server.post("/datasets/gps/sources/vendorA", Some("application/x-ndjson"), &fleet(Vendor::A, 5));
    assert_eq!(r.status, 202, "{}", r.text());
    server.kill();
    server.restart();
    assert_eq!(tail(&server, "gps").len(), 5, "replayed at start");
    assert!(server.stop().success());
    server.restart();
    assert_eq!(tail(&server, "gps").len(), 5, "replayed once only");
    assert!(server.log().contains("listening on 127.0.0.1:"), "{}", server.log());
}

#[test]
fn the_transfer_protocol_serves_every_object_the_head_reaches() {
    let (_dir, server) = gps_server("");
    let r = server.post(
        "/datasets/gps/sources/vendorA?wait=commit",
        Some("application/x-ndjson"),
        &fleet(Vendor::A, 2),
    );
    assert_eq!(r.status, 200);
    let head = server.get("/datasets/gps/refs/head").text();
    let block = server.get(&format!("/datasets/gps/blocks/{head}"));
    assert_eq!(block.status, 200);
    assert!(!block.body.is_empty());
    assert_eq!(server.get("/datasets/gps/blocks/not-a-hash").status, 404);
    assert_eq!(server.get("/datasets/gps/blocks/..%2F..%2Fetc").status, 404);
}

#[test]
fn print_config_shows_every_default() {
    let out =
        std::process::Command::new(common::gateway_bin()).args(["serve", "--print-config"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "data_dir",
        "listen = [\"127.0.0.1:8080\"]",
        "max_body = \"8 MiB\"",
        "flush_interval = \"1s\"",
        "max_pending_bytes",
        "handshake_timeout = \"10s\"",
        "idle_timeout = \"1m\"",
        "body_min_rate = \"500 B\"",
        "max_body_buffer = \"64 MiB\"",
        "query_timeout = \"30s\"",
        "query_max_answer = \"32 MiB\"",
        "connect_timeout = \"10s\"",
    ] {
        assert!(text.contains(key), "{key}: {text}");
    }
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "[pipeline]\nflush_interval = 3\n").unwrap();
    let out = std::process::Command::new(common::gateway_bin())
        .args(["serve", "--config"])
        .arg(bad.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("line 2"), "{stderr}");
}

/// `curl` as the client, trusting a development CA made by `odf-gateway certs`.
fn curl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl (tests/run.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn https_with_a_development_ca_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = std::process::Command::new(common::gateway_bin())
        .args(["certs", "--client", "vendorA", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    let c = |name: &str| certs.join(name).display().to_string();
    let toml = format!(
        "[mqtt]\nenabled = false\n[coap]\nenabled = false\n[http]\nlisten = [\"127.0.0.1:0\"]\n[http.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\n\
         [[identity]]\nname = \"vendorA\"\ncert_subject = \"CN=vendorA\"\nwrite = [\"gps/vendorA\"]\nquery = [\"gps\"]\n\
         bind = [{{ column = \"device_id\", value = \"{{cert_cn}}-*\" }}]\n",
        c("server.pem"),
        c("server.key"),
        c("ca.pem")
    );
    std::fs::write(dir.path().join("gateway.toml"), &toml).unwrap();
    // The helper's readiness probe speaks plain HTTP, so start the server by hand here.
    let addresses = dir.path().join("addresses.json");
    let mut child = std::process::Command::new(common::gateway_bin())
        .current_dir(dir.path())
        .args(["serve", "--config", "gateway.toml", "--addresses-file"])
        .arg(&addresses)
        .env("ODF_GATEWAY_DATA_DIR", dir.path().join("data"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !addresses.exists() {
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "no start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let addr: Value = serde_json::from_str(&std::fs::read_to_string(&addresses).unwrap()).unwrap();
    let port = addr["http"][0].as_str().unwrap().rsplit(':').next().unwrap().to_owned();
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let ca = c("ca.pem");
    let (ok, out) = curl(&["--cacert", &ca, &url("/healthz")]);
    assert!(ok && out.contains("ok"), "{out}");
    let (ok, _) = curl(&[&url("/healthz")]);
    assert!(!ok, "an untrusted CA must fail");

    let report = r#"{"device_id":"vendorA-1","seq":1,"t":"2026-01-01T00:00:00Z","lat":1,"lon":2}"#;
    let post = [
        "--cacert",
        &ca,
        "-H",
        "Content-Type: application/x-ndjson",
        "--data-binary",
        report,
        "-w",
        "%{http_code}",
    ];
    let (_, out) = curl(&[&post[..], &[&url("/datasets/gps/sources/vendorA")]].concat());
    assert!(out.ends_with("401"), "no certificate, no anonymous: {out}");
    let (cert, key) = (c("client-vendorA.pem"), c("client-vendorA.key"));
    let with_cert = [&post[..], &["--cert", &cert, "--key", &key]].concat();
    let (_, out) = curl(&[&with_cert[..], &[&url("/datasets/gps/sources/vendorA?wait=commit")]].concat());
    assert!(out.ends_with("200"), "{out}");
    let (_, out) = curl(&[&with_cert[..], &[&url("/datasets/gps/sources/vendorB")]].concat());
    assert!(out.ends_with("403"), "{out}");
    // The certificate's common name binds the device ids it may write.
    let body = report.replace("vendorA-1", "A-1");
    let forged = ["--cacert", &ca, "-H", "Content-Type: application/x-ndjson", "--data-binary", &body];
    let signed = ["-w", "%{http_code}", "--cert", &cert, "--key", &key];
    let (_, out) = curl(&[&forged[..], &signed[..], &[&url("/datasets/gps/sources/vendorA")]].concat());
    let reason = "binds column 'device_id' to values matching 'vendorA-*'";
    assert!(out.ends_with("400") && out.contains(reason), "{out}");
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    assert!(child.wait().unwrap().success());
}

const SENSORS_V1: &str = r#"
kind: DatasetSnapshot
version: 1
content:
  name: sensors
  kind: Root
  metadata:
    - kind: SetInfo
      description: Sensor readings.
    - kind: AddPushSource
      sourceName: a
      read: { kind: NdJson, ddlSchema: ["station STRING", "t TIMESTAMP", "value DOUBLE"] }
      merge: { kind: Append }
    - kind: SetVocab
      eventTimeColumn: t
"#;

#[test]
fn a_changed_manifest_is_appended_at_start_and_an_impossible_change_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("sensors.yaml", SENSORS_V1)]);
    let mut server = Server::start(dir.path(), &config(""));
    let r = server.post(
        "/datasets/sensors?wait=commit",
        None,
        br#"{"station":"s1","t":"2026-01-01T00:00:00Z","value":1}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(server.stop().success());

    // A new source and new info; source `a` left out of the manifest stays.
    let v2 = SENSORS_V1.replace("Sensor readings.", "Sensor readings, two kinds.").replace(
        "    - kind: AddPushSource\n      sourceName: a",
        "    - kind: AddPushSource\n      sourceName: b",
    );
    schemas(dir.path(), &[("sensors.yaml", &v2)]);
    server.restart();
    let log = server.log();
    assert!(log.contains("appended AddPushSource, SetInfo"), "{log}");
    assert!(log.contains("push source 'a' is no longer in the manifest; it stays enabled"), "{log}");
    let sources: Vec<String> = server.get("/datasets/sensors").json()["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sources, ["a", "b"]);
    assert!(server.stop().success());

    // The event time column cannot change once there is data: refused, and the server exits 1.
    schemas(dir.path(), &[("sensors.yaml", &v2.replace("eventTimeColumn: t", "eventTimeColumn: value"))]);
    let out = std::process::Command::new(common::gateway_bin())
        .current_dir(dir.path())
        .args(["serve", "--config", "gateway.toml"])
        .env("ODF_GATEWAY_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("dataset 'sensors'") && stderr.contains("SetVocab"), "{stderr}");
}

#[test]
fn a_configured_route_captures_a_column_from_the_path() {
    let extra =
        "[[route]]\npattern = \"/trackers/{device_id}/gps\"\ndataset = \"gps\"\nsource = \"vendorA\"\n";
    let (_dir, server) = gps_server(extra);
    let report = br#"{"seq":1,"t":"2026-01-01T00:00:00Z","lat":49.2,"lon":-123.1}"#;
    let r = server.post("/trackers/A-77/gps?wait=commit", Some("application/json"), report);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(tail(&server, "gps")[0]["device_id"], "A-77");
    let r = server.post("/trackers/A-77/elsewhere", None, report);
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn configured_routes_win_over_built_in_paths() {
    // Shaped like the transfer protocol's /datasets/{ds}/{kind}/{hash}, yet a push route.
    let extra =
        "[[route]]\npattern = \"/datasets/gps/raw/{device_id}\"\ndataset = \"gps\"\nsource = \"vendorA\"\n";
    let (_dir, server) = gps_server(extra);
    let report = br#"{"seq":1,"t":"2026-01-01T00:00:00Z","lat":49.2,"lon":-123.1}"#;
    let r = server.post("/datasets/gps/raw/A%2F9?wait=commit", None, report);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(tail(&server, "gps")[0]["device_id"], "A/9", "a captured value is percent-decoded");
}

#[test]
fn a_snapshot_with_a_bad_record_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("fleet.yaml", include_str!("../../schemas/fleet.yaml"))]);
    let server = Server::start(dir.path(), &config(""));
    let path = "/datasets/fleet/sources/registry";
    // One good row and one bad: taking the good one alone would retract the other device.
    let body = b"device_id,vehicle,vendor,active\nA-1,van 7,A,true\nA-2,van 8,A,maybe\n";
    let r = server.post(path, Some("text/csv"), body);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["rejected"][0]["field"], "active");
    let r = server.post(
        &format!("{path}?wait=commit"),
        Some("text/csv"),
        b"device_id,vehicle,vendor,active\nA-1,van 7,A,true\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.get("/datasets/fleet").json()["records"], 1);
}

/// vendorA and vendorB, each with a token and a binding that keeps it to its own device ids.
fn bound_vendors() -> String {
    let (a, b) = (odf_gateway::access::token_digest("tok-a"), odf_gateway::access::token_digest("tok-b"));
    format!(
        "[[identity]]\nname = \"vendorA\"\ntoken_sha256 = [\"{a}\"]\nwrite = [\"gps/vendorA\"]\nquery = [\"gps\"]\n\
         bind = [{{ column = \"device_id\", value = \"A-*\" }}]\n\n\
         [[identity]]\nname = \"vendorB\"\ntoken_sha256 = [\"{b}\"]\nwrite = [\"gps/vendorB\"]\nquery = [\"gps\"]\n\
         bind = [{{ column = \"imei\", value = \"35693803*\" }}]\n"
    )
}

#[test]
fn a_vendor_cannot_write_under_another_vendors_device_ids() {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    let server = Server::start(dir.path(), &common::server::config_with("", "", &bound_vendors()));
    let push = |token: &str, source: &str, content_type: &str, body: &[u8]| {
        let auth = format!("Bearer {token}");
        let headers = [("Authorization", auth.as_str()), ("Content-Type", content_type)];
        let path = format!("/datasets/gps/sources/{source}?wait=commit");
        request(server.http, "POST", &path, &headers, body)
    };
    let victim = "356938035643809";

    // vendorA sends reports 1..=100 under vendorB's tracker, and one of its own.
    let mut forged = String::new();
    for seq in 1..=100 {
        forged.push_str(&format!(
            "{{\"device_id\":\"{victim}\",\"seq\":{seq},\"t\":\"2026-01-01T00:00:00Z\",\"lat\":1.0,\"lon\":2.0}}\n"
        ));
    }
    forged.push_str(r#"{"device_id":"A-1","seq":1,"t":"2026-01-01T00:00:00Z","lat":3.0,"lon":4.0}"#);
    let r = push("tok-a", "vendorA", "application/x-ndjson", forged.as_bytes());
    assert_eq!(r.status, 200, "the good record goes on: {}", r.text());
    let body = r.json();
    assert_eq!(body["accepted"], 1, "{body}");
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 100, "{body}");
    assert_eq!(rejected[41]["record"], 42);
    assert_eq!(rejected[41]["field"], "device_id");
    assert_eq!(rejected[41]["value"], format!("\"{victim}\""));
    let reason = rejected[41]["reason"].as_str().unwrap();
    assert!(reason.contains("identity 'vendorA'") && reason.contains("'A-*'"), "{reason}");

    // vendorB's real report #42 is committed, not dropped as a duplicate of a forged one.
    let report = format!(
        "imei,ts,latitude,longitude,speed_knots,course,battery,counter\n{victim},1767268800000,49.28,-123.12,17.0,270.0,87,42\n"
    );
    let r = push("tok-b", "vendorB", "text/csv", report.as_bytes());
    assert_eq!((r.status, r.json()["accepted"].as_u64()), (200, Some(1)), "{}", r.text());
    let auth = [("Authorization", "Bearer tok-b")];
    let sql = format!("SELECT seq, lat FROM gps WHERE device_id = '{victim}'");
    let rows = request(server.http, "POST", "/query", &auth, sql.as_bytes()).lines();
    assert_eq!(rows, vec![serde_json::json!({"seq": 42, "lat": 49.28})], "only vendorB's own report");

    // vendorB cannot write vendorA's ids either; the forged rows are in the quarantine.
    let r = push("tok-b", "vendorB", "text/csv", report.replace(victim, "A-1").as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["rejected"][0]["reason"].as_str().unwrap().contains("'35693803*'"), "{}", r.text());
    let listed = request(server.http, "GET", "/datasets/gps/quarantine", &auth, b"").json();
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listed}");
    let forged_entry = entries.iter().find(|e| e["sender"].as_str().unwrap().contains("vendorA")).unwrap();
    let id = forged_entry["id"].as_str().unwrap();
    let entry = request(server.http, "GET", &format!("/datasets/gps/quarantine/{id}"), &auth, b"").json();
    assert_eq!(entry["reasons"].as_array().unwrap().len(), 100, "{entry}");
    assert!(entry["reasons"][0]["reason"].as_str().unwrap().contains("binds column 'device_id'"), "{entry}");
    assert_eq!(entry["accepted"], 1);
}

#[test]
fn a_route_that_binds_its_captures_rejects_records_that_disagree() {
    let extra = "[[route]]\npattern = \"/trackers/{device_id}/gps\"\ndataset = \"gps\"\nsource = \"vendorA\"\nbind_captures = true\n";
    let (_dir, server) = gps_server(extra);
    let report = |device: &str| {
        format!(r#"{{"device_id":"{device}","seq":1,"t":"2026-01-01T00:00:00Z","lat":49.2,"lon":-123.1}}"#)
    };
    let r = server.post(
        "/trackers/A-77/gps?wait=commit",
        Some("application/x-ndjson"),
        report("A-78").as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let reason = r.json()["rejected"][0]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("route '/trackers/{device_id}/gps'") && reason.contains("'A-77'"), "{reason}");
    let r = server.post(
        "/trackers/A-77/gps?wait=commit",
        Some("application/x-ndjson"),
        report("A-77").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let unnamed = br#"{"seq":2,"t":"2026-01-01T00:00:00Z","lat":49.2,"lon":-123.1}"#;
    let r = server.post("/trackers/A-77/gps?wait=commit", Some("application/x-ndjson"), unnamed);
    assert_eq!(r.status, 200, "a record without the column takes the captured value: {}", r.text());
    let rows = tail(&server, "gps");
    assert!(rows.len() == 2 && rows.iter().all(|r| r["device_id"] == "A-77"), "{rows:?}");
}

#[test]
fn a_payload_that_holds_no_record_is_refused_unless_it_is_an_empty_batch() {
    let (_dir, server) = gps_server("");
    let push = |source: &str, content_type: &str, body: &[u8]| {
        server.post(&format!("/datasets/gps/sources/{source}"), Some(content_type), body)
    };
    // vendorB's report without its header line: the line must not be taken as the header.
    let line = b"356938035643809,1767268800000,49.28,-123.12,17.0,270.0,87,42\n";
    let r = push("vendorB", "text/csv", line);
    assert_eq!(r.status, 400, "{}", r.text());
    let reason = r.json()["rejected"][0]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("not a header") && reason.contains("imei"), "{reason}");
    assert!(r.json()["quarantine_id"].is_string(), "{}", r.text());
    let r = push("vendorB", "text/csv", b"imei,ts\n356938035643809,1767268800000\n");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("leaves out the required column(s) latitude, longitude, counter"),
        "{}",
        r.text()
    );

    // Nothing at all, in any format, is not a success.
    for (content_type, body) in [
        ("application/x-ndjson", &b""[..]),
        ("application/x-ndjson", &b"\n  \n\n"[..]),
        ("application/json", &b"  "[..]),
        ("application/cbor", &b""[..]),
        ("text/csv", &b""[..]),
        ("application/senml+json", &br#"[{"bn":"urn:dev:1/","bt":1767268800}]"#[..]),
    ] {
        let r = push("vendorA", content_type, body);
        assert_eq!(r.status, 400, "{content_type} {body:?}: {}", r.text());
        assert!(r.json()["quarantine_id"].is_string(), "{}", r.text());
    }
    // An empty batch said on purpose is acknowledged as such.
    let header = b"imei,ts,latitude,longitude,speed_knots,course,battery,counter\n";
    for (source, content_type, body) in [
        ("vendorA", "application/json", &b"[]"[..]),
        ("vendorC", "application/cbor", &[0x80][..]),
        ("vendorA", "application/senml+json", &b"[]"[..]),
        ("vendorB", "text/csv", &header[..]),
    ] {
        let r = push(source, content_type, body);
        assert_eq!(r.status, 202, "{content_type} {body:?}: {}", r.text());
        assert_eq!(
            (r.json()["accepted"].as_u64(), r.json()["rejected"].as_array().map(Vec::len)),
            (Some(0), Some(0))
        );
    }
    let listed = server.get("/datasets/gps/quarantine").json();
    assert_eq!(
        listed["entries"].as_array().unwrap().len(),
        8,
        "every refused payload is quarantined: {listed}"
    );
}

// Connections that never get anywhere, idle ones, slow bodies, big bodies and answers: each
// is held to a configured bound.

/// Whether the server closes `stream` (EOF or reset) within `wait`, whatever it sends first.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) if started.elapsed() < wait => continue,
            Ok(_) => return false,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn connect(addr: SocketAddr, first_bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    stream.write_all(first_bytes).unwrap();
    stream
}

/// One keep-alive `GET /healthz` on `stream`, its answer read whole.
fn healthz_keep_alive(stream: &mut TcpStream) {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"\r\n\r\nok\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
}

/// The status and text of the answer on `stream` (read until the server closes it), if
/// one comes within `wait`.
fn status_within(stream: &mut TcpStream, wait: Duration) -> Option<(u16, String)> {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// The MQTT listener, the HTTP one and HTTP/2 alike close a connection that has not
/// finished its handshake (CONNECT, request head, HTTP/2 preface) within the timeout.
#[test]
fn every_listener_closes_a_connection_that_does_not_finish_its_handshake() {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    let toml = common::server::config_with(
        "connect_timeout = \"1s\"\n",
        "write = [\"*\"]\nquery = [\"*\"]\nsubscribe = [\"#\"]\n",
        "",
    )
    .replace("[http]\n", "[http]\nhandshake_timeout = \"1s\"\n");
    let server = Server::start(dir.path(), &toml);
    let http = server.http;
    let mqtt = server.mqtt.unwrap();
    let mut half_open = vec![
        ("http: nothing", connect(http, b"")),
        ("http: half a request head", connect(http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")),
        ("http/2: half the preface", connect(http, b"PRI * HTTP/2.0\r\n")),
        // The whole preface and SETTINGS, then no request.
        (
            "http/2: no request",
            connect(http, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
        ),
        ("mqtt: nothing", connect(mqtt, b"")),
    ];
    for _ in 0..5 {
        half_open.push(("mqtt: one byte of CONNECT", connect(mqtt, &[0x10])));
    }
    half_open.push(("mqtt: half a CONNECT", connect(mqtt, b"\x10\x10\x00\x04MQTT\x04\x02\x00")));
    for (what, stream) in &mut half_open {
        assert!(closed_within(stream, Duration::from_secs(60)), "{what}: still open");
    }
    assert_eq!(server.get("/healthz").status, 200);
}

/// At `max_connections`, connections that send nothing, or sit idle after a request, make
/// room for new ones: the one idle the longest is closed first.
#[test]
fn idle_connections_at_the_cap_make_room_for_health_checks() {
    let (_dir, server) =
        gps_server_with_http("max_connections = 20\nhandshake_timeout = \"1h\"\nidle_timeout = \"1h\"\n");
    let mut silent: Vec<TcpStream> = (0..10).map(|_| connect(server.http, b"")).collect();
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..10 {
        let mut stream = connect(server.http, b"");
        healthz_keep_alive(&mut stream);
        idle.push(stream);
    }
    for _ in 0..5 {
        let r = common::server::try_request(server.http, "GET", "/healthz", &[], b"")
            .expect("at the cap, /healthz must still answer");
        assert_eq!(r.status, 200);
    }
    // The first to be closed were those idle the longest: the silent ones, oldest first.
    assert!(closed_within(&mut silent[0], Duration::from_secs(30)), "the oldest idle connection stays");
    // A connection busy with a request is never the one closed; the newest idle ones still work.
    healthz_keep_alive(idle.last_mut().unwrap());
    let metrics = server.get("/metrics").text();
    assert!(metrics.contains("odf_http_connections_closed_total{reason=\"evicted\"}"), "{metrics}");
}

/// A keep-alive connection with no request is closed after `idle_timeout`; a body that
/// trickles in falls behind `body_min_rate` and is answered 408.
#[test]
fn idle_connections_and_trickled_bodies_are_closed() {
    let (_dir, server) = gps_server_with_http(
        "idle_timeout = \"1s\"\nbody_grace = \"1s\"\nbody_min_rate = \"1 KiB\"\nbody_timeout = \"1h\"\n",
    );
    let mut keep_alive = connect(server.http, b"");
    healthz_keep_alive(&mut keep_alive);
    assert!(closed_within(&mut keep_alive, Duration::from_secs(20)), "an idle keep-alive connection stays");

    let head = "POST /datasets/gps/sources/vendorA HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut slow = connect(server.http, head.as_bytes());
    let mut writer = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        // One byte every half second, for at most 20 s.
        for _ in 0..40 {
            if writer.write_all(b"1\r\n{\r\n").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let answer = status_within(&mut slow, Duration::from_secs(30));
    assert!(matches!(&answer, Some((408, _))), "{answer:?}");
    assert!(answer.unwrap().1.contains("http.body_min_rate"));
    trickle.join().unwrap();
}

/// Bodies being received are held against `http.max_body_buffer`: 40 clients each sending
/// 8 MiB of a chunked body and stalling do not take 320 MiB; those past the budget are
/// answered 503 with Retry-After.
#[test]
fn bodies_being_received_stay_within_the_body_buffer() {
    let (_dir, server) =
        gps_server_with_http("max_body_buffer = \"16 MiB\"\nbody_timeout = \"1h\"\nbody_min_rate = 0\n");
    let before = server.memory("VmRSS");
    let head = "POST /datasets/gps/sources/vendorA HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunk =
        [format!("{:x}\r\n", 64 * 1024).into_bytes(), vec![b' '; 64 * 1024], b"\r\n".to_vec()].concat();
    let senders: Vec<_> = (0..40)
        .map(|_| {
            let mut stream = connect(server.http, head.as_bytes());
            let chunk = chunk.clone();
            std::thread::spawn(move || {
                // 8 MiB less one chunk, and no last chunk: the body never ends.
                for _ in 0..127 {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                }
                let answer = status_within(&mut stream, Duration::from_secs(20));
                (stream, answer)
            })
        })
        .collect();
    let answers: Vec<_> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    let grown = server.memory("VmHWM").saturating_sub(before);
    assert!(grown < 160 << 20, "the peak memory grew by {} MiB", grown >> 20);
    let refused: Vec<&String> =
        answers.iter().filter_map(|(_, a)| a.as_ref()).filter(|(s, _)| *s == 503).map(|(_, t)| t).collect();
    assert!(!refused.is_empty(), "{answers:?}");
    for text in refused {
        assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
        assert!(text.contains("http.max_body_buffer"), "{text}");
    }
}

/// A query's answer is bounded in bytes (413 naming the option), its time too (504), and
/// a query whose client has gone stops using the CPU.
#[test]
fn a_query_is_bounded_in_bytes_and_time_and_stops_with_its_client() {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    let toml = config("").replace(
        "[http]\n",
        "[http]\nquery_max_answer = \"64 KiB\"\nquery_timeout = \"1h\"\nmax_queries = 1\n",
    );
    let server = Server::start(dir.path(), &toml);
    let r = server.post(
        "/query",
        Some("text/plain"),
        b"SELECT value, value * 2 AS twice FROM generate_series(1, 100000)",
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("http.query_max_answer"), "{}", r.text());
    let r = server.post("/query", Some("text/plain"), b"SELECT value FROM generate_series(1, 100)");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.lines().len(), 100);

    // 4 * 10^10 rows: hours of work, unless it is stopped.
    let endless = b"SELECT count(*) FROM generate_series(1, 200000) a, generate_series(1, 200000) b WHERE a.value + b.value = 7";
    let head = format!(
        "POST /query HTTP/1.1\r\nHost: gateway\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        endless.len()
    );
    let client = connect(server.http, &[head.as_bytes(), endless].concat());
    // The query is running once the server's CPU time grows.
    let started = server.cpu_ticks();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.cpu_ticks() < started + 100 {
        assert!(Instant::now() < deadline, "the query does not seem to run");
        std::thread::sleep(Duration::from_millis(200));
    }
    // One query at a time here: another is refused while it runs.
    let busy = server.post("/query", Some("text/plain"), b"SELECT 1");
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert!(busy.json()["error"].as_str().unwrap().contains("http.max_queries"), "{}", busy.text());
    assert!(busy.header("Retry-After").is_some());
    client.shutdown(std::net::Shutdown::Both).unwrap();
    drop(client);
    assert!(goes_quiet(&server), "the query went on after its client left");
    let r = server.post("/query", Some("text/plain"), b"SELECT 1");
    assert_eq!(r.status, 200, "the query that left gave its place back: {}", r.text());

    drop(server);
    let toml = config("").replace("[http]\n", "[http]\nquery_timeout = \"1s\"\n");
    let server = Server::start(dir.path(), &toml);
    let r = server.post("/query", Some("text/plain"), endless);
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("http.query_timeout"), "{}", r.text());
    assert!(goes_quiet(&server), "the query went on after its timeout");
}

/// Whether, within a minute, there are two seconds in which the server uses less than half
/// a second of CPU (nothing else runs in it).
fn goes_quiet(server: &Server) -> bool {
    (0..30).any(|_| {
        let before = server.cpu_ticks();
        std::thread::sleep(Duration::from_secs(2));
        server.cpu_ticks() - before < 50
    })
}

/// `/metrics` follows the read grants: nothing for anonymous clients without a grant, only
/// its datasets' series for an identity that may query some, everything with `metrics`.
/// `/healthz` and `/readyz` stay open.
#[test]
fn metrics_follow_the_read_grants() {
    let token = |name: &str| odf_gateway::access::token_digest(&format!("tok-{name}"));
    let identities = format!(
        "[[identity]]\nname = \"writer\"\ntoken_sha256 = [\"{}\"]\nwrite = [\"*\"]\n\n\
         [[identity]]\nname = \"reader\"\ntoken_sha256 = [\"{}\"]\nquery = [\"gps\"]\n\n\
         [[identity]]\nname = \"scraper\"\ntoken_sha256 = [\"{}\"]\nmetrics = true\n",
        token("writer"),
        token("reader"),
        token("scraper")
    );
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS), ("fleet.yaml", include_str!("../../schemas/fleet.yaml"))]);
    let toml = format!(
        "[http]\nlisten = [\"127.0.0.1:0\"]\n[mqtt]\nenabled = false\n[coap]\nenabled = false\n[pipeline]\nflush_interval = \"100ms\"\n\n{identities}"
    );
    let server = Server::start(dir.path(), &toml);
    let auth = |name: &str| format!("Bearer tok-{name}");
    let writer = auth("writer");
    let report = br#"{"device_id":"A-1","seq":1,"t":"2026-01-01T00:00:00Z","lat":1,"lon":2}"#;
    let r = request(
        server.http,
        "POST",
        "/datasets/gps/sources/vendorA?wait=commit",
        &[("Authorization", &writer)],
        report,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let registry = b"device_id,vehicle,vendor,active\nA-1,van 7,A,true\n";
    let r = request(
        server.http,
        "POST",
        "/datasets/fleet/sources/registry?wait=commit",
        &[("Authorization", &writer), ("Content-Type", "text/csv")],
        registry,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let metrics = |who: Option<&str>| {
        let headers: Vec<(&str, &str)> = who.map(|a| ("Authorization", a)).into_iter().collect();
        request(server.http, "GET", "/metrics", &headers, b"")
    };
    let r = metrics(None);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(!r.text().contains("gps"), "{}", r.text());
    assert_eq!(metrics(Some(&writer)).status, 403);
    let reader = metrics(Some(&auth("reader")));
    assert_eq!(reader.status, 200);
    assert!(reader.text().contains("dataset=\"gps\""), "{}", reader.text());
    assert!(!reader.text().contains("fleet"), "{}", reader.text());
    let scraper = metrics(Some(&auth("scraper")));
    assert_eq!(scraper.status, 200);
    assert!(scraper.text().contains("dataset=\"gps\"") && scraper.text().contains("dataset=\"fleet\""));

    assert_eq!(server.get("/healthz").status, 200);
    let ready = server.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["ready"], true);
}

#[test]
fn the_pending_budget_counts_what_each_entry_holds_not_its_payload_alone() {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    // Nothing is committed within the hour: every accepted report stays in memory.
    let toml = config("")
        .replace("flush_interval = \"100ms\"", "flush_interval = \"1h\"\nmax_pending_bytes = \"8 KiB\"");
    let server = Server::start(dir.path(), &toml);
    let report = br#"{"device_id":"A-1","seq":1,"t":"2026-01-01T00:00:00Z","lat":1,"lon":2}"#;
    let mut accepted = 0;
    loop {
        let r = server.post("/datasets/gps/sources/vendorA", Some("application/x-ndjson"), report);
        match r.status {
            202 => accepted += 1,
            503 => break,
            other => panic!("{other}: {}", r.text()),
        }
        assert!(accepted < 200, "never pushed back");
    }
    // Each small report costs its entry, origin and bookkeeping as well as its bytes, so the
    // budget holds far fewer than 8 KiB of payloads; and not none.
    let payloads = accepted * report.len();
    assert!(accepted >= 4 && payloads < 8192 / 2, "{accepted} reports ({payloads} bytes) taken");
}
