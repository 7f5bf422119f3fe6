//! Commit benchmark: the steady state of a long-running server committing 100 GPS records at
//! a time into a big Ledger dataset (primary key device_id, seq). Prints figures only:
//!
//! 1. a dataset of `--base-rows` records (default 10,000,000; filled in a child process, one
//!    ingest per 1,000,000 rows, so the RSS below is the server's own), then 200 commits of
//!    100 rows through one `DatasetWriter` kept open: p50/p99/max, split into `prepare` (read,
//!    merge, stage and fsync the Parquet slice, a checkpoint when due) and `Prepared::commit`
//!    (publish, block, head: 2 file and 3 folder fsyncs), and VmRSS/VmHWM; then the same
//!    commit as one `odf-gateway ingest --stdin` process each (10 runs, GNU time's peak RSS);
//! 2. `--commits` commits (default 3,600) one second apart in system time: the first 100
//!    against the last 100 (flat if a commit does not grow with the history).
//!
//!     cargo build --release --bin odf-gateway   # the CLI runs; or set ODF_GATEWAY_BIN
//!     cargo run --release --example commit_bench [-- --base-rows N] [--commits N]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
use odf_gateway::ingest::{DatasetWriter, IngestOptions, IngestRequest, Message, WriterOptions};
use odf_gateway::odf::parse_snapshots;
use odf_gateway::store::DataDir;

#[path = "support/gps_records.rs"]
mod gps_records;

const MANIFEST: &str = include_str!("../tests/fixtures/gps-bench.yaml");

const CHUNK: usize = 1_000_000;
const BATCH: usize = 100;

/// NdJson of records `from..from + rows` (see `support/gps_records.rs`).
fn records(from: usize, rows: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * 140);
    // Writing into a Vec cannot fail.
    let _ = gps_records::write_records(&mut out, from, rows);
    out
}

/// The next 100 records and a system time one second after the last.
struct Feed {
    next: usize,
    clock: DateTime<Utc>,
}

impl Feed {
    fn step(&mut self) -> (Vec<u8>, DateTime<Utc>) {
        self.next += BATCH;
        self.clock += chrono::Duration::seconds(1);
        (records(self.next - BATCH, BATCH), self.clock)
    }
}

/// One commit of the feed's next records; returns (prepare, commit) in ms.
fn commit(writer: &mut DatasetWriter, feed: &mut Feed) -> anyhow::Result<(f64, f64)> {
    let (bytes, system_time) = feed.step();
    let request = IngestRequest { messages: vec![Message::new(bytes, "bench")], ..Default::default() };
    let options = IngestOptions { system_time, skip_bad_records: false };
    let started = Instant::now();
    let prepared = writer.prepare(request, &options)?;
    let prepare = ms(started.elapsed());
    let started = Instant::now();
    let outcome = prepared.commit()?;
    let commit = ms(started.elapsed());
    ensure!(outcome.committed.is_some_and(|c| c.records > 0), "nothing was committed");
    Ok((prepare, commit))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile.
fn pct(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or(f64::NAN)
}

fn summary(values: &[f64]) -> String {
    format!("p50 {:7.2}  p99 {:7.2}  max {:7.2} ms", pct(values, 50.0), pct(values, 99.0), pct(values, 100.0))
}

/// A line of /proc/self/status, in MiB.
fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn rss() -> String {
    format!("VmRSS {:.0} MiB, VmHWM {:.0} MiB", status_mib("VmRSS"), status_mib("VmHWM"))
}

fn du_mib(dir: &Path) -> f64 {
    let files = ["data", "blocks", "checkpoints"].iter().filter_map(|d| std::fs::read_dir(dir.join(d)).ok());
    let bytes: u64 = files.flatten().flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum();
    bytes as f64 / 1048576.0
}

/// In a child: creates the dataset and fills it, one ingest per chunk.
fn fill(root: &Path, rows: usize) -> anyhow::Result<()> {
    let snapshot = parse_snapshots(MANIFEST, "bench")?.remove(0);
    let dataset = DataDir::create(root)?.create_dataset(&snapshot, Utc::now())?;
    let mut writer = DatasetWriter::open(dataset, WriterOptions::default())?;
    for from in (0..rows).step_by(CHUNK) {
        let request = IngestRequest {
            messages: vec![Message::new(records(from, CHUNK.min(rows - from)), "bench")],
            ..Default::default()
        };
        writer.ingest(request, &IngestOptions { system_time: Utc::now(), skip_bad_records: false })?;
    }
    println!("{}", status_mib("VmHWM"));
    Ok(())
}

/// The cost of one small fsync'd file write plus its folder's fsync, on this disk.
fn fsync_cost(dir: &Path) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for i in 0..50 {
        let path = dir.join(format!(".tmp-fsync-{i}"));
        let started = Instant::now();
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&[0u8; 128])?;
        file.sync_all()?;
        std::fs::File::open(dir)?.sync_all()?;
        times.push(ms(started.elapsed()));
        std::fs::remove_file(&path)?;
    }
    Ok(times)
}

/// One `odf-gateway ingest --stdin` under GNU time: (wall ms, peak RSS MiB).
fn cli_commit(bin: &Path, root: &Path, bytes: &[u8]) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let mut command = Command::new("/usr/bin/time");
    command.arg("-v").arg(bin).args(["ingest", "gps", "--stdin"]).env("ODF_GATEWAY_DATA_DIR", root);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run /usr/bin/time (apt-get install time)")?;
    child.stdin.take().context("stdin")?.write_all(bytes)?;
    let output = child.wait_with_output()?;
    let wall = ms(started.elapsed());
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "odf-gateway ingest failed: {stderr}");
    let kib: f64 = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .context("no peak RSS in GNU time's output")?;
    Ok((wall, kib / 1024.0))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, root, rows] = args.as_slice() {
        if flag == "--fill" {
            return fill(Path::new(root), rows.parse()?);
        }
    }
    let (mut base, mut commits) = (10_000_000usize, 3600usize);
    for pair in args[1..].chunks(2) {
        match pair {
            [flag, n] if flag == "--base-rows" => base = n.parse()?,
            [flag, n] if flag == "--commits" => commits = n.parse()?,
            _ => bail!("usage: commit_bench [--base-rows N] [--commits N]"),
        }
    }
    let exe = std::env::current_exe()?;
    let bin = std::env::var_os("ODF_GATEWAY_BIN").map(PathBuf::from).unwrap_or_else(|| {
        exe.parent().and_then(Path::parent).map(|d| d.join("odf-gateway")).unwrap_or_default()
    });
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("odf");

    let started = Instant::now();
    let output = Command::new(&exe).arg("--fill").arg(&root).arg(base.to_string()).output()?;
    ensure!(output.status.success(), "fill: {}", String::from_utf8_lossy(&output.stderr));
    let seconds = started.elapsed().as_secs_f64();
    let fill_peak: f64 = String::from_utf8(output.stdout)?.trim().parse()?;
    let ds = root.join("gps");
    let rate = base as f64 / seconds;
    println!("base: {base} records in {} ingests, {seconds:.1} s ({rate:.0} rows/s)", base.div_ceil(CHUNK));
    println!("      {:.0} MiB on disk, filler's peak RSS {fill_peak:.0} MiB", du_mib(&ds));

    // 1. A server: one writer kept open, 100 rows a commit.
    let data_dir = DataDir::open(&root)?;
    let mut writer = DatasetWriter::open(data_dir.open_dataset("gps")?, WriterOptions::default())?;
    let mut feed = Feed { next: base, clock: Utc::now() };
    let (p, c) = commit(&mut writer, &mut feed)?;
    println!("\n1. 100-row Ledger commits into the {base}-record dataset, one writer kept open");
    println!("first commit after open (loads the checkpoint): {:.0} ms (commit {c:.0})", p + c);
    println!("RSS after that first commit: {}", rss());
    let (mut total, mut prepare, mut publish) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..200 {
        let (p, c) = commit(&mut writer, &mut feed)?;
        total.push(p + c);
        prepare.push(p);
        publish.push(c);
    }
    println!("200 commits     total   {}   (target p99 <= 10 ms)", summary(&total));
    println!("  prepare (read, merge, stage + Parquet fsync)   {}", summary(&prepare));
    println!("  commit (publish, block, head: 2+3 fsyncs)      {}", summary(&publish));
    println!("  one fsync'd 128-byte write + folder fsync here {}", summary(&fsync_cost(&ds.join("data"))?));
    println!("RSS after 200 commits: {}   (target <= 150 MB)", rss());

    if bin.exists() {
        // While the server holds the dataset's Ledger index, a CLI process builds a private
        // one from every slice: the slow path, measured once.
        let (bytes, _) = feed.step();
        let (w, r) = cli_commit(&bin, &root, &bytes)?;
        println!(
            "1 CLI process while the writer holds the index (private index): {w:.0} ms, peak RSS {r:.0} MiB"
        );
        // The usual case: the CLI alone.
        drop(writer);
        let (mut wall, mut peak) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            let (bytes, _) = feed.step();
            let (w, r) = cli_commit(&bin, &root, &bytes)?;
            wall.push(w);
            peak.push(r);
        }
        println!("10 CLI processes alone ({}): wall {}", bin.display(), summary(&wall));
        println!("  peak RSS per process: p50 {:.0} MiB, max {:.0} MiB", pct(&peak, 50.0), pct(&peak, 100.0));
        writer = DatasetWriter::open(data_dir.open_dataset("gps")?, WriterOptions::default())?;
    } else {
        println!("CLI runs skipped: {} not found (cargo build --release --bin odf-gateway)", bin.display());
    }

    // 2. An hour of one commit a second.
    feed.clock = feed.clock.max(Utc::now());
    let (p, c) = commit(&mut writer, &mut feed)?;
    println!("\n2. {commits} one-second commits of 100 rows (same writer, same dataset)");
    println!("first commit after the CLI's commits (re-reads the chain and the states): {:.0} ms", p + c);
    let mut times = Vec::with_capacity(commits);
    let started = Instant::now();
    for _ in 0..commits {
        let (p, c) = commit(&mut writer, &mut feed)?;
        times.push(p + c);
    }
    let n = 100.min(commits);
    let (first, last) = (&times[..n], &times[commits - n..]);
    println!("{commits} commits in {:.1} s; all: {}", started.elapsed().as_secs_f64(), summary(&times));
    println!("  first {n}: p50 {:6.2}  p99 {:6.2} ms", pct(first, 50.0), pct(first, 99.0));
    println!("  last {n}:  p50 {:6.2}  p99 {:6.2} ms", pct(last, 50.0), pct(last, 99.0));
    println!("  last/first p50: {:.2} (flat = ~1)", pct(last, 50.0) / pct(first, 50.0));
    let slow = times.iter().enumerate().filter(|(_, t)| **t > 100.0);
    let slow: Vec<String> = slow.map(|(i, t)| format!("#{i} {t:.0} ms")).collect();
    println!("  commits over 100 ms: {} [{}]", slow.len(), slow[..slow.len().min(12)].join(", "));
    println!("RSS after the run: {}   (target <= 150 MB); dataset {:.0} MiB on disk", rss(), du_mib(&ds));
    Ok(())
}
