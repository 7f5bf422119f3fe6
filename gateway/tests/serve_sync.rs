//! `[[sync]]` in `serve`, against a folder remote on a "disk" that is not mounted at first:
//! pushes fail and back off while ingest goes on, the status and metrics say so, and once
//! the disk is there the remote catches up; after a stop, commits made meanwhile (by the
//! CLI) are pushed at the next start. (The same over S3, with the link cut under load, is
//! tests/interop/test_s3_sync.py.)

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::server::{Server, config, schemas};
use common::{Gateway, gateway_bin, path};
use serde_json::Value;

const COUNTS: &str = include_str!("fixtures/counts.yaml");

fn counts(from: usize, to: usize) -> Vec<u8> {
    (from..=to).map(|n| format!("{{\"client\":\"a\",\"n\":{n}}}\n")).collect::<String>().into_bytes()
}

fn status(server: &Server) -> (Value, Value) {
    let dataset = server.get("/datasets/counts").json();
    let sync = dataset["sync"][0].clone();
    (dataset, sync)
}

/// Waits until `done` holds of the dataset and its sync status, or fails showing them.
fn wait_until(server: &Server, what: &str, done: impl Fn(&Value, &Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (dataset, sync) = status(server);
        if done(&dataset, &sync) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {sync}\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pushes_wait_for_the_disk_and_catch_up_after_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("counts.yaml", COUNTS)]);
    let disk = dir.path().join("usb");
    let remote = disk.join("counts");
    let sync = format!(
        "[[sync]]\nurl = \"file://{}/{{dataset}}\"\ninterval = \"200ms\"\nmax_backoff = \"400ms\"\n",
        path(&disk)
    );
    let mut server = Server::start(dir.path(), &config(&sync));
    for batch in 0..5 {
        let reply = server.post(
            "/datasets/counts?wait=commit",
            Some("application/x-ndjson"),
            &counts(batch * 10 + 1, batch * 10 + 10),
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    wait_until(&server, "failures while the disk is away", |_, sync| {
        sync["failures"].as_u64() > Some(1)
            && sync["last_error"].as_str().is_some_and(|e| e.contains("is its disk mounted"))
    });
    let metrics = server.get("/metrics").text();
    assert!(metrics.contains("odf_sync_failures_total{dataset=\"counts\""), "{metrics}");
    assert!(!remote.exists());

    // The disk comes: the remote catches up.
    std::fs::create_dir(&disk).unwrap();
    wait_until(&server, "caught up", |dataset, sync| {
        sync["remote_head"] == dataset["head"] && sync["blocks_behind"] == 0 && sync["last_error"].is_null()
    });
    assert_eq!(status(&server).1["failures"], 0);
    assert!(server.stop().success());

    // Committed while the gateway was down, pushed at its next start.
    let ingest = assert_cmd::Command::new(gateway_bin())
        .env("ODF_GATEWAY_DATA_DIR", server.data())
        .args(["ingest", "counts", "--stdin"])
        .write_stdin(counts(51, 60))
        .output()
        .unwrap();
    assert!(ingest.status.success(), "{}", String::from_utf8_lossy(&ingest.stderr));
    server.restart();
    wait_until(&server, "caught up after the start", |dataset, sync| {
        sync["remote_head"] == dataset["head"] && dataset["records"] == 60
    });
    assert!(server.stop().success());

    // The remote, pulled elsewhere, holds every record once.
    let copy = Gateway::new();
    std::fs::create_dir_all(copy.data()).unwrap();
    copy.ok(&["pull", &format!("file://{}", path(&remote))], "");
    copy.verify("counts");
    let mut ns: Vec<i64> = copy.records("counts").iter().map(|r| r["n"].as_i64().unwrap()).collect();
    ns.sort_unstable();
    assert_eq!(ns, (1..=60).collect::<Vec<_>>());
}
