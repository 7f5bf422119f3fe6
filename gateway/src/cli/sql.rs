//! `odf-gateway sql`: SQL over every dataset, each a table by its name.

use super::{Context, output};
use crate::query;

/// Run a SQL query over all datasets (each a table named after it; quote names with dashes:
/// "air-quality").
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The query, e.g. "SELECT device_id, count(*) FROM gps GROUP BY device_id".
    query: String,

    /// How to print the result.
    #[arg(short, long, value_enum, default_value_t = output::RecordFormat::Table)]
    output_format: output::RecordFormat,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let data_dir = ctx.data_dir()?;
    let (schema, batches) = ctx.block_on(query::sql(&data_dir, &args.query))??;
    output::print_records(&schema, &batches, args.output_format, None)
}
