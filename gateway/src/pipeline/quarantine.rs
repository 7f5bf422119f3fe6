//! The quarantine of one dataset: payloads (or parts of them) that could not be committed,
//! with the route, the sender, the reasons and the time, kept across restarts for an
//! operator to list, read and purge (`odf-gateway quarantine`, `GET /datasets/{ds}/quarantine`).
//!
//! ```text
//! <data-dir>/.quarantine/<dataset>/<id>.json    one entry: metadata and the payload (base64)
//! ```
//!
//! An id is the receive time in milliseconds and a random suffix, so entries sort by time.
//! Each entry is written durably before the sender is told it was rejected. The quarantine
//! is bounded: past `max_entries` the oldest entries are removed, with a warning and a
//! count in the metrics.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::rejection::Rejection;
use crate::store::IoError;

pub const FOLDER: &str = ".quarantine";
const SUFFIX: &str = ".json";

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("quarantine entry {path}: {reason}")]
    Damaged { path: String, reason: String },
    #[error("no quarantine entry '{0}'")]
    NotFound(String),
}

/// One quarantined payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    pub id: String,
    pub time: DateTime<Utc>,
    pub dataset: String,
    pub source: Option<String>,
    pub route: String,
    pub sender: String,
    /// The format the payload was read as.
    pub format: Option<String>,
    pub reasons: Vec<Rejection>,
    /// Records of the payload that were accepted (the rest are the reasons).
    pub accepted: usize,
    #[serde(with = "payload_base64")]
    pub payload: Vec<u8>,
}

/// An entry without its payload, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: String,
    pub time: DateTime<Utc>,
    pub source: Option<String>,
    pub route: String,
    pub sender: String,
    pub rejected: usize,
    pub accepted: usize,
    pub first_reason: String,
    pub payload_bytes: usize,
}

pub struct Quarantine {
    dir: PathBuf,
    max_entries: usize,
    max_bytes: u64,
    /// Entries and bytes on disk as last counted; `None` until first needed.
    usage: Mutex<Option<(usize, u64)>>,
}

impl Quarantine {
    pub fn new(data_dir: &Path, dataset: &str, max_entries: usize, max_bytes: u64) -> Quarantine {
        Quarantine {
            dir: data_dir.join(FOLDER).join(dataset),
            max_entries: max_entries.max(1),
            max_bytes: max_bytes.max(1),
            usage: Mutex::new(None),
        }
    }

    /// Writes `entry` durably (its `id` is set here) and returns the id.
    pub fn put(&self, mut entry: QuarantineEntry) -> Result<String, QuarantineError> {
        fs::create_dir_all(&self.dir).map_err(|error| IoError {
            action: "create folder",
            path: self.dir.clone(),
            error,
        })?;
        entry.id = new_id(entry.time);
        let bytes = serde_json::to_vec_pretty(&entry)
            .map_err(|e| QuarantineError::Damaged { path: entry.id.clone(), reason: e.to_string() })?;
        crate::store::write_atomic(&self.dir.join(format!("{}{SUFFIX}", entry.id)), &bytes)?;
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let (entries, size) = match *usage {
            Some((entries, size)) => (entries + 1, size + bytes.len() as u64),
            None => self.measure()?,
        };
        *usage = Some((entries, size));
        if entries > self.max_entries || size > self.max_bytes {
            let (removed, freed) = self.evict(entries, size)?;
            *usage = Some((entries - removed, size.saturating_sub(freed)));
            metrics::counter!("odf_quarantine_evicted_total", "dataset" => entry.dataset.clone())
                .increment(removed as u64);
            tracing::warn!(
                dataset = %entry.dataset,
                removed,
                "the quarantine is over its limit ({} entries, {} bytes): the oldest were removed",
                self.max_entries,
                self.max_bytes
            );
        }
        Ok(entry.id)
    }

    /// Entries and bytes on disk.
    fn measure(&self) -> Result<(usize, u64), QuarantineError> {
        let ids = self.ids()?;
        let bytes = ids.iter().filter_map(|id| fs::metadata(self.path(id)).ok()).map(|m| m.len()).sum();
        Ok((ids.len(), bytes))
    }

    /// Removes the oldest entries until both counts are under nine tenths of their limits;
    /// returns (entries, bytes) removed.
    fn evict(&self, mut entries: usize, mut size: u64) -> Result<(usize, u64), QuarantineError> {
        let (mut removed, mut freed) = (0, 0);
        for id in self.ids()? {
            if entries <= self.max_entries * 9 / 10 && size <= self.max_bytes / 10 * 9 {
                break;
            }
            let bytes = fs::metadata(self.path(&id)).map(|m| m.len()).unwrap_or(0);
            self.remove(&id)?;
            (entries, size) = (entries - 1, size.saturating_sub(bytes));
            (removed, freed) = (removed + 1, freed + bytes);
        }
        Ok((removed, freed))
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    /// Entry ids, oldest first.
    pub fn ids(&self) -> Result<Vec<String>, QuarantineError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(IoError { action: "list", path: self.dir.clone(), error }.into()),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| IoError { action: "list", path: self.dir.clone(), error })?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.strip_suffix(SUFFIX)) {
                if !id.starts_with('.') {
                    ids.push(id.to_owned());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    pub fn len(&self) -> Result<usize, QuarantineError> {
        Ok(self.ids()?.len())
    }

    pub fn get(&self, id: &str) -> Result<QuarantineEntry, QuarantineError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(QuarantineError::NotFound(id.to_owned()));
        }
        let path = self.dir.join(format!("{id}{SUFFIX}"));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(QuarantineError::NotFound(id.to_owned()));
            }
            Err(error) => return Err(IoError { action: "read", path, error }.into()),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| QuarantineError::Damaged { path: path.display().to_string(), reason: e.to_string() })
    }

    /// Every entry without its payload, oldest first; entries that cannot be read are named.
    pub fn list(&self) -> Result<Vec<Result<Summary, QuarantineError>>, QuarantineError> {
        Ok(self.ids()?.into_iter().map(|id| self.get(&id).map(|e| e.summary())).collect())
    }

    /// Removes every entry (or those before `before`); returns how many.
    pub fn purge(&self, before: Option<DateTime<Utc>>) -> Result<usize, QuarantineError> {
        let ids = self.ids()?;
        let cutoff = before.map(|t| new_id_prefix(t));
        let doomed: Vec<&String> =
            ids.iter().filter(|id| cutoff.as_ref().is_none_or(|c| id.as_str() < c.as_str())).collect();
        for id in &doomed {
            self.remove(id)?;
        }
        *self.usage.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(doomed.len())
    }

    fn remove(&self, id: &str) -> Result<(), QuarantineError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(IoError { action: "remove", path, error }.into()),
        }
    }
}

impl QuarantineEntry {
    pub fn summary(&self) -> Summary {
        Summary {
            id: self.id.clone(),
            time: self.time,
            source: self.source.clone(),
            route: self.route.clone(),
            sender: self.sender.clone(),
            rejected: self.reasons.len(),
            accepted: self.accepted,
            first_reason: self.reasons.first().map(ToString::to_string).unwrap_or_default(),
            payload_bytes: self.payload.len(),
        }
    }
}

fn new_id_prefix(time: DateTime<Utc>) -> String {
    format!("{:013}", time.timestamp_millis().max(0))
}

fn new_id(time: DateTime<Utc>) -> String {
    let mut nonce = [0u8; 4];
    let _ = getrandom::fill(&mut nonce);
    format!("{}-{}", new_id_prefix(time), hex::encode(nonce))
}

mod payload_base64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// The payload as people read it: text when it is UTF-8, else base64.
pub fn payload_for_people(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("(binary, base64) {}", base64::engine::general_purpose::STANDARD.encode(payload)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time_ms: i64) -> QuarantineEntry {
        QuarantineEntry {
            id: String::new(),
            time: DateTime::from_timestamp_millis(time_ms).unwrap(),
            dataset: "gps".into(),
            source: Some("vendorA".into()),
            route: "/datasets/gps/sources/vendorA".into(),
            sender: "127.0.0.1:4000".into(),
            format: Some("NdJson".into()),
            reasons: vec![Rejection {
                record: 1,
                line: Some(1),
                element: None,
                byte: None,
                field: Some("lat".into()),
                value: Some("\"north\"".into()),
                expected: Some("Float64".into()),
                reason: "not a number".into(),
            }],
            accepted: 0,
            payload: vec![0xff, b'{'],
        }
    }

    #[test]
    fn entries_survive_a_reopen_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path(), "gps", 10, u64::MAX);
        let id = q.put(entry(1000)).unwrap();
        let reopened = Quarantine::new(dir.path(), "gps", 10, u64::MAX);
        let back = reopened.get(&id).unwrap();
        assert_eq!(back.payload, vec![0xff, b'{']);
        assert_eq!(back.reasons[0].field.as_deref(), Some("lat"));
        for i in 0..20 {
            reopened.put(entry(2000 + i)).unwrap();
        }
        let ids = reopened.ids().unwrap();
        assert!(ids.len() <= 10, "{}", ids.len());
        assert!(!ids.contains(&id), "the oldest went first");
        assert_eq!(
            reopened.purge(Some(DateTime::from_timestamp_millis(2015).unwrap())).unwrap(),
            ids.len() - 5
        );
        assert_eq!(reopened.purge(None).unwrap(), 5);
        assert!(matches!(reopened.get("../../etc/passwd"), Err(QuarantineError::NotFound(_))));

        // Bounded by bytes as well: big payloads push the oldest out.
        let small = Quarantine::new(dir.path(), "big", 1000, 8192);
        for i in 0..10 {
            small.put(QuarantineEntry { payload: vec![b'x'; 2000], ..entry(5000 + i) }).unwrap();
        }
        let bytes: u64 =
            small.ids().unwrap().iter().map(|id| fs::metadata(small.path(id)).unwrap().len()).sum();
        assert!(bytes <= 8192, "{bytes}");
    }
}
