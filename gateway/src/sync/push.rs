//! Pushing a dataset to a remote: only what the remote lacks, in an order that keeps the
//! remote readable at every instant. Every data slice and checkpoint goes before any new
//! block, the blocks go oldest first, and `refs/head` moves last; an object already there
//! (an earlier push cut short) is not sent again.

use super::error::{SyncError, head_text};
use super::pace::Pace;
use super::remote::Remote;
use crate::odf::{MetadataBlock, Multihash};
use crate::store::{Dataset, ObjectKind, objects_of};

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
/// the bytes of the objects to send.
pub async fn push(
    dataset: &Dataset,
    remote: &Remote,
    pace: &mut Pace,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<PushReport, SyncError> {
    let head = dataset.head().cloned().ok_or_else(|| SyncError::EmptyDataset(dataset.name().clone()))?;
    let previous = remote.read_head().await?;
    let missing = missing_blocks(dataset, remote, &head, previous.as_ref()).await?;
    let mut report =
        PushReport { previous, head, blocks: missing.len() as u64, uploaded: 0, bytes: 0, present: 0 };
    if missing.is_empty() {
        return Ok(report);
    }

    let objects: Vec<_> = missing.iter().flat_map(|(_, block)| objects_of(block)).collect();
    let block_files: Vec<_> = missing
        .iter()
        .map(|(hash, _)| dataset.object_path(ObjectKind::Block, hash))
        .map(|path| {
            std::fs::read(&path).map_err(|error| crate::store::IoError { action: "read", path, error })
        })
        .collect::<Result<_, _>>()?;
    let total =
        objects.iter().map(|o| o.size).sum::<u64>() + block_files.iter().map(|b| b.len() as u64).sum::<u64>();
    let mut done = 0;
    progress(done, total);

    for object in &objects {
        if remote.size_of(object.kind, &object.hash).await? == Some(object.size) {
            report.present += 1;
        } else {
            let path = dataset.object_path(object.kind, &object.hash);
            remote.upload_file(object.kind, &object.hash, &path, pace).await?;
            report.uploaded += 1;
            report.bytes += object.size;
        }
        done += object.size;
        progress(done, total);
    }
    for ((hash, _), bytes) in missing.iter().zip(block_files) {
        let size = bytes.len() as u64;
        if remote.size_of(ObjectKind::Block, hash).await? == Some(size) {
            report.present += 1;
        } else {
            remote.upload(ObjectKind::Block, hash, bytes, pace).await?;
            report.uploaded += 1;
            report.bytes += size;
        }
        done += size;
        progress(done, total);
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
) -> Result<Vec<(Multihash, MetadataBlock)>, SyncError> {
    let Some(remote_head) = remote_head else {
        let mut all = dataset.blocks()?;
        all.reverse();
        return Ok(all);
    };
    if remote_head == head {
        return Ok(Vec::new());
    }
    let local_seq = dataset.state().blocks.saturating_sub(1);
    let (_, remote_block) = remote.read_block(remote_head).await?;
    let remote_seq = remote_block.sequence_number;
    let diverged = || SyncError::Diverged {
        dataset: dataset.name().clone(),
        url: remote.url().to_owned(),
        local: head.to_string(),
        remote: remote_head.to_string(),
        remote_seq,
    };
    if remote_seq >= local_seq {
        // Ahead if our head is among the remote's blocks at our height.
        let mut block = remote_block;
        while block.sequence_number > local_seq {
            let Some(prev) = block.prev_block_hash.clone() else { return Err(diverged()) };
            if block.sequence_number == local_seq + 1 {
                if &prev == head {
                    return Err(SyncError::RemoteAhead {
                        dataset: dataset.name().clone(),
                        url: remote.url().to_owned(),
                        local: head.to_string(),
                        remote: remote_head.to_string(),
                        blocks: remote_seq - local_seq,
                    });
                }
                return Err(diverged());
            }
            block = remote.read_block(&prev).await?.1;
        }
        return Err(diverged());
    }
    let mut missing = Vec::new();
    let mut next = head.clone();
    loop {
        let block = dataset.read_block(&next)?;
        if block.sequence_number == remote_seq {
            if &next != remote_head {
                return Err(diverged());
            }
            break;
        }
        let prev = block.prev_block_hash.clone();
        missing.push((next, block));
        next = prev.ok_or_else(diverged)?;
    }
    missing.reverse();
    Ok(missing)
}
