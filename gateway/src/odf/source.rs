//! How a root dataset takes in data: read steps, the preprocessing transform, merge strategies
//! and the push source that ties them together.

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use super::schema::DataSchema;
use super::spelling::odf_union;

/// Fields shared by the read steps that carry only a schema.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadSchemaOnly {
    /// Deprecated DDL form, e.g. `["t TIMESTAMP", "long DOUBLE"]`.
    pub ddl_schema: Option<Vec<String>>,
    pub schema: Option<DataSchema>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadStepCsv {
    pub ddl_schema: Option<Vec<String>>,
    pub separator: Option<String>,
    pub encoding: Option<String>,
    pub quote: Option<String>,
    pub escape: Option<String>,
    pub header: Option<bool>,
    pub infer_schema: Option<bool>,
    pub null_value: Option<String>,
    pub date_format: Option<String>,
    pub timestamp_format: Option<String>,
    pub schema: Option<DataSchema>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadStepEsriShapefile {
    pub ddl_schema: Option<Vec<String>>,
    pub sub_path: Option<String>,
    pub schema: Option<DataSchema>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadStepJson {
    pub sub_path: Option<String>,
    pub ddl_schema: Option<Vec<String>>,
    pub date_format: Option<String>,
    pub encoding: Option<String>,
    pub timestamp_format: Option<String>,
    pub schema: Option<DataSchema>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadStepNdJson {
    pub ddl_schema: Option<Vec<String>>,
    pub date_format: Option<String>,
    pub encoding: Option<String>,
    pub timestamp_format: Option<String>,
    pub schema: Option<DataSchema>,
}

/// How raw bytes become records. GeoJson, NdGeoJson, Parquet and EsriShapefile carry only a
/// schema (and EsriShapefile a `subPath`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum ReadStep {
    Csv(ReadStepCsv),
    GeoJson(ReadSchemaOnly),
    EsriShapefile(ReadStepEsriShapefile),
    Parquet(ReadSchemaOnly),
    Json(ReadStepJson),
    NdJson(ReadStepNdJson),
    NdGeoJson(ReadSchemaOnly),
}

odf_union!(ReadStep { Csv, GeoJson, EsriShapefile, Parquet, Json, NdJson, NdGeoJson } prepare = legacy_read_schema,);

impl ReadStep {
    /// The schema as written: DDL strings, an ODF schema, or neither.
    pub fn schema(&self) -> (Option<&[String]>, Option<&DataSchema>) {
        let (ddl, schema) = match self {
            ReadStep::Csv(r) => (&r.ddl_schema, &r.schema),
            ReadStep::Json(r) => (&r.ddl_schema, &r.schema),
            ReadStep::NdJson(r) => (&r.ddl_schema, &r.schema),
            ReadStep::EsriShapefile(r) => (&r.ddl_schema, &r.schema),
            ReadStep::GeoJson(r) | ReadStep::Parquet(r) | ReadStep::NdGeoJson(r) => {
                (&r.ddl_schema, &r.schema)
            }
        };
        (ddl.as_deref(), schema.as_ref())
    }
}

/// Before the rename to `ddlSchema`, manifests wrote DDL strings under `schema`
/// (`schema: ["t TIMESTAMP", ...]`). A list under `schema` is read as `ddlSchema`.
fn legacy_read_schema(_kind: &str, fields: &mut Value) -> Result<(), String> {
    let Value::Mapping(map) = fields else {
        return Ok(());
    };
    if !matches!(map.get("schema"), Some(Value::Sequence(_))) {
        return Ok(());
    }
    if map.contains_key("ddlSchema") {
        return Err("both 'schema' (as a list of DDL strings) and 'ddlSchema' are given; keep one".into());
    }
    if let Some(ddl) = map.remove("schema") {
        map.insert("ddlSchema".into(), ddl);
    }
    Ok(())
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqlQueryStep {
    pub alias: Option<String>,
    pub query: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemporalTable {
    pub name: String,
    pub primary_key: Vec<String>,
}

/// A SQL transform. As stored in metadata only `queries` is set: the `query` convenience
/// form of a manifest is turned into a one-step `queries` when a snapshot is added.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransformSql {
    pub engine: String,
    pub version: Option<String>,
    pub query: Option<String>,
    pub queries: Option<Vec<SqlQueryStep>>,
    pub temporal_tables: Option<Vec<TemporalTable>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum Transform {
    Sql(TransformSql),
}

odf_union!(Transform { Sql });

impl TransformSql {
    /// The form stored in metadata: `query` moved into a one-step `queries`.
    pub fn normalized(self) -> Result<TransformSql, String> {
        match (self.query, &self.queries) {
            (Some(_), Some(_)) => Err("both 'query' and 'queries' are given; keep one".into()),
            (Some(query), None) => Ok(TransformSql {
                query: None,
                queries: Some(vec![SqlQueryStep { alias: None, query }]),
                ..self
            }),
            (None, _) => Ok(TransformSql { query: None, ..self }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeStrategyAppend {}

/// The fields of Ledger, ChangelogStream and UpsertStream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrimaryKey {
    pub primary_key: Vec<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MergeStrategySnapshot {
    pub primary_key: Vec<String>,
    pub compare_columns: Option<Vec<String>>,
}

/// How new records combine with the dataset's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum MergeStrategy {
    Append(MergeStrategyAppend),
    Ledger(PrimaryKey),
    Snapshot(MergeStrategySnapshot),
    ChangelogStream(PrimaryKey),
    UpsertStream(PrimaryKey),
}

odf_union!(MergeStrategy { Append, Ledger, Snapshot, ChangelogStream, UpsertStream });

impl MergeStrategy {
    /// Columns named by the strategy, which must exist in the data.
    pub fn key_columns(&self) -> Vec<&str> {
        match self {
            MergeStrategy::Append(_) => Vec::new(),
            MergeStrategy::Ledger(k) | MergeStrategy::ChangelogStream(k) | MergeStrategy::UpsertStream(k) => {
                k.primary_key.iter().map(String::as_str).collect()
            }
            MergeStrategy::Snapshot(s) => {
                s.primary_key.iter().chain(s.compare_columns.iter().flatten()).map(String::as_str).collect()
            }
        }
    }
}

/// A named source that external actors push data into.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddPushSource {
    pub source_name: String,
    pub read: ReadStep,
    pub preprocess: Option<Transform>,
    pub merge: MergeStrategy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_spelling_of_ddl_schema_is_read_as_ddl_schema() {
        let read: ReadStep =
            serde_yaml_ng::from_str("kind: ndjson\nschema: ['t TIMESTAMP', 'lat DOUBLE']").unwrap();
        let (ddl, schema) = read.schema();
        assert_eq!(ddl.unwrap(), ["t TIMESTAMP", "lat DOUBLE"]);
        assert!(schema.is_none());
    }

    #[test]
    fn odf_schema_form_is_read_as_schema() {
        let read: ReadStep = serde_yaml_ng::from_str(
            "kind: Csv\nheader: true\nschema:\n  fields:\n    - {name: a, type: {kind: Int32}}\n",
        )
        .unwrap();
        assert_eq!(read.schema().1.unwrap().fields[0].name, "a");
    }

    #[test]
    fn single_query_becomes_queries() {
        let t: Transform =
            serde_yaml_ng::from_str("kind: Sql\nengine: datafusion\nquery: SELECT * FROM input").unwrap();
        let Transform::Sql(sql) = t;
        let sql = sql.normalized().unwrap();
        assert_eq!(sql.query, None);
        assert_eq!(sql.queries.unwrap()[0].query, "SELECT * FROM input");
    }

    #[test]
    fn unknown_member_fields_name_the_path() {
        let e = serde_yaml_ng::from_str::<MergeStrategy>("kind: Ledger\nprimaryKeys: [a]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `primaryKeys`"), "{e}");
    }
}
