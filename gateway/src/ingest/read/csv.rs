//! CSV with every ODF option: separator, quote, escape, header, nullValue (encoding and the
//! date/time formats are handled around it). With a header, columns are matched by name;
//! without one, by position.

use std::io::BufRead;

use super::csv_records::{Parser, Records};
use super::text::Decoder;
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
    /// The parser for these options, built once.
    parser: Parser,
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
        let quote = single_byte("quote", read.quote.as_deref().unwrap_or("\""))?;
        let escape = single_byte("escape", read.escape.as_deref().unwrap_or("\\"))?;
        Ok(CsvOptions {
            separator,
            quote,
            escape,
            header: Some(read.header.unwrap_or(false)),
            null_value: read.null_value.clone().unwrap_or_default(),
            parser: Parser::new(separator, quote, escape),
        })
    }

    /// Defaults for CSV pushed into a source that declares another format.
    pub fn translated() -> CsvOptions {
        static PARSER: std::sync::OnceLock<Parser> = std::sync::OnceLock::new();
        let (separator, quote, escape) = (b',', Some(b'"'), Some(b'\\'));
        CsvOptions {
            separator,
            quote,
            escape,
            header: None,
            null_value: String::new(),
            parser: PARSER.get_or_init(|| Parser::new(separator, quote, escape)).clone(),
        }
    }
}

/// A CSV message read a row at a time.
pub struct CsvStream {
    records: Records,
    decoder: Decoder,
    options: CsvOptions,
    translated: bool,
    /// Which column each field fills: by header name, or by position; `None` until the
    /// first row says whether it is a header.
    mapping: Option<Vec<Option<usize>>>,
    /// Whether a header line was read (a header alone is an explicitly empty message).
    header_read: bool,
}

/// Why the header line `fields` (mapped to columns as `mapping`) is not one for the sink's
/// schema: it names none of its columns, or leaves out one a record must have and nothing
/// else fills.
fn bad_header(
    fields: &[std::borrow::Cow<'_, str>],
    mapping: &[Option<usize>],
    sink: &RecordSink,
) -> Option<String> {
    let schema = sink.schema();
    let names = || schema.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(",");
    let line = || {
        let text = fields.join(",");
        match text.chars().count() > 80 {
            true => format!("{}…", text.chars().take(80).collect::<String>()),
            false => text,
        }
    };
    if mapping.iter().all(Option::is_none) {
        return Some(format!(
            "the first line is not a header naming the source's columns ({}): '{}' names none of them; send the header line first",
            names(),
            line()
        ));
    }
    let missing: Vec<&str> = schema
        .fields
        .iter()
        .enumerate()
        .filter(|(i, f)| !f.nullable && !mapping.contains(&Some(*i)) && !sink.fills(*i))
        .map(|(_, f)| f.name.as_str())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the header line '{}' leaves out the required column(s) {} (the source's columns: {})",
            line(),
            missing.join(", "),
            names()
        )
    })
}

impl CsvStream {
    pub fn new(
        input: Box<dyn BufRead + Send>,
        decoder: Decoder,
        options: &CsvOptions,
        translated: bool,
    ) -> CsvStream {
        // A quoted field can only be left open with quoting on.
        let keep_raw = options.quote.is_some();
        CsvStream {
            records: Records::new(&options.parser, input, keep_raw),
            decoder,
            options: options.clone(),
            translated,
            mapping: None,
            header_read: false,
        }
    }

    /// Reads the next row; `false` at the end. Fails only when the input does.
    pub fn next(
        &mut self,
        records: &mut usize,
        sink: &mut RecordSink,
        reject: &mut Reject,
    ) -> std::io::Result<bool> {
        if !self.records.next()? {
            return Ok(false);
        }
        let position = Some(Position::Line(self.records.line()));
        // Only the last row of a message can hold a quote left open: it runs to the end.
        let unclosed = self.records.ended_by_input() && self.quote_left_open();
        let fields =
            match self.records.fields().map(|f| self.decoder.decode(f)).collect::<Result<Vec<_>, _>>() {
                Ok(fields) => fields,
                Err(e) => {
                    *records += 1;
                    reject(*records, position, Problem::Malformed(e));
                    return Ok(true);
                }
            };
        if self.mapping.is_none() {
            let names_columns = fields.iter().any(|name| sink.column(name.trim()).is_some());
            let header = self.options.header.unwrap_or(self.translated && names_columns);
            self.mapping = Some(match header {
                true => fields.iter().map(|name| sink.column(name.trim())).collect(),
                false => (0..sink.schema().fields.len()).map(Some).collect(),
            });
            if header {
                // A first line that is not the header (a report sent without it) would be
                // taken as one and the message would vanish: refuse it whole instead.
                let mapping = self.mapping.as_deref().unwrap_or_default();
                if let Some(problem) = bad_header(&fields, mapping, sink) {
                    reject(0, position, Problem::Malformed(problem));
                    return Ok(false);
                }
                self.header_read = true;
                return Ok(true);
            }
        }
        *records += 1;
        let mapping = self.mapping.as_deref().unwrap_or_default();
        if unclosed {
            let problem = "a quoted field is not closed before the end of the message".to_string();
            reject(*records, position, Problem::Malformed(problem));
            return Ok(true);
        }
        if fields.len() != mapping.len() {
            let message = format!("{} fields, where {} are expected", fields.len(), mapping.len());
            reject(*records, position, Problem::Malformed(message));
            return Ok(true);
        }
        sink.begin();
        let null = self.options.null_value.as_str();
        let fitted = fields.iter().zip(mapping).try_for_each(|(value, column)| match column {
            Some(column) if value == null => sink.set(*column, Input::Null),
            Some(column) => sink.set(*column, Input::Str(value)),
            None => Ok(()),
        });
        if let Err(e) = fitted.and_then(|()| sink.commit()) {
            reject(*records, position, Problem::Field(e));
        }
        Ok(true)
    }

    /// Whether a header line was read.
    pub fn header_read(&self) -> bool {
        self.header_read
    }

    /// Whether the row read last, which ran to the end of the message, leaves a quoted field
    /// open (the CSV parser takes the end of the input as closing it).
    fn quote_left_open(&self) -> bool {
        let Some(quote) = self.options.quote else { return false };
        let escape = self.options.escape.filter(|e| *e != quote);
        let separator = self.options.separator;
        #[derive(PartialEq)]
        enum State {
            FieldStart,
            Unquoted,
            Quoted,
            Escaped,
            QuoteInQuoted,
        }
        let mut state = State::FieldStart;
        for &byte in self.records.raw() {
            state = match state {
                State::FieldStart if byte == quote => State::Quoted,
                State::FieldStart | State::Unquoted | State::QuoteInQuoted
                    if byte == separator || byte == b'\n' || byte == b'\r' =>
                {
                    State::FieldStart
                }
                State::FieldStart | State::Unquoted => State::Unquoted,
                State::Quoted if Some(byte) == escape => State::Escaped,
                State::Quoted if byte == quote => State::QuoteInQuoted,
                State::Quoted => State::Quoted,
                State::Escaped => State::Quoted,
                State::QuoteInQuoted if byte == quote => State::Quoted,
                State::QuoteInQuoted => State::Unquoted,
            };
        }
        matches!(state, State::Quoted | State::Escaped)
    }
}
