//! `odf-gateway gc`: remove what crashes and failed commits left in datasets.

use anyhow::{Context as _, bail};

use super::{Context, output};

/// Remove blocks, data slices and checkpoints that no block of the chain references (left by
/// crashes and failed commits), and temp files of writers no longer running. Safe while
/// other writers run: it works under the dataset's write lock.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Datasets to clean.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    datasets: Vec<String>,
    /// Every dataset of the data directory.
    #[arg(long)]
    all: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let data_dir = ctx.data_dir()?;
    let names =
        if args.all { data_dir.list()?.iter().map(ToString::to_string).collect() } else { args.datasets };
    if names.is_empty() {
        bail!("no datasets in {}", data_dir.root().display());
    }
    for name in names {
        let mut dataset = data_dir.open_dataset(&name)?;
        let report = crate::store::collect_garbage(&mut dataset).with_context(|| format!("gc {name}"))?;
        let removed = crate::ingest::remove_stale_private_indexes(&dataset)?;
        let indexes =
            if removed > 0 { format!(", {removed} stale private index(es)") } else { String::new() };
        output::line(format!(
            "{name}: removed {} unreferenced file(s), {}{indexes}",
            report.files,
            output::size(report.bytes)
        ))?;
    }
    Ok(())
}
