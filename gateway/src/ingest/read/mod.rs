//! Readers: bytes in some format -> records in the `RecordSink`, each record coerced to the
//! source's read schema. A record that does not fit is reported and skipped; the records
//! around it are kept, so nothing good is lost.

mod cbor;
mod csv;
mod csv_records;
mod json;
mod senml;
mod text;

use std::borrow::Cow;
use std::fmt;
use std::io::{BufRead, Read as _};

use arrow::record_batch::RecordBatch;

use super::binding::ColumnBinding;
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

/// Reads messages into one record set in the read schema, a record at a time: a message is
/// a stream (a file, stdin, a payload in memory), so a caller can take the records in chunks
/// of bounded size while a big file is still being read.
pub struct Reader {
    options: ReadOptions,
    sink: RecordSink,
    /// The message being read, and how many were begun.
    current: Option<MessageStream>,
    messages: usize,
    /// Which message gave which rows of the records not yet finished.
    parts: Vec<Part>,
}

/// Rows `..end` (from the previous part's end) of a batch came from message `message`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Part {
    pub message: usize,
    pub end: usize,
}

/// Records read, in the read schema, and which rows each message gave. A big message may
/// be spread over several batches, each holding a part of it.
pub struct ReadBatch {
    pub records: RecordBatch,
    pub parts: Vec<Part>,
}

impl ReadBatch {
    /// Each message's index and its rows in this batch, in order.
    pub fn message_rows(&self) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
        let starts = std::iter::once(0).chain(self.parts.iter().map(|p| p.end));
        self.parts.iter().zip(starts).map(|(part, start)| (part.message, start..part.end))
    }
}

/// A message being read, with its numbering: records and rejections are reported by message
/// index and 1-based record number.
struct MessageStream {
    index: usize,
    origin: String,
    records: usize,
    /// Rejections reported for it (a malformed message is one, with no record counted).
    rejections: usize,
    body: Body,
}

enum Body {
    Lines(Lines),
    Csv(Box<csv::CsvStream>),
    Cbor(cbor::CborStream),
    /// A JSON document, read whole (an array of records cannot be cut anywhere else).
    Document(String),
    Done,
}

impl Reader {
    pub fn new(schema: ReadSchema, options: ReadOptions) -> Reader {
        let sink = RecordSink::new(schema, options.formats.clone());
        Reader { options, sink, current: None, messages: 0, parts: Vec::new() }
    }

    /// A reader that checks and counts records but keeps none (`RecordSink::validating`):
    /// `discard` takes the place of `finish`.
    pub fn validating(schema: ReadSchema, options: ReadOptions) -> Reader {
        let sink = RecordSink::validating(schema, options.formats.clone());
        Reader { options, sink, current: None, messages: 0, parts: Vec::new() }
    }

    /// Rows read and not yet finished.
    pub fn rows(&self) -> usize {
        self.sink.rows()
    }

    /// Starts reading a message from `input` (ending the one before, if it was not read to
    /// its end). Fails only when `input` fails; bad bytes are rejections.
    pub fn begin(
        &mut self,
        input: Box<dyn BufRead + Send>,
        format: InputFormat,
        origin: &str,
        defaults: &[(String, String)],
        bindings: &[ColumnBinding],
        rejected: &mut Vec<RecordError>,
    ) -> std::io::Result<()> {
        let index = self.messages;
        self.messages += 1;
        self.current = Some(MessageStream {
            index,
            origin: origin.to_owned(),
            records: 0,
            rejections: 0,
            body: Body::Done,
        });
        self.mark();
        if let Err(problem) = self.set_defaults(defaults).and_then(|()| self.set_bindings(bindings)) {
            self.reject_current(rejected, problem);
            return Ok(());
        }
        let body = match self.open(input, format)? {
            Ok(body) => body,
            Err(problem) => {
                self.reject_current(rejected, problem);
                return Ok(());
            }
        };
        if let Some(current) = &mut self.current {
            current.body = body;
        }
        Ok(())
    }

    fn set_defaults(&mut self, defaults: &[(String, String)]) -> Result<(), Problem> {
        let mut columns = Vec::with_capacity(defaults.len());
        for (name, value) in defaults {
            match self.sink.column(name) {
                Some(column) => columns.push((column, Input::Str(value))),
                None => {
                    let problem =
                        format!("column '{name}' given with the message is not in the source's schema");
                    return Err(Problem::Malformed(problem));
                }
            }
        }
        self.sink.set_defaults(columns).map_err(Problem::Field)
    }

    fn set_bindings(&mut self, bindings: &[ColumnBinding]) -> Result<(), Problem> {
        let mut columns = Vec::with_capacity(bindings.len());
        for binding in bindings {
            match self.sink.column(&binding.column) {
                Some(column) => columns.push((column, binding.clone())),
                // A binding that cannot be checked must not let the message through.
                None => {
                    return Err(Problem::Malformed(format!(
                        "{binding}, which is not a column of the source's schema: no record can be checked"
                    )));
                }
            }
        }
        self.sink.set_bindings(columns).map_err(Problem::Field)
    }

    /// How the message's bytes are read, by format; `Err` when they cannot be read at all.
    fn open(
        &self,
        input: Box<dyn BufRead + Send>,
        format: InputFormat,
    ) -> std::io::Result<Result<Body, Problem>> {
        let decoded = |input| text::open(input, self.options.encoding.as_deref());
        Ok(Ok(match format {
            InputFormat::Cbor => Body::Cbor(cbor::CborStream::new(input)),
            InputFormat::SenmlJson | InputFormat::SenmlCbor => {
                let mut bytes = Vec::new();
                let mut input = input;
                input.read_to_end(&mut bytes)?;
                let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
                let time_column = self.sink.first_timestamp_column();
                let rows = match format {
                    InputFormat::SenmlJson => senml::json_to_rows(&bytes, time_column.as_deref(), now),
                    _ => senml::cbor_to_rows(&bytes, time_column.as_deref(), now),
                };
                match rows {
                    Ok(rows) => Body::Cbor(cbor::CborStream::new(Box::new(std::io::Cursor::new(rows)))),
                    Err(problem) => return Ok(Err(Problem::Malformed(problem))),
                }
            }
            InputFormat::NdJson => match decoded(input)? {
                Ok((input, decoder)) => Body::Lines(Lines::new(input, decoder)),
                Err(problem) => return Ok(Err(Problem::Malformed(problem))),
            },
            InputFormat::Csv => match decoded(input)? {
                Ok((input, decoder)) => {
                    let translated = self.options.declared != InputFormat::Csv;
                    Body::Csv(Box::new(csv::CsvStream::new(input, decoder, &self.options.csv, translated)))
                }
                Err(problem) => return Ok(Err(Problem::Malformed(problem))),
            },
            InputFormat::Json => {
                let text = match decoded(input)? {
                    Ok((input, decoder)) => text::read_whole(input, decoder)?,
                    Err(problem) => Err(problem),
                };
                let text = match text {
                    Ok(text) => text,
                    Err(problem) => return Ok(Err(Problem::Malformed(problem))),
                };
                // A `.json` file of several lines pushed into an NdJson source is NdJson.
                if self.options.declared == InputFormat::NdJson && !json::is_one_document(&text) {
                    let input = Box::new(std::io::Cursor::new(text.into_bytes()));
                    Body::Lines(Lines::new(input, text::Decoder::utf8()))
                } else {
                    Body::Document(text)
                }
            }
        }))
    }

    /// Reads the current message until `max_rows` rows are waiting or the message ends;
    /// `true` once it has ended. Fails only when the message's input fails.
    pub fn read_some(&mut self, max_rows: usize, rejected: &mut Vec<RecordError>) -> std::io::Result<bool> {
        let Some(current) = self.current.as_mut() else { return Ok(true) };
        let was_open = !matches!(current.body, Body::Done);
        let (index, origin) = (current.index, current.origin.as_str());
        let rejections = &mut current.rejections;
        let mut reject = |record: usize, position: Option<Position>, problem: Problem| {
            *rejections += 1;
            rejected.push(RecordError {
                message: index,
                origin: origin.to_owned(),
                record,
                position,
                problem,
            });
        };
        let sink = &mut self.sink;
        let records = &mut current.records;
        let mut ended = false;
        // Whether the message said it holds no record (an empty array, a header alone).
        let mut empty_on_purpose = false;
        while sink.rows() < max_rows && !ended {
            ended = match &mut current.body {
                Body::Lines(lines) => match lines.next()? {
                    Some((line, text)) => {
                        json::read_line(text, line, records, sink, &mut reject);
                        false
                    }
                    None => true,
                },
                Body::Csv(stream) => {
                    let more = stream.next(records, sink, &mut reject)?;
                    empty_on_purpose = stream.header_read();
                    !more
                }
                Body::Cbor(stream) => {
                    let more = stream.next(records, sink, &mut reject)?;
                    empty_on_purpose = stream.read_empty_array();
                    !more
                }
                Body::Document(text) => {
                    let sub_path = self.options.json_sub_path.as_deref();
                    empty_on_purpose = json::read_document(text, sub_path, records, sink, &mut reject);
                    true
                }
                Body::Done => true,
            };
        }
        // A message that gave no record and no rejection would be acknowledged having said
        // nothing (a CSV line taken for its header, blank lines): it is refused unless it
        // said on purpose that it holds no record.
        if ended && was_open && *records == 0 && *rejections == 0 && !empty_on_purpose {
            *rejections += 1;
            let reason =
                "the payload holds no record (it is empty or blank); a batch of none is an empty array";
            let problem = Problem::Malformed(reason.into());
            let origin = origin.to_owned();
            rejected.push(RecordError { message: index, origin, record: 0, position: None, problem });
        }
        if ended {
            current.body = Body::Done;
        }
        self.mark();
        Ok(ended)
    }

    /// Notes where the current message's rows end so far.
    fn mark(&mut self) {
        let Some(current) = &self.current else { return };
        let end = self.sink.rows();
        match self.parts.last_mut() {
            Some(part) if part.message == current.index => part.end = end,
            _ => self.parts.push(Part { message: current.index, end }),
        }
    }

    /// Rejects the current message as a whole.
    fn reject_current(&mut self, rejected: &mut Vec<RecordError>, problem: Problem) {
        if let Some(current) = &mut self.current {
            let origin = current.origin.clone();
            rejected.push(RecordError { message: current.index, origin, record: 0, position: None, problem });
            current.body = Body::Done;
        }
    }

    /// The records read so far; a message not read to its end goes on in the next batch.
    pub fn finish(&mut self) -> Result<ReadBatch, arrow::error::ArrowError> {
        let records = self.sink.finish()?;
        let parts = std::mem::take(&mut self.parts);
        if let Some(current) = self.current.as_ref().filter(|c| !matches!(c.body, Body::Done)) {
            self.parts.push(Part { message: current.index, end: 0 });
        }
        Ok(ReadBatch { records, parts })
    }

    /// Drops the rows read so far; a message not read to its end goes on.
    pub fn discard(&mut self) {
        self.sink.discard();
        self.parts.clear();
        if let Some(current) = self.current.as_ref().filter(|c| !matches!(c.body, Body::Done)) {
            self.parts.push(Part { message: current.index, end: 0 });
        }
    }

    /// Back to the state of a new reader, for the next payload.
    pub fn reset(&mut self) {
        self.current = None;
        self.messages = 0;
        self.discard();
    }
}

/// NdJson lines, decoded one at a time.
struct Lines {
    input: Box<dyn BufRead + Send>,
    decoder: text::Decoder,
    line: u64,
    buffer: Vec<u8>,
}

impl Lines {
    fn new(input: Box<dyn BufRead + Send>, decoder: text::Decoder) -> Lines {
        Lines { input, decoder, line: 0, buffer: Vec::new() }
    }

    /// The next line's number and text (`Err` when its bytes are not in the encoding);
    /// `None` at the end.
    fn next(&mut self) -> std::io::Result<Option<(u64, Result<Cow<'_, str>, String>)>> {
        self.buffer.clear();
        if self.input.read_until(b'\n', &mut self.buffer)? == 0 {
            return Ok(None);
        }
        self.line += 1;
        let mut bytes = self.buffer.as_slice();
        bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        Ok(Some((self.line, self.decoder.decode(bytes))))
    }
}

#[cfg(test)]
mod tests;
