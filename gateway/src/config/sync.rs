//! `[[sync]]`: remotes `serve` pushes datasets to (see `crate::sync`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Size, invalid};
use crate::odf::DatasetName;
use crate::sync::{DATASET_PLACEHOLDER, Rate, Remote, SyncOptions};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Dataset names, or `["*"]` (the default) for every dataset.
    #[serde(default = "every_dataset")]
    pub datasets: Vec<String>,
    /// The remote, `{dataset}` standing for each dataset's name:
    /// `s3://bucket/field-7/{dataset}/`, `s3+http://host:9000/bucket/{dataset}/`, `file:///mnt/usb/{dataset}`.
    pub url: String,
    /// Push after commits at most this often.
    #[serde(default = "default_interval", with = "super::humantime_serde")]
    pub interval: Duration,
    /// While pushes fail, the wait between tries doubles from `interval` up to this.
    #[serde(default = "default_max_backoff", with = "super::humantime_serde")]
    pub max_backoff: Duration,
    /// Average upload rate at most, in bytes per second (`"64 KiB"`); none by default.
    #[serde(default)]
    pub max_rate: Option<Size>,
}

fn every_dataset() -> Vec<String> {
    vec!["*".to_owned()]
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(30 * 60)
}

/// Checks the `[[sync]]` entries.
pub fn check(entries: &[SyncConfig]) -> Result<Vec<SyncOptions>, ConfigError> {
    let mut checked = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = |f: &str| format!("sync[{i}].{f}");
        let datasets = if entry.datasets.iter().any(|d| d == "*") {
            if entry.datasets.len() > 1 {
                return Err(invalid(field("datasets"), "\"*\" stands for every dataset: give it alone"));
            }
            None
        } else if entry.datasets.is_empty() {
            return Err(invalid(field("datasets"), "give dataset names, or [\"*\"] for every dataset"));
        } else {
            let names = entry
                .datasets
                .iter()
                .map(|d| d.parse::<DatasetName>().map_err(|e| invalid(field("datasets"), e.to_string())));
            Some(names.collect::<Result<Vec<_>, _>>()?)
        };
        let several = datasets.as_ref().is_none_or(|names| names.len() > 1);
        if several && !entry.url.contains(DATASET_PLACEHOLDER) {
            return Err(invalid(
                field("url"),
                format!(
                    "must hold {DATASET_PLACEHOLDER} when it serves several datasets: each dataset is its own folder"
                ),
            ));
        }
        Remote::check_url(&entry.url.replace(DATASET_PLACEHOLDER, "dataset"))
            .map_err(|e| invalid(field("url"), e.to_string()))?;
        if entry.interval.is_zero() {
            return Err(invalid(field("interval"), "must be above 0 (e.g. \"1m\")"));
        }
        if entry.max_rate.is_some_and(|r| r.0 == 0) {
            return Err(invalid(field("max_rate"), "must be above 0 (leave it out for no limit)"));
        }
        checked.push(SyncOptions {
            datasets,
            url: entry.url.clone(),
            interval: entry.interval,
            max_backoff: entry.max_backoff.max(entry.interval),
            max_rate: entry.max_rate.map(|r| Rate(r.0)),
        });
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    fn sync_of(toml: &str) -> Result<Vec<SyncOptions>, ConfigError> {
        check(&RawConfig::from_toml(toml)?.sync)
    }

    #[test]
    fn the_smallest_entry_syncs_every_dataset_each_minute() {
        let entries = sync_of("[[sync]]\nurl = \"s3://fleet/field-7/{dataset}/\"\n").unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].datasets, None);
        assert_eq!(entries[0].interval, Duration::from_secs(60));
        assert_eq!(entries[0].url_for(&"gps".parse().unwrap()), "s3://fleet/field-7/gps/");
    }

    #[test]
    fn entries_that_cannot_work_are_refused() {
        for (toml, expected) in [
            ("url = \"s3://fleet/gps/\"", "must hold {dataset}"),
            ("url = \"ftp://x/{dataset}\"", "not one of file, s3"),
            ("datasets = [\"gps\", \"*\"]\nurl = \"s3://f/{dataset}\"", "give it alone"),
            ("datasets = []\nurl = \"s3://f/{dataset}\"", "give dataset names"),
            ("url = \"s3://f/{dataset}\"\ninterval = \"0s\"", "must be above 0"),
            ("url = \"s3://f/{dataset}\"\nmax_rate = 0", "must be above 0"),
        ] {
            let error = sync_of(&format!("[[sync]]\n{toml}\n")).unwrap_err().to_string();
            assert!(error.contains(expected), "{toml}: {error}");
        }
        let one = sync_of("[[sync]]\ndatasets = [\"gps\"]\nurl = \"s3://f/gps/\"\nmax_rate = \"64 KiB\"\n")
            .unwrap();
        assert_eq!(one[0].max_rate, Some(Rate(65536)));
    }
}
