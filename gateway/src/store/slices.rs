//! Reading a dataset's data slices back: which ones the chain references, and their records.

use std::fs::File;
use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::dataset::Dataset;
use super::error::StoreError;
use super::hash_file;
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

    /// Checks that every slice the chain references is there with the size its block gives,
    /// so that nothing is committed on top of a dataset that lost data (a writer does this
    /// when it opens the dataset; `verify` checks the hashes too).
    pub fn check_slice_files(&self) -> Result<(), StoreError> {
        for slice in self.slices()? {
            self.slice_file(&slice)?;
        }
        Ok(())
    }

    /// The Arrow schema of the dataset's slices, once it has one (after the first data commit).
    pub fn arrow_schema(&self) -> Result<Option<SchemaRef>, SchemaError> {
        self.state().schema.as_ref().map(arrow_schema::to_arrow).transpose()
    }

    /// The file of a slice, once it is found with the size its block gives (a cheap check
    /// that catches a missing, truncated or swapped file before a query reads it).
    pub fn slice_file(&self, slice: &DataSlice) -> Result<PathBuf, StoreError> {
        let path = self.data_path(&slice.physical_hash);
        let error = |reason: String| StoreError::BadSlice {
            hash: slice.physical_hash.clone(),
            reason: format!("{reason}; run `odf-gateway verify {}`", self.name()),
        };
        let size = std::fs::metadata(&path)
            .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?
            .len();
        if size != slice.size {
            return Err(error(format!(
                "{} is {size} bytes where its block says {}",
                path.display(),
                slice.size
            )));
        }
        Ok(path)
    }

    /// The records of a slice, with the schema written in its file, once its bytes are
    /// found to hash to the name its block gives.
    pub fn read_slice(&self, slice: &DataSlice) -> Result<Vec<RecordBatch>, StoreError> {
        self.slice_batches(slice)?.collect()
    }

    /// The records of a slice a batch at a time (of up to 64k rows), once its bytes are found
    /// to hash to the name its block gives.
    pub fn slice_batches(
        &self,
        slice: &DataSlice,
    ) -> Result<impl Iterator<Item = Result<RecordBatch, StoreError>> + use<>, StoreError> {
        let path = self.slice_file(slice)?;
        let hash = slice.physical_hash.clone();
        let error = move |reason: String| StoreError::BadSlice { hash: hash.clone(), reason };
        let (found, _) =
            hash_file(&path).map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
        if found != slice.physical_hash {
            return Err(error(format!(
                "{} is damaged (its bytes hash to {found}); run `odf-gateway verify {}`",
                path.display(),
                self.name()
            )));
        }
        let file = File::open(&path).map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map(|builder| builder.with_batch_size(1 << 16))
            .and_then(|builder| builder.build())
            .map_err(|e| error(format!("not a Parquet file: {e}")))?;
        Ok(reader.map(move |batch| batch.map_err(|e| error(format!("unreadable Parquet: {e}")))))
    }
}
