//! Reading a dataset's data slices back: which ones the chain references, and their records.

use std::fs::File;

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::dataset::Dataset;
use super::error::StoreError;
use crate::odf::{AddData, DataSlice, MetadataEvent};

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
