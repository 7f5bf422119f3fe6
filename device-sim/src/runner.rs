//! A fleet of simulated trackers, one task each, sending to a gateway: in real time with
//! the field's behaviour (`device-sim run`), or as fast as possible or at a target rate
//! (`device-sim load`). Each task owns its tracker, its connection and its record of what
//! was acknowledged; the counts are shared for the status lines and the summary.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::gps::{self, Report, Tracker, Vendor};
use crate::movement::Area;
use crate::record::{DeviceRecord, RunRecord, SeqSet};
use crate::send::{Message, Outcome, Sender, Target};
use crate::stats::{Stats, Summary};

/// How fast the devices report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Each at its vendor's period (with jitter), as in the field.
    RealTime,
    /// Each as soon as its previous message is answered.
    AsFastAsPossible,
    /// All together this many reports a second, spread evenly over the devices.
    Rate(f64),
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// `run` or `load`, for the record.
    pub mode: &'static str,
    pub vendors: Vec<Vendor>,
    pub devices: usize,
    pub seed: u64,
    pub area: Area,
    pub pace: Pace,
    /// The run ends after this long...
    pub duration: Option<Duration>,
    /// ... or once this many reports (all devices together) are made and answered.
    pub messages: Option<u64>,
    /// Replaces every vendor's reporting period (its jitter stays).
    pub period: Option<Duration>,
    /// Chance per message that a malformed payload goes out beside it.
    pub malformed: f64,
    /// Chance per acknowledged message that the device sends it again.
    pub duplicates: f64,
    /// Chance per report that a device goes out of coverage for 5 to 30 periods (real time).
    pub offline: f64,
    /// vendorC sends SenML CBOR packs instead of CBOR maps.
    pub senml: bool,
    pub record: PathBuf,
    /// Status lines this often when stderr is not a terminal (a progress bar when it is);
    /// none: no status at all.
    pub status_every: Option<Duration>,
}

impl Plan {
    fn period(&self, vendor: Vendor) -> (Duration, f64) {
        let (period, jitter) = vendor.period();
        (self.period.unwrap_or(period), jitter)
    }
}

/// Runs the fleet until the duration is over, the messages are sent, or Ctrl-C; writes the
/// run record; returns the summary.
pub async fn run(plan: Plan, target: Target) -> anyhow::Result<Summary> {
    anyhow::ensure!(!plan.vendors.is_empty(), "no vendors to simulate");
    anyhow::ensure!(plan.devices > 0, "--devices must be at least 1");
    let plan = Arc::new(plan);
    let target = Arc::new(target);
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let earlier = RunRecord::next_seqs(&plan.record);
    let started = Instant::now();
    let started_at = Utc::now();

    let mut tasks = Vec::new();
    for i in 0..plan.devices {
        let vendor = plan.vendors[i % plan.vendors.len()];
        let index = i / plan.vendors.len();
        let first_seq = earlier.get(&vendor.device_id(index)).copied().unwrap_or(1);
        let tracker = Tracker::new(vendor, index, plan.seed, plan.area, first_seq);
        let quota =
            plan.messages.map(|m| m / plan.devices as u64 + u64::from((i as u64) < m % plan.devices as u64));
        let (plan, target, stats, stop) = (plan.clone(), target.clone(), stats.clone(), stop.clone());
        tasks.push(tokio::spawn(device(tracker, quota, plan, target, stats, stop)));
    }

    let watcher = {
        let (stop, duration) = (stop.clone(), plan.duration);
        tokio::spawn(async move {
            let over = async {
                match duration {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = over => {}
                _ = tokio::signal::ctrl_c() => eprintln!("stopping: the messages in flight get their answers"),
                _ = stop.cancelled() => {}
            }
            stop.cancel();
        })
    };
    let status = tokio::spawn(show_status(stats.clone(), plan.clone(), started, stop.clone()));

    let mut devices = BTreeMap::new();
    let mut unsent = 0;
    for task in tasks {
        let (id, record, left) = task.await?;
        devices.insert(id, record);
        unsent += left;
    }
    let elapsed = started.elapsed();
    stop.cancel();
    let _ = watcher.await;
    let _ = status.await;

    let record = RunRecord {
        mode: plan.mode.to_owned(),
        started: started_at,
        finished: Utc::now(),
        dataset: target.dataset.clone(),
        host: target.host.clone(),
        http_port: target.http_port,
        devices,
    };
    record.save(&plan.record)?;
    Ok(stats.summary(elapsed, unsent))
}

async fn show_status(stats: Arc<Stats>, plan: Arc<Plan>, started: Instant, stop: CancellationToken) {
    let Some(status_every) = plan.status_every else { return };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = match plan.messages {
            Some(m) => indicatif::ProgressBar::new(m),
            None => indicatif::ProgressBar::new_spinner(),
        };
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
        {
            bar.set_style(style);
        }
        bar
    });
    let every = if bar.is_some() { Duration::from_millis(200) } else { status_every };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => break,
        }
        let line = stats.status(started.elapsed());
        match &bar {
            Some(bar) => {
                bar.set_position(stats.acked.load(std::sync::atomic::Ordering::Relaxed));
                bar.set_message(line);
            }
            None => eprintln!("{line}"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// One tracker's life: measure, keep what could not be sent, send when in coverage.
/// Returns its id, its record and how many reports it still held at the end.
async fn device(
    mut tracker: Tracker,
    quota: Option<u64>,
    plan: Arc<Plan>,
    target: Arc<Target>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> (String, DeviceRecord, u64) {
    let vendor = tracker.vendor;
    let (period, jitter) = plan.period(vendor);
    let mut sender = Sender::new(&target, vendor, &tracker.id);
    let mut record = DeviceRecord {
        source: vendor.source().to_owned(),
        first_seq: tracker.next_seq(),
        ..DeviceRecord::default()
    };
    let mut sent = SeqSet::default();
    let mut backlog: VecDeque<Report> = VecDeque::new();
    let mut made = 0u64;
    let mut offline_until: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    let mut drain_deadline: Option<Instant> = None;
    let spacing = match plan.pace {
        Pace::Rate(rate) => Some(Duration::from_secs_f64(plan.devices as f64 / rate.max(1e-6))),
        _ => None,
    };
    if plan.pace == Pace::RealTime {
        // Trackers switched on at random moments: their reports do not come in lockstep.
        let phase = period.mul_f64(tracker.random().uniform());
        sender.idle(phase, &stop).await;
    }
    let mut last = Instant::now();
    let mut next_report = Instant::now();

    while !stop.is_cancelled() {
        let quota_done = quota.is_some_and(|q| made >= q);
        if quota_done {
            // Everything made: only what is left in the backlog is sent, for a while.
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + target.timeout * 4);
            if backlog.is_empty() || Instant::now() > deadline {
                break;
            }
        } else {
            let seconds = match plan.pace {
                Pace::RealTime => last.elapsed().as_secs_f64(),
                _ => period.as_secs_f64(),
            };
            last = Instant::now();
            if let Some(report) = tracker.measure(seconds, Utc::now()) {
                backlog.push_back(report);
                made += 1;
            }
        }

        let in_coverage = match offline_until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                offline_until = None;
                true
            }
            None if plan.pace == Pace::RealTime && tracker.random().chance(plan.offline) => {
                let periods = tracker.random().between((5.0, 30.0));
                offline_until = Some(Instant::now() + period.mul_f64(periods));
                Stats::add(&stats.offline, 1);
                sender.disconnect().await;
                false
            }
            None => true,
        };

        if in_coverage && !backlog.is_empty() {
            if tracker.random().chance(plan.malformed)
                && let Some(sample) = backlog.back()
            {
                let kind = (tracker.random().uniform() * 2.0) as u8;
                let message = Message {
                    payload: gps::malformed(vendor, sample, kind),
                    content_type: gps::content_type(vendor),
                    seqs: vec![],
                };
                Stats::add(&stats.malformed, 1);
                if let Outcome::Refused(_) = sender.send(&message, &stop).await {
                    Stats::add(&stats.malformed_refused, 1);
                }
            }
            let drained =
                drain(&mut sender, &mut backlog, &mut record, &mut sent, &mut tracker, &plan, &stats, &stop)
                    .await;
            if drained {
                backoff = Duration::from_millis(100);
            } else if plan.pace != Pace::RealTime {
                sender.idle(backoff, &stop).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }

        match (plan.pace, spacing) {
            (Pace::RealTime, _) => {
                let wait = period.mul_f64(1.0 + jitter * (2.0 * tracker.random().uniform() - 1.0));
                sender.idle(wait, &stop).await;
            }
            (_, Some(spacing)) => {
                next_report += spacing;
                sender.idle(next_report.saturating_duration_since(Instant::now()), &stop).await;
            }
            _ => {}
        }
    }
    sender.disconnect().await;
    record.next_seq = tracker.next_seq();
    record.unacked = SeqSet(sent.0.difference(&record.acked.0).copied().collect());
    (tracker.id.clone(), record, backlog.len() as u64)
}

/// Sends the backlog, oldest first, in messages of up to the vendor's batch size (a single
/// report alone). Returns false when a message got no answer (it stays in the backlog).
#[allow(clippy::too_many_arguments)]
async fn drain(
    sender: &mut Sender,
    backlog: &mut VecDeque<Report>,
    record: &mut DeviceRecord,
    sent: &mut SeqSet,
    tracker: &mut Tracker,
    plan: &Plan,
    stats: &Stats,
    stop: &CancellationToken,
) -> bool {
    let vendor = tracker.vendor;
    while !backlog.is_empty() {
        let take = backlog.len().min(vendor.max_batch());
        let reports = &backlog.make_contiguous()[..take];
        let (payload, content_type) = match vendor {
            Vendor::C if plan.senml => (gps::encode_senml(reports), "application/senml+cbor"),
            _ => (gps::encode(vendor, reports), gps::content_type(vendor)),
        };
        let message = Message { payload, content_type, seqs: reports.iter().map(|r| r.seq).collect() };
        Stats::add(&stats.messages, 1);
        Stats::add(&stats.reports, message.seqs.iter().filter(|s| !sent.contains(**s)).count() as u64);
        message.seqs.iter().for_each(|s| sent.insert(*s));
        let started = Instant::now();
        match sender.send(&message, stop).await {
            Outcome::Acked => {
                stats.record_latency(started.elapsed());
                Stats::add(&stats.acked, take as u64);
                message.seqs.iter().for_each(|s| record.acked.insert(*s));
                backlog.drain(..take);
                if tracker.random().chance(plan.duplicates) {
                    Stats::add(&stats.duplicates, 1);
                    let _ = sender.send_again(&message, stop).await;
                }
            }
            Outcome::Refused(reason) => {
                // Resending would not help: these reports are lost, and not counted as acked.
                Stats::add(&stats.refused, 1);
                stats.note(format!("{}: refused: {reason}", tracker.id));
                backlog.drain(..take);
            }
            Outcome::Busy(wait) => {
                Stats::add(&stats.busy, 1);
                sender.idle(wait, stop).await;
                if stop.is_cancelled() {
                    return false;
                }
            }
            Outcome::Failed(reason) => {
                Stats::add(&stats.failed, 1);
                stats.note(format!("{}: {reason}", tracker.id));
                return false;
            }
        }
    }
    true
}
