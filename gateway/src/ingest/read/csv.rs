//! CSV with every ODF option: separator, quote, escape, header, nullValue (encoding and the
//! date/time formats are handled around it). With a header, columns are matched by name;
//! without one, by position.

use super::{Position, Problem, Reject};
use crate::ingest::coerce::Input;
use crate::ingest::sink::RecordSink;
use crate::odf::source::ReadStepCsv;

#[derive(Debug, Clone)]
pub struct CsvOptions {
    pub separator: u8,
    /// `None`: quoting is off.
    pub quote: Option<u8>,
    pub escape: Option<u8>,
    /// `None`: decide from the first line (used when CSV is pushed into a non-CSV source).
    pub header: Option<bool>,
    pub null_value: String,
}

fn single_byte(option: &str, value: &str) -> Result<Option<u8>, String> {
    match value.as_bytes() {
        [] => Ok(None),
        [b] if b.is_ascii() => Ok(Some(*b)),
        _ => Err(format!("csv {option} must be one ASCII character, found '{value}'")),
    }
}

impl CsvOptions {
    /// The options a CSV read step declares, with the spec's defaults.
    pub fn of(read: &ReadStepCsv) -> Result<CsvOptions, String> {
        let separator = single_byte("separator", read.separator.as_deref().unwrap_or(","))?
            .ok_or("csv separator cannot be empty")?;
        Ok(CsvOptions {
            separator,
            quote: single_byte("quote", read.quote.as_deref().unwrap_or("\""))?,
            escape: single_byte("escape", read.escape.as_deref().unwrap_or("\\"))?,
            header: Some(read.header.unwrap_or(false)),
            null_value: read.null_value.clone().unwrap_or_default(),
        })
    }

    /// Defaults for CSV pushed into a source that declares another format.
    pub fn translated() -> CsvOptions {
        CsvOptions {
            separator: b',',
            quote: Some(b'"'),
            escape: Some(b'\\'),
            header: None,
            null_value: String::new(),
        }
    }
}

pub fn read(text: &str, options: &CsvOptions, translated: bool, sink: &mut RecordSink, reject: &mut Reject) {
    let mut builder = csv::ReaderBuilder::new();
    builder.delimiter(options.separator).has_headers(false).flexible(true).escape(options.escape);
    match options.quote {
        Some(quote) => builder.quote(quote),
        None => builder.quoting(false),
    };
    let mut reader = builder.from_reader(text.as_bytes());
    let mut records = reader.records();

    // Which column each CSV field fills: by header name, or by position.
    let mut mapping: Vec<Option<usize>> = (0..sink.schema().fields.len()).map(Some).collect();
    let mut first = records.next();
    if let Some(Ok(row)) = &first {
        let names_columns = row.iter().any(|name| sink.column(name.trim()).is_some());
        let header = options.header.unwrap_or(translated && names_columns);
        if header {
            mapping = row.iter().map(|name| sink.column(name.trim())).collect();
            first = None;
        }
    }

    let mut record = 0;
    for row in first.into_iter().chain(records) {
        record += 1;
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                let position = e.position().map(|p| Position::Line(p.line()));
                reject(record, position, Problem::Malformed(format!("malformed CSV: {e}")));
                continue;
            }
        };
        let position = row.position().map(|p| Position::Line(p.line()));
        if row.len() > mapping.len() {
            let message = format!("{} fields, where {} are expected", row.len(), mapping.len());
            reject(record, position, Problem::Malformed(message));
            continue;
        }
        sink.begin();
        let fitted = row.iter().zip(&mapping).try_for_each(|(value, column)| match column {
            Some(column) if value == options.null_value => sink.set(*column, Input::Null),
            Some(column) => sink.set(*column, Input::Str(value)),
            None => Ok(()),
        });
        if let Err(e) = fitted.and_then(|()| sink.commit()) {
            reject(record, position, Problem::Field(e));
        }
    }
}
