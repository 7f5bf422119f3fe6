//! Readers: bytes in some format -> records in the `RecordSink`, each record coerced to the
//! source's read schema. A record that does not fit is reported and skipped; the records
//! around it are kept, so nothing good is lost.

mod cbor;
mod csv;
mod json;

use std::borrow::Cow;
use std::fmt;

use arrow::record_batch::RecordBatch;

use super::coerce::{Formats, Input};
use super::format::InputFormat;
use super::read_schema::ReadSchema;
use super::sink::{FieldError, RecordSink};
use crate::odf::ReadStep;

pub use self::csv::CsvOptions;

/// How a reader reports a rejected record: its number, where it was, what was wrong.
type Reject<'r> = dyn FnMut(usize, Option<Position>, Problem) + 'r;

/// Where in a message a record was, for errors: "line 3", "element 2", "byte 120".
#[derive(Debug, Clone, PartialEq)]
pub enum Position {
    Line(u64),
    Element(usize),
    Byte(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A field does not fit the schema.
    Field(FieldError),
    /// The bytes are not valid in the format.
    Malformed(String),
    /// The records read well but a later step refused them (a preprocess query failing on
    /// their values, an `op` out of range).
    Refused(String),
}

/// One rejected record (or, for a malformed message, the whole message).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    /// Which message of a batch, and where it came from (a file, a device, a topic).
    pub message: usize,
    pub origin: String,
    /// 1-based number of the record in its message; 0 when the whole message is meant.
    pub record: usize,
    pub position: Option<Position>,
    pub problem: Problem,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.record {
            0 => write!(f, "{}", self.origin)?,
            n => write!(f, "{}: record {n}", self.origin)?,
        }
        match &self.position {
            Some(Position::Line(line)) => write!(f, " (line {line})")?,
            Some(Position::Element(i)) => write!(f, " (element {i})")?,
            Some(Position::Byte(b)) => write!(f, " (byte {b})")?,
            None => {}
        }
        match &self.problem {
            Problem::Field(e) => write!(f, ": {e}"),
            Problem::Malformed(m) | Problem::Refused(m) => write!(f, ": {m}"),
        }
    }
}

/// What the source's read step says about reading, whatever format a message comes in.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub declared: InputFormat,
    pub encoding: Option<String>,
    pub json_sub_path: Option<String>,
    pub csv: CsvOptions,
    pub formats: Formats,
}

impl ReadOptions {
    pub fn of(read: &ReadStep) -> Result<ReadOptions, String> {
        let options = match read {
            ReadStep::Csv(r) => ReadOptions {
                declared: InputFormat::Csv,
                encoding: r.encoding.clone(),
                json_sub_path: None,
                csv: CsvOptions::of(r)?,
                formats: Formats::new(r.date_format.as_deref(), r.timestamp_format.as_deref()),
            },
            ReadStep::Json(r) => ReadOptions {
                declared: InputFormat::Json,
                encoding: r.encoding.clone(),
                json_sub_path: r.sub_path.clone(),
                csv: CsvOptions::translated(),
                formats: Formats::new(r.date_format.as_deref(), r.timestamp_format.as_deref()),
            },
            ReadStep::NdJson(r) => ReadOptions {
                declared: InputFormat::NdJson,
                encoding: r.encoding.clone(),
                json_sub_path: None,
                csv: CsvOptions::translated(),
                formats: Formats::new(r.date_format.as_deref(), r.timestamp_format.as_deref()),
            },
            other => return Err(format!("read format {} is not supported for push sources", other.kind())),
        };
        if let Some(label) = &options.encoding {
            encoding_rs::Encoding::for_label(label.as_bytes()).ok_or_else(|| {
                format!("encoding '{label}' is not known (e.g. utf8, latin1, windows-1252)")
            })?;
        }
        Ok(options)
    }
}

/// Reads messages of a batch into one record set in the read schema.
pub struct Reader {
    options: ReadOptions,
    sink: RecordSink,
    messages: usize,
    /// Rows read when each message ended, so that rows can be traced to their message.
    message_ends: Vec<usize>,
}

/// The records of a batch's messages, in the read schema, and which rows each message gave.
pub struct ReadBatch {
    pub records: RecordBatch,
    /// Rows read when each message ended: message `i` gave rows `ends[i-1]..ends[i]`.
    pub message_ends: Vec<usize>,
}

impl ReadBatch {
    /// The rows of message `i`.
    pub fn message_rows(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.message_ends[i - 1] };
        start..self.message_ends[i]
    }
}

impl Reader {
    pub fn new(schema: ReadSchema, options: ReadOptions) -> Reader {
        let sink = RecordSink::new(schema, options.formats.clone());
        Reader { options, sink, messages: 0, message_ends: Vec::new() }
    }

    /// Reads one message. `defaults` (column, value as text) fill the columns its records
    /// leave out. Rejected records are appended to `rejected`; the rest are kept.
    pub fn read(
        &mut self,
        bytes: &[u8],
        format: InputFormat,
        origin: &str,
        defaults: &[(String, String)],
        rejected: &mut Vec<RecordError>,
    ) {
        let message = self.messages;
        self.messages += 1;
        let mut reject = |record: usize, position: Option<Position>, problem: Problem| {
            rejected.push(RecordError { message, origin: origin.to_owned(), record, position, problem });
        };
        self.read_message(bytes, format, defaults, &mut reject);
        self.message_ends.push(self.sink.rows());
    }

    fn read_message(
        &mut self,
        bytes: &[u8],
        format: InputFormat,
        defaults: &[(String, String)],
        reject: &mut Reject,
    ) {
        let mut columns = Vec::with_capacity(defaults.len());
        for (name, value) in defaults {
            match self.sink.column(name) {
                Some(column) => columns.push((column, Input::Str(value))),
                None => {
                    let problem =
                        format!("column '{name}' given with the message is not in the source's schema");
                    return reject(0, None, Problem::Malformed(problem));
                }
            }
        }
        if let Err(e) = self.sink.set_defaults(columns) {
            return reject(0, None, Problem::Field(e));
        }
        if format == InputFormat::Cbor {
            return cbor::read(bytes, &mut self.sink, reject);
        }
        let text = match decode_text(bytes, self.options.encoding.as_deref()) {
            Ok(text) => text,
            Err(e) => return reject(0, None, Problem::Malformed(e)),
        };
        let sink = &mut self.sink;
        match format {
            InputFormat::NdJson => json::read_lines(&text, sink, reject),
            // A `.json` file of several lines pushed into an NdJson source is NdJson.
            InputFormat::Json
                if self.options.declared == InputFormat::NdJson && !json::is_one_document(&text) =>
            {
                json::read_lines(&text, sink, reject)
            }
            InputFormat::Json => {
                json::read_document(&text, self.options.json_sub_path.as_deref(), sink, reject)
            }
            InputFormat::Csv => {
                let translated = self.options.declared != InputFormat::Csv;
                csv::read(&text, &self.options.csv, translated, sink, reject)
            }
            InputFormat::Cbor => {} // read above, from the bytes
        }
    }

    /// The records read so far; the reader starts empty again.
    pub fn finish(&mut self) -> Result<ReadBatch, arrow::error::ArrowError> {
        let records = self.sink.finish()?;
        self.messages = 0;
        Ok(ReadBatch { records, message_ends: std::mem::take(&mut self.message_ends) })
    }
}

/// Text in the source's encoding, as UTF-8. A BOM is honoured and removed.
fn decode_text<'a>(bytes: &'a [u8], encoding: Option<&str>) -> Result<Cow<'a, str>, String> {
    let label = encoding.unwrap_or("utf-8");
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes())
        .ok_or_else(|| format!("encoding '{label}' is not known"))?;
    let (text, used, had_errors) = encoding.decode(bytes);
    if had_errors {
        // Find where, for the error: the first invalid UTF-8 byte, when reading UTF-8.
        let at = std::str::from_utf8(bytes).err().map(|e| e.valid_up_to());
        return Err(match at {
            Some(at) if used == encoding_rs::UTF_8 => format!("invalid UTF-8 at byte {at}"),
            _ => format!("bytes that are not valid {}", used.name()),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
