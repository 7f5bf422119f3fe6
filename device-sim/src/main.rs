//! `device-sim`: simulated GPS trackers for odf-gateway.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use device_sim::bench;
use device_sim::gps::{Fleet, Vendor, encode};
use device_sim::movement::Area;
use device_sim::record::{self, RunRecord};
use device_sim::runner::{self, Pace, Plan};
use device_sim::send::{MqttTls, Target};
use device_sim::verify::{self, Reader};

/// Simulated GPS trackers that produce realistic telemetry for odf-gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trackers in real time, as in the field: each vendor at its own period, going offline
    /// and sending its backlog when back, sometimes sending twice or a malformed payload.
    /// Prints a live status and a summary; Ctrl-C ends it.
    Run {
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        target: TargetArgs,
        /// Replaces each vendor's reporting period (A 5s, B 10s, C 15s); the jitter stays.
        #[arg(long, value_parser = humantime::parse_duration)]
        period: Option<Duration>,
        /// Chance per report that a tracker goes out of coverage (for 5 to 30 periods).
        #[arg(long, default_value_t = 0.01)]
        offline: f64,
        /// Share of messages with a malformed payload sent beside them.
        #[arg(long, default_value_t = 0.01)]
        malformed: f64,
        /// Share of acknowledged messages a tracker sends again.
        #[arg(long, default_value_t = 0.02)]
        duplicates: f64,
    },
    /// Load: trackers reporting as fast as their answers come (or at --rate), one message in
    /// flight each; prints counts and ack latency percentiles.
    Load {
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        target: TargetArgs,
        /// Reports per second, all devices together (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Share of messages with a malformed payload sent beside them.
        #[arg(long, default_value_t = 0.0)]
        malformed: f64,
        /// Share of acknowledged messages a tracker sends again.
        #[arg(long, default_value_t = 0.0)]
        duplicates: f64,
    },
    /// Checks that every report the last run had acknowledged is in the dataset exactly once;
    /// exits 1 if any is missing or duplicated.
    Verify {
        /// The run record to check.
        #[arg(long, default_value_os_t = record::default_path())]
        record: PathBuf,
        /// Read the dataset from this data directory (with `odf-gateway sql`) instead of the
        /// gateway's HTTP API.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The odf-gateway binary for --data-dir (default: next to this one, else on the PATH).
        #[arg(long)]
        gateway_bin: Option<PathBuf>,
        /// The gateway's host and HTTP port (default: those of the run).
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        http_port: Option<u16>,
        /// Bearer token for the query API.
        #[arg(long, env = "DEVICE_SIM_TOKEN")]
        token: Option<String>,
        /// How long to wait for acknowledged reports to be committed (the gateway commits
        /// at most every flush interval, 1 s by default).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        wait: Duration,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The benchmark report: the same load against odf-gateway and against a plain peer of
    /// each protocol on this machine (mosquitto, an HTTP server that only reads, libcoap's
    /// coap-server), each on a fresh process; prints one table of rows/s, ack latencies,
    /// peak RSS and ratios.
    Bench {
        /// How long each run lasts.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        duration: Duration,
        /// Only these scenarios (mqtt-1, mqtt-100, mqtt-1000, http-1, http-64, coap-1,
        /// coap-64); all by default.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The odf-gateway binary (default: next to this one, else on the PATH); build it
        /// with --release for figures worth comparing.
        #[arg(long)]
        gateway_bin: Option<PathBuf>,
        /// The gateway's `pipeline.wal_sync_interval`. Unpaced by default: each device here
        /// waits for its ack before the next report, and the field's default pacing (50 ms,
        /// for SD cards) would hold each to 20 reports a second; give 50ms to measure that.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        wal_sync_interval: Duration,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
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

/// Which trackers, for how long.
#[derive(Args)]
struct FleetArgs {
    /// Trackers, shared out over the vendors in turn.
    #[arg(long, default_value_t = 9)]
    devices: usize,
    /// Vendors to simulate: a (MQTT), b (HTTP), c (CoAP).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "a,b,c")]
    vendors: Vec<Vendor>,
    /// End after this long (e.g. 30s, 5m); `run` goes on until Ctrl-C without it, `load`
    /// runs 10s unless --messages is given.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// End once this many reports (all trackers together) are made and answered.
    #[arg(long)]
    messages: Option<u64>,
    /// Same seed, same trackers and tracks.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the trackers move: the centre, "LAT,LON" (default Vancouver).
    #[arg(long, default_value = "49.28,-123.12")]
    centre: String,
    /// How far from the centre they go, in metres.
    #[arg(long, default_value_t = 8000.0)]
    radius: f64,
    /// Where to keep the record of what was sent and acknowledged.
    #[arg(long, default_value_os_t = record::default_path())]
    record: PathBuf,
    /// Status lines this often when stderr is not a terminal.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    status_every: Duration,
    /// vendorC sends SenML packs in CBOR (Content-Format 112) instead of CBOR maps.
    #[arg(long)]
    senml: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Where to send. The defaults are those of `odf-gateway serve` without a configuration.
#[derive(Args)]
struct TargetArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value = "gps")]
    dataset: String,
    #[arg(long, default_value_t = 1883)]
    mqtt_port: u16,
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    #[arg(long, default_value_t = 5683)]
    coap_port: u16,
    /// vendorA's topic; {dataset}, {source} and {device} are filled in.
    #[arg(long, default_value = "datasets/{dataset}/sources/{source}")]
    mqtt_topic: String,
    /// MQTT QoS of vendorA's publishes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// MQTT over TLS, trusting this CA (PEM).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// A client certificate and its key (PEM) for MQTT over TLS.
    #[arg(long, requires = "ca")]
    cert: Option<PathBuf>,
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// MQTT username and password.
    #[arg(long, env = "DEVICE_SIM_USERNAME")]
    username: Option<String>,
    #[arg(long, env = "DEVICE_SIM_PASSWORD")]
    password: Option<String>,
    /// A bearer token for HTTP and the key for CoAP (`?key=`).
    #[arg(long, env = "DEVICE_SIM_TOKEN")]
    token: Option<String>,
    /// How long a message waits for its answer before it counts as failed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    timeout: Duration,
}

impl TargetArgs {
    fn target(self) -> anyhow::Result<Target> {
        let mqtt_tls = match &self.ca {
            Some(ca) => Some(MqttTls::read(ca, self.cert.as_deref(), self.key.as_deref())?),
            None => None,
        };
        Ok(Target {
            host: self.host,
            dataset: self.dataset,
            mqtt_port: self.mqtt_port,
            http_port: self.http_port,
            coap_port: self.coap_port,
            mqtt_topic: self.mqtt_topic,
            qos: self.qos,
            mqtt_tls,
            username: self.username,
            password: self.password,
            token: self.token,
            timeout: self.timeout,
        })
    }
}

impl FleetArgs {
    fn plan(&self, mode: &'static str, pace: Pace) -> anyhow::Result<Plan> {
        let (lat, lon) = self
            .centre
            .split_once(',')
            .and_then(|(lat, lon)| Some((lat.trim().parse::<f64>().ok()?, lon.trim().parse::<f64>().ok()?)))
            .filter(|(lat, lon)| lat.abs() < 85.0 && lon.abs() <= 180.0)
            .with_context(|| format!("--centre {:?} is not LAT,LON", self.centre))?;
        anyhow::ensure!(self.radius > 0.0, "--radius must be positive");
        let mut vendors = self.vendors.clone();
        vendors.sort();
        vendors.dedup();
        Ok(Plan {
            mode,
            vendors,
            devices: self.devices,
            seed: self.seed,
            area: Area { lat, lon, radius_m: self.radius },
            pace,
            duration: self.duration,
            messages: self.messages,
            period: None,
            malformed: 0.0,
            duplicates: 0.0,
            offline: 0.0,
            senml: self.senml,
            record: self.record.clone(),
            status_every: Some(self.status_every),
        })
    }
}

fn share(name: &str, value: f64) -> anyhow::Result<f64> {
    anyhow::ensure!((0.0..=1.0).contains(&value), "--{name} is a share between 0 and 1, not {value}");
    Ok(value)
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match Cli::parse().command {
        Command::Run { fleet, target, period, offline, malformed, duplicates } => {
            let plan = Plan {
                period,
                offline: share("offline", offline)?,
                malformed: share("malformed", malformed)?,
                duplicates: share("duplicates", duplicates)?,
                ..fleet.plan("run", Pace::RealTime)?
            };
            let summary = runtime.block_on(runner::run(plan, target.target()?))?;
            print_summary(&summary, fleet.json)?;
        }
        Command::Load { fleet, target, rate, malformed, duplicates } => {
            let pace = match rate {
                Some(r) if r > 0.0 => Pace::Rate(r),
                Some(r) => anyhow::bail!("--rate must be positive, not {r}"),
                None => Pace::AsFastAsPossible,
            };
            let mut plan = Plan {
                malformed: share("malformed", malformed)?,
                duplicates: share("duplicates", duplicates)?,
                ..fleet.plan("load", pace)?
            };
            if plan.duration.is_none() && plan.messages.is_none() {
                plan.duration = Some(Duration::from_secs(10));
            }
            let summary = runtime.block_on(runner::run(plan, target.target()?))?;
            print_summary(&summary, fleet.json)?;
        }
        Command::Verify { record, data_dir, gateway_bin, host, http_port, token, wait, json } => {
            let run = RunRecord::load(&record)?;
            let reader = match data_dir {
                Some(dir) => Reader::DataDir { dir, gateway: gateway_bin.unwrap_or_else(gateway_next_to_us) },
                None => Reader::Http {
                    host: host.unwrap_or_else(|| run.host.clone()),
                    port: http_port.unwrap_or(run.http_port),
                    token,
                },
            };
            let verdict = runtime.block_on(verify::verify(&run, &reader, wait))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&verdict)?);
            } else {
                print!("{verdict}");
            }
            std::io::stdout().flush()?;
            if !verdict.ok() {
                std::process::exit(1);
            }
        }
        Command::Bench { duration, only, gateway_bin, wal_sync_interval, json } => {
            let options = bench::Options {
                gateway: gateway_bin.unwrap_or_else(gateway_next_to_us),
                wal_sync_interval,
                duration,
                scenarios: bench::scenarios(&only)?,
            };
            // Ctrl-C ends the whole bench (each run would otherwise take it as its own end);
            // the servers it started are stopped as their guards drop.
            let report = runtime.block_on(async {
                tokio::select! {
                    report = bench::bench(&options) => report,
                    _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
                }
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
        Command::Gps { vendor, devices, reports, interval, start, seed } => {
            let mut fleet = Fleet::new(
                vendor,
                devices,
                seed,
                start.unwrap_or_else(Utc::now),
                chrono::Duration::seconds(interval),
            );
            let all: Vec<_> = (0..reports).flat_map(|_| fleet.tick()).collect();
            std::io::stdout().write_all(&encode(vendor, &all))?;
        }
    }
    Ok(())
}

fn print_summary(summary: &device_sim::stats::Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        print!("{summary}");
    }
    Ok(())
}

/// `odf-gateway` in this binary's folder (as cargo builds them), else the one on the PATH.
fn gateway_next_to_us() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("odf-gateway")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("odf-gateway"))
}
