//! The device-sim binary as a user runs it.

use assert_cmd::Command;

#[test]
fn gps_reports_for_every_vendor() {
    let run = |vendor: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_device-sim"))
            .args([
                "gps",
                "--vendor",
                vendor,
                "--devices",
                "4",
                "--reports",
                "3",
                "--start",
                "2026-01-01T00:00:00Z",
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    };
    assert_eq!(String::from_utf8(run("a")).unwrap().lines().count(), 12);
    assert_eq!(String::from_utf8(run("b")).unwrap().lines().count(), 13, "a header and 12 rows");
    let cbor: ciborium::Value = ciborium::from_reader(run("c").as_slice()).unwrap();
    assert_eq!(cbor.as_array().unwrap().len(), 12);
    assert_eq!(run("a"), run("a"), "deterministic for a seed and start");
}
