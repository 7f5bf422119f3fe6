//! The `preprocess` step: DataFusion SQL over the read records, registered as the table
//! `input`. Aliased queries become views the next queries can use; the last is the output.
//!
//! A `Preprocess` is planned once per source and run for every batch: the session, the
//! views and the optimized plan are kept, and only the contents of `input` change.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::error::IngestError;
use crate::odf::source::{SqlQueryStep, TransformSql};
use crate::query::guard;

pub struct Preprocess {
    ctx: SessionContext,
    input: Arc<MemTable>,
    plan: LogicalPlan,
    output: SchemaRef,
}

/// The steps of a transform: `queries`, or a chain written with the `query` shorthand.
fn steps(sql: &TransformSql) -> Vec<SqlQueryStep> {
    match (&sql.queries, &sql.query) {
        (Some(queries), _) => queries.clone(),
        (None, Some(query)) => vec![SqlQueryStep { alias: None, query: query.clone() }],
        (None, None) => Vec::new(),
    }
}

impl Preprocess {
    /// Plans the queries for input of `schema`. A query that does not plan (a missing
    /// column, a syntax error, a statement that is not a query) is a fault of the source.
    pub async fn new(sql: &TransformSql, schema: SchemaRef) -> Result<Preprocess, IngestError> {
        let steps = steps(sql);
        for step in &steps {
            guard::check_shape(&step.query).map_err(|e| IngestError::Source(format!("preprocess: {e}")))?;
        }
        // One partition: the records' order is kept, and small batches need no parallelism.
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let input = Arc::new(MemTable::try_new(schema, vec![Vec::new()]).map_err(source_error)?);
        ctx.register_table("input", input.clone()).map_err(source_error)?;
        for step in &steps {
            if let Some(alias) = &step.alias {
                let view = ctx.sql_with_options(&step.query, guard::read_only()).await.map_err(|e| {
                    IngestError::Source(format!("preprocess query '{alias}': {}", first_line(&e)))
                })?;
                ctx.register_table(alias.as_str(), view.into_view()).map_err(source_error)?;
            }
        }
        let output = steps.iter().rev().find(|s| s.alias.is_none()).ok_or_else(|| {
            IngestError::Source("preprocess has no output query (the last query has no alias)".into())
        })?;
        let frame = ctx.sql_with_options(&output.query, guard::read_only()).await.map_err(source_error)?;
        let output: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let plan = frame.into_optimized_plan().map_err(source_error)?;
        Ok(Preprocess { ctx, input, plan, output })
    }

    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// Runs the planned queries over `batch`. An error here comes from the values (a cast
    /// that fails, a division by zero): the data's fault, not the source's.
    pub async fn run(&self, batch: RecordBatch) -> Result<RecordBatch, IngestError> {
        *self.input.batches[0].write().await = vec![batch];
        let result = self.execute().await;
        // The input is not kept between runs: it may be large.
        self.input.batches[0].write().await.clear();
        result
    }

    async fn execute(&self) -> Result<RecordBatch, IngestError> {
        let frame = self.ctx.execute_logical_plan(self.plan.clone()).await.map_err(data_error)?;
        let batches = frame.collect().await.map_err(data_error)?;
        Ok(arrow::compute::concat_batches(&self.output, &batches)?)
    }
}

fn source_error(e: DataFusionError) -> IngestError {
    IngestError::Source(format!("preprocess: {}", first_line(&e)))
}

fn data_error(e: DataFusionError) -> IngestError {
    match e {
        DataFusionError::ResourcesExhausted(reason) => IngestError::Internal(format!("preprocess: {reason}")),
        e => IngestError::Data(format!("preprocess: {}", first_line(&e))),
    }
}

/// DataFusion's messages repeat their context; the first line says what went wrong.
fn first_line(e: &DataFusionError) -> String {
    let text = e.strip_backtrace();
    text.lines().next().unwrap_or_default().to_owned()
}
