//! Telling systemd how `serve` is doing (`Type=notify` in gateway/deploy/odf-gateway.service):
//! `READY=1` once every dataset has replayed its log and every listener is bound, the
//! watchdog's `WATCHDOG=1` while the pipeline is healthy, `STOPPING=1` at shutdown. Without
//! `NOTIFY_SOCKET` (not started by systemd) every call here does nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::pipeline::{Phase, Pipeline};

/// How often the start-up wait asks systemd for more time while logs are replayed (a long
/// log on a Pi's SD card can take minutes, beyond the unit's start timeout).
const REPLAY_TICK: Duration = Duration::from_secs(5);

/// Waits until no dataset is still opening or replaying its log, then says `READY=1` with
/// a status line; meanwhile asks systemd to extend its start timeout.
pub async fn announce_ready(pipeline: Arc<Pipeline>) {
    let mut extended: Option<Instant> = None;
    loop {
        let replaying = pipeline
            .datasets()
            .filter(|d| matches!(d.health().phase, Phase::Starting | Phase::Replaying))
            .count();
        if replaying == 0 {
            break;
        }
        if extended.is_none_or(|at| at.elapsed() >= REPLAY_TICK) {
            let status = format!("replaying the write-ahead logs of {replaying} dataset(s)");
            let extend = (3 * REPLAY_TICK).as_micros().min(u32::MAX as u128) as u32;
            notify(&[NotifyState::Status(&status), NotifyState::ExtendTimeoutUsec(extend)]);
            extended = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = pipeline.datasets().filter(|d| d.health().phase == Phase::Ready).count();
    let failed = pipeline.datasets().count() - ready + pipeline.failed().len();
    let status = match failed {
        0 => format!("serving {ready} dataset(s)"),
        n => format!("serving {ready} dataset(s); {n} could not be opened (see /readyz)"),
    };
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Pings systemd's watchdog at half its interval, if the unit has one, for as long as no
/// dataset that was serving has failed since (its log could not be synced: the gateway takes
/// nothing more for it until a restart, which the missing ping brings about). Datasets that
/// never opened do not stop the pings: a restart would not mend them.
pub async fn keep_watchdog(pipeline: Arc<Pipeline>) {
    let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) else {
        return;
    };
    let mut every = tokio::time::interval(timeout / 2);
    let mut served = BTreeSet::new();
    loop {
        every.tick().await;
        let mut failed_while_serving = None;
        for dataset in pipeline.datasets() {
            match dataset.health().phase {
                Phase::Ready => {
                    served.insert(dataset.name().to_owned());
                }
                Phase::Failed(reason) if served.contains(dataset.name()) => {
                    failed_while_serving = Some((dataset.name().to_owned(), reason));
                }
                _ => {}
            }
        }
        match failed_while_serving {
            None => notify(&[NotifyState::Watchdog]),
            Some((dataset, reason)) => {
                tracing::error!(dataset, "no more watchdog pings: {reason}");
                notify(&[NotifyState::Status(&format!("dataset '{dataset}' failed: {reason}"))]);
                return;
            }
        }
    }
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping: committing what was accepted")]);
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
