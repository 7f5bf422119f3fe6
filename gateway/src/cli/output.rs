//! Shared printing: tables, records, sizes, progress.

use arrow::array::{Array, Int32Array, RecordBatch};
use arrow::datatypes::Schema;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Table,
    /// One JSON object per line, for programs.
    Json,
}

pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(header.iter().copied());
    table
}

pub fn size(bytes: u64) -> String {
    humansize::format_size(bytes, humansize::BINARY)
}

/// What a progress bar counts.
pub enum Counting {
    Items,
    /// Bytes, with their rate.
    Bytes,
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub fn progress(total: u64, what: &str, counting: Counting) -> indicatif::ProgressBar {
    let template = match counting {
        Counting::Items => "{msg} [{bar:30}] {pos}/{len} ({eta})",
        Counting::Bytes => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
    };
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Output formats for records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordFormat {
    /// A table for people; `op` shown as +A, -R, -C, +C.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Json,
}

pub fn spinner(what: &str) -> indicatif::ProgressBar {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(what.to_owned());
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}

fn op_symbol(op: i32) -> &'static str {
    match op {
        0 => "+A",
        1 => "-R",
        2 => "-C",
        3 => "+C",
        _ => "??",
    }
}

pub fn print_records(
    schema: &Schema,
    batches: &[RecordBatch],
    format: RecordFormat,
    op_column: Option<&str>,
) -> anyhow::Result<()> {
    match format {
        RecordFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(std::io::stdout());
            for batch in batches {
                writer.write(batch)?;
            }
        }
        RecordFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(std::io::stdout());
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        RecordFormat::Table => {
            let header: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let mut table = table(&header);
            let options = FormatOptions::default().with_null("");
            let op_index = op_column.and_then(|name| schema.index_of(name).ok());
            for batch in batches {
                let formatters = batch
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                    .collect::<Result<Vec<_>, _>>()?;
                let ops = op_index.and_then(|i| batch.column(i).as_any().downcast_ref::<Int32Array>());
                for row in 0..batch.num_rows() {
                    let cells: Vec<String> = formatters
                        .iter()
                        .enumerate()
                        .map(|(i, f)| match ops {
                            Some(ops) if Some(i) == op_index && ops.is_valid(row) => {
                                op_symbol(ops.value(row)).to_string()
                            }
                            _ => f.value(row).to_string(),
                        })
                        .collect();
                    table.add_row(cells);
                }
            }
            println!("{table}");
        }
    }
    Ok(())
}
