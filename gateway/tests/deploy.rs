//! What the Debian package installs (gateway/deploy/): the systemd unit as systemd reads it,
//! and the configuration file, whose commented options must be every option with its true
//! default.

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

/// `serve --print-config` of a configuration file, as TOML.
fn printed(config: &Path) -> toml::Table {
    let out = Command::new(common::gateway_bin())
        .args(["serve", "--print-config", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", config.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().parse().unwrap()
}

#[test]
fn the_service_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    // systemd checks that ExecStart's binary exists: the one built stands in for /usr/bin's.
    let unit = std::fs::read_to_string(deploy("odf-gateway.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/odf-gateway serve --config /etc/odf-gateway/config.toml"));
    let unit = unit.replace("/usr/bin/odf-gateway", &common::gateway_bin().display().to_string());
    let path = dir.path().join("odf-gateway.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; tests/run.sh installs it)");
    let said = String::from_utf8_lossy(&out.stderr);
    // It reports unknown keys and bad values on stderr and still exits 0.
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
}

#[test]
fn the_shipped_config_lists_every_option_with_its_default() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let defaults = printed(&empty);
    let shipped_path = deploy("config.toml");
    let shipped = printed(&shipped_path);
    assert_eq!(shipped["data_dir"].as_str(), Some("/var/lib/odf-gateway"));
    assert_eq!(shipped["schemas"].as_str(), Some("/etc/odf-gateway/schemas"));
    // Listeners on loopback only; every other option as the defaults have it.
    for section in ["http", "mqtt", "coap", "pipeline"] {
        let mut shipped_options = shipped[section].as_table().unwrap().clone();
        let mut default_options = defaults[section].as_table().unwrap().clone();
        let listen = shipped_options.remove("listen");
        default_options.remove("listen");
        assert_eq!(shipped_options, default_options, "[{section}] as shipped differs from the defaults");
        for address in listen.iter().flat_map(|l| l.as_array().unwrap()) {
            let address = address.as_str().unwrap();
            let loopback = address.starts_with("127.0.0.1:") || address.starts_with("[::1]:");
            assert!(loopback, "[{section}] listens on {address} as shipped");
        }
    }

    // Every option of every section is in the file, commented out or not, with its default.
    let text = std::fs::read_to_string(&shipped_path).unwrap();
    let mut section = String::new();
    let mut documented: Vec<(String, String, toml::Value)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        let name = line.trim_matches(['[', ']']);
        if line.starts_with('[') && name.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_') {
            section = name.to_owned();
            continue;
        }
        // `key = value  # a comment` is TOML as it stands.
        if let Ok(table) = line.parse::<toml::Table>() {
            documented.extend(table.into_iter().map(|(key, value)| (section.clone(), key, value)));
        }
    }
    for section in ["http", "mqtt", "coap", "pipeline"] {
        for (key, default) in defaults[section].as_table().unwrap() {
            if key == "bridge" || key == "listen" {
                continue; // a list of tables, shown as a commented [[mqtt.bridge]]; set above
            }
            let found = documented.iter().find(|(s, k, _)| s == section && k == key);
            match found {
                Some((_, _, value)) => {
                    assert_eq!(value, default, "[{section}] {key}: the file says another default")
                }
                None => panic!("[{section}] {key} is missing from {}", shipped_path.display()),
            }
        }
    }
}
