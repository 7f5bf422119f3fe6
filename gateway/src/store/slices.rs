//! Reading a dataset's data slices back: which ones the chain references, and their records.

use std::fs::File;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::dataset::Dataset;
use super::error::StoreError;
use crate::odf::{AddData, DataSlice, MetadataEvent, SchemaError, arrow_schema};

impl Dataset {
    /// The data slices the chain references, oldest first.
    pub fn slices(&self) -> Result<Vec<DataSlice>, StoreError> {
        let mut slices: Vec<DataSlice> = self
            .blocks()?
            .into_iter()
            .filter_map(|(_, block)| match block.event {
                MetadataEvent::AddData(AddData { new_data: Some(slice), .. }) => Some(slice),
                _ => None,
            })
            .collect();
        slices.reverse();
        Ok(slices)
    }

    /// The Arrow schema of the dataset's slices, once it has one (after the first data commit).
    pub fn arrow_schema(&self) -> Result<Option<SchemaRef>, SchemaError> {
        self.state().schema.as_ref().map(arrow_schema::to_arrow).transpose()
    }

    /// The records of a slice, with the schema written in its file.
    pub fn read_slice(&self, slice: &DataSlice) -> Result<Vec<RecordBatch>, StoreError> {
        let path = self.data_path(&slice.physical_hash);
        let error = |reason: String| StoreError::BadSlice { hash: slice.physical_hash.clone(), reason };
        let file = File::open(&path).map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|builder| builder.build())
            .map_err(|e| error(format!("not a Parquet file: {e}")))?;
        reader.collect::<Result<Vec<_>, _>>().map_err(|e| error(format!("unreadable Parquet: {e}")))
    }
}
