use crate::odf::{DatasetName, Multihash};
use crate::store::{IoError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("'{url}' is not a repository URL: {reason}")]
    BadUrl { url: String, reason: String },

    /// The object store's error is part of the message (not a `source`), so that error
    /// chains do not print it twice.
    #[error("{action} {key} at {url}: {error}")]
    Remote { action: &'static str, key: String, url: String, error: Box<dyn std::error::Error + Send + Sync> },

    #[error("{url} holds no dataset (it has no refs/head)")]
    NoRemoteDataset { url: String },

    #[error("{url}: {what} is damaged: {reason}")]
    RemoteDamaged { url: String, what: String, reason: String },

    #[error(
        "{url} and the local {dataset} have diverged: the remote head {remote} (block #{remote_seq}) is not in \
         the local chain and the local head {local} is not in the remote one. Another writer (a second gateway, \
         another dataset of the same name) uses that URL; nothing was overwritten"
    )]
    Diverged { dataset: DatasetName, url: String, local: String, remote: String, remote_seq: u64 },

    #[error(
        "{url} is {blocks} block(s) ahead of the local {dataset} (its head {remote}, ours {local}): pull it first"
    )]
    RemoteAhead { dataset: DatasetName, url: String, local: String, remote: String, blocks: u64 },

    #[error(
        "{url}: the remote head moved from {expected} to {found} during the push; another writer? Nothing was overwritten"
    )]
    HeadMoved { url: String, expected: String, found: String },

    #[error("the local {dataset} was committed to during the pull; nothing was appended, pull again")]
    LocalMoved { dataset: DatasetName },

    #[error("dataset '{0}' has no blocks to push")]
    EmptyDataset(DatasetName),

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(transparent)]
    Io(#[from] IoError),
}

impl SyncError {
    /// Whether trying again later may succeed (a network or server failure), rather than
    /// needing someone to look (diverged chains, damaged objects, a bad URL).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SyncError::Remote { .. }
                | SyncError::HeadMoved { .. }
                | SyncError::LocalMoved { .. }
                | SyncError::Io(_)
        )
    }
}

/// `None` heads in messages.
pub(super) fn head_text(head: Option<&Multihash>) -> String {
    head.map_or_else(|| "(none)".to_owned(), ToString::to_string)
}
