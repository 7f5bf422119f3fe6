//! An upload rate limit: the bytes sent so far never run ahead of `rate × elapsed time`
//! (measured from the first byte), so the average over a push holds the limit on a shared
//! uplink. The object store sends each part of an upload at link speed; the pace is kept
//! by feeding it.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::config::Size;

/// Bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub u64);

impl FromStr for Rate {
    type Err = String;

    /// A size as the configuration writes them (`65536`, `256 KiB`, `1MB`), with an
    /// optional `/s`.
    fn from_str(text: &str) -> Result<Rate, String> {
        let trimmed = text.trim();
        let size = Size::parse(trimmed.strip_suffix("/s").unwrap_or(trimmed))?;
        if size.0 == 0 {
            return Err(format!("'{text}': a rate must be above 0 (leave it out for no limit)"));
        }
        Ok(Rate(size.0))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", Size(self.0))
    }
}

/// Keeps uploads within a rate; without one it only counts.
#[derive(Debug)]
pub struct Pace {
    rate: Option<Rate>,
    started: Option<Instant>,
    sent: u64,
}

impl Pace {
    pub fn new(rate: Option<Rate>) -> Pace {
        Pace { rate, started: None, sent: 0 }
    }

    /// Counts `bytes` as sent and waits until the rate allows them.
    pub async fn sent(&mut self, bytes: usize) {
        let started = *self.started.get_or_insert_with(Instant::now);
        self.sent = self.sent.saturating_add(bytes as u64);
        let Some(Rate(rate)) = self.rate else { return };
        let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units() {
        let parse = |s: &str| s.parse::<Rate>().map(|r| r.0);
        assert_eq!(parse("65536"), Ok(65536));
        assert_eq!(parse("64KiB"), Ok(65536));
        assert_eq!(parse("64 KiB/s"), Ok(65536));
        assert_eq!(parse("1MB"), Ok(1_000_000));
        assert_eq!(Rate(2 << 20).to_string().parse::<Rate>(), Ok(Rate(2 << 20)));
        assert!(parse("0").is_err());
        assert!(parse("fast").is_err());
        assert!(parse("12XB").is_err());
    }

    #[tokio::test]
    async fn uploads_wait_for_the_rate() {
        let mut pace = Pace::new(Some(Rate(100_000)));
        let start = std::time::Instant::now();
        pace.sent(5_000).await;
        pace.sent(15_000).await;
        // A lower bound only: a sleep is never shorter than asked.
        assert!(start.elapsed() >= Duration::from_millis(200), "20 kB at 100 kB/s take 0.2 s");
        assert_eq!(pace.sent, 20_000);
    }
}
