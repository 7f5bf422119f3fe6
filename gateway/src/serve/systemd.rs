//! Telling systemd how `serve` is doing (`Type=notify` in gateway/deploy/odf-gateway.service):
//! `READY=1` once every dataset has replayed its log and every listener is bound, the
//! watchdog's `WATCHDOG=1` while the pipeline is healthy, `STOPPING=1` at shutdown. Without
//! `NOTIFY_SOCKET` (not started by systemd) every call here does nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pipeline::{Phase, Pipeline};

/// How often the start asks systemd for more time (opening datasets and their key indexes,
/// replaying a long log on a Pi's SD card can take minutes, beyond the unit's start timeout).
const START_TICK: Duration = Duration::from_secs(5);

/// Until aborted (once `READY=1` is said), asks systemd every few seconds to extend its start
/// timeout, with what the start is doing.
pub async fn extend_start_timeout(doing: watch::Receiver<String>) {
    let extend = (3 * START_TICK).as_micros().min(u128::from(u32::MAX)) as u32;
    loop {
        let status = doing.borrow().clone();
        notify(&[NotifyState::Status(&status), NotifyState::ExtendTimeoutUsec(extend)]);
        tokio::time::sleep(START_TICK).await;
    }
}

/// Waits until no dataset is still opening or replaying its log (saying so through `doing`),
/// stops `starting` (the start timeout's extensions), then says `READY=1` with a status line.
pub async fn announce_ready(pipeline: Arc<Pipeline>, doing: watch::Sender<String>, starting: JoinHandle<()>) {
    loop {
        let replaying = pipeline
            .datasets()
            .filter(|d| matches!(d.health().phase, Phase::Starting | Phase::Replaying))
            .count();
        if replaying == 0 {
            break;
        }
        doing.send_replace(format!("replaying the write-ahead logs of {replaying} dataset(s)"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    starting.abort();
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
                    served.insert(dataset.name().to_string());
                }
                Phase::Failed(reason) if served.contains(dataset.name().as_str()) => {
                    failed_while_serving = Some((dataset.name().to_string(), reason));
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
