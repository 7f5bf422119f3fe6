//! The ODF model: metadata events and blocks, the DatasetSnapshot manifest, the FlatBuffers
//! block codec, hashes and dataset identities. Knows nothing of networks or ingestion.

pub mod arrow_schema;
pub mod chain;
pub mod codec;
pub mod dataset_id;
pub mod ddl;
pub mod events;
pub mod hash;
pub mod manifest_diff;
pub mod names;
pub mod polling;
pub mod schema;
pub mod snapshot;
pub mod source;
mod spelling;

pub use arrow_schema::{SchemaError, Vocab};
pub use chain::{ChainError, ChainState};
pub use codec::{DecodeError, block_hash, decode_block, encode_block};
pub use dataset_id::DatasetId;
pub use events::*;
pub use hash::Multihash;
pub use manifest_diff::{ManifestChanges, manifest_changes};
pub use names::{DatasetName, NameError, SourceName};
pub use schema::{DataField, DataSchema, DataType, TimeUnit};
pub use snapshot::{DatasetSnapshot, SnapshotError, parse_snapshots};
pub use source::{AddPushSource, MergeStrategy, ReadStep, Transform, TransformSql};
