//! Integrity check of a whole dataset: every block re-hashed and decoded, the chain rules
//! replayed from the seed, and every data slice and checkpoint re-hashed against the hash and
//! size its block recorded. Stops at the first bad object and names it.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use arrow::array::{Array, Int64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha3::{Digest, Sha3_256};

use super::dataset::Dataset;
use super::error::StoreError;
use crate::odf::{DataSlice, MetadataEvent, Multihash, arrow_schema, hash::SHA3_256};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct VerifyReport {
    pub blocks: u64,
    pub data_files: u64,
    pub checkpoints: u64,
    pub bytes_hashed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{kind} {hash} (referenced by block #{block}): {reason}")]
    BadObject { kind: &'static str, hash: Multihash, block: u64, reason: String },
}

/// SHA3-256 of a file, streamed, and its size.
pub fn hash_file(path: &Path) -> io::Result<(Multihash, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha3_256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Multihash::from_digest(SHA3_256, &hasher.finalize().into()), size))
}

/// Re-reads a data slice whose bytes are intact and recomputes its logical hash (arrow-digest
/// of its records) and its record count. `Err` says what is wrong.
fn check_records(dataset: &Dataset, slice: &DataSlice) -> Result<(), String> {
    check_slice_records(&dataset.data_path(&slice.physical_hash), slice)
}

/// `check_records` of the Parquet file at `path` (in place or still being received), read a
/// batch at a time: a big slice takes no more memory than a batch.
pub fn check_slice_records(path: &Path, slice: &DataSlice) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map(|builder| builder.with_batch_size(1 << 16))
        .and_then(|builder| builder.build())
        .map_err(|e| format!("not a Parquet file: {e}"))?;
    let mut hasher = None;
    let mut rows = 0u64;
    // The offset column comes first in ODF data files; its first and last values must be
    // the block's interval (a slice named again under other offsets is not new data).
    let (mut first, mut last) = (None, None);
    for batch in reader {
        let batch = batch.map_err(|e| format!("unreadable Parquet: {e}"))?;
        hasher.get_or_insert_with(|| arrow_schema::LogicalHasher::new(&batch.schema())).update(&batch);
        rows += batch.num_rows() as u64;
        let offsets = batch
            .columns()
            .first()
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or("its first column is not the Int64 offset column")?;
        if offsets.null_count() > 0 {
            return Err("its offset column has nulls".into());
        }
        if !offsets.is_empty() {
            first = first.or(Some(offsets.value(0)));
            last = Some(offsets.value(offsets.len() - 1));
        }
    }
    let Some(hasher) = hasher else { return Err("the file holds no records".into()) };
    let actual = hasher.finish();
    if actual != slice.logical_hash {
        return Err(format!("records digest to {actual}, the block says {}", slice.logical_hash));
    }
    let expected = slice.offset_interval.end.saturating_sub(slice.offset_interval.start).saturating_add(1);
    if rows != expected {
        return Err(format!("{rows} records, the block's offsets say {expected}"));
    }
    let interval = &slice.offset_interval;
    let found = first.zip(last).unwrap_or((-1, -1));
    if u64::try_from(found.0) != Ok(interval.start) || u64::try_from(found.1) != Ok(interval.end) {
        return Err(format!(
            "its records hold offsets {}..={}, the block says {}..={}",
            found.0, found.1, interval.start, interval.end
        ));
    }
    Ok(())
}

/// Checks `dataset`, calling `progress(done, total)` after each block's objects.
pub fn verify(dataset: &Dataset, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport, VerifyError> {
    // Opening the dataset already re-hashed, decoded and replayed every block; read them
    // again in case the files changed since.
    let blocks = dataset.blocks()?;
    let total = blocks.len() as u64;
    let mut report = VerifyReport { blocks: total, ..Default::default() };
    for (done, (_, block)) in blocks.iter().rev().enumerate() {
        if let MetadataEvent::AddData(add) = &block.event {
            if let Some(slice) = &add.new_data {
                let path = dataset.data_path(&slice.physical_hash);
                check_object("data slice", &path, &slice.physical_hash, slice.size, block.sequence_number)?;
                check_records(dataset, slice).map_err(|reason| VerifyError::BadObject {
                    kind: "data slice",
                    hash: slice.physical_hash.clone(),
                    block: block.sequence_number,
                    reason,
                })?;
                report.data_files += 1;
                report.bytes_hashed += slice.size;
            }
            if let Some(checkpoint) = &add.new_checkpoint {
                // A checkpoint that did not change is carried by hash; check each file once.
                if add.prev_checkpoint.as_ref() != Some(&checkpoint.physical_hash) {
                    let path = dataset.checkpoint_path(&checkpoint.physical_hash);
                    check_object(
                        "checkpoint",
                        &path,
                        &checkpoint.physical_hash,
                        checkpoint.size,
                        block.sequence_number,
                    )?;
                    report.checkpoints += 1;
                    report.bytes_hashed += checkpoint.size;
                }
            }
        }
        progress(done as u64 + 1, total);
    }
    Ok(report)
}

fn check_object(
    kind: &'static str,
    path: &Path,
    expected: &Multihash,
    size: u64,
    block: u64,
) -> Result<(), VerifyError> {
    let bad = |reason: String| VerifyError::BadObject { kind, hash: expected.clone(), block, reason };
    let (actual, actual_size) =
        hash_file(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    if actual_size != size {
        return Err(bad(format!("file is {actual_size} bytes, the block says {size}")));
    }
    if &actual != expected {
        return Err(bad(format!("content hashes to {actual}: the file is corrupted")));
    }
    Ok(())
}
