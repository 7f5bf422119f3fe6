//! Deterministic GPS tracker reports for the benchmarks, as NdJson: 1,000 devices reporting
//! every 10 s, wandering around Vancouver. Record `i` is device `i % 1000`, seq `i / 1000`, so
//! every (device_id, seq) key is new.

use std::io::Write;

use chrono::DateTime;

/// Writes records `from..from + rows`; the same `from` always gives the same bytes.
pub fn write_records(out: &mut impl Write, from: usize, rows: usize) -> std::io::Result<()> {
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15 ^ from as u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 10_000) as f64 / 10_000.0
    };
    for i in from..from + rows {
        let (device, seq) = (i % 1000, i / 1000);
        let t = DateTime::from_timestamp(1_767_225_600 + seq as i64 * 10, 0).unwrap_or_default();
        writeln!(
            out,
            r#"{{"device_id":"T-{device:04}","seq":{seq},"t":"{}","lat":{:.6},"long":{:.6},"speed":{:.1},"heading":{:.0},"battery":{:.0}}}"#,
            t.format("%Y-%m-%dT%H:%M:%SZ"),
            49.2 + next() * 0.1,
            -123.2 + next() * 0.1,
            next() * 90.0,
            next() * 360.0,
            100.0 - next() * 60.0,
        )?;
    }
    Ok(())
}
