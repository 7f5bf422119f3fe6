//! The `odf-gateway` command line: clap parses, one file per subcommand calls the library
//! and prints. The only place (with `main`) that uses `anyhow`.

mod add;
mod certs;
mod gc;
mod hash_secret;
mod ingest;
mod list;
mod log;
pub mod log_output;
mod output;
mod pull;
mod push;
mod quarantine;
mod serve;
mod sql;
mod tail;
mod verify;

pub use output::is_closed_pipe;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::store::DataDir;

/// Field gateway that commits device telemetry into Open Data Fabric datasets.
#[derive(Debug, Parser)]
#[command(name = "odf-gateway", version, about, propagate_version = true)]
pub struct Cli {
    /// Where datasets live: one folder per dataset, in the ODF layout [default: odf-data,
    /// or `data_dir` of the serve configuration].
    #[arg(long, global = true, env = "ODF_GATEWAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Use this time (RFC 3339) as the system time of everything written, instead of the
    /// clock; for reproducible tests.
    #[arg(long, global = true, env = "ODF_GATEWAY_SYSTEM_TIME", value_parser = parse_time)]
    pub system_time: Option<DateTime<Utc>>,

    /// Accept a --system-time more than a day ahead of the clock. Blocks never go back in
    /// time, so every later block of the dataset would carry that time too.
    #[arg(long, global = true)]
    pub allow_future_system_time: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Add(add::Args),
    Ingest(ingest::Args),
    List(list::Args),
    Log(log::Args),
    Sql(sql::Args),
    Tail(tail::Args),
    Verify(verify::Args),
    Gc(gc::Args),
    Push(push::Args),
    Pull(pull::Args),
    Serve(serve::Args),
    Quarantine(quarantine::Args),
    HashSecret(hash_secret::Args),
    Certs(certs::Args),
}

impl Command {
    /// Whether the command is a long-running server (it logs at info by default).
    pub fn is_server(&self) -> bool {
        matches!(self, Command::Serve(_))
    }
}

/// Global settings every subcommand may need.
pub struct Context {
    pub data_dir: PathBuf,
    /// The data directory when given by flag or variable (it then wins over a config file).
    pub data_dir_flag: Option<PathBuf>,
    system_time: Option<DateTime<Utc>>,
}

impl Context {
    pub fn data_dir(&self) -> anyhow::Result<DataDir> {
        Ok(DataDir::open(&self.data_dir)?)
    }

    /// Runs async library code (DataFusion) to completion on a runtime made for the command.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> anyhow::Result<F::Output> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(runtime.block_on(future))
    }

    /// The system time given by flag or variable, if any.
    pub fn system_time_flag(&self) -> Option<DateTime<Utc>> {
        self.system_time
    }

    /// The injected system time, or now; milliseconds, as ODF data columns hold.
    pub fn system_time(&self) -> DateTime<Utc> {
        let now = self.system_time.unwrap_or_else(Utc::now);
        DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }
}

pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("'{s}' is not an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"))
}

/// How far ahead of the clock a pinned system time may be without --allow-future-system-time.
const FUTURE_SLACK: chrono::TimeDelta = chrono::TimeDelta::days(1);

pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(time) =
        cli.system_time.filter(|t| *t > Utc::now() + FUTURE_SLACK && !cli.allow_future_system_time)
    {
        anyhow::bail!(
            "--system-time {} is more than a day ahead of the clock; every later block would carry it too \
             (blocks never go back in time). Pass --allow-future-system-time if that is meant",
            time.to_rfc3339()
        );
    }
    let ctx = Context {
        data_dir: cli.data_dir.clone().unwrap_or_else(|| PathBuf::from("odf-data")),
        data_dir_flag: cli.data_dir,
        system_time: cli.system_time,
    };
    match cli.command {
        Command::Add(args) => add::run(&ctx, args),
        Command::Ingest(args) => ingest::run(&ctx, args),
        Command::List(args) => list::run(&ctx, args),
        Command::Log(args) => log::run(&ctx, args),
        Command::Sql(args) => sql::run(&ctx, args),
        Command::Tail(args) => tail::run(&ctx, args),
        Command::Verify(args) => verify::run(&ctx, args),
        Command::Gc(args) => gc::run(&ctx, args),
        Command::Push(args) => push::run(&ctx, args),
        Command::Pull(args) => pull::run(&ctx, args),
        Command::Serve(args) => serve::run(&ctx, args),
        Command::Quarantine(args) => quarantine::run(&ctx, args),
        Command::HashSecret(args) => hash_secret::run(&ctx, args),
        Command::Certs(args) => certs::run(&ctx, args),
    }
}
