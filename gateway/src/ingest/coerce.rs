//! Coercion of one input value to a column's kind. Every reader (JSON, CSV, CBOR) reduces its
//! values to `Input`, so the rules are the same whatever the format:
//!
//! - integers: integer literals in range, exactly at any size; a number with a point or an
//!   exponent (`12.0`, `1e3`, as text or as a float) only when whole and below 2^53, where a
//!   float is exact; numeric strings likewise. A JSON number with a fraction too small for a
//!   float to hold (`1.0000000000000000001`) reads as whole: JSON numbers reach us as floats;
//! - floats: any number, numeric strings;
//! - booleans: booleans, 0/1, `true`/`false`/`yes`/`no` in any case;
//! - strings: strings, and numbers or booleans as their text;
//! - timestamps: RFC 3339 strings (an offset is converted to UTC; no offset means UTC),
//!   strings in the source's `timestampFormat`, epoch numbers in the column's unit, CBOR
//!   epoch times (tag 1) in seconds;
//! - dates: `YYYY-MM-DD` or the source's `dateFormat`, or days since the epoch;
//! - decimals: numbers and decimal strings, rejected if they need more digits than declared;
//! - binary: byte strings (CBOR), base64 strings.

use std::fmt;

use arrow::datatypes::TimeUnit;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::read_schema::Kind;

/// A value as a reader found it, before coercion.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
    /// A time given as seconds since the epoch whatever the column's unit (CBOR tag 1).
    EpochSeconds(f64),
}

impl fmt::Display for Input<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Null => f.write_str("null"),
            Input::Bool(b) => write!(f, "{b}"),
            Input::Int(i) => write!(f, "{i}"),
            Input::UInt(u) => write!(f, "{u}"),
            Input::Float(x) => write!(f, "{x}"),
            Input::Str(s) if s.chars().count() > 60 => {
                write!(f, "\"{}…\"", s.chars().take(60).collect::<String>())
            }
            Input::Str(s) => write!(f, "\"{s}\""),
            Input::Bytes(b) => write!(f, "{} bytes", b.len()),
            Input::EpochSeconds(s) => write!(f, "epoch time {s}"),
        }
    }
}

/// A coerced value, ready for the column's Arrow builder. Dates and timestamps are `Int`
/// (days, or units since the epoch).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Decimal(i128),
}

/// Formats from the read step; `None` means RFC 3339.
#[derive(Debug, Clone, Default)]
pub struct Formats {
    pub date: Option<String>,
    pub timestamp: Option<String>,
}

impl Formats {
    /// `rfc3339` (any case) is the spec's name for the default.
    pub fn new(date: Option<&str>, timestamp: Option<&str>) -> Formats {
        let custom = |f: Option<&str>| f.filter(|f| !f.eq_ignore_ascii_case("rfc3339")).map(str::to_owned);
        Formats { date: custom(date), timestamp: custom(timestamp) }
    }
}

/// Why a value does not fit: shown after "value X is not a <kind>: ".
pub type Reason = String;

pub fn coerce(kind: &Kind, input: Input, formats: &Formats) -> Result<Value, Reason> {
    if let Input::Null = input {
        return Ok(Value::Null);
    }
    match kind {
        Kind::Bool => to_bool(input).map(Value::Bool),
        Kind::Int(bits) => to_int(input, *bits).map(Value::Int),
        Kind::UInt(bits) => to_uint(input, *bits).map(Value::UInt),
        Kind::Float32 => to_float(input)
            .and_then(|f| match f.is_finite() && f.abs() > f64::from(f32::MAX) {
                true => Err("out of the Float32 range".into()),
                false => Ok(f),
            })
            .map(Value::Float),
        Kind::Float64 => to_float(input).map(Value::Float),
        Kind::String => to_text(input).map(Value::Text),
        Kind::Binary => to_bytes(input).map(Value::Bytes),
        Kind::Date => to_date(input, formats).map(Value::Int),
        Kind::Timestamp { unit, .. } => to_timestamp(input, *unit, formats).map(Value::Int),
        Kind::Decimal { precision, scale } => to_decimal(input, *precision, *scale).map(Value::Decimal),
    }
}

fn wrong_shape(input: Input) -> Reason {
    let shape = match input {
        Input::Bool(_) => "a boolean",
        Input::Bytes(_) => "a byte string",
        Input::Str(_) => "a string",
        _ => "a number",
    };
    format!("{shape} does not convert to it")
}

fn to_bool(input: Input) -> Result<bool, Reason> {
    match input {
        Input::Bool(b) => Ok(b),
        Input::Int(0) | Input::UInt(0) => Ok(false),
        Input::Int(1) | Input::UInt(1) => Ok(true),
        Input::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            _ => Err("expected true or false".into()),
        },
        other => Err(wrong_shape(other)),
    }
}

fn int_range(bits: u8) -> (i64, i64) {
    match bits {
        8 => (i8::MIN.into(), i8::MAX.into()),
        16 => (i16::MIN.into(), i16::MAX.into()),
        32 => (i32::MIN.into(), i32::MAX.into()),
        _ => (i64::MIN, i64::MAX),
    }
}

/// Floats are exact integers below this (2^53); beyond it a number written with a fraction or
/// an exponent may not be the integer it rounds to.
const EXACT_FLOAT_LIMIT: f64 = 9_007_199_254_740_992.0;

/// An integer from any input that holds one exactly; range checks are the caller's. Integer
/// literals are exact at any size; a number with a fraction or an exponent (`12.0`, `1e3`)
/// is taken only when it is whole and below 2^53 in magnitude, in text (CSV, JSON strings)
/// as in floats (JSON numbers with a point, CBOR floats), so every format agrees.
fn integer(input: Input) -> Result<i128, Reason> {
    match input {
        Input::Int(i) => Ok(i.into()),
        Input::UInt(u) => Ok(u.into()),
        Input::Float(f) if !f.is_finite() => Err("it is not a finite number".into()),
        Input::Float(f) if f.fract() != 0.0 => Err("it has a fraction".into()),
        Input::Float(f) if f.abs() >= EXACT_FLOAT_LIMIT => Err(inexact()),
        Input::Float(f) => Ok(f as i128),
        Input::Str(s) => exact_integer(s.trim()),
        other => Err(wrong_shape(other)),
    }
}

fn inexact() -> Reason {
    "beyond 2^53 a number is exact only as a plain integer (no point, no exponent) of at most 64 bits".into()
}

/// Parses `[+-]digits[.digits][e[+-]digits]` exactly.
fn exact_integer(text: &str) -> Result<i128, Reason> {
    let not_integer = || "not an integer".to_string();
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].parse::<i32>().map_err(|_| not_integer())?),
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = || whole.bytes().chain(fraction.bytes());
    if whole.is_empty() && fraction.is_empty() || !digits().all(|b| b.is_ascii_digit()) {
        return Err(not_integer());
    }
    let out_of_range = || "it is out of range".to_string();
    // The digits' value times 10^(exponent - fraction digits).
    let mut shift = i64::from(exponent) - fraction.len() as i64;
    let mut digits: Vec<u8> = digits().map(|b| b - b'0').collect();
    while shift < 0 {
        match digits.pop() {
            Some(0) => shift += 1,
            Some(_) => return Err("it has a fraction".into()),
            None => break,
        }
    }
    if digits.iter().all(|d| *d == 0) {
        return Ok(0);
    }
    let mut value: i128 = 0;
    for digit in digits.iter().copied().chain(std::iter::repeat_n(0, shift.max(0) as usize)) {
        value = value.checked_mul(10).and_then(|v| v.checked_add(digit.into())).ok_or_else(out_of_range)?;
        if value > u64::MAX.into() {
            return Err(out_of_range());
        }
    }
    let plain = !mantissa.contains('.') && exponent == 0;
    if !plain && value as f64 >= EXACT_FLOAT_LIMIT {
        return Err(inexact());
    }
    Ok(if negative { -value } else { value })
}

fn to_int(input: Input, bits: u8) -> Result<i64, Reason> {
    let (min, max) = int_range(bits);
    i64::try_from(integer(input)?)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| format!("out of range {min}..={max}"))
}

fn to_uint(input: Input, bits: u8) -> Result<u64, Reason> {
    let max = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    u64::try_from(integer(input)?).ok().filter(|v| *v <= max).ok_or_else(|| format!("out of range 0..={max}"))
}

fn to_float(input: Input) -> Result<f64, Reason> {
    match input {
        Input::Int(i) => Ok(i as f64),
        Input::UInt(u) => Ok(u as f64),
        Input::Float(f) => Ok(f),
        Input::Str(s) => s.trim().parse::<f64>().map_err(|_| "not a number".into()),
        other => Err(wrong_shape(other)),
    }
}

fn to_text(input: Input) -> Result<String, Reason> {
    match input {
        Input::Str(s) => Ok(s.to_owned()),
        Input::Bool(b) => Ok(b.to_string()),
        Input::Int(i) => Ok(i.to_string()),
        Input::UInt(u) => Ok(u.to_string()),
        Input::Float(f) => Ok(f.to_string()),
        Input::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| "bytes that are not UTF-8".into()),
        other => Err(wrong_shape(other)),
    }
}

fn to_bytes(input: Input) -> Result<Vec<u8>, Reason> {
    match input {
        Input::Bytes(b) => Ok(b.to_vec()),
        Input::Str(s) => {
            base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|e| format!("not base64: {e}"))
        }
        other => Err(wrong_shape(other)),
    }
}

fn to_date(input: Input, formats: &Formats) -> Result<i64, Reason> {
    let in_range = |days: i64| match NaiveDate::default()
        .checked_add_signed(chrono::Duration::try_days(days).unwrap_or(chrono::Duration::MAX))
    {
        Some(_) if i32::try_from(days).is_ok() => Ok(days),
        _ => Err("out of the range of dates".to_string()),
    };
    let date = match input {
        Input::Int(days) => return in_range(days),
        Input::UInt(days) => return in_range(i64::try_from(days).map_err(|_| "out of range".to_string())?),
        Input::Str(s) => {
            let format = formats.date.as_deref().unwrap_or("%Y-%m-%d");
            NaiveDate::parse_from_str(s.trim(), format)
                .map_err(|e| format!("not a date in format {format}: {e}"))?
        }
        other => return Err(wrong_shape(other)),
    };
    Ok(date.signed_duration_since(NaiveDate::default()).num_days())
}

fn to_timestamp(input: Input, unit: TimeUnit, formats: &Formats) -> Result<i64, Reason> {
    let per_second: i64 = match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let epoch = |value: f64| -> Result<i64, Reason> {
        if !value.is_finite() || value.abs() >= 9.2e18 {
            return Err("not a time".into());
        }
        Ok(value.round() as i64)
    };
    let value = match input {
        Input::Int(n) => n,
        Input::UInt(n) => i64::try_from(n).map_err(|_| "out of range".to_string())?,
        Input::Float(f) => epoch(f)?,
        Input::EpochSeconds(s) => epoch(s * per_second as f64)?,
        Input::Str(s) => {
            let s = s.trim();
            // A declared format comes first; else RFC 3339; else (CSV has only strings) a
            // number is an epoch time.
            match parse_time(s, formats.timestamp.as_deref()) {
                Ok(time) => match unit {
                    TimeUnit::Second => time.timestamp(),
                    TimeUnit::Millisecond => time.timestamp_millis(),
                    TimeUnit::Microsecond => time.timestamp_micros(),
                    TimeUnit::Nanosecond => {
                        time.timestamp_nanos_opt().ok_or("out of the nanosecond range")?
                    }
                },
                Err(reason) => match s.parse::<f64>() {
                    Ok(number) => epoch(number)?,
                    Err(_) => return Err(reason),
                },
            }
        }
        other => return Err(wrong_shape(other)),
    };
    // Times are stored in milliseconds: the value must be a time that has milliseconds.
    let millis = match unit {
        TimeUnit::Second => value.checked_mul(1_000),
        _ => Some(value / (per_second / 1_000)),
    };
    match millis.and_then(DateTime::from_timestamp_millis) {
        Some(_) => Ok(value),
        None => Err("out of the range of times".into()),
    }
}

/// An RFC 3339 time (or one without an offset, taken as UTC), or one in `format`.
pub fn parse_time(s: &str, format: Option<&str>) -> Result<DateTime<Utc>, Reason> {
    if let Some(format) = format {
        return DateTime::parse_from_str(s, format)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| NaiveDateTime::parse_from_str(s, format).map(|t| t.and_utc()))
            .map_err(|e| format!("not a time in format {format}: {e}"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for naive in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, naive) {
            return Ok(t.and_utc());
        }
    }
    Err("not an RFC 3339 time such as 2026-01-31T12:00:00Z".into())
}

fn to_decimal(input: Input, precision: u8, scale: i8) -> Result<i128, Reason> {
    let scaled: i128 = match input {
        Input::Int(i) => scale_up(i.into(), scale)?,
        Input::UInt(u) => scale_up(u.into(), scale)?,
        Input::Float(f) => {
            let scaled = f * 10f64.powi(scale.into());
            if !scaled.is_finite() || scaled.abs() >= 1e38 {
                return Err("out of range".into());
            }
            scaled.round() as i128
        }
        Input::Str(s) => parse_decimal(s.trim(), scale)?,
        other => return Err(wrong_shape(other)),
    };
    let limit = 10i128.pow(precision.into());
    if scaled.abs() >= limit {
        return Err(format!("needs more than {precision} digits"));
    }
    Ok(scaled)
}

fn scale_up(value: i128, scale: i8) -> Result<i128, Reason> {
    if scale >= 0 {
        value.checked_mul(10i128.pow(scale as u32)).ok_or_else(|| "out of range".into())
    } else {
        Ok(value / 10i128.pow(scale.unsigned_abs().into()))
    }
}

/// `-12.345` with scale 3 is -12345; digits past the scale are an error, not rounded.
fn parse_decimal(s: &str, scale: i8) -> Result<i128, Reason> {
    let bad = || format!("not a decimal number with at most {scale} decimal places");
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return Err(bad());
    }
    let scale = usize::try_from(scale).map_err(|_| bad())?;
    if fraction.trim_end_matches('0').len() > scale {
        return Err(bad());
    }
    let padded = format!("{whole}{fraction:0<scale$}");
    let magnitude: i128 = padded[..whole.len() + scale].parse().map_err(|_| bad())?;
    Ok(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(kind: Kind, input: Input) -> Value {
        coerce(&kind, input, &Formats::default()).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    fn err(kind: Kind, input: Input) -> String {
        coerce(&kind, input, &Formats::default()).unwrap_err()
    }

    fn ms() -> Kind {
        Kind::Timestamp { unit: TimeUnit::Millisecond, timezone: "UTC".into() }
    }

    #[test]
    fn timestamps_from_strings_and_epochs() {
        assert_eq!(ok(ms(), Input::Str("2020-01-01T00:00:00Z")), Value::Int(1_577_836_800_000));
        assert_eq!(ok(ms(), Input::Str("2020-01-01T01:00:00+01:00")), Value::Int(1_577_836_800_000));
        assert_eq!(ok(ms(), Input::Str("2020-01-01 00:00:00.5")), Value::Int(1_577_836_800_500));
        assert_eq!(ok(ms(), Input::Int(1_577_836_800_000)), Value::Int(1_577_836_800_000));
        assert_eq!(ok(ms(), Input::Str("1577836800000")), Value::Int(1_577_836_800_000));
        assert_eq!(ok(ms(), Input::EpochSeconds(1_577_836_800.25)), Value::Int(1_577_836_800_250));
        let seconds = Kind::Timestamp { unit: TimeUnit::Second, timezone: "UTC".into() };
        assert_eq!(ok(seconds, Input::Int(1_577_836_800)), Value::Int(1_577_836_800));
        assert!(err(ms(), Input::Str("yesterday")).contains("RFC 3339"));
        assert!(err(ms(), Input::Str("NaN")).contains("not a time"));
        assert!(err(ms(), Input::Float(f64::INFINITY)).contains("not a time"));
        let seconds = Kind::Timestamp { unit: TimeUnit::Second, timezone: "UTC".into() };
        assert!(err(seconds, Input::Int(i64::MAX / 10)).contains("out of the range"));
        let digits = Formats::new(None, Some("%Y%m%d%H%M%S"));
        assert_eq!(coerce(&ms(), Input::Str("20200101000000"), &digits), Ok(Value::Int(1_577_836_800_000)));
        assert!(err(ms(), Input::Bool(true)).contains("a boolean"));
        let custom = Formats::new(None, Some("%d/%m/%Y %H:%M"));
        assert_eq!(coerce(&ms(), Input::Str("01/01/2020 00:01"), &custom), Ok(Value::Int(1_577_836_860_000)));
    }

    #[test]
    fn numbers_widen_and_are_range_checked() {
        assert_eq!(ok(Kind::Float64, Input::Int(3)), Value::Float(3.0));
        assert_eq!(ok(Kind::Int(64), Input::Float(3.0)), Value::Int(3));
        assert_eq!(ok(Kind::Int(32), Input::Str(" 42 ")), Value::Int(42));
        assert_eq!(ok(Kind::UInt(8), Input::UInt(255)), Value::UInt(255));
        assert!(err(Kind::UInt(8), Input::Int(256)).contains("out of range 0..=255"));
        assert!(err(Kind::UInt(8), Input::Int(-1)).contains("out of range"));
        assert!(err(Kind::Int(8), Input::Float(1.5)).contains("fraction"));
        assert!(err(Kind::Float64, Input::Str("abc")).contains("not a number"));
    }

    #[test]
    fn integers_are_exact_in_every_format() {
        let int = || Kind::Int(64);
        // Literals of any size are exact: beyond i64 is out of range, never i64::MIN.
        assert_eq!(ok(int(), Input::Str("-9223372036854775808")), Value::Int(i64::MIN));
        assert!(err(int(), Input::Str("-9223372036854775809")).contains("out of range"));
        assert!(err(int(), Input::Str("99999999999999999999999999999999999999999")).contains("out of range"));
        assert_eq!(ok(int(), Input::Str("9007199254740993")), Value::Int(9_007_199_254_740_993));
        // With a point or an exponent: whole numbers below 2^53, in text as in floats.
        assert_eq!(ok(int(), Input::Str("12.000")), Value::Int(12));
        assert_eq!(ok(int(), Input::Str("1.5e3")), Value::Int(1500));
        assert_eq!(ok(int(), Input::Str("0e999999999")), Value::Int(0));
        assert!(err(int(), Input::Str("1e999999999")).contains("out of range"));
        assert!(err(int(), Input::Str("12.5")).contains("fraction"));
        assert!(err(int(), Input::Str("125e-1")).contains("fraction"));
        assert!(err(int(), Input::Str("9007199254740993.0")).contains("2^53"));
        assert!(err(int(), Input::Str("-9223372036854776000")).contains("out of range"));
        // JSON numbers beyond i64 arrive as floats, their text lost: refused, never rounded.
        assert!(err(int(), Input::Float(9007199254740993.0)).contains("2^53"));
        assert!(err(int(), Input::Float(-9.223372036854776e18)).contains("2^53"));
        assert!(err(int(), Input::Float(9007199254740993.5)).contains("2^53"));
        assert!(err(int(), Input::Float(f64::NAN)).contains("not a finite number"));
        assert!(err(int(), Input::Float(1e30)).contains("2^53"));
        assert!(err(int(), Input::Str("1x")).contains("not an integer"));
        assert!(err(int(), Input::Str("-")).contains("not an integer"));
    }

    #[test]
    fn decimals_keep_exact_digits() {
        let kind = || Kind::Decimal { precision: 6, scale: 2 };
        assert_eq!(ok(kind(), Input::Str("-12.3")), Value::Decimal(-1230));
        assert_eq!(ok(kind(), Input::Int(7)), Value::Decimal(700));
        assert_eq!(ok(kind(), Input::Float(0.125)), Value::Decimal(13));
        assert!(err(kind(), Input::Str("1.234")).contains("at most 2 decimal places"));
        assert!(err(kind(), Input::Str("12345.6")).contains("more than 6 digits"));
    }

    #[test]
    fn other_kinds() {
        assert_eq!(ok(Kind::Bool, Input::Str("Yes")), Value::Bool(true));
        assert_eq!(ok(Kind::String, Input::Int(5)), Value::Text("5".into()));
        assert_eq!(ok(Kind::Date, Input::Str("1970-01-02")), Value::Int(1));
        assert!(err(Kind::Date, Input::Int(i64::MAX)).contains("out of the range of dates"));
        assert!(err(Kind::Float32, Input::Float(1e300)).contains("Float32 range"));
        assert_eq!(ok(Kind::Binary, Input::Str("AQI=")), Value::Bytes(vec![1, 2]));
        assert_eq!(ok(Kind::Int(64), Input::Null), Value::Null);
    }
}
