//! `odf-gateway log`: a dataset's metadata blocks, newest first, as YAML (like `kamu log`).

use anyhow::Context as _;
use serde::Serialize;

use super::{Context, output};
use crate::odf::MetadataBlock;
use crate::odf::codec::METADATA_BLOCK_VERSION;

/// Show a dataset's metadata blocks, newest first, as YAML.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset.
    dataset: String,

    /// Show at most this many blocks.
    #[arg(long)]
    limit: Option<usize>,
}

/// A block as ODF tools print it: wrapped in its manifest.
#[derive(Serialize)]
struct Manifest<'a> {
    kind: &'static str,
    version: i32,
    content: &'a MetadataBlock,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let dataset = ctx.data_dir()?.open_dataset(&args.dataset)?;
    let limit = args.limit.unwrap_or(usize::MAX);
    for (hash, block) in dataset.blocks()?.iter().take(limit) {
        let manifest = Manifest { kind: "MetadataBlock", version: METADATA_BLOCK_VERSION, content: block };
        let yaml = serde_yaml_ng::to_string(&manifest).with_context(|| format!("print block {hash}"))?;
        output::line(format_args!("---\n# Block: {hash}\n{yaml}"))?;
    }
    Ok(())
}
