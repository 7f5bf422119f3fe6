//! An upload rate limit: the bytes sent so far never run ahead of `rate × elapsed time`
//! (measured from the first byte), so the average over a push holds the limit on a shared
//! uplink. The object store sends each part of an upload at link speed; the pace is kept
//! by feeding it.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub u64);

impl FromStr for Rate {
    type Err = String;

    /// `65536`, `64KiB`, `64 KiB/s`, `1MB`, `2M`: binary (Ki, Mi, Gi) or decimal (k, M, G)
    /// multiples of bytes per second.
    fn from_str(text: &str) -> Result<Rate, String> {
        let bad = || format!("'{text}' is not a rate such as 256KiB (bytes per second)");
        let trimmed = text.trim();
        let trimmed = trimmed.strip_suffix("/s").unwrap_or(trimmed).trim_end();
        let trimmed = trimmed.strip_suffix(['B', 'b']).unwrap_or(trimmed);
        let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let factor: u64 = match unit.trim() {
            "" => 1,
            "k" | "K" => 1_000,
            "Ki" | "KI" | "ki" => 1 << 10,
            "M" | "m" => 1_000_000,
            "Mi" | "MI" | "mi" => 1 << 20,
            "G" | "g" => 1_000_000_000,
            "Gi" | "GI" | "gi" => 1 << 30,
            _ => return Err(bad()),
        };
        match number.checked_mul(factor) {
            Some(0) => Err(format!("'{text}': a rate must be above 0 (leave it out for no limit)")),
            Some(rate) => Ok(Rate(rate)),
            None => Err(bad()),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", humansize::format_size(self.0, humansize::BINARY))
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

    /// Bytes counted so far.
    pub fn bytes(&self) -> u64 {
        self.sent
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
        assert_eq!(parse("2Mi"), Ok(2 << 20));
        assert_eq!(parse("5k"), Ok(5000));
        assert!(parse("0").is_err());
        assert!(parse("fast").is_err());
        assert!(parse("12XB").is_err());
        assert!(parse("99999999999999999999Gi").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn uploads_wait_for_the_rate() {
        let mut pace = Pace::new(Some(Rate(1000)));
        let start = tokio::time::Instant::now();
        pace.sent(500).await;
        pace.sent(1500).await;
        assert!(start.elapsed() >= Duration::from_secs(2), "2,000 bytes at 1,000 B/s take 2 s");
        assert_eq!(pace.bytes(), 2000);
    }
}
