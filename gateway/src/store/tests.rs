use chrono::{TimeZone, Utc};

use super::*;
use crate::odf::{self, MetadataBlock, MetadataEvent, SetInfo, parse_snapshots};

const FLEET: &str = include_str!("../../../schemas/fleet.yaml");

fn info(text: &str) -> MetadataEvent {
    MetadataEvent::SetInfo(SetInfo { description: Some(text.into()), keywords: None })
}

fn created(dir: &std::path::Path) -> (DataDir, Dataset) {
    let data_dir = DataDir::create(dir).unwrap();
    let snapshot = parse_snapshots(FLEET, "fleet.yaml").unwrap().remove(0);
    let dataset = data_dir.create_dataset(&snapshot, Utc::now()).unwrap();
    (data_dir, dataset)
}

#[test]
fn a_commit_cut_short_before_the_head_moved_leaves_the_previous_head() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, dataset) = created(dir.path());
    let head = dataset.head().unwrap().clone();

    // What a crash between writing a block and moving the head leaves behind: a complete
    // block nobody references, and a half-written temp file.
    let orphan = MetadataBlock {
        system_time: Utc::now(),
        prev_block_hash: Some(head.clone()),
        sequence_number: dataset.state().blocks,
        event: info("never committed"),
    };
    let bytes = odf::encode_block(&orphan);
    std::fs::write(dataset.block_path(&odf::block_hash(&bytes)), &bytes).unwrap();
    std::fs::write(dataset.root().join("blocks/.tmp-4294967295-dead"), &bytes[..10]).unwrap();

    let mut reopened = data_dir.open_dataset("fleet").unwrap();
    assert_eq!(reopened.head(), Some(&head));
    verify(&reopened, |_, _| {}).unwrap();

    // The next writer sweeps the temp file away when it opens, and goes on from the old head.
    reopened.remove_stale_temp_files().unwrap();
    assert!(!dataset.root().join("blocks/.tmp-4294967295-dead").exists());
    reopened.commit(vec![info("after the crash")], Utc::now()).unwrap();
    assert_eq!(reopened.blocks().unwrap()[1].0, head);
}

#[test]
fn writers_in_turn_on_two_handles_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, mut first) = created(dir.path());
    let mut second = data_dir.open_dataset("fleet").unwrap();
    // Each handle's view goes stale when the other commits; commit must catch up, not fork.
    first.commit(vec![info("one")], Utc::now()).unwrap();
    second.commit(vec![info("two")], Utc::now()).unwrap();
    first.commit(vec![info("three")], Utc::now()).unwrap();
    let reopened = data_dir.open_dataset("fleet").unwrap();
    assert_eq!(reopened.state().blocks, 6);
    assert_eq!(reopened.head(), first.head());
    verify(&reopened, |_, _| {}).unwrap();
}

#[test]
fn concurrent_writers_in_threads_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, _) = created(dir.path());
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let data_dir = data_dir.clone();
            std::thread::spawn(move || {
                let mut dataset = data_dir.open_dataset("fleet").unwrap();
                for i in 0..5 {
                    dataset.commit(vec![info(&format!("writer {w} commit {i}"))], Utc::now()).unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let dataset = data_dir.open_dataset("fleet").unwrap();
    assert_eq!(dataset.state().blocks, 3 + 20);
    verify(&dataset, |_, _| {}).unwrap();
}

#[test]
fn system_time_never_goes_back_even_if_the_clock_does() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut dataset) = created(dir.path());
    let before = dataset.state().last_system_time.unwrap();
    dataset.commit(vec![info("skewed clock")], Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).unwrap()).unwrap();
    assert_eq!(dataset.state().last_system_time, Some(before));
}

#[test]
fn a_rejected_commit_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut dataset) = created(dir.path());
    let head = dataset.head().cloned();
    let blocks_before = std::fs::read_dir(dataset.root().join("blocks")).unwrap().count();
    let bad = MetadataEvent::DisablePushSource(odf::DisablePushSource { source_name: "nope".into() });
    let e = dataset.commit(vec![info("fine"), bad], Utc::now()).unwrap_err().to_string();
    assert!(e.contains("there is no push source 'nope' to disable (defined: registry)"), "{e}");
    assert_eq!(dataset.head().cloned(), head);
    assert_eq!(std::fs::read_dir(dataset.root().join("blocks")).unwrap().count(), blocks_before);
}
