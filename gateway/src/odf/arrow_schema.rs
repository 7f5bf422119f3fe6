//! The Arrow side of the ODF model: the dataset's schema (SetDataSchema, RFC-016) to and
//! from Arrow, the system columns' names (SetVocab), and the logical hash of records
//! (arrow-digest, multicodec 0x300016). As kamu writes a schema: offset Int64, op Int32,
//! system_time and the event time Timestamp(ms, UTC), all required; user columns optional.

use std::sync::Arc;

use arrow::datatypes::{DataType as Arrow, Field, Schema, SchemaRef, TimeUnit as ArrowUnit};
use arrow::record_batch::RecordBatch;
use arrow_digest::{RecordDigest, RecordDigestV0};
use sha3::Sha3_256;

use super::hash::{ARROW_SHA3_256, Multihash};
use super::{DataField, DataSchema, DataType, TimeUnit};

/// A schema that ODF cannot describe or the gateway cannot write, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// How every timestamp is stored: milliseconds, UTC.
pub fn timestamp_ms_utc() -> Arrow {
    Arrow::Timestamp(ArrowUnit::Millisecond, Some("UTC".into()))
}

/// An ODF time unit as Arrow's; ODF's default is milliseconds.
pub fn arrow_unit(unit: Option<TimeUnit>) -> ArrowUnit {
    match unit.unwrap_or(TimeUnit::Millisecond) {
        TimeUnit::Second => ArrowUnit::Second,
        TimeUnit::Millisecond => ArrowUnit::Millisecond,
        TimeUnit::Microsecond => ArrowUnit::Microsecond,
        TimeUnit::Nanosecond => ArrowUnit::Nanosecond,
    }
}

/// arrow-digest of the records, as ODF's logical hash.
pub fn logical_hash(schema: &SchemaRef, batches: &[RecordBatch]) -> Multihash {
    let mut hasher = LogicalHasher::new(schema);
    for batch in batches {
        hasher.update(batch);
    }
    hasher.finish()
}

/// The logical hash of records taken a batch at a time; how they are cut into batches does
/// not change it.
pub struct LogicalHasher(RecordDigestV0<Sha3_256>);

impl LogicalHasher {
    pub fn new(schema: &SchemaRef) -> LogicalHasher {
        LogicalHasher(RecordDigestV0::new(schema))
    }

    pub fn update(&mut self, batch: &RecordBatch) {
        self.0.update(batch);
    }

    pub fn finish(self) -> Multihash {
        Multihash::from_digest(ARROW_SHA3_256, &self.0.finalize().into())
    }
}

pub fn to_odf(schema: &Schema) -> Result<DataSchema, SchemaError> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            let data_type = odf_type(f.data_type()).ok_or_else(|| {
                SchemaError(format!(
                    "column '{}' has type {}, which ODF cannot describe",
                    f.name(),
                    f.data_type()
                ))
            })?;
            Ok(DataField {
                name: f.name().clone(),
                data_type: if f.is_nullable() { data_type.optional() } else { data_type },
                extra: None,
            })
        })
        .collect::<Result<_, SchemaError>>()?;
    Ok(DataSchema { fields, extra: None })
}

fn odf_unit(unit: &ArrowUnit) -> TimeUnit {
    match unit {
        ArrowUnit::Second => TimeUnit::Second,
        ArrowUnit::Millisecond => TimeUnit::Millisecond,
        ArrowUnit::Microsecond => TimeUnit::Microsecond,
        ArrowUnit::Nanosecond => TimeUnit::Nanosecond,
    }
}

fn odf_type(t: &Arrow) -> Option<DataType> {
    Some(match t {
        Arrow::Boolean => DataType::Bool,
        Arrow::Int8 => DataType::Int8,
        Arrow::Int16 => DataType::Int16,
        Arrow::Int32 => DataType::Int32,
        Arrow::Int64 => DataType::Int64,
        Arrow::UInt8 => DataType::UInt8,
        Arrow::UInt16 => DataType::UInt16,
        Arrow::UInt32 => DataType::UInt32,
        Arrow::UInt64 => DataType::UInt64,
        Arrow::Float16 => DataType::Float16,
        Arrow::Float32 => DataType::Float32,
        Arrow::Float64 => DataType::Float64,
        Arrow::Utf8 | Arrow::LargeUtf8 | Arrow::Utf8View => DataType::String,
        Arrow::Binary | Arrow::LargeBinary | Arrow::BinaryView => DataType::Binary { fixed_length: None },
        Arrow::FixedSizeBinary(n) => DataType::Binary { fixed_length: u64::try_from(*n).ok() },
        Arrow::Date32 | Arrow::Date64 => DataType::Date,
        Arrow::Decimal128(p, s) => DataType::Decimal { precision: (*p).into(), scale: (*s).into() },
        Arrow::Timestamp(unit, tz) => {
            DataType::Timestamp { unit: Some(odf_unit(unit)), timezone: tz.as_deref().map(str::to_owned) }
        }
        _ => return None,
    })
}

fn arrow_type(t: &DataType) -> Option<Arrow> {
    Some(match t {
        DataType::Bool => Arrow::Boolean,
        DataType::Int8 => Arrow::Int8,
        DataType::Int16 => Arrow::Int16,
        DataType::Int32 => Arrow::Int32,
        DataType::Int64 => Arrow::Int64,
        DataType::UInt8 => Arrow::UInt8,
        DataType::UInt16 => Arrow::UInt16,
        DataType::UInt32 => Arrow::UInt32,
        DataType::UInt64 => Arrow::UInt64,
        DataType::Float16 => Arrow::Float16,
        DataType::Float32 => Arrow::Float32,
        DataType::Float64 => Arrow::Float64,
        DataType::String => Arrow::Utf8,
        DataType::Binary { fixed_length: None } => Arrow::Binary,
        DataType::Binary { fixed_length: Some(n) } => Arrow::FixedSizeBinary(i32::try_from(*n).ok()?),
        DataType::Date => Arrow::Date32,
        DataType::Decimal { precision, scale } => {
            Arrow::Decimal128(u8::try_from(*precision).ok()?, i8::try_from(*scale).ok()?)
        }
        DataType::Timestamp { unit, timezone } => {
            Arrow::Timestamp(arrow_unit(*unit), Some(timezone.as_deref().unwrap_or("UTC").into()))
        }
        DataType::Null => Arrow::Null,
        _ => return None,
    })
}

pub fn to_arrow(schema: &DataSchema) -> Result<SchemaRef, SchemaError> {
    let fields = schema
        .fields
        .iter()
        .map(|f| {
            let (inner, nullable) = f.data_type.split_optional();
            let data_type = arrow_type(inner).ok_or_else(|| {
                SchemaError(format!(
                    "column '{}' has type {}, which the gateway does not write",
                    f.name,
                    inner.kind()
                ))
            })?;
            Ok(Field::new(&f.name, data_type, nullable))
        })
        .collect::<Result<Vec<_>, SchemaError>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The data columns of a dataset schema: without offset, op and system_time.
pub fn data_columns(full: &Schema, vocab: &Vocab) -> SchemaRef {
    let system = [&vocab.offset, &vocab.op, &vocab.system_time];
    Arc::new(Schema::new(
        full.fields().iter().filter(|f| !system.contains(&f.name())).cloned().collect::<Vec<_>>(),
    ))
}

/// Names of the system columns (ODF's defaults; SetVocab may rename them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    pub offset: String,
    pub op: String,
    pub system_time: String,
    pub event_time: String,
}

impl Vocab {
    pub fn of(vocab: Option<&super::SetVocab>) -> Vocab {
        let pick = |name: Option<&Option<String>>, default: &str| {
            name.and_then(Option::as_deref).unwrap_or(default).to_owned()
        };
        Vocab {
            offset: pick(vocab.map(|v| &v.offset_column), "offset"),
            op: pick(vocab.map(|v| &v.operation_type_column), "op"),
            system_time: pick(vocab.map(|v| &v.system_time_column), "system_time"),
            event_time: pick(vocab.map(|v| &v.event_time_column), "event_time"),
        }
    }
}
