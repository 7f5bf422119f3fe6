//! NdJson (one object per line) and Json (an array of objects, or one object, possibly under
//! `subPath`), read straight into the sink with serde: no intermediate value per record.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::{Position, Problem, Reject};
use crate::ingest::coerce::Input;
use crate::ingest::sink::{FieldError, RecordSink};

/// One NdJson line (number `line`, decoded or not) as a record; blank lines are none.
pub fn read_line(
    text: Result<Cow<'_, str>, String>,
    line: u64,
    records: &mut usize,
    sink: &mut RecordSink,
    reject: &mut Reject,
) {
    let position = Some(Position::Line(line));
    let text = match text {
        Ok(text) if text.trim().is_empty() => return,
        Ok(text) => text,
        Err(e) => {
            *records += 1;
            return reject(*records, position, Problem::Malformed(e));
        }
    };
    *records += 1;
    let mut de = serde_json::Deserializer::from_str(&text);
    match read_record(&mut de, sink).and_then(|()| de.end().map_err(Failure::from)) {
        Ok(()) => match sink.commit() {
            Ok(()) => {}
            Err(e) => reject(*records, position, Problem::Field(e)),
        },
        Err(failure) => reject(*records, position, failure.into_problem()),
    }
}

/// Whether `text` is one JSON value (rather than several lines of them).
pub fn is_one_document(text: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(text).is_ok()
}

/// Reads a JSON document's records; `true` when it is an empty array (a batch of no
/// records, sent on purpose).
pub fn read_document(
    text: &str,
    sub_path: Option<&str>,
    records: &mut usize,
    sink: &mut RecordSink,
    reject: &mut Reject,
) -> bool {
    let document: serde_json::Value = match serde_json::from_str(text) {
        Ok(document) => document,
        Err(e) => {
            reject(1, Some(Position::Line(e.line() as u64)), Problem::Malformed(malformed(&e)));
            return false;
        }
    };
    let mut node = &document;
    for key in sub_path.into_iter().flat_map(|p| p.split('.')).filter(|k| !k.is_empty()) {
        node = match node.get(key) {
            Some(child) => child,
            None => {
                let path = sub_path.unwrap_or_default();
                let problem = Problem::Malformed(format!("subPath '{path}' is not in the document"));
                reject(1, None, problem);
                return false;
            }
        };
    }
    let items = match node {
        serde_json::Value::Array(items) => items.as_slice(),
        single @ serde_json::Value::Object(_) => std::slice::from_ref(single),
        _ => {
            reject(1, None, Problem::Malformed("expected an array of objects, or one object".into()));
            return false;
        }
    };
    for (index, value) in items.iter().enumerate() {
        *records += 1;
        let position = Some(Position::Element(index));
        match read_record(value, sink) {
            Ok(()) => {
                if let Err(e) = sink.commit() {
                    reject(index + 1, position, Problem::Field(e));
                }
            }
            Err(failure) => reject(index + 1, position, failure.into_problem()),
        }
    }
    items.is_empty()
}

/// Why a record failed: a field that does not fit, or JSON that is not a record.
enum Failure {
    Field(FieldError),
    Json(serde_json::Error),
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure::Json(e)
    }
}

impl Failure {
    fn into_problem(self) -> Problem {
        match self {
            Failure::Field(e) => Problem::Field(e),
            Failure::Json(e) => Problem::Malformed(malformed(&e)),
        }
    }
}

fn malformed(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message);
    if e.is_data() {
        format!("not a record: {message}")
    } else {
        format!("malformed JSON at column {}: {message}", e.column())
    }
}

fn read_record<'de, D: de::Deserializer<'de, Error = serde_json::Error>>(
    de: D,
    sink: &mut RecordSink,
) -> Result<(), Failure> {
    sink.begin();
    let mut field_error = None;
    let result = de.deserialize_map(RecordVisitor { sink, field_error: &mut field_error });
    match (result, field_error) {
        (_, Some(e)) => Err(Failure::Field(e)),
        (Err(e), None) => Err(Failure::Json(e)),
        (Ok(()), None) => Ok(()),
    }
}

struct RecordVisitor<'s> {
    sink: &'s mut RecordSink,
    /// A field error is kept here, and serde is told only to stop.
    field_error: &'s mut Option<FieldError>,
}

impl<'de> Visitor<'de> for RecordVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(column) = map.next_key_seed(ColumnOf(self.sink))? {
            match column {
                Some(column) => {
                    map.next_value_seed(FieldSeed { sink: self.sink, column, field_error: self.field_error })?
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A key, resolved to the column it fills (`None`: not in the schema, ignored).
struct ColumnOf<'s>(&'s RecordSink);

impl<'de> DeserializeSeed<'de> for ColumnOf<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ColumnOf<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.column(key))
    }
}

struct FieldSeed<'s> {
    sink: &'s mut RecordSink,
    column: usize,
    field_error: &'s mut Option<FieldError>,
}

impl FieldSeed<'_> {
    fn set<E: de::Error>(self, input: Input) -> Result<(), E> {
        self.sink.set(self.column, input).map_err(|e| {
            *self.field_error = Some(e);
            E::custom("field does not fit")
        })
    }
}

impl FieldSeed<'_> {
    fn nested<E: de::Error>(self, what: &str) -> Result<(), E> {
        let field = &self.sink.schema().fields[self.column];
        *self.field_error = Some(FieldError {
            field: field.name.clone(),
            value: Some(what.to_owned()),
            expected: field.kind.name(),
            reason: "nested values are not read into scalar columns".into(),
        });
        Err(E::custom("nested value"))
    }
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.set(Input::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.set(Input::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.set(Input::UInt(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.set(Input::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.set(Input::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.set(Input::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.set(Input::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        self.nested("an object")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _seq: A) -> Result<(), A::Error> {
        self.nested("a list")
    }
}
