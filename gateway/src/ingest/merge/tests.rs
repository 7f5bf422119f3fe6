use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit};
use proptest::prelude::*;

use super::*;
use crate::ingest::normalize::Normalized;
use crate::odf::source::{MergeStrategyAppend, MergeStrategySnapshot, PrimaryKey};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_time", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Int64, true),
    ]))
}

fn batch(rows: &[(&str, i64)]) -> RecordBatch {
    let times = TimestampMillisecondArray::from(vec![1_000; rows.len()]).with_timezone("UTC");
    let keys = StringArray::from_iter_values(rows.iter().map(|r| r.0));
    let values = Int64Array::from_iter_values(rows.iter().map(|r| r.1));
    RecordBatch::try_new(schema(), vec![Arc::new(times), Arc::new(keys), Arc::new(values)]).unwrap()
}

fn input(rows: &[(&str, i64)], ops: Option<Vec<i32>>) -> Normalized {
    Normalized { batch: batch(rows), op: ops.map(|o| Arc::new(Int32Array::from(o)) as ArrayRef) }
}

fn key() -> Vec<String> {
    vec!["key".into()]
}

/// (op, key, value) of a merge result.
fn rows(out: &RecordBatch) -> Vec<(i32, String, i64)> {
    let ops = out.column(0).as_primitive::<Int32Type>();
    let keys = out.column(2).as_string::<i32>();
    let values = out.column(3).as_primitive::<Int64Type>();
    (0..out.num_rows()).map(|i| (ops.value(i), keys.value(i).to_owned(), values.value(i))).collect()
}

fn expect(rows: &[(i32, &str, i64)]) -> Vec<(i32, String, i64)> {
    rows.iter().map(|(o, k, v)| (*o, k.to_string(), *v)).collect()
}

/// Offsets of the records "committed" by `step`: increasing across every test, as each
/// test's states only need them to increase.
static NEXT_OFFSET: AtomicU64 = AtomicU64::new(0);

/// The state for `strategy`, a Ledger's index in `dir`.
fn open(strategy: &MergeStrategy, dir: &Path) -> Option<MergeState> {
    MergeState::new(strategy, &schema(), dir, &IndexConfig::default()).unwrap()
}

/// Merges, then tells the state the output was committed, as a commit does; returns the
/// output and its last offset.
fn commit(strategy: &MergeStrategy, state: &mut Option<MergeState>, input: Normalized) -> (RecordBatch, u64) {
    let out = merge(strategy, state.as_mut(), input, "op").unwrap();
    let rows = out.num_rows() as u64;
    let end = NEXT_OFFSET.fetch_add(rows.max(1), Ordering::SeqCst) + rows.max(1) - 1;
    if let (Some(state), true) = (state, rows > 0) {
        // As the writer does: an in-memory state takes the records in, a Ledger's index its
        // pending keys.
        match state.checkpointed() {
            true => state.absorb(&out, end).unwrap(),
            false => state.committed(end).unwrap(),
        }
    }
    (out, end)
}

fn step(strategy: &MergeStrategy, state: &mut Option<MergeState>, input: Normalized) -> RecordBatch {
    commit(strategy, state, input).0
}

#[test]
fn append_adds_everything() {
    let strategy = MergeStrategy::Append(MergeStrategyAppend {});
    let out = merge(&strategy, None, input(&[("a", 1), ("a", 1)], None), "op").unwrap();
    assert_eq!(rows(&out), expect(&[(APPEND, "a", 1), (APPEND, "a", 1)]));
}

#[test]
fn ledger_drops_keys_seen_in_history_or_earlier_in_the_batch() {
    let strategy = MergeStrategy::Ledger(PrimaryKey { primary_key: key() });
    let dir = tempfile::tempdir().unwrap();
    let mut state = open(&strategy, dir.path());
    step(&strategy, &mut state, input(&[("a", 1), ("b", 2)], None));
    let out = step(&strategy, &mut state, input(&[("b", 9), ("c", 3), ("c", 4)], None));
    assert_eq!(rows(&out), expect(&[(APPEND, "c", 3)]));
}

#[test]
fn snapshot_emits_appends_corrections_and_retractions() {
    let strategy =
        MergeStrategy::Snapshot(MergeStrategySnapshot { primary_key: key(), compare_columns: None });
    let dir = tempfile::tempdir().unwrap();
    let mut state = open(&strategy, dir.path());
    step(&strategy, &mut state, input(&[("a", 1), ("b", 2), ("c", 3)], None));
    let out = step(&strategy, &mut state, input(&[("d", 4), ("b", 20), ("a", 1)], None));
    assert_eq!(
        rows(&out),
        expect(&[(CORRECT_FROM, "b", 2), (CORRECT_TO, "b", 20), (RETRACT, "c", 3), (APPEND, "d", 4)])
    );
    let e = merge(&strategy, state.as_mut(), input(&[("a", 1), ("a", 2)], None), "op").unwrap_err();
    assert!(e.to_string().contains("record 2: the snapshot has primary key (key) twice"), "{e}");
}

#[test]
fn snapshot_compares_only_the_compare_columns() {
    let strategy = MergeStrategy::Snapshot(MergeStrategySnapshot {
        primary_key: key(),
        compare_columns: Some(vec!["key".into()]),
    });
    let dir = tempfile::tempdir().unwrap();
    let mut state = open(&strategy, dir.path());
    step(&strategy, &mut state, input(&[("a", 1)], None));
    let out = step(&strategy, &mut state, input(&[("a", 2)], None));
    assert_eq!(out.num_rows(), 0);
}

#[test]
fn changelog_passes_ops_through_and_checks_them() {
    let strategy = MergeStrategy::ChangelogStream(PrimaryKey { primary_key: key() });
    let out = merge(&strategy, None, input(&[("a", 1), ("a", 1)], Some(vec![0, 1])), "op").unwrap();
    assert_eq!(rows(&out), expect(&[(APPEND, "a", 1), (RETRACT, "a", 1)]));
    let e = merge(&strategy, None, input(&[("a", 1)], Some(vec![7])), "op").unwrap_err();
    assert!(e.to_string().contains("record 1: 'op' is 7"), "{e}");
    let e = merge(&strategy, None, input(&[("a", 1)], None), "op").unwrap_err();
    assert!(e.to_string().contains("needs an 'op' column"), "{e}");
}

#[test]
fn upserts_become_appends_corrections_and_retractions() {
    let strategy = MergeStrategy::UpsertStream(PrimaryKey { primary_key: key() });
    let dir = tempfile::tempdir().unwrap();
    let mut state = open(&strategy, dir.path());
    let out = step(&strategy, &mut state, input(&[("a", 1), ("b", 2), ("a", 5)], None));
    assert_eq!(rows(&out), expect(&[(APPEND, "a", 5), (APPEND, "b", 2)]), "the last upsert per key wins");
    // b changes, a is deleted, z (unknown) is deleted: nothing; an unchanged upsert: nothing.
    let out =
        step(&strategy, &mut state, input(&[("b", 3), ("a", 0), ("z", 0), ("b", 3)], Some(vec![0, 1, 1, 0])));
    assert_eq!(rows(&out), expect(&[(RETRACT, "a", 5), (CORRECT_FROM, "b", 2), (CORRECT_TO, "b", 3)]));
    let out = step(&strategy, &mut state, input(&[("b", 3)], None));
    assert_eq!(out.num_rows(), 0);
}

fn strategy(kind: usize) -> MergeStrategy {
    match kind {
        0 => MergeStrategy::Ledger(PrimaryKey { primary_key: key() }),
        1 => MergeStrategy::Snapshot(MergeStrategySnapshot { primary_key: key(), compare_columns: None }),
        _ => MergeStrategy::UpsertStream(PrimaryKey { primary_key: key() }),
    }
}

const KEYS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

proptest! {
    /// The state kept across commits, the state rebuilt by re-reading every committed slice,
    /// and the state restored from disk (a Ledger index) or a checkpoint all merge the next
    /// batch the same way.
    #[test]
    fn incremental_rebuilt_and_restored_states_agree(
        kind in 0usize..3,
        batches in proptest::collection::vec(proptest::collection::btree_map(0usize..6, 0i64..3, 0..6), 1..6),
    ) {
        let strategy = strategy(kind);
        let dir = tempfile::tempdir().unwrap();
        let mut incremental = open(&strategy, &dir.path().join("incremental"));
        let mut committed: Vec<(RecordBatch, u64)> = Vec::new();
        for (round, batch_rows) in batches.into_iter().enumerate() {
            let records: Vec<(&str, i64)> = batch_rows.into_iter().map(|(k, v)| (KEYS[k], v)).collect();

            // Rebuilt from every slice; restored from disk (a Ledger's index, left behind a
            // round ago and caught up) or from a checkpoint.
            let mut rebuilt = open(&strategy, &dir.path().join(format!("rebuilt-{round}")));
            let mut restored = open(&strategy, &dir.path().join("restored"));
            if let (Some(rebuilt), Some(restored), Some(incremental)) = (&mut rebuilt, &mut restored, &incremental) {
                for (slice, end) in &committed {
                    rebuilt.absorb(slice, *end).unwrap();
                }
                match incremental.save().unwrap() {
                    Some(saved) => prop_assert!(restored.load(saved).unwrap()),
                    None => {
                        // Caught up a round ago: behind by the newest slice only.
                        let covered = restored.covered_on_disk().flatten();
                        for (slice, end) in committed.iter().filter(|(_, end)| covered.is_none_or(|c| *end > c)) {
                            restored.absorb(slice, *end).unwrap();
                        }
                    }
                }
            }
            let expected = rows(&merge(&strategy, rebuilt.as_mut(), input(&records, None), "op").unwrap());
            let from_disk = rows(&merge(&strategy, restored.as_mut(), input(&records, None), "op").unwrap());
            drop(restored);
            let (out, end) = commit(&strategy, &mut incremental, input(&records, None));
            prop_assert_eq!(rows(&out), expected.clone());
            prop_assert_eq!(from_disk, expected);
            committed.push((out, end));
        }
    }
}
