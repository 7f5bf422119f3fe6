//! Shapes preprocessed records into the dataset's columns: the event time column first (from
//! the data, else the request's event time, else the system time), timestamps in
//! milliseconds UTC, user columns nullable, and, once the dataset has a schema, exactly its
//! columns in its order and types.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, TimestampMillisecondArray, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use super::error::IngestError;
use crate::odf::Vocab;
use crate::odf::arrow_schema::timestamp_ms_utc;

/// Records ready to merge, and the `op` column the input carried (changelog and upsert
/// sources say per record what happened).
pub struct Normalized {
    pub batch: RecordBatch,
    pub op: Option<ArrayRef>,
}

/// The event time of records whose data has none.
pub enum Fallback {
    /// The same for every record (the request's event time, else the system time).
    One(DateTime<Utc>),
    /// Per record, in milliseconds: each message's receive time, when records map one to
    /// one to the rows read (no preprocess).
    PerRecord(Vec<i64>),
}

impl Fallback {
    fn column(&self, rows: usize) -> TimestampMillisecondArray {
        let times = match self {
            Fallback::One(time) => vec![time.timestamp_millis(); rows],
            Fallback::PerRecord(times) => times.clone(),
        };
        TimestampMillisecondArray::from(times).with_timezone("UTC")
    }
}

const STRICT: CastOptions<'static> =
    CastOptions { safe: false, format_options: arrow::util::display::FormatOptions::new() };

/// A cast the types allow can still fail on a value (a fraction into an integer): the
/// data's fault. A cast the types do not allow is the source's.
fn cast(column: &ArrayRef, to: &DataType, name: &str) -> Result<ArrayRef, IngestError> {
    if column.data_type() == to {
        return Ok(column.clone());
    }
    let from = column.data_type();
    if !arrow::compute::can_cast_types(from, to) {
        return Err(IngestError::Source(format!("column '{name}' is {from} where {to} is needed")));
    }
    cast_with_options(column, to, &STRICT)
        .map_err(|e| IngestError::Data(format!("column '{name}': a value does not fit {to}: {e}")))
}

/// The `op` values a changelog or upsert source may send: 0 (+A), 1 (-R), 2 (-C), 3 (+C).
fn check_ops(op: &ArrayRef, name: &str) -> Result<(), IngestError> {
    let Some(ops) = op.as_any().downcast_ref::<arrow::array::Int32Array>() else {
        return Err(IngestError::Internal(format!("'{name}' was cast to Int32 but is {}", op.data_type())));
    };
    match ops.iter().enumerate().find(|(_, v)| v.is_some_and(|v| !(0..=3).contains(&v))) {
        Some((row, Some(bad))) => Err(IngestError::Data(format!(
            "record {}: '{name}' is {bad}, where 0 (+A), 1 (-R), 2 (-C) or 3 (+C) is expected",
            row + 1
        ))),
        _ => Ok(()),
    }
}

/// `takes_op`: whether the merge strategy reads an `op` column from the input.
pub fn normalize(
    input: RecordBatch,
    vocab: &Vocab,
    takes_op: bool,
    fallback: &Fallback,
    dataset_schema: Option<&SchemaRef>,
) -> Result<Normalized, IngestError> {
    let schema = input.schema();
    for reserved in [&vocab.offset, &vocab.system_time] {
        if schema.index_of(reserved).is_ok() {
            return Err(IngestError::Source(format!("column '{reserved}' is a system column; rename it")));
        }
    }
    let mut op = None;
    let mut event_time = None;
    let mut fields: Vec<Arc<Field>> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in schema.fields().iter().zip(input.columns()) {
        if field.name() == &vocab.op {
            if !takes_op {
                return Err(IngestError::Source(format!(
                    "column '{}' is a system column (only ChangelogStream and UpsertStream sources send it)",
                    vocab.op
                )));
            }
            let ops = cast(column, &DataType::Int32, &vocab.op)?;
            check_ops(&ops, &vocab.op)?;
            op = Some(ops);
        } else if field.name() == &vocab.event_time {
            event_time = Some(event_time_column(column, &vocab.event_time, fallback)?);
        } else {
            let column = match column.data_type() {
                DataType::Timestamp(_, _) => cast(column, &timestamp_ms_utc(), field.name())?,
                _ => column.clone(),
            };
            fields.push(Arc::new(Field::new(field.name(), column.data_type().clone(), true)));
            columns.push(column);
        }
    }
    let rows = input.num_rows();
    let event_time = event_time.unwrap_or_else(|| Arc::new(fallback.column(rows)));
    fields.insert(0, Arc::new(Field::new(&vocab.event_time, timestamp_ms_utc(), false)));
    columns.insert(0, event_time);

    let batch = match dataset_schema {
        None => RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?,
        Some(target) => align(&fields, columns, target, rows)?,
    };
    Ok(Normalized { batch, op })
}

/// The event time as Timestamp(ms, UTC); missing values get the fallback time.
fn event_time_column(column: &ArrayRef, name: &str, fallback: &Fallback) -> Result<ArrayRef, IngestError> {
    let column = match column.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            cast(column, &timestamp_ms_utc(), name)?
        }
        other => {
            return Err(IngestError::Source(format!(
                "the event time column '{name}' is {other}; it must be a timestamp or a date"
            )));
        }
    };
    if column.null_count() == 0 {
        return Ok(column);
    }
    let Some(times) = column.as_any().downcast_ref::<TimestampMillisecondArray>() else { return Ok(column) };
    let fallback = fallback.column(times.len());
    let filled: TimestampMillisecondArray =
        times.iter().zip(fallback.values()).map(|(t, f)| Some(t.unwrap_or(*f))).collect();
    Ok(Arc::new(filled.with_timezone("UTC")))
}

/// Puts the columns in the dataset's order and types. Extra or missing columns are errors:
/// every source of a dataset must produce its schema.
fn align(
    fields: &[Arc<Field>],
    columns: Vec<ArrayRef>,
    target: &SchemaRef,
    rows: usize,
) -> Result<RecordBatch, IngestError> {
    let names = |fs: &mut dyn Iterator<Item = &String>| fs.cloned().collect::<Vec<_>>().join(", ");
    let extra: Vec<&String> =
        fields.iter().map(|f| f.name()).filter(|n| target.index_of(n).is_err()).collect();
    if !extra.is_empty() {
        return Err(IngestError::Source(format!(
            "columns {} are not in the dataset schema ({})",
            names(&mut extra.into_iter()),
            names(&mut target.fields().iter().map(|f| f.name()))
        )));
    }
    let mut aligned = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let column = match fields.iter().position(|f| f.name() == field.name()) {
            Some(i) => cast(&columns[i], field.data_type(), field.name())?,
            None if field.is_nullable() => new_null_array(field.data_type(), rows),
            None => {
                return Err(IngestError::Source(format!(
                    "column '{}' of the dataset schema is missing",
                    field.name()
                )));
            }
        };
        aligned.push(column);
    }
    Ok(RecordBatch::try_new(target.clone(), aligned)?)
}
