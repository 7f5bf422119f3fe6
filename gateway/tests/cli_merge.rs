//! Merge strategies through the real binary, across ingests (each a new process, so the
//! merge state comes back from the checkpoint every time).

mod common;

use common::{Gateway, LEDGER, path, reports};

#[test]
fn ledger_dedup_across_three_ingests() {
    let gw = Gateway::new();
    gw.add(LEDGER);
    gw.ok(&["ingest", "trackers", "--stdin"], &(reports("A", 1..=5) + &reports("B", 1..=2)));
    // Overlaps the first ingest, and repeats a key inside the batch: only seq 6, 7 are new.
    let second = reports("A", 4..=7) + &reports("A", 6..=6);
    let out = gw.ok(&["ingest", "trackers", "--stdin"], &second);
    assert!(out.contains("2 record(s)"), "{out}");
    // Nothing new at all: nothing is committed.
    let blocks = gw.blocks("trackers");
    let out = gw.ok(&["ingest", "trackers", "--stdin"], &(reports("A", 1..=3) + &reports("B", 2..=2)));
    assert!(out.contains("Dataset up-to-date"), "{out}");
    assert_eq!(gw.blocks("trackers"), blocks);

    let records = gw.records("trackers");
    let keys: Vec<(String, i64)> = records
        .iter()
        .map(|r| (r["device_id"].as_str().unwrap().to_owned(), r["seq"].as_i64().unwrap()))
        .collect();
    let expected: Vec<(String, i64)> =
        [("A", 1), ("A", 2), ("A", 3), ("A", 4), ("A", 5), ("B", 1), ("B", 2), ("A", 6), ("A", 7)]
            .iter()
            .map(|(d, s)| (d.to_string(), *s))
            .collect();
    assert_eq!(keys, expected);
    let offsets: Vec<i64> = records.iter().map(|r| r["offset"].as_i64().unwrap()).collect();
    assert_eq!(offsets, (0..9).collect::<Vec<_>>());
    gw.verify("trackers");
}

const FLEET: &str = include_str!("fixtures/fleet.yaml");

#[test]
fn snapshot_cdc_across_three_ingests() {
    let gw = Gateway::new();
    gw.add(FLEET);
    gw.ok(
        &["ingest", "fleet", "--stdin"],
        "device_id,vehicle,active\nA,van-1,true\nB,van-2,true\nC,truck-1,true\n",
    );
    // B changes vehicle, C disappears, D appears.
    gw.ok(
        &["ingest", "fleet", "--stdin"],
        "device_id,vehicle,active\nA,van-1,true\nB,van-3,true\nD,bike-1,false\n",
    );
    // Unchanged rows emit nothing; A is deactivated; D is removed.
    let third = gw.write("registry.csv", b"device_id,vehicle,active\nA,van-1,false\nB,van-3,true\n");
    gw.ok(&["ingest", "fleet", path(&third)], "");

    let ops: Vec<(String, String, String)> = gw
        .records("fleet")
        .iter()
        .map(|r| {
            let op = match r["op"].as_i64().unwrap() {
                0 => "+A",
                1 => "-R",
                2 => "-C",
                3 => "+C",
                _ => "??",
            };
            (
                op.into(),
                r["device_id"].as_str().unwrap().into(),
                format!("{}/{}", r["vehicle"].as_str().unwrap(), r["active"]),
            )
        })
        .collect();
    let expected = [
        ("+A", "A", "van-1/true"),
        ("+A", "B", "van-2/true"),
        ("+A", "C", "truck-1/true"),
        ("-C", "B", "van-2/true"),
        ("+C", "B", "van-3/true"),
        ("-R", "C", "truck-1/true"),
        ("+A", "D", "bike-1/false"),
        ("-C", "A", "van-1/true"),
        ("+C", "A", "van-1/false"),
        ("-R", "D", "bike-1/false"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    assert_eq!(ops, expected);
    gw.verify("fleet");
}

#[test]
fn a_lost_or_damaged_ledger_index_is_rebuilt_from_the_data() {
    let gw = Gateway::new();
    gw.add(LEDGER);
    gw.ok(&["ingest", "trackers", "--stdin"], &reports("A", 1..=5));
    gw.ok(&["ingest", "trackers", "--stdin"], &reports("A", 4..=8));
    // The Ledger's keys live in an index beside the datasets, not in checkpoints.
    let index = gw.data().join(".index");
    assert!(index.is_dir());
    assert!(!gw.data().join("trackers/checkpoints").read_dir().unwrap().any(|_| true));

    // Deleted: the next ingest rebuilds the key set from the slices and deduplicates exactly
    // as it would have.
    std::fs::remove_dir_all(&index).unwrap();
    let out = gw.ok(&["ingest", "trackers", "--stdin"], &reports("A", 7..=10));
    assert!(out.contains("Dataset updated: 2 record(s)"), "{out}");

    // Damaged (every file of it overwritten): rebuilt too.
    let mut files = vec![index.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            std::fs::write(&path, b"not an index").unwrap();
        }
    }
    let out = gw.ok(&["ingest", "trackers", "--stdin"], &reports("A", 9..=12));
    assert!(out.contains("Dataset updated: 2 record(s)"), "{out}");
    let seqs: Vec<i64> = gw.records("trackers").iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    gw.verify("trackers");
}

const DEVICES: &str = include_str!("fixtures/devices.yaml");

fn changes(gw: &Gateway, dataset: &str) -> Vec<String> {
    gw.records(dataset)
        .iter()
        .map(|r| {
            format!("{} {} {}", r["op"], r["id"].as_str().unwrap(), r["firmware"].as_str().unwrap_or("-"))
        })
        .collect()
}

#[test]
fn upsert_stream_across_ingests() {
    let gw = Gateway::new();
    gw.add(DEVICES);
    gw.ok(
        &["ingest", "devices", "--stdin"],
        "{\"id\":\"a\",\"firmware\":\"1.0\"}\n{\"id\":\"b\",\"firmware\":\"1.0\"}",
    );
    // a is updated, b deleted, c deleted without ever existing, a upserted again unchanged.
    gw.ok(
        &["ingest", "devices", "--stdin"],
        "{\"id\":\"a\",\"firmware\":\"1.1\"}\n{\"id\":\"b\",\"op\":1}\n{\"id\":\"c\",\"op\":1}",
    );
    let out = gw.ok(&["ingest", "devices", "--stdin"], "{\"id\":\"a\",\"firmware\":\"1.1\"}");
    assert!(out.contains("Dataset up-to-date"), "{out}");
    assert_eq!(changes(&gw, "devices"), ["0 a 1.0", "0 b 1.0", "2 a 1.0", "3 a 1.1", "1 b 1.0"]);
    let err = gw.fails(&["ingest", "devices", "--stdin"], "{\"id\":\"a\",\"op\":9}");
    assert!(err.contains("record 1: 'op' is 9"), "{err}");
    gw.verify("devices");
    // `list` says how many rows the state keeps in memory: only a is left.
    let list = gw.ok(&["list", "-o", "json"], "");
    let row: serde_json::Value = serde_json::from_str(list.lines().next().unwrap()).unwrap();
    assert_eq!(row["state_rows"], 1, "{list}");
}

#[test]
fn a_damaged_checkpoint_is_not_trusted() {
    let gw = Gateway::new();
    gw.add(DEVICES);
    gw.ok(&["ingest", "devices", "--stdin"], "{\"id\":\"a\",\"firmware\":\"1.0\"}");
    gw.ok(&["ingest", "devices", "--stdin"], "{\"id\":\"b\",\"firmware\":\"1.0\"}");
    // One byte of every checkpoint changed: the state is rebuilt from the slices, so
    // re-sending what is already there changes nothing.
    for entry in std::fs::read_dir(gw.data().join("devices/checkpoints")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
    }
    let out = gw.ok(&["ingest", "devices", "--stdin"], "{\"id\":\"a\",\"firmware\":\"1.0\"}");
    assert!(out.contains("Dataset up-to-date"), "{out}");
    assert_eq!(changes(&gw, "devices"), ["0 a 1.0", "0 b 1.0"]);
}

#[test]
fn changelog_stream_passes_ops_through() {
    let gw = Gateway::new();
    gw.add(&DEVICES.replace("UpsertStream", "ChangelogStream"));
    gw.ok(
        &["ingest", "devices", "--stdin"],
        "{\"id\":\"a\",\"firmware\":\"1.0\",\"op\":0}\n{\"id\":\"a\",\"firmware\":\"1.0\",\"op\":2}\n{\"id\":\"a\",\"firmware\":\"2.0\",\"op\":3}",
    );
    assert_eq!(changes(&gw, "devices"), ["0 a 1.0", "2 a 1.0", "3 a 2.0"]);
    gw.verify("devices");
}

#[test]
fn a_snapshot_with_bad_records_is_not_committed_even_when_skipping() {
    let gw = Gateway::new();
    gw.add(FLEET);
    let err = gw.fails(
        &["ingest", "fleet", "--stdin", "--skip-bad-records"],
        "device_id,vehicle,active\nA,van,maybe\n",
    );
    assert!(err.contains("field 'active'"), "{err}");
}
