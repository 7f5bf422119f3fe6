//! `odf-gateway serve`: the gateway as a server. Thin: reads the configuration, runs
//! `serve::run` on a runtime until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context as _;

use super::Context;
use crate::config::RawConfig;
use crate::serve::{self, ServeOptions};

/// Run the gateway: apply the manifests, replay the write-ahead logs, serve HTTP until
/// SIGINT/SIGTERM (then stop accepting, commit what was accepted, exit 0).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A TOML configuration file; without one, the defaults (loopback only, anonymous).
    #[arg(long, env = "ODF_GATEWAY_CONFIG")]
    config: Option<PathBuf>,

    /// Print the effective configuration, every default included, and exit.
    #[arg(long)]
    print_config: bool,

    /// Write the addresses the listeners bound (JSON) to this file once they are up.
    #[arg(long)]
    addresses_file: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let mut raw = match &args.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    if let Some(dir) = &ctx.data_dir_flag {
        raw.data_dir = dir.clone();
    }
    if args.print_config {
        return super::output::line(raw.to_toml().trim_end());
    }
    let data_dir = raw.data_dir.clone();
    let config = raw.check(args.config.is_some())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("odf-gateway")
        .build()
        .context("cannot start the runtime")?;
    let options =
        ServeOptions { data_dir, system_time: ctx.system_time_flag(), addresses_file: args.addresses_file };
    runtime.block_on(serve::run(config, options, signal()))?;
    Ok(())
}

/// Resolves at SIGINT or SIGTERM.
async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); SIGINT still stops the gateway");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
