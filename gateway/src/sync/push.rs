//! Pushing a dataset to a remote: only what the remote lacks, in an order that keeps the
//! remote readable at every instant. Block by block, oldest first: the data slice and
//! checkpoint it adds, then the block (which names them and the block before); `refs/head`
//! moves last. An object already there (an earlier push cut short) is not sent again.

use super::error::{SyncError, head_text};
use super::pace::Pace;
use super::remote::Remote;
use crate::odf::{MetadataBlock, Multihash};
use crate::store::{Dataset, IoError, ObjectKind, decode_checked, objects_of};

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// The remote's head before, `None` if it held no dataset.
    pub previous: Option<Multihash>,
    /// The remote's head now (the local head that was pushed).
    pub head: Multihash,
    /// Blocks the remote did not have.
    pub blocks: u64,
    /// Objects (blocks, data slices, checkpoints) sent, and bytes sent.
    pub uploaded: u64,
    pub bytes: u64,
    /// Objects an earlier, interrupted push had already sent.
    pub present: u64,
}

impl PushReport {
    pub fn up_to_date(&self) -> bool {
        self.blocks == 0
    }
}

/// Pushes `dataset` (as of its handle's head) to `remote`. `progress(done, total)` counts
/// the blocks to send. With `look_first`, each object is looked up before it is sent (one
/// request more each, on a metered link), so that what an earlier push cut short sent is not
/// sent again; without, the caller knows nothing above the remote's head was sent (its last
/// push to it succeeded).
pub async fn push(
    dataset: &Dataset,
    remote: &Remote,
    look_first: bool,
    pace: &mut Pace,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<PushReport, SyncError> {
    let head = dataset.head().cloned().ok_or_else(|| SyncError::EmptyDataset(dataset.name().clone()))?;
    let previous = remote.read_head().await?;
    let missing = missing_blocks(dataset, remote, &head, previous.as_ref()).await?;
    let total = missing.len() as u64;
    let mut report = PushReport { previous, head, blocks: total, uploaded: 0, bytes: 0, present: 0 };
    if missing.is_empty() {
        return Ok(report);
    }

    progress(0, total);
    for (done, hash) in missing.iter().enumerate() {
        // Read again (hash-checked) rather than kept: a first push of a long chain holds
        // only the hashes.
        let path = dataset.block_path(hash);
        let bytes = tokio::fs::read(&path).await.map_err(|error| IoError { action: "read", path, error })?;
        let block = decode_checked(hash, &bytes)?;
        for object in objects_of(&block) {
            if look_first && remote.size_of(object.kind, &object.hash).await? == Some(object.size) {
                report.present += 1;
                continue;
            }
            let path = dataset.object_path(object.kind, &object.hash);
            remote.upload_file(object.kind, &object.hash, &path, pace).await?;
            report.uploaded += 1;
            report.bytes = report.bytes.saturating_add(object.size);
        }
        let size = bytes.len() as u64;
        if look_first && remote.size_of(ObjectKind::Block, hash).await? == Some(size) {
            report.present += 1;
        } else {
            remote.upload(ObjectKind::Block, hash, bytes, pace).await?;
            report.uploaded += 1;
            report.bytes = report.bytes.saturating_add(size);
        }
        progress(done as u64 + 1, total);
    }
    remote.sync_folders()?;

    // kamu checks the same way: not an atomic compare-and-swap, but another writer that
    // moved the head while this push ran is not overwritten.
    let now = remote.read_head().await?;
    if now != report.previous {
        return Err(SyncError::HeadMoved {
            url: remote.url().to_owned(),
            expected: head_text(report.previous.as_ref()),
            found: head_text(now.as_ref()),
        });
    }
    remote.write_head(&report.head).await?;
    Ok(report)
}

/// The local blocks after the remote's head, oldest first; refused if the remote's head is
/// not one of ours (diverged) or is a descendant of ours (the remote is ahead).
async fn missing_blocks(
    dataset: &Dataset,
    remote: &Remote,
    head: &Multihash,
    remote_head: Option<&Multihash>,
) -> Result<Vec<Multihash>, SyncError> {
    if remote_head == Some(head) {
        return Ok(Vec::new());
    }
    let local_seq = dataset.state().blocks.saturating_sub(1);
    // Where the walk back stops: the remote's head, at its sequence number.
    let stop = match remote_head {
        None => None,
        Some(remote_head) => {
            let (_, remote_block) = remote.read_block(remote_head).await?;
            let remote_seq = remote_block.sequence_number;
            if remote_seq >= local_seq {
                return Err(ahead_or_diverged(dataset, remote, head, remote_head, remote_block).await);
            }
            Some((remote_head, remote_seq))
        }
    };
    let mut missing = Vec::new();
    let mut next = head.clone();
    loop {
        let block = dataset.read_block(&next)?;
        if let Some((remote_head, remote_seq)) = stop
            && block.sequence_number == remote_seq
        {
            if &next != remote_head {
                return Err(diverged(dataset, remote, head, remote_head, remote_seq));
            }
            break;
        }
        let prev = block.prev_block_hash;
        missing.push(next);
        match (prev, stop) {
            (Some(prev), _) => next = prev,
            (None, None) => break,
            // The local chain ended above the remote's height (not in a checked chain).
            (None, Some((remote_head, remote_seq))) => {
                return Err(diverged(dataset, remote, head, remote_head, remote_seq));
            }
        }
    }
    missing.reverse();
    Ok(missing)
}

/// A remote at or above our height: ahead if our head is among its blocks, else diverged.
async fn ahead_or_diverged(
    dataset: &Dataset,
    remote: &Remote,
    head: &Multihash,
    remote_head: &Multihash,
    remote_block: MetadataBlock,
) -> SyncError {
    let local_seq = dataset.state().blocks.saturating_sub(1);
    let remote_seq = remote_block.sequence_number;
    let mut block = remote_block;
    while block.sequence_number > local_seq {
        let Some(prev) = block.prev_block_hash.clone() else { break };
        if block.sequence_number == local_seq + 1 {
            if &prev == head {
                return SyncError::RemoteAhead {
                    dataset: dataset.name().clone(),
                    url: remote.url().to_owned(),
                    local: head.to_string(),
                    remote: remote_head.to_string(),
                    blocks: remote_seq - local_seq,
                };
            }
            break;
        }
        block = match remote.read_block(&prev).await {
            Ok((_, block)) => block,
            Err(e) => return e,
        };
    }
    diverged(dataset, remote, head, remote_head, remote_seq)
}

fn diverged(
    dataset: &Dataset,
    remote: &Remote,
    head: &Multihash,
    remote_head: &Multihash,
    remote_seq: u64,
) -> SyncError {
    SyncError::Diverged {
        dataset: dataset.name().clone(),
        url: remote.url().to_owned(),
        local: head.to_string(),
        remote: remote_head.to_string(),
        remote_seq,
    }
}
