//! Ledger index benchmark: keys of (device_id Utf8, seq Int64) in Arrow's row format, as a
//! Ledger on a GPS dataset makes them: 1,000 trackers, each batch the next messages in time.
//! Each run is its own process, so its peak memory is its own:
//!
//! - `small`: N keys in merges of 100 records (`find_new` + `commit_pending`), then 10,000
//!   lookups of 100-key batches with mostly new keys (98 new, 2 duplicates of older keys);
//! - `large`: N keys in merges of 100,000 records (a catch-up or a big import).
//!
//! Prints per-batch p50/p99/max latency, keys/s, the size on disk and the process's memory
//! (VmRSS now, VmHWM peak). Figures only, no assertions.
//!
//!     cargo run --release --example ledger_index_bench [-- --keys N] [--dir PATH]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, Rows, SortField};

use odf_gateway::ingest::{IndexConfig, LedgerIndex};

const DEVICES: u64 = 1_000;
const FINGERPRINT: &str = "ledger:device_id,seq|Utf8,Int64";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let keys: u64 = arg("--keys").map(|k| k.parse()).transpose().context("--keys N")?.unwrap_or(10_000_000);
    let dir = arg("--dir").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    if let Some(phase) = arg("--phase") {
        let dir = tempfile::tempdir_in(&dir)?;
        return match phase.as_str() {
            "small" => small(dir.path(), keys),
            "large" => large(dir.path(), keys),
            other => bail!("unknown phase {other}"),
        };
    }
    let config = IndexConfig::default();
    println!(
        "ledger index: {keys} keys of (device_id, seq), {DEVICES} devices; store cache {} MiB, \
         memtable {} MiB, recent keys {} MiB, {} worker thread(s), no fsync per commit",
        config.store_cache_bytes >> 20,
        config.memtable_bytes >> 20,
        config.recent_keys_bytes >> 20,
        config.worker_threads
    );
    for phase in ["small", "large"] {
        let exe = std::env::current_exe()?;
        let status = Command::new(exe)
            .args(["--phase", phase, "--keys", &keys.to_string(), "--dir"])
            .arg(&dir)
            .status()?;
        if !status.success() {
            bail!("phase {phase} failed: {status}");
        }
    }
    Ok(())
}

/// Keys `from..from + n` in time order: key i is device i % DEVICES, message i / DEVICES.
struct Keys {
    converter: RowConverter,
}

impl Keys {
    fn new() -> anyhow::Result<Keys> {
        Ok(Keys {
            converter: RowConverter::new(vec![
                SortField::new(DataType::Utf8),
                SortField::new(DataType::Int64),
            ])?,
        })
    }

    fn rows(&self, ids: impl Iterator<Item = u64> + Clone) -> anyhow::Result<Rows> {
        let devices =
            StringArray::from_iter_values(ids.clone().map(|i| format!("tracker-{:05}", i % DEVICES)));
        let seqs = Int64Array::from_iter_values(ids.map(|i| (i / DEVICES) as i64));
        let columns: Vec<ArrayRef> = vec![Arc::new(devices), Arc::new(seqs)];
        Ok(self.converter.convert_columns(&columns)?)
    }
}

/// Merges of `batch` keys each: find_new, then commit_pending. Returns each merge's time.
fn insert(index: &mut LedgerIndex, keys: &Keys, total: u64, batch: u64) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity((total / batch) as usize + 1);
    let mut next = 0;
    let started = Instant::now();
    while next < total {
        let end = (next + batch).min(total);
        let rows = keys.rows(next..end)?;
        let t = Instant::now();
        let new = index.find_new(rows.iter())?;
        index.commit_pending(end - 1)?;
        times.push(t.elapsed());
        if new.iter().any(|n| !n) {
            bail!("a new key was taken for a duplicate");
        }
        next = end;
        if next % (total / 10).max(1) < batch {
            eprintln!(
                "  {next} keys, {:.0} s, VmRSS {} MiB, {:?}",
                started.elapsed().as_secs_f64(),
                status("VmRSS")? >> 10,
                index.stats()
            );
        }
    }
    Ok(times)
}

fn small(dir: &Path, total: u64) -> anyhow::Result<()> {
    let keys = Keys::new()?;
    let mut index = LedgerIndex::open(dir, FINGERPRINT)?;
    let t = Instant::now();
    let times = insert(&mut index, &keys, total, 100)?;
    report(&format!("insert {total} keys, merges of 100"), &times, total, t.elapsed(), &index)?;

    // Lookups: 98 new keys (the next messages) and 2 duplicates of keys spread over the
    // history (a replay), so they are found in the store rather than the recent keys.
    let batches = 10_000u64;
    let mut lookups = Vec::with_capacity(batches as usize);
    let mut commits = Vec::with_capacity(batches as usize);
    let mut next = total;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let t = Instant::now();
    for _ in 0..batches {
        let mut ids: Vec<u64> = (next..next + 98).collect();
        for _ in 0..2 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ids.push(state % total);
        }
        let rows = keys.rows(ids.iter().copied())?;
        let t = Instant::now();
        let new = index.find_new(rows.iter())?;
        lookups.push(t.elapsed());
        if new.iter().filter(|n| **n).count() != 98 {
            bail!("expected 98 new keys in a lookup batch");
        }
        let t = Instant::now();
        index.commit_pending(next + 97)?;
        commits.push(t.elapsed());
        next += 98;
    }
    let elapsed = t.elapsed();
    report("lookups of 100 keys (98 new, 2 old), find_new only", &lookups, batches * 100, elapsed, &index)?;
    report("  the same batches' commit_pending", &commits, batches * 98, elapsed, &index)?;
    Ok(())
}

fn large(dir: &Path, total: u64) -> anyhow::Result<()> {
    let keys = Keys::new()?;
    let mut index = LedgerIndex::open(dir, FINGERPRINT)?;
    let t = Instant::now();
    let times = insert(&mut index, &keys, total, 100_000)?;
    report(&format!("insert {total} keys, merges of 100,000"), &times, total, t.elapsed(), &index)
}

fn report(
    what: &str,
    times: &[Duration],
    keys: u64,
    elapsed: Duration,
    index: &LedgerIndex,
) -> anyhow::Result<()> {
    let mut sorted = times.to_vec();
    sorted.sort();
    let at = |q: f64| sorted.get(((sorted.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("{what}:");
    println!(
        "  per batch p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms; {:.0} keys/s overall ({:.1} s)",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
        keys as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  on disk {:.1} MiB ({} keys, about); VmRSS {} MiB, VmHWM {} MiB",
        index.disk_bytes()? as f64 / 1048576.0,
        index.approximate_len(),
        status("VmRSS")? >> 10,
        status("VmHWM")? >> 10
    );
    Ok(())
}

/// A figure of /proc/self/status, in KiB.
fn status(field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    let line = text.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
    let kib = line.split_whitespace().nth(1).with_context(|| format!("{field}: no figure"))?;
    Ok(kib.parse()?)
}
