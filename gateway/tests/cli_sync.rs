//! `push` and `pull` through the real binary against a folder remote (the S3 remotes are
//! tried against a real S3 API in tests/interop/test_s3_sync.py): incremental pushes, a
//! pulled copy that verifies, diverged and ahead remotes refused, a damaged remote object
//! refused, and a push killed part way resumed by the next one.

mod common;

use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use common::{Gateway, LEDGER, gateway_bin, reports};

fn url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A gateway with the trackers dataset holding one commit per range of device A-1's reports.
fn trackers(ranges: &[std::ops::RangeInclusive<i64>]) -> Gateway {
    let gw = Gateway::new();
    gw.add(LEDGER);
    for range in ranges {
        gw.ok(&["ingest", "trackers", "--stdin"], &reports("A-1", range.clone()));
    }
    gw
}

fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn pushes_send_only_what_the_remote_lacks_and_a_pull_verifies() {
    let gw = trackers(&[1..=5]);
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = remote_dir.path().join("trackers");

    let first = gw.ok(&["push", "trackers", &url(&remote)], "");
    assert!(first.contains("pushed 5 block(s)"), "{first}");
    let head = std::fs::read_to_string(gw.data().join("trackers/refs/head")).unwrap();
    assert_eq!(std::fs::read_to_string(remote.join("refs/head")).unwrap(), head);

    let again = gw.ok(&["push", "trackers", &url(&remote)], "");
    assert!(again.contains("is up to date"), "{again}");

    gw.ok(&["ingest", "trackers", "--stdin"], &reports("A-1", 6..=9));
    let blocks_before = files(&remote.join("blocks"));
    let data_before = files(&remote.join("data"));
    let second = gw.ok(&["push", "trackers", &url(&remote)], "");
    assert!(second.contains("pushed 1 block(s)"), "{second}");
    assert_eq!(files(&remote.join("blocks")), blocks_before + 1);
    assert_eq!(files(&remote.join("data")), data_before + 1);

    // Into a fresh data directory, named after the URL.
    let copy = Gateway::new();
    std::fs::create_dir_all(copy.data()).unwrap();
    let pulled = copy.ok(&["pull", &url(&remote)], "");
    assert!(pulled.contains("trackers: created from"), "{pulled}");
    copy.verify("trackers");
    assert_eq!(copy.records("trackers"), gw.records("trackers"));
    assert_eq!(copy.records("trackers").len(), 9);

    // Incremental the other way too, and under another name.
    gw.ok(&["ingest", "trackers", "--stdin"], &reports("A-1", 10..=12));
    gw.ok(&["push", "trackers", &url(&remote)], "");
    let more = copy.ok(&["pull", &url(&remote)], "");
    assert!(more.contains("1 block(s)"), "{more}");
    assert_eq!(copy.records("trackers").len(), 12);
    let renamed = copy.ok(&["pull", &url(&remote), "--as", "field-copy"], "");
    assert!(renamed.contains("field-copy: created from"), "{renamed}");
    copy.verify("field-copy");
}

#[test]
fn a_remote_of_another_chain_or_further_on_is_refused() {
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = remote_dir.path().join("trackers");
    let a = trackers(&[1..=3]);
    a.ok(&["push", "trackers", &url(&remote)], "");

    // Another dataset of the same name (its own seed): diverged, nothing overwritten.
    let other = trackers(&[1..=3]);
    let head = std::fs::read_to_string(remote.join("refs/head")).unwrap();
    let refused = other.fails(&["push", "trackers", &url(&remote)], "");
    assert!(refused.contains("have diverged"), "{refused}");
    assert_eq!(std::fs::read_to_string(remote.join("refs/head")).unwrap(), head);
    let refused = other.fails(&["pull", &url(&remote)], "");
    assert!(refused.contains("have diverged"), "{refused}");

    // A copy that moved on: the original is behind, and told to pull first.
    let b = Gateway::new();
    std::fs::create_dir_all(b.data()).unwrap();
    b.ok(&["pull", &url(&remote)], "");
    b.ok(&["ingest", "trackers", "--stdin"], &reports("A-1", 4..=5));
    b.ok(&["push", "trackers", &url(&remote)], "");
    let behind = a.fails(&["push", "trackers", &url(&remote)], "");
    assert!(behind.contains("1 block(s) ahead") && behind.contains("pull it first"), "{behind}");
    let caught_up = a.ok(&["pull", &url(&remote)], "");
    assert!(caught_up.contains("pulled from"), "{caught_up}");
    assert_eq!(a.records("trackers").len(), 5);
    let up_to_date = b.ok(&["pull", &url(&remote)], "");
    assert!(up_to_date.contains("up to date"), "{up_to_date}");
}

#[test]
fn a_damaged_remote_object_is_refused_and_nothing_is_made() {
    let gw = trackers(&[1..=4]);
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = remote_dir.path().join("trackers");
    gw.ok(&["push", "trackers", &url(&remote)], "");
    let slice = std::fs::read_dir(remote.join("data")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&slice).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&slice, bytes).unwrap();

    let copy = Gateway::new();
    std::fs::create_dir_all(copy.data()).unwrap();
    let refused = copy.fails(&["pull", &url(&remote)], "");
    assert!(refused.contains("is damaged") && refused.contains("hash to"), "{refused}");
    assert_eq!(files(&copy.data()), 0, "no dataset, no temp folder left");

    // A damaged block is found before anything is fetched.
    let block = std::fs::read_dir(remote.join("blocks")).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&block, b"not a block").unwrap();
    let refused = copy.fails(&["pull", &url(&remote)], "");
    assert!(refused.contains("is damaged"), "{refused}");
}

#[test]
fn a_push_killed_part_way_is_resumed_without_sending_twice() {
    // Ten commits, each a data slice of ~2 KiB: at 4 KiB/s the push takes seconds.
    let gw = trackers(&[]);
    for device in 0..10 {
        gw.ok(&["ingest", "trackers", "--stdin"], &reports(&format!("A-{device}"), 1..=10));
    }
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = remote_dir.path().join("trackers");

    let mut push = StdCommand::new(gateway_bin())
        .args(["push", "trackers", &url(&remote), "--max-rate", "4KiB"])
        .env("ODF_GATEWAY_DATA_DIR", gw.data())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until some objects are there, then the real fault: SIGKILL.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while files(&remote.join("data")) < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    push.kill().unwrap();
    push.wait().unwrap();
    let sent_before = files(&remote.join("data"));
    assert!(sent_before >= 3, "the push had sent {sent_before} slices");
    assert!(!remote.join("refs/head").exists(), "the head moves last: a cut push leaves none");

    let resumed = gw.ok(&["push", "trackers", &url(&remote)], "");
    let before_phrase = resumed.split(" already there").next().filter(|_| resumed.contains(" already there"));
    let present: usize = before_phrase
        .and_then(|text| text.rsplit(", ").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no objects already there: {resumed}"));
    assert!(present >= sent_before, "{resumed}");

    let copy = Gateway::new();
    std::fs::create_dir_all(copy.data()).unwrap();
    copy.ok(&["pull", &url(&remote)], "");
    copy.verify("trackers");
    assert_eq!(copy.records("trackers").len(), 100);
}

#[test]
fn a_block_naming_a_local_slice_again_is_refused_and_the_slice_kept() {
    use odf_gateway::odf::{
        AddData, DataSlice, MetadataBlock, MetadataEvent, OffsetInterval, block_hash, encode_block,
    };
    use odf_gateway::store::DataDir;

    let gw = trackers(&[1..=4]);
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = remote_dir.path().join("trackers");
    gw.ok(&["push", "trackers", &url(&remote)], "");

    // The remote's next block names the local slice again, under the offsets that follow.
    let dataset = DataDir::open(&gw.data()).unwrap().open_dataset("trackers").unwrap();
    let (head, last) = dataset.blocks().unwrap().into_iter().next().unwrap();
    let MetadataEvent::AddData(add) = &last.event else { panic!("the head is not an AddData") };
    let slice = add.new_data.clone().unwrap();
    let end = slice.offset_interval.end;
    let forged = MetadataBlock {
        system_time: last.system_time,
        prev_block_hash: Some(head.clone()),
        sequence_number: last.sequence_number + 1,
        event: MetadataEvent::AddData(AddData {
            prev_checkpoint: None,
            prev_offset: Some(end),
            new_data: Some(DataSlice {
                offset_interval: OffsetInterval { start: end + 1, end: end * 2 + 1 },
                ..slice
            }),
            new_checkpoint: None,
            new_watermark: add.new_watermark,
            new_source_state: add.new_source_state.clone(),
            extra: None,
        }),
    };
    let bytes = encode_block(&forged);
    let hash = block_hash(&bytes);
    std::fs::write(remote.join("blocks").join(hash.to_string()), bytes).unwrap();
    std::fs::write(remote.join("refs/head"), hash.to_string()).unwrap();

    let refused = gw.fails(&["pull", &url(&remote)], "");
    assert!(refused.contains("is damaged") && refused.contains("offsets"), "{refused}");
    gw.verify("trackers");
    assert_eq!(std::fs::read_to_string(gw.data().join("trackers/refs/head")).unwrap(), head.to_string());
}

#[test]
fn a_folder_remote_needs_its_parent() {
    let gw = trackers(&[1..=2]);
    let remote_dir = tempfile::tempdir().unwrap();
    let unmounted = remote_dir.path().join("usb/odf/trackers");
    let refused = gw.fails(&["push", "trackers", &url(&unmounted)], "");
    assert!(refused.contains("is its disk mounted"), "{refused}");
    assert!(!remote_dir.path().join("usb").exists());

    // A remote behind the local copy: nothing to pull, and said so.
    let remote = remote_dir.path().join("trackers");
    gw.ok(&["push", "trackers", &url(&remote)], "");
    gw.ok(&["ingest", "trackers", "--stdin"], &reports("A-1", 3..=4));
    let behind = gw.ok(&["pull", &url(&remote)], "");
    assert!(behind.contains("1 block(s) behind the local copy"), "{behind}");
}

#[test]
fn a_whole_repository_is_pulled_back() {
    let gw = trackers(&[1..=3]);
    gw.add(include_str!("fixtures/counts.yaml"));
    gw.ok(&["ingest", "counts", "--stdin"], "{\"client\":\"a\",\"n\":1}\n");
    let repository = tempfile::tempdir().unwrap();
    for dataset in ["trackers", "counts"] {
        gw.ok(&["push", dataset, &url(&repository.path().join(dataset))], "");
    }
    std::fs::create_dir(repository.path().join("not-a-dataset")).unwrap();

    // A gateway whose SD card died, restored from what its sync fed.
    let restored = Gateway::new();
    let out = restored.ok(&["pull", &url(repository.path()), "--all"], "");
    assert!(out.contains("counts: created from") && out.contains("trackers: created from"), "{out}");
    for dataset in ["trackers", "counts"] {
        restored.verify(dataset);
        assert_eq!(restored.records(dataset), gw.records(dataset));
    }
    let again = restored.ok(&["pull", &url(repository.path()), "--all"], "");
    assert_eq!(again.matches("up to date").count(), 2, "{again}");

    let empty = tempfile::tempdir().unwrap();
    let refused = restored.fails(&["pull", &url(empty.path()), "--all"], "");
    assert!(refused.contains("holds no dataset folder"), "{refused}");
}
