//! Datasets on disk: the data directory, one dataset's objects and head, atomic commits,
//! reading the chain back, and integrity checks. Knows the ODF model, nothing above it.

mod data_dir;
mod dataset;
mod error;
mod fsio;
mod gc;
mod objects;
mod receive;
mod slices;
mod verify;

pub use data_dir::DataDir;
pub use dataset::{
    BLOCKS, CHECKPOINTS, CatchUp, DATA, DEFAULT_LOCK_TIMEOUT, Dataset, HEAD, WriteLock, decode_checked,
    take_lock as lock_file,
};
pub use error::StoreError;
pub use fsio::{IoError, create_dir, process_alive, sync_dir, write_atomic};
pub use gc::{GcReport, collect_garbage};
pub use objects::{ObjectKind, ObjectRef, objects_of};
pub use receive::StagedDataset;
pub use verify::{VerifyError, VerifyReport, check_slice_records, hash_file, verify};

#[cfg(test)]
mod tests;
