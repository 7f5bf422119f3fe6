//! The schema records are coerced to: a push source's read schema (RFC-016 or DDL) as the
//! column kinds the readers fill, and as Arrow.

use std::sync::Arc;

use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit as ArrowUnit};

use crate::odf::arrow_schema::arrow_unit;
use crate::odf::ddl::parse_ddl_schema;
use crate::odf::{DataType, ReadStep};

/// What a reader fills a column with. Each kind accepts several input shapes (see
/// `coerce.rs`); the column's Arrow type is exact.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Bool,
    /// Signed integer of this many bits.
    Int(u8),
    /// Unsigned integer of this many bits.
    UInt(u8),
    Float32,
    Float64,
    String,
    Binary,
    Date,
    Timestamp {
        unit: ArrowUnit,
        timezone: Arc<str>,
    },
    Decimal {
        precision: u8,
        scale: i8,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadField {
    pub name: String,
    pub kind: Kind,
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadSchema {
    pub fields: Vec<ReadField>,
}

impl ReadSchema {
    /// The schema a read step declares, in either spelling.
    pub fn of(read: &ReadStep) -> Result<ReadSchema, String> {
        let schema = match read.schema() {
            (Some(ddl), None) => parse_ddl_schema(ddl).map_err(|e| e.to_string())?,
            (None, Some(schema)) => schema.clone(),
            (Some(_), Some(_)) => return Err("both ddlSchema and schema are given".into()),
            (None, None) => return Err("the read step declares no schema".into()),
        };
        let fields = schema
            .fields
            .iter()
            .map(|f| {
                let (inner, nullable) = f.data_type.split_optional();
                let kind = kind_of(inner).map_err(|e| format!("column '{}': {e}", f.name))?;
                Ok(ReadField { name: f.name.clone(), kind, nullable })
            })
            .collect::<Result<_, String>>()?;
        Ok(ReadSchema { fields })
    }

    pub fn arrow(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.fields.iter().map(|f| Field::new(&f.name, f.kind.arrow(), f.nullable)).collect::<Vec<_>>(),
        ))
    }
}

fn kind_of(data_type: &DataType) -> Result<Kind, String> {
    Ok(match data_type {
        DataType::Bool => Kind::Bool,
        DataType::Int8 => Kind::Int(8),
        DataType::Int16 => Kind::Int(16),
        DataType::Int32 => Kind::Int(32),
        DataType::Int64 => Kind::Int(64),
        DataType::UInt8 => Kind::UInt(8),
        DataType::UInt16 => Kind::UInt(16),
        DataType::UInt32 => Kind::UInt(32),
        DataType::UInt64 => Kind::UInt(64),
        DataType::Float32 => Kind::Float32,
        DataType::Float64 => Kind::Float64,
        DataType::String => Kind::String,
        DataType::Binary { fixed_length: None } => Kind::Binary,
        DataType::Date => Kind::Date,
        DataType::Timestamp { unit, timezone } => {
            Kind::Timestamp { unit: arrow_unit(*unit), timezone: timezone.as_deref().unwrap_or("UTC").into() }
        }
        DataType::Decimal { precision, scale } => {
            let precision = u8::try_from(*precision).ok().filter(|p| (1..=38).contains(p));
            let scale = i8::try_from(*scale).ok().filter(|s| *s >= 0);
            match (precision, scale) {
                (Some(precision), Some(scale)) if scale as u8 <= precision => {
                    Kind::Decimal { precision, scale }
                }
                _ => {
                    return Err(
                        "Decimal needs a precision of 1 to 38 and a scale from 0 to the precision".into()
                    );
                }
            }
        }
        DataType::Option { .. } => return Err("Option inside Option is not a type".into()),
        other => {
            return Err(format!(
                "type {} cannot be read from pushed data (supported: Bool, Int8-64, UInt8-64, Float32, \
                 Float64, String, Binary, Date, Timestamp, Decimal)",
                other.kind()
            ));
        }
    })
}

impl Kind {
    pub fn arrow(&self) -> ArrowType {
        match self {
            Kind::Bool => ArrowType::Boolean,
            Kind::Int(8) => ArrowType::Int8,
            Kind::Int(16) => ArrowType::Int16,
            Kind::Int(32) => ArrowType::Int32,
            Kind::Int(_) => ArrowType::Int64,
            Kind::UInt(8) => ArrowType::UInt8,
            Kind::UInt(16) => ArrowType::UInt16,
            Kind::UInt(32) => ArrowType::UInt32,
            Kind::UInt(_) => ArrowType::UInt64,
            Kind::Float32 => ArrowType::Float32,
            Kind::Float64 => ArrowType::Float64,
            Kind::String => ArrowType::Utf8,
            Kind::Binary => ArrowType::Binary,
            Kind::Date => ArrowType::Date32,
            Kind::Timestamp { unit, timezone } => ArrowType::Timestamp(*unit, Some(timezone.clone())),
            Kind::Decimal { precision, scale } => ArrowType::Decimal128(*precision, *scale),
        }
    }

    /// The name used in errors, as in the manifest.
    pub fn name(&self) -> String {
        match self {
            Kind::Bool => "Bool".into(),
            Kind::Int(bits) => format!("Int{bits}"),
            Kind::UInt(bits) => format!("UInt{bits}"),
            Kind::Float32 => "Float32".into(),
            Kind::Float64 => "Float64".into(),
            Kind::String => "String".into(),
            Kind::Binary => "Binary".into(),
            Kind::Date => "Date".into(),
            Kind::Timestamp { unit, .. } => format!("Timestamp({unit:?})"),
            Kind::Decimal { precision, scale } => format!("Decimal({precision}, {scale})"),
        }
    }
}
