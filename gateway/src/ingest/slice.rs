//! The data slice: system columns in front of the merged records, written as Parquet with
//! the spec's physical types, then hashed (physical: SHA3-256 of the file; logical:
//! arrow-digest over the records, multicodec 0x300016).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::error::IngestError;
use crate::odf::arrow_schema::{logical_hash, timestamp_ms_utc};
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
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

/// Writes `batch` as Parquet to `temp` (fsynced) and hashes it.
pub fn stage(batch: &RecordBatch, temp: &Path) -> Result<StagedSlice, IngestError> {
    let io = |error: std::io::Error| IoError { action: "write", path: temp.to_owned(), error };
    let file = File::create(temp).map_err(io)?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties()))?;
    writer.write(batch)?;
    let file = writer.into_inner()?;
    file.sync_all().map_err(io)?;
    drop(file);
    let (physical_hash, size) = hash_file(temp).map_err(io)?;
    Ok(StagedSlice {
        temp: temp.to_owned(),
        physical_hash,
        logical_hash: logical_hash(&batch.schema(), std::slice::from_ref(batch)),
        size,
        rows: batch.num_rows() as u64,
    })
}
