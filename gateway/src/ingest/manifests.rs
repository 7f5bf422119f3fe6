//! The rule for applying manifests, shared by `add` and the coming `serve`: every manifest
//! is parsed and checked (push sources' schemas, read options and preprocess queries planned
//! against the read schema; dataset names defined once) before any dataset is created.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::odf::{DatasetSnapshot, ManifestChanges, MetadataEvent, manifest_changes, parse_snapshots};
use crate::store::{DataDir, StoreError};

/// The manifests at `path` as (origin, text): the file itself, or the `*.yaml` / `*.yml`
/// files of a folder (and of its sub-folders with `recursive`), in name order.
pub fn read_manifests(path: &Path, recursive: bool) -> Result<Vec<(String, String)>, String> {
    let mut inputs = Vec::new();
    for file in manifest_files(path, recursive)? {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("read {}: {e}", file.display()))?;
        inputs.push((file.display().to_string(), text));
    }
    Ok(inputs)
}

fn manifest_files(path: &Path, recursive: bool) -> Result<Vec<PathBuf>, String> {
    if !path.is_dir() {
        if !path.exists() {
            return Err(format!("{}: no such file or folder", path.display()));
        }
        return Ok(vec![path.to_owned()]);
    }
    let list_error = |e: std::io::Error| format!("list {}: {e}", path.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(list_error)? {
        let p = entry.map_err(list_error)?.path();
        if p.is_dir() {
            if recursive {
                files.extend(manifest_files(&p, true)?);
            }
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Every problem found in a set of manifests, one line each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ManifestErrors(pub Vec<String>);

/// Parses and checks manifests given as (origin, text); the snapshots, or every problem.
pub async fn check_manifests(inputs: &[(String, String)]) -> Result<Vec<DatasetSnapshot>, ManifestErrors> {
    let mut snapshots: Vec<DatasetSnapshot> = Vec::new();
    let mut errors = Vec::new();
    for (origin, text) in inputs {
        match parse_snapshots(text, origin) {
            Ok(parsed) => snapshots.extend(parsed),
            Err(e) => errors.push(e.to_string()),
        }
    }
    for snapshot in &snapshots {
        for event in &snapshot.metadata {
            if let MetadataEvent::AddPushSource(source) = event {
                if let Err(e) = super::check_push_source(source).await {
                    errors.push(format!(
                        "dataset '{}', push source '{}': {e}",
                        snapshot.name, source.source_name
                    ));
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    for snapshot in &snapshots {
        if !seen.insert(snapshot.name.clone()) {
            errors.push(format!("dataset '{}' is defined more than once", snapshot.name));
        }
    }
    if errors.is_empty() { Ok(snapshots) } else { Err(ManifestErrors(errors)) }
}

/// What applying a manifest did to its dataset.
#[derive(Debug)]
pub enum Applied {
    Created {
        name: String,
        id: String,
    },
    /// Events appended (their kinds), and notes for the operator.
    Updated {
        name: String,
        events: Vec<&'static str>,
        notes: Vec<String>,
    },
    Unchanged {
        name: String,
        notes: Vec<String>,
    },
}

/// Makes the data directory say what the manifests say: a dataset that does not exist is
/// created, one whose manifest changed gets the events that differ (see
/// `odf::manifest_changes`). Every change is worked out and checked before any is written;
/// a change that cannot be applied is an error naming the dataset, and nothing is written.
pub fn apply_manifests(
    data_dir: &DataDir,
    snapshots: &[DatasetSnapshot],
    system_time: DateTime<Utc>,
) -> Result<Vec<Applied>, ManifestErrors> {
    let mut planned = Vec::new();
    let mut errors = Vec::new();
    let existing: BTreeSet<String> = match data_dir.list() {
        Ok(names) => names.iter().map(ToString::to_string).collect(),
        Err(e) => return Err(ManifestErrors(vec![e.to_string()])),
    };
    for snapshot in snapshots {
        let name = snapshot.name.to_string();
        if !existing.contains(&name) {
            planned.push((snapshot, None));
            continue;
        }
        let change = data_dir
            .open_dataset(&name)
            .map_err(|e| e.to_string())
            .and_then(|dataset| manifest_changes(dataset.state(), &snapshot.metadata).map(|c| (dataset, c)));
        match change {
            Ok(change) => planned.push((snapshot, Some(change))),
            Err(e) => errors.push(format!("dataset '{name}': {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(ManifestErrors(errors));
    }
    let mut applied = Vec::new();
    for (snapshot, change) in planned {
        let name = snapshot.name.to_string();
        let fail = |e: StoreError| ManifestErrors(vec![format!("dataset '{name}': {e}")]);
        match change {
            None => {
                let dataset = data_dir.create_dataset(snapshot, system_time).map_err(fail)?;
                let id = dataset.state().dataset_id.as_ref().map(ToString::to_string).unwrap_or_default();
                applied.push(Applied::Created { name, id });
            }
            Some((_, ManifestChanges { events, notes })) if events.is_empty() => {
                applied.push(Applied::Unchanged { name, notes });
            }
            Some((mut dataset, ManifestChanges { events, notes })) => {
                let kinds = events.iter().map(MetadataEvent::kind).collect();
                dataset.commit(events, system_time).map_err(fail)?;
                applied.push(Applied::Updated { name, events: kinds, notes });
            }
        }
    }
    Ok(applied)
}
