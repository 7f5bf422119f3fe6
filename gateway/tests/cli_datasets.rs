//! The dataset commands through the real binary: add, list, log, verify.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

fn schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

fn gateway(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_odf-gateway"));
    cmd.env("ODF_GATEWAY_DATA_DIR", data_dir).env_remove("ODF_GATEWAY_SYSTEM_TIME").env_remove("RUST_LOG");
    cmd
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn add_log_verify_the_gps_manifest() {
    let dir = tempfile::tempdir().unwrap();
    gateway(dir.path()).arg("add").arg(schemas().join("gps.yaml")).assert().success();

    let log = gateway(dir.path()).args(["log", "gps"]).output().unwrap();
    assert!(log.status.success(), "{}", stderr(&log));
    let log = stdout(&log);
    let sequence: Vec<u64> = log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("sequenceNumber: "))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(sequence, [5, 4, 3, 2, 1, 0], "newest first:\n{log}");
    assert_eq!(log.matches("# Block: f1620").count(), 6);
    assert!(log.contains("kind: MetadataBlock\nversion: 3\n"), "{log}");
    let seed = log.rfind("kind: Seed").unwrap();
    assert!(log[seed..].contains("datasetId: did:odf:fed01"), "{log}");
    for source in ["vendorA", "vendorB", "vendorC"] {
        assert!(log.contains(&format!("sourceName: {source}")), "{source}");
    }
    // The preprocess query is stored in its normalized form.
    assert!(log.contains("queries:") && !log.contains("\n      query:"), "{log}");

    let verify = gateway(dir.path()).args(["verify", "gps"]).output().unwrap();
    assert!(verify.status.success(), "{}", stderr(&verify));
    assert!(stdout(&verify).contains("gps: ok (6 blocks"), "{}", stdout(&verify));

    // refs/head holds the newest block's hash, as the Simple Transfer Protocol serves it.
    let head = std::fs::read_to_string(dir.path().join("gps/refs/head")).unwrap();
    assert!(log.starts_with(&format!("---\n# Block: {head}\n")), "{head}");
    assert!(dir.path().join("gps/blocks").join(&head).is_file());
}

#[test]
fn every_shipped_manifest_adds_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    gateway(dir.path()).arg("add").arg(schemas()).assert().success();
    let list = gateway(dir.path()).args(["list", "-o", "json"]).output().unwrap();
    let rows: Vec<serde_json::Value> =
        stdout(&list).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["air-quality", "fleet", "gps"]);
    for row in &rows {
        assert_eq!(row["records"], 0);
        assert!(row["id"].as_str().unwrap().starts_with("did:odf:fed01"));
        assert!(row["head"].as_str().unwrap().starts_with("f1620"));
    }
    let table = stdout(&gateway(dir.path()).arg("list").output().unwrap());
    assert!(table.contains("│ gps ") && table.contains("Records"), "{table}");
    gateway(dir.path()).args(["verify", "--all"]).assert().success();
}

#[test]
fn verify_names_a_block_with_one_corrupted_byte() {
    let dir = tempfile::tempdir().unwrap();
    gateway(dir.path()).arg("add").arg(schemas().join("gps.yaml")).assert().success();
    let log = stdout(&gateway(dir.path()).args(["log", "gps"]).output().unwrap());
    // Corrupt the fourth-newest block (an AddPushSource), deep inside the chain.
    let hash = log.lines().filter_map(|l| l.strip_prefix("# Block: ")).nth(3).unwrap().to_owned();
    let path = dir.path().join("gps/blocks").join(&hash);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let verify = gateway(dir.path()).args(["verify", "gps"]).output().unwrap();
    assert!(!verify.status.success());
    let err = stderr(&verify);
    assert!(err.contains(&format!("block {hash}")), "names the block: {err}");
    assert!(err.contains("corrupted"), "{err}");
}

#[test]
fn verify_names_a_missing_block() {
    let dir = tempfile::tempdir().unwrap();
    gateway(dir.path()).arg("add").arg(schemas().join("fleet.yaml")).assert().success();
    let head = std::fs::read_to_string(dir.path().join("fleet/refs/head")).unwrap();
    std::fs::remove_file(dir.path().join("fleet/blocks").join(&head)).unwrap();
    let verify = gateway(dir.path()).args(["verify", "fleet"]).output().unwrap();
    assert!(!verify.status.success());
    assert!(stderr(&verify).contains(&format!("block {head}: cannot read")), "{}", stderr(&verify));
}

const GOOD: &str = include_str!("fixtures/good.yaml");

/// Adds `yaml` and returns the error output, checking that it failed, said so on one error
/// line, and created nothing.
fn add_fails(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, yaml).unwrap();
    let data = dir.path().join("data");
    let output = gateway(&data).arg("add").arg(&file).output().unwrap();
    assert!(!output.status.success(), "accepted:\n{yaml}");
    let err = stderr(&output);
    let first = err.lines().next().unwrap_or_default().to_owned();
    assert!(first.starts_with("error: ") && first.contains("bad.yaml"), "{err}");
    assert!(!data.join("trackers").exists(), "nothing is created");
    first
}

#[test]
fn the_good_manifest_is_good() {
    let dir = tempfile::tempdir().unwrap();
    gateway(dir.path()).args(["add", "--stdin"]).write_stdin(GOOD).assert().success();
    gateway(dir.path()).args(["verify", "trackers"]).assert().success();
}

#[test]
fn unknown_event_kind() {
    let e = add_fails(&GOOD.replace("kind: SetVocab", "kind: SetVocabulary"));
    assert!(e.contains("content.metadata[1]: unknown MetadataEvent 'SetVocabulary'"), "{e}");
}

#[test]
fn wrong_enum_case() {
    let e = add_fails(&GOOD.replace("kind: Append", "kind: APPEND"));
    assert!(e.contains("unknown MergeStrategy 'APPEND'"), "{e}");
    // The three RFC-013 spellings are accepted.
    for spelling in ["Append", "append"] {
        let dir = tempfile::tempdir().unwrap();
        let yaml = GOOD
            .replace("kind: Append", &format!("kind: {spelling}"))
            .replace("kind: NdJson", "kind: ndJson");
        gateway(dir.path()).args(["add", "--stdin"]).write_stdin(yaml).assert().success();
    }
}

#[test]
fn a_source_redefined_under_its_name_is_accepted() {
    // kamu accepts a later AddPushSource with the same name: it replaces the definition.
    let twice = GOOD.replace(
        "    - kind: SetVocab",
        "    - kind: AddPushSource\n      sourceName: vendorA\n      read:\n        kind: Csv\n        ddlSchema: [t TIMESTAMP, a INT]\n      merge:\n        kind: Append\n    - kind: SetVocab",
    );
    let dir = tempfile::tempdir().unwrap();
    gateway(dir.path()).args(["add", "--stdin"]).write_stdin(twice).assert().success();
    let log = gateway(dir.path()).args(["log", "trackers"]).output().unwrap();
    assert_eq!(stdout(&log).matches("sourceName: vendorA").count(), 2, "{}", stdout(&log));
}

#[test]
fn ddl_type_that_does_not_exist() {
    let e = add_fails(&GOOD.replace("lat DOUBLE", "lat DOUBEL"));
    assert!(e.contains("DDL column 'lat DOUBEL': unknown type 'DOUBEL'"), "{e}");
}

#[test]
fn missing_required_field() {
    let e = add_fails(&GOOD.replace("      merge:\n        kind: Append\n", ""));
    assert!(e.contains("content.metadata[0]") && e.contains("missing field `merge`"), "{e}");
}

#[test]
fn yaml_syntax_error_gives_the_line() {
    let e = add_fails(&GOOD.replace("  kind: Root", "   kind: Root"));
    assert!(e.contains("line 6 column 8"), "{e}");
}

#[test]
fn adding_twice_fails_unless_asked_to_skip() {
    let dir = tempfile::tempdir().unwrap();
    gateway(dir.path()).args(["add", "--stdin"]).write_stdin(GOOD).assert().success();
    let again = gateway(dir.path()).args(["add", "--stdin"]).write_stdin(GOOD).output().unwrap();
    assert!(!again.status.success());
    assert!(stderr(&again).contains("dataset 'trackers' already exists"), "{}", stderr(&again));
    gateway(dir.path()).args(["add", "--if-not-exists", "--stdin"]).write_stdin(GOOD).assert().success();
}

#[test]
fn unknown_dataset_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    gateway(dir.path()).arg("add").arg(schemas().join("fleet.yaml")).assert().success();
    let output = gateway(dir.path()).args(["log", "gsp"]).output().unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("dataset 'gsp' does not exist")
            && stderr(&output).contains("datasets: fleet")
    );
}
