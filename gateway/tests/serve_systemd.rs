//! `serve` under systemd (`Type=notify`, gateway/deploy/odf-gateway.service), spoken to as
//! systemd speaks: a datagram socket in `NOTIFY_SOCKET` that receives `READY=1` once the
//! listeners are bound, `WATCHDOG=1` at half of `WATCHDOG_USEC`, `STOPPING=1` at SIGTERM;
//! log lines to a stderr named by `JOURNAL_STREAM` carry journald's priority prefix.

#[allow(dead_code)]
mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::server::{GPS, Launch, Server, config, schemas};

/// The notifications received up to the first that holds `wanted`; all of them if none does
/// within a minute.
fn receive_until(socket: &UnixDatagram, wanted: &str) -> Result<Vec<String>, Vec<String>> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(n) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            let done = message.lines().any(|l| l == wanted);
            received.push(message);
            if done {
                return Ok(received);
            }
        }
    }
    Err(received)
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping_and_the_journal_gets_priorities() {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("gps.yaml", GPS)]);
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let launch = Launch {
        env: vec![
            ("NOTIFY_SOCKET".into(), socket_path.display().to_string()),
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        journal_stream: true,
        ..Launch::default()
    };
    let mut server = Server::start_launched(dir.path(), &config(""), &launch);

    let until = |wanted| {
        receive_until(&socket, wanted)
            .unwrap_or_else(|got| panic!("no {wanted} in {got:?}:\n{}", server.log()))
    };
    let before_ready = until("READY=1");
    let ready = before_ready.last().unwrap();
    assert!(ready.contains("STATUS=serving 1 dataset(s)"), "{before_ready:?}");
    // Ready means serving: the listeners are bound and the dataset takes reports.
    let posted = server.post(
        "/datasets/gps/sources/vendorB",
        Some("text/csv"),
        b"imei,ts,latitude,longitude,speed_knots,course,battery,counter\n356938035643809,1767225600000,49.2,-123.1,3.2,10,80,1\n",
    );
    assert!(posted.status == 200 || posted.status == 202, "{}", posted.text());
    until("WATCHDOG=1");
    until("WATCHDOG=1");

    let stopping = std::thread::scope(|scope| {
        let stopping = scope.spawn(|| receive_until(&socket, "STOPPING=1"));
        assert!(server.stop().success(), "{}", server.log());
        stopping.join().unwrap()
    });
    assert!(stopping.is_ok(), "{stopping:?}:\n{}", server.log());

    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.iter().any(|l| l.starts_with("<6>") && l.contains("dataset ready")), "{log}");
    assert!(lines.iter().any(|l| l.starts_with("<6>") && l.contains("stopped")), "{log}");
    // No time stamps (the journal keeps its own), no colours.
    assert!(!log.contains('\u{1b}'), "{log}");
    assert!(!lines.iter().any(|l| l.get(3..5) == Some("20")), "{log}");
}
