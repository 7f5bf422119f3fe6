//! `odf-gateway list`: the datasets in the data directory.

use serde::Serialize;

use super::Context;
use super::output::{self, Format};

/// List datasets: name, kind, head, blocks, records, size, and the rows a Snapshot or
/// UpsertStream source keeps in memory (as of the last checkpoint).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How to print the list.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output_format: Format,
}

#[derive(Serialize)]
struct Row {
    name: String,
    id: String,
    kind: &'static str,
    head: String,
    blocks: u64,
    records: u64,
    size: u64,
    /// Rows of the in-memory merge states at the last checkpoint.
    state_rows: Option<u64>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let data_dir = ctx.data_dir()?;
    let mut rows = Vec::new();
    for name in data_dir.list()? {
        // One broken dataset must not hide the others: show it, and why.
        let dataset = match data_dir.open_dataset(name.as_str()) {
            Ok(dataset) => dataset,
            Err(e) => {
                eprintln!("warning: {name}: {e} (run `odf-gateway verify {name}`)");
                continue;
            }
        };
        let state = dataset.state();
        rows.push(Row {
            name: name.to_string(),
            id: state.dataset_id.as_ref().map(ToString::to_string).unwrap_or_default(),
            kind: "Root",
            head: state.head.as_ref().map(ToString::to_string).unwrap_or_default(),
            blocks: state.blocks,
            records: state.records(),
            size: state.data_size,
            state_rows: crate::ingest::checkpointed_rows(&dataset),
        });
    }
    match args.output_format {
        Format::Json => {
            for row in &rows {
                output::line(serde_json::to_string(row)?)?;
            }
        }
        Format::Table => {
            let mut table =
                output::table(&["Name", "Kind", "Head", "Blocks", "Records", "Size", "State rows"]);
            for row in &rows {
                table.add_row(vec![
                    row.name.clone(),
                    row.kind.to_string(),
                    row.head.clone(),
                    row.blocks.to_string(),
                    row.records.to_string(),
                    output::size(row.size),
                    row.state_rows.map(|n| n.to_string()).unwrap_or_default(),
                ]);
            }
            output::line(table)?;
        }
    }
    Ok(())
}
