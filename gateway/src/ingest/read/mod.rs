//! Readers: bytes in some format -> records in the `RecordSink`, each record coerced to the
//! source's read schema. A record that does not fit is reported and skipped; the records
//! around it are kept, so nothing good is lost.

mod cbor;
mod csv;
mod json;

use std::borrow::Cow;
use std::fmt;

use arrow::record_batch::RecordBatch;

use super::coerce::Formats;
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
}

/// One rejected record (or, for a malformed message, the whole message).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    /// Which message of a batch, and where it came from (a file, a device, a topic).
    pub message: usize,
    pub origin: String,
    /// 1-based number of the record in its message.
    pub record: usize,
    pub position: Option<Position>,
    pub problem: Problem,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: record {}", self.origin, self.record)?;
        match &self.position {
            Some(Position::Line(line)) => write!(f, " (line {line})")?,
            Some(Position::Element(i)) => write!(f, " (element {i})")?,
            Some(Position::Byte(b)) => write!(f, " (byte {b})")?,
            None => {}
        }
        match &self.problem {
            Problem::Field(e) => write!(f, ": {e}"),
            Problem::Malformed(m) => write!(f, ": {m}"),
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
}

impl Reader {
    pub fn new(schema: ReadSchema, options: ReadOptions) -> Reader {
        let sink = RecordSink::new(schema, options.formats.clone());
        Reader { options, sink, messages: 0 }
    }

    pub fn rows(&self) -> usize {
        self.sink.rows()
    }

    /// Reads one message. Rejected records are appended to `rejected`; the rest are kept.
    pub fn read(&mut self, bytes: &[u8], format: InputFormat, origin: &str, rejected: &mut Vec<RecordError>) {
        let message = self.messages;
        self.messages += 1;
        let mut reject = |record: usize, position: Option<Position>, problem: Problem| {
            rejected.push(RecordError { message, origin: origin.to_owned(), record, position, problem });
        };
        if format == InputFormat::Cbor {
            return cbor::read(bytes, &mut self.sink, &mut reject);
        }
        let text = match decode_text(bytes, self.options.encoding.as_deref()) {
            Ok(text) => text,
            Err(e) => return reject(1, None, Problem::Malformed(e)),
        };
        let sink = &mut self.sink;
        match format {
            InputFormat::NdJson => json::read_lines(&text, sink, &mut reject),
            // A `.json` file of several lines pushed into an NdJson source is NdJson.
            InputFormat::Json
                if self.options.declared == InputFormat::NdJson && !json::is_one_document(&text) =>
            {
                json::read_lines(&text, sink, &mut reject)
            }
            InputFormat::Json => {
                json::read_document(&text, self.options.json_sub_path.as_deref(), sink, &mut reject)
            }
            InputFormat::Csv => {
                let translated = self.options.declared != InputFormat::Csv;
                csv::read(&text, &self.options.csv, translated, sink, &mut reject)
            }
            InputFormat::Cbor => {} // read above, from the bytes
        }
    }

    /// The records read so far, as one batch; the reader starts empty again.
    pub fn finish(&mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        self.sink.finish()
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
