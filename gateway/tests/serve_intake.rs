//! The one intake behind every transport: the same push, refused for the same reason, is
//! answered in each protocol's own terms (an HTTP status, an MQTT 5 reason code, a CoAP
//! code): HTTP from a plain socket client, MQTT from `mosquitto_pub`, CoAP in raw datagrams.

#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::server::{GPS, Launch, Server, config_with, request, schemas};

/// A report with its own sequence number, so that each one taken is a row of its own.
fn good(seq: u16) -> String {
    format!(r#"{{"device_id":"A-1","seq":{seq},"t":"2026-01-01T00:00:01Z","lat":49.2,"lon":-123.1}}"#)
}

/// What one push gets over each transport.
#[derive(Debug, PartialEq)]
struct Answers {
    http: u16,
    mqtt: u8,
    coap: ResponseType,
}

struct Sender {
    /// MQTT username and password, HTTP Basic; `None`: anonymous.
    password: Option<(&'static str, &'static str)>,
    /// CoAP `?key=`.
    key: Option<&'static str>,
}

const VENDOR_A: Sender = Sender { password: Some(("vendorA", "secret-a")), key: Some("tok-a") };
const ANONYMOUS: Sender = Sender { password: None, key: None };

fn push(server: &Server, who: &Sender, path: &str, media_type: Option<(&str, u16)>, id: u16) -> Answers {
    Answers {
        http: http(server, who, path, media_type.map(|(m, _)| m), &good(id * 10 + 1)),
        mqtt: mqtt(server, who, path, media_type.map(|(m, _)| m), &good(id * 10 + 2)),
        coap: coap(server, who, path, media_type.map(|(_, f)| f), id, &good(id * 10 + 3)),
    }
}

fn http(server: &Server, who: &Sender, path: &str, media_type: Option<&str>, body: &str) -> u16 {
    let basic = who.password.map(|(user, password)| {
        use base64::Engine as _;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    });
    let mut headers = vec![("Content-Type", media_type.unwrap_or("application/json"))];
    if let Some(basic) = &basic {
        headers.push(("Authorization", basic));
    }
    request(server.http, "POST", &format!("/{path}"), &headers, body.as_bytes()).status
}

/// The PUBACK's reason code, from `mosquitto_pub -d` (MQTT 5, QoS 1).
fn mqtt(server: &Server, who: &Sender, topic: &str, media_type: Option<&str>, body: &str) -> u8 {
    let port = server.mqtt.expect("mqtt is on").port().to_string();
    let mut command = Command::new("mosquitto_pub");
    command.args(["-h", "127.0.0.1", "-p", &port, "-d", "-V", "mqttv5", "-q", "1", "-t", topic, "-m", body]);
    if let Some((user, password)) = who.password {
        command.args(["-u", user, "-P", password]);
    }
    if let Some(media_type) = media_type {
        command.args(["-D", "publish", "content-type", media_type]);
    }
    let out = command.output().expect("mosquitto_pub (tests/run.sh installs mosquitto-clients)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let code = text.split("received PUBACK").nth(1).and_then(|rest| rest.split("RC:").nth(1));
    let code = code.and_then(|c| c.split(')').next()).unwrap_or_else(|| panic!("no PUBACK: {text}"));
    code.parse().unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A CON POST's response code.
fn coap(server: &Server, who: &Sender, path: &str, format: Option<u16>, id: u16, body: &str) -> ResponseType {
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Confirmable);
    packet.header.code = MessageClass::Request(RequestType::Post);
    packet.header.message_id = id;
    packet.set_token(id.to_be_bytes().to_vec());
    for segment in path.split('/') {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    packet.add_option(CoapOption::ContentFormat, vec![format.unwrap_or(50) as u8]);
    if let Some(key) = who.key {
        packet.add_option(CoapOption::UriQuery, format!("key={key}").into_bytes());
    }
    packet.payload = body.as_bytes().to_vec();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let to: SocketAddr = server.coap[0];
    socket.send_to(&packet.to_bytes().unwrap(), to).unwrap();
    let mut buffer = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buffer).expect("a CoAP answer");
    match Packet::from_bytes(&buffer[..n]).unwrap().header.code {
        MessageClass::Response(code) => code,
        other => panic!("not a response: {other:?}"),
    }
}

#[test]
fn every_transport_answers_the_same_refusal_in_its_own_terms() {
    let hash = odf_gateway::access::hash_password(b"secret-a").unwrap();
    let digest = odf_gateway::access::token_digest("tok-a");
    let identities = format!(
        "[[identity]]\nname = \"vendorA\"\npassword_hash = \"{hash}\"\ntoken_sha256 = [\"{digest}\"]\nwrite = [\"gps/vendorA\", \"fleet\", \"nope\"]\n"
    );
    // Anonymous senders may read, not write.
    let toml = config_with("", "query = [\"*\"]\n", &identities);
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS), ("fleet.yaml", &GPS.replace("name: gps", "name: fleet"))]);
    let server = Server::start(dir.path(), &toml);
    let data = server.data();
    drop(server);
    // The fleet's write-ahead log now claims to be another dataset's: it cannot be opened.
    std::fs::write(data.join(".wal/fleet/dataset-id"), "did:odf:fed0another").unwrap();
    let server = Server::start_launched(dir.path(), &toml, &Launch { unready: true, ..Launch::default() });

    let cases: [(&str, &Sender, &str, Option<(&str, u16)>, Answers); 7] = [
        ("taken", &VENDOR_A, "datasets/gps/sources/vendorA", None, answers(202, 0, ResponseType::Changed)),
        ("no route", &VENDOR_A, "nothing/here", None, answers(404, 0x90, ResponseType::NotFound)),
        ("no such dataset", &VENDOR_A, "datasets/nope", None, answers(404, 0x90, ResponseType::NotFound)),
        (
            "another's source",
            &VENDOR_A,
            "datasets/gps/sources/vendorB",
            None,
            answers(403, 0x87, ResponseType::Forbidden),
        ),
        (
            "anonymous",
            &ANONYMOUS,
            "datasets/gps/sources/vendorA",
            None,
            answers(401, 0x87, ResponseType::Unauthorized),
        ),
        (
            "a dataset that could not be opened",
            &VENDOR_A,
            "datasets/fleet/sources/vendorA",
            None,
            answers(503, 0x80, ResponseType::ServiceUnavailable),
        ),
        (
            "a format the gateway does not read",
            &VENDOR_A,
            "datasets/gps/sources/vendorA",
            Some(("application/xml", 41)),
            answers(415, 0x99, ResponseType::UnsupportedContentFormat),
        ),
    ];
    for (id, (case, who, path, media_type, expected)) in cases.into_iter().enumerate() {
        let got = push(&server, who, path, media_type, id as u16 + 1);
        assert_eq!(got, expected, "{case}\n{}", server.log());
    }
    // An error lists only the sources the sender may write to.
    let basic = {
        use base64::Engine as _;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("vendorA:secret-a"))
    };
    let r = request(server.http, "POST", "/datasets/gps/sources/nope", &[("Authorization", &basic)], b"{}");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("vendorA") && !r.text().contains("vendorB"), "{}", r.text());

    // The push taken went in over each transport, and nothing refused did; a last one waits
    // for its commit, and so for those logged before it.
    let last = good(1000);
    let response = request(
        server.http,
        "POST",
        "/datasets/gps/sources/vendorA?wait=commit",
        &[("Authorization", "Bearer tok-a")],
        last.as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let mut seqs: Vec<u64> =
        server.get("/datasets/gps/tail?limit=100").lines().iter().filter_map(|r| r["seq"].as_u64()).collect();
    seqs.sort();
    assert_eq!(seqs, [11, 12, 13, 1000], "the first case's three pushes and the last");
    let requests = server.get("/metrics").text();
    for transport in ["http", "mqtt", "coap"] {
        let counted = requests.lines().any(|l| {
            l.starts_with("odf_requests_total") && l.contains(&format!("transport=\"{transport}\""))
        });
        assert!(counted, "odf_requests_total for {transport}:\n{requests}");
    }
}

fn answers(http: u16, mqtt: u8, coap: ResponseType) -> Answers {
    Answers { http, mqtt, coap }
}
