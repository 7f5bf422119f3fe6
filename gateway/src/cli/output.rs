//! Shared printing: tables, records, sizes, progress.

use std::io::Write as _;

use anyhow::Context as _;
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

const WRITE_OUTPUT: &str = "cannot write the output";
/// Characters of a value shown in a table cell.
const MAX_CELL_CHARS: usize = 256;

/// Writes a line to stdout. A reader that went away (`| head`) ends the command quietly (see
/// `is_closed_pipe`); a full disk is an error.
pub fn line(text: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).context(WRITE_OUTPUT)
}

/// Whether an error is stdout's reader having gone away (`odf-gateway log ds | head`): the
/// command then ends quietly with success, as Unix tools do.
pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `text` cut to `chars` characters, with an ellipsis when it was longer.
pub fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
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
    // Each batch is formatted into a buffer, then written: a write error keeps its kind
    // (a closed pipe ends the command quietly; see `is_closed_pipe`).
    let mut out = std::io::stdout().lock();
    match format {
        RecordFormat::Csv => {
            for (i, batch) in batches.iter().enumerate() {
                let mut buffer = Vec::new();
                arrow::csv::WriterBuilder::new().with_header(i == 0).build(&mut buffer).write(batch)?;
                out.write_all(&buffer).context(WRITE_OUTPUT)?;
            }
        }
        RecordFormat::Json => {
            for batch in batches {
                let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
                writer.write(batch)?;
                writer.finish()?;
                out.write_all(&writer.into_inner()).context(WRITE_OUTPUT)?;
            }
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
                            // Table cells are for people; a cell of megabytes would make
                            // the layout quadratic. CSV and JSON print values whole.
                            _ => cut(&f.value(row).to_string(), MAX_CELL_CHARS),
                        })
                        .collect();
                    table.add_row(cells);
                }
            }
            writeln!(out, "{table}").context(WRITE_OUTPUT)?;
        }
    }
    out.flush().context(WRITE_OUTPUT)
}
