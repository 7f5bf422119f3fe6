//! SenML (RFC 8428) packs, JSON (Content-Format 110) or CBOR (112), resolved into rows so that
//! a SenML device fits a plain schema: base name, base time, base value and base unit are
//! applied to each record, and records with the same base name and time become one row whose
//! fields are the record names (`lat`, `lon`, `speed`). A row also has `bn`, the base name
//! (a device id, often: map it in the preprocess), and its time goes to the read schema's
//! first timestamp column. The rows are handed to the CBOR reader, so coercion is the same as
//! for any CBOR map.

use std::collections::HashMap;

use ciborium::Value;

/// SenML's labels as CBOR writes them (RFC 8428 table 4).
const BVER: i64 = -1;
const BN: i64 = -2;
const BT: i64 = -3;
const BU: i64 = -4;
const BV: i64 = -5;
const BS: i64 = -6;
const N: i64 = 0;
const U: i64 = 1;
const V: i64 = 2;
const VS: i64 = 3;
const VB: i64 = 4;
const S: i64 = 5;
const T: i64 = 6;
const VD: i64 = 8;

/// Times below 2^28 seconds are relative to now (RFC 8428 §4.5.3).
const RELATIVE_LIMIT: f64 = 268_435_456.0;

/// A record's fields, by label, whichever encoding it came in.
#[derive(Default)]
struct Record {
    bn: Option<String>,
    bt: Option<f64>,
    bv: Option<f64>,
    bs: Option<f64>,
    n: Option<String>,
    v: Option<f64>,
    vs: Option<String>,
    vb: Option<bool>,
    vd: Option<Vec<u8>>,
    s: Option<f64>,
    t: Option<f64>,
}

/// One resolved row: its base name, its time (epoch seconds, if any) and its fields.
struct Row {
    bn: String,
    time: Option<f64>,
    fields: Vec<(String, Value)>,
}

/// Rows of a SenML JSON pack, as one CBOR array of maps; `time_column` receives the time.
pub fn json_to_rows(bytes: &[u8], time_column: Option<&str>, now: f64) -> Result<Vec<u8>, String> {
    let pack: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a SenML JSON pack: {e}"))?;
    let items = pack.as_array().ok_or("a SenML pack is a JSON array of records")?;
    let mut records = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let object = item.as_object().ok_or_else(|| format!("SenML record {}: not an object", i + 1))?;
        let mut record = Record::default();
        for (key, value) in object {
            let bad = || format!("SenML record {}: '{key}' has the wrong type", i + 1);
            match key.as_str() {
                "bn" => record.bn = Some(value.as_str().ok_or_else(bad)?.to_owned()),
                "bt" => record.bt = Some(value.as_f64().ok_or_else(bad)?),
                "bv" => record.bv = Some(value.as_f64().ok_or_else(bad)?),
                "bs" => record.bs = Some(value.as_f64().ok_or_else(bad)?),
                "n" => record.n = Some(value.as_str().ok_or_else(bad)?.to_owned()),
                "v" => record.v = Some(value.as_f64().ok_or_else(bad)?),
                "vs" => record.vs = Some(value.as_str().ok_or_else(bad)?.to_owned()),
                "vb" => record.vb = Some(value.as_bool().ok_or_else(bad)?),
                "vd" => {
                    let text = value.as_str().ok_or_else(bad)?;
                    let decoded = base64::Engine::decode(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                        text.trim_end_matches('='),
                    );
                    record.vd = Some(decoded.map_err(|_| bad())?);
                }
                "s" => record.s = Some(value.as_f64().ok_or_else(bad)?),
                "t" => record.t = Some(value.as_f64().ok_or_else(bad)?),
                // Units, versions and update times do not change a row.
                _ => {}
            }
        }
        records.push(record);
    }
    rows_to_cbor(resolve(records, now)?, time_column)
}

/// Rows of a SenML CBOR pack, as one CBOR array of maps.
pub fn cbor_to_rows(bytes: &[u8], time_column: Option<&str>, now: f64) -> Result<Vec<u8>, String> {
    let pack: Value = ciborium::from_reader(bytes).map_err(|e| format!("not a SenML CBOR pack: {e}"))?;
    let Value::Array(items) = pack else { return Err("a SenML pack is a CBOR array of records".into()) };
    let mut records = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Map(entries) = item else { return Err(format!("SenML record {}: not a map", i + 1)) };
        let mut record = Record::default();
        for (key, value) in entries {
            let Some(label) = key.as_integer().and_then(|k| i64::try_from(k).ok()) else { continue };
            let bad = || format!("SenML record {}: label {label} has the wrong type", i + 1);
            let number = || number(value).ok_or_else(bad);
            let text = || value.as_text().map(str::to_owned).ok_or_else(bad);
            match label {
                BN => record.bn = Some(text()?),
                BT => record.bt = Some(number()?),
                BV => record.bv = Some(number()?),
                BS => record.bs = Some(number()?),
                N => record.n = Some(text()?),
                V => record.v = Some(number()?),
                VS => record.vs = Some(text()?),
                VB => record.vb = Some(value.as_bool().ok_or_else(bad)?),
                VD => record.vd = Some(value.as_bytes().cloned().ok_or_else(bad)?),
                S => record.s = Some(number()?),
                T => record.t = Some(number()?),
                BVER | BU | U => {}
                _ => {}
            }
        }
        records.push(record);
    }
    rows_to_cbor(resolve(records, now)?, time_column)
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Float(f) => Some(*f),
        Value::Integer(i) => i128::from(*i).to_string().parse().ok(),
        Value::Tag(_, inner) => number(inner),
        _ => None,
    }
}

/// Applies the base fields (they carry on to the records after them) and groups records
/// with the same base name and time into rows, in the order they first appear.
fn resolve(records: Vec<Record>, now: f64) -> Result<Vec<Row>, String> {
    let count = records.len();
    let (mut bn, mut bt, mut bv, mut bs) = (String::new(), 0.0, None, None);
    let mut rows: Vec<Row> = Vec::new();
    let mut index = RowIndex::default();
    for (i, record) in records.into_iter().enumerate() {
        if let Some(name) = record.bn {
            bn = name;
        }
        if let Some(time) = record.bt {
            bt = time;
        }
        if record.bv.is_some() {
            bv = record.bv;
        }
        if record.bs.is_some() {
            bs = record.bs;
        }
        let name = record.n.unwrap_or_default();
        if name.is_empty() && bn.is_empty() {
            return Err(format!("SenML record {}: no name (n) and no base name (bn)", i + 1));
        }
        let value = match (record.v, record.vs, record.vb, record.vd, record.s) {
            (Some(v), ..) => Some(Value::Float(v + bv.unwrap_or(0.0))),
            (None, Some(s), ..) => Some(Value::Text(s)),
            (None, None, Some(b), ..) => Some(Value::Bool(b)),
            (None, None, None, Some(d), _) => Some(Value::Bytes(d)),
            (None, None, None, None, Some(sum)) => Some(Value::Float(sum + bs.unwrap_or(0.0))),
            // A record of base fields alone has no value of its own.
            _ => None,
        };
        let Some(value) = value else { continue };
        if name.is_empty() {
            return Err(format!("SenML record {}: a value without a name (n)", i + 1));
        }
        let mut time = bt + record.t.unwrap_or(0.0);
        let has_time = bt != 0.0 || record.t.is_some();
        if has_time && time.abs() < RELATIVE_LIMIT {
            time += now;
        }
        let time = has_time.then_some(time);
        match index.find(&bn, time) {
            Some(row) => rows[row].fields.push((name, value)),
            None => {
                index.insert(&bn, time, rows.len());
                rows.push(Row { bn: bn.clone(), time, fields: vec![(name, value)] });
            }
        }
    }
    // An empty pack is a batch of none; records without a value are a pack that says nothing.
    if rows.is_empty() && count > 0 {
        return Err(format!("none of the SenML pack's {count} record(s) has a value (v, vs, vb, vd or s)"));
    }
    Ok(rows)
}

/// The row of each (base name, time) seen so far: a record finds its row in constant time,
/// so a pack of n records resolves in O(n) (a scan of the rows made it O(n·rows)).
#[derive(Default)]
struct RowIndex {
    by_name: HashMap<String, HashMap<TimeKey, usize>>,
}

/// A row's time as a map key: equal times are equal keys (0.0 and -0.0 alike).
// `eq` is written out only to count comparisons in tests; it is the derived one otherwise,
// so it agrees with the derived `Hash`.
#[allow(clippy::derived_hash_with_manual_eq)]
#[derive(Debug, Clone, Copy, Eq, Hash)]
enum TimeKey {
    None,
    Seconds(u64),
}

impl PartialEq for TimeKey {
    fn eq(&self, other: &TimeKey) -> bool {
        // Counted in tests: how many keys a pack's resolution compares is its cost.
        #[cfg(test)]
        tests::count_comparison();
        match (self, other) {
            (TimeKey::None, TimeKey::None) => true,
            (TimeKey::Seconds(a), TimeKey::Seconds(b)) => a == b,
            _ => false,
        }
    }
}

impl TimeKey {
    /// `None` for a time that equals nothing (NaN): its record gets a row of its own, as
    /// comparing times with `==` gave.
    fn of(time: Option<f64>) -> Option<TimeKey> {
        match time {
            None => Some(TimeKey::None),
            Some(t) if t.is_nan() => None,
            Some(t) if t == 0.0 => Some(TimeKey::Seconds(0.0f64.to_bits())),
            Some(t) => Some(TimeKey::Seconds(t.to_bits())),
        }
    }
}

impl RowIndex {
    fn find(&self, bn: &str, time: Option<f64>) -> Option<usize> {
        self.by_name.get(bn)?.get(&TimeKey::of(time)?).copied()
    }

    fn insert(&mut self, bn: &str, time: Option<f64>, row: usize) {
        let Some(key) = TimeKey::of(time) else { return };
        match self.by_name.get_mut(bn) {
            Some(times) => {
                times.insert(key, row);
            }
            None => {
                self.by_name.insert(bn.to_owned(), HashMap::from([(key, row)]));
            }
        }
    }
}

fn rows_to_cbor(rows: Vec<Row>, time_column: Option<&str>) -> Result<Vec<u8>, String> {
    let maps: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let mut entries = vec![(Value::Text("bn".into()), Value::Text(row.bn))];
            if let (Some(column), Some(time)) = (time_column, row.time) {
                // Tag 1: epoch seconds, which the CBOR reader turns into a timestamp.
                entries.push((Value::Text(column.to_owned()), Value::Tag(1, Box::new(Value::Float(time)))));
            }
            entries.extend(row.fields.into_iter().map(|(name, value)| (Value::Text(name), value)));
            Value::Map(entries)
        })
        .collect();
    let mut out = Vec::new();
    ciborium::into_writer(&Value::Array(maps), &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        static COMPARISONS: Cell<u64> = const { Cell::new(0) };
    }

    pub(super) fn count_comparison() {
        COMPARISONS.with(|c| c.set(c.get() + 1));
    }

    /// A tracker's pack: `reports` reports of three fields each, every report a base time of
    /// its own, several devices taking turns (as `device-sim --senml` sends them).
    fn tracker_pack(reports: usize) -> Vec<u8> {
        let mut pack = String::from("[");
        for i in 0..reports {
            let device = i % 7;
            pack.push_str(&format!(
                r#"{{"bn":"dev-{device}/","bt":{},"n":"lat","v":49.{i}}},{{"n":"lon","v":-123.{i}}},{{"n":"speed","v":{i}}},"#,
                1_767_268_800 + i
            ));
        }
        pack.pop();
        pack.push(']');
        pack.into_bytes()
    }

    /// Key comparisons made to resolve `reports` reports (3 records each).
    fn comparisons(reports: usize) -> u64 {
        let pack = tracker_pack(reports);
        COMPARISONS.with(|c| c.set(0));
        let out = rows(&json_to_rows(&pack, Some("t"), 1.0e9).unwrap());
        assert_eq!(out.len(), reports, "one row per report");
        COMPARISONS.with(Cell::get)
    }

    #[test]
    fn resolution_does_linear_work() {
        // Counted, not timed: each record's row is found with a bounded number of key
        // comparisons, so doubling the pack doubles them (a scan of the rows made it 4x).
        let (small, double, quadruple) = (comparisons(5_000), comparisons(10_000), comparisons(20_000));
        assert!(small > 0, "the row index was not used");
        let (first, second) = (double as f64 / small as f64, quadruple as f64 / double as f64);
        assert!(first < 2.5 && second < 2.5, "comparisons {small}, {double}, {quadruple}: not linear");
        assert!(quadruple <= 3 * 3 * 20_000, "{quadruple} comparisons for 60,000 records");
    }

    #[test]
    fn rows_are_grouped_by_name_and_time_in_the_order_they_first_appear() {
        let pack = br#"[
            {"bn":"a/","bt":1767268800,"n":"lat","v":1},
            {"bn":"b/","n":"lat","v":2},
            {"bn":"a/","n":"lon","v":3},
            {"n":"lat","t":1,"v":4},
            {"bn":"b/","bt":1767268800,"n":"lon","v":5},
            {"bn":"c/","bt":0,"n":"lat","v":6},
            {"n":"lon","v":7}
        ]"#;
        let out = rows(&json_to_rows(pack, Some("t"), 1.0e9).unwrap());
        let summary: Vec<(Option<&str>, Option<f64>, Option<f64>)> = out
            .iter()
            .map(|row| {
                (
                    field(row, "bn").and_then(Value::as_text),
                    field(row, "lat").and_then(Value::as_float),
                    field(row, "lon").and_then(Value::as_float),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("a/"), Some(1.0), Some(3.0)),
                (Some("b/"), Some(2.0), Some(5.0)),
                (Some("a/"), Some(4.0), None),
                (Some("c/"), Some(6.0), Some(7.0)),
            ]
        );
        assert!(field(&out[3], "t").is_none(), "no base time and no time: no time column");
    }

    #[test]
    fn a_time_that_is_not_a_number_is_a_row_of_its_own() {
        let nan = |n: &str| {
            Value::Map(vec![
                (Value::Integer(BN.into()), Value::Text("d/".into())),
                (Value::Integer(BT.into()), Value::Float(f64::NAN)),
                (Value::Integer(N.into()), Value::Text(n.into())),
                (Value::Integer(V.into()), Value::Float(1.0)),
            ])
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&Value::Array(vec![nan("x"), nan("y")]), &mut bytes).unwrap();
        assert_eq!(rows(&cbor_to_rows(&bytes, Some("t"), 0.0).unwrap()).len(), 2);
    }

    fn rows(cbor: &[u8]) -> Vec<Value> {
        match ciborium::from_reader::<Value, _>(cbor).unwrap() {
            Value::Array(rows) => rows,
            other => panic!("{other:?}"),
        }
    }

    fn field<'a>(row: &'a Value, name: &str) -> Option<&'a Value> {
        row.as_map()?.iter().find(|(k, _)| k.as_text() == Some(name)).map(|(_, v)| v)
    }

    #[test]
    fn a_tracker_pack_becomes_rows_of_its_names() {
        let pack = br#"[
            {"bn":"urn:dev:imei:35693803564380:","bt":1767268800,"n":"lat","u":"lat","v":49.28},
            {"n":"lon","u":"lon","v":-123.12},
            {"n":"speed","u":"m/s","v":8.75},
            {"n":"lat","t":10,"v":49.29},
            {"n":"lon","t":10,"v":-123.13}
        ]"#;
        let out = rows(&json_to_rows(pack, Some("t"), 1.0e9).unwrap());
        assert_eq!(out.len(), 2);
        assert_eq!(field(&out[0], "bn").and_then(Value::as_text), Some("urn:dev:imei:35693803564380:"));
        assert_eq!(field(&out[0], "speed").and_then(Value::as_float), Some(8.75));
        assert!(field(&out[1], "speed").is_none());
        assert_eq!(field(&out[1], "t"), Some(&Value::Tag(1, Box::new(Value::Float(1767268810.0)))));
    }

    #[test]
    fn cbor_labels_base_values_and_relative_times_resolve() {
        let pack = Value::Array(vec![
            Value::Map(vec![
                (Value::Integer((-2).into()), Value::Text("dev-7/".into())),
                (Value::Integer((-5).into()), Value::Float(100.0)),
                (Value::Integer(0.into()), Value::Text("temp".into())),
                (Value::Integer(2.into()), Value::Float(1.5)),
                (Value::Integer(6.into()), Value::Integer((-5).into())),
            ]),
            Value::Map(vec![
                (Value::Integer(0.into()), Value::Text("ok".into())),
                (Value::Integer(6.into()), Value::Integer((-5).into())),
                (Value::Integer(4.into()), Value::Bool(true)),
            ]),
        ]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&pack, &mut bytes).unwrap();
        let out = rows(&cbor_to_rows(&bytes, Some("t"), 1000.0).unwrap());
        assert_eq!(out.len(), 1);
        assert_eq!(field(&out[0], "temp").and_then(Value::as_float), Some(101.5));
        assert_eq!(field(&out[0], "ok").and_then(Value::as_bool), Some(true));
        assert_eq!(field(&out[0], "t"), Some(&Value::Tag(1, Box::new(Value::Float(995.0)))));
    }

    #[test]
    fn broken_packs_say_why() {
        assert!(json_to_rows(b"{}", None, 0.0).unwrap_err().contains("array"));
        assert!(json_to_rows(br#"[{"v":1}]"#, None, 0.0).unwrap_err().contains("no name"));
        assert!(json_to_rows(br#"[{"n":"x","v":"one"}]"#, None, 0.0).unwrap_err().contains("'v'"));
        assert!(cbor_to_rows(&[0xff], None, 0.0).is_err());
        assert!(json_to_rows(br#"[{"bn":"d/","bt":1}]"#, None, 0.0).unwrap_err().contains("has a value"));
        assert!(
            rows(&json_to_rows(b"[]", None, 0.0).unwrap()).is_empty(),
            "an empty pack is a batch of none"
        );
    }
}
