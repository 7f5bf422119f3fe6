//! The ingest engine as a server drives it (through the library): prepare and commit, error
//! kinds, per-message metadata, source states. What it writes is checked through the CLI
//! (`verify`, `tail`, `log`), as a user would.

// Each test binary uses a part of the shared helpers.
#[allow(dead_code)]
mod common;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::{Gateway, LEDGER, reports};
use odf_gateway::ingest::{
    DatasetWriter, ErrorKind, IngestError, IngestOptions, IngestRequest, Message, MessageStream,
    SourcePosition, WriterOptions, WriterThread,
};
use odf_gateway::store::DataDir;

fn writer(gw: &Gateway, dataset: &str) -> DatasetWriter {
    let dataset = DataDir::open(&gw.data()).unwrap().open_dataset(dataset).unwrap();
    DatasetWriter::open(dataset, WriterOptions::default()).unwrap()
}

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, second).unwrap()
}

fn options() -> IngestOptions {
    IngestOptions { system_time: at(59), skip_bad_records: false }
}

fn request(messages: Vec<Message>) -> IngestRequest {
    IngestRequest { messages, ..Default::default() }
}

fn position(value: &str) -> Option<SourcePosition> {
    Some(SourcePosition { kind: "odf-gateway/wal".into(), value: value.into() })
}

#[test]
fn a_source_state_is_committed_with_the_data_and_alone_when_everything_merges_away() {
    let gw = Gateway::new();
    gw.add(LEDGER);
    let mut w = writer(&gw, "trackers");
    let first = IngestRequest {
        source_state: position("1"),
        ..request(vec![Message::new(reports("A", 1..=3), "a")])
    };
    let outcome = w.ingest(first, &options()).unwrap();
    assert_eq!(outcome.committed.unwrap().records, 3);

    // Every record is a duplicate: the new position is still recorded, in an AddData alone.
    let again = IngestRequest {
        source_state: position("2"),
        ..request(vec![Message::new(reports("A", 1..=3), "a")])
    };
    let committed = w.ingest(again, &options()).unwrap().committed.expect("a state-only commit");
    assert_eq!((committed.records, committed.offsets), (0, None));
    let state = w.dataset().state().source_state("vendorA", "odf-gateway/wal").expect("the recorded state");
    assert_eq!(state.value.as_str(), "2");

    // The same position again with nothing new: nothing to commit.
    let same = IngestRequest {
        source_state: position("2"),
        ..request(vec![Message::new(reports("A", 1..=3), "a")])
    };
    assert!(w.ingest(same, &options()).unwrap().committed.is_none());

    drop(w);
    gw.verify("trackers");
    let log = gw.ok(&["log", "trackers"], "");
    assert_eq!(log.matches("newSourceState:").count(), 2, "{log}");
    assert_eq!(gw.records("trackers").len(), 3);
}

#[test]
fn errors_say_what_a_sender_can_do() {
    let gw = Gateway::new();
    gw.add(LEDGER);
    let mut w = writer(&gw, "trackers");
    let unknown = IngestRequest { source: Some("nope".into()), ..request(vec![]) };
    let e = w.ingest(unknown, &options()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("vendorA"), "{e}");

    let bad =
        request(vec![Message::new(reports("A", 1..=1), "good"), Message::new("{\"seq\": \"x\"}\n", "dev-7")]);
    let e = w.ingest(bad, &options()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let IngestError::BadRecords(rejected) = e else { panic!("not BadRecords") };
    assert_eq!((rejected[0].message, rejected[0].origin.as_str(), rejected[0].record), (1, "dev-7", 1));
    assert!(gw.records("trackers").is_empty());
}

#[test]
fn a_writer_gives_up_on_a_held_lock_with_a_retryable_error() {
    let gw = Gateway::new();
    gw.add(LEDGER);
    let mut holder = writer(&gw, "trackers");
    let prepared = holder.prepare(request(vec![Message::new(reports("A", 1..=2), "a")]), &options()).unwrap();
    assert_eq!(prepared.records(), 2);

    let dataset = DataDir::open(&gw.data()).unwrap().open_dataset("trackers").unwrap();
    let options_short = WriterOptions { lock_timeout: Duration::from_millis(200), ..Default::default() };
    let mut waiter = DatasetWriter::open(dataset, options_short).unwrap();
    let e = waiter.ingest(request(vec![Message::new(reports("B", 1..=1), "b")]), &options()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Retryable, "{e}");
    assert!(e.to_string().contains(&format!("process {}", std::process::id())), "{e}");

    // Dropped without a commit: nothing is visible and nothing is left behind.
    drop(prepared);
    assert!(gw.records("trackers").is_empty());
    let staged: Vec<_> = std::fs::read_dir(gw.data().join("trackers/data")).unwrap().collect();
    assert!(staged.is_empty(), "{staged:?}");
    // The holder forgot the keys it had staged: they are new again.
    let outcome = holder.ingest(request(vec![Message::new(reports("A", 1..=2), "a")]), &options()).unwrap();
    assert_eq!(outcome.committed.unwrap().records, 2);
    gw.verify("trackers");
}

const SENSORS: &str = include_str!("fixtures/sensors.yaml");

#[test]
fn messages_carry_their_receive_time_and_columns_from_outside_the_payload() {
    let gw = Gateway::new();
    gw.add(SENSORS);
    let mut w = writer(&gw, "sensors");
    let messages = vec![
        Message::new("{\"value\": 1}\n{\"value\": 2}\n", "trackers/d1/gps")
            .received_at(at(1))
            .with_column("device_id", "d1"),
        Message::new("{\"value\": 3, \"device_id\": \"own\"}\n", "trackers/d2/gps")
            .received_at(at(2))
            .with_column("device_id", "d2"),
    ];
    let raw = IngestRequest { source: Some("raw".into()), ..request(messages) };
    w.ingest(raw, &options()).unwrap();

    // With a preprocess that does not see the event time, each message is run on its own.
    let messages = vec![
        Message::new("{\"raw\": \"4\"}\n", "p1").received_at(at(3)).with_column("device_id", "d3"),
        Message::new("{\"raw\": \"5\"}\n", "p2").received_at(at(4)).with_column("device_id", "d4"),
    ];
    let scaled = IngestRequest { source: Some("scaled".into()), ..request(messages) };
    w.ingest(scaled, &options()).unwrap();
    drop(w);

    let rows: Vec<(String, String, f64)> = gw
        .records("sensors")
        .iter()
        .map(|r| {
            (
                r["event_time"].as_str().unwrap().to_owned(),
                r["device_id"].as_str().unwrap().to_owned(),
                r["value"].as_f64().unwrap(),
            )
        })
        .collect();
    let t = |s: u32| at(s).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let expected = vec![
        (t(1), "d1".to_owned(), 1.0),
        (t(1), "d1".to_owned(), 2.0),
        (t(2), "own".to_owned(), 3.0),
        (t(3), "d3".to_owned(), 40.0),
        (t(4), "d4".to_owned(), 50.0),
    ];
    assert_eq!(rows, expected);
    gw.verify("sensors");
}

#[test]
fn a_message_that_fails_the_preprocess_is_rejected_alone() {
    let gw = Gateway::new();
    gw.add(SENSORS);
    let mut w = writer(&gw, "sensors");
    let messages = || {
        vec![
            Message::new("{\"device_id\": \"a\", \"raw\": \"1.5\"}\n", "good-1"),
            Message::new("{\"device_id\": \"b\", \"raw\": \"not a number\"}\n", "bad"),
            Message::new("{\"device_id\": \"c\", \"raw\": \"2\"}\n", "good-2"),
        ]
    };
    let e = w
        .ingest(IngestRequest { source: Some("scaled".into()), ..request(messages()) }, &options())
        .unwrap_err();
    let IngestError::BadRecords(rejected) = e else { panic!("not BadRecords") };
    assert_eq!(rejected.len(), 1);
    assert_eq!((rejected[0].message, rejected[0].origin.as_str()), (1, "bad"));
    assert!(rejected[0].to_string().contains("not a number"), "{}", rejected[0]);

    let skip = IngestOptions { skip_bad_records: true, ..options() };
    let outcome =
        w.ingest(IngestRequest { source: Some("scaled".into()), ..request(messages()) }, &skip).unwrap();
    assert_eq!(outcome.committed.unwrap().records, 2);
    assert_eq!(outcome.rejected.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_callers_ingest_through_a_writer_thread() {
    let gw = Gateway::new();
    gw.add(LEDGER);
    let thread = WriterThread::spawn(writer(&gw, "trackers")).unwrap();
    let mut tasks = Vec::new();
    let thread = std::sync::Arc::new(thread);
    for device in ["A", "B", "C", "D"] {
        let thread = thread.clone();
        tasks.push(tokio::spawn(async move {
            let request = request(vec![Message::new(reports(device, 1..=5), device)]);
            thread.ingest(request, options()).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().committed.unwrap().records, 5);
    }
    drop(thread);
    assert_eq!(gw.records("trackers").len(), 20);
    gw.verify("trackers");
}

#[test]
fn two_writers_on_one_ledger_dataset_take_turns() {
    let gw = Gateway::new();
    gw.add(LEDGER);
    let mut first = writer(&gw, "trackers");
    let mut second = writer(&gw, "trackers");
    first.ingest(request(vec![Message::new(reports("A", 1..=3), "a")]), &options()).unwrap();
    let outcome = second.ingest(request(vec![Message::new(reports("A", 2..=5), "b")]), &options()).unwrap();
    assert_eq!(outcome.committed.unwrap().records, 2);
    let outcome = first.ingest(request(vec![Message::new(reports("A", 4..=6), "a")]), &options()).unwrap();
    assert_eq!(outcome.committed.unwrap().records, 1);
    // And a CLI process beside a long-lived writer.
    let out = gw.ok(&["ingest", "trackers", "--stdin"], &reports("A", 6..=7));
    assert!(out.contains("Dataset updated: 1 record(s)"), "{out}");
    drop((first, second));
    assert_eq!(gw.records("trackers").len(), 7);
    gw.verify("trackers");
}

/// Reads a dataset's `data/` folder: the slices, and any temp file left behind.
fn data_files(gw: &Gateway, dataset: &str) -> Vec<String> {
    let dir = gw.data().join(dataset).join("data");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_big_input_is_read_merged_and_written_a_chunk_at_a_time() {
    // Twice the same input, through a writer reading 4 records at a time and one reading
    // everything at once: the same rows, the same logical hash.
    let input = || {
        let mut a = reports("A", 1..=10);
        a.push_str(&reports("A", 2..=2)); // a duplicate of a record three chunks back
        vec![
            MessageStream::new(std::io::Cursor::new(a), "a.ndjson"),
            MessageStream::new(std::io::Cursor::new(reports("B", 1..=5)), "b.ndjson"),
        ]
    };
    let mut results = Vec::new();
    for (dataset, chunk_rows) in [("chunked", 4), ("whole", 1 << 20)] {
        let gw = Gateway::new();
        gw.add(&LEDGER.replace("name: trackers", &format!("name: {dataset}")));
        let dir = DataDir::open(&gw.data()).unwrap().open_dataset(dataset).unwrap();
        let mut w = DatasetWriter::open(dir, WriterOptions { chunk_rows, ..Default::default() }).unwrap();
        let streams = input().into_iter().map(Ok);
        let prepared = w.prepare_streams(IngestRequest::default(), streams, &options()).unwrap();
        let outcome = prepared.commit().unwrap();
        assert_eq!((outcome.records_read, outcome.committed.unwrap().records), (16, 15));
        drop(w);
        gw.verify(dataset);
        let log = gw.ok(&["log", dataset], "");
        let hash = log.lines().find(|l| l.contains("logicalHash:")).map(str::trim).map(str::to_owned);
        results.push((gw.records(dataset), hash.expect("a logical hash")));
    }
    assert_eq!(results[0], results[1]);

    // A bad record in the last chunk: nothing is committed and nothing is left behind.
    let gw = Gateway::new();
    gw.add(LEDGER);
    let dir = DataDir::open(&gw.data()).unwrap().open_dataset("trackers").unwrap();
    let mut w = DatasetWriter::open(dir, WriterOptions { chunk_rows: 4, ..Default::default() }).unwrap();
    let mut streams = input();
    streams.push(MessageStream::new(std::io::Cursor::new("{\"device_id\": \"C\"}\n"), "c.ndjson"));
    let e = w.prepare_streams(IngestRequest::default(), streams.into_iter().map(Ok), &options()).err();
    let Some(IngestError::BadRecords(rejected)) = e else { panic!("not BadRecords: {e:?}") };
    assert_eq!((rejected.len(), rejected[0].origin.as_str()), (1, "c.ndjson"));
    assert_eq!(data_files(&gw, "trackers"), Vec::<String>::new());
    // The writer's states were not left holding the uncommitted keys.
    let outcome = w.prepare_streams(IngestRequest::default(), input().into_iter().map(Ok), &options());
    assert_eq!(outcome.unwrap().commit().unwrap().committed.unwrap().records, 15);
}
