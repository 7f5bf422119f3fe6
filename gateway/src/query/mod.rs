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
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};

pub mod guard;

use crate::odf::{AddData, DataSlice, MetadataEvent};
use crate::store::{CatchUp, DataDir, Dataset};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Schema(#[from] crate::odf::SchemaError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// DataFusion's error, its innermost text once (its own chain repeats it).
    #[error("sql: {0}")]
    Sql(String),
    #[error("sql: {0}")]
    Refused(String),
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(error: datafusion::error::DataFusionError) -> QueryError {
        QueryError::Sql(guard::error_text(&error))
    }
}

/// A dataset kept open for reading: its chain state and the slices it references, brought up
/// to date by reading only the blocks committed since (a server answering queries for
/// months must not walk the whole chain each time).
pub struct DatasetReader {
    dataset: Dataset,
    slices: Vec<DataSlice>,
}

impl DatasetReader {
    pub fn open(data_dir: &DataDir, name: &str) -> Result<DatasetReader, QueryError> {
        let dataset = data_dir.open_dataset(name)?;
        let slices = dataset.slices()?;
        Ok(DatasetReader { dataset, slices })
    }

    /// Takes in what was committed since the last look.
    pub fn refresh(&mut self) -> Result<(), QueryError> {
        match self.dataset.catch_up()? {
            CatchUp::New(blocks) => {
                for block in blocks {
                    if let MetadataEvent::AddData(AddData { new_data: Some(slice), .. }) = block.event {
                        self.slices.push(slice);
                    }
                }
            }
            CatchUp::Replaced => self.slices = self.dataset.slices()?,
        }
        Ok(())
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The data slices, oldest first.
    pub fn slices(&self) -> &[DataSlice] {
        &self.slices
    }

    /// The last `n` records (by offset), oldest first; `None` when the dataset has no
    /// schema yet.
    pub fn tail(&self, n: usize) -> Result<Option<RecordBatch>, QueryError> {
        tail_of(&self.dataset, &self.slices, n)
    }
}

/// The last `n` records (by offset), oldest first; `None` when the dataset has no schema yet.
pub fn tail(dataset: &Dataset, n: usize) -> Result<Option<RecordBatch>, QueryError> {
    tail_of(dataset, &dataset.slices()?, n)
}

fn tail_of(dataset: &Dataset, slices: &[DataSlice], n: usize) -> Result<Option<RecordBatch>, QueryError> {
    let Some(schema) = dataset.arrow_schema()? else { return Ok(None) };
    let mut newest_first: Vec<RecordBatch> = Vec::new();
    let mut rows = 0;
    for slice in slices.iter().rev() {
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
    let mut readers = Vec::new();
    for name in data_dir.list()? {
        readers.push(DatasetReader::open(data_dir, name.as_str())?);
    }
    session_of(&readers.iter().collect::<Vec<_>>())
}

/// A session where each of `readers` is a table named after its dataset. A dataset without
/// data has no schema yet, so no table; a query naming it is told so.
pub fn session_of(readers: &[&DatasetReader]) -> Result<SessionContext, QueryError> {
    session_within(readers, &Limits::default())
}

/// What one query may take: a server answering anyone bounds both.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Memory for its operators (sorts, joins, aggregations), in bytes; `None`: unbounded.
    pub memory: Option<usize>,
    /// Rows in its answer; more is an error that says to add a LIMIT.
    pub rows: Option<usize>,
}

/// As `session_of`, with the operators' memory bounded.
pub fn session_within(readers: &[&DatasetReader], limits: &Limits) -> Result<SessionContext, QueryError> {
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = match limits.memory {
        None => SessionContext::new_with_config(config),
        Some(bytes) => {
            let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
                .with_memory_limit(bytes, 1.0)
                .build_arc()?;
            SessionContext::new_with_config_rt(config, runtime)
        }
    };
    for reader in readers {
        let dataset = reader.dataset();
        let Some(schema) = dataset.arrow_schema()? else { continue };
        // Each slice is checked against its block first: a query over a damaged dataset
        // fails loudly rather than answer from what is left.
        let files: Vec<PathBuf> =
            reader.slices().iter().map(|s| dataset.slice_file(s)).collect::<Result<_, _>>()?;
        let table: Arc<dyn datafusion::datasource::TableProvider> = if files.is_empty() {
            Arc::new(MemTable::try_new(schema, vec![vec![]])?)
        } else {
            listing(&files, schema)?
        };
        ctx.register_table(dataset.name().as_str(), table)?;
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
    let mut readers = Vec::new();
    for name in data_dir.list()? {
        readers.push(DatasetReader::open(data_dir, name.as_str())?);
    }
    sql_over(&readers.iter().collect::<Vec<_>>(), query).await
}

/// Runs a read-only query over `readers`, each a table by its dataset's name.
pub async fn sql_over(
    readers: &[&DatasetReader],
    query: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
    guard::check_shape(query).map_err(QueryError::Refused)?;
    let ctx = session_of(readers)?;
    run(ctx, query, &without_data(readers), None).await
}

/// Datasets that have no data yet (so no table), for a clearer error.
pub fn without_data(readers: &[&DatasetReader]) -> Vec<String> {
    readers
        .iter()
        .filter(|r| r.dataset().state().schema.is_none())
        .map(|r| r.dataset().name().to_string())
        .collect()
}

/// Runs a read-only query in a session made by `session_of` (its shape already checked).
pub async fn run(
    ctx: SessionContext,
    query: &str,
    without_data: &[String],
    max_rows: Option<usize>,
) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
    use futures::StreamExt as _;
    let (schema, mut stream) = stream(ctx, query, without_data).await?;
    let (mut batches, mut rows) = (Vec::new(), 0);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        if max_rows.is_some_and(|max| rows > max) {
            return Err(QueryError::Refused(format!(
                "the answer has more than {} rows; add a LIMIT or aggregate",
                max_rows.unwrap_or_default()
            )));
        }
        batches.push(batch);
    }
    Ok((schema, batches))
}

/// Plans a read-only query (its shape already checked) and starts it: the answer comes a
/// batch at a time, and dropping the stream stops the query.
pub async fn stream(
    ctx: SessionContext,
    query: &str,
    without_data: &[String],
) -> Result<(SchemaRef, SendableRecordBatchStream), QueryError> {
    let frame = match ctx.sql_with_options(query, guard::read_only()).await {
        Ok(frame) => frame,
        Err(e) => return Err(explain(e, without_data)),
    };
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    Ok((schema, frame.execute_stream().await?))
}

/// A planning error in plain words: DataFusion's own text, once, and a table that is not
/// there because its dataset has no data yet said as such.
fn explain(error: datafusion::error::DataFusionError, without_data: &[String]) -> QueryError {
    let text = guard::error_text(&error);
    if let Some(name) =
        without_data.iter().find(|name| text.contains("not found") && text.contains(name.as_str()))
    {
        return QueryError::Refused(format!(
            "dataset '{name}' has no data yet, so it has no columns to query; push some first"
        ));
    }
    QueryError::Refused(text)
}

/// Readers of every dataset a server answers for, opened on first use and brought up to
/// date on each use.
pub struct Readers {
    data_dir: DataDir,
    open: std::sync::Mutex<std::collections::HashMap<String, DatasetReader>>,
}

impl Readers {
    pub fn new(data_dir: DataDir) -> Readers {
        Readers { data_dir, open: Default::default() }
    }

    /// Runs `f` on the up-to-date reader of dataset `name`.
    pub fn with<R>(&self, name: &str, f: impl FnOnce(&DatasetReader) -> R) -> Result<R, QueryError> {
        self.with_all(&[name], |readers| f(readers[0]))
    }

    /// Runs `f` on the up-to-date readers of `names` (in that order).
    pub fn with_all<R>(
        &self,
        names: &[&str],
        f: impl FnOnce(&[&DatasetReader]) -> R,
    ) -> Result<R, QueryError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for name in names {
            match open.get_mut(*name) {
                Some(reader) => reader.refresh()?,
                None => {
                    let reader = DatasetReader::open(&self.data_dir, name)?;
                    open.insert((*name).to_owned(), reader);
                }
            }
        }
        let readers: Vec<&DatasetReader> = names.iter().filter_map(|n| open.get(*n)).collect();
        Ok(f(&readers))
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }
}
