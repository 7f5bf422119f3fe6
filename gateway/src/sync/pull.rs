//! Pulling a dataset from a remote into the data directory. The remote's blocks after the
//! local head are fetched (each checked against its hash, their sequence numbers falling by
//! one) and kept under temp names; then, oldest first, each is checked against the chain
//! rules and the data slices and checkpoints it adds are fetched under temp names, each
//! checked against its block (size, hash, and for slices the records' logical hash and
//! count) as it arrives. Only then, under the dataset's lock, are they moved in place and
//! the head moved (`Dataset::adopt_received`). Memory holds one block at a time and a hash
//! for each new block. A new dataset appears under its name only once whole; a pull cut
//! short leaves nothing under it, and the next one starts again.

use super::error::{SyncError, head_text};
use super::remote::Remote;
use crate::odf::{DatasetName, MetadataBlock, MetadataEvent, Multihash};
use crate::store::{
    self, DEFAULT_LOCK_TIMEOUT, DataDir, Dataset, IoError, ObjectKind, StoreError, objects_of,
};

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullReport {
    pub dataset: DatasetName,
    /// The local head before, `None` for a dataset the pull created.
    pub previous: Option<Multihash>,
    pub head: Multihash,
    /// Blocks taken in, and the data slices and checkpoints fetched with them.
    pub blocks: u64,
    pub objects: u64,
    pub bytes: u64,
    /// Blocks the local copy has beyond the remote's head (nothing to take then).
    pub local_ahead: u64,
}

impl PullReport {
    pub fn up_to_date(&self) -> bool {
        self.blocks == 0
    }
}

/// Pulls `remote` into the dataset `name` of `data_dir`, creating it if missing.
/// `progress(done, total)` counts the new blocks taken in.
pub async fn pull(
    remote: &Remote,
    data_dir: &DataDir,
    name: &DatasetName,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<PullReport, SyncError> {
    let remote_head = remote
        .read_head()
        .await?
        .ok_or_else(|| SyncError::NoRemoteDataset { url: remote.url().to_owned() })?;
    match data_dir.open_dataset(name.as_str()) {
        Ok(mut dataset) => {
            let result = receive(&mut dataset, remote, remote_head, progress).await;
            dataset.discard_received();
            result
        }
        Err(StoreError::NotFound { .. }) => {
            // Dropped unfinished, the staged folder goes with all it received.
            let mut staged = data_dir.stage_dataset(name)?;
            let report = receive(staged.dataset(), remote, remote_head, progress).await?;
            staged.finish()?;
            Ok(report)
        }
        Err(e) => Err(e.into()),
    }
}

async fn receive(
    dataset: &mut Dataset,
    remote: &Remote,
    remote_head: Multihash,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<PullReport, SyncError> {
    let previous = dataset.head().cloned();
    let mut report = PullReport {
        dataset: dataset.name().clone(),
        previous: previous.clone(),
        head: remote_head.clone(),
        blocks: 0,
        objects: 0,
        bytes: 0,
        local_ahead: 0,
    };
    let (new, local_ahead) = new_blocks(dataset, remote, &remote_head).await?;
    if new.is_empty() {
        report.head = previous.unwrap_or(remote_head);
        report.local_ahead = local_ahead;
        return Ok(report);
    }

    let total = new.len() as u64;
    progress(0, total);
    let mut state = dataset.state().clone();
    for (done, hash) in new.iter().enumerate() {
        let block = received_block(dataset, hash).await?;
        // The chain rules before the block's objects are fetched; `adopt_received` checks
        // them again from the files it moves in place.
        state.apply(hash, &block).map_err(StoreError::from)?;
        for object in objects_of(&block) {
            let in_place = dataset.object_path(object.kind, &object.hash);
            let present = blocking(move || store::hash_file(&in_place).map_err(|e| e.to_string()))
                .await
                .is_ok_and(|(hash, size)| hash == object.hash && size == object.size);
            let path = if present {
                dataset.object_path(object.kind, &object.hash)
            } else {
                let receiving = dataset.receiving_path(object.kind, &object.hash);
                remote.download(object.kind, &object.hash, object.size, &receiving).await?;
                report.objects += 1;
                report.bytes = report.bytes.saturating_add(object.size);
                receiving
            };
            if let Some(slice) = slice_of(&block, &object.hash) {
                let checked = blocking(move || store::check_slice_records(&path, &slice)).await;
                checked.map_err(|reason| SyncError::RemoteDamaged {
                    url: remote.url().to_owned(),
                    what: format!("block {hash}"),
                    reason: format!("its data slice {}: {reason}", object.hash),
                })?;
            }
        }
        progress(done as u64 + 1, total);
    }
    let lock = dataset.lock(DEFAULT_LOCK_TIMEOUT)?;
    if dataset.head() != previous.as_ref() {
        return Err(SyncError::LocalMoved { dataset: dataset.name().clone() });
    }
    dataset.adopt_received(&lock, &new)?;
    report.blocks = total;
    Ok(report)
}

/// Runs a check that reads files off the async runtime; a panic in it (a Parquet reader
/// given a hostile file) comes back as an error.
async fn blocking<T: Send + 'static>(
    check: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(check).await.map_err(|e| format!("the check failed: {e}"))?
}

/// The data slice `block` adds, if its file is `hash`.
fn slice_of(block: &MetadataBlock, hash: &Multihash) -> Option<crate::odf::DataSlice> {
    let MetadataEvent::AddData(add) = &block.event else { return None };
    add.new_data.clone().filter(|s| &s.physical_hash == hash)
}

/// A block `new_blocks` received, read back.
async fn received_block(dataset: &Dataset, hash: &Multihash) -> Result<MetadataBlock, SyncError> {
    let path = dataset.receiving_path(ObjectKind::Block, hash);
    let bytes = tokio::fs::read(&path).await.map_err(|error| IoError { action: "read", path, error })?;
    crate::odf::decode_block(&bytes)
        .map_err(|reason| SyncError::Store(StoreError::Undecodable { hash: hash.clone(), reason }))
}

/// Receives the remote's blocks after the local head, keeping each under its temp name;
/// returns their hashes oldest first. Nothing new when the remote's head is ours or an
/// ancestor of it (with how many blocks the local copy is ahead); refused when the chains
/// diverged.
async fn new_blocks(
    dataset: &Dataset,
    remote: &Remote,
    remote_head: &Multihash,
) -> Result<(Vec<Multihash>, u64), SyncError> {
    let local = dataset.head().cloned();
    if local.as_ref() == Some(remote_head) {
        return Ok((Vec::new(), 0));
    }
    let local_seq = dataset.state().blocks.checked_sub(1);
    let diverged = |remote_seq| SyncError::Diverged {
        dataset: dataset.name().clone(),
        url: remote.url().to_owned(),
        local: head_text(local.as_ref()),
        remote: remote_head.to_string(),
        remote_seq,
    };
    let mut new = Vec::new();
    let mut remote_seq = 0;
    let mut expected_seq = None;
    let mut next = Some(remote_head.clone());
    loop {
        // The remote's first block reached: all of it is new to a dataset without blocks.
        let Some(hash) = next else {
            if local.is_none() {
                break;
            }
            return Err(diverged(remote_seq));
        };
        if Some(&hash) == local.as_ref() {
            break;
        }
        let (bytes, block) = remote.read_block(&hash).await?;
        if expected_seq.is_some_and(|expected| block.sequence_number != expected) {
            return Err(SyncError::RemoteDamaged {
                url: remote.url().to_owned(),
                what: format!("block {hash}"),
                reason: format!(
                    "its sequence number is {}, not one below the next block's",
                    block.sequence_number
                ),
            });
        }
        if new.is_empty() {
            remote_seq = block.sequence_number;
        }
        if let Some(local_seq) = local_seq.filter(|&seq| block.sequence_number <= seq) {
            // At our height and not our head: the remote's head is an ancestor of ours
            // (nothing to take), or the chains diverged.
            if new.is_empty() && local_chain_holds(dataset, remote_head, remote_seq)? {
                return Ok((Vec::new(), local_seq - remote_seq));
            }
            return Err(diverged(remote_seq));
        }
        let path = dataset.receiving_path(ObjectKind::Block, &hash);
        tokio::fs::write(&path, &bytes).await.map_err(|error| IoError { action: "write", path, error })?;
        expected_seq = block.sequence_number.checked_sub(1);
        next = block.prev_block_hash;
        new.push(hash);
    }
    new.reverse();
    Ok((new, 0))
}

/// Whether the local chain's block at `seq` is `hash`, walking back from the head.
fn local_chain_holds(dataset: &Dataset, hash: &Multihash, seq: u64) -> Result<bool, SyncError> {
    let mut next = dataset.head().cloned();
    while let Some(current) = next {
        let block = dataset.read_block(&current)?;
        if block.sequence_number <= seq {
            return Ok(block.sequence_number == seq && &current == hash);
        }
        next = block.prev_block_hash;
    }
    Ok(false)
}
