//! Datasets on disk: the data directory, one dataset's objects and head, atomic commits,
//! reading the chain back, and integrity checks. Knows the ODF model, nothing above it.

mod data_dir;
mod dataset;
mod error;
mod fsio;
mod slices;
mod verify;

pub use data_dir::DataDir;
pub use dataset::{DEFAULT_LOCK_TIMEOUT, Dataset, WriteLock};
pub use error::StoreError;
pub use fsio::IoError;
pub use verify::{VerifyError, VerifyReport, hash_file, verify};

#[cfg(test)]
mod tests;
