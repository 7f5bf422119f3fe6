//! The `preprocess` step: DataFusion SQL over the read records, registered as the table
//! `input`. Aliased queries become views the next queries can use; the last is the output.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::error::IngestError;
use crate::odf::source::{SqlQueryStep, TransformSql};

pub struct Preprocess {
    steps: Vec<SqlQueryStep>,
}

impl Preprocess {
    /// The steps of a transform: `queries`, or a chain written with the `query` shorthand.
    pub fn of(sql: &TransformSql) -> Preprocess {
        let steps = match (&sql.queries, &sql.query) {
            (Some(queries), _) => queries.clone(),
            (None, Some(query)) => vec![SqlQueryStep { alias: None, query: query.clone() }],
            (None, None) => Vec::new(),
        };
        Preprocess { steps }
    }

    /// A session with `input` holding `batch` and the aliased steps as views.
    async fn session(
        &self,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<SessionContext, IngestError> {
        // One partition: the records' order is kept, and small batches need no parallelism.
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let input = MemTable::try_new(schema, vec![batches]).map_err(error)?;
        ctx.register_table("input", Arc::new(input)).map_err(error)?;
        for step in &self.steps {
            if let Some(alias) = &step.alias {
                let view = ctx.sql(&step.query).await.map_err(|e| step_error(alias, e))?;
                ctx.register_table(alias.as_str(), view.into_view()).map_err(error)?;
            }
        }
        Ok(ctx)
    }

    fn output_query(&self) -> Result<&str, IngestError> {
        self.steps
            .iter()
            .rev()
            .find(|s| s.alias.is_none())
            .map(|s| s.query.as_str())
            .ok_or_else(|| IngestError::Preprocess("no output query (the last query has no alias)".into()))
    }

    /// The output schema for input of `schema`: plans every query without running any.
    pub async fn plan(&self, schema: SchemaRef) -> Result<SchemaRef, IngestError> {
        let ctx = self.session(schema, Vec::new()).await?;
        let frame = ctx.sql(self.output_query()?).await.map_err(error)?;
        Ok(Arc::new(frame.schema().as_arrow().clone()))
    }

    pub async fn run(&self, batch: RecordBatch) -> Result<RecordBatch, IngestError> {
        let schema = batch.schema();
        let ctx = self.session(schema, vec![batch]).await?;
        let frame = ctx.sql(self.output_query()?).await.map_err(error)?;
        let out_schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await.map_err(error)?;
        Ok(arrow::compute::concat_batches(&out_schema, &batches)?)
    }
}

fn error(e: datafusion::error::DataFusionError) -> IngestError {
    IngestError::Preprocess(e.to_string())
}

fn step_error(alias: &str, e: datafusion::error::DataFusionError) -> IngestError {
    IngestError::Preprocess(format!("query '{alias}': {e}"))
}
