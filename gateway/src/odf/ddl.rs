//! The deprecated DDL schema (`ddlSchema: ["t TIMESTAMP", "lat DOUBLE"]`) read into the
//! RFC-016 schema. A column is nullable (`Option`) unless it says `NOT NULL`, as in kamu.
//!
//! Grammar: `name TYPE [NOT NULL]`, where TYPE is a scalar name, `DECIMAL(p[, s])`,
//! `ARRAY<T>`, `MAP<K, V>` or `STRUCT<name[:] T, ...>`; names may be `quoted` with backticks
//! or double quotes.

use super::schema::{DataField, DataSchema, DataType, TimeUnit};

#[derive(Debug, thiserror::Error)]
#[error("DDL column '{column}': {reason}")]
pub struct DdlError {
    pub column: String,
    pub reason: String,
}

/// Scalar type names (upper case) and what they mean.
const SCALARS: &[(&str, fn() -> DataType)] = &[
    ("BOOLEAN", || DataType::Bool),
    ("BOOL", || DataType::Bool),
    ("TINYINT", || DataType::Int8),
    ("SMALLINT", || DataType::Int16),
    ("INT", || DataType::Int32),
    ("INTEGER", || DataType::Int32),
    ("INT32", || DataType::Int32),
    ("BIGINT", || DataType::Int64),
    ("LONG", || DataType::Int64),
    ("INT64", || DataType::Int64),
    ("UINT8", || DataType::UInt8),
    ("UINT16", || DataType::UInt16),
    ("UINT32", || DataType::UInt32),
    ("UINT64", || DataType::UInt64),
    ("FLOAT", || DataType::Float32),
    ("REAL", || DataType::Float32),
    ("FLOAT32", || DataType::Float32),
    ("DOUBLE", || DataType::Float64),
    ("FLOAT64", || DataType::Float64),
    ("STRING", || DataType::String),
    ("VARCHAR", || DataType::String),
    ("TEXT", || DataType::String),
    ("CHAR", || DataType::String),
    ("BINARY", || DataType::Binary { fixed_length: None }),
    ("BYTEA", || DataType::Binary { fixed_length: None }),
    ("DATE", || DataType::Date),
    ("TIME", || DataType::Time { unit: Some(TimeUnit::Millisecond) }),
    ("TIMESTAMP", DataType::timestamp_millis_utc),
];

pub fn parse_ddl_schema(columns: &[String]) -> Result<DataSchema, DdlError> {
    let fields = columns.iter().map(|c| parse_column(c)).collect::<Result<_, _>>()?;
    Ok(DataSchema { fields, extra: None })
}

pub fn parse_column(column: &str) -> Result<DataField, DdlError> {
    let error = |reason: String| DdlError { column: column.to_owned(), reason };
    let mut parser = Parser { tokens: tokenize(column).map_err(error)?, next: 0 };
    let field = parser.column().map_err(error)?;
    match parser.peek() {
        None => Ok(field),
        Some(extra) => Err(error(format!("unexpected '{extra}' after the type"))),
    }
}

fn tokenize(input: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '`' || c == '"' {
            chars.next();
            let quoted: String = chars.by_ref().take_while(|&q| q != c).collect();
            tokens.push(format!("{c}{quoted}"));
        } else if "<>(),:".contains(c) {
            tokens.push(c.to_string());
            chars.next();
        } else if c.is_alphanumeric() || c == '_' || c == '-' {
            let mut word = String::new();
            while let Some(&w) = chars.peek().filter(|w| w.is_alphanumeric() || **w == '_' || **w == '-') {
                word.push(w);
                chars.next();
            }
            tokens.push(word);
        } else {
            return Err(format!("unexpected character '{c}'"));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<String>,
    next: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.next).map(String::as_str)
    }

    fn take(&mut self, what: &str) -> Result<String, String> {
        let token =
            self.tokens.get(self.next).cloned().ok_or_else(|| format!("expected {what}, found the end"))?;
        self.next += 1;
        Ok(token)
    }

    fn expect(&mut self, symbol: &str) -> Result<(), String> {
        match self.take(&format!("'{symbol}'"))? {
            t if t == symbol => Ok(()),
            other => Err(format!("expected '{symbol}', found '{other}'")),
        }
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let matches = self.peek().is_some_and(|t| t.eq_ignore_ascii_case(keyword));
        self.next += usize::from(matches);
        matches
    }

    fn name(&mut self) -> Result<String, String> {
        let token = self.take("a column name")?;
        match token.chars().next() {
            Some('`' | '"') => Ok(token[1..].to_owned()),
            Some(c) if c.is_alphanumeric() || c == '_' => Ok(token),
            _ => Err(format!("expected a column name, found '{token}'")),
        }
    }

    fn column(&mut self) -> Result<DataField, String> {
        let name = self.name()?;
        let data_type = self.data_type(0)?;
        let data_type = if self.eat_keyword("NOT") {
            if !self.eat_keyword("NULL") {
                return Err("expected NULL after NOT".into());
            }
            data_type
        } else {
            data_type.optional()
        };
        Ok(DataField { name, data_type, extra: None })
    }

    fn data_type(&mut self, depth: usize) -> Result<DataType, String> {
        if depth > 32 {
            return Err("types nested too deeply".into());
        }
        let word = self.take("a type")?;
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "DECIMAL" | "NUMERIC" => {
                self.expect("(")?;
                let precision = self.number()?;
                let scale = if self.peek() == Some(",") {
                    self.next += 1;
                    self.number()?
                } else {
                    0
                };
                self.expect(")")?;
                let precision =
                    u32::try_from(precision).map_err(|_| format!("precision {precision} is negative"))?;
                let scale = i32::try_from(scale).map_err(|_| format!("scale {scale} is out of range"))?;
                Ok(DataType::Decimal { precision, scale })
            }
            "ARRAY" => {
                self.expect("<")?;
                let item = self.data_type(depth + 1)?;
                self.expect(">")?;
                Ok(DataType::List { item_type: Box::new(item.optional()), fixed_length: None })
            }
            "MAP" => {
                self.expect("<")?;
                let key = self.data_type(depth + 1)?;
                self.expect(",")?;
                let value = self.data_type(depth + 1)?;
                self.expect(">")?;
                Ok(DataType::Map {
                    key_type: Box::new(key),
                    value_type: Box::new(value.optional()),
                    keys_sorted: None,
                })
            }
            "STRUCT" => {
                self.expect("<")?;
                let mut fields = Vec::new();
                loop {
                    let name = self.name()?;
                    if self.peek() == Some(":") {
                        self.next += 1;
                    }
                    let data_type = self.data_type(depth + 1)?.optional();
                    fields.push(DataField { name, data_type, extra: None });
                    match self.take("',' or '>'")?.as_str() {
                        "," => continue,
                        ">" => break,
                        other => return Err(format!("expected ',' or '>', found '{other}'")),
                    }
                }
                Ok(DataType::Struct { fields })
            }
            _ => {
                let make = SCALARS
                    .iter()
                    .find(|(name, _)| *name == upper)
                    .map(|(_, make)| make)
                    .ok_or_else(|| {
                        let known: Vec<_> = SCALARS.iter().map(|(n, _)| *n).collect();
                        format!(
                            "unknown type '{word}'; known types: {}, DECIMAL(p,s), ARRAY<T>, MAP<K,V>, STRUCT<...>",
                            known.join(", ")
                        )
                    })?;
                // VARCHAR(n), CHAR(n): the length does not constrain an ODF string.
                if matches!(upper.as_str(), "VARCHAR" | "CHAR") && self.peek() == Some("(") {
                    self.next += 1;
                    self.number()?;
                    self.expect(")")?;
                }
                let unsigned = self.eat_keyword("UNSIGNED");
                let data_type = make();
                if !unsigned {
                    return Ok(data_type);
                }
                match data_type {
                    DataType::Int8 => Ok(DataType::UInt8),
                    DataType::Int16 => Ok(DataType::UInt16),
                    DataType::Int32 => Ok(DataType::UInt32),
                    DataType::Int64 => Ok(DataType::UInt64),
                    _ => Err(format!("{word} cannot be UNSIGNED")),
                }
            }
        }
    }

    fn number(&mut self) -> Result<i64, String> {
        let token = self.take("a number")?;
        token.parse().map_err(|_| format!("expected a number, found '{token}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(ddl: &str) -> DataField {
        parse_column(ddl).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn seed_columns() {
        assert_eq!(field("t TIMESTAMP").data_type, DataType::timestamp_millis_utc().optional());
        assert_eq!(field("long DOUBLE").data_type, DataType::Float64.optional());
        assert_eq!(field("lat double not null").data_type, DataType::Float64);
        assert_eq!(field("`device id` STRING").name, "device id");
    }

    #[test]
    fn parameterised_and_nested_types() {
        assert_eq!(
            field("d DECIMAL(10, 2) NOT NULL").data_type,
            DataType::Decimal { precision: 10, scale: 2 }
        );
        assert_eq!(field("n INT UNSIGNED NOT NULL").data_type, DataType::UInt32);
        assert_eq!(field("s VARCHAR(20) NOT NULL").data_type, DataType::String);
        let DataType::Option { inner } = field("p STRUCT<lat: DOUBLE, tags ARRAY<STRING>>").data_type else {
            panic!("nullable")
        };
        let DataType::Struct { fields } = *inner else { panic!("struct") };
        assert_eq!(fields[1].name, "tags");
    }

    #[test]
    fn bad_columns_name_the_problem() {
        let cases = [
            ("speed DOUBL", "unknown type 'DOUBL'"),
            ("speed", "expected a type, found the end"),
            ("a INT NOT", "expected NULL after NOT"),
            ("a ARRAY<INT", "expected '>'"),
            ("a INT extra", "unexpected 'extra' after the type"),
            ("a DOUBLE UNSIGNED", "DOUBLE cannot be UNSIGNED"),
            ("a DECIMAL(x)", "expected a number, found 'x'"),
            ("a INT;", "unexpected character ';'"),
        ];
        for (ddl, expected) in cases {
            let e = parse_column(ddl).unwrap_err().to_string();
            assert!(e.contains(expected), "{ddl}: {e}");
            assert!(e.contains(ddl), "{ddl}: {e}");
        }
    }
}
