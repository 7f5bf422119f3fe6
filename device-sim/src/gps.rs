//! GPS trackers of the three vendors the `gps` dataset takes data from (`schemas/gps.yaml`):
//! who they are, how often they report, and each vendor's payload format and units.

use std::fmt::Write as _;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use ciborium::Value;

use crate::movement::{Area, Mode, Mover, Random};

/// The manufacturers the `gps` dataset takes data from, by their payload format.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Vendor {
    /// NdJson over MQTT, RFC 3339 times, speed in km/h.
    A,
    /// CSV with a header line over HTTP, epoch milliseconds, speed in knots.
    B,
    /// CBOR maps with short keys over CoAP, epoch seconds, speed in m/s.
    C,
}

/// How a vendor's trackers reach the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Mqtt,
    Http,
    Coap,
}

impl Vendor {
    /// The push source of the `gps` dataset this vendor writes to.
    pub fn source(self) -> &'static str {
        match self {
            Vendor::A => "vendorA",
            Vendor::B => "vendorB",
            Vendor::C => "vendorC",
        }
    }

    pub fn transport(self) -> Transport {
        match self {
            Vendor::A => Transport::Mqtt,
            Vendor::B => Transport::Http,
            Vendor::C => Transport::Coap,
        }
    }

    /// The `index`-th tracker's id, in the vendor's own style (B uses IMEIs).
    pub fn device_id(self, index: usize) -> String {
        match self {
            Vendor::A => format!("A-{index:04}"),
            Vendor::B => format!("3569380356{index:05}"),
            Vendor::C => format!("C-{index:04}"),
        }
    }

    /// How often a tracker reports, and the share by which each period may differ from it.
    pub fn period(self) -> (StdDuration, f64) {
        match self {
            Vendor::A => (StdDuration::from_secs(5), 0.2),
            Vendor::B => (StdDuration::from_secs(10), 0.1),
            Vendor::C => (StdDuration::from_secs(15), 0.3),
        }
    }

    /// Reports a tracker puts in one message when it sends its backlog (C's datagrams are
    /// small: a CoAP message of 8 reports stays in one datagram).
    pub fn max_batch(self) -> usize {
        match self {
            Vendor::A | Vendor::B => 50,
            Vendor::C => 8,
        }
    }
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

/// One tracker: an id, a thing that moves, and a sequence number for its reports.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub id: String,
    pub vendor: Vendor,
    mover: Mover,
    next_seq: u64,
}

impl Tracker {
    /// The `index`-th tracker of a vendor. Half are vehicles, a quarter bicycles, a quarter
    /// pedestrians; where each starts and how it moves follows from `seed`.
    pub fn new(vendor: Vendor, index: usize, seed: u64, area: Area, first_seq: u64) -> Tracker {
        let own_seed = Random::new(seed ^ (vendor as u64) << 56 ^ index as u64).uniform().to_bits();
        let mode = match index % 4 {
            0 | 1 => Mode::Vehicle,
            2 => Mode::Bicycle,
            _ => Mode::Pedestrian,
        };
        Tracker {
            id: vendor.device_id(index),
            vendor,
            mover: Mover::new(mode, area, own_seed),
            next_seq: first_seq,
        }
    }

    /// Moves on by `seconds` and reads the GPS at `time`: a report with the next sequence
    /// number, or `None` when the fix is lost (nothing is reported, no number is used).
    pub fn measure(&mut self, seconds: f64, time: DateTime<Utc>) -> Option<Report> {
        self.mover.advance(seconds);
        let fix = self.mover.fix()?;
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(Report {
            device: self.id.clone(),
            seq,
            time,
            lat: fix.lat,
            long: fix.lon,
            speed_kmh: fix.speed * 3.6,
            heading: fix.heading,
            battery: self.mover.battery().round() as u8,
        })
    }

    /// The sequence number the next report will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The tracker's own random stream, for what else it decides (going offline...).
    pub fn random(&mut self) -> &mut Random {
        self.mover.random()
    }
}

/// A fleet of one vendor's trackers reporting every `interval` from `start`, never losing a
/// fix: what `device-sim gps` writes, the same reports for the same seed.
pub struct Fleet {
    trackers: Vec<Tracker>,
    time: DateTime<Utc>,
    interval: Duration,
}

impl Fleet {
    pub fn new(vendor: Vendor, devices: usize, seed: u64, start: DateTime<Utc>, interval: Duration) -> Fleet {
        let trackers = (0..devices)
            .map(|i| {
                let mut tracker = Tracker::new(vendor, i, seed, Area::default(), 1);
                tracker.mover.set_lost_fix(0.0);
                tracker
            })
            .collect();
        Fleet { trackers, time: start, interval }
    }

    /// One report from every tracker, then time moves on by one interval.
    pub fn tick(&mut self) -> Vec<Report> {
        let seconds = self.interval.num_milliseconds() as f64 / 1000.0;
        let time = self.time;
        self.time += self.interval;
        self.trackers.iter_mut().filter_map(|t| t.measure(seconds, time)).collect()
    }
}

/// The Content-Type (HTTP, MQTT 5) of a vendor's payloads.
pub fn content_type(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::A => "application/x-ndjson",
        Vendor::B => "text/csv",
        Vendor::C => "application/cbor",
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
            let mut csv = String::from(CSV_HEADER);
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
                    cbor_map(vec![
                        ("i", Value::Text(r.device.clone())),
                        ("n", r.seq.into()),
                        ("ts", r.time.timestamp().into()),
                        ("la", Value::Float(r.lat)),
                        ("lo", Value::Float(r.long)),
                        ("v", Value::Float(r.speed_kmh / 3.6)),
                        ("h", (r.heading as u16).into()),
                        ("b", r.battery.into()),
                    ])
                })
                .collect();
            cbor_bytes(&Value::Array(maps))
        }
    }
}

/// vendorC's reports as a SenML pack (RFC 8428) in CBOR, Content-Format 112: the tracker's
/// name as base name, each report's time (to the millisecond) as base time, one record per field under the
/// field names of vendorC's CBOR maps (the gateway turns the records of one base name and
/// time back into one row of them).
pub fn encode_senml(reports: &[Report]) -> Vec<u8> {
    // SenML's CBOR labels (RFC 8428 table 4).
    const BN: i64 = -2;
    const BT: i64 = -3;
    const N: i64 = 0;
    const V: i64 = 2;
    const VS: i64 = 3;
    let record = |name: &str, value: (i64, Value)| {
        Value::Map(vec![(N.into(), Value::Text(name.into())), (value.0.into(), value.1)])
    };
    let mut pack = Vec::with_capacity(reports.len() * 7);
    for (i, r) in reports.iter().enumerate() {
        // Milliseconds: two reports of a backlog in one second must not merge into one row.
        let mut first = vec![(BT.into(), Value::Float(r.time.timestamp_millis() as f64 / 1000.0))];
        if i == 0 {
            first.insert(0, (BN.into(), Value::Text(format!("urn:dev:{}:", r.device))));
        }
        first.extend([(N.into(), Value::Text("i".into())), (VS.into(), Value::Text(r.device.clone()))]);
        pack.push(Value::Map(first));
        pack.push(record("n", (V, r.seq.into())));
        pack.push(record("la", (V, Value::Float(r.lat))));
        pack.push(record("lo", (V, Value::Float(r.long))));
        pack.push(record("v", (V, Value::Float(r.speed_kmh / 3.6))));
        pack.push(record("h", (V, (r.heading as u16).into())));
        pack.push(record("b", (V, r.battery.into())));
    }
    cbor_bytes(&Value::Array(pack))
}

const CSV_HEADER: &str = "imei,ts,latitude,longitude,speed_knots,course,battery,counter\n";

/// A report as a faulty tracker sends it: its payload cannot be read with the vendor's
/// schema (a field of the wrong type, a row cut short, a map with text for a number), so the
/// gateway refuses it and quarantines it. `kind` picks one of a few faults.
pub fn malformed(vendor: Vendor, report: &Report, kind: u8) -> Vec<u8> {
    match (vendor, kind % 2) {
        (Vendor::A, 0) => format!(
            r#"{{"device_id":"{}","seq":{},"t":"{}","lat":"N 49.2","lon":-123.1}}"#,
            report.device,
            report.seq,
            report.time.to_rfc3339_opts(SecondsFormat::Millis, true)
        )
        .into_bytes(),
        (Vendor::A, _) => {
            format!(r#"{{"device_id":"{}","seq":{},"t":"#, report.device, report.seq).into_bytes()
        }
        (Vendor::B, 0) => {
            format!("{CSV_HEADER}{},{},49.28\n", report.device, report.time.timestamp_millis()).into_bytes()
        }
        (Vendor::B, _) => {
            format!("{CSV_HEADER}{},yesterday,49.28,-123.12,1,1,1,{}\n", report.device, report.seq)
                .into_bytes()
        }
        (Vendor::C, 0) => cbor_bytes(&cbor_map(vec![
            ("i", Value::Text(report.device.clone())),
            ("n", report.seq.into()),
            ("ts", report.time.timestamp().into()),
            ("la", Value::Text("49.28".into())),
            ("lo", Value::Float(report.long)),
        ])),
        (Vendor::C, _) => vec![0xa5, 0x61, 0x69],
    }
}

fn cbor_map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (Value::Text(k.into()), v)).collect())
}

fn cbor_bytes(value: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::into_writer(value, &mut bytes);
    bytes
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
        assert!(csv.starts_with(CSV_HEADER));
        let cbor: Value = ciborium::from_reader(encode(Vendor::C, &reports).as_slice()).unwrap();
        assert_eq!(cbor.as_array().unwrap().len(), 3);
    }

    #[test]
    fn a_senml_pack_has_a_base_name_once_and_a_base_time_per_report() {
        let reports = fleet().tick();
        let pack: Value = ciborium::from_reader(encode_senml(&reports).as_slice()).unwrap();
        let records = pack.as_array().unwrap();
        assert_eq!(records.len(), 7 * reports.len());
        let label = |record: &Value, label: i64| {
            record.as_map().unwrap().iter().find(|(k, _)| *k == Value::from(label)).map(|(_, v)| v.clone())
        };
        assert_eq!(label(&records[0], -2), Some(Value::Text("urn:dev:A-0000:".into())));
        for (i, report) in reports.iter().enumerate() {
            let first = &records[7 * i];
            assert_eq!(label(first, -2).is_some(), i == 0);
            assert_eq!(label(first, -3), Some(Value::Float(report.time.timestamp_millis() as f64 / 1000.0)));
            assert_eq!(label(first, 3), Some(Value::Text(report.device.clone())));
            assert_eq!(label(&records[7 * i + 1], 2), Some(report.seq.into()));
        }
        let names: Vec<_> = records[..7].iter().map(|r| label(r, 0).unwrap().into_text().unwrap()).collect();
        assert_eq!(names, ["i", "n", "la", "lo", "v", "h", "b"]);
    }

    #[test]
    fn malformed_payloads_do_not_read_as_reports() {
        let report = fleet().tick().remove(0);
        for kind in 0..2 {
            let a = malformed(Vendor::A, &report, kind);
            let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&a);
            assert!(parsed.map_or(true, |v| !v["lat"].is_f64()));
            let b = String::from_utf8(malformed(Vendor::B, &report, kind)).unwrap();
            let row = b.lines().nth(1).unwrap();
            assert!(row.split(',').count() != 8 || row.contains("yesterday"));
            let c: Result<Value, _> = ciborium::from_reader(malformed(Vendor::C, &report, kind).as_slice());
            assert!(c.map_or(true, |v| v.as_map().is_some_and(|m| m.len() == 5)));
        }
    }
}
