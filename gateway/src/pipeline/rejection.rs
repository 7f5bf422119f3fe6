//! A rejected record as senders and operators read it: which record, where, which field,
//! the value, the type expected and why. The same shape goes into HTTP error bodies, MQTT
//! and CoAP diagnostics and the quarantine.

use serde::{Deserialize, Serialize};

use crate::ingest::{Position, Problem, RecordError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// 1-based record number in the payload; 0 when the whole payload is meant.
    pub record: usize,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub element: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub byte: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expected: Option<String>,
    pub reason: String,
}

/// Values longer than this are cut in replies: a sender needs to recognise the value, not
/// get a megabyte back.
const VALUE_CHARS: usize = 200;

impl Rejection {
    /// A rejection of a whole payload.
    pub fn whole(reason: &str) -> Rejection {
        Rejection {
            record: 0,
            line: None,
            element: None,
            byte: None,
            field: None,
            value: None,
            expected: None,
            reason: reason.to_owned(),
        }
    }
}

impl From<&RecordError> for Rejection {
    fn from(error: &RecordError) -> Rejection {
        let mut rejection = Rejection { record: error.record, ..Rejection::whole("") };
        match error.position {
            Some(Position::Line(line)) => rejection.line = Some(line),
            Some(Position::Element(i)) => rejection.element = Some(i),
            Some(Position::Byte(b)) => rejection.byte = Some(b),
            None => {}
        }
        match &error.problem {
            Problem::Field(field) => {
                rejection.field = Some(field.field.clone());
                rejection.value = field.value.as_deref().map(cut);
                rejection.expected = Some(field.expected.clone());
                rejection.reason = field.reason.clone();
            }
            Problem::Malformed(reason) | Problem::Refused(reason) => rejection.reason = reason.clone(),
        }
        rejection
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.record {
            0 => f.write_str("payload")?,
            n => write!(f, "record {n}")?,
        }
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field '{field}'")?;
        }
        if let (Some(value), Some(expected)) = (&self.value, &self.expected) {
            write!(f, ": {value} is not a {expected}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

fn cut(value: &str) -> String {
    match value.char_indices().nth(VALUE_CHARS) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_owned(),
    }
}
