//! `odf-gateway pull`: take in a dataset from an ODF repository (S3 or a folder).

use anyhow::{Context as _, anyhow};

use super::{Context, output};
use crate::odf::DatasetName;
use crate::store::DataDir;
use crate::sync::{self, Remote};

/// Pull a dataset from a repository URL into the data directory: a new dataset, or the
/// blocks a local copy lacks. Every block is checked against its hash and the chain rules,
/// every data slice and checkpoint against its block, before the local head moves; a chain
/// that does not verify or has diverged from the local one is refused. Restores a gateway
/// whose SD card died, or collects datasets that field gateways pushed.
///
/// URLs as for `push`: file:///srv/odf/gps, s3://bucket/prefix/gps/,
/// s3+http://host:9000/bucket/gps/.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where from: the dataset's folder in the repository.
    url: String,
    /// The local name [default: the URL's last path segment].
    #[arg(long = "as", value_name = "NAME")]
    name: Option<DatasetName>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let name = match args.name {
        Some(name) => name,
        None => name_from_url(&args.url)?,
    };
    let data_dir = DataDir::create(&ctx.data_dir)?;
    let remote = Remote::open(&args.url, false)?;
    let bar = output::progress(0, &format!("pull {name}"), output::Counting::Items);
    let report = ctx.block_on(sync::pull(&remote, &data_dir, &name, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    }))?;
    bar.finish_and_clear();
    let report = report.with_context(|| format!("pull {} into {name}", args.url))?;
    if report.local_ahead > 0 {
        return output::line(format_args!(
            "{name}: {} is {} block(s) behind the local copy; nothing to pull (head {})",
            args.url, report.local_ahead, report.head
        ));
    }
    if report.up_to_date() {
        return output::line(format_args!("{name}: up to date with {} (head {})", args.url, report.head));
    }
    let verb = if report.previous.is_none() { "created from" } else { "pulled from" };
    output::line(format_args!(
        "{name}: {verb} {}: {} block(s), {} object(s), {}; head {}",
        args.url,
        report.blocks,
        report.objects,
        output::size(report.bytes),
        report.head
    ))
}

/// The dataset name a URL ends with, as kamu infers it.
fn name_from_url(url: &str) -> anyhow::Result<DatasetName> {
    let last = url.trim_end_matches('/').rsplit(['/', ':']).next().unwrap_or_default();
    last.parse().map_err(|e| anyhow!("cannot name the dataset after '{last}' ({e}); give a name with --as"))
}
