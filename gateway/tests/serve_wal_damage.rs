//! An SD card flips bytes: acknowledged records sit in the write-ahead log when the gateway
//! is killed, the log is damaged on disk, and the gateway starts again. Every record that
//! still checks out is committed; the damaged bytes are kept in `damaged/`, and the loss is
//! said in the log, in `/readyz` and in `GET /datasets/{dataset}` with the records' seqs.

#[allow(dead_code)]
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use common::server::{Server, config, schemas};
use serde_json::Value;

const MANIFEST: &str = include_str!("fixtures/counts.yaml");

/// A gateway that commits only at a stop (flush interval 1 h) with `segment` bytes a log
/// segment, given `n` acknowledged records and then killed.
fn killed_with_records(n: u64, segment: &str, pad: usize) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("counts.yaml", MANIFEST)]);
    let config = config("").replace(
        "flush_interval = \"100ms\"",
        &format!("flush_interval = \"1h\"\nwal_segment_bytes = \"{segment}\""),
    );
    let mut server = Server::start(dir.path(), &config);
    let padding = "x".repeat(pad);
    for n in 1..=n {
        let body = format!("{{\"client\":\"c\",\"n\":{n},\"pad\":\"{padding}\"}}\n");
        let reply =
            server.post("/datasets/counts/sources/clients", Some("application/x-ndjson"), body.as_bytes());
        assert_eq!(reply.status, 202, "{}", reply.text());
    }
    server.kill();
    (dir, server)
}

fn segments(server: &Server) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(server.data().join(".wal/counts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    found.sort();
    found
}

fn damage(path: &PathBuf, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    change(&mut bytes);
    fs::write(path, bytes).unwrap();
}

fn committed(server: &Server) -> BTreeSet<u64> {
    let rows = server.get("/datasets/counts/tail?limit=10000").lines();
    rows.iter().map(|r| r["n"].as_u64().unwrap()).collect()
}

/// Restarts the gateway and checks what it says about the damage: `(committed, lost)` where
/// `lost` is the damaged ranges `/readyz` lists.
fn restart_and_report(server: &mut Server) -> (BTreeSet<u64>, Vec<Value>) {
    server.restart();
    let ready = server.get("/readyz");
    assert_eq!(ready.status, 200, "damage does not stop the gateway taking data: {}", ready.text());
    let lost = ready.json()["lost_records"].as_array().unwrap().clone();
    assert!(
        server.log().contains("ERROR") && server.log().contains("the write-ahead log is damaged"),
        "{}",
        server.log()
    );
    let described = server.get("/datasets/counts").json();
    assert_eq!(described["pipeline"]["lost_records"].as_array().unwrap().len(), lost.len());
    // Kept aside, named by the range.
    for range in &lost {
        assert!(PathBuf::from(range["kept_in"].as_str().unwrap()).exists(), "{range}");
    }
    // Said again at the next start, until an operator moves the damaged bytes away.
    assert!(server.stop().success(), "{}", server.log());
    server.restart();
    let again = server.get("/readyz").json()["lost_records"].as_array().unwrap().len();
    assert_eq!(again, lost.len());
    assert!(server.log().contains("still kept aside"), "{}", server.log());
    (committed(server), lost)
}

#[test]
fn one_flipped_byte_mid_log_costs_one_record_and_is_said_loudly() {
    let (_dir, mut server) = killed_with_records(100, "16MiB", 0);
    let newest = segments(&server).pop().unwrap();
    damage(&newest, |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x01;
    });
    let (committed, lost) = restart_and_report(&mut server);
    assert_eq!(committed.len(), 99, "{committed:?}");
    assert_eq!(lost.len(), 1, "{lost:?}");
    let seqs = &lost[0]["seqs"];
    assert_eq!(seqs["first"], seqs["last"], "{lost:?}");
}

#[test]
fn a_damaged_magic_or_a_huge_length_loses_no_other_record() {
    let (_dir, mut server) = killed_with_records(100, "16MiB", 0);
    let newest = segments(&server).pop().unwrap();
    damage(&newest, |b| {
        b[0] ^= 0x04;
        // The first record's length (after the segment's 32-byte header and 4 sync bytes).
        b[36..40].copy_from_slice(&200_000_000u32.to_le_bytes());
    });
    let (committed, lost) = restart_and_report(&mut server);
    assert_eq!(committed, (2..=100).collect(), "only record 1 (its length) is lost");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0]["seqs"]["last"], lost[0]["seqs"]["first"], "{lost:?}");
}

#[test]
fn damage_in_the_oldest_segment_loses_only_what_it_touched() {
    let (_dir, mut server) = killed_with_records(400, "64KiB", 400);
    let all = segments(&server);
    assert!(all.len() >= 3, "{all:?}");
    damage(&all[0], |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
    });
    // A whole segment overwritten with noise: its records are lost, and said to be.
    let noisy = all[1].clone();
    damage(&noisy, |b| {
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = (i.wrapping_mul(2_654_435_761) >> 11) as u8;
        }
    });
    let (committed, lost) = restart_and_report(&mut server);
    assert_eq!(lost.len(), 2, "{lost:?}");
    let said: u64 = lost
        .iter()
        .map(|l| l["seqs"]["last"].as_u64().unwrap() - l["seqs"]["first"].as_u64().unwrap() + 1)
        .sum();
    assert_eq!(committed.len() as u64 + said, 400, "every record is committed or said lost: {lost:?}");
    assert_eq!(committed.last(), Some(&400));
}
