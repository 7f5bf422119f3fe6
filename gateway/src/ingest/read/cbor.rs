//! CBOR: one map, an array of maps, or a CBOR sequence of either (RFC 8742). Standard
//! date/time tags are understood: tag 0 (an RFC 3339 string), tag 1 (epoch seconds).

use std::io::{BufRead, Read};

use ciborium::Value;

use super::{Position, Problem, Reject};
use crate::ingest::coerce::Input;
use crate::ingest::sink::{FieldError, RecordSink};

/// A CBOR message read an item at a time.
pub struct CborStream {
    input: Counted,
    /// Whether an empty array was read: a batch of no records, sent on purpose.
    empty_array: bool,
}

/// The input, counting the bytes read from it (CBOR items are read exactly, never ahead).
struct Counted {
    inner: Box<dyn BufRead + Send>,
    read: u64,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl CborStream {
    pub fn new(input: Box<dyn BufRead + Send>) -> CborStream {
        CborStream { input: Counted { inner: input, read: 0 }, empty_array: false }
    }

    /// Reads the next item's records; `false` at the end, or after a broken item (the rest
    /// of a sequence cannot be found after it). Fails only when the input does.
    pub fn next(
        &mut self,
        records: &mut usize,
        sink: &mut RecordSink,
        reject: &mut Reject,
    ) -> std::io::Result<bool> {
        if self.input.inner.fill_buf()?.is_empty() {
            return Ok(false);
        }
        let start = self.input.read;
        let item: Value = match ciborium::de::from_reader(&mut self.input) {
            Ok(item) => item,
            Err(ciborium::de::Error::Io(e)) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
                return Err(e);
            }
            Err(e) => {
                let message = match e {
                    ciborium::de::Error::Syntax(at) => format!("malformed CBOR at byte {at}"),
                    ciborium::de::Error::Io(_) => "CBOR item cut short".to_string(),
                    ciborium::de::Error::RecursionLimitExceeded => "CBOR nested too deeply".to_string(),
                    ciborium::de::Error::Semantic(at, m) => {
                        format!(
                            "invalid CBOR{}: {m}",
                            at.map(|a| format!(" at byte {a}")).unwrap_or_default()
                        )
                    }
                };
                reject(*records + 1, Some(Position::Byte(start)), Problem::Malformed(message));
                return Ok(false);
            }
        };
        let position = Some(Position::Byte(start));
        let maps = match item {
            Value::Array(items) => {
                self.empty_array |= items.is_empty();
                items
            }
            map @ Value::Map(_) => vec![map],
            _ => {
                *records += 1;
                let problem = Problem::Malformed("expected a CBOR map or an array of maps".into());
                reject(*records, position, problem);
                return Ok(true);
            }
        };
        for map in maps {
            *records += 1;
            if let Err(problem) = read_record(&map, sink) {
                reject(*records, position.clone(), problem);
            }
        }
        Ok(true)
    }
}

impl CborStream {
    /// Whether an empty array was read.
    pub fn read_empty_array(&self) -> bool {
        self.empty_array
    }
}

fn read_record(map: &Value, sink: &mut RecordSink) -> Result<(), Problem> {
    let Value::Map(entries) = map else {
        return Err(Problem::Malformed("expected a CBOR map".into()));
    };
    sink.begin();
    for (key, value) in entries {
        let Some(column) = key.as_text().and_then(|k| sink.column(k)) else { continue };
        let input = input_of(value).map_err(|what| {
            let field = &sink.schema().fields[column];
            Problem::Field(FieldError {
                field: field.name.clone(),
                value: Some(what.to_owned()),
                expected: field.kind.name(),
                reason: "nested values are not read into scalar columns".into(),
            })
        })?;
        sink.set(column, input).map_err(Problem::Field)?;
    }
    sink.commit().map_err(Problem::Field)
}

/// A scalar CBOR value as reader input; `Err` names a value that is not a scalar.
fn input_of(value: &Value) -> Result<Input<'_>, &'static str> {
    Ok(match value {
        Value::Null => Input::Null,
        Value::Bool(b) => Input::Bool(*b),
        Value::Integer(i) => {
            let i = i128::from(*i);
            match i64::try_from(i) {
                Ok(i) => Input::Int(i),
                Err(_) => Input::UInt(u64::try_from(i).map_err(|_| "an integer beyond 64 bits")?),
            }
        }
        Value::Float(f) => Input::Float(*f),
        Value::Text(s) => Input::Str(s),
        Value::Bytes(b) => Input::Bytes(b),
        Value::Tag(1, inner) => match inner.as_ref() {
            Value::Integer(i) => Input::EpochSeconds(i128::from(*i) as f64),
            Value::Float(f) => Input::EpochSeconds(*f),
            _ => return Err("a tag-1 time that is not a number"),
        },
        // Tag 0 (RFC 3339 text) and any other tag: the value inside.
        Value::Tag(_, inner) => input_of(inner)?,
        Value::Array(_) => return Err("a list"),
        Value::Map(_) => return Err("a map"),
        _ => return Err("an unknown CBOR value"),
    })
}
