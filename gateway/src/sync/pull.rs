//! Pulling a dataset from a remote into the data directory: the remote's blocks after the
//! local head are read and checked (hashes, chain rules) before anything is fetched, each
//! data slice and checkpoint is checked against its block (size, hash, and for slices the
//! records' logical hash) before it is put in place, and the local head moves last. A new
//! dataset appears under its name only once whole. Objects a pull cut short already put in
//! place are kept by the next one.

use super::error::{SyncError, head_text};
use super::remote::Remote;
use crate::odf::{DatasetName, MetadataBlock, MetadataEvent, Multihash};
use crate::store::{self, DEFAULT_LOCK_TIMEOUT, DataDir, Dataset, ObjectKind, StoreError, objects_of};

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
}

impl PullReport {
    pub fn up_to_date(&self) -> bool {
        self.blocks == 0
    }
}

/// Pulls `remote` into the dataset `name` of `data_dir`, creating it if missing.
/// `progress(done, total)` counts the bytes of the objects to fetch.
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
        Ok(mut dataset) => receive(&mut dataset, remote, remote_head, progress).await,
        Err(StoreError::NotFound { .. }) => {
            let mut staged = data_dir.stage_dataset(name)?;
            let report = receive(staged.dataset(), remote, remote_head, progress).await?;
            staged.finish()?;
            Ok(report)
        }
        Err(e) => Err(e.into()),
    }
}

/// Fetches and checks what `dataset` lacks, then appends the blocks under the dataset's
/// lock, taken only for that: a gateway committing to the dataset is not held up by a
/// slow link (if it committed meanwhile, the pull is refused and nothing is appended).
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
    };
    let new = new_blocks(dataset, remote, &remote_head).await?;
    if new.is_empty() {
        report.head = previous.unwrap_or(remote_head);
        return Ok(report);
    }
    // The chain rules before anything is fetched; `append_blocks` checks them again.
    let mut state = dataset.state().clone();
    for (hash, _, block) in &new {
        state.apply(hash, block).map_err(StoreError::from)?;
    }

    let total: u64 = new.iter().flat_map(|(_, _, block)| objects_of(block)).map(|o| o.size).sum();
    let mut done = 0;
    progress(done, total);
    for (_, _, block) in &new {
        for object in objects_of(block) {
            let path = dataset.object_path(object.kind, &object.hash);
            // Put in place by a pull cut short, after the same checks.
            let present =
                store::hash_file(&path).is_ok_and(|(hash, size)| hash == object.hash && size == object.size);
            if !present {
                let receiving = dataset.receiving_path(object.kind);
                remote.download(object.kind, &object.hash, object.size, &receiving).await?;
                dataset.publish(&receiving, &path)?;
                report.objects += 1;
                report.bytes += object.size;
            }
            if object.kind == ObjectKind::Data {
                check_slice(dataset, remote, block, &object.hash)?;
            }
            done += object.size;
            progress(done, total);
        }
    }
    let encoded: Vec<(Multihash, Vec<u8>)> = new.into_iter().map(|(hash, bytes, _)| (hash, bytes)).collect();
    report.blocks = encoded.len() as u64;
    let lock = dataset.lock(DEFAULT_LOCK_TIMEOUT)?;
    if dataset.head() != previous.as_ref() {
        return Err(SyncError::LocalMoved { dataset: dataset.name().clone() });
    }
    dataset.append_blocks(&lock, &encoded)?;
    Ok(report)
}

/// Re-reads a slice put in place and checks its records against the logical hash and
/// offsets its block records; a bad one is removed.
fn check_slice(
    dataset: &Dataset,
    remote: &Remote,
    block: &MetadataBlock,
    hash: &Multihash,
) -> Result<(), SyncError> {
    let MetadataEvent::AddData(add) = &block.event else { return Ok(()) };
    let Some(slice) = add.new_data.as_ref().filter(|s| &s.physical_hash == hash) else { return Ok(()) };
    store::check_records(dataset, slice).map_err(|reason| {
        let _ = std::fs::remove_file(dataset.object_path(ObjectKind::Data, hash));
        SyncError::RemoteDamaged { url: remote.url().to_owned(), what: format!("data slice {hash}"), reason }
    })
}

/// The remote's blocks after the local head, oldest first, each with its bytes; refused if
/// the local head is not among them (diverged, or the local copy is ahead).
async fn new_blocks(
    dataset: &Dataset,
    remote: &Remote,
    remote_head: &Multihash,
) -> Result<Vec<(Multihash, Vec<u8>, MetadataBlock)>, SyncError> {
    let local = dataset.head().cloned();
    if local.as_ref() == Some(remote_head) {
        return Ok(Vec::new());
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
            new.reverse();
            return Ok(new);
        }
        let (bytes, block) = remote.read_block(&hash).await?;
        if new.is_empty() {
            remote_seq = block.sequence_number;
        }
        if local_seq.is_some_and(|seq| block.sequence_number <= seq) {
            // At our height and not our head: the remote's head is ours or an ancestor of
            // it (nothing to take), or the chains diverged.
            if new.is_empty() && dataset.blocks()?.iter().any(|(h, _)| h == remote_head) {
                return Ok(Vec::new());
            }
            return Err(diverged(remote_seq));
        }
        next = block.prev_block_hash.clone();
        new.push((hash, bytes, block));
    }
    new.reverse();
    Ok(new)
}
