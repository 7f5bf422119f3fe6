//! GPS trackers: a fleet of devices, each moving with its own speed and heading, reporting at
//! a fixed interval.

use std::fmt::Write as _;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use ciborium::Value;

/// The manufacturers the `gps` dataset takes data from, by their payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Vendor {
    /// NdJson, RFC 3339 times, speed in km/h.
    A,
    /// CSV with a header line, epoch milliseconds, speed in knots.
    B,
    /// CBOR maps with short keys, epoch seconds, speed in m/s.
    C,
}

/// One position report, in common units.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub device: String,
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub lat: f64,
    pub long: f64,
    pub speed_kmh: f64,
    pub heading: f64,
    pub battery: u8,
}

/// A small xorshift generator: deterministic, no dependencies, plenty for traffic.
struct Random(u64);

impl Random {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Tracker {
    device: String,
    seq: u64,
    lat: f64,
    long: f64,
    speed_kmh: f64,
    heading: f64,
    battery: f64,
}

/// A fleet of trackers reporting every `interval` from `start`.
pub struct Fleet {
    trackers: Vec<Tracker>,
    random: Random,
    time: DateTime<Utc>,
    interval: Duration,
}

impl Fleet {
    pub fn new(vendor: Vendor, devices: usize, seed: u64, start: DateTime<Utc>, interval: Duration) -> Fleet {
        let mut random = Random(seed.max(1));
        let trackers = (0..devices)
            .map(|i| Tracker {
                device: match vendor {
                    Vendor::A => format!("A-{i:04}"),
                    Vendor::B => format!("3569380356{i:05}"),
                    Vendor::C => format!("C-{i:04}"),
                },
                seq: 0,
                lat: 49.20 + random.next() * 0.1,
                long: -123.20 + random.next() * 0.1,
                speed_kmh: random.next() * 60.0,
                heading: random.next() * 360.0,
                battery: 60.0 + random.next() * 40.0,
            })
            .collect();
        Fleet { trackers, random, time: start, interval }
    }

    /// One report from every tracker, then time moves on by one interval.
    pub fn tick(&mut self) -> Vec<Report> {
        let seconds = self.interval.num_milliseconds() as f64 / 1000.0;
        let time = self.time;
        self.time += self.interval;
        let random = &mut self.random;
        self.trackers
            .iter_mut()
            .map(|t| {
                t.heading = (t.heading + (random.next() - 0.5) * 30.0).rem_euclid(360.0);
                t.speed_kmh = (t.speed_kmh + (random.next() - 0.5) * 10.0).clamp(0.0, 110.0);
                let metres = t.speed_kmh / 3.6 * seconds;
                t.lat += metres * t.heading.to_radians().cos() / 111_320.0;
                t.long += metres * t.heading.to_radians().sin() / (111_320.0 * t.lat.to_radians().cos());
                t.battery = (t.battery - 0.01).max(5.0);
                t.seq += 1;
                Report {
                    device: t.device.clone(),
                    seq: t.seq,
                    time,
                    lat: t.lat,
                    long: t.long,
                    speed_kmh: t.speed_kmh,
                    heading: t.heading,
                    battery: t.battery as u8,
                }
            })
            .collect()
    }
}

/// Reports in a vendor's payload format: NdJson lines, CSV with a header, or a CBOR array.
pub fn encode(vendor: Vendor, reports: &[Report]) -> Vec<u8> {
    match vendor {
        Vendor::A => reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "device_id": r.device, "seq": r.seq,
                    "t": r.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                    "lat": r.lat, "lon": r.long, "speed_kmh": r.speed_kmh,
                    "heading": r.heading, "battery_pct": r.battery,
                })
                .to_string()
                    + "\n"
            })
            .collect::<String>()
            .into_bytes(),
        Vendor::B => {
            let mut csv = String::from("imei,ts,latitude,longitude,speed_knots,course,battery,counter\n");
            for r in reports {
                let _ = writeln!(
                    csv,
                    "{},{},{:.6},{:.6},{:.2},{:.1},{},{}",
                    r.device,
                    r.time.timestamp_millis(),
                    r.lat,
                    r.long,
                    r.speed_kmh / 1.852,
                    r.heading,
                    r.battery,
                    r.seq
                );
            }
            csv.into_bytes()
        }
        Vendor::C => {
            let maps = reports
                .iter()
                .map(|r| {
                    let entry = |k: &str, v: Value| (Value::Text(k.into()), v);
                    Value::Map(vec![
                        entry("i", Value::Text(r.device.clone())),
                        entry("n", r.seq.into()),
                        entry("ts", r.time.timestamp().into()),
                        entry("la", Value::Float(r.lat)),
                        entry("lo", Value::Float(r.long)),
                        entry("v", Value::Float(r.speed_kmh / 3.6)),
                        entry("h", (r.heading as u16).into()),
                        entry("b", r.battery.into()),
                    ])
                })
                .collect();
            let mut bytes = Vec::new();
            // Writing into a Vec cannot fail.
            let _ = ciborium::into_writer(&Value::Array(maps), &mut bytes);
            bytes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Fleet {
        Fleet::new(
            Vendor::A,
            3,
            7,
            DateTime::from_timestamp(1_767_268_800, 0).unwrap(),
            Duration::seconds(10),
        )
    }

    #[test]
    fn the_same_seed_gives_the_same_traffic() {
        assert_eq!(fleet().tick(), fleet().tick());
    }

    #[test]
    fn trackers_count_and_move() {
        let mut fleet = fleet();
        let first = fleet.tick();
        let second = fleet.tick();
        assert_eq!(first.len(), 3);
        assert_eq!(second[0].seq, 2);
        assert_eq!(second[0].time - first[0].time, Duration::seconds(10));
        let moved = (second[0].lat - first[0].lat).abs() + (second[0].long - first[0].long).abs();
        assert!(moved < 0.01, "at most a few hundred metres in 10 s");
    }

    #[test]
    fn payloads_in_each_vendor_format() {
        let reports = fleet().tick();
        let ndjson = String::from_utf8(encode(Vendor::A, &reports)).unwrap();
        assert_eq!(ndjson.lines().count(), 3);
        let first: serde_json::Value = serde_json::from_str(ndjson.lines().next().unwrap()).unwrap();
        assert_eq!(first["device_id"], "A-0000");
        let csv = String::from_utf8(encode(Vendor::B, &reports)).unwrap();
        assert!(csv.starts_with("imei,ts,latitude,longitude,speed_knots,course,battery,counter\n"));
        let cbor: Value = ciborium::from_reader(encode(Vendor::C, &reports).as_slice()).unwrap();
        assert_eq!(cbor.as_array().unwrap().len(), 3);
    }
}
