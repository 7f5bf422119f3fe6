//! `odf-gateway pull`: take in a dataset from an ODF repository (S3 or a folder).

use anyhow::{Context as _, anyhow, bail};

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
    /// Where from: the dataset's folder in the repository (with --all, the repository).
    url: String,
    /// The local name [default: the URL's last path segment].
    #[arg(long = "as", value_name = "NAME", conflicts_with = "all")]
    name: Option<DatasetName>,
    /// Every dataset of the repository at URL (the folders below it that hold one), each
    /// under its folder's name: a gateway restored from the bucket its sync fed.
    #[arg(long)]
    all: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let data_dir = DataDir::create(&ctx.data_dir)?;
    if !args.all {
        let name = match args.name {
            Some(name) => name,
            None => name_from_url(&args.url)?,
        };
        return pull_one(ctx, &data_dir, &args.url, &name);
    }
    let repository = Remote::open(&args.url, false)?;
    let found = ctx.block_on(repository.datasets_below())?.with_context(|| format!("list {}", args.url))?;
    if found.is_empty() {
        bail!("{} holds no dataset folder (none below it has a refs/head)", args.url);
    }
    let mut failed = 0;
    for (folder, url) in found {
        let pulled = folder
            .parse::<DatasetName>()
            .map_err(|e| anyhow!("'{folder}' is not a dataset name: {e}"))
            .and_then(|name| pull_one(ctx, &data_dir, &url, &name));
        if let Err(e) = pulled {
            failed += 1;
            eprintln!("error: {e:#}");
        }
    }
    if failed > 0 {
        bail!("{failed} dataset(s) of {} could not be pulled", args.url);
    }
    Ok(())
}

fn pull_one(ctx: &Context, data_dir: &DataDir, url: &str, name: &DatasetName) -> anyhow::Result<()> {
    let remote = Remote::open(url, false)?;
    let bar = output::progress(0, &format!("pull {name}"), output::Counting::Items);
    let report = ctx.block_on(sync::pull(&remote, data_dir, name, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    }))?;
    bar.finish_and_clear();
    let report = report.with_context(|| format!("pull {url} into {name}"))?;
    if report.local_ahead > 0 {
        return output::line(format_args!(
            "{name}: {} is {} block(s) behind the local copy; nothing to pull (head {})",
            url, report.local_ahead, report.head
        ));
    }
    if report.up_to_date() {
        return output::line(format_args!("{name}: up to date with {url} (head {})", report.head));
    }
    let verb = if report.previous.is_none() { "created from" } else { "pulled from" };
    output::line(format_args!(
        "{name}: {verb} {url}: {} block(s), {} object(s), {}; head {}",
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
