//! The bench's table as text: a line per scenario, the gateway's figures beside the peer's
//! (rows/s, ack latency, peak RSS, CPU µs per row), the ratio of rows/s and of CPU per row,
//! and below it what the figures do not show.

use super::Report;

/// "2 cores, AMD EPYC 7B13, 23.5 GiB", as far as this machine tells.
pub(super) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            Some(s.lines().find(|l| l.starts_with("model name"))?.split_once(':')?.1.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(String::new(), |kib| format!(", {:.1} GiB", kib / 1024.0 / 1024.0));
    format!("{cores} cores, {cpu}{memory}, {}", std::env::consts::OS)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:.0} s per run, one message (one report) in flight per device; machine: {}",
            self.seconds_per_run, self.machine
        )?;
        writeln!(
            f,
            "{:<20} {:>7} | {:>9} {:>7} {:>7} {:>7} {:>6} | {:<11} {:>9} {:>7} {:>7} {:>7} {:>6} | {:>5} {:>6}",
            "load",
            "devices",
            "gw rows/s",
            "p50 ms",
            "p99 ms",
            "RSS MiB",
            "µs/row",
            "peer",
            "rows/s",
            "p50 ms",
            "p99 ms",
            "RSS MiB",
            "µs/row",
            "ratio",
            "CPU ×"
        )?;
        let rss = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.1}"));
        let cpu = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:.1}"));
        for row in &self.rows {
            let g = &row.gateway;
            write!(
                f,
                "{:<20} {:>7} | {:>9.0} {:>7.2} {:>7.2} {:>7} {:>6} | {:<11} ",
                row.protocol.load(),
                row.devices,
                g.rows_per_s,
                g.ack_p50_ms,
                g.ack_p99_ms,
                rss(g.peak_rss_mib),
                cpu(g.cpu_us_per_row),
                row.peer_name
            )?;
            match &row.peer {
                Some(p) => {
                    let cpu_ratio = g.cpu_us_per_row.zip(p.cpu_us_per_row.filter(|c| *c > 0.0));
                    writeln!(
                        f,
                        "{:>9.0} {:>7.2} {:>7.2} {:>7} {:>6} | {:>5} {:>6}",
                        p.rows_per_s,
                        p.ack_p50_ms,
                        p.ack_p99_ms,
                        rss(p.peak_rss_mib),
                        cpu(p.cpu_us_per_row),
                        row.ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
                        cpu_ratio.map_or("-".to_owned(), |(g, p)| format!("{:.1}", g / p)),
                    )?
                }
                None => writeln!(
                    f,
                    "{:>9} {:>7} {:>7} {:>7} {:>6} | {:>5} {:>6}",
                    "-", "-", "-", "-", "-", "-", "-"
                )?,
            }
        }
        // One device waits for every ack, so its bound is the log's fsync plus a round trip.
        for row in self.rows.iter().filter(|r| r.devices == 1) {
            let (Some(sync), Some(peer)) = (row.gateway.wal_sync_ms, &row.peer) else { continue };
            let bound = 1000.0 / (sync + peer.ack_p50_ms).max(1e-6);
            writeln!(
                f,
                "{}: one message in flight waits for the log's write and fsync ({sync:.2} ms, mean) and a \
                 round trip ({:.2} ms, the peer's p50): at most {bound:.0} rows/s; the gateway made {:.2} of it",
                row.scenario,
                peer.ack_p50_ms,
                row.gateway.rows_per_s / bound
            )?;
        }
        // What the figures do not show: lost answers, refusals, reports not found.
        for row in &self.rows {
            let peer = row.peer.as_ref().ok_or(row.peer_error.as_deref().unwrap_or("no figures"));
            for (name, side) in [("odf-gateway", Ok(&row.gateway)), (row.peer_name, peer)] {
                match side {
                    Ok(s) if s.busy + s.failed + s.refused > 0 || s.rows < s.acked => writeln!(
                        f,
                        "{} {name}: {} busy, {} failed, {} refused; {} of {} acknowledged reports counted",
                        row.scenario, s.busy, s.failed, s.refused, s.rows, s.acked
                    )?,
                    Ok(_) => {}
                    Err(e) => writeln!(f, "{} {name}: {e}", row.scenario)?,
                }
            }
        }
        Ok(())
    }
}
