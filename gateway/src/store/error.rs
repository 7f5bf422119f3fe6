use crate::odf::{ChainError, DatasetName, DecodeError, Multihash};

use super::fsio::IoError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] IoError),

    #[error("dataset '{name}' does not exist in {data_dir}{}", known_list(.known))]
    NotFound { name: String, data_dir: String, known: Vec<DatasetName> },

    #[error("dataset '{0}' already exists")]
    AlreadyExists(DatasetName),

    #[error("{path} is not a dataset: {reason}")]
    NotADataset { path: String, reason: String },

    #[error("block {hash}: {reason}")]
    BadBlock { hash: Multihash, reason: String },

    #[error("data slice {hash}: {reason}")]
    BadSlice { hash: Multihash, reason: String },

    #[error("block {hash}: {reason}")]
    Undecodable { hash: Multihash, reason: DecodeError },

    #[error(transparent)]
    Chain(#[from] ChainError),

    #[error("cannot make a dataset identity: no randomness from the OS: {0}")]
    Identity(getrandom::Error),

    #[error(
        "waited {:.1} s for the lock {path}, held by {holder}; try again, or stop that writer",
        waited.as_secs_f64()
    )]
    LockTimeout { path: String, holder: String, waited: std::time::Duration },

    #[error("a commit needs at least one event")]
    EmptyCommit,

    #[error("data directory {0} does not exist (create it, or add a dataset there first)")]
    NoDataDir(String),

    #[error("data directory {0} is not a folder")]
    DataDirNotAFolder(String),
}

fn known_list(known: &[DatasetName]) -> String {
    if known.is_empty() {
        " (it has no datasets; create one with `odf-gateway add <manifest>`)".into()
    } else {
        let names: Vec<&str> = known.iter().map(DatasetName::as_str).collect();
        format!(" (datasets: {})", names.join(", "))
    }
}
