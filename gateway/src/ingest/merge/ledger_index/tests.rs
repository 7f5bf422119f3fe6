use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

const FP: &str = "ledger:key|Utf8";

fn keys(names: &[&str]) -> Vec<Vec<u8>> {
    names.iter().map(|n| n.as_bytes().to_vec()).collect()
}

fn small() -> IndexConfig {
    // A tiny recent-key set, so lookups reach the store.
    IndexConfig { recent_keys_bytes: 256, ..IndexConfig::default() }
}

#[test]
fn new_and_duplicate_within_and_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = LedgerIndex::open_with(dir.path(), FP, &small()).unwrap();
    assert_eq!(index.covered(), None);
    // The first occurrence within a batch wins.
    assert_eq!(index.find_new(keys(&["a", "b", "a"])).unwrap(), [true, true, false]);
    index.commit_pending(2).unwrap();
    assert_eq!(index.covered(), Some(2));
    assert_eq!(index.find_new(keys(&["c", "a", "b", "c"])).unwrap(), [true, false, false, false]);
    index.commit_pending(3).unwrap();
    assert_eq!(index.find_new(keys(&["a", "b", "c", "d"])).unwrap(), [false, false, false, true]);
}

#[test]
fn pending_keys_are_duplicates_until_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = LedgerIndex::open(dir.path(), FP).unwrap();
    assert_eq!(index.find_new(keys(&["a"])).unwrap(), [true]);
    assert_eq!(index.find_new(keys(&["a"])).unwrap(), [false]);
    index.rollback();
    assert_eq!(index.find_new(keys(&["a"])).unwrap(), [true]);
}

#[test]
fn survives_reopen_with_its_covered_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut index = LedgerIndex::open(dir.path(), FP).unwrap();
        index.find_new(keys(&["a", "b"])).unwrap();
        index.commit_pending(1).unwrap();
        index.commit(&keys(&["c", "a"]), 3).unwrap();
    }
    let mut index = LedgerIndex::open_with(dir.path(), FP, &small()).unwrap();
    assert_eq!(index.covered(), Some(3));
    assert_eq!(index.find_new(keys(&["a", "b", "c", "d"])).unwrap(), [false, false, false, true]);
}

#[test]
fn uncommitted_keys_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut index = LedgerIndex::open(dir.path(), FP).unwrap();
        index.find_new(keys(&["a"])).unwrap();
        index.commit_pending(0).unwrap();
        // The dataset commit failed for "b"; and "c" was never committed before the end.
        index.find_new(keys(&["b"])).unwrap();
        index.rollback();
        index.find_new(keys(&["c"])).unwrap();
    }
    let mut index = LedgerIndex::open(dir.path(), FP).unwrap();
    assert_eq!(index.covered(), Some(0));
    assert_eq!(index.find_new(keys(&["a", "b", "c"])).unwrap(), [false, true, true]);
}

#[test]
fn calls_out_of_order_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = LedgerIndex::open(dir.path(), FP).unwrap();
    index.commit(&keys(&["a"]), 5).unwrap();
    let behind = index.commit(&keys(&["b"]), 4).unwrap_err();
    assert!(matches!(behind, IndexError::Misuse { problem: Misuse::OffsetBehind { .. }, .. }), "{behind}");
    index.find_new(keys(&["c"])).unwrap();
    let pending = index.commit(&keys(&["d"]), 6).unwrap_err();
    assert!(matches!(pending, IndexError::Misuse { problem: Misuse::PendingKeys(1), .. }), "{pending}");
}

#[test]
fn keys_the_store_cannot_take_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = LedgerIndex::open(dir.path(), FP).unwrap();
    for key in [vec![], vec![b'x'; MAX_KEY + 1]] {
        let error = index.find_new([&key]).unwrap_err();
        assert!(matches!(error, IndexError::KeySize { .. }), "{error}");
        assert!(index.commit(&[&key], 0).is_err());
    }
    assert_eq!(index.find_new([vec![b'x'; MAX_KEY]]).unwrap(), [true]);
}

#[test]
fn reset_empties_the_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut index = LedgerIndex::open(dir.path(), FP).unwrap();
        index.commit(&keys(&["a", "b"]), 1).unwrap();
        index.reset().unwrap();
        assert_eq!(index.covered(), None);
        assert_eq!(index.find_new(keys(&["a"])).unwrap(), [true]);
        index.commit_pending(0).unwrap();
    }
    let mut index = LedgerIndex::open(dir.path(), FP).unwrap();
    assert_eq!(index.covered(), Some(0));
    assert_eq!(index.find_new(keys(&["a", "b"])).unwrap(), [false, true]);
}

#[test]
fn another_fingerprint_is_foreign() {
    let dir = tempfile::tempdir().unwrap();
    LedgerIndex::open(dir.path(), FP).unwrap().commit(&keys(&["a"]), 0).unwrap();
    let error = LedgerIndex::open(dir.path(), "ledger:key|Int64").err().unwrap();
    assert!(matches!(error, IndexError::Foreign { .. }), "{error}");
    assert!(error.needs_rebuild());
    assert!(error.to_string().contains("ledger:key|Utf8"), "{error}");
    // Rebuilt empty for the new keys; the old index is gone.
    let index = LedgerIndex::open_or_recreate(dir.path(), "ledger:key|Int64", &small()).unwrap();
    assert_eq!(index.covered(), None);
}

#[test]
fn a_folder_of_other_files_or_a_broken_index_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let error = LedgerIndex::open(dir.path(), FP).err().unwrap();
    assert!(matches!(error, IndexError::Damaged { .. }), "{error}");

    let dir = tempfile::tempdir().unwrap();
    LedgerIndex::open(dir.path(), FP).unwrap().commit(&keys(&["a"]), 0).unwrap();
    std::fs::write(dir.path().join("version"), "garbage").unwrap();
    let error = LedgerIndex::open(dir.path(), FP).err().unwrap();
    assert!(error.needs_rebuild(), "{error}");
    let index = LedgerIndex::open_or_recreate(dir.path(), FP, &small()).unwrap();
    assert_eq!(index.covered(), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Batches of small keys (so they repeat), each committed or rolled back, with a reopen
    /// now and then: the index answers as a HashSet of the committed keys does.
    #[test]
    fn answers_as_a_hash_set(
        steps in prop::collection::vec(
            (prop::collection::vec(prop::collection::vec(0u8..4, 1..3), 0..12), any::<bool>(), 0u8..8),
            1..20,
        )
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut index = LedgerIndex::open_with(dir.path(), FP, &small()).unwrap();
        let mut model: HashSet<Vec<u8>> = HashSet::new();
        let mut offset = 0;
        for (batch, commits, reopen) in steps {
            let mut seen = HashSet::new();
            let expected: Vec<bool> =
                batch.iter().map(|k| !model.contains(k) && seen.insert(k.clone())).collect();
            prop_assert_eq!(index.find_new(&batch).unwrap(), expected.clone());
            if commits {
                offset += 1;
                index.commit_pending(offset).unwrap();
                model.extend(batch.iter().zip(&expected).filter(|(_, n)| **n).map(|(k, _)| k.clone()));
            } else {
                index.rollback();
            }
            if reopen == 0 {
                drop(index);
                index = LedgerIndex::open_with(dir.path(), FP, &small()).unwrap();
                prop_assert_eq!(index.covered(), (offset > 0).then_some(offset));
            }
        }
    }
}
