//! What an adversarial run of the CLI found (issue 17), each through the CLI as a user meets
//! it: a closed or full output, SQL too deep to plan, CSV that silently lost rows, integers
//! rounded through floats, a Ledger without a key.

#[allow(dead_code)]
mod common;

use std::process::Stdio;

use common::{Gateway, LEDGER, reports};

const CSV_SOURCE: &str = include_str!("fixtures/csv-rows.yaml");

fn with_data() -> Gateway {
    let gw = Gateway::new();
    gw.add(LEDGER);
    gw.ok(&["ingest", "trackers", "--stdin"], &reports("A", 1..=9));
    gw
}

#[test]
fn a_closed_pipe_ends_a_command_quietly_and_a_full_disk_is_an_error() {
    let gw = with_data();
    for args in [&["log", "trackers"][..], &["list"], &["verify", "trackers"], &["tail", "trackers"]] {
        let command = || {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_odf-gateway"));
            command.args(args).env("ODF_GATEWAY_DATA_DIR", gw.data());
            command
        };
        // The reader goes away before the command writes: `odf-gateway log | head -c0`.
        let mut child = command().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");

        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = command().stdout(full).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("cannot write the output") && stderr.contains("space"), "{args:?}: {stderr}");
    }
}

#[test]
fn sql_too_deep_to_plan_is_refused_not_a_crash() {
    let gw = with_data();
    let sum = format!("SELECT {} AS x", vec!["1"; 20_000].join("+"));
    let (ok, _, stderr) = gw.run(&["sql", &sum], "");
    assert!(!ok && stderr.contains("more than 256 operators"), "{stderr}");
    assert!(gw.ok(&["sql", "SELECT 1+1+1 AS x"], "").contains('3'));

    let manifest = CSV_SOURCE.replace(
        "      merge:",
        &format!("      preprocess:\n        kind: Sql\n        engine: datafusion\n        query: \"SELECT id, {} AS n FROM input\"\n      merge:", vec!["n"; 5_000].join("+")),
    );
    let (ok, _, stderr) = gw.run(&["add", "--stdin"], &manifest);
    assert!(!ok && stderr.contains("more than 256 operators"), "{stderr}");
}

#[test]
fn csv_rows_that_lost_fields_or_left_a_quote_open_are_bad_records() {
    let gw = Gateway::new();
    gw.add(CSV_SOURCE);
    let stderr = gw.fails(&["ingest", "rows", "--stdin"], "id,n\nr1,1\n\"r2,2\nr3,3\nr4,4\n");
    assert!(stderr.contains("record 2 (line 3): a quoted field is not closed"), "{stderr}");
    let stderr = gw.fails(&["ingest", "rows", "--stdin"], "id,n\nr1,1\nr2\nr3,3\n");
    assert!(stderr.contains("record 2 (line 3): 1 fields, where 2 are expected"), "{stderr}");
    assert!(gw.records("rows").is_empty());
    let out = gw.ok(&["ingest", "rows", "--stdin", "--skip-bad-records"], "id,n\nr1,1\nr2\nr3,3\n");
    assert!(out.contains("skipped:"), "{out}");
    assert_eq!(gw.records("rows").len(), 2);
}

#[test]
fn integers_never_round_through_floats() {
    let gw = Gateway::new();
    gw.add(LEDGER);
    let record = |seq: &str| format!(r#"{{"device_id":"A","seq":{seq},"t":"2026-01-01T00:00:00Z","lat":1}}"#);
    for seq in
        ["-9223372036854775809", "-9223372036854776000", "9007199254740993.0", "9007199254740993.5", "1e30"]
    {
        let stderr = gw.fails(&["ingest", "trackers", "--stdin"], &record(seq));
        assert!(stderr.contains("field 'seq'") && stderr.contains("2^53"), "{seq}: {stderr}");
    }
    // The same value as CSV text and as a JSON string: the same answer.
    let stderr = gw.fails(&["ingest", "trackers", "--stdin"], &record("\"9007199254740993.0\""));
    assert!(stderr.contains("2^53"), "{stderr}");
    gw.ok(&["ingest", "trackers", "--stdin"], &record("9223372036854775807"));
    let records = gw.records("trackers");
    assert_eq!(records[0]["seq"], serde_json::json!(9_223_372_036_854_775_807_i64));
}

#[test]
fn a_merge_without_a_primary_key_is_refused_at_add() {
    let gw = Gateway::new();
    let (ok, _, stderr) = gw.run(&["add", "--stdin"], &LEDGER.replace("[device_id, seq]", "[]"));
    assert!(!ok && stderr.contains("needs a primaryKey of at least one column"), "{stderr}");
}

#[test]
fn a_damaged_slice_fails_reads_loudly() {
    let gw = with_data();
    gw.ok(&["ingest", "trackers", "--stdin"], &reports("B", 1..=9));
    let data = gw.data().join("trackers").join("data");
    let slices: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(slices.len(), 2);

    // One bit flipped: the size still fits, the hash does not.
    let mut bytes = std::fs::read(&slices[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&slices[0], &bytes).unwrap();
    let stderr = gw.fails(&["tail", "trackers"], "");
    assert!(stderr.contains("is damaged") && stderr.contains("odf-gateway verify trackers"), "{stderr}");

    // Gone: `sql` refuses to answer from what is left.
    std::fs::remove_file(&slices[0]).unwrap();
    let stderr = gw.fails(&["sql", "SELECT count(*) AS n FROM trackers"], "");
    assert!(stderr.contains("cannot read") && stderr.contains("odf-gateway verify trackers"), "{stderr}");
}

#[test]
fn messages_say_what_is_really_wrong() {
    let gw = with_data();
    // A symbolic link loop under -r is a loop, not a missing file.
    let dir = gw.data().parent().unwrap().join("inbox");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(dir.join("loop"), dir.join("loop")).unwrap();
    let stderr = gw.fails(&["ingest", "trackers", "-r", dir.to_str().unwrap()], "");
    assert!(stderr.contains("symbolic links"), "{stderr}");

    // A file given as the data directory.
    let file = gw.write("not-a-folder", b"x");
    let (ok, _, stderr) = gw.run(&["--data-dir", file.to_str().unwrap(), "list"], "");
    assert!(!ok && stderr.contains("is not a folder"), "{stderr}");

    // A newline added to refs/head by hand is not damage.
    let head = gw.data().join("trackers/refs/head");
    let text = std::fs::read_to_string(&head).unwrap();
    std::fs::write(&head, format!("{text}\n")).unwrap();
    assert_eq!(gw.records("trackers").len(), 9);
}

#[test]
fn a_writer_waiting_for_the_lock_says_so() {
    use std::io::{BufRead, Write};
    let gw = with_data();
    let held = std::fs::File::options().write(true).open(gw.data().join("trackers/info/lock")).unwrap();
    held.lock().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_odf-gateway"))
        .args(["ingest", "trackers", "--stdin"])
        .env("ODF_GATEWAY_DATA_DIR", gw.data())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(reports("C", 1..=1).as_bytes()).unwrap();
    // The lock is released once the writer has said what it waits for (it gives up after
    // 30 s, so a writer that never says it fails this test rather than hang it).
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while stderr.read_line(&mut said).unwrap() > 0 && !said.contains("waiting for the write lock") {}
    assert!(said.contains("held by process"), "{said}");
    drop(held);
    assert!(child.wait().unwrap().success());
    assert_eq!(gw.records("trackers").len(), 10);
}

#[test]
fn nothing_is_committed_on_top_of_a_lost_slice() {
    let gw = with_data();
    let before = gw.blocks("trackers");
    let data = gw.data().join("trackers").join("data");
    let slice = std::fs::read_dir(&data).unwrap().next().unwrap().unwrap().path();
    std::fs::remove_file(&slice).unwrap();
    let stderr = gw.fails(&["ingest", "trackers", "--stdin"], &reports("B", 1..=2));
    assert!(stderr.contains("cannot read") && stderr.contains("odf-gateway verify trackers"), "{stderr}");
    assert_eq!(gw.blocks("trackers"), before, "no new block");
}

#[test]
fn gc_removes_only_what_no_block_references() {
    let gw = with_data();
    let root = gw.data().join("trackers");
    let blocks_before = gw.blocks("trackers");
    // What a crash between writing an object and moving the head leaves behind.
    let orphan_slice =
        root.join("data/f1620aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    let orphan_block =
        root.join("blocks/f1620bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    std::fs::write(&orphan_slice, vec![0u8; 4096]).unwrap();
    std::fs::write(&orphan_block, b"block").unwrap();
    let out = gw.ok(&["gc", "trackers"], "");
    assert!(out.contains("removed 2 unreferenced file(s)"), "{out}");
    assert!(!orphan_slice.exists() && !orphan_block.exists());
    assert_eq!(gw.blocks("trackers"), blocks_before);
    gw.verify("trackers");
    assert_eq!(gw.records("trackers").len(), 9);
    assert!(gw.ok(&["gc", "--all"], "").contains("removed 0"));
}

#[test]
fn deep_manifests_and_huge_cells_are_bounded() {
    let gw = Gateway::new();
    // 200 KB of nested brackets: refused at once, not after minutes of parsing.
    let nested = format!(
        "kind: DatasetSnapshot\nversion: 1\ncontent: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let started = std::time::Instant::now();
    let stderr = gw.fails(&["add", "--stdin"], &nested);
    assert!(stderr.contains("nests deeper than 64"), "{stderr}");
    let indented: String = (0..2000).map(|i| format!("{}a{i}:\n", " ".repeat(i))).collect();
    let stderr = gw.fails(&["add", "--stdin"], &indented);
    assert!(stderr.contains("nests deeper than 64"), "{stderr}");
    eprintln!("refused in {:?}", started.elapsed());

    // A 1 MB cell is cut in a table (people read tables), whole in JSON.
    gw.add(CSV_SOURCE);
    let big = "x".repeat(1 << 20);
    gw.ok(&["ingest", "rows", "--stdin"], &format!("id,n\n{big},1\n"));
    let table = gw.ok(&["tail", "rows"], "");
    assert!(table.len() < 10_000 && table.contains('…'), "{} bytes", table.len());
    assert_eq!(gw.records("rows")[0]["id"].as_str().unwrap().len(), 1 << 20);
}

#[test]
fn sql_errors_say_it_once_and_name_a_dataset_without_data() {
    let gw = with_data();
    gw.add(CSV_SOURCE);
    let stderr = gw.fails(&["sql", "SELECT * FROM rows"], "");
    assert!(stderr.contains("dataset 'rows' has no data yet"), "{stderr}");
    let stderr = gw.fails(&["sql", "SELECT nope FROM trackers"], "");
    let words = stderr.matches("nope").count();
    assert!(words >= 1 && words <= 2, "said {words} times: {stderr}");
    assert!(!stderr.contains("caused by"), "{stderr}");
}

#[test]
fn a_system_time_far_ahead_of_the_clock_is_refused_unless_meant() {
    let gw = with_data();
    let future = ["--system-time", "2999-01-01T00:00:00Z"];
    let stderr = gw.fails(&[&future[..], &["ingest", "trackers", "--stdin"]].concat(), &reports("D", 1..=1));
    assert!(
        stderr.contains("more than a day ahead") && stderr.contains("--allow-future-system-time"),
        "{stderr}"
    );
    gw.ok(
        &[&future[..], &["--allow-future-system-time", "ingest", "trackers", "--stdin"]].concat(),
        &reports("D", 1..=1),
    );
}
