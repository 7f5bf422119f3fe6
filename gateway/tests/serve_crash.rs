//! Nothing acknowledged is lost and nothing is committed twice: clients post numbered records
//! while the gateway is killed with SIGKILL at random moments (before, during and after
//! commits) and started again. Every record that got a 2xx must be in the dataset exactly
//! once, no record may be there twice, and `verify` must pass.
//!
//! The dataset merges by Append, which keeps duplicates, so a record replayed twice would
//! show. Clients never resend a record (a reply lost in a kill leaves it unknown), so "at
//! most once" holds for every record and "exactly once" for every acknowledged one.

#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::server::{Server, config, schemas, try_request};

const MANIFEST: &str = include_str!("fixtures/counts.yaml");

/// A small xorshift, seeded from the clock; the seed is printed so a failure can be rerun.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Clients post until the last of `kills` kills (and a restart) is done, then stop.
fn run(clients: usize, kills: usize) {
    let seed = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("CRASH_SEED={seed}");
    let mut random = Random(seed);
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path(), &[("counts.yaml", MANIFEST)]);
    let server = Arc::new(Mutex::new(Server::start(dir.path(), &config("").replace("100ms", "50ms"))));
    let acked: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));

    let mut threads = Vec::new();
    for c in 0..clients {
        let (server, acked, done) = (server.clone(), acked.clone(), done.clone());
        threads.push(std::thread::spawn(move || {
            let client = format!("c{c}");
            for n in 0.. {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let body = format!("{{\"client\":\"{client}\",\"n\":{n}}}\n");
                let addr = server.lock().unwrap().http;
                let headers = [("Content-Type", "application/x-ndjson")];
                match try_request(addr, "POST", "/datasets/counts/sources/clients", &headers, body.as_bytes())
                {
                    Ok(r) if r.status == 202 || r.status == 200 => {
                        acked.lock().unwrap().entry(client.clone()).or_default().push(n)
                    }
                    // Killed, restarting, or replaying: this record's fate is unknown; go on.
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }));
    }
    let killer = {
        let (server, done) = (server.clone(), done.clone());
        let pauses: Vec<u64> = (0..kills).map(|_| 50 + random.below(600)).collect();
        std::thread::spawn(move || {
            for pause in pauses {
                std::thread::sleep(Duration::from_millis(pause));
                let mut server = server.lock().unwrap();
                server.kill();
                server.restart();
            }
            // Some traffic after the last restart too.
            std::thread::sleep(Duration::from_millis(200));
            done.store(true, Ordering::SeqCst);
        })
    };
    killer.join().unwrap();
    for thread in threads {
        thread.join().unwrap();
    }

    let mut server = server.lock().unwrap();
    assert!(server.stop().success(), "{}", server.log());
    let gateway = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_odf-gateway"))
            .args(args)
            .env("ODF_GATEWAY_DATA_DIR", server.data())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    gateway(&["verify", "counts"]);
    let mut committed: HashMap<(String, u64), usize> = HashMap::new();
    for line in gateway(&["tail", "counts", "-n", "100000000", "-o", "json"]).lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (row["client"].as_str().unwrap().to_owned(), row["n"].as_u64().unwrap());
        *committed.entry(key).or_default() += 1;
    }
    let twice: Vec<_> = committed.iter().filter(|&(_, &count)| count > 1).collect();
    assert!(twice.is_empty(), "committed more than once (seed {seed}): {twice:?}");
    let acked = acked.lock().unwrap();
    let mut total = 0;
    for (client, ns) in acked.iter() {
        for n in ns {
            total += 1;
            assert!(
                committed.contains_key(&(client.clone(), *n)),
                "acknowledged but lost (seed {seed}): {client} {n}"
            );
        }
    }
    eprintln!("{total} acknowledged, {} committed, {kills} kills", committed.len());
    assert!(total > 0, "nothing was acknowledged");
}

#[test]
fn acknowledged_records_survive_kills_exactly_once() {
    for _ in 0..2 {
        run(4, 3);
    }
}

#[test]
#[ignore = "slow: run with --ignored"]
fn acknowledged_records_survive_many_kills_exactly_once() {
    run(16, 25);
}

/// The log's value of `odf_wal_groups_total` (writes, each with its fsync).
fn log_writes(server: &Server) -> u64 {
    let metrics = server.get("/metrics").text();
    metrics
        .lines()
        .find(|l| l.starts_with("odf_wal_groups_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no odf_wal_groups_total in {metrics}"))
}

fn post_count(server: &Server, client: &str, n: u64) -> u16 {
    let body = format!("{{\"client\":\"{client}\",\"n\":{n}}}\n");
    server.post("/datasets/counts/sources/clients", Some("application/x-ndjson"), body.as_bytes()).status
}

/// A gateway on the counts manifest whose log syncs with the pacing given.
fn paced_server(root: &std::path::Path, interval: &str, bytes: &str) -> Server {
    schemas(root, &[("counts.yaml", MANIFEST)]);
    let paced = format!(
        "flush_interval = \"100ms\"\nwal_sync_interval = \"{interval}\"\nwal_sync_bytes = \"{bytes}\""
    );
    Server::start(root, &config("").replace("flush_interval = \"100ms\"", &paced))
}

fn accepted(status: u16) -> bool {
    status == 200 || status == 202
}

/// The log is synced at most once per `wal_sync_interval` (each fsync rewrites a page of an
/// SD card): a report after a quiet spell is written at once, the reports that arrive while the
/// next sync is not yet due wait and share one write and one fsync, and all are acknowledged.
#[test]
fn reports_arriving_before_the_next_sync_is_due_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = paced_server(dir.path(), "4s", "1 MiB");
    assert!(accepted(post_count(&server, "first", 0)));
    let before = log_writes(&server);
    let shared = &server;
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let clients: Vec<_> =
            (0..8).map(|c| scope.spawn(move || post_count(shared, &format!("c{c}"), 1))).collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|&s| accepted(s)), "{statuses:?}");
    assert_eq!(log_writes(&server) - before, 1, "eight reports, one write: {}", server.log());
    assert!(server.stop().success(), "{}", server.log());
}

/// A group that holds `wal_sync_bytes` is written without waiting for the interval.
#[test]
fn a_group_of_wal_sync_bytes_is_written_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = paced_server(dir.path(), "1h", "1 B");
    for n in 0..3 {
        assert!(accepted(post_count(&server, "c", n)), "{}", server.log());
    }
    assert!(server.stop().success(), "{}", server.log());
}
