//! `odf-gateway push`: send a dataset to an ODF repository (S3 or a folder), incrementally.

use anyhow::Context as _;

use super::{Context, output};
use crate::sync::{self, Pace, Rate, Remote};

/// Push a dataset to a repository URL, sending only what the remote lacks: data slices and
/// checkpoints first, then the blocks, and `refs/head` last, so readers never see a head
/// whose objects are missing. An interrupted push is resumed by the next one. A remote that
/// has diverged from the local dataset (another writer) is refused, never overwritten.
///
/// URLs as kamu spells them: file:///srv/odf/gps, s3://bucket/prefix/gps/,
/// s3+http://host:9000/bucket/gps/ (an S3 API at that endpoint, path-style). Credentials and
/// region come from the AWS environment (AWS_ACCESS_KEY_ID, AWS_REGION, ...), the shared
/// files of `aws configure` (AWS_PROFILE), or the instance or container role.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset to push.
    dataset: String,
    /// Where to: the dataset's folder in the repository.
    url: String,
    /// Average upload rate at most, in bytes per second (256KiB, 1MB, ...).
    #[arg(long, value_name = "RATE")]
    max_rate: Option<Rate>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let dataset = ctx.data_dir()?.open_dataset(&args.dataset)?;
    let remote = Remote::open(&args.url, true)?;
    let bar = output::progress(0, &format!("push {}", args.dataset), output::Counting::Items);
    let mut pace = Pace::new(args.max_rate);
    let report = ctx.block_on(sync::push(&dataset, &remote, true, &mut pace, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    }))?;
    bar.finish_and_clear();
    let report = report.with_context(|| format!("push {} to {}", args.dataset, args.url))?;
    if report.up_to_date() {
        return output::line(format_args!(
            "{}: {} is up to date (head {})",
            args.dataset, args.url, report.head
        ));
    }
    let resumed =
        if report.present > 0 { format!(", {} already there", report.present) } else { String::new() };
    output::line(format_args!(
        "{}: pushed {} block(s) to {}: {} object(s) sent, {}{resumed}; head {}",
        args.dataset,
        report.blocks,
        args.url,
        report.uploaded,
        output::size(report.bytes),
        report.head
    ))
}
