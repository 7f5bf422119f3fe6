//! Sets of primary keys in memory, for the Ledger index: the keys a merge found new (pending
//! until the dataset commits them) and the recent ones a redelivery tends to repeat.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

/// A table entry (where its key is in the buffer) and its control byte.
const ENTRY: usize = size_of::<(u32, u32)>() + 1;

/// Keys back to back in one buffer, found through a hash table of (start, end): no
/// allocation per key, and 9 bytes of table per key (a million pending keys of a big ingest
/// take ~45 MB with their bytes). Hashes are computed again when the table grows.
pub struct KeySet {
    hasher: DefaultHashBuilder,
    bytes: Vec<u8>,
    table: HashTable<(u32, u32)>,
}

impl KeySet {
    pub fn new(hasher: DefaultHashBuilder) -> KeySet {
        KeySet { hasher, bytes: Vec::new(), table: HashTable::new() }
    }

    fn key(bytes: &[u8], (start, end): (u32, u32)) -> &[u8] {
        bytes.get(start as usize..end as usize).unwrap_or_default()
    }

    pub fn contains(&self, hash: u64, key: &[u8]) -> bool {
        self.table.find(hash, |&entry| KeySet::key(&self.bytes, entry) == key).is_some()
    }

    /// Adds `key` (whose hash by this set's hasher is `hash`); `false` when the set is full
    /// (4 GiB of keys).
    pub fn insert(&mut self, hash: u64, key: &[u8]) -> bool {
        if self.contains(hash, key) {
            return true;
        }
        let (Ok(start), Ok(end)) =
            (u32::try_from(self.bytes.len()), u32::try_from(self.bytes.len() + key.len()))
        else {
            return false;
        };
        self.bytes.extend_from_slice(key);
        let (bytes, hasher) = (&self.bytes, &self.hasher);
        self.table.insert_unique(hash, (start, end), |&entry| hasher.hash_one(KeySet::key(bytes, entry)));
        true
    }

    pub fn entries(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.iter().map(|key| (self.hasher.hash_one(key), key))
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.table.iter().map(|&entry| KeySet::key(&self.bytes, entry))
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes the keys take, counting the table's entries (its spare capacity aside).
    pub fn used(&self) -> usize {
        self.bytes.len() + self.table.len() * ENTRY
    }

    /// Empties the set, keeping its allocations for the next keys.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.table.clear();
    }
}

/// Recent keys within a byte budget, in two generations: when the current one is full, it
/// becomes the previous one and the old previous one is emptied to take new keys. Lookups
/// see both, so the newest half to whole of the budget's keys are always known.
pub struct RecentKeys {
    current: KeySet,
    previous: KeySet,
    /// Per generation.
    limit: usize,
}

impl RecentKeys {
    pub fn new(budget: usize, hasher: &DefaultHashBuilder) -> RecentKeys {
        RecentKeys {
            current: KeySet::new(hasher.clone()),
            previous: KeySet::new(hasher.clone()),
            limit: budget / 2,
        }
    }

    pub fn contains(&self, hash: u64, key: &[u8]) -> bool {
        self.current.contains(hash, key) || self.previous.contains(hash, key)
    }

    pub fn insert(&mut self, hash: u64, key: &[u8]) {
        if self.limit == 0 {
            return;
        }
        if self.current.used() + key.len() + ENTRY > self.limit {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        // Within its small budget the set is never full.
        self.current.insert(hash, key);
    }

    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keys_stay_within_their_budget() {
        let hasher = DefaultHashBuilder::default();
        let mut recent = RecentKeys::new(1_000, &hasher);
        for i in 0..10_000u32 {
            let key = i.to_be_bytes();
            recent.insert(hasher.hash_one(key), &key);
            assert!(recent.current.used() + recent.previous.used() <= 1_000);
        }
        let last = 9_999u32.to_be_bytes();
        assert!(recent.contains(hasher.hash_one(last), &last));
        let first = 0u32.to_be_bytes();
        assert!(!recent.contains(hasher.hash_one(first), &first));
    }
}
