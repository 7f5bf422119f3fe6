//! `odf-gateway tail`: the last records of a dataset, as a table like `kamu tail`.

use super::{Context, output};
use crate::query;

/// Show the last records of a dataset.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset.
    dataset: String,

    /// How many records.
    #[arg(short = 'n', long, default_value_t = 10)]
    num_records: usize,

    /// How to print them.
    #[arg(short, long, value_enum, default_value_t = output::RecordFormat::Table)]
    output_format: output::RecordFormat,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let dataset = ctx.data_dir()?.open_dataset(&args.dataset)?;
    let Some(records) = query::tail(&dataset, args.num_records)? else {
        eprintln!("Dataset '{}' has no data yet", args.dataset);
        return Ok(());
    };
    let op =
        dataset.state().vocab.as_ref().and_then(|v| v.operation_type_column.clone()).unwrap_or("op".into());
    output::print_records(&records.schema(), &[records], args.output_format, Some(&op))
}
