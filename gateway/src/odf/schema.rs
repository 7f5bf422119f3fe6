//! The ODF logical schema (RFC-016): `DataSchema` of `DataField`s with `DataType`s.
//!
//! In YAML a type is a tagged mapping (`{kind: Timestamp, unit: Millisecond}`) or, for a type
//! without parameters, its bare name (`int64`, `string`, `timestamp`).

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use super::spelling::{member, odf_enum, split_kind};

/// ODF extension attributes: `<domain>/<path>` keys to any JSON value.
pub type ExtraAttributes = serde_json::Map<String, serde_json::Value>;

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSchema {
    pub fields: Vec<DataField>,
    pub extra: Option<ExtraAttributes>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataField {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: DataType,
    pub extra: Option<ExtraAttributes>,
}

odf_enum! {
    pub enum TimeUnit { Second, Millisecond, Microsecond, Nanosecond }
}

/// A logical data type. Parameters the spec marks optional stay `None` when not given, so a
/// schema reads back exactly as it was written (e.g. `unit` of Timestamp defaults to
/// Millisecond, `timezone` to UTC, when read as Arrow).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all_fields = "camelCase")]
pub enum DataType {
    Binary { fixed_length: Option<u64> },
    Bool,
    Date,
    Decimal { precision: u32, scale: i32 },
    Duration { unit: Option<TimeUnit> },
    Float16,
    Float32,
    Float64,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    List { item_type: Box<DataType>, fixed_length: Option<u64> },
    Map { key_type: Box<DataType>, value_type: Box<DataType>, keys_sorted: Option<bool> },
    Null,
    Option { inner: Box<DataType> },
    Struct { fields: Vec<DataField> },
    Time { unit: Option<TimeUnit> },
    Timestamp { unit: Option<TimeUnit>, timezone: Option<String> },
    String,
}

impl DataType {
    /// Kinds in union order: the FlatBuffers type tag of a kind is its position plus one.
    pub const KINDS: &'static [&'static str] = &[
        "Binary",
        "Bool",
        "Date",
        "Decimal",
        "Duration",
        "Float16",
        "Float32",
        "Float64",
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
        "List",
        "Map",
        "Null",
        "Option",
        "Struct",
        "Time",
        "Timestamp",
        "String",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            DataType::Binary { .. } => "Binary",
            DataType::Bool => "Bool",
            DataType::Date => "Date",
            DataType::Decimal { .. } => "Decimal",
            DataType::Duration { .. } => "Duration",
            DataType::Float16 => "Float16",
            DataType::Float32 => "Float32",
            DataType::Float64 => "Float64",
            DataType::Int8 => "Int8",
            DataType::Int16 => "Int16",
            DataType::Int32 => "Int32",
            DataType::Int64 => "Int64",
            DataType::UInt8 => "UInt8",
            DataType::UInt16 => "UInt16",
            DataType::UInt32 => "UInt32",
            DataType::UInt64 => "UInt64",
            DataType::List { .. } => "List",
            DataType::Map { .. } => "Map",
            DataType::Null => "Null",
            DataType::Option { .. } => "Option",
            DataType::Struct { .. } => "Struct",
            DataType::Time { .. } => "Time",
            DataType::Timestamp { .. } => "Timestamp",
            DataType::String => "String",
        }
    }

    /// Milliseconds in UTC: what ODF requires of `system_time` and the event time column.
    pub fn timestamp_millis_utc() -> Self {
        DataType::Timestamp { unit: Some(TimeUnit::Millisecond), timezone: Some("UTC".into()) }
    }

    /// The type inside `Option`, and whether it was one (a nullable column).
    pub fn split_optional(&self) -> (&DataType, bool) {
        match self {
            DataType::Option { inner } => (inner.as_ref(), true),
            other => (other, false),
        }
    }

    /// Wraps in `Option` (a nullable column), unless it already is one.
    pub fn optional(self) -> Self {
        match self {
            DataType::Option { .. } => self,
            other => DataType::Option { inner: Box::new(other) },
        }
    }
}

/// Every parameter any kind takes; which ones a kind accepts is checked in `build`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    fixed_length: Option<u64>,
    precision: Option<u32>,
    scale: Option<i32>,
    unit: Option<TimeUnit>,
    timezone: Option<String>,
    item_type: Option<Box<DataType>>,
    key_type: Option<Box<DataType>>,
    value_type: Option<Box<DataType>>,
    keys_sorted: Option<bool>,
    inner: Option<Box<DataType>>,
    fields: Option<Vec<DataField>>,
}

impl Params {
    fn build(self, kind: &str) -> Result<DataType, String> {
        Ok(match kind {
            "Binary" => DataType::Binary { fixed_length: self.fixed_length },
            "Bool" => DataType::Bool,
            "Date" => DataType::Date,
            "Decimal" => DataType::Decimal {
                precision: required(kind, self.precision, "precision")?,
                scale: required(kind, self.scale, "scale")?,
            },
            "Duration" => DataType::Duration { unit: self.unit },
            "Float16" => DataType::Float16,
            "Float32" => DataType::Float32,
            "Float64" => DataType::Float64,
            "Int8" => DataType::Int8,
            "Int16" => DataType::Int16,
            "Int32" => DataType::Int32,
            "Int64" => DataType::Int64,
            "UInt8" => DataType::UInt8,
            "UInt16" => DataType::UInt16,
            "UInt32" => DataType::UInt32,
            "UInt64" => DataType::UInt64,
            "List" => DataType::List {
                item_type: required(kind, self.item_type, "itemType")?,
                fixed_length: self.fixed_length,
            },
            "Map" => DataType::Map {
                key_type: required(kind, self.key_type, "keyType")?,
                value_type: required(kind, self.value_type, "valueType")?,
                keys_sorted: self.keys_sorted,
            },
            "Null" => DataType::Null,
            "Option" => DataType::Option { inner: required(kind, self.inner, "inner")? },
            "Struct" => DataType::Struct { fields: required(kind, self.fields, "fields")? },
            "Time" => DataType::Time { unit: self.unit },
            "Timestamp" => DataType::Timestamp { unit: self.unit, timezone: self.timezone },
            "String" => DataType::String,
            other => return Err(format!("unknown DataType kind '{other}'")),
        })
    }
}

fn required<T>(kind: &str, value: Option<T>, field: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("{kind}: missing field '{field}'"))
}

/// The parameters each kind accepts (camelCase, as in YAML).
fn accepted_params(kind: &str) -> &'static [&'static str] {
    match kind {
        "Binary" => &["fixedLength"],
        "Decimal" => &["precision", "scale"],
        "Duration" | "Time" => &["unit"],
        "List" => &["itemType", "fixedLength"],
        "Map" => &["keyType", "valueType", "keysSorted"],
        "Option" => &["inner"],
        "Struct" => &["fields"],
        "Timestamp" => &["unit", "timezone"],
        _ => &[],
    }
}

impl<'de> Deserialize<'de> for DataType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = Value::deserialize(d)?;
        let (kind, fields) = split_kind::<D::Error>("DataType", value, Self::KINDS, true)?;
        if let Value::Mapping(map) = &fields {
            let accepted = accepted_params(kind);
            for key in map.keys() {
                let key = key.as_str().unwrap_or_default();
                if !accepted.contains(&key) {
                    return Err(D::Error::custom(format!(
                        "{kind}: unknown field '{key}'{}",
                        if accepted.is_empty() {
                            " (this type takes no parameters)".to_string()
                        } else {
                            format!(", expected one of: {}", accepted.join(", "))
                        }
                    )));
                }
            }
        }
        let params: Params = member(kind, fields)?;
        params.build(kind).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<DataType, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(yaml)
    }

    #[test]
    fn shorthand_and_tagged_forms_agree() {
        assert_eq!(parse("int64").unwrap(), DataType::Int64);
        assert_eq!(parse("UInt8").unwrap(), DataType::UInt8);
        assert_eq!(parse("{kind: Int64}").unwrap(), DataType::Int64);
        assert_eq!(parse("{kind: string}").unwrap(), DataType::String);
        assert_eq!(parse("timestamp").unwrap(), DataType::Timestamp { unit: None, timezone: None });
        assert_eq!(
            parse("{kind: Timestamp, unit: millisecond, timezone: UTC}").unwrap(),
            DataType::timestamp_millis_utc()
        );
        assert_eq!(parse("{kind: Option, inner: float64}").unwrap(), DataType::Float64.optional());
    }

    #[test]
    fn bad_types_are_named() {
        let e = parse("int65").unwrap_err().to_string();
        assert!(e.contains("unknown DataType 'int65'"), "{e}");
        let e = parse("{kind: Decimal, precision: 3}").unwrap_err().to_string();
        assert!(e.contains("missing field 'scale'"), "{e}");
        let e = parse("{kind: Int64, unit: Second}").unwrap_err().to_string();
        assert!(e.contains("Int64: unknown field 'unit'"), "{e}");
        let e = parse("{kind: Timestamp, unit: Fortnight}").unwrap_err().to_string();
        assert!(e.contains("unknown TimeUnit 'Fortnight'"), "{e}");
    }

    #[test]
    fn serializes_in_the_tagged_form() {
        let t = DataType::List { item_type: Box::new(DataType::Int32), fixed_length: None };
        let yaml = serde_yaml_ng::to_string(&t).unwrap();
        assert_eq!(yaml, "kind: List\nitemType:\n  kind: Int32\n");
        assert_eq!(parse(&yaml).unwrap(), t);
    }
}
