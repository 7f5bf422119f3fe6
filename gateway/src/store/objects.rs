//! The objects a block refers to besides the block before it: the data slice and the
//! checkpoint an `AddData` names. What a copy of a dataset must carry with each block.

use std::fmt;

use super::dataset::{BLOCKS, CHECKPOINTS, DATA};
use crate::odf::{MetadataBlock, MetadataEvent, Multihash};

/// The folders of a dataset's content-addressed objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Block,
    Data,
    Checkpoint,
}

impl ObjectKind {
    /// The object's folder in the dataset layout.
    pub fn folder(self) -> &'static str {
        match self {
            ObjectKind::Block => BLOCKS,
            ObjectKind::Data => DATA,
            ObjectKind::Checkpoint => CHECKPOINTS,
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Block => "block",
            ObjectKind::Data => "data slice",
            ObjectKind::Checkpoint => "checkpoint",
        })
    }
}

/// A data slice or checkpoint a block refers to, with the size the block records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub kind: ObjectKind,
    pub hash: Multihash,
    pub size: u64,
}

/// The objects `block` adds to the dataset. A checkpoint carried over unchanged from the
/// block before (`prevCheckpoint` equal to it) belongs to an earlier block and is not listed.
pub fn objects_of(block: &MetadataBlock) -> Vec<ObjectRef> {
    let MetadataEvent::AddData(add) = &block.event else { return Vec::new() };
    let mut objects = Vec::new();
    if let Some(slice) = &add.new_data {
        objects.push(ObjectRef {
            kind: ObjectKind::Data,
            hash: slice.physical_hash.clone(),
            size: slice.size,
        });
    }
    if let Some(checkpoint) = &add.new_checkpoint
        && add.prev_checkpoint.as_ref() != Some(&checkpoint.physical_hash)
    {
        objects.push(ObjectRef {
            kind: ObjectKind::Checkpoint,
            hash: checkpoint.physical_hash.clone(),
            size: checkpoint.size,
        });
    }
    objects
}
