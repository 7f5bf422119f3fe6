//! Sync in the background of `serve`: each `[[sync]]` entry pushes its datasets to their
//! remote after commits, at most every `interval`. A push that fails (the link is down, the
//! bucket unreachable) is tried again after a backoff that doubles up to `max_backoff`, with
//! jitter so that a fleet does not come back at once; it resumes where it stopped (objects
//! already sent are not sent again). Ingest never waits for it: it reads committed objects
//! only, takes no lock, and `serve` runs it on a thread of its own. What it knows is kept on
//! a board for `GET /datasets/{ds}` and in metrics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::SyncError;
use super::pace::{Pace, Rate};
use super::push::{PushReport, push};
use super::remote::Remote;
use crate::odf::{DatasetName, Multihash};
use crate::store::Dataset;

/// The placeholder of a sync URL that each dataset's name replaces.
pub const DATASET_PLACEHOLDER: &str = "{dataset}";

/// One `[[sync]]` entry, checked.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// `None`: every dataset of the gateway.
    pub datasets: Option<Vec<DatasetName>>,
    /// The remote URL, `{dataset}` standing for each dataset's name.
    pub url: String,
    pub interval: Duration,
    pub max_backoff: Duration,
    pub max_rate: Option<Rate>,
}

impl SyncOptions {
    pub fn url_for(&self, dataset: &DatasetName) -> String {
        self.url.replace(DATASET_PLACEHOLDER, dataset.as_str())
    }
}

/// Where a dataset's sync to one remote stands.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStatus {
    pub url: String,
    /// The remote's head as last seen (after a push, the local head pushed).
    pub remote_head: Option<String>,
    /// Local blocks the remote does not have yet, once its head is known.
    pub blocks_behind: Option<u64>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Failures in a row since the last success.
    pub failures: u32,
    pub next_attempt: Option<DateTime<Utc>>,
}

/// Every dataset's sync status, by dataset.
#[derive(Debug, Default)]
pub struct SyncBoard {
    statuses: Mutex<BTreeMap<DatasetName, Vec<SyncStatus>>>,
}

impl SyncBoard {
    /// The statuses of `dataset`'s remotes (none without sync).
    pub fn of(&self, dataset: &str) -> Vec<SyncStatus> {
        let statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        statuses.get(dataset).cloned().unwrap_or_default()
    }

    fn update(&self, dataset: &DatasetName, url: &str, change: impl FnOnce(&mut SyncStatus)) {
        let mut statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        let list = statuses.entry(dataset.clone()).or_default();
        let index = match list.iter().position(|s| s.url == url) {
            Some(i) => i,
            None => {
                list.push(SyncStatus { url: url.to_owned(), ..SyncStatus::default() });
                list.len() - 1
            }
        };
        change(&mut list[index]);
    }
}

/// A dataset's sync to the entry's remote, between attempts.
struct Track {
    name: DatasetName,
    root: PathBuf,
    url: String,
    /// Opened at the first attempt (reading the whole chain once), caught up afterwards.
    dataset: Option<Dataset>,
    /// Opened at the first push and kept, with its connections, while pushes succeed.
    remote: Option<Remote>,
    /// The local head the remote is known to hold.
    pushed: Option<Multihash>,
    /// The local dataset's blocks as last read.
    local_blocks: u64,
    remote_blocks: Option<u64>,
    failures: u32,
    due: Instant,
}

/// Runs one `[[sync]]` entry over `datasets` (name and folder) until `stop` turns true.
pub async fn run(
    options: SyncOptions,
    datasets: Vec<(DatasetName, PathBuf)>,
    board: Arc<SyncBoard>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tracks: Vec<Track> = datasets
        .into_iter()
        .map(|(name, root)| {
            let url = options.url_for(&name);
            board.update(&name, &url, |_| {});
            Track {
                name,
                root,
                url,
                dataset: None,
                remote: None,
                pushed: None,
                local_blocks: 0,
                remote_blocks: None,
                failures: 0,
                due: Instant::now(),
            }
        })
        .collect();
    loop {
        for track in &mut tracks {
            if Instant::now() < track.due {
                continue;
            }
            tokio::select! {
                () = attempt(track, &options, &board) => {}
                _ = stop.changed() => return,
            }
        }
        // Until the next track is due: an interval after a success, a backoff after a failure.
        let next = tracks.iter().map(|t| t.due).min().unwrap_or_else(|| Instant::now() + options.interval);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Pushes the track's dataset if it has blocks its remote lacks.
async fn attempt(track: &mut Track, options: &SyncOptions, board: &SyncBoard) {
    let result = push_if_moved(track, options.max_rate).await;
    if let Some(dataset) = &track.dataset {
        track.local_blocks = dataset.state().blocks;
    }
    let local_blocks = track.local_blocks;
    let labels = [("dataset", track.name.to_string()), ("remote", track.url.clone())];
    match result {
        Ok(None) => track.due = Instant::now() + options.interval,
        Ok(Some(report)) => {
            if !report.up_to_date() {
                tracing::info!(
                    dataset = %track.name, remote = %track.url, blocks = report.blocks, objects = report.uploaded,
                    bytes = report.bytes, "pushed"
                );
            }
            metrics::counter!("odf_sync_bytes_total", &labels).increment(report.bytes);
            metrics::gauge!("odf_sync_last_success_timestamp_seconds", &labels)
                .set(Utc::now().timestamp() as f64);
            track.pushed = Some(report.head.clone());
            track.remote_blocks = Some(local_blocks);
            track.failures = 0;
            track.due = Instant::now() + options.interval;
            board.update(&track.name, &track.url, |s| {
                s.remote_head = Some(report.head.to_string());
                s.last_success = Some(Utc::now());
                s.last_error = None;
                s.failures = 0;
                s.next_attempt = None;
            });
        }
        Err(e) => {
            track.failures = track.failures.saturating_add(1);
            let wait = backoff(options.interval, options.max_backoff, track.failures);
            track.due = Instant::now() + wait;
            metrics::counter!("odf_sync_failures_total", &labels).increment(1);
            let message = e.to_string();
            if e.is_transient() {
                tracing::warn!(dataset = %track.name, failures = track.failures, retry_in = ?wait, "sync: {message}");
            } else {
                tracing::error!(dataset = %track.name, failures = track.failures, retry_in = ?wait, "sync: {message}");
            }
            let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            board.update(&track.name, &track.url, |s| {
                s.last_error = Some(message);
                s.failures = track.failures;
                s.next_attempt = Some(next);
            });
        }
    }
    let behind = track.remote_blocks.map(|remote| local_blocks.saturating_sub(remote));
    if let Some(behind) = behind {
        metrics::gauge!("odf_sync_blocks_behind", &labels).set(behind as f64);
    }
    board.update(&track.name, &track.url, |s| s.blocks_behind = behind);
}

/// Opens the dataset the first time, then takes in what was committed since. Read right
/// here: `serve` runs the sync on a thread of its own, where blocking holds up nobody.
fn caught_up(track: &mut Track) -> Result<(), SyncError> {
    match &mut track.dataset {
        Some(dataset) => drop(dataset.catch_up()?),
        None => track.dataset = Some(Dataset::open(&track.root, track.name.clone())?),
    }
    Ok(())
}

/// Pushes the dataset if its head moved since the last push; `None` if it did not.
async fn push_if_moved(track: &mut Track, rate: Option<Rate>) -> Result<Option<PushReport>, SyncError> {
    caught_up(track)?;
    let Some(dataset) = track.dataset.as_ref() else { return Ok(None) };
    if dataset.head().is_none() || dataset.head() == track.pushed.as_ref() {
        return Ok(None);
    }
    if track.remote.is_none() {
        track.remote = Some(Remote::open(&track.url, true)?);
    }
    let Some(remote) = track.remote.as_ref() else { return Ok(None) };
    // Lookups only where a push may have been cut short: the first from this process, and
    // any after a failure.
    let look_first = track.pushed.is_none() || track.failures > 0;
    let pushed = push(dataset, remote, look_first, &mut Pace::new(rate), &mut |_, _| {}).await;
    if pushed.is_err() {
        // Opened afresh next time: new connections, a folder remote's folders made again
        // (a disk remounted).
        track.remote = None;
    }
    pushed.map(Some)
}

/// `interval × 2^(failures-1)`, at most `max`, then a random part of up to a half taken
/// off, so that gateways that lost the link together do not all come back together.
fn backoff(interval: Duration, max: Duration, failures: u32) -> Duration {
    let doubled = interval.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let capped = doubled.min(max.max(interval));
    let mut bytes = [0u8; 2];
    let _ = getrandom::fill(&mut bytes);
    let fraction = f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX);
    capped.mul_f64(1.0 - fraction / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let (interval, max) = (Duration::from_secs(10), Duration::from_secs(300));
        for _ in 0..100 {
            let first = backoff(interval, max, 1);
            assert!(first >= Duration::from_secs(5) && first <= interval, "{first:?}");
            let third = backoff(interval, max, 3);
            assert!(third >= Duration::from_secs(20) && third <= Duration::from_secs(40), "{third:?}");
            let late = backoff(interval, max, 30);
            assert!(late >= Duration::from_secs(150) && late <= max, "{late:?}");
        }
    }

    #[test]
    fn the_board_keeps_one_status_per_dataset_and_remote() {
        let board = SyncBoard::default();
        let gps: DatasetName = "gps".parse().unwrap();
        board.update(&gps, "s3://a/gps/", |s| s.failures = 2);
        board.update(&gps, "s3://b/gps/", |_| {});
        board.update(&gps, "s3://a/gps/", |s| s.blocks_behind = Some(3));
        let statuses = board.of("gps");
        assert_eq!(statuses.len(), 2);
        assert_eq!((statuses[0].failures, statuses[0].blocks_behind), (2, Some(3)));
        assert!(board.of("other").is_empty());
    }
}
