use proptest::prelude::*;

use super::*;

/// Bytes before a segment's first record.
const SEGMENT_HEADER: usize = 32;

fn salt_of(path: &Path) -> u64 {
    record::read_salt(&fs::read(path).unwrap()[..SEGMENT_HEADER]).unwrap()
}

fn bodies(wal: &Wal, after: u64) -> Vec<(u64, Vec<u8>)> {
    wal.read_after(after).map(|r| r.map(|r| (r.seq, r.body)).unwrap()).collect()
}

#[test]
fn records_come_back_in_order_across_segments_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, recovery) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
    assert_eq!(recovery.records, 0);
    for i in 0..100u32 {
        let body = vec![i as u8; 100];
        assert_eq!(wal.append([body.as_slice()]).unwrap(), u64::from(i) + 1);
        wal.sync().unwrap();
    }
    assert!(list_segments(dir.path()).unwrap().len() > 1);
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
    assert_eq!((recovery.records, recovery.torn_bytes), (100, 0));
    let read = bodies(&wal, 40);
    assert_eq!(read.len(), 60);
    assert_eq!(read[0], (41, vec![40u8; 100]));
    assert_eq!(wal.next_seq(), 101);
}

#[test]
fn release_removes_whole_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
    for _ in 0..100 {
        wal.append([[7u8; 200].as_slice()]).unwrap();
    }
    let before = list_segments(dir.path()).unwrap().len();
    wal.release(50).unwrap();
    let after = list_segments(dir.path()).unwrap();
    assert!(after.len() < before);
    // Every record above 50 is still there.
    assert_eq!(bodies(&wal, 50).len(), 50);
    wal.release(u64::MAX).unwrap();
    assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
}

#[test]
fn a_torn_last_write_is_cut_and_numbering_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    wal.append([b"one".as_slice(), b"two".as_slice()]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let path = segment_path(dir.path(), 1);
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    let mut torn = Vec::new();
    record::encode(salt_of(&path), 3, 1, &pack::pack([b"three".as_slice()]), &mut torn);
    file.write_all(&torn[..torn.len() - 2]).unwrap();
    drop(file);
    let (mut wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    assert_eq!((recovery.records, recovery.torn_bytes), (2, torn.len() as u64 - 2));
    assert_eq!(wal.append([b"3".as_slice()]).unwrap(), 3);
    assert_eq!(bodies(&wal, 0).iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2, 3]);
}

const HEADER: usize = 28;
/// A record of one small entry takes this plus the entry's bytes.
const RECORD: usize = HEADER + 9;

fn seqs(wal: &Wal) -> Vec<u64> {
    bodies(wal, 0).iter().map(|(s, _)| *s).collect()
}

/// A log of `n` records of 100 bytes in one segment, closed.
fn log_of(dir: &Path, n: u64) -> PathBuf {
    let (mut wal, _) = Wal::open(dir, 1 << 20, 0, 0).unwrap();
    for i in 0..n {
        wal.append([vec![i as u8; 100].as_slice()]).unwrap();
    }
    wal.sync().unwrap();
    segment_path(dir, 1)
}

/// A log of 60 records of 200 bytes, one a write, in segments of 4 KiB (many of them), synced.
fn small_segments_of_60(dir: &Path) -> Wal {
    let (mut wal, _) = Wal::open(dir, 4096, 0, 0).unwrap();
    for _ in 0..60 {
        wal.append([[1u8; 200].as_slice()]).unwrap();
    }
    wal.sync().unwrap();
    wal
}

#[test]
fn damage_in_an_older_segment_costs_only_the_records_it_touched() {
    let dir = tempfile::tempdir().unwrap();
    let wal = small_segments_of_60(dir.path());
    drop(wal);
    let first = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&first).unwrap();
    let at = SEGMENT_HEADER + 2 * (RECORD + 200) + HEADER + 5;
    bytes[at] ^= 0xff;
    fs::write(&first, &bytes).unwrap();
    let (wal, recovery) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
    assert_eq!(recovery.torn_bytes, 0);
    assert_eq!(recovery.damage.len(), 1);
    let damage = &recovery.damage[0];
    assert!(damage.found_now && damage.kept_in.exists());
    assert_eq!(damage.seqs, LostSeqs::Range(3, 3));
    assert_eq!(
        (damage.start, damage.end),
        ((SEGMENT_HEADER + 2 * (RECORD + 200)) as u64, (SEGMENT_HEADER + 3 * (RECORD + 200)) as u64)
    );
    let expected: Vec<u64> = (1..=60).filter(|&s| s != 3).collect();
    assert_eq!(seqs(&wal), expected);
    drop(wal);
    // Reported again at the next open, until an operator removes it.
    let (wal, recovery) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
    assert_eq!(recovery.damage.len(), 1);
    assert!(!recovery.damage[0].found_now);
    assert_eq!(seqs(&wal), expected);
}

#[test]
fn one_flipped_byte_anywhere_loses_at_most_one_record_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 6);
    let good = fs::read(&path).unwrap();
    for at in 0..good.len() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = good.clone();
        bytes[at] ^= 0x10;
        fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
        let (mut wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        let found = seqs(&wal);
        assert!(found.len() >= 5, "flip at {at}: {found:?}");
        assert_eq!(recovery.torn_bytes, 0, "flip at {at}");
        assert_eq!(recovery.damage.len(), 1, "flip at {at}");
        let touched = at.checked_sub(SEGMENT_HEADER).map(|r| r / (RECORD + 100) + 1);
        let expected = match touched {
            None => LostSeqs::None,
            Some(6) => LostSeqs::From(6),
            Some(seq) => LostSeqs::Range(seq as u64, seq as u64),
        };
        assert_eq!(recovery.damage[0].seqs, expected, "flip at {at}");
        // New records never take a lost record's number, and read back after a reopen.
        let next = wal.append([b"new".as_slice()]).unwrap();
        assert!(next >= 7, "flip at {at}: next seq {next}");
        wal.sync().unwrap();
        drop(wal);
        let (wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        assert_eq!(seqs(&wal).last(), Some(&next));
    }
}

#[test]
fn a_record_length_made_huge_costs_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 100);
    let mut bytes = fs::read(&path).unwrap();
    bytes[SEGMENT_HEADER + 4..SEGMENT_HEADER + 8].copy_from_slice(&200_000_000u32.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let (wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    assert_eq!(seqs(&wal), (2..=100).collect::<Vec<_>>());
    assert_eq!(recovery.damage[0].seqs, LostSeqs::Range(1, 1));
}

#[test]
fn damage_to_committed_records_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 10);
    let mut bytes = fs::read(&path).unwrap();
    bytes[SEGMENT_HEADER + 3 * (RECORD + 100) + HEADER + 1] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let (_, recovery) = Wal::open(dir.path(), 1 << 20, 5, 5).unwrap();
    assert_eq!(recovery.damage[0].seqs, LostSeqs::None);
}

#[test]
fn a_segment_of_random_bytes_is_reported_with_the_seqs_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let wal = small_segments_of_60(dir.path());
    drop(wal);
    let segments = list_segments(dir.path()).unwrap();
    let (victim, next) = (&segments[1], &segments[2]);
    let len = fs::metadata(&victim.path).unwrap().len() as usize;
    let noise: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(&victim.path, &noise).unwrap();
    let (wal, recovery) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
    assert_eq!(recovery.damage.len(), 1);
    assert_eq!(recovery.damage[0].seqs, LostSeqs::Range(victim.first, next.first - 1));
    let found = seqs(&wal);
    assert_eq!(found.len() as u64, 60 - (next.first - victim.first));
    assert_eq!(found.last(), Some(&60));
}

#[test]
fn zeros_or_a_cut_record_at_the_end_are_a_torn_write_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 3);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(&path, &bytes).unwrap();
    let (wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    assert_eq!((recovery.torn_bytes, recovery.damage.len()), (4096, 0));
    assert_eq!(seqs(&wal), vec![1, 2, 3]);
}

#[test]
fn version_1_segments_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = record::MAGIC_V1.to_vec();
    for seq in 1..=3u64 {
        let body = format!("v1 record {seq}");
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&record::body_crc(seq, body.as_bytes()).to_le_bytes());
        bytes.extend_from_slice(&seq.to_le_bytes());
        bytes.extend_from_slice(body.as_bytes());
    }
    fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
    let (mut wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    assert_eq!(recovery.records, 3);
    // Appends go to a new, version 3 segment.
    assert_eq!(wal.append([b"4".as_slice()]).unwrap(), 4);
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    let read = bodies(&wal, 0);
    assert_eq!(read.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(read[1].1, b"v1 record 2");
}

/// The magics differ in their last byte: a flipped bit there can name another version (or
/// none). Whatever it names, the records are read, and the magic is put right.
#[test]
fn a_flipped_bit_in_the_magic_costs_no_record() {
    let v2_segment = || {
        let mut bytes = record::segment_header(Version::V2, 99);
        for seq in 1..=3u64 {
            record::encode_v2(99, seq, format!("record {seq}").as_bytes(), &mut bytes);
        }
        bytes
    };
    let dir = tempfile::tempdir().unwrap();
    let v3_segment = fs::read(log_of(dir.path(), 3)).unwrap();
    for (version, good) in [(Version::V3, v3_segment), (Version::V2, v2_segment())] {
        for bit in 0..8 {
            let dir = tempfile::tempdir().unwrap();
            let path = segment_path(dir.path(), 1);
            let mut bytes = good.clone();
            bytes[7] ^= 1 << bit;
            fs::write(&path, &bytes).unwrap();
            let (wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
            assert_eq!(seqs(&wal), vec![1, 2, 3], "{version:?}, bit {bit}");
            assert_eq!(recovery.damage[0].seqs, LostSeqs::None, "{version:?}, bit {bit}");
            assert_eq!(segment_version(&path), Some(version), "{version:?}, bit {bit}: the magic put right");
        }
    }
}

#[test]
fn version_2_segments_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = record::segment_header(Version::V2, 99);
    for seq in 1..=3u64 {
        record::encode_v2(99, seq, format!("v2 record {seq}").as_bytes(), &mut bytes);
    }
    fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
    let (mut wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    assert_eq!((recovery.records, recovery.damage.len()), (3, 0));
    assert_eq!(wal.append([b"4".as_slice(), b"5".as_slice()]).unwrap(), 4);
    wal.sync().unwrap();
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    let read = bodies(&wal, 0);
    assert_eq!(read.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(read[1].1, b"v2 record 2");
    assert_eq!(segment_version(&segment_path(dir.path(), 4)), Some(Version::V3));
}

/// Entries appended together share a record, compressed: they come back with seqs of their
/// own, and damage to the record costs exactly its entries.
#[test]
fn a_group_shares_a_compressed_record_and_its_damage_costs_exactly_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    let report = |n: u64| format!(r#"{{"device_id":"A-{n:04}","seq":{n},"lat":49.28,"lon":-123.12}}"#);
    let group: Vec<String> = (1..=50).map(report).collect();
    assert_eq!(wal.append(group.iter().map(|r| r.as_bytes())).unwrap(), 1);
    assert_eq!(wal.append([report(51).as_bytes()]).unwrap(), 51);
    wal.sync().unwrap();
    drop(wal);
    let path = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let raw: usize = group.iter().map(|r| r.len()).sum();
    assert!(bytes.len() < raw / 2, "{} bytes on disk for {raw} bytes of entries", bytes.len());
    let (wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    let read = bodies(&wal, 0);
    assert_eq!(read.len(), 51);
    assert_eq!(read[9], (10, report(10).into_bytes()));
    drop(wal);

    bytes[SEGMENT_HEADER + HEADER + 20] ^= 0x04;
    fs::write(&path, &bytes).unwrap();
    let (mut wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    assert_eq!(recovery.damage[0].seqs, LostSeqs::Range(1, 50));
    assert_eq!(seqs(&wal), vec![51]);
    assert_eq!(wal.append([b"next".as_slice()]).unwrap(), 52);
}

#[test]
fn a_raised_floor_or_a_torn_new_segment_never_hides_later_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    wal.append([b"1".as_slice(), b"2".as_slice()]).unwrap();
    drop(wal);
    // The dataset records seq 10 (this log's later segments were lost): numbering jumps,
    // in a new segment, so a reader of the old one never stops at a gap.
    let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 10, 0).unwrap();
    assert_eq!(wal.append([b"11".as_slice()]).unwrap(), 11);
    drop(wal);
    // A crash while creating a segment leaves it without its magic.
    fs::write(segment_path(dir.path(), 12), b"ODF").unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    assert_eq!(wal.append([b"12".as_slice()]).unwrap(), 12);
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    let seqs: Vec<u64> = bodies(&wal, 0).iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![1, 2, 11, 12]);
}

#[test]
fn numbering_starts_above_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 4096, 500, 0).unwrap();
    assert_eq!(wal.append([b"x".as_slice()]).unwrap(), 501);
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), 4096, 10, 0).unwrap();
    assert_eq!(wal.next_seq(), 502);
}

proptest! {
    /// Whatever bytes a segment holds, reading it never panics and yields only records
    /// that were written whole.
    #[test]
    fn any_segment_bytes_read_safely(noise in proptest::collection::vec(any::<u8>(), 0..2048), cut in 0usize..4096) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = record::segment_header(Version::V3, 7);
        record::encode(7, 1, 1, &pack::pack([b"good".as_slice()]), &mut bytes);
        bytes.extend_from_slice(&noise);
        bytes.truncate(cut.max(SEGMENT_HEADER));
        fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
        let (wal, _) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
        for record in wal.read_after(0) {
            let record = record.unwrap();
            prop_assert!(record.seq == 1 && record.body == b"good" || record.seq > 1);
        }
    }
}

/// A sender may put anything in a payload, a whole record in the log's format included:
/// after damage, reading finds records again by their salted headers, which no payload
/// can carry, and never looks inside a record whose header checked out.
#[test]
fn a_record_hidden_in_a_payload_is_never_taken_for_one() {
    for (salt_known, damage_at) in [(false, 0), (true, HEADER + 2)] {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        let salt = if salt_known { salt_of(&path) } else { 0x5eed };
        let mut forged = vec![b'x'; 16];
        record::encode(salt, 1000, 1, &pack::pack([b"forged".as_slice()]), &mut forged);
        for body in [b"one".as_slice(), forged.as_slice(), b"three".as_slice()] {
            wal.append([body]).unwrap();
        }
        wal.sync().unwrap();
        drop(wal);
        // Damage to the header of record 2 (the forged one's carrier), or to its body.
        let mut bytes = fs::read(&path).unwrap();
        bytes[SEGMENT_HEADER + RECORD + 3 + damage_at] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let (wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        assert_eq!(seqs(&wal), vec![1, 3], "salt known: {salt_known}");
        assert_eq!(recovery.damage[0].seqs, LostSeqs::Range(2, 2));
    }
}

#[test]
fn reopening_after_damage_at_the_end_reuses_no_number_and_says_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 6);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let (wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    assert_eq!(recovery.damage[0].seqs, LostSeqs::From(6));
    let next = wal.next_seq();
    assert!(next > 6);
    drop(wal);
    for _ in 0..2 {
        let (wal, recovery) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
        assert_eq!(wal.next_seq(), next);
        assert_eq!((recovery.torn_bytes, recovery.damage.len()), (0, 1));
        assert!(!recovery.damage[0].found_now);
    }
    // No empty segment is left behind to pass for the newest one.
    let (mut wal, _) = Wal::open(dir.path(), 1 << 20, 0, 0).unwrap();
    assert_eq!(wal.append([b"new".as_slice()]).unwrap(), next);
    assert!(list_segments(dir.path()).unwrap().iter().all(|s| s.first <= next));
}

#[test]
fn the_committed_position_noted_at_release_makes_damage_to_committed_records_no_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = small_segments_of_60(dir.path());
    wal.release(40).unwrap();
    drop(wal);
    let segments = list_segments(dir.path()).unwrap();
    let oldest = &segments[0];
    assert!(oldest.first <= 40, "{segments:?}");
    let mut bytes = fs::read(&oldest.path).unwrap();
    bytes[SEGMENT_HEADER + HEADER + 1] ^= 0x01;
    fs::write(&oldest.path, &bytes).unwrap();
    // Opened as after a restart, with nothing known from the dataset.
    let (_, recovery) = Wal::open(dir.path(), 4096, 0, 0).unwrap();
    assert_eq!(recovery.damage[0].seqs, LostSeqs::None);
}
