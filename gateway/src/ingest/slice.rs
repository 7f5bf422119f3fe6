//! The data slice: system columns in front of the merged records, written as Parquet with
//! the spec's physical types, then hashed (physical: SHA3-256 of the file; logical:
//! arrow-digest over the records, multicodec 0x300016).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::error::IngestError;
use crate::odf::arrow_schema::{LogicalHasher, timestamp_ms_utc};
use crate::odf::{Multihash, Vocab};
use crate::store::{IoError, hash_file};

/// Prepends `offset` (from `first_offset`) and `system_time` to a merged batch that starts
/// with `op`, giving the slice layout: offset, op, system_time, event_time, columns...
pub fn with_system_columns(
    merged: &RecordBatch,
    vocab: &Vocab,
    first_offset: u64,
    system_time: DateTime<Utc>,
) -> Result<RecordBatch, IngestError> {
    let rows = merged.num_rows();
    let first = i64::try_from(first_offset).map_err(|_| IngestError::OffsetsExhausted)?;
    first.checked_add(rows as i64).ok_or(IngestError::OffsetsExhausted)?;
    let offsets: ArrayRef = Arc::new(Int64Array::from_iter_values((0..rows as i64).map(|i| first + i)));
    let system: ArrayRef = Arc::new(
        TimestampMillisecondArray::from(vec![system_time.timestamp_millis(); rows]).with_timezone("UTC"),
    );
    let mut fields = vec![
        Arc::new(Field::new(&vocab.offset, DataType::Int64, false)),
        merged.schema().fields()[0].clone(),
        Arc::new(Field::new(&vocab.system_time, timestamp_ms_utc(), false)),
    ];
    fields.extend(merged.schema().fields().iter().skip(1).cloned());
    let mut columns = vec![offsets, merged.column(0).clone(), system];
    columns.extend(merged.columns().iter().skip(1).cloned());
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// A slice written to a temp file beside its final place, with its hashes.
pub struct StagedSlice {
    pub temp: PathBuf,
    pub physical_hash: Multihash,
    pub logical_hash: Multihash,
    pub size: u64,
    pub rows: u64,
}

fn properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1 << 17))
        .build()
}

/// A slice being written, a batch at a time, to a temp file beside its final place.
pub struct SliceWriter {
    temp: PathBuf,
    writer: ArrowWriter<File>,
    hasher: LogicalHasher,
    rows: u64,
}

impl SliceWriter {
    pub fn create(temp: &Path, schema: &SchemaRef) -> Result<SliceWriter, IngestError> {
        let file = File::create(temp).map_err(io(temp))?;
        Ok(SliceWriter {
            temp: temp.to_owned(),
            writer: ArrowWriter::try_new(file, schema.clone(), Some(properties()))?,
            hasher: LogicalHasher::new(schema),
            rows: 0,
        })
    }

    pub fn temp(&self) -> &Path {
        &self.temp
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), IngestError> {
        self.writer.write(batch)?;
        self.hasher.update(batch);
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes the file (fsynced) and hashes it. On error the caller removes `temp`.
    pub fn finish(self) -> Result<StagedSlice, IngestError> {
        let temp = self.temp;
        let file = self.writer.into_inner()?;
        file.sync_all().map_err(io(&temp))?;
        drop(file);
        let (physical_hash, size) = hash_file(&temp).map_err(io(&temp))?;
        Ok(StagedSlice { physical_hash, logical_hash: self.hasher.finish(), size, rows: self.rows, temp })
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> IoError + '_ {
    move |error| IoError { action: "write", path: path.to_owned(), error }
}
