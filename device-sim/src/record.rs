//! What a run sent and what the gateway acknowledged, kept after the run (by default in
//! `.device-sim/last-run.json`) so that `device-sim verify` can check it against the dataset,
//! and so that the next run's trackers go on numbering their reports where they stopped (as
//! real trackers keep their counter), instead of re-using sequence numbers the dataset's
//! Ledger already holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where the record goes unless `--record` says otherwise.
pub fn default_path() -> PathBuf {
    PathBuf::from(".device-sim").join("last-run.json")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// `run` or `load`.
    pub mode: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub dataset: String,
    /// Where the gateway's HTTP API was, for `verify` with no arguments.
    pub host: String,
    pub http_port: u16,
    /// By device id.
    pub devices: BTreeMap<String, DeviceRecord>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The push source the device writes to.
    pub source: String,
    /// The first sequence number of this run, and the one after its last report.
    pub first_seq: u64,
    pub next_seq: u64,
    /// Reports the gateway acknowledged: each must be in the dataset exactly once.
    pub acked: SeqSet,
    /// Reports sent and never acknowledged (a lost answer, a refusal): they may or may not
    /// be in the dataset.
    pub unacked: SeqSet,
}

impl RunRecord {
    pub fn load(path: &Path) -> anyhow::Result<RunRecord> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("no record of a run at {} (run `device-sim run` or `load` first)", path.display())
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a device-sim run record", path.display()))
    }

    /// Writes the record through a temporary file, so a crash never leaves half of one.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", temporary.display()))?;
        std::fs::rename(&temporary, path).with_context(|| format!("write {}", path.display()))
    }

    /// The sequence number each device of an earlier run goes on from.
    pub fn next_seqs(path: &Path) -> BTreeMap<String, u64> {
        RunRecord::load(path)
            .map(|r| r.devices.into_iter().map(|(id, d)| (id, d.next_seq)).collect())
            .unwrap_or_default()
    }
}

/// A set of sequence numbers, written as inclusive ranges: `[[1, 500], [502, 900]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet(pub BTreeSet<u64>);

impl SeqSet {
    pub fn insert(&mut self, seq: u64) {
        self.0.insert(seq);
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.0.contains(&seq)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().copied()
    }

    pub fn ranges(&self) -> Vec<[u64; 2]> {
        let mut ranges: Vec<[u64; 2]> = Vec::new();
        for seq in self.iter() {
            match ranges.last_mut() {
                Some(last) if last[1] + 1 == seq => last[1] = seq,
                _ => ranges.push([seq, seq]),
            }
        }
        ranges
    }
}

impl Serialize for SeqSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.ranges().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SeqSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SeqSet, D::Error> {
        let ranges = Vec::<[u64; 2]>::deserialize(deserializer)?;
        let mut set = BTreeSet::new();
        for [first, last] in ranges {
            if first > last || last - first > 100_000_000 {
                return Err(serde::de::Error::custom(format!("bad range [{first}, {last}]")));
            }
            set.extend(first..=last);
        }
        Ok(SeqSet(set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_round_trip_as_ranges() {
        let set = SeqSet([1, 2, 3, 5, 7, 8].into_iter().collect());
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, "[[1,3],[5,5],[7,8]]");
        assert_eq!(serde_json::from_str::<SeqSet>(&json).unwrap(), set);
        assert!(serde_json::from_str::<SeqSet>("[[5,1]]").is_err());
    }

    #[test]
    fn a_record_survives_a_save_and_gives_the_next_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/last-run.json");
        let mut devices = BTreeMap::new();
        devices.insert(
            "A-0000".to_owned(),
            DeviceRecord { source: "vendorA".into(), first_seq: 1, next_seq: 11, ..Default::default() },
        );
        let record = RunRecord {
            mode: "run".into(),
            started: Utc::now(),
            finished: Utc::now(),
            dataset: "gps".into(),
            host: "127.0.0.1".into(),
            http_port: 8080,
            devices,
        };
        record.save(&path).unwrap();
        assert_eq!(RunRecord::next_seqs(&path).get("A-0000"), Some(&11));
        assert!(RunRecord::next_seqs(&dir.path().join("none.json")).is_empty());
    }
}
