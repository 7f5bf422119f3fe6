//! DatasetSnapshot manifests as users write them:
//!
//! ```yaml
//! kind: DatasetSnapshot
//! version: 1
//! content:
//!   name: gps
//!   kind: Root
//!   metadata:
//!     - kind: AddPushSource
//!       ...
//! ```
//!
//! Parsing gives one error line naming the file, the line where known, and the path of the
//! field that is wrong; validation then checks what the gateway needs to ingest into it.

use serde::Deserialize;

use super::chain::ChainState;
use super::ddl::parse_ddl_schema;
use super::events::{DatasetKind, MetadataEvent};
use super::names::{DatasetName, SourceName};
use super::source::{AddPushSource, ReadStep, Transform};

/// Read formats push sources can take (the others are parsed, then refused at `add`).
pub const PUSH_READ_FORMATS: &[&str] = &["Csv", "Json", "NdJson"];
/// The SQL engine that runs preprocessing here.
pub const PREPROCESS_ENGINE: &str = "datafusion";

#[derive(Debug, Clone)]
pub struct DatasetSnapshot {
    pub name: DatasetName,
    pub kind: DatasetKind,
    /// Events in the form they are stored (preprocess queries normalized).
    pub metadata: Vec<MetadataEvent>,
}

#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct SnapshotError {
    pub origin: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    kind: String,
    version: i32,
    content: Content,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Content {
    name: String,
    kind: DatasetKind,
    metadata: Vec<MetadataEvent>,
}

/// Parses every YAML document of `text` (`---` separates several snapshots).
/// `origin` names the input in errors (a path, or `<stdin>`).
pub fn parse_snapshots(text: &str, origin: &str) -> Result<Vec<DatasetSnapshot>, SnapshotError> {
    let mut snapshots = Vec::new();
    let error = |message: String| SnapshotError { origin: origin.to_owned(), message };
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        // Syntax first, where the parser knows the line; then structure, by field path.
        let value =
            serde_yaml_ng::Value::deserialize(document).map_err(|e| error(describe_syntax_error(&e)))?;
        if value.is_null() {
            continue;
        }
        let manifest: Manifest =
            serde_path_to_error::deserialize(value).map_err(|e| error(describe_field_error(e)))?;
        snapshots.push(
            validate(manifest).map_err(|message| SnapshotError { origin: origin.to_owned(), message })?,
        );
    }
    if snapshots.is_empty() {
        return Err(SnapshotError {
            origin: origin.to_owned(),
            message: "no DatasetSnapshot in the input".into(),
        });
    }
    Ok(snapshots)
}

fn describe_syntax_error(e: &serde_yaml_ng::Error) -> String {
    let mut message = e.to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    match e.location() {
        Some(l) => format!("line {} column {}: {message}", l.line(), l.column()),
        None => message,
    }
}

/// `path.to[3].field: message`.
fn describe_field_error(e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> String {
    let path = e.path().to_string();
    let message = e.into_inner().to_string();
    if path == "." { message } else { format!("{path}: {message}") }
}

fn validate(manifest: Manifest) -> Result<DatasetSnapshot, String> {
    if manifest.kind != "DatasetSnapshot" {
        return Err(format!("kind: expected DatasetSnapshot, found '{}'", manifest.kind));
    }
    if manifest.version != 1 {
        return Err(format!(
            "version: only version 1 of DatasetSnapshot is known, found {}",
            manifest.version
        ));
    }
    let content = manifest.content;
    let name: DatasetName = content.name.parse().map_err(|e| format!("content.name: {e}"))?;
    if content.kind != DatasetKind::Root {
        return Err(format!("content.kind: {}: only Root datasets take pushed data", content.kind.name()));
    }
    let mut metadata = Vec::with_capacity(content.metadata.len());
    for (i, event) in content.metadata.into_iter().enumerate() {
        let event = validate_event(event).map_err(|e| format!("content.metadata[{i}]: {e}"))?;
        metadata.push(event);
    }
    ChainState::check_declared(&metadata).map_err(|(i, e)| format!("content.metadata[{i}]: {e}"))?;
    Ok(DatasetSnapshot { name, kind: content.kind, metadata })
}

fn validate_event(event: MetadataEvent) -> Result<MetadataEvent, String> {
    match event {
        MetadataEvent::Seed(_) | MetadataEvent::AddData(_) | MetadataEvent::SetDataSchema(_) => Err(format!(
            "{}: this event is written by the gateway and cannot be declared in a snapshot",
            event.kind()
        )),
        MetadataEvent::AddPushSource(source) => {
            validate_push_source(source).map(MetadataEvent::AddPushSource)
        }
        MetadataEvent::DisablePushSource(ref disable) => {
            disable
                .source_name
                .parse::<SourceName>()
                .map_err(|e| format!("DisablePushSource.sourceName: {e}"))?;
            Ok(event)
        }
        other => Ok(other),
    }
}

fn validate_push_source(mut source: AddPushSource) -> Result<AddPushSource, String> {
    let name = source.source_name.clone();
    let at = |what: &str| format!("AddPushSource '{name}': {what}");
    name.parse::<SourceName>().map_err(|e| format!("AddPushSource.sourceName: {e}"))?;

    let format = source.read.kind();
    if !PUSH_READ_FORMATS.contains(&format) {
        return Err(at(&format!(
            "read format {format} is not supported for push sources here (supported: {})",
            PUSH_READ_FORMATS.join(", ")
        )));
    }
    let columns = read_columns(&source.read).map_err(|e| at(&e))?;

    if let Some(Transform::Sql(sql)) = source.preprocess.take() {
        if !sql.engine.eq_ignore_ascii_case(PREPROCESS_ENGINE) {
            return Err(at(&format!(
                "preprocess engine '{}' is not available; use engine: {PREPROCESS_ENGINE}",
                sql.engine
            )));
        }
        let sql = sql.normalized().map_err(|e| at(&format!("preprocess: {e}")))?;
        let steps = sql.queries.as_deref().unwrap_or_default();
        match steps.split_last() {
            None => return Err(at("preprocess: no query given")),
            Some((last, earlier)) => {
                if last.alias.is_some() {
                    return Err(at("preprocess: the last query is the output and takes no alias"));
                }
                if earlier.iter().any(|q| q.alias.is_none()) {
                    return Err(at("preprocess: every query but the last needs an alias"));
                }
            }
        }
        source.preprocess = Some(Transform::Sql(sql));
    } else {
        // Without preprocessing the merge key must name read columns.
        for key in source.merge.key_columns() {
            if !columns.iter().any(|c| c == key) {
                return Err(at(&format!(
                    "merge {} names column '{key}', which the read schema does not have (columns: {})",
                    source.merge.kind(),
                    columns.join(", ")
                )));
            }
        }
    }
    Ok(source)
}

/// Column names of the read schema, after checking that exactly one well-formed schema is
/// given: the gateway coerces every record to it.
fn read_columns(read: &ReadStep) -> Result<Vec<String>, String> {
    let names: Vec<String> = match read.schema() {
        (Some(_), Some(_)) => {
            return Err("give either read.ddlSchema or read.schema, not both".into());
        }
        (None, None) => {
            return Err("read.schema is required: every pushed record is coerced to it".into());
        }
        (Some(ddl), None) => {
            let schema = parse_ddl_schema(ddl).map_err(|e| format!("read.ddlSchema: {e}"))?;
            schema.fields.into_iter().map(|f| f.name).collect()
        }
        (None, Some(schema)) => schema.fields.iter().map(|f| f.name.clone()).collect(),
    };
    if names.is_empty() {
        return Err("read.schema has no columns".into());
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(format!("read.schema names column '{name}' twice"));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_EXAMPLE: &str = "
kind: DatasetSnapshot
version: 1
content:
  name: gps
  kind: Root
  metadata:
    - kind: AddPushSource
      sourceName: default
      read:
        kind: NdJson
        schema:
          - t TIMESTAMP
          - long DOUBLE
          - lat DOUBLE
      merge:
        kind: Append
    - kind: SetVocab
      eventTimeColumn: t
";

    #[test]
    fn the_seed_example_parses() {
        let snapshots = parse_snapshots(SEED_EXAMPLE, "seed.yaml").unwrap();
        assert_eq!(snapshots[0].name.as_str(), "gps");
        assert_eq!(snapshots[0].metadata.len(), 2);
    }

    #[test]
    fn the_current_spelling_parses() {
        let yaml = SEED_EXAMPLE.replace(
            "        schema:\n          - t TIMESTAMP\n          - long DOUBLE\n          - lat DOUBLE\n",
            "        schema:\n          fields:\n            - {name: t, type: timestamp}\n            - {name: long, type: {kind: Float64}}\n",
        );
        assert!(parse_snapshots(&yaml, "x").is_ok());
        let ddl = SEED_EXAMPLE.replace("        schema:\n", "        ddlSchema:\n");
        assert!(parse_snapshots(&ddl, "x").is_ok());
    }

    fn error_of(yaml: &str) -> String {
        let e = parse_snapshots(yaml, "bad.yaml").unwrap_err().to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn bad_manifests_give_one_line_naming_the_problem() {
        let cases = [
            (
                SEED_EXAMPLE.replace("kind: SetVocab", "kind: SetVocabulary"),
                "unknown MetadataEvent 'SetVocabulary'",
            ),
            (SEED_EXAMPLE.replace("kind: NdJson", "kind: NDJSON"), "unknown ReadStep 'NDJSON'"),
            (SEED_EXAMPLE.replace("long DOUBLE", "long DOUBL"), "unknown type 'DOUBL'"),
            (SEED_EXAMPLE.replace("      sourceName: default\n", ""), "missing field `sourceName`"),
            (SEED_EXAMPLE.replace("  name: gps\n", ""), "content: missing field `name`"),
            (
                SEED_EXAMPLE.replace("kind: Append", "kind: Ledger\n        primaryKey: [id]"),
                "names column 'id'",
            ),
            (SEED_EXAMPLE.replace("kind: NdJson", "kind: GeoJson"), "read format GeoJson is not supported"),
            (SEED_EXAMPLE.replace("version: 1", "version: 2"), "only version 1"),
            (SEED_EXAMPLE.replace("  name: gps", "  name: g/ps"), "is not a valid dataset name"),
            (SEED_EXAMPLE.replace("kind: Root", "kind: Derivative"), "only Root datasets"),
        ];
        for (yaml, expected) in cases {
            let e = error_of(&yaml);
            assert!(e.contains(expected), "expected '{expected}' in: {e}");
            assert!(e.starts_with("bad.yaml: "), "{e}");
        }
    }

    #[test]
    fn errors_point_into_the_event() {
        let e = error_of(
            &SEED_EXAMPLE.replace("sourceName: default", "sourceName: default\n      extraField: 1"),
        );
        assert!(e.contains("content.metadata[0]"), "{e}");
        assert!(e.contains("unknown field `extraField`"), "{e}");
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let e = error_of("kind: DatasetSnapshot\nversion: 1\ncontent:\n  name: gps\n   kind: Root\n");
        assert!(e.contains("line "), "{e}");
    }
}
