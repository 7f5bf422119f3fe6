//! The rule for applying manifests, shared by `add` and the coming `serve`: every manifest
//! is parsed and checked (push sources' schemas, read options and preprocess queries planned
//! against the read schema; dataset names defined once) before any dataset is created.

use std::collections::BTreeSet;

use crate::odf::{DatasetSnapshot, MetadataEvent, parse_snapshots};

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
