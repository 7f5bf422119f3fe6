//! Copies of a dataset elsewhere: an ODF repository on S3 (or another object store, or a
//! local folder) holding the same layout as the data directory (`refs/head`, `blocks/`,
//! `data/`, `checkpoints/`), the way kamu pulls and pushes them.
//!
//! - `remote.rs`: a URL (`file://`, `s3://`, `s3+http://`, `s3+https://`) and its objects.
//! - `push.rs`: sending what the remote lacks, referenced objects before the blocks that
//!   name them and `refs/head` last, so a reader never sees a head whose objects are missing.
//! - `pull.rs`: the reverse into the data directory, every object checked before the head moves.
//! - `schedule.rs`: `[[sync]]` in `serve`: pushes after commits, backoff while the link is down.
//! - `pace.rs`: an upload rate limit; `aws_profile.rs`: credentials from the AWS files.

mod aws_profile;
mod error;
mod pace;
mod pull;
mod push;
mod remote;
mod schedule;

pub use error::SyncError;
pub use pace::{Pace, Rate};
pub use pull::{PullReport, pull};
pub use push::{PushReport, push};
pub use remote::Remote;
pub use schedule::{DATASET_PLACEHOLDER, SyncBoard, SyncOptions, SyncStatus, run as run_sync};
