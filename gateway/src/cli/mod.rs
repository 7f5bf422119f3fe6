//! The `odf-gateway` command line: clap parses, one file per subcommand calls the library
//! and prints. The only place (with `main`) that uses `anyhow`.

mod add;
mod ingest;
mod list;
mod log;
mod output;
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
    /// Where datasets live: one folder per dataset, in the ODF layout.
    #[arg(long, global = true, env = "ODF_GATEWAY_DATA_DIR", default_value = "odf-data")]
    pub data_dir: PathBuf,

    /// Use this time (RFC 3339) as the system time of everything written, instead of the
    /// clock; for reproducible tests.
    #[arg(long, global = true, env = "ODF_GATEWAY_SYSTEM_TIME", value_parser = parse_time)]
    pub system_time: Option<DateTime<Utc>>,

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
}

/// Global settings every subcommand may need.
pub struct Context {
    pub data_dir: PathBuf,
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

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Context { data_dir: cli.data_dir, system_time: cli.system_time };
    match cli.command {
        Command::Add(args) => add::run(&ctx, args),
        Command::Ingest(args) => ingest::run(&ctx, args),
        Command::List(args) => list::run(&ctx, args),
        Command::Log(args) => log::run(&ctx, args),
        Command::Sql(args) => sql::run(&ctx, args),
        Command::Tail(args) => tail::run(&ctx, args),
        Command::Verify(args) => verify::run(&ctx, args),
    }
}
