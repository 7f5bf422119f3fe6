//! `odf-gateway add`: create datasets from DatasetSnapshot manifests.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

use super::Context;
use crate::ingest::{ManifestErrors, check_manifests, read_manifests};
use crate::store::StoreError;

/// Create datasets from DatasetSnapshot manifests (YAML files, folders of them, or stdin).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest files, or folders whose *.yaml / *.yml files are manifests.
    #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
    manifests: Vec<PathBuf>,

    /// Read manifests from standard input.
    #[arg(long)]
    stdin: bool,

    /// Descend into sub-folders of the folders given.
    #[arg(short, long)]
    recursive: bool,

    /// Skip datasets that already exist instead of failing.
    #[arg(long)]
    if_not_exists: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let mut inputs = Vec::new();
    if args.stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("read manifests from stdin")?;
        inputs.push(("<stdin>".to_string(), text));
    }
    for path in &args.manifests {
        inputs.extend(read_manifests(path, args.recursive).map_err(anyhow::Error::msg)?);
    }

    // Every manifest is checked before any dataset is created.
    let snapshots = match ctx.block_on(check_manifests(&inputs))? {
        Ok(snapshots) => snapshots,
        Err(ManifestErrors(errors)) => match errors.as_slice() {
            [only] => bail!("{only}"),
            many => {
                for e in many {
                    eprintln!("error: {e}");
                }
                bail!("no dataset was added: {} manifest errors", many.len());
            }
        },
    };

    let data_dir = crate::store::DataDir::create(&ctx.data_dir)?;
    let (mut added, mut skipped) = (0, 0);
    for snapshot in &snapshots {
        match data_dir.create_dataset(snapshot, ctx.system_time()) {
            Ok(dataset) => {
                added += 1;
                let id = dataset.state().dataset_id.as_ref().map(ToString::to_string);
                eprintln!("Added {} ({})", snapshot.name, id.unwrap_or_default());
                if let Some(event) = snapshot.metadata.iter().find(|e| e.unreadable_by_kamu()) {
                    eprintln!(
                        "warning: dataset '{}' holds {}: {}",
                        snapshot.name,
                        event.kind(),
                        crate::odf::KAMU_DISABLE_WARNING
                    );
                }
            }
            Err(StoreError::AlreadyExists(name)) if args.if_not_exists => {
                skipped += 1;
                eprintln!("Skipped {name}: it already exists");
            }
            Err(e) => return Err(e).with_context(|| format!("add dataset '{}'", snapshot.name)),
        }
    }
    eprintln!(
        "Added {added} dataset(s){}",
        if skipped > 0 { format!(", skipped {skipped}") } else { String::new() }
    );
    Ok(())
}
