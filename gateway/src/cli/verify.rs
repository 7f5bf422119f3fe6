//! `odf-gateway verify`: re-hash every block, data slice and checkpoint of a dataset.

use anyhow::Context as _;

use super::Context;
use super::output;
use crate::store;

/// Check datasets' integrity: every block re-hashed and the chain rules replayed, every data
/// slice and checkpoint re-hashed, every slice's records re-digested against its logical
/// hash. Fails naming the first bad object.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Datasets to check.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    datasets: Vec<String>,

    /// Check every dataset in the data directory.
    #[arg(long)]
    all: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let data_dir = ctx.data_dir()?;
    let names =
        if args.all { data_dir.list()?.iter().map(ToString::to_string).collect() } else { args.datasets };
    for name in names {
        let dataset = data_dir.open_dataset(&name).with_context(|| format!("verify {name}"))?;
        let bar =
            output::progress(dataset.state().blocks, &format!("verify {name}"), output::Counting::Items);
        let report = store::verify(&dataset, |done, _| bar.set_position(done));
        bar.finish_and_clear();
        let report = report.with_context(|| format!("verify {name}"))?;
        output::line(format_args!(
            "{name}: ok ({} blocks, {} data slices, {} checkpoints, {} hashed)",
            report.blocks,
            report.data_files,
            report.checkpoints,
            output::size(report.bytes_hashed)
        ))?;
    }
    Ok(())
}
