//! The CoAP listener as constrained devices use it, with a client we did not write
//! (libcoap's `coap-client`) and with raw datagrams: CON and NON, JSON, CBOR and SenML,
//! block-wise transfer, discovery, error codes with diagnostics, retransmissions answered
//! once, separate responses, and garbage that never stops the listener.

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::server::{GPS, Server, config, config_with, schemas};
use device_sim::gps::{Fleet, Vendor, encode};
use serde_json::Value;

fn gps_server(toml: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS), ("senml.yaml", SENML)]);
    let server = Server::start(dir.path(), toml);
    (dir, server)
}

fn url(addr: SocketAddr, path: &str) -> String {
    match addr {
        SocketAddr::V4(a) => format!("coap://{}:{}{path}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("coap://[{}]:{}{path}", a.ip(), a.port()),
    }
}

/// `coap-client` (libcoap) with `args`, against `path` on the first listener.
fn coap_client(server: &Server, args: &[&str], path: &str) -> Output {
    Command::new("coap-client-notls")
        .args(["-B", "20"])
        .args(args)
        .arg(url(server.coap[0], path))
        .output()
        .expect("coap-client-notls (tests/run.sh installs libcoap3-bin)")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn records(server: &Server, dataset: &str, n: usize) -> Vec<Value> {
    records_as(server, dataset, n, &[])
}

/// The records of `dataset` once there are `n`, read with these HTTP headers.
fn records_as(server: &Server, dataset: &str, n: usize, headers: &[(&str, &str)]) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let path = format!("/datasets/{dataset}/tail?limit=10000");
        let response = common::server::request(server.http, "GET", &path, headers, b"");
        assert_eq!(response.status, 200, "{}", response.text());
        let rows = response.lines();
        if rows.len() >= n || started.elapsed() > Duration::from_secs(30) {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cbor_reports(devices: usize) -> Vec<u8> {
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc();
    encode(Vendor::C, &Fleet::new(Vendor::C, devices, 3, start, chrono::Duration::seconds(10)).tick())
}

const SENML: &str = r#"
kind: DatasetSnapshot
version: 1
content:
  name: senml
  kind: Root
  metadata:
    - kind: AddPushSource
      sourceName: trackers
      read:
        kind: NdJson
        schema: ["bn STRING NOT NULL", "t TIMESTAMP", "lat DOUBLE", "lon DOUBLE", "speed DOUBLE"]
      merge:
        kind: Append
    - kind: SetVocab
      eventTimeColumn: t
"#;

#[test]
fn con_and_non_posts_in_json_cbor_and_senml_are_committed() {
    let (dir, server) = gps_server(&config(""));
    let json = r#"{"i":"C-1","n":1,"ts":1767268800,"la":49.28,"lo":-123.12}"#;
    let out = coap_client(&server, &["-m", "post", "-t", "50", "-e", json], "/datasets/gps/sources/vendorC");
    assert!(out.status.success() && !text(&out).contains("4."), "{}", text(&out));
    let cbor = dir.path().join("reports.cbor");
    std::fs::write(&cbor, cbor_reports(3)).unwrap();
    let out = coap_client(
        &server,
        &["-m", "post", "-t", "60", "-f", cbor.to_str().unwrap()],
        "/datasets/gps/sources/vendorC",
    );
    assert!(out.status.success(), "{}", text(&out));
    let json2 = r#"{"i":"C-2","n":1,"ts":1767268800,"la":49.28,"lo":-123.12}"#;
    let out =
        coap_client(&server, &["-N", "-m", "post", "-t", "50", "-e", json2], "/datasets/gps/sources/vendorC");
    assert!(out.status.success(), "NON: {}", text(&out));
    assert_eq!(records(&server, "gps", 5).len(), 5);

    let senml = r#"[{"bn":"urn:dev:imei:3569:","bt":1767268800,"n":"lat","v":49.28},{"n":"lon","v":-123.12},{"n":"speed","v":8.5},{"n":"lat","t":10,"v":49.29},{"n":"lon","t":10,"v":-123.13}]"#;
    let out = coap_client(&server, &["-m", "post", "-t", "110", "-e", senml], "/datasets/senml");
    assert!(out.status.success() && text(&out).trim().is_empty(), "{}", text(&out));
    let rows = records(&server, "senml", 2);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["bn"], "urn:dev:imei:3569:");
    assert_eq!(rows[1]["t"], "2026-01-01T12:00:10Z", "{rows:?}");
    assert_eq!(rows[0]["speed"], 8.5);
}

#[test]
fn a_body_bigger_than_a_datagram_arrives_block_wise() {
    let (dir, server) = gps_server(&config(""));
    let cbor = cbor_reports(200);
    assert!(cbor.len() > 4096, "{}", cbor.len());
    let file = dir.path().join("big.cbor");
    std::fs::write(&file, &cbor).unwrap();
    let out = coap_client(
        &server,
        &["-m", "post", "-b", "64", "-t", "60", "-f", file.to_str().unwrap()],
        "/datasets/gps/sources/vendorC",
    );
    assert!(out.status.success() && !text(&out).contains("4."), "{}", text(&out));
    assert_eq!(records(&server, "gps", 200).len(), 200);
}

#[test]
fn discovery_lists_the_sources_and_get_describes_one() {
    let (_dir, server) = gps_server(&config(""));
    let v6 = server.coap.iter().find(|a| a.is_ipv6()).expect("an IPv6 listener");
    let out = Command::new("coap-client-notls")
        .args(["-B", "20", "-m", "get"])
        .arg(url(*v6, "/.well-known/core"))
        .output()
        .unwrap();
    let links = text(&out);
    for source in ["vendorA", "vendorB", "vendorC"] {
        assert!(
            links.contains(&format!("</datasets/gps/sources/{source}>;rt=\"odf.push-source\"")),
            "{links}"
        );
    }
    assert!(links.contains("ct=\"50 60 0 110 112\""), "{links}");
    let out = coap_client(&server, &["-m", "get"], "/datasets/gps/sources/vendorC");
    let schema: Value =
        serde_json::from_str(text(&out).trim()).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(schema["source"], "vendorC");
}

/// One raw CoAP exchange over UDP: sends `packet`, returns the reply.
fn exchange(socket: &UdpSocket, to: SocketAddr, packet: &Packet) -> Packet {
    socket.send_to(&packet.to_bytes().unwrap(), to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).expect("a reply");
    Packet::from_bytes(&buf[..n]).unwrap()
}

fn request(id: u16, method: RequestType, path: &str, format: Option<u16>, payload: &[u8]) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Confirmable);
    packet.header.code = MessageClass::Request(method);
    packet.header.message_id = id;
    packet.set_token(vec![0xab, (id & 0xff) as u8]);
    for segment in path.trim_start_matches('/').split('/') {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    if let Some(format) = format {
        packet.add_option(
            CoapOption::ContentFormat,
            format.to_be_bytes().iter().skip_while(|b| **b == 0).copied().collect(),
        );
    }
    packet.payload = payload.to_vec();
    packet
}

fn socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    socket
}

#[test]
fn a_retransmitted_con_request_is_committed_once_and_answered_alike() {
    let (_dir, server) = gps_server(&config(""));
    let socket = socket();
    let json = br#"{"i":"C-9","n":1,"ts":1767268800,"la":49.28,"lo":-123.12}"#;
    let post = request(4711, RequestType::Post, "/datasets/gps/sources/vendorC", Some(50), json);
    let replies: Vec<Packet> = (0..3).map(|_| exchange(&socket, server.coap[0], &post)).collect();
    for reply in &replies {
        assert_eq!(reply.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(reply.header.code, MessageClass::Response(ResponseType::Changed));
        assert_eq!((reply.header.message_id, reply.get_token()), (4711, post.get_token()));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(records(&server, "gps", 1).len(), 1, "one record, not three");
}

#[test]
fn errors_answer_in_coap_terms_with_a_diagnostic() {
    let digest = odf_gateway::access::token_digest("key-c");
    let extra = format!(
        "[[identity]]\nname = \"vendorC\"\ntoken_sha256 = [\"{digest}\"]\nwrite = [\"gps/vendorC\"]\n"
    );
    let (_dir, server) = gps_server(&config_with("", "query = [\"*\"]\n", &extra));
    let socket = socket();
    let to = server.coap[0];
    let code = |p: &Packet| match p.header.code {
        MessageClass::Response(code) => code,
        other => panic!("{other:?}"),
    };
    let diagnostic = |p: &Packet| String::from_utf8_lossy(&p.payload).into_owned();
    let path = "/datasets/gps/sources/vendorC";
    let good = br#"{"i":"C-1","n":1,"ts":1767268800,"la":49.28,"lo":-123.12}"#;

    let reply = exchange(&socket, to, &request(1, RequestType::Post, path, Some(50), good));
    assert_eq!(code(&reply), ResponseType::Unauthorized, "{}", diagnostic(&reply));
    let with_key = |id: u16, path: &str, format: Option<u16>, body: &[u8]| {
        let mut p = request(id, RequestType::Post, path, format, body);
        p.add_option(CoapOption::UriQuery, b"key=key-c".to_vec());
        p
    };
    let reply = exchange(&socket, to, &with_key(2, path, Some(50), good));
    assert_eq!(code(&reply), ResponseType::Changed, "{}", diagnostic(&reply));
    let reply = exchange(&socket, to, &with_key(3, "/datasets/gps/sources/vendorA", Some(50), good));
    assert_eq!(code(&reply), ResponseType::Forbidden, "{}", diagnostic(&reply));
    let mut wrong = request(4, RequestType::Post, path, Some(50), good);
    wrong.add_option(CoapOption::UriQuery, b"key=nope".to_vec());
    assert_eq!(code(&exchange(&socket, to, &wrong)), ResponseType::Unauthorized);
    let reply = exchange(&socket, to, &with_key(5, path, Some(50), br#"{"i":"C-1","n":"one"}"#));
    assert_eq!(code(&reply), ResponseType::BadRequest);
    assert!(diagnostic(&reply).contains("field 'n'"), "{}", diagnostic(&reply));
    let reply = exchange(&socket, to, &with_key(6, path, Some(41), good));
    assert_eq!(code(&reply), ResponseType::UnsupportedContentFormat, "{}", diagnostic(&reply));
    let reply = exchange(&socket, to, &with_key(7, "/nothing/here", Some(50), good));
    assert_eq!(code(&reply), ResponseType::NotFound);
    let reply = exchange(&socket, to, &request(8, RequestType::Delete, path, None, b""));
    assert_eq!(code(&reply), ResponseType::MethodNotAllowed);
    // A body announced bigger than the limit: 4.13 with the limit in Size1.
    let mut big = with_key(9, path, Some(50), &[b' '; 64]);
    big.add_option(CoapOption::Block1, vec![0x0a]);
    big.add_option(CoapOption::Size1, 100_000_000u32.to_be_bytes().to_vec());
    let reply = exchange(&socket, to, &big);
    assert_eq!(code(&reply), ResponseType::RequestEntityTooLarge);
    assert!(reply.get_first_option(CoapOption::Size1).is_some());
    // A block that does not follow: 4.08.
    let mut late = with_key(10, path, Some(50), &[b' '; 64]);
    late.add_option(CoapOption::Block1, vec![0x3a]);
    assert_eq!(code(&exchange(&socket, to, &late)), ResponseType::RequestEntityIncomplete);
    assert_eq!(records(&server, "gps", 1).len(), 1);
}

#[test]
fn backpressure_is_5_03_with_max_age() {
    let toml =
        config("").replace("flush_interval = \"100ms\"", "flush_interval = \"1h\"\nmax_pending_bytes = 200");
    let (_dir, server) = gps_server(&toml);
    let socket = socket();
    let body = br#"{"i":"C-1","n":1,"ts":1767268800,"la":49.28,"lo":-123.12}"#;
    let mut codes = Vec::new();
    for id in 0..10 {
        let reply = exchange(
            &socket,
            server.coap[0],
            &request(100 + id, RequestType::Post, "/datasets/gps/sources/vendorC", Some(50), body),
        );
        codes.push(reply.header.code);
        if reply.header.code == MessageClass::Response(ResponseType::ServiceUnavailable) {
            assert!(reply.get_first_option(CoapOption::MaxAge).is_some());
            break;
        }
    }
    assert_eq!(codes.last(), Some(&MessageClass::Response(ResponseType::ServiceUnavailable)), "{codes:?}");
}

#[test]
fn a_slow_answer_is_a_separate_response() {
    // Every answer takes longer than this, so each comes as an empty ACK, then a CON.
    let toml = config("").replace("[coap]\n", "[coap]\nseparate_after = \"0s\"\n");
    let (_dir, server) = gps_server(&toml);
    let json = r#"{"i":"C-5","n":1,"ts":1767268800,"la":49.28,"lo":-123.12}"#;
    let out = coap_client(&server, &["-m", "post", "-t", "50", "-e", json], "/datasets/gps/sources/vendorC");
    assert!(out.status.success() && !text(&out).contains("4."), "{}", text(&out));
    assert_eq!(records(&server, "gps", 1).len(), 1);
    let socket = socket();
    let post = request(9000, RequestType::Post, "/datasets/gps/sources/vendorC", Some(50), json.as_bytes());
    let first = exchange(&socket, server.coap[0], &post);
    assert_eq!(
        (first.header.get_type(), first.header.code),
        (MessageType::Acknowledgement, MessageClass::Empty)
    );
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    let separate = Packet::from_bytes(&buf[..n]).unwrap();
    assert_eq!(separate.header.get_type(), MessageType::Confirmable);
    assert_eq!(separate.get_token(), post.get_token());
    assert_eq!(separate.header.code, MessageClass::Response(ResponseType::Changed));
}

#[test]
fn garbage_never_stops_the_listener() {
    let (_dir, server) = gps_server(&config(""));
    let socket = socket();
    let to = server.coap[0];
    let valid = request(
        1,
        RequestType::Post,
        "/datasets/gps/sources/vendorC",
        Some(50),
        br#"{"i":"C-1","n":1,"ts":1767268800,"la":1,"lo":2}"#,
    )
    .to_bytes()
    .unwrap();
    let mut random: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    for i in 0..10_000 {
        let datagram: Vec<u8> = if i % 2 == 0 {
            let len = (next() % 200) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            // A valid request cut short, or with bytes flipped.
            let mut d = valid[..(next() as usize % valid.len())].to_vec();
            if let Some(b) = d.get_mut(next() as usize % valid.len().max(1)) {
                *b ^= next() as u8;
            }
            d
        };
        let _ = socket.send_to(&datagram, to);
    }
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 2048];
    while socket.recv_from(&mut buf).is_ok() {}
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let probe = request(60_000, RequestType::Get, "/.well-known/core", None, b"");
    socket.send_to(&probe.to_bytes().unwrap(), to).unwrap();
    // Late answers to the garbage may come first: read until the probe's own.
    let reply = loop {
        let (n, _) = socket.recv_from(&mut buf).expect("the listener still answers");
        if let Some(reply) = Packet::from_bytes(&buf[..n]).ok().filter(|p| p.header.message_id == 60_000) {
            break reply;
        }
    };
    assert_eq!(reply.header.code, MessageClass::Response(ResponseType::Content));
    assert!(server.get("/metrics").text().contains("odf_coap_malformed_total"));
}

fn code_of(packet: &Packet) -> ResponseType {
    match packet.header.code {
        MessageClass::Response(code) => code,
        other => panic!("not a response: {other:?}"),
    }
}

fn diagnostic_of(packet: &Packet) -> String {
    String::from_utf8_lossy(&packet.payload).into_owned()
}

/// The gateway's peak resident memory so far (VmHWM), in MiB.
fn peak_mib(server: &Server) -> f64 {
    server.memory("VmHWM") as f64 / (1024.0 * 1024.0)
}

/// A configuration without anonymous access, with these identities.
fn config_without_anonymous(identities: &str) -> String {
    config_with("", "", identities).replace("[anonymous]\n", "")
}

/// An identity with a bearer token (CoAP `?key=`) and grants.
fn identity(name: &str, token: &str, grants: &str) -> String {
    let digest = odf_gateway::access::token_digest(token);
    format!("[[identity]]\nname = \"{name}\"\ntoken_sha256 = [\"{digest}\"]\n{grants}\n")
}

fn with_key(mut packet: Packet, key: &str) -> Packet {
    packet.add_option(CoapOption::UriQuery, format!("key={key}").into_bytes());
    packet
}

fn report(device: &str) -> Vec<u8> {
    format!(r#"{{"i":"{device}","n":1,"ts":1767268800,"la":49.28,"lo":-123.12}}"#).into_bytes()
}

/// The first block (of 1024 bytes, more to come) of a body sent block-wise.
fn first_block(id: u16, path: &str) -> Packet {
    let mut packet = request(id, RequestType::Post, path, Some(50), &[b' '; 1024]);
    packet.add_option(CoapOption::Block1, vec![0x0e]);
    packet
}

/// `count` Uri-Query options of 250 bytes, each naming `tag` (so that requests differ).
fn add_long_query(packet: &mut Packet, tag: usize, count: usize) {
    for q in 0..count {
        let value = format!("{tag:06}-{q:03}={}", "x".repeat(239));
        packet.add_option(CoapOption::UriQuery, value.into_bytes());
    }
}

#[test]
fn critical_options_not_understood_are_4_02_and_preconditions_are_kept() {
    let (_dir, server) = gps_server(&config(""));
    let socket = socket();
    let to = server.coap[0];
    let path = "/datasets/gps/sources/vendorC";
    let post = |id: u16, device: &str, options: &[(u16, &[u8])]| {
        let mut packet = request(id, RequestType::Post, path, Some(50), &report(device));
        for (number, value) in options {
            packet.add_option(CoapOption::from(*number), value.to_vec());
        }
        exchange(&socket, to, &packet)
    };
    let refused = |reply: Packet, code: ResponseType, text: &str| {
        assert_eq!(code_of(&reply), code, "{}", diagnostic_of(&reply));
        assert!(diagnostic_of(&reply).contains(text), "{}", diagnostic_of(&reply));
    };
    refused(post(1, "X-1", &[(9, b"")]), ResponseType::BadOption, "9 (OSCORE) is not understood");
    refused(post(2, "X-2", &[(2053, b"x")]), ResponseType::BadOption, "2053 is not understood");
    refused(
        post(3, "X-3", &[(27, &[0x0e]), (27, &[0x0e])]),
        ResponseType::BadOption,
        "Block1 may appear once",
    );
    refused(post(4, "X-4", &[(15, &[b'q'; 300])]), ResponseType::BadOption, "Uri-Query must be 0 to 255");
    refused(post(5, "X-5", &[(35, b"coap://example.org/x")]), ResponseType::ProxyingNotSupported, "proxy");
    // If-Match with a tag that is not the source's: 4.12; If-None-Match: the source exists.
    refused(post(6, "X-6", &[(1, &[1])]), ResponseType::PreconditionFailed, "If-Match");
    refused(post(7, "X-7", &[(5, b"")]), ResponseType::PreconditionFailed, "If-None-Match");

    // Elective options it does not know are ignored; an empty If-Match matches.
    assert_eq!(code_of(&post(10, "C-1", &[(2050, b"x"), (65000, b"")])), ResponseType::Changed);
    assert_eq!(code_of(&post(11, "C-2", &[(1, b"")])), ResponseType::Changed);
    // The ETag of the source's description makes a write conditional on the schema read.
    let schema = exchange(&socket, to, &request(12, RequestType::Get, path, None, b""));
    assert_eq!(code_of(&schema), ResponseType::Content);
    let etag = schema.get_first_option(CoapOption::ETag).expect("an ETag").clone();
    assert_eq!(code_of(&post(13, "C-3", &[(1, &etag)])), ResponseType::Changed);
    assert_eq!(code_of(&post(14, "C-4", &[(1, &[0xff; 8]), (1, &etag)])), ResponseType::Changed);
    let mut again = request(15, RequestType::Get, path, None, b"");
    again.add_option(CoapOption::ETag, etag.clone());
    let valid = exchange(&socket, to, &again);
    assert_eq!(code_of(&valid), ResponseType::Valid);
    assert!(valid.payload.is_empty());
    let mut cbor = request(16, RequestType::Get, path, None, b"");
    cbor.add_option(CoapOption::Accept, vec![60]);
    assert_eq!(code_of(&exchange(&socket, to, &cbor)), ResponseType::NotAcceptable);

    records(&server, "gps", 4);
    std::thread::sleep(Duration::from_millis(500));
    let mut devices: Vec<String> =
        records(&server, "gps", 4).iter().map(|r| r["device_id"].as_str().unwrap().to_owned()).collect();
    devices.sort();
    assert_eq!(devices, ["C-1", "C-2", "C-3", "C-4"], "nothing refused was ingested");
}

#[test]
fn discovery_and_schemas_follow_the_read_grants() {
    let identities = identity("reader", "key-r", "query = [\"gps\"]")
        + &identity("vendorC", "key-c", "write = [\"gps/vendorC\"]");
    let (_dir, server) = gps_server(&config_without_anonymous(&identities));
    let socket = socket();
    let to = server.coap[0];
    let source = "/datasets/gps/sources/vendorC";
    for (i, path) in ["/.well-known/core", source].into_iter().enumerate() {
        let id = 10 * i as u16;
        let get = |id: u16| request(id, RequestType::Get, path, None, b"");
        let reply = exchange(&socket, to, &get(id));
        assert_eq!(code_of(&reply), ResponseType::Unauthorized, "{path}: {}", diagnostic_of(&reply));
        assert!(
            reply.payload.len() < 100 && diagnostic_of(&reply).contains("key"),
            "{}",
            diagnostic_of(&reply)
        );
        let reply = exchange(&socket, to, &with_key(get(id + 1), "nope"));
        assert_eq!(code_of(&reply), ResponseType::Unauthorized, "{path}");
        let reply = exchange(&socket, to, &with_key(get(id + 2), "key-c"));
        assert_eq!(code_of(&reply), ResponseType::Forbidden, "{path}: a writer that may not read");
        let reply = exchange(&socket, to, &with_key(get(id + 3), "key-r"));
        assert_eq!(code_of(&reply), ResponseType::Content, "{path}: {}", diagnostic_of(&reply));
        let body = diagnostic_of(&reply);
        if i == 0 {
            assert!(body.contains("</datasets/gps/sources/vendorC>;rt=\"odf.push-source\""), "{body}");
        } else {
            let schema: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(schema["source"], "vendorC");
        }
    }
    // As HTTP says for the same source.
    assert_eq!(server.get("/datasets/gps/sources/vendorC").status, 401);
}

#[test]
fn a_block_wise_body_without_a_key_is_refused_before_anything_is_kept() {
    let identities = identity("vendorC", "key-c", "write = [\"gps/vendorC\"]\nquery = [\"gps\"]");
    let (_dir, server) = gps_server(&config_without_anonymous(&identities));
    let socket = socket();
    let to = server.coap[0];
    let path = "/datasets/gps/sources/vendorC";
    let before = peak_mib(&server);
    // Each first block carries 60 KB of query of its own: kept, 2,000 would be 120 MB.
    for i in 0..2000u16 {
        let mut packet = first_block(i, path);
        add_long_query(&mut packet, i.into(), 240);
        let reply = exchange(&socket, to, &packet);
        assert_eq!(code_of(&reply), ResponseType::Unauthorized, "{}", diagnostic_of(&reply));
    }
    let grown = peak_mib(&server) - before;
    eprintln!("the peak memory grew by {grown:.1} MiB");
    assert!(grown < 40.0, "the peak memory grew by {grown:.0} MiB");

    // With the key, the same transfer is taken; a writer without the grant is refused at once.
    let reply = exchange(&socket, to, &with_key(first_block(5000, path), "key-c"));
    assert_eq!(code_of(&reply), ResponseType::Continue, "{}", diagnostic_of(&reply));
    let mut last = with_key(request(5001, RequestType::Post, path, Some(50), &report("C-1")), "key-c");
    last.add_option(CoapOption::Block1, vec![0x16]);
    let body = [vec![b' '; 1024], report("C-1")].concat();
    last.payload = body[1024..].to_vec();
    let reply = exchange(&socket, to, &last);
    assert_eq!(code_of(&reply), ResponseType::Changed, "{}", diagnostic_of(&reply));
    let reply = exchange(&socket, to, &with_key(first_block(5002, "/datasets/gps/sources/vendorA"), "key-c"));
    assert_eq!(code_of(&reply), ResponseType::Forbidden);
    assert_eq!(records_as(&server, "gps", 1, &[("Authorization", "Bearer key-c")]).len(), 1);
}

#[test]
fn unfinished_block_wise_transfers_are_bounded_per_endpoint_and_in_all() {
    let toml =
        config("").replace("[coap]\n", "[coap]\nmax_body = \"64 KiB\"\nmax_assembling = \"256 KiB\"\n");
    let (_dir, server) = gps_server(&toml);
    let to = server.coap[0];
    let path = "/datasets/gps/sources/vendorC";
    let before = peak_mib(&server);
    // From one port: 3,000 transfers begun with a block of 16 bytes and 30 KB of query each.
    let socket = socket();
    let (mut continued, mut refused) = (0, 0);
    for i in 0..3000u16 {
        let mut packet = request(i, RequestType::Post, path, Some(50), &[b' '; 16]);
        packet.add_option(CoapOption::Block1, vec![0x08]);
        add_long_query(&mut packet, i.into(), 120);
        let reply = exchange(&socket, to, &packet);
        match code_of(&reply) {
            ResponseType::Continue => continued += 1,
            ResponseType::ServiceUnavailable => {
                assert!(reply.get_first_option(CoapOption::MaxAge).is_some());
                assert!(
                    diagnostic_of(&reply).contains("coap.max_transfers_per_endpoint"),
                    "{}",
                    diagnostic_of(&reply)
                );
                refused += 1;
            }
            other => panic!("{other:?}: {}", diagnostic_of(&reply)),
        }
    }
    assert_eq!((continued, refused), (8, 2992), "the default is 8 transfers per endpoint");
    let grown = peak_mib(&server) - before;
    eprintln!("the peak memory grew by {grown:.1} MiB");
    assert!(grown < 30.0, "the peak memory grew by {grown:.0} MiB");

    // From 64 ports, 8 each of 1 KiB: what they hold (body and bookkeeping) stays within
    // coap.max_assembling, and beyond it the answer says so.
    let (mut continued, mut refused) = (0, 0);
    // Kept open to the end: a port freed early could be handed out again, and its transfers
    // begun again would replace (and free) the first ones.
    let mut sockets = Vec::new();
    for port in 0..64u16 {
        sockets.push(self::socket());
        let socket = &sockets[port as usize];
        for i in 0..8u16 {
            let mut packet = first_block(port * 8 + i, path);
            packet.add_option(CoapOption::UriQuery, format!("n={i}").into_bytes());
            let reply = exchange(socket, to, &packet);
            match code_of(&reply) {
                ResponseType::Continue => continued += 1,
                ResponseType::ServiceUnavailable => {
                    assert!(
                        diagnostic_of(&reply).contains("coap.max_assembling"),
                        "{}",
                        diagnostic_of(&reply)
                    );
                    refused += 1;
                }
                other => panic!("{other:?}: {}", diagnostic_of(&reply)),
            }
        }
    }
    // 1 KiB and its bookkeeping each, in 256 KiB (the first 8 transfers hold some too).
    assert!((180..=226).contains(&continued), "{continued} transfers held at once");
    assert_eq!(continued + refused, 512);
}

#[test]
fn a_flood_of_bad_requests_leaves_no_answers_behind() {
    let (_dir, server) = gps_server(&config(""));
    let to = server.coap[0];
    // A path that is no resource, long enough that each answer's diagnostic is full.
    let long = format!("/nothing/{0}/{0}/{0}", "z".repeat(200));
    let before = peak_mib(&server);
    let sockets: Vec<UdpSocket> = (0..50).map(|_| socket()).collect();
    for (s, socket) in sockets.iter().enumerate() {
        for i in 0..2000u16 {
            let mut packet = request(i, RequestType::Post, &long, Some(50), b"{}");
            packet.add_option(CoapOption::UriQuery, format!("n={s}-{i}").into_bytes());
            let reply = exchange(socket, to, &packet);
            assert_eq!(code_of(&reply), ResponseType::NotFound);
        }
    }
    let grown = peak_mib(&server) - before;
    eprintln!("the peak memory grew by {grown:.1} MiB");
    assert!(grown < 16.0, "100,000 refusals grew the peak memory by {grown:.0} MiB");
    // A retransmission of a refusal is answered alike.
    let mut packet = request(1999, RequestType::Post, &long, Some(50), b"{}");
    packet.add_option(CoapOption::UriQuery, b"n=0-1999".to_vec());
    let reply = exchange(&sockets[0], to, &packet);
    assert_eq!((code_of(&reply), reply.header.message_id), (ResponseType::NotFound, 1999));
}

/// A counter from `/metrics` (0 when not yet counted).
fn counter(server: &Server, name: &str) -> u64 {
    let text = server.get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

#[test]
fn remembered_answers_are_bounded_per_endpoint_oldest_first() {
    let toml = config("").replace("[coap]\n", "[coap]\nmax_exchanges_per_endpoint = 16\n");
    let (_dir, server) = gps_server(&toml);
    let socket = socket();
    let to = server.coap[0];
    // A block of a transfer never begun: 4.08, remembered, since a block changes a transfer.
    let late_block = |id: u16| {
        let mut packet =
            request(id, RequestType::Post, "/datasets/gps/sources/vendorC", Some(50), &[b' '; 16]);
        packet.add_option(CoapOption::Block1, vec![0x38]);
        packet
    };
    for id in 0..100 {
        assert_eq!(code_of(&exchange(&socket, to, &late_block(id))), ResponseType::RequestEntityIncomplete);
    }
    assert_eq!(counter(&server, "odf_coap_exchanges_evicted_total"), 84);
    let duplicates = counter(&server, "odf_coap_duplicates_total");
    // The newest is answered from memory, the oldest was forgotten and is handled again.
    assert_eq!(exchange(&socket, to, &late_block(99)).header.message_id, 99);
    assert_eq!(counter(&server, "odf_coap_duplicates_total"), duplicates + 1);
    assert_eq!(code_of(&exchange(&socket, to, &late_block(0))), ResponseType::RequestEntityIncomplete);
    assert_eq!(counter(&server, "odf_coap_duplicates_total"), duplicates + 1);
}

#[test]
fn a_vendor_key_bound_to_its_device_ids_and_a_csv_line_without_header_get_4_00() {
    let digest = odf_gateway::access::token_digest("key-c");
    let extra = format!(
        "[[identity]]\nname = \"vendorC\"\ntoken_sha256 = [\"{digest}\"]\nwrite = [\"gps/vendorC\"]\n\
         bind = [{{ column = \"i\", value = \"C-*\" }}]\n"
    );
    let (_dir, server) = gps_server(&config_with("", "query = [\"*\"]\nwrite = [\"gps/vendorB\"]\n", &extra));
    let path = "/datasets/gps/sources/vendorC?key=key-c";
    let report = |id: &str| format!(r#"{{"i":"{id}","n":1,"ts":1767268800,"la":49.28,"lo":-123.12}}"#);
    let out = coap_client(&server, &["-m", "post", "-t", "50", "-e", &report("356938035643809")], path);
    assert!(text(&out).contains("4.00") && text(&out).contains("binds column 'i'"), "{}", text(&out));
    let out = coap_client(&server, &["-m", "post", "-t", "50", "-e", &report("C-7")], path);
    assert!(out.status.success() && !text(&out).contains("4."), "{}", text(&out));
    assert_eq!(records(&server, "gps", 1).len(), 1);

    let line = "356938035643809,1767268800000,49.28,-123.12,17.0,270.0,87,42";
    let out = coap_client(&server, &["-m", "post", "-t", "0", "-e", line], "/datasets/gps/sources/vendorB");
    assert!(text(&out).contains("4.00") && text(&out).contains("not a header"), "{}", text(&out));
    let listed = server.get("/datasets/gps/quarantine").json();
    assert_eq!(listed["entries"].as_array().unwrap().len(), 2, "{listed}");
}
