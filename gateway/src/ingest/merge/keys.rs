//! Primary keys as comparable bytes (Arrow's row format), so that keys of any column types
//! can be hashed and compared exactly.

use arrow::array::ArrayRef;
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};

use crate::ingest::error::IngestError;

pub struct KeyEncoder {
    columns: Vec<usize>,
    converter: RowConverter,
}

impl KeyEncoder {
    /// Encodes `names` of batches with `schema`. `what` names the key in errors.
    pub fn new(schema: &Schema, names: &[String], what: &str) -> Result<KeyEncoder, IngestError> {
        let columns = names
            .iter()
            .map(|name| {
                schema.index_of(name).map_err(|_| {
                    let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    IngestError::Source(format!(
                        "{what} column '{name}' is not in the data (columns: {})",
                        have.join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fields = columns.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect();
        Ok(KeyEncoder { columns, converter: RowConverter::new(fields)? })
    }

    /// Positions of the key columns in the schema.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    pub fn encode(&self, batch: &RecordBatch) -> Result<Rows, IngestError> {
        let arrays: Vec<ArrayRef> = self.columns.iter().map(|&i| batch.column(i).clone()).collect();
        Ok(self.converter.convert_columns(&arrays)?)
    }
}
