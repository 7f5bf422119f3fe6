//! The ingest engine through the real binary: ingest, tail, sql, verify.

mod common;

use std::path::Path;

use common::{Gateway, LEDGER, SYSTEM_TIME, path, reports};

const SEED_GPS: &str = include_str!("fixtures/seed-gps.yaml");

#[test]
fn the_seed_example() {
    let gw = Gateway::new();
    gw.add(SEED_GPS);
    let record = r#"{"t": "2020-01-01T00:00:00Z", "long": -123.12, "lat": 49.28}"#;
    let out = gw.ok(&["ingest", "gps", "--stdin"], record);
    assert!(out.contains("Dataset updated: 1 record(s)"), "{out}");

    let table = gw.ok(&["tail", "gps"], "");
    let header = table.lines().find(|l| l.contains("offset")).unwrap();
    let columns: Vec<&str> = header.split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(columns, ["offset", "op", "system_time", "t", "long", "lat"]);
    let row = table.lines().find(|l| l.contains("+A")).unwrap();
    let cells: Vec<&str> = row.split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cells, ["0", "+A", "2026-01-31T12:00:00Z", "2020-01-01T00:00:00Z", "-123.12", "49.28"]);
    gw.verify("gps");
}

#[test]
fn the_seed_example_from_a_json_file_of_several_lines() {
    let gw = Gateway::new();
    gw.add(SEED_GPS);
    let lines = "{\"t\": \"2020-01-01T00:00:00Z\", \"long\": -123.12, \"lat\": 49.28}\n{\"t\": \"2020-01-01T00:00:01Z\", \"long\": -123.13, \"lat\": 49.29}\n";
    let file = gw.write("data.json", lines.as_bytes());
    gw.ok(&["ingest", "gps", path(&file)], "");
    assert_eq!(gw.records("gps").len(), 2);
}

#[test]
fn csv_and_json_pushed_into_an_ndjson_source() {
    let gw = Gateway::new();
    gw.add(SEED_GPS);
    let csv = gw.write(
        "points.csv",
        b"t,long,lat\n2020-01-01T00:00:00Z,-123.12,49.28\n2020-01-01T00:01:00Z,-123.13,49.29\n",
    );
    gw.ok(&["ingest", "gps", path(&csv)], "");
    // Headerless CSV maps columns by position; the format comes from the flag.
    gw.ok(&["ingest", "gps", "--stdin", "--input-format", "csv"], "2020-01-01T00:02:00Z,-123.14,49.30\n");
    gw.ok(
        &["ingest", "gps", "--stdin", "--input-format", "json"],
        r#"[{"t": "2020-01-01T00:03:00Z", "long": 1, "lat": 2}]"#,
    );
    let records = gw.records("gps");
    let lats: Vec<f64> = records.iter().map(|r| r["lat"].as_f64().unwrap()).collect();
    assert_eq!(lats, [49.28, 49.29, 49.30, 2.0]);
    assert_eq!(records[3]["long"], 1.0, "integers widen to doubles");
    gw.verify("gps");
}

#[test]
fn cbor_pushed_in_every_shape() {
    use ciborium::Value as C;
    let gw = Gateway::new();
    gw.add(SEED_GPS);
    let record = |t: C, lat: f64| {
        C::Map(vec![
            (C::Text("t".into()), t),
            (C::Text("long".into()), C::Float(-1.5)),
            (C::Text("lat".into()), C::Float(lat)),
        ])
    };
    let mut bytes = Vec::new();
    // A map with an RFC 3339 time (tag 0), an array of maps with epoch times (tag 1, and a
    // bare number: milliseconds, the column's unit), as one CBOR sequence.
    ciborium::into_writer(
        &record(C::Tag(0, Box::new(C::Text("2020-01-01T00:00:00Z".into()))), 1.0),
        &mut bytes,
    )
    .unwrap();
    let array = C::Array(vec![
        record(C::Tag(1, Box::new(C::Integer(1_577_836_860.into()))), 2.0),
        record(C::Integer(1_577_836_920_000i64.into()), 3.0),
    ]);
    ciborium::into_writer(&array, &mut bytes).unwrap();
    let file = gw.write("points.cbor", &bytes);
    gw.ok(&["ingest", "gps", path(&file)], "");
    let records = gw.records("gps");
    let times: Vec<&str> = records.iter().map(|r| r["t"].as_str().unwrap()).collect();
    assert_eq!(times, ["2020-01-01T00:00:00Z", "2020-01-01T00:01:00Z", "2020-01-01T00:02:00Z"]);
    gw.verify("gps");
}

const PREPROCESSED: &str = include_str!("fixtures/preprocessed.yaml");

#[test]
fn preprocess_renames_and_casts() {
    let gw = Gateway::new();
    gw.add(PREPROCESSED);
    gw.ok(&["ingest", "positions", "--stdin"], r#"{"i":"C-7","ts":1767268800,"v":10,"b":87}"#);
    let records = gw.records("positions");
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["t"], "2026-01-01T12:00:00Z");
    assert_eq!(r["device_id"], "C-7");
    assert_eq!(r["speed_kmh"], 36.0);
    assert_eq!(r["battery"], 87);
    let log = gw.ok(&["log", "positions"], "");
    // The dataset schema is the preprocess output: user columns optional, as kamu writes it.
    let speed = &log[log.find("name: speed_kmh").unwrap()..];
    let speed = &speed[..speed[5..].find("name:").unwrap()];
    assert!(speed.contains("kind: Option") && speed.contains("kind: Float64"), "{speed}");
    gw.verify("positions");
}

#[test]
fn a_preprocess_query_that_cannot_plan_is_rejected_at_add() {
    let gw = Gateway::new();
    let bad = PREPROCESSED.replace("CAST(b AS INT) AS battery", "CAST(bat AS INT) AS battery");
    let err = gw.fails(&["add", "--stdin"], &bad);
    assert!(err.contains("push source 'vendorC'") && err.contains("bat"), "{err}");
}

#[test]
fn a_preprocess_may_only_read() {
    let gw = Gateway::new();
    let victim = gw.data().with_file_name("victim.csv");
    let writes = format!("COPY (SELECT i FROM input) TO '{}' STORED AS CSV", victim.display());
    // Each is refused at `add`, before any ingest could run it.
    let reads = "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'";
    for query in [writes.as_str(), reads, "SET datafusion.execution.batch_size = 1"] {
        let original = "SELECT ts AS t, i AS device_id, CAST(v AS DOUBLE) * 3.6 AS speed_kmh, CAST(b AS INT) AS battery FROM input";
        let manifest = PREPROCESSED.replace(original, &format!("\"{query}\""));
        assert_ne!(manifest, PREPROCESSED);
        let err = gw.fails(&["add", "--stdin"], &manifest);
        assert!(err.contains("not supported") && err.contains("push source 'vendorC'"), "{query}: {err}");
    }
    gw.add(PREPROCESSED);
    gw.ok(&["ingest", "positions", "--stdin"], r#"{"i":"C-7","ts":1767268800,"v":10,"b":87}"#);
    let copy = format!("COPY (SELECT device_id FROM positions) TO '{}' STORED AS CSV", victim.display());
    let err = gw.fails(&["sql", &copy], "");
    assert!(err.contains("not supported"), "{err}");
    assert!(!victim.exists());
}

const NO_EVENT_TIME: &str = include_str!("fixtures/no-event-time.yaml");

#[test]
fn event_time_from_the_flag_else_the_system_time() {
    let gw = Gateway::new();
    gw.add(NO_EVENT_TIME);
    gw.ok(
        &["ingest", "readings", "--stdin", "--event-time", "2025-06-01T08:00:00Z"],
        r#"{"station":"s1","value":1}"#,
    );
    gw.ok(&["ingest", "readings", "--stdin"], r#"{"station":"s1","value":2}"#);
    let times: Vec<String> =
        gw.records("readings").iter().map(|r| r["event_time"].as_str().unwrap().to_owned()).collect();
    assert_eq!(times, ["2025-06-01T08:00:00Z", SYSTEM_TIME]);
    gw.verify("readings");
}

#[test]
fn the_watermark_never_goes_back() {
    let gw = Gateway::new();
    gw.add(SEED_GPS);
    for t in ["2020-01-01T05:00:00Z", "2020-01-01T01:00:00Z", "2020-01-01T09:00:00Z"] {
        gw.ok(&["ingest", "gps", "--stdin"], &format!(r#"{{"t":"{t}","long":0,"lat":0}}"#));
    }
    let log = gw.ok(&["log", "gps"], "");
    let marks: Vec<&str> = log.lines().filter_map(|l| l.trim().strip_prefix("newWatermark: ")).collect();
    assert_eq!(
        marks,
        ["2020-01-01T09:00:00Z", "2020-01-01T05:00:00Z", "2020-01-01T05:00:00Z"],
        "newest first"
    );
    gw.verify("gps");
}

const TWO_SOURCES: &str = include_str!("fixtures/two-sources.yaml");

#[test]
fn source_errors_name_the_sources() {
    let gw = Gateway::new();
    gw.add(TWO_SOURCES);
    let err = gw.fails(&["ingest", "nope", "--stdin"], "");
    assert!(err.contains("dataset 'nope' does not exist"), "{err}");
    let err = gw.fails(&["ingest", "multi", "--stdin"], r#"{"x":1}"#);
    assert!(err.contains("several push sources; name one of: alpha, gamma"), "{err}");
    let err = gw.fails(&["ingest", "multi", "--stdin", "--source-name", "delta"], r#"{"x":1}"#);
    assert!(err.contains("no push source 'delta' (sources: alpha, beta, gamma)"), "{err}");
    let err = gw.fails(&["ingest", "multi", "--stdin", "--source-name", "beta"], "1\n");
    assert!(err.contains("push source 'beta' of dataset 'multi' is disabled"), "{err}");
    gw.ok(&["ingest", "multi", "--stdin", "--source-name", "gamma"], "1\n2\n");
    assert_eq!(gw.records("multi").len(), 2);
    gw.verify("multi");
}

#[test]
fn bad_records_commit_nothing_unless_skipped() {
    let gw = Gateway::new();
    gw.add(LEDGER);
    let input = [
        r#"{"device_id":"A","seq":1,"t":"2026-01-01T00:00:00Z","lat":1.5}"#,
        r#"{"device_id":"A","seq":2,"t":"2026-01-01T00:00:01Z","lat":"north"}"#,
        r#"{"device_id":"A","seq":3,"t":"2026-01-01T00:00:02Z","lat":3.5"#,
        r#"{"device_id":"A","t":"2026-01-01T00:00:03Z","lat":4.5}"#,
        r#"{"device_id":"A","seq":5,"t":"2026-01-01T00:00:04Z","lat":5.5}"#,
    ]
    .join("\n");
    let blocks = gw.blocks("trackers");
    let err = gw.fails(&["ingest", "trackers", "--stdin"], &input);
    assert!(
        err.contains("record 2 (line 2): field 'lat': \"north\" is not a Float64: not a number"),
        "{err}"
    );
    assert!(err.contains("record 3 (line 3): malformed JSON at column"), "{err}");
    assert!(err.contains("record 4 (line 4): field 'seq': is missing, but the schema requires it"), "{err}");
    assert!(err.contains("3 record(s) rejected; nothing was committed"), "{err}");
    assert_eq!(gw.blocks("trackers"), blocks);

    let out = gw.ok(&["ingest", "trackers", "--stdin", "--skip-bad-records"], &input);
    assert!(out.contains("skipped: <stdin>: record 2 (line 2)"), "{out}");
    assert!(out.contains("Dataset updated: 2 record(s)"), "{out}");
    let seqs: Vec<i64> = gw.records("trackers").iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 5]);
    gw.verify("trackers");
}

#[test]
fn malformed_csv_and_cbor_name_the_place() {
    let gw = Gateway::new();
    gw.add(SEED_GPS);
    let err = gw.fails(
        &["ingest", "gps", "--stdin", "--input-format", "csv"],
        "t,long,lat\n2020-01-01T00:00:00Z,1,2,3\n",
    );
    assert!(err.contains("record 1 (line 2): 4 fields, where 3 are expected"), "{err}");
    let err = gw.fails(&["ingest", "gps", "--stdin", "--input-format", "cbor"], "\u{a1}\u{61}");
    assert!(err.contains("record 1 (byte 0)"), "{err}");
    gw.verify("gps");
}

#[test]
fn sql_over_all_datasets() {
    let gw = Gateway::new();
    gw.add(LEDGER);
    gw.add(SEED_GPS);
    gw.ok(&["ingest", "trackers", "--stdin"], &(reports("A", 1..=3) + &reports("B", 1..=2)));
    let out = gw.ok(
        &[
            "sql",
            "SELECT device_id, count(*) AS n FROM trackers GROUP BY device_id ORDER BY device_id",
            "-o",
            "csv",
        ],
        "",
    );
    assert!(out.starts_with("device_id,n\nA,3\nB,2\n"), "{out}");
    let out = gw.ok(&["sql", "SELECT max(seq) AS top FROM trackers", "-o", "json"], "");
    assert!(out.contains(r#"{"top":3}"#), "{out}");
    let table = gw.ok(&["sql", "SELECT count(*) AS c FROM trackers WHERE lat > 2"], "");
    assert!(table.contains("│ 3 "), "{table}");
    let err = gw.fails(&["sql", "SELECT * FROM nowhere"], "");
    assert!(err.contains("nowhere"), "{err}");
    gw.verify("trackers");
}

/// The `gps` dataset the gateway ships, with its three vendors.
fn shipped_gps_manifest() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/gps.yaml")).unwrap()
}

#[test]
fn the_gps_manifest_takes_all_three_vendors() {
    use ciborium::Value as C;
    let gw = Gateway::new();
    gw.add(&shipped_gps_manifest());
    let a = r#"{"device_id":"A-0001","seq":42,"t":"2026-01-01T12:00:00Z","lat":49.28,"lon":-123.12,"speed_kmh":31.5,"heading":270,"battery_pct":87}"#;
    gw.ok(&["ingest", "gps", "--stdin", "--source-name", "vendorA"], a);
    let b = "imei,ts,latitude,longitude,speed_knots,course,battery,counter\n356938035643809,1767268801000,49.29,-123.11,10.0,90.0,55,7\n";
    gw.ok(&["ingest", "gps", "--stdin", "--source-name", "vendorB"], b);
    let c = C::Map(
        [
            ("i", C::Text("C-0007".into())),
            ("n", 17.into()),
            ("ts", 1_767_268_802i64.into()),
            ("la", C::Float(49.3)),
            ("lo", C::Float(-123.1)),
            ("v", C::Float(2.5)),
            ("h", 180.into()),
            ("b", 64.into()),
        ]
        .into_iter()
        .map(|(k, v)| (C::Text(k.into()), v))
        .collect(),
    );
    let mut cbor = Vec::new();
    ciborium::into_writer(&c, &mut cbor).unwrap();
    let file = gw.write("c.cbor", &cbor);
    gw.ok(&["ingest", "gps", "--source-name", "vendorC", path(&file)], "");
    // A re-sent report is dropped by the Ledger merge.
    let out = gw.ok(&["ingest", "gps", "--stdin", "--source-name", "vendorA"], a);
    assert!(out.contains("Dataset up-to-date"), "{out}");

    let records = gw.records("gps");
    let summary: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {:.2} {}",
                r["t"],
                r["device_id"],
                r["seq"],
                r["speed"].as_f64().unwrap(),
                r["battery"]
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            r#""2026-01-01T12:00:00Z" "A-0001" 42 31.50 87.0"#,
            r#""2026-01-01T12:00:01Z" "356938035643809" 7 18.52 55.0"#,
            r#""2026-01-01T12:00:02Z" "C-0007" 17 9.00 64.0"#,
        ]
    );
    gw.verify("gps");
}

#[test]
fn simulated_fleets_of_all_three_vendors() {
    use device_sim::gps::{Fleet, Vendor, encode};
    let gw = Gateway::new();
    gw.add(&shipped_gps_manifest());
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T08:00:00Z").unwrap().to_utc();
    for (vendor, source, extension) in
        [(Vendor::A, "vendorA", "ndjson"), (Vendor::B, "vendorB", "csv"), (Vendor::C, "vendorC", "cbor")]
    {
        let mut fleet = Fleet::new(vendor, 5, 42, start, chrono::Duration::seconds(10));
        let reports: Vec<_> = (0..4).flat_map(|_| fleet.tick()).collect();
        let file = gw.write(&format!("{source}.{extension}"), &encode(vendor, &reports));
        let out = gw.ok(&["ingest", "gps", "--source-name", source, path(&file)], "");
        assert!(out.contains("Dataset updated: 20 record(s)"), "{source}: {out}");
        // The same traffic again (a device re-sending after lost acks) adds nothing.
        let out = gw.ok(&["ingest", "gps", "--source-name", source, path(&file)], "");
        assert!(out.contains("Dataset up-to-date"), "{source}: {out}");
    }
    let out = gw.ok(
        &["sql", "SELECT count(DISTINCT device_id) AS devices, count(*) AS reports FROM gps", "-o", "csv"],
        "",
    );
    assert!(out.starts_with("devices,reports\n15,60\n"), "{out}");
    gw.verify("gps");
}

// Source definitions as kamu reads them: redefined push sources, declared schemas, the order
// of push and polling sources, and the warning on Disable events.

const REDEFINED: &str = include_str!("fixtures/redefined.yaml");

#[test]
fn a_redefined_push_source_takes_its_latest_definition() {
    let gw = Gateway::new();
    gw.add(REDEFINED);
    // The latest definition reads CSV and merges as a Ledger.
    gw.ok(&["ingest", "sensors", "--stdin"], "id,value\n1,1.5\n2,2.5\n");
    gw.ok(&["ingest", "sensors", "--stdin"], "id,value\n2,9.0\n3,3.5\n");
    let ids: Vec<i64> = gw.records("sensors").iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3]);
    gw.verify("sensors");
}

const DECLARED_SCHEMA: &str = include_str!("fixtures/declared-schema.yaml");

#[test]
fn a_manifest_may_declare_the_data_schema() {
    let gw = Gateway::new();
    gw.add(DECLARED_SCHEMA);
    assert_eq!(gw.blocks("declared"), 3);
    gw.ok(&["ingest", "declared", "--stdin"], "{\"event_time\": \"2026-01-01T00:00:00Z\", \"id\": 7}\n");
    // The declared schema stands: the first data commit adds no SetDataSchema of its own.
    assert_eq!(gw.blocks("declared"), 4);
    assert_eq!(gw.records("declared")[0]["id"], 7);
    gw.verify("declared");

    let missing_system_columns =
        DECLARED_SCHEMA.replace("          - { name: op, type: { kind: Int32 } }\n", "");
    let err = gw.fails(&["add", "--stdin"], &missing_system_columns.replace("name: declared", "name: other"));
    assert!(err.contains("must start with the system columns [offset Int64, op Int32"), "{err}");
}

#[test]
fn push_and_polling_sources_follow_kamus_order() {
    let gw = Gateway::new();
    let polling_then_push = "
kind: DatasetSnapshot
version: 1
content:
  name: switched
  kind: Root
  metadata:
    - kind: SetPollingSource
      fetch: { kind: Url, url: \"https://example.org/a.csv\" }
      read: { kind: Csv, header: true }
      merge: { kind: Append }
    - kind: DisablePollingSource
    - kind: AddPushSource
      sourceName: default
      read: { kind: NdJson, ddlSchema: [\"id BIGINT\"] }
      merge: { kind: Append }
";
    let err = gw.fails(&["add", "--stdin"], polling_then_push);
    assert!(err.contains("content.metadata[2]") && err.contains("has had a polling source"), "{err}");
}

#[test]
fn writing_a_disable_event_warns_that_kamu_cannot_read_the_dataset() {
    let gw = Gateway::new();
    let manifest = format!(
        "{}    - kind: DisablePushSource\n      sourceName: default\n",
        REDEFINED.replace("name: sensors", "name: retired")
    );
    let (ok, _, stderr) = gw.run(&["add", "--stdin"], &manifest);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("warning: dataset 'retired' holds DisablePushSource"), "{stderr}");
    assert!(stderr.contains("kamu's current release cannot read this dataset"), "{stderr}");

    // Without a Disable event, no warning.
    let (ok, _, stderr) = gw.run(&["add", "--stdin"], REDEFINED);
    assert!(ok && !stderr.contains("kamu"), "{stderr}");
}
