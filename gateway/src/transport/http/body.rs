//! Request bodies, bounded in time and memory.
//!
//! Time: every body gets `grace`, plus one second for each `min_rate` bytes it has
//! delivered, and never more than `timeout` in all (Apache's `RequestReadTimeout` rule), so
//! a body trickled a byte at a time is cut within the grace while a large one on a slow
//! link still arrives. Memory: the bytes of bodies being received are reserved, as they
//! arrive, against one budget shared by every connection; a body that does not fit is
//! refused (503 with Retry-After) instead of buffered.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// How long a body may take.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    /// What every body gets before it must show progress.
    pub grace: Duration,
    /// Bytes a second that earn one more second; 0: only `timeout` counts.
    pub min_rate: u64,
    /// The longest any body may take.
    pub timeout: Duration,
}

impl BodyPace {
    fn deadline(&self, started: Instant, received: u64) -> Instant {
        let earned = match self.min_rate {
            0 => self.timeout,
            rate => self.grace + Duration::from_secs_f64(received as f64 / rate as f64),
        };
        started + earned.min(self.timeout)
    }
}

/// A body that did not keep up with its pace.
#[derive(Debug, Clone)]
pub struct TooSlow {
    pub received: u64,
    pub after: Duration,
}

impl fmt::Display for TooSlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body came too slowly ({} bytes in {:.1} s); see http.body_timeout and http.body_min_rate",
            self.received,
            self.after.as_secs_f64()
        )
    }
}

impl std::error::Error for TooSlow {}

/// A request body that fails with `TooSlow` once it falls behind its pace.
pub struct PacedBody {
    inner: Incoming,
    pace: BodyPace,
    started: Instant,
    received: u64,
    timer: Pin<Box<Sleep>>,
}

impl PacedBody {
    pub fn new(inner: Incoming, pace: BodyPace) -> PacedBody {
        let started = Instant::now();
        let timer = Box::pin(tokio::time::sleep_until(pace.deadline(started, 0)));
        PacedBody { inner, pace, started, received: 0, timer }
    }
}

impl Body for PacedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let deadline = this.pace.deadline(this.started, this.received);
                    this.timer.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let slow = TooSlow { received: this.received, after: this.started.elapsed() };
                    Poll::Ready(Some(Err(slow.into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The bytes all request bodies being received may hold together.
pub struct BodyBudget {
    limit: usize,
    held: AtomicUsize,
}

impl BodyBudget {
    pub fn new(limit: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget { limit, held: AtomicUsize::new(0) })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// An empty reservation, to grow as bytes arrive.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation { budget: self.clone(), bytes: 0 }
    }

    fn take(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }
}

/// Bytes held against the budget until dropped.
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Reservation {
    /// Holds `total` bytes in all (never fewer than held already); false if they do not fit.
    fn hold(&mut self, total: usize) -> bool {
        let more = total.saturating_sub(self.bytes);
        if more > 0 && !self.budget.take(more) {
            return false;
        }
        self.bytes += more;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is over the limit of {limit} bytes")]
    TooBig { limit: usize },
    #[error(
        "the gateway is receiving {limit} bytes of request bodies already (http.max_body_buffer); retry shortly"
    )]
    Busy { limit: usize },
    #[error(transparent)]
    TooSlow(TooSlow),
    #[error("cannot read the body: {0}")]
    Read(String),
}

/// The whole body, at most `limit` bytes, its memory held against `budget` as it grows
/// (the reservation goes with it: drop it once the bytes are handed on). On an error, what
/// is left of the body is still there, to be drained.
pub async fn collect(
    body: &mut axum::body::Body,
    limit: usize,
    announced: Option<usize>,
    budget: &Arc<BodyBudget>,
) -> Result<(Vec<u8>, Reservation), BodyError> {
    if announced.is_some_and(|length| length > limit) {
        return Err(BodyError::TooBig { limit });
    }
    // Memory is taken (and reserved) as bytes arrive, never on the strength of a
    // Content-Length alone: a client that announces a big body and stalls holds nothing.
    let largest = announced.unwrap_or(limit);
    let mut held = budget.reservation();
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(read_error).inspect_err(|e| {
            if matches!(e, BodyError::TooSlow(_)) {
                metrics::counter!("odf_http_bodies_refused_total", "reason" => "too_slow").increment(1);
            }
        })?;
        let Ok(data) = frame.into_data() else { continue };
        let needed = bytes.len() + data.len();
        if needed > limit {
            return Err(BodyError::TooBig { limit });
        }
        if needed > bytes.capacity() {
            // Grown the way a Vec grows (never past the announced length), with the memory
            // reserved before it is taken.
            let capacity = (bytes.capacity() * 2).min(largest).max(needed);
            if !held.hold(capacity) {
                metrics::counter!("odf_http_bodies_refused_total", "reason" => "buffer_full").increment(1);
                return Err(BodyError::Busy { limit: budget.limit() });
            }
            bytes.reserve_exact(capacity - bytes.len());
        }
        bytes.extend_from_slice(&data);
    }
    Ok((bytes, held))
}

/// Reads and drops what is left of a refused request's body (up to `limit` bytes, for at
/// most `within`), so that the client reads the answer rather than a reset connection.
pub async fn drain(body: axum::body::Body, limit: usize, within: Duration) {
    let discard = async move {
        let mut body = body;
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen > limit {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(within, discard).await;
}

fn read_error(error: axum::Error) -> BodyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(slow) = e.downcast_ref::<TooSlow>() {
            return BodyError::TooSlow(slow.clone());
        }
        source = e.source();
    }
    BodyError::Read(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_earns_time_by_its_bytes_up_to_the_timeout() {
        let pace =
            BodyPace { grace: Duration::from_secs(10), min_rate: 500, timeout: Duration::from_secs(60) };
        let start = Instant::now();
        assert_eq!(pace.deadline(start, 0), start + Duration::from_secs(10));
        assert_eq!(pace.deadline(start, 5_000), start + Duration::from_secs(20));
        assert_eq!(pace.deadline(start, 1 << 20), start + Duration::from_secs(60));
        let no_rate = BodyPace { min_rate: 0, ..pace };
        assert_eq!(no_rate.deadline(start, 0), start + Duration::from_secs(60));
    }

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        assert!(a.hold(60));
        assert!(!b.hold(50), "60 + 50 is over 100");
        assert!(b.hold(40));
        assert!(a.hold(60), "holding what is held already takes nothing more");
        assert_eq!(budget.held(), 100);
        drop(a);
        assert_eq!(budget.held(), 40);
        assert!(b.hold(100));
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}
