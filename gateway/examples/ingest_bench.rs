//! Ingest benchmark: 1,000,000 GPS records of NdJson from a file, three ways, each in its own
//! process so peak memory is its own:
//!
//! - reference: the same bytes decoded with arrow-json and written to Parquet (zstd), no ODF;
//! - append: `DatasetWriter` into a dataset with an Append merge, streaming the file a chunk
//!   at a time as the CLI does (read, coerce, slice, hashes, commit);
//! - ledger: the same with a Ledger merge on (device_id, seq);
//! - pyarrow, where `python3` has it: `pyarrow.json.read_json` and `pyarrow.parquet` (zstd),
//!   timed inside Python (its start and imports left out; its peak includes them), parsing
//!   on every core (`pyarrow`) and on one thread (`pyarrow-1t`, as the engine parses);
//! - kamu, where a `kamu` binary is on the PATH: `kamu ingest` of the same file into the same
//!   manifest (Ledger) in a fresh workspace, the process timed whole.
//!
//! Each is run three times and the fastest run counts (the machine is shared). Prints rows/s,
//! MB/s, peak memory, and the ratios the project tracks (append vs reference and vs pyarrow,
//! ledger cost on top of append, ledger vs kamu).
//!
//!     cargo run --release --example ingest_bench [-- --rows N]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::Utc;
use odf_gateway::ingest::{DatasetWriter, IngestOptions, IngestRequest, MessageStream, WriterOptions};
use odf_gateway::odf::parse_snapshots;
use odf_gateway::store::DataDir;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

#[path = "support/gps_records.rs"]
mod gps_records;

const MANIFEST: &str = include_str!("../tests/fixtures/gps-bench.yaml");
const LEDGER: &str = "kind: Ledger\n        primaryKey: [device_id, seq]";

/// Deterministic tracks (see `support/gps_records.rs`).
fn generate(path: &Path, rows: usize) -> anyhow::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    gps_records::write_records(&mut out, 0, rows)?;
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

fn reference(input: &Path, out_dir: &Path) -> anyhow::Result<usize> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("t", ts, false),
        Field::new("lat", DataType::Float64, false),
        Field::new("long", DataType::Float64, false),
        Field::new("speed", DataType::Float64, true),
        Field::new("heading", DataType::Float64, true),
        Field::new("battery", DataType::Float64, true),
    ]));
    let bytes = std::fs::read(input)?;
    let reader =
        arrow::json::ReaderBuilder::new(schema.clone()).with_batch_size(1 << 16).build(bytes.as_slice())?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    let batch = arrow::compute::concat_batches(&schema, &batches)?;
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(out_dir.join("reference.parquet"))?, schema, Some(props))?;
    writer.write(&batch)?;
    writer.into_inner()?.sync_all()?;
    Ok(batch.num_rows())
}

fn odf(input: &Path, out_dir: &Path, merge: &str) -> anyhow::Result<usize> {
    let manifest =
        if merge == "ledger" { MANIFEST.to_owned() } else { MANIFEST.replace(LEDGER, "kind: Append") };
    ensure!(
        manifest.contains(LEDGER) == (merge == "ledger"),
        "the bench manifest does not have the expected merge"
    );
    let snapshot = parse_snapshots(&manifest, "bench")?.remove(0);
    let data_dir = DataDir::create(&out_dir.join("odf"))?;
    let dataset = data_dir.create_dataset(&snapshot, Utc::now())?;
    // Streamed from the file, as the CLI reads it.
    let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(input)?);
    let stream = MessageStream::new(file, "bench");
    let options = IngestOptions { system_time: Utc::now(), skip_bad_records: false };
    let mut writer = DatasetWriter::open(dataset, WriterOptions::default())?;
    let prepared = writer.prepare_streams(IngestRequest::default(), [Ok(stream)], &options)?;
    let outcome = prepared.commit()?;
    let committed = outcome.committed.context("nothing was committed")?;
    Ok(committed.records as usize)
}

/// pyarrow's NdJson to Parquet, with the schema given (as the reference has it).
const PYARROW: &str = r#"
import os, resource, sys, time
import pyarrow as pa, pyarrow.json as pj, pyarrow.parquet as pq
schema = pa.schema([("device_id", pa.string()), ("seq", pa.int64()),
    ("t", pa.timestamp("ms", tz="UTC")), ("lat", pa.float64()), ("long", pa.float64()),
    ("speed", pa.float64()), ("heading", pa.float64()), ("battery", pa.float64())])
started = time.perf_counter()
threads = sys.argv[3] == "threads"
table = pj.read_json(sys.argv[1], read_options=pj.ReadOptions(use_threads=threads),
    parse_options=pj.ParseOptions(explicit_schema=schema))
pq.write_table(table, sys.argv[2], compression="zstd")
with open(sys.argv[2], "rb") as f:
    os.fsync(f.fileno())
seconds = time.perf_counter() - started
print(table.num_rows, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"#;

/// A peer's run: rows, seconds, peak MiB; `Ok(None)` when the peer is not on this machine.
fn peer(name: &str, input: &Path, rows: usize) -> anyhow::Result<Option<(usize, f64, f64)>> {
    let out_dir = tempfile::tempdir()?;
    match name {
        "pyarrow" | "pyarrow-1t" => {
            let probe = Command::new("python3").args(["-c", "import pyarrow"]).output();
            if !probe.is_ok_and(|o| o.status.success()) {
                return Ok(None);
            }
            let output = Command::new("python3")
                .args(["-c", PYARROW])
                .arg(input)
                .arg(out_dir.path().join("pyarrow.parquet"))
                .arg(if name == "pyarrow" { "threads" } else { "one-thread" })
                .output()?;
            if !output.status.success() {
                bail!("pyarrow: {}", String::from_utf8_lossy(&output.stderr));
            }
            let text = String::from_utf8(output.stdout)?;
            let fields: Vec<f64> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
            match fields.as_slice() {
                [rows, seconds, peak] => Ok(Some((*rows as usize, *seconds, *peak))),
                _ => bail!("pyarrow: unexpected output {text}"),
            }
        }
        "kamu" => {
            if Command::new("kamu").arg("--version").output().is_err() {
                return Ok(None);
            }
            let workspace = out_dir.path();
            let kamu = |args: &[&str]| -> anyhow::Result<(f64, f64)> {
                let started = Instant::now();
                let child = Command::new("kamu").current_dir(workspace).args(args).spawn()?;
                let (status, peak) = wait_with_peak(child)?;
                ensure!(status == 0, "kamu {} exited with {status}", args.join(" "));
                Ok((started.elapsed().as_secs_f64(), peak))
            };
            kamu(&["init"])?;
            std::fs::write(workspace.join("gps.yaml"), MANIFEST)?;
            kamu(&["add", "gps.yaml"])?;
            let input = input.to_str().context("the input path is not UTF-8")?;
            let (seconds, peak) = kamu(&["ingest", "gps", input])?;
            // kamu's own count is not read back: this path has not run on the development
            // machine (no kamu there), so its rows are taken as the input's.
            Ok(Some((rows, seconds, peak)))
        }
        other => bail!("unknown peer {other}"),
    }
}

/// Waits for a child and returns its exit code and peak resident memory in MiB (from the
/// kernel's accounting of the child, as `time -v` reads it).
fn wait_with_peak(child: std::process::Child) -> anyhow::Result<(i32, f64)> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 on our own child, with pointers to locals that outlive the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    ensure!(reaped == pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    Ok((code, usage.ru_maxrss as f64 / 1024.0))
}

/// Peak resident memory of this process, in MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// In a child: runs one phase and prints "rows seconds peak_mib".
fn phase(name: &str, input: &Path) -> anyhow::Result<()> {
    let out_dir = tempfile::tempdir()?;
    let started = Instant::now();
    let rows = match name {
        "reference" => reference(input, out_dir.path())?,
        "append" | "ledger" => odf(input, out_dir.path(), name)?,
        other => bail!("unknown phase {other}"),
    };
    println!("{rows} {} {}", started.elapsed().as_secs_f64(), peak_mib());
    Ok(())
}

fn run_phase(name: &str, input: &Path) -> anyhow::Result<(usize, f64, f64)> {
    let output = Command::new(std::env::current_exe()?).args(["--phase", name]).arg(input).output()?;
    if !output.status.success() {
        bail!("{name}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let text = String::from_utf8(output.stdout)?;
    let fields: Vec<f64> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    match fields.as_slice() {
        [rows, seconds, peak] => Ok((*rows as usize, *seconds, *peak)),
        _ => bail!("{name}: unexpected output {text}"),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, name, input] = args.as_slice() {
        if flag == "--phase" {
            return phase(name, &PathBuf::from(input));
        }
    }
    let rows = match args.as_slice() {
        [_, flag, n] if flag == "--rows" => n.parse()?,
        _ => 1_000_000,
    };
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("gps.ndjson");
    let bytes = generate(&input, rows)?;
    let mb = bytes as f64 / 1e6;
    println!("input: {rows} GPS records, {mb:.1} MB of NdJson");
    println!("{:<10} {:>10} {:>12} {:>10} {:>10}", "run", "seconds", "rows/s", "MB/s", "peak MiB");
    let mut results = std::collections::HashMap::new();
    for name in ["reference", "append", "ledger", "pyarrow", "pyarrow-1t", "kamu"] {
        // The best of three runs: this machine is shared, and slower runs measure the others.
        let mut best = (f64::MAX, 0.0);
        for _ in 0..3 {
            let run = match name {
                "pyarrow" | "pyarrow-1t" | "kamu" => peer(name, &input, rows)?,
                name => Some(run_phase(name, &input)?),
            };
            let Some((done, seconds, peak)) = run else { break };
            if done != rows {
                bail!("{name} wrote {done} rows, expected {rows}");
            }
            if seconds < best.0 {
                best = (seconds, peak);
            }
        }
        let (seconds, peak) = best;
        if seconds == f64::MAX {
            println!("{name:<10} {:>10}", "(not on this machine)");
            continue;
        }
        println!(
            "{name:<10} {seconds:>10.2} {:>12.0} {:>10.1} {peak:>10.0}",
            rows as f64 / seconds,
            mb / seconds
        );
        results.insert(name, seconds);
    }
    let (reference, append, ledger) = (results["reference"], results["append"], results["ledger"]);
    println!("append throughput / reference: {:.2} (target >= 0.70)", reference / append);
    for (name, threads) in [("pyarrow", "parsing on every core"), ("pyarrow-1t", "one thread")] {
        if let Some(pyarrow) = results.get(name) {
            println!("append throughput / pyarrow ({threads}): {:.2}", pyarrow / append);
        }
    }
    println!("ledger cost on top of append: {:+.0}% (target < 25%)", (ledger / append - 1.0) * 100.0);
    if let Some(kamu) = results.get("kamu") {
        println!("ledger throughput / kamu's ingest (Ledger): {:.2} (target >= 1.2)", kamu / ledger);
    }
    Ok(())
}
