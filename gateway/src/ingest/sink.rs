//! `RecordSink`: where readers put records, one field at a time. A record is staged whole and
//! appended only once every field fits, so a bad record leaves nothing behind.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Decimal128Builder, Float64Builder, Int64Builder, StringBuilder,
    UInt64Builder,
};
use arrow::compute::cast;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::binding::{BindingRule, ColumnBinding, Pattern};
use super::coerce::{Formats, Input, Value, coerce};
use super::read_schema::{Kind, ReadSchema};

/// A field that did not fit its column.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    /// The value as received, rendered for people; `None` when the field was missing.
    pub value: Option<String>,
    pub expected: String,
    pub reason: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(value) => {
                write!(f, "field '{}': {value} is not a {}: {}", self.field, self.expected, self.reason)
            }
            None => write!(f, "field '{}': {}", self.field, self.reason),
        }
    }
}

enum Column {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    UInt(UInt64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Decimal(Decimal128Builder, u8, i8),
}

impl Column {
    fn new(kind: &Kind) -> Column {
        match kind {
            Kind::Bool => Column::Bool(BooleanBuilder::new()),
            Kind::Int(_) | Kind::Date | Kind::Timestamp { .. } => Column::Int(Int64Builder::new()),
            Kind::UInt(_) => Column::UInt(UInt64Builder::new()),
            Kind::Float32 | Kind::Float64 => Column::Float(Float64Builder::new()),
            Kind::String => Column::Text(StringBuilder::new()),
            Kind::Binary => Column::Bytes(BinaryBuilder::new()),
            Kind::Decimal { precision, scale } => {
                Column::Decimal(Decimal128Builder::new(), *precision, *scale)
            }
        }
    }

    /// `value` was made by `coerce` for this column's kind, so its shape matches.
    fn append(&mut self, value: Option<Value>) {
        match (self, value) {
            (Column::Bool(b), Some(Value::Bool(v))) => b.append_value(v),
            (Column::Int(b), Some(Value::Int(v))) => b.append_value(v),
            (Column::UInt(b), Some(Value::UInt(v))) => b.append_value(v),
            (Column::Float(b), Some(Value::Float(v))) => b.append_value(v),
            (Column::Text(b), Some(Value::Text(v))) => b.append_value(v),
            (Column::Bytes(b), Some(Value::Bytes(v))) => b.append_value(v),
            (Column::Decimal(b, ..), Some(Value::Decimal(v))) => b.append_value(v),
            (Column::Bool(b), _) => b.append_null(),
            (Column::Int(b), _) => b.append_null(),
            (Column::UInt(b), _) => b.append_null(),
            (Column::Float(b), _) => b.append_null(),
            (Column::Text(b), _) => b.append_null(),
            (Column::Bytes(b), _) => b.append_null(),
            (Column::Decimal(b, ..), _) => b.append_null(),
        }
    }

    fn finish(&mut self, kind: &Kind) -> Result<ArrayRef, ArrowError> {
        let array: ArrayRef = match self {
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Int(b) => Arc::new(b.finish()),
            Column::UInt(b) => Arc::new(b.finish()),
            Column::Float(b) => Arc::new(b.finish()),
            Column::Text(b) => Arc::new(b.finish()),
            Column::Bytes(b) => Arc::new(b.finish()),
            Column::Decimal(b, precision, scale) => {
                return Ok(Arc::new(b.finish().with_precision_and_scale(*precision, *scale)?));
            }
        };
        // Values were range-checked when coerced, so narrowing casts are exact.
        let target = kind.arrow();
        if array.data_type() == &target { Ok(array) } else { cast(&array, &target) }
    }
}

pub struct RecordSink {
    schema: ReadSchema,
    formats: Formats,
    by_name: HashMap<String, usize>,
    staged: Vec<Option<Value>>,
    /// Values from outside the payload (a device id from a topic, a receive time) for the
    /// columns a record leaves out or sets to null; set per message.
    defaults: Vec<(usize, Value)>,
    /// Rules every record of the message must keep (a device id bound to its sender).
    bindings: Vec<Bound>,
    /// Empty when the sink only validates and counts (a check before an acknowledgement).
    columns: Vec<Column>,
    keeps_records: bool,
    rows: usize,
}

/// A column binding, ready to check against staged values.
struct Bound {
    column: usize,
    check: BoundCheck,
    binding: ColumnBinding,
}

enum BoundCheck {
    /// One value, coerced to the column's kind: it also fills a record that leaves it out.
    Exact(Value),
    Pattern(Pattern),
    Never,
}

impl RecordSink {
    pub fn new(schema: ReadSchema, formats: Formats) -> RecordSink {
        RecordSink::with_columns(schema, formats, true)
    }

    /// A sink that checks and counts records like `new`'s, but keeps none: no column
    /// buffers are built, so checking a small payload costs little more than parsing it.
    pub fn validating(schema: ReadSchema, formats: Formats) -> RecordSink {
        RecordSink::with_columns(schema, formats, false)
    }

    fn with_columns(schema: ReadSchema, formats: Formats, keeps_records: bool) -> RecordSink {
        let by_name = schema.fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        let columns = match keeps_records {
            true => schema.fields.iter().map(|f| Column::new(&f.kind)).collect(),
            false => Vec::new(),
        };
        let staged = vec![None; schema.fields.len()];
        RecordSink {
            schema,
            formats,
            by_name,
            staged,
            defaults: Vec::new(),
            bindings: Vec::new(),
            columns,
            keeps_records,
            rows: 0,
        }
    }

    /// Drops the records appended so far.
    pub fn discard(&mut self) {
        if self.keeps_records {
            // Finishing empties the builders; the arrays are dropped.
            let _ = self.finish();
        }
        self.rows = 0;
    }

    pub fn schema(&self) -> &ReadSchema {
        &self.schema
    }

    /// The column a field name fills, if any; unknown fields are ignored by readers.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The name of the schema's first timestamp column (where a SenML row's time goes).
    pub fn first_timestamp_column(&self) -> Option<String> {
        self.schema.fields.iter().find(|f| matches!(f.kind, Kind::Timestamp { .. })).map(|f| f.name.clone())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Starts a record, dropping whatever a failed one staged.
    pub fn begin(&mut self) {
        self.staged.iter_mut().for_each(|v| *v = None);
    }

    pub fn set(&mut self, column: usize, input: Input) -> Result<(), FieldError> {
        self.staged[column] = Some(self.coerce(column, input)?);
        Ok(())
    }

    fn coerce(&self, column: usize, input: Input) -> Result<Value, FieldError> {
        let field = &self.schema.fields[column];
        coerce(&field.kind, input, &self.formats).map_err(|reason| FieldError {
            field: field.name.clone(),
            value: Some(input.to_string()),
            expected: field.kind.name(),
            reason,
        })
    }

    /// Sets the values that fill the given columns where the coming records leave them out
    /// (until the next call). Each is coerced like a field of the payload.
    pub fn set_defaults<'v>(
        &mut self,
        values: impl IntoIterator<Item = (usize, Input<'v>)>,
    ) -> Result<(), FieldError> {
        self.defaults.clear();
        for (column, input) in values {
            let value = self.coerce(column, input)?;
            self.defaults.push((column, value));
        }
        Ok(())
    }

    /// Whether something besides the record fills `column` (a value given with the message,
    /// a binding to one value).
    pub fn fills(&self, column: usize) -> bool {
        self.defaults.iter().any(|(c, _)| *c == column)
            || self.bindings.iter().any(|b| b.column == column && matches!(b.check, BoundCheck::Exact(_)))
    }

    /// Sets the column bindings the coming records must keep (until the next call). A
    /// binding to one value is coerced like a field of the payload.
    pub fn set_bindings(&mut self, bindings: Vec<(usize, ColumnBinding)>) -> Result<(), FieldError> {
        self.bindings.clear();
        for (column, binding) in bindings {
            let check = match &binding.rule {
                BindingRule::Pattern(pattern) => match pattern.exact() {
                    Some(value) => BoundCheck::Exact(
                        self.coerce(column, Input::Str(value))
                            .map_err(|e| FieldError { reason: format!("{}: {}", binding, e.reason), ..e })?,
                    ),
                    None => BoundCheck::Pattern(pattern.clone()),
                },
                BindingRule::Unavailable(_) => BoundCheck::Never,
            };
            self.bindings.push(Bound { column, check, binding });
        }
        Ok(())
    }

    /// Appends the staged record, if every required field has a value and every bound
    /// column the value its binding allows.
    pub fn commit(&mut self) -> Result<(), FieldError> {
        for (column, value) in &self.defaults {
            if matches!(self.staged[*column], None | Some(Value::Null)) {
                self.staged[*column] = Some(value.clone());
            }
        }
        // Exact bindings fill the columns a record leaves out first, whatever their order,
        // so that a pattern on the same column checks the filled value.
        for bound in &self.bindings {
            let staged = &mut self.staged[bound.column];
            if let (None | Some(Value::Null), BoundCheck::Exact(value)) = (&staged, &bound.check) {
                *staged = Some(value.clone());
            }
        }
        for bound in &self.bindings {
            let staged = &self.staged[bound.column];
            let kept = match (staged, &bound.check) {
                (None | Some(Value::Null), _) | (_, BoundCheck::Never) => false,
                (Some(value), BoundCheck::Exact(bound)) => value == bound,
                (Some(value), BoundCheck::Pattern(pattern)) => {
                    text_of(value).is_some_and(|t| pattern.matches(&t))
                }
            };
            if !kept {
                let expected = match &bound.binding.rule {
                    BindingRule::Pattern(p) => match p.exact() {
                        Some(value) => format!("value '{value}'"),
                        None => format!("value matching '{p}'"),
                    },
                    BindingRule::Unavailable(_) => "value its sender may write".to_string(),
                };
                return Err(FieldError {
                    field: self.schema.fields[bound.column].name.clone(),
                    value: staged.as_ref().filter(|v| !matches!(v, Value::Null)).map(rendered),
                    expected,
                    reason: bound.binding.to_string(),
                });
            }
        }
        for (field, value) in self.schema.fields.iter().zip(&self.staged) {
            let missing = matches!(value, None | Some(Value::Null));
            if missing && !field.nullable {
                let reason = if value.is_none() { "is missing" } else { "is null" };
                return Err(FieldError {
                    field: field.name.clone(),
                    value: None,
                    expected: field.kind.name(),
                    reason: format!("{reason}, but the schema requires it"),
                });
            }
        }
        if self.keeps_records {
            for (column, value) in self.columns.iter_mut().zip(self.staged.iter_mut()) {
                column.append(value.take());
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Everything committed so far, as one batch in the read schema.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        if !self.keeps_records {
            return Err(ArrowError::InvalidArgumentError("a validating sink keeps no records".into()));
        }
        let arrays = self
            .columns
            .iter_mut()
            .zip(&self.schema.fields)
            .map(|(column, field)| column.finish(&field.kind))
            .collect::<Result<Vec<_>, _>>()?;
        self.rows = 0;
        RecordBatch::try_new(self.schema.arrow(), arrays)
    }
}

/// A value as text, for a binding's pattern; `None` for bytes, which no pattern matches.
fn text_of(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    Some(match value {
        Value::Text(t) => t.as_str().into(),
        Value::Int(i) => i.to_string().into(),
        Value::UInt(u) => u.to_string().into(),
        Value::Float(f) => f.to_string().into(),
        Value::Bool(b) => b.to_string().into(),
        Value::Decimal(d) => d.to_string().into(),
        Value::Null | Value::Bytes(_) => return None,
    })
}

/// A value as a rejection shows it.
fn rendered(value: &Value) -> String {
    match value {
        Value::Text(t) => format!("\"{t}\""),
        Value::Bytes(b) => format!("{} bytes", b.len()),
        other => text_of(other).map(|t| t.into_owned()).unwrap_or_default(),
    }
}
