//! The gateway binary, driven as a user drives it, for the end-to-end tests.

#[allow(dead_code)]
pub mod server;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

pub const SYSTEM_TIME: &str = "2026-01-31T12:00:00Z";

/// The gateway binary: `ODF_GATEWAY_BIN` when set (a copy kept aside: worktrees that share
/// one target folder overwrite each other's `odf-gateway`), else the one cargo built.
pub fn gateway_bin() -> PathBuf {
    std::env::var_os("ODF_GATEWAY_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_odf-gateway").into(), PathBuf::from)
}

pub struct Gateway {
    dir: tempfile::TempDir,
}

impl Gateway {
    pub fn new() -> Gateway {
        Gateway { dir: tempfile::tempdir().unwrap() }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(gateway_bin());
        cmd.env("ODF_GATEWAY_DATA_DIR", self.data())
            .env("ODF_GATEWAY_SYSTEM_TIME", SYSTEM_TIME)
            .env_remove("RUST_LOG");
        cmd
    }

    pub fn add(&self, manifest: &str) {
        let out = self.cmd().args(["add", "--stdin"]).write_stdin(manifest).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs the command; returns (success, stdout, stderr).
    pub fn run(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let out = self.cmd().args(args).write_stdin(stdin).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    pub fn ok(&self, args: &[&str], stdin: &str) -> String {
        let (ok, stdout, stderr) = self.run(args, stdin);
        assert!(ok, "{args:?} failed: {stderr}");
        stdout + &stderr
    }

    pub fn fails(&self, args: &[&str], stdin: &str) -> String {
        let (ok, _, stderr) = self.run(args, stdin);
        assert!(!ok, "{args:?} succeeded");
        stderr
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// All records, oldest first, as JSON objects.
    pub fn records(&self, dataset: &str) -> Vec<Value> {
        let out = self.ok(&["tail", dataset, "-n", "1000000", "-o", "json"], "");
        out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    pub fn blocks(&self, dataset: &str) -> usize {
        self.ok(&["log", dataset], "").matches("# Block: ").count()
    }

    pub fn verify(&self, dataset: &str) {
        let out = self.ok(&["verify", dataset], "");
        assert!(out.contains(&format!("{dataset}: ok")), "{out}");
    }
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub const LEDGER: &str = include_str!("../fixtures/trackers-ledger.yaml");

pub fn reports(device: &str, seqs: std::ops::RangeInclusive<i64>) -> String {
    seqs.map(|s| {
        format!(r#"{{"device_id":"{device}","seq":{s},"t":"2026-01-01T00:00:{s:02}Z","lat":{s}.5}}"#) + "\n"
    })
    .collect()
}
