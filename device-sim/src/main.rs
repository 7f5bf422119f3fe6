//! `device-sim`: simulated devices for odf-gateway.

use std::io::Write;

use chrono::{DateTime, Duration, Utc};
use clap::{Parser, Subcommand};
use device_sim::gps::{Fleet, Vendor, encode};

/// Simulated GPS trackers that produce realistic telemetry for odf-gateway.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write GPS reports in a vendor's payload format to stdout, e.g.
    /// `device-sim gps --vendor a | odf-gateway ingest gps --stdin --source-name vendorA`.
    Gps {
        /// Whose payload format: a (NdJson), b (CSV), c (CBOR).
        #[arg(long, value_enum)]
        vendor: Vendor,
        /// Trackers in the fleet.
        #[arg(long, default_value_t = 10)]
        devices: usize,
        /// Reports per tracker.
        #[arg(long, default_value_t = 6)]
        reports: usize,
        /// Seconds between a tracker's reports.
        #[arg(long, default_value_t = 10)]
        interval: i64,
        /// Time of the first reports (RFC 3339); now by default.
        #[arg(long)]
        start: Option<DateTime<Utc>>,
        /// Same seed, same traffic.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Gps { vendor, devices, reports, interval, start, seed } => {
            let mut fleet = Fleet::new(
                vendor,
                devices,
                seed,
                start.unwrap_or_else(Utc::now),
                Duration::seconds(interval),
            );
            let all: Vec<_> = (0..reports).flat_map(|_| fleet.tick()).collect();
            std::io::stdout().write_all(&encode(vendor, &all))?;
        }
    }
    Ok(())
}
