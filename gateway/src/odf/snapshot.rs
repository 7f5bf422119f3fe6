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
use super::events::{DatasetKind, MetadataEvent, SetDataSchema};
use super::names::{DatasetName, SourceName};
use super::polling::SetPollingSource;
use super::source::{AddPushSource, MergeStrategy, ReadStep, Transform};

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
    check_shape(text).map_err(error)?;
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

/// A manifest is at most this big ...
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// ... and nests at most this deep (a real one nests under ten levels).
const MAX_DEPTH: usize = 64;

/// Refuses a text too big or too deeply nested before the YAML parser sees it: the parser's
/// time grows faster than the text with nesting (a 200 KB manifest of nested brackets took
/// minutes to refuse). Indentation levels, `- ` items and `[`/`{` brackets all count.
fn check_shape(text: &str) -> Result<(), String> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(format!("the manifest is {} bytes, over the limit of {MAX_MANIFEST_BYTES}", text.len()));
    }
    let too_deep =
        |line: usize| Err(format!("line {line}: the manifest nests deeper than {MAX_DEPTH} levels"));
    let mut indents: Vec<usize> = Vec::new();
    let (mut brackets, mut quote) = (0usize, None::<char>);
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if quote.is_none() && brackets == 0 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            let indent = line.len() - trimmed.len();
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            let items = trimmed.split_inclusive("- ").take_while(|p| p.trim() == "-").count();
            if indents.len() + items > MAX_DEPTH {
                return too_deep(n + 1);
            }
        }
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    brackets += 1;
                    if brackets > MAX_DEPTH {
                        return too_deep(n + 1);
                    }
                }
                (None, ']' | '}') => brackets = brackets.saturating_sub(1),
                _ => {}
            }
        }
        // A quote does not run past a line outside brackets (YAML's plain scalars).
        if brackets == 0 {
            quote = None;
        }
    }
    Ok(())
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
    ChainState::check_declared(&metadata)
        .and_then(|()| check_declared_schema(&metadata))
        .map_err(|(i, e)| format!("content.metadata[{i}]: {e}"))?;
    Ok(DatasetSnapshot { name, kind: content.kind, metadata })
}

fn validate_event(event: MetadataEvent) -> Result<MetadataEvent, String> {
    match event {
        MetadataEvent::Seed(_) | MetadataEvent::AddData(_) => Err(format!(
            "{}: this event is written by the gateway and cannot be declared in a snapshot",
            event.kind()
        )),
        MetadataEvent::SetDataSchema(ref set) => {
            if set.raw_arrow_schema.is_some() {
                return Err(
                    "SetDataSchema.rawArrowSchema is deprecated; declare the schema under 'schema'".into()
                );
            }
            if set.schema.is_none() {
                return Err("SetDataSchema.schema is required".into());
            }
            Ok(event)
        }
        MetadataEvent::AddPushSource(source) => {
            validate_push_source(source).map(MetadataEvent::AddPushSource)
        }
        MetadataEvent::SetPollingSource(source) => {
            validate_polling_source(source).map(MetadataEvent::SetPollingSource)
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
    let columns = read_columns(&source.read)
        .and_then(|c| c.ok_or_else(|| "read.schema is required: every pushed record is coerced to it".into()))
        .map_err(|e| at(&e))?;
    source.preprocess = normalize_preprocess(source.preprocess.take(), true).map_err(|e| at(&e))?;
    check_primary_key(&source.merge).map_err(|e| at(&e))?;
    if source.preprocess.is_none() {
        check_merge_keys(&source.merge, &columns).map_err(|e| at(&e))?;
    }
    Ok(source)
}

/// Polling sources are stored, never run, here; they get the same checks as push sources
/// where the two share a shape (read schema, preprocess, merge keys), but may read any format,
/// leave the schema to be inferred, and name any engine.
fn validate_polling_source(mut source: SetPollingSource) -> Result<SetPollingSource, String> {
    let at = |what: &str| format!("SetPollingSource: {what}");
    let columns = read_columns(&source.read).map_err(|e| at(&e))?;
    source.preprocess = normalize_preprocess(source.preprocess.take(), false).map_err(|e| at(&e))?;
    check_primary_key(&source.merge).map_err(|e| at(&e))?;
    if let (None, Some(columns)) = (&source.preprocess, &columns) {
        check_merge_keys(&source.merge, columns).map_err(|e| at(&e))?;
    }
    Ok(source)
}

/// The stored form of a preprocess step: `query` becomes a one-step `queries` (the chain
/// then checks the aliases). `runs_here`: the gateway executes it, so the engine must be ours.
fn normalize_preprocess(preprocess: Option<Transform>, runs_here: bool) -> Result<Option<Transform>, String> {
    let Some(Transform::Sql(sql)) = preprocess else {
        return Ok(None);
    };
    if runs_here && !sql.engine.eq_ignore_ascii_case(PREPROCESS_ENGINE) {
        return Err(format!(
            "preprocess engine '{}' is not available; use engine: {PREPROCESS_ENGINE}",
            sql.engine
        ));
    }
    if sql.engine.trim().is_empty() {
        return Err("preprocess: engine is empty".into());
    }
    let sql = sql.normalized().map_err(|e| format!("preprocess: {e}"))?;
    Ok(Some(Transform::Sql(sql)))
}

/// Every strategy but Append identifies records by a primary key: an empty one would make
/// every record the same (a Ledger would drop all but the first, ever).
fn check_primary_key(merge: &MergeStrategy) -> Result<(), String> {
    let key = match merge {
        MergeStrategy::Append(_) => return Ok(()),
        MergeStrategy::Ledger(k) | MergeStrategy::ChangelogStream(k) | MergeStrategy::UpsertStream(k) => {
            &k.primary_key
        }
        MergeStrategy::Snapshot(s) => &s.primary_key,
    };
    match key.is_empty() {
        true => Err(format!("merge {} needs a primaryKey of at least one column", merge.kind())),
        false => Ok(()),
    }
}

/// Without preprocessing the merge keys must name read columns.
fn check_merge_keys(merge: &MergeStrategy, columns: &[String]) -> Result<(), String> {
    for key in merge.key_columns() {
        if !columns.iter().any(|c| c == key) {
            return Err(format!(
                "merge {} names column '{key}', which the read schema does not have (columns: {})",
                merge.kind(),
                columns.join(", ")
            ));
        }
    }
    Ok(())
}

/// Column names of the read schema if one is given, after checking that at most one
/// well-formed schema is.
fn read_columns(read: &ReadStep) -> Result<Option<Vec<String>>, String> {
    let names: Vec<String> = match read.schema() {
        (Some(_), Some(_)) => {
            return Err("give either read.ddlSchema or read.schema, not both".into());
        }
        (None, None) => return Ok(None),
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
    Ok(Some(names))
}

/// A declared SetDataSchema describes the slices the gateway will write, so it must start
/// with the system columns in their order (named as the snapshot's SetVocab names them):
/// otherwise the first data commit would not match the schema it claims.
fn check_declared_schema(metadata: &[MetadataEvent]) -> Result<(), (usize, String)> {
    let vocab = metadata.iter().rev().find_map(|e| match e {
        MetadataEvent::SetVocab(v) => Some(v),
        _ => None,
    });
    let name = |column: Option<&Option<String>>, default: &'static str| -> String {
        column.and_then(Option::as_deref).unwrap_or(default).to_owned()
    };
    let expected = [
        (name(vocab.map(|v| &v.offset_column), "offset"), "Int64"),
        (name(vocab.map(|v| &v.operation_type_column), "op"), "Int32"),
        (name(vocab.map(|v| &v.system_time_column), "system_time"), "Timestamp"),
        (name(vocab.map(|v| &v.event_time_column), "event_time"), "Timestamp"),
    ];
    for (i, event) in metadata.iter().enumerate() {
        let MetadataEvent::SetDataSchema(SetDataSchema { schema: Some(schema), .. }) = event else {
            continue;
        };
        let found: Vec<String> = schema
            .fields
            .iter()
            .take(expected.len())
            .map(|f| format!("{} {}", f.name, f.data_type.split_optional().0.kind()))
            .collect();
        let wanted: Vec<String> = expected.iter().map(|(n, t)| format!("{n} {t}")).collect();
        if found != wanted || schema.fields.len() == expected.len() {
            return Err((
                i,
                format!(
                    "SetDataSchema: the schema must start with the system columns [{}] and then \
                     the data columns; it starts with [{}]",
                    wanted.join(", "),
                    found.join(", ")
                ),
            ));
        }
    }
    Ok(())
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

    const POLLING: &str = "
kind: DatasetSnapshot
version: 1
content:
  name: polled
  kind: Root
  metadata:
    - kind: SetPollingSource
      fetch:
        kind: Url
        url: https://example.org/a.csv
      read:
        kind: Csv
        header: true
        ddlSchema: ['a BIGINT', 'b STRING']
      preprocess:
        kind: Sql
        engine: spark
        query: SELECT * FROM input
      merge:
        kind: Ledger
        primaryKey: [a]
";

    #[test]
    fn polling_sources_are_checked_like_push_sources() {
        let snapshot = &parse_snapshots(POLLING, "x").unwrap()[0];
        let MetadataEvent::SetPollingSource(polling) = &snapshot.metadata[0] else { panic!() };
        let Some(Transform::Sql(sql)) = &polling.preprocess else { panic!() };
        assert_eq!((sql.query.as_deref(), sql.queries.as_ref().map(Vec::len)), (None, Some(1)));
        // Without a schema (inferred by the tool that polls) it is still accepted.
        assert!(
            parse_snapshots(&POLLING.replace("        ddlSchema: ['a BIGINT', 'b STRING']\n", ""), "x")
                .is_ok()
        );

        let no_preprocess = POLLING.replace(
            "      preprocess:\n        kind: Sql\n        engine: spark\n        query: SELECT * FROM input\n",
            "",
        );
        assert!(parse_snapshots(&no_preprocess, "x").is_ok());
        let cases = [
            (
                POLLING.replace(
                    "ddlSchema: ['a BIGINT', 'b STRING']",
                    "ddlSchema: ['a BIGINT']\n        schema: {fields: []}",
                ),
                "give either read.ddlSchema or read.schema, not both",
            ),
            (POLLING.replace("'b STRING'", "'a STRING'"), "names column 'a' twice"),
            (POLLING.replace("'b STRING'", "'b STRNG'"), "read.ddlSchema"),
            (no_preprocess.replace("primaryKey: [a]", "primaryKey: [id]"), "names column 'id'"),
            (
                POLLING.replace("query: SELECT * FROM input", "queries: [{query: SELECT 1, alias: x}]"),
                "the last query is the output and takes no alias",
            ),
            (
                POLLING.replace(
                    "query: SELECT * FROM input",
                    "query: SELECT 1\n        queries: [{query: SELECT 1}]",
                ),
                "both 'query' and 'queries'",
            ),
            (
                POLLING.replace("kind: Url\n        url: https://example.org/a.csv", "kind: EthereumLogs"),
                "chainId or nodeUrl",
            ),
        ];
        for (yaml, expected) in cases {
            let e = error_of(&yaml);
            assert!(e.contains(expected), "expected '{expected}' in: {e}");
        }
    }

    #[test]
    fn source_order_follows_kamu() {
        let push = "    - kind: AddPushSource\n      sourceName: p\n      read: {kind: NdJson, ddlSchema: ['a BIGINT']}\n      merge: {kind: Append}\n";
        let e = error_of(&format!("{POLLING}{push}"));
        assert!(e.contains("content.metadata[1]") && e.contains("has had a polling source"), "{e}");
        let push_first = POLLING.replace("  metadata:\n", &format!("  metadata:\n{push}"));
        let e = error_of(&push_first);
        assert!(e.contains("has had push sources (p)"), "{e}");
    }

    #[test]
    fn a_push_source_may_be_redefined() {
        let redefined = format!(
            "{SEED_EXAMPLE}    - kind: AddPushSource\n      sourceName: default\n      read: {{kind: Csv, ddlSchema: ['t TIMESTAMP', 'long DOUBLE']}}\n      merge: {{kind: Append}}\n"
        );
        assert_eq!(parse_snapshots(&redefined, "x").unwrap()[0].metadata.len(), 3);
    }

    const DATA_SCHEMA: &str = "    - kind: SetDataSchema
      schema:
        fields:
          - {name: offset, type: {kind: Int64}}
          - {name: op, type: {kind: Int32}}
          - {name: system_time, type: {kind: Timestamp, unit: Millisecond, timezone: UTC}}
          - {name: t, type: {kind: Timestamp, unit: Millisecond, timezone: UTC}}
          - {name: long, type: {kind: Option, inner: {kind: Float64}}}
          - {name: lat, type: {kind: Option, inner: {kind: Float64}}}
";

    #[test]
    fn a_declared_data_schema_is_accepted_when_it_starts_with_the_system_columns() {
        let yaml = format!("{SEED_EXAMPLE}{DATA_SCHEMA}");
        let snapshot = &parse_snapshots(&yaml, "x").unwrap()[0];
        assert!(matches!(snapshot.metadata[2], MetadataEvent::SetDataSchema(_)));

        // The event time column is the one SetVocab names (here `t`).
        let e = error_of(&format!("{SEED_EXAMPLE}{}", DATA_SCHEMA.replace("name: t,", "name: event_time,")));
        assert!(e.contains("must start with the system columns [offset Int64, op Int32, system_time Timestamp, t Timestamp]"), "{e}");
        let e = error_of(&format!("{SEED_EXAMPLE}{}", DATA_SCHEMA.replace("{kind: Int32}", "{kind: Int64}")));
        assert!(e.contains("op Int64"), "{e}");
        let e = error_of(&format!("{SEED_EXAMPLE}    - kind: SetDataSchema\n      rawArrowSchema: '00'\n"));
        assert!(e.contains("rawArrowSchema is deprecated"), "{e}");
        let e = error_of(&format!("{SEED_EXAMPLE}{DATA_SCHEMA}{DATA_SCHEMA}"));
        assert!(e.contains("the schema is unchanged"), "{e}");
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
