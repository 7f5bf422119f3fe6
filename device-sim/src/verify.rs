//! `device-sim verify`: every report a run had acknowledged must be in the dataset exactly
//! once. The dataset is read through the gateway's SQL API (`POST /query`) or, with the
//! gateway stopped, from its data directory with `odf-gateway sql`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, header};
use serde::Serialize;

use crate::record::RunRecord;

/// Where the dataset is read.
pub enum Reader {
    Http { host: String, port: u16, token: Option<String> },
    DataDir { dir: PathBuf, gateway: PathBuf },
}

#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub devices: usize,
    /// Acknowledged reports checked.
    pub acked: u64,
    pub missing: u64,
    pub duplicated: u64,
    /// Sent, never acknowledged, and in the dataset all the same (an answer was lost).
    pub unacked_committed: u64,
    /// Per source: acknowledged reports, and those found.
    pub sources: BTreeMap<String, SourceVerdict>,
    /// A few of the missing and duplicated (device, seq), to look at.
    pub missing_examples: Vec<(String, u64)>,
    pub duplicated_examples: Vec<(String, u64, u64)>,
}

#[derive(Debug, Default, Serialize)]
pub struct SourceVerdict {
    pub acked: u64,
    pub found: u64,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicated == 0
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} devices, {} acknowledged reports checked", self.devices, self.acked)?;
        for (source, s) in &self.sources {
            writeln!(f, "  {source}: {} acknowledged, {} found", s.acked, s.found)?;
        }
        writeln!(f, "missing: {}", self.missing)?;
        writeln!(f, "duplicated: {}", self.duplicated)?;
        writeln!(
            f,
            "sent without an acknowledgement and committed all the same: {}",
            self.unacked_committed
        )?;
        for (device, seq) in &self.missing_examples {
            writeln!(f, "  missing {device} #{seq}")?;
        }
        for (device, seq, n) in &self.duplicated_examples {
            writeln!(f, "  {device} #{seq} is there {n} times")?;
        }
        Ok(())
    }
}

/// Rows (device, seq) asked for at once: an answer stays well under the API's row limit.
const ROWS_PER_QUERY: u64 = 200_000;
const DEVICES_PER_QUERY: usize = 500;

/// Checks the record against the dataset. An acknowledged report is on disk but may wait up
/// to the gateway's flush interval for its commit: while reports are missing, the check is
/// repeated for up to `wait`.
pub async fn verify(record: &RunRecord, reader: &Reader, wait: Duration) -> anyhow::Result<Verdict> {
    let until = Instant::now() + wait;
    loop {
        let verdict = check(record, reader).await?;
        if verdict.missing == 0 || Instant::now() >= until {
            return Ok(verdict);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn check(record: &RunRecord, reader: &Reader) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict { devices: record.devices.len(), ..Verdict::default() };
    let devices: Vec<_> = record.devices.iter().collect();
    let mut chunk = Vec::new();
    let mut rows = 0;
    for (i, (id, device)) in devices.iter().enumerate() {
        chunk.push((*id, *device));
        rows += device.next_seq.saturating_sub(device.first_seq);
        let last = i + 1 == devices.len();
        if last || rows >= ROWS_PER_QUERY || chunk.len() >= DEVICES_PER_QUERY {
            let ids: Vec<String> =
                chunk.iter().map(|(id, _)| format!("'{}'", id.replace('\'', "''"))).collect();
            let from = chunk.iter().map(|(_, d)| d.first_seq).min().unwrap_or(0);
            let to = chunk.iter().map(|(_, d)| d.next_seq).max().unwrap_or(0);
            let query = format!(
                "SELECT device_id, seq, count(*) AS n FROM \"{}\" WHERE device_id IN ({}) AND seq >= {from} AND seq < {to} \
                 GROUP BY device_id, seq",
                record.dataset.replace('"', "\"\""),
                ids.join(", ")
            );
            let counts = counts(&run_query(reader, &query).await?)?;
            for (id, device) in &chunk {
                let source = verdict.sources.entry(device.source.clone()).or_default();
                source.acked += device.acked.len() as u64;
                verdict.acked += device.acked.len() as u64;
                for seq in device.acked.iter() {
                    match counts.get(&(id.to_string(), seq)) {
                        None => {
                            verdict.missing += 1;
                            if verdict.missing_examples.len() < 10 {
                                verdict.missing_examples.push((id.to_string(), seq));
                            }
                        }
                        Some(_) => source.found += 1,
                    }
                }
                for seq in device.unacked.iter() {
                    if counts.contains_key(&(id.to_string(), seq)) {
                        verdict.unacked_committed += 1;
                    }
                }
            }
            for ((id, seq), n) in &counts {
                let ours = record.devices.get(id).is_some_and(|d| *seq >= d.first_seq && *seq < d.next_seq);
                if ours && *n > 1 {
                    verdict.duplicated += 1;
                    if verdict.duplicated_examples.len() < 10 {
                        verdict.duplicated_examples.push((id.clone(), *seq, *n));
                    }
                }
            }
            chunk.clear();
            rows = 0;
        }
    }
    Ok(verdict)
}

/// `device_id,seq,n` lines (with a header) as counts by (device, seq).
fn counts(csv: &str) -> anyhow::Result<HashMap<(String, u64), u64>> {
    let mut counts = HashMap::new();
    for line in csv.lines().skip(1).filter(|l| !l.is_empty()) {
        // Device ids are the simulator's own (letters, digits, dashes): no quoting.
        let mut fields = line.rsplitn(3, ',');
        let (Some(n), Some(seq), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            bail!("an answer line is not device_id,seq,n: {line}");
        };
        counts.insert((id.trim_matches('"').to_owned(), seq.parse()?), n.parse()?);
    }
    Ok(counts)
}

pub(crate) async fn run_query(reader: &Reader, query: &str) -> anyhow::Result<String> {
    match reader {
        Reader::Http { host, port, token } => {
            let address = format!("{host}:{port}");
            let mut sender = crate::send::connect_http(&address)
                .await
                .map_err(|e| anyhow::anyhow!("the gateway's HTTP API: {e}"))?;
            let mut request = Request::post("/query?format=csv")
                .header(header::HOST, &address)
                .header(header::CONTENT_TYPE, "text/plain");
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let response =
                sender.send_request(request.body(Full::new(Bytes::from(query.to_owned())))?).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            let text = String::from_utf8_lossy(&body).into_owned();
            if !status.is_success() {
                bail!("the gateway answered the query with {status}: {}", text.trim());
            }
            Ok(text)
        }
        Reader::DataDir { dir, gateway } => {
            let output = Command::new(gateway)
                .arg("--data-dir")
                .arg(dir)
                .args(["sql", "-o", "csv", query])
                .output()
                .with_context(|| format!("run {}", gateway.display()))?;
            if !output.status.success() {
                bail!("odf-gateway sql failed: {}", String::from_utf8_lossy(&output.stderr).trim());
            }
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_lines_become_counts() {
        let counts = counts("device_id,seq,n\nA-0001,3,1\n356938035600001,4,2\n").unwrap();
        assert_eq!(counts.get(&("A-0001".to_owned(), 3)), Some(&1));
        assert_eq!(counts.get(&("356938035600001".to_owned(), 4)), Some(&2));
        assert!(super::counts("device_id,seq,n\nbroken\n").is_err());
    }
}
