//! Reading committed data back: the last records of a dataset (`tail`), and SQL over every
//! dataset of a data directory (each a table by its name) with DataFusion. Only slices the
//! chain references are read, never a file being staged.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::{SessionConfig, SessionContext};

pub mod guard;

use crate::store::{DataDir, Dataset};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Schema(#[from] crate::odf::SchemaError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("sql: {0}")]
    Sql(#[from] datafusion::error::DataFusionError),
    #[error("sql: {0}")]
    Refused(String),
}

/// The last `n` records (by offset), oldest first; `None` when the dataset has no schema yet.
pub fn tail(dataset: &Dataset, n: usize) -> Result<Option<RecordBatch>, QueryError> {
    let Some(schema) = dataset.arrow_schema()? else { return Ok(None) };
    let mut newest_first: Vec<RecordBatch> = Vec::new();
    let mut rows = 0;
    for slice in dataset.slices()?.iter().rev() {
        if rows >= n {
            break;
        }
        for batch in dataset.read_slice(slice)?.into_iter().rev() {
            rows += batch.num_rows();
            newest_first.push(batch);
        }
    }
    newest_first.reverse();
    let all = arrow::compute::concat_batches(&schema, &newest_first)?;
    let skip = all.num_rows().saturating_sub(n);
    Ok(Some(all.slice(skip, all.num_rows() - skip)))
}

/// A session where every dataset of `data_dir` is a table named after it.
pub async fn session(data_dir: &DataDir) -> Result<SessionContext, QueryError> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
    for name in data_dir.list()? {
        let dataset = data_dir.open_dataset(name.as_str())?;
        let Some(schema) = dataset.arrow_schema()? else { continue };
        // Each slice is checked against its block first: a query over a damaged dataset
        // fails loudly rather than answer from what is left.
        let files: Vec<PathBuf> =
            dataset.slices()?.iter().map(|s| dataset.slice_file(s)).collect::<Result<_, _>>()?;
        let table: Arc<dyn datafusion::datasource::TableProvider> = if files.is_empty() {
            Arc::new(MemTable::try_new(schema, vec![vec![]])?)
        } else {
            listing(&files, schema)?
        };
        ctx.register_table(name.as_str(), table)?;
    }
    Ok(ctx)
}

fn listing(files: &[PathBuf], schema: SchemaRef) -> Result<Arc<ListingTable>, QueryError> {
    let urls = files
        .iter()
        .map(|path| ListingTableUrl::parse(path.to_string_lossy()))
        .collect::<Result<Vec<_>, _>>()?;
    // Slice files have no extension: they are named by their hash.
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
    let config =
        ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

pub async fn sql(data_dir: &DataDir, query: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
    guard::check_shape(query).map_err(QueryError::Refused)?;
    let ctx = session(data_dir).await?;
    let frame = ctx.sql_with_options(query, guard::read_only()).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    Ok((schema, frame.collect().await?))
}
