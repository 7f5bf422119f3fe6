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
