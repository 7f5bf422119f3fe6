//! Counts and latencies of a run, shared by every device task: live status lines while it
//! runs, a summary (text or JSON) at the end.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

pub struct Stats {
    /// Messages (publishes, requests) sent, first attempts only.
    pub messages: AtomicU64,
    /// Reports in those messages.
    pub reports: AtomicU64,
    /// Reports the gateway acknowledged.
    pub acked: AtomicU64,
    /// Malformed payloads sent on purpose, and how many of them were refused.
    pub malformed: AtomicU64,
    pub malformed_refused: AtomicU64,
    /// Messages sent again on purpose (a device that lost an answer).
    pub duplicates: AtomicU64,
    /// Good messages the gateway refused (they are not retried).
    pub refused: AtomicU64,
    /// Answers that said "busy, retry later" (503, 5.03, a closed connection for MQTT).
    pub busy: AtomicU64,
    /// Sends that got no answer (timeouts, connections lost); their reports are retried.
    pub failed: AtomicU64,
    /// Times a device went offline.
    pub offline: AtomicU64,
    latency: Mutex<Option<Histogram<u64>>>,
    /// The first reasons a good message was refused or failed, to show the user.
    reasons: Mutex<Vec<String>>,
}

impl Default for Stats {
    fn default() -> Stats {
        let zero = AtomicU64::default;
        Stats {
            messages: zero(),
            reports: zero(),
            acked: zero(),
            malformed: zero(),
            malformed_refused: zero(),
            duplicates: zero(),
            refused: zero(),
            busy: zero(),
            failed: zero(),
            offline: zero(),
            // Microseconds, 1 us to 10 min, 3 significant digits.
            latency: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).ok()),
            reasons: Mutex::default(),
        }
    }
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Send -> acknowledgement, for one message.
    pub fn record_latency(&self, latency: Duration) {
        if let Ok(mut histogram) = self.latency.lock()
            && let Some(histogram) = histogram.as_mut()
        {
            let _ = histogram.record((latency.as_micros() as u64).clamp(1, 600_000_000));
        }
    }

    pub fn note(&self, reason: String) {
        if let Ok(mut reasons) = self.reasons.lock()
            && reasons.len() < 10
            && !reasons.contains(&reason)
        {
            reasons.push(reason);
        }
    }

    pub fn summary(&self, elapsed: Duration, unsent: u64) -> Summary {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let latency = self.latency.lock().ok().and_then(|h| {
            h.as_ref().filter(|h| !h.is_empty()).map(|h| {
                let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                Latency { p50: ms(0.5), p90: ms(0.9), p99: ms(0.99), max: h.max() as f64 / 1000.0 }
            })
        });
        Summary {
            seconds,
            messages: get(&self.messages),
            reports: get(&self.reports),
            acked: get(&self.acked),
            unsent,
            malformed: get(&self.malformed),
            malformed_refused: get(&self.malformed_refused),
            duplicates: get(&self.duplicates),
            refused: get(&self.refused),
            busy: get(&self.busy),
            failed: get(&self.failed),
            offline: get(&self.offline),
            messages_per_s: get(&self.messages) as f64 / seconds,
            acked_per_s: get(&self.acked) as f64 / seconds,
            latency_ms: latency,
            reasons: self.reasons.lock().map(|r| r.clone()).unwrap_or_default(),
        }
    }

    /// One line for a status display.
    pub fn status(&self, elapsed: Duration) -> String {
        let s = self.summary(elapsed, 0);
        let p99 = s.latency_ms.as_ref().map_or("-".to_owned(), |l| format!("{:.1} ms", l.p99));
        format!(
            "{:>6.0}s  sent {}  acked {} ({:.0}/s)  malformed {}  dup {}  busy {}  failed {}  offline {}  ack p99 {p99}",
            s.seconds,
            s.reports,
            s.acked,
            s.acked_per_s,
            s.malformed,
            s.duplicates,
            s.busy,
            s.failed,
            s.offline
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub seconds: f64,
    pub messages: u64,
    pub reports: u64,
    pub acked: u64,
    /// Reports still waiting on their device when the run ended (offline, or never answered).
    pub unsent: u64,
    pub malformed: u64,
    pub malformed_refused: u64,
    pub duplicates: u64,
    pub refused: u64,
    pub busy: u64,
    pub failed: u64,
    pub offline: u64,
    pub messages_per_s: f64,
    pub acked_per_s: f64,
    pub latency_ms: Option<Latency>,
    pub reasons: Vec<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:.1} s: {} messages, {:.0} messages/s",
            self.seconds, self.messages, self.messages_per_s
        )?;
        writeln!(
            f,
            "reports: {} sent, {} acknowledged ({:.0}/s), {} unsent at the end",
            self.reports, self.acked, self.acked_per_s, self.unsent
        )?;
        writeln!(
            f,
            "malformed: {} sent, {} refused; duplicates sent: {}; devices offline: {} times",
            self.malformed, self.malformed_refused, self.duplicates, self.offline
        )?;
        writeln!(f, "errors: {} refused, {} busy, {} failed", self.refused, self.busy, self.failed)?;
        if let Some(l) = &self.latency_ms {
            writeln!(
                f,
                "ack latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
                l.p50, l.p90, l.p99, l.max
            )?;
        }
        for reason in &self.reasons {
            writeln!(f, "  e.g. {reason}")?;
        }
        Ok(())
    }
}
