//! SenML benchmark: how checking a SenML JSON pack (the work a CoAP or HTTP push does before
//! its acknowledgement) grows with the pack, next to CSV of the same reports. Packs of 40k,
//! 80k and 160k records (a tracker's report is three records: lat, lon, speed, under a base
//! time of its own, as `device-sim --senml` sends them). Prints the time of the fastest of
//! three runs per size and the ratio to the size before it: about 2 for linear work, 4 for
//! quadratic.
//!
//!     cargo run --example senml_bench [-- --runs 5]

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use odf_gateway::ingest::{InputFormat, SourceCheck};
use odf_gateway::odf::{MetadataEvent, parse_snapshots};

const MANIFEST: &str = r#"
kind: DatasetSnapshot
version: 1
content:
  name: trackers
  kind: Root
  metadata:
    - kind: AddPushSource
      sourceName: senml
      read:
        kind: NdJson
        schema: ["bn STRING", "t TIMESTAMP", "lat DOUBLE", "lon DOUBLE", "speed DOUBLE"]
      merge:
        kind: Append
"#;

/// `records` SenML records (a third of them reports), seven devices taking turns.
fn senml_pack(records: usize) -> Vec<u8> {
    let mut pack = String::from("[");
    for i in 0..records / 3 {
        pack.push_str(&format!(
            r#"{{"bn":"urn:dev:{}/","bt":{},"n":"lat","v":49.{i}}},{{"n":"lon","v":-123.{i}}},{{"n":"speed","v":{}}},"#,
            i % 7,
            1_767_268_800 + i,
            i % 90
        ));
    }
    pack.pop();
    pack.push(']');
    pack.into_bytes()
}

/// The same reports as CSV rows.
fn csv_rows(records: usize) -> Vec<u8> {
    let mut csv = String::from("bn,t,lat,lon,speed\n");
    for i in 0..records / 3 {
        csv.push_str(&format!(
            "urn:dev:{}/,{},49.{i},-123.{i},{}\n",
            i % 7,
            1_767_268_800_000u64 + i as u64 * 1000,
            i % 90
        ));
    }
    csv.into_bytes()
}

fn fastest(
    runs: usize,
    check: &SourceCheck,
    payload: &[u8],
    format: InputFormat,
) -> anyhow::Result<Duration> {
    let payload = bytes::Bytes::copy_from_slice(payload);
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let started = Instant::now();
        let outcome = check.check(&payload, Some(format), &[], &[], "bench");
        best = best.min(started.elapsed());
        if outcome.rejected_count > 0 {
            bail!("{format} payload rejected: {:?}", outcome.rejected.first());
        }
    }
    Ok(best)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs = match args.iter().position(|a| a == "--runs") {
        Some(i) => args.get(i + 1).context("--runs needs a number")?.parse()?,
        None => 3,
    };
    let snapshot = parse_snapshots(MANIFEST, "senml_bench.yaml")?.remove(0);
    let Some(MetadataEvent::AddPushSource(source)) = snapshot.metadata.first() else {
        bail!("the manifest has no push source");
    };
    let check = SourceCheck::new(source)?;
    println!("{:>8}  {:>12}  {:>6}  {:>12}  {:>6}", "records", "senml json", "ratio", "csv", "ratio");
    let mut before: Option<(Duration, Duration)> = None;
    for records in [40_000, 80_000, 160_000] {
        let senml = fastest(runs, &check, &senml_pack(records), InputFormat::SenmlJson)?;
        let csv = fastest(runs, &check, &csv_rows(records), InputFormat::Csv)?;
        let ratio = |now: Duration, then: Option<Duration>| match then {
            Some(then) => format!("{:.2}", now.as_secs_f64() / then.as_secs_f64()),
            None => "-".into(),
        };
        println!(
            "{records:>8}  {:>10.1}ms  {:>6}  {:>10.1}ms  {:>6}",
            senml.as_secs_f64() * 1000.0,
            ratio(senml, before.map(|b| b.0)),
            csv.as_secs_f64() * 1000.0,
            ratio(csv, before.map(|b| b.1)),
        );
        before = Some((senml, csv));
    }
    Ok(())
}
