//! The bench's table as text: a line per scenario, the gateway's figures beside the peer's,
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
            "{:<20} {:>7} | {:>9} {:>7} {:>7} {:>7} | {:<11} {:>9} {:>7} {:>7} {:>7} | {:>5}",
            "load",
            "devices",
            "gw rows/s",
            "p50 ms",
            "p99 ms",
            "RSS MiB",
            "peer",
            "rows/s",
            "p50 ms",
            "p99 ms",
            "RSS MiB",
            "ratio"
        )?;
        let rss = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.1}"));
        for row in &self.rows {
            let g = &row.gateway;
            write!(
                f,
                "{:<20} {:>7} | {:>9.0} {:>7.2} {:>7.2} {:>7} | {:<11} ",
                row.protocol.load(),
                row.devices,
                g.rows_per_s,
                g.ack_p50_ms,
                g.ack_p99_ms,
                rss(g.peak_rss_mib),
                row.peer_name
            )?;
            match &row.peer {
                Some(p) => writeln!(
                    f,
                    "{:>9.0} {:>7.2} {:>7.2} {:>7} | {:>5}",
                    p.rows_per_s,
                    p.ack_p50_ms,
                    p.ack_p99_ms,
                    rss(p.peak_rss_mib),
                    row.ratio.map_or("-".to_owned(), |r| format!("{r:.2}"))
                )?,
                None => writeln!(f, "{:>9} {:>7} {:>7} {:>7} | {:>5}", "-", "-", "-", "-", "-")?,
            }
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
