use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use proptest::prelude::*;

use super::*;
use crate::odf::ReadStep;
use crate::odf::source::{ReadStepCsv, ReadStepJson, ReadStepNdJson};

fn ddl(columns: &[&str]) -> Option<Vec<String>> {
    Some(columns.iter().map(|c| c.to_string()).collect())
}

fn reader(read: &ReadStep) -> Reader {
    Reader::new(ReadSchema::of(read).unwrap(), ReadOptions::of(read).unwrap())
}

/// Reads a whole message from memory.
fn read_all(reader: &mut Reader, bytes: &[u8], format: InputFormat, rejected: &mut Vec<RecordError>) {
    let input = Box::new(std::io::Cursor::new(bytes.to_vec()));
    reader.begin(input, format, "test", &[], &[], rejected).unwrap();
    assert!(reader.read_some(usize::MAX, rejected).unwrap());
}

fn read(read_step: &ReadStep, bytes: &[u8], format: InputFormat) -> (RecordBatch, Vec<RecordError>) {
    let mut reader = reader(read_step);
    let mut rejected = Vec::new();
    read_all(&mut reader, bytes, format, &mut rejected);
    (reader.finish().unwrap().records, rejected)
}

fn ndjson() -> ReadStep {
    ReadStep::NdJson(ReadStepNdJson {
        ddl_schema: ddl(&["id STRING NOT NULL", "n BIGINT", "x DOUBLE"]),
        ..Default::default()
    })
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    batch.column_by_name(column).unwrap().as_primitive::<Int64Type>().iter().collect()
}

#[test]
fn ndjson_keeps_good_records_around_bad_ones() {
    let input = b"{\"id\":\"a\",\"n\":1}\n\n{\"id\":\"b\",\"n\":\"x\"}\n{\"id\":\"c\",\"n\":3,\"extra\":[1,2]}\nnot json\n";
    let (batch, rejected) = read(&ndjson(), input, InputFormat::NdJson);
    assert_eq!(ints(&batch, "n"), [Some(1), Some(3)]);
    let lines: Vec<_> = rejected.iter().map(|e| e.position.clone()).collect();
    assert_eq!(lines, [Some(Position::Line(3)), Some(Position::Line(5))]);
    assert_eq!(rejected[0].record, 2, "blank lines are not records");
}

#[test]
fn json_array_object_and_sub_path() {
    let step = ReadStep::Json(ReadStepJson {
        sub_path: Some("payload.points".into()),
        ddl_schema: ddl(&["id STRING", "n BIGINT"]),
        ..Default::default()
    });
    let (batch, rejected) = read(
        &step,
        br#"{"payload": {"points": [{"id": "a", "n": 1}, {"id": "b", "n": 2}]}}"#,
        InputFormat::Json,
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(ints(&batch, "n"), [Some(1), Some(2)]);
    let (_, rejected) = read(&step, br#"{"payload": {}}"#, InputFormat::Json);
    assert!(matches!(&rejected[0].problem, Problem::Malformed(m) if m.contains("subPath 'payload.points'")));
    let plain = ReadStep::Json(ReadStepJson { ddl_schema: ddl(&["n BIGINT"]), ..Default::default() });
    let (batch, _) = read(&plain, br#"{"n": 7}"#, InputFormat::Json);
    assert_eq!(ints(&batch, "n"), [Some(7)]);
}

fn csv(options: ReadStepCsv) -> ReadStep {
    ReadStep::Csv(ReadStepCsv { ddl_schema: ddl(&["id STRING", "n BIGINT", "d DATE"]), ..options })
}

#[test]
fn csv_options() {
    let semicolons = csv(ReadStepCsv {
        separator: Some(";".into()),
        header: Some(true),
        null_value: Some("NA".into()),
        date_format: Some("%d.%m.%Y".into()),
        ..Default::default()
    });
    let (batch, rejected) = read(&semicolons, b"d;id;n\n02.01.1970;\"a;b\";NA\n", InputFormat::Csv);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(batch.column(0).as_string::<i32>().value(0), "a;b");
    assert!(batch.column(1).is_null(0));
    assert_eq!(batch.column(2).as_primitive::<arrow::datatypes::Date32Type>().value(0), 1);

    // Without a header, columns go by position; an escape character and a custom quote.
    let quoted =
        csv(ReadStepCsv { quote: Some("'".into()), escape: Some("\\".into()), ..Default::default() });
    let (batch, rejected) = read(&quoted, b"'it\\'s',5,1970-01-01\n", InputFormat::Csv);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(batch.column(0).as_string::<i32>().value(0), "it's");
    assert_eq!(ints(&batch, "n"), [Some(5)]);
}

#[test]
fn csv_rows_must_have_every_field_and_close_their_quotes() {
    let step = csv(ReadStepCsv { header: Some(true), ..Default::default() });
    let unclosed = b"id,n,d\nr1,1,1970-01-01\n\"r2,2,1970-01-01\nr3,3,1970-01-01\nr4,4,1970-01-01\n";
    let (batch, rejected) = read(&step, unclosed, InputFormat::Csv);
    assert_eq!(batch.num_rows(), 1, "the rows after an open quote are not swallowed silently");
    assert!(
        matches!(&rejected[0].problem, Problem::Malformed(m) if m.contains("not closed")),
        "{rejected:?}"
    );
    assert_eq!((rejected[0].record, rejected[0].position.clone()), (2, Some(Position::Line(3))));

    let (batch, rejected) =
        read(&step, b"id,n,d\nr1,1\nr2,2,1970-01-01,x\nr3,3,1970-01-01\n", InputFormat::Csv);
    assert_eq!(batch.num_rows(), 1);
    let problems: Vec<String> = rejected.iter().map(|e| e.to_string()).collect();
    assert!(problems[0].contains("2 fields, where 3 are expected"), "{problems:?}");
    assert!(problems[1].contains("4 fields, where 3 are expected"), "{problems:?}");

    // A quoted field may hold line breaks and escaped quotes, when it is closed.
    let (batch, rejected) = read(&step, b"id,n,d\n\"r\n\"\"1\\\"\",1,1970-01-01\n", InputFormat::Csv);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(batch.column(0).as_string::<i32>().value(0), "r\n\"1\"");
}

#[test]
fn a_message_read_in_chunks_keeps_its_header_and_numbering() {
    let step = csv(ReadStepCsv { header: Some(true), ..Default::default() });
    let mut reader = reader(&step);
    let mut rejected = Vec::new();
    let text = "id,n,d\na,1,1970-01-01\nb,x,1970-01-01\nc,3,1970-01-01\nd,4,1970-01-01\ne,5,1970-01-01\n";
    let input = Box::new(std::io::Cursor::new(text.as_bytes().to_vec()));
    reader.begin(input, InputFormat::Csv, "f.csv", &[], &[], &mut rejected).unwrap();
    let mut batches = Vec::new();
    loop {
        let ended = reader.read_some(2, &mut rejected).unwrap();
        let batch = reader.finish().unwrap();
        if batch.records.num_rows() > 0 {
            batches.push(batch);
        }
        if ended {
            break;
        }
    }
    let ids: Vec<Vec<&str>> = batches
        .iter()
        .map(|b| b.records.column(0).as_string::<i32>().iter().map(Option::unwrap).collect())
        .collect();
    assert_eq!(ids, [vec!["a", "c"], vec!["d", "e"]]);
    assert!(batches.iter().all(|b| b.parts == [Part { message: 0, end: 2 }]));
    assert_eq!((rejected[0].record, rejected[0].position.clone()), (2, Some(Position::Line(3))));
}

#[test]
fn csv_in_another_encoding() {
    let latin1 = ReadStep::Csv(ReadStepCsv {
        ddl_schema: ddl(&["city STRING"]),
        encoding: Some("latin1".into()),
        ..Default::default()
    });
    let (batch, _) = read(&latin1, b"Z\xfcrich\n", InputFormat::Csv);
    assert_eq!(batch.column(0).as_string::<i32>().value(0), "Zürich");
    let (_, rejected) = read(&ndjson(), b"{\"id\":\"\xff\"}", InputFormat::NdJson);
    assert!(matches!(&rejected[0].problem, Problem::Malformed(m) if m.contains("invalid UTF-8 at byte 7")));
}

#[test]
fn cbor_records_and_errors() {
    use ciborium::Value as C;
    let map = |id: &str, n: i64| {
        C::Map(vec![(C::Text("id".into()), C::Text(id.into())), (C::Text("n".into()), n.into())])
    };
    let mut bytes = Vec::new();
    ciborium::into_writer(&C::Array(vec![map("a", 1), map("b", 2)]), &mut bytes).unwrap();
    ciborium::into_writer(&C::Integer(5.into()), &mut bytes).unwrap();
    ciborium::into_writer(&map("c", 3), &mut bytes).unwrap();
    let (batch, rejected) = read(&ndjson(), &bytes, InputFormat::Cbor);
    assert_eq!(ints(&batch, "n"), [Some(1), Some(2), Some(3)]);
    assert_eq!(rejected.len(), 1);
    assert!(matches!(&rejected[0].problem, Problem::Malformed(m) if m.contains("expected a CBOR map")));
}

#[test]
fn floats_from_every_format_agree() {
    let step = ReadStep::NdJson(ReadStepNdJson { ddl_schema: ddl(&["x DOUBLE"]), ..Default::default() });
    let (json, _) = read(&step, b"{\"x\": 1}\n{\"x\": 2.5}\n{\"x\": \"3\"}", InputFormat::NdJson);
    let (csv, _) = read(&step, b"1\n2.5\n3\n", InputFormat::Csv);
    let values = |b: &RecordBatch| b.column(0).as_primitive::<Float64Type>().values().to_vec();
    assert_eq!(values(&json), [1.0, 2.5, 3.0]);
    assert_eq!(values(&json), values(&csv));
}

proptest! {
    /// Fuzzing the readers: any bytes in any format give records and rejections, never a panic,
    /// and every record is either kept or rejected.
    #[test]
    fn readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), format in 0usize..4) {
        let format = InputFormat::ALL[format];
        let mut reader = reader(&ndjson());
        let mut rejected = Vec::new();
        read_all(&mut reader, &bytes, format, &mut rejected);
        let batch = reader.finish().unwrap().records;
        prop_assert!(batch.num_rows() <= bytes.len() + 1);
    }

    #[test]
    fn ndjson_lines_fuzzed_from_valid_records(
        records in proptest::collection::vec(("[a-z]{0,3}", proptest::option::of(any::<i64>()), any::<f64>()), 0..20),
        cut in any::<prop::sample::Index>(),
    ) {
        let text: String = records
            .iter()
            .map(|(id, n, x)| serde_json::json!({"id": id, "n": n, "x": if x.is_finite() { *x } else { 0.0 }}).to_string() + "\n")
            .collect();
        let (batch, rejected) = read(&ndjson(), text.as_bytes(), InputFormat::NdJson);
        // No line at all is a payload that holds no record: one rejection for it.
        prop_assert_eq!(rejected.len(), usize::from(records.is_empty()));
        prop_assert_eq!(batch.num_rows(), records.len());
        let cut = cut.index(text.len() + 1);
        let (batch, rejected) = read(&ndjson(), &text.as_bytes()[..cut], InputFormat::NdJson);
        prop_assert!(batch.num_rows() + rejected.len() <= records.len().max(1));
    }
}
