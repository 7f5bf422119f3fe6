//! `LedgerIndex`: the primary keys a Ledger dataset has ever held, on disk, so that a merge
//! no longer keeps every key in memory (~100 B a key: 1,000 trackers once a second make 86M
//! keys a day) nor rewrites the whole key set in each checkpoint.
//!
//! # The store: fjall
//!
//! Keys (Arrow row-format bytes, value empty) go into a [fjall](https://docs.rs/fjall) LSM
//! tree. A Ledger's lookups are for keys that are mostly new, and an LSM tree answers "not
//! here" from a bloom filter per table without reading a data block; inserts are appends to
//! a journal and a memtable, never an in-place B-tree page rewrite. redb (a copy-on-write
//! B-tree) was the alternative: every lookup of a new key walks the tree down to a leaf, and
//! with 86M random keys a day the leaves stop fitting in a small cache, so each lookup and
//! each insert becomes page reads and page writes (and a commit rewrites the path to the
//! root). fjall also has atomic write batches across keyspaces (the keys and the covered
//! offset land together), a bounded block cache and bounded memtables, and is maintained.
//! `examples/ledger_index_bench.rs` measures it.
//!
//! # What the index holds
//!
//! - keyspace `keys`: every key of every slice up to the covered offset;
//! - keyspace `meta`: `format` (this module's layout), `fingerprint` (the caller's name for
//!   the key columns and their types: keys of another shape must never be compared with
//!   these), `covered` (the last dataset offset whose keys are in `keys`, big-endian u64).
//!
//! A batch's keys and its covered offset are written in one atomic write batch. Commits are
//! not fsynced by default: the index is a cache of what the dataset's slices say. After a
//! process crash the written batches are in the OS and survive; after a power loss the
//! journal recovers a prefix of the batches, so `covered` may be behind the dataset, never
//! ahead of the keys it claims, and the caller catches up from the slices after it. That is
//! correct because keys are only ever added: a key is in the index only if a committed slice
//! holds it.
//!
//! # Memory
//!
//! Bounded whatever the number of keys: the store's block cache and memtable are small
//! ([`IndexConfig`]), and a bounded set of recent keys sits in front of the store, since a
//! tracker's duplicates are usually recent (QoS redelivery, replays after a reconnect).
//! fjall pins the bloom filters of its first level only; deeper levels' filters and indexes go
//! through the block cache, and the OS page cache keeps the hot ones.
//!
//! # Wiring it into the writer (issue 12 item 6)
//!
//! Per Ledger state signature (`MergeState::signature`), beside the dataset, not inside it:
//! `<data-dir>/.index/<dataset-id>/<hex of the signature>/`. The dataset id (not its name)
//! means a dataset deleted and re-created under the same name never meets the old index.
//!
//! 1. Open with [`LedgerIndex::open_or_recreate`], fingerprint = the state signature plus the
//!    key columns' Arrow types (e.g. `ledger:device_id,seq|Utf8,Int64`).
//! 2. If `covered()` is beyond the dataset's last offset, the dataset's history is not the
//!    one indexed (restored from a backup, rewritten): [`LedgerIndex::reset`].
//! 3. Catch up: for each slice whose `offset_interval.end` is after `covered()` (every slice
//!    if `None`), in order, encode its key columns (every record, whatever its op) with
//!    `KeyEncoder` and call [`LedgerIndex::commit`] with the slice's last offset.
//! 4. Merge: encode the batch's key columns, [`LedgerIndex::find_new`] tells which rows to
//!    keep (first occurrence in the batch wins). If nothing is new, [`LedgerIndex::rollback`]
//!    (a no-op) and commit nothing.
//! 5. After the dataset commit succeeds: [`LedgerIndex::commit_pending`] with the slice's
//!    last offset. If the dataset commit fails: [`LedgerIndex::rollback`]. If
//!    `commit_pending` itself fails, the index is behind the dataset: drop it and open it again
//!    (step 1), which catches up from the slices.
//! 6. Another Ledger signature of the same dataset (another source, other key columns) is fed
//!    each committed slice through step 3's [`LedgerIndex::commit`].
//!
//! With the index in place, the Ledger state no longer goes into checkpoints.

use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

use fjall::config::PartitioningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use hashbrown::DefaultHashBuilder;

use self::key_set::{KeySet, RecentKeys};

const KEYS: &str = "keys";
const META: &str = "meta";
const FORMAT_KEY: &[u8] = b"format";
const FINGERPRINT_KEY: &[u8] = b"fingerprint";
const COVERED_KEY: &[u8] = b"covered";
/// Set while a `reset` runs: an index found with it is cleared again at open.
const RESETTING_KEY: &[u8] = b"resetting";
/// This module's layout; another value means the index was written by another version.
const FORMAT: &[u8] = b"ledger-index/1";
const MIB: u64 = 1024 * 1024;
/// Keys of committed slices held while catching up before they are bulk-loaded.
const CATCH_UP_BYTES: usize = 32 * MIB as usize;
/// Keys written at once from which a bulk load is faster than the memtable.
const BULK_KEYS: usize = 50_000;
/// fjall's limits for a key (it panics outside them).
const MAX_KEY: usize = u16::MAX as usize;

/// Memory and durability knobs. The defaults keep one index's resident memory to a few tens
/// of MB at most, whatever the number of keys.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// The store's block cache (data, index and filter blocks read back from disk).
    pub store_cache_bytes: u64,
    /// The store's in-memory write buffer; when full it is written out as a table. Taken at
    /// creation of the index only (fjall keeps a keyspace's options).
    pub memtable_bytes: u64,
    /// The set of recent keys in front of the store (keys written or found as duplicates),
    /// counted as key bytes plus table entries; the tables' spare room may add as much again.
    pub recent_keys_bytes: usize,
    /// fjall's background threads (flushes, compactions) for this index. Two, so that a
    /// memtable can be flushed while a long compaction runs.
    pub worker_threads: usize,
    /// Open table files kept (fjall's descriptor cache); at least 10.
    pub max_open_files: usize,
    /// fsync every commit. Off by default: the index is a cache (see the module doc).
    pub sync_every_commit: bool,
}

impl Default for IndexConfig {
    fn default() -> IndexConfig {
        IndexConfig {
            store_cache_bytes: 4 * MIB,
            memtable_bytes: 8 * MIB,
            recent_keys_bytes: 8 * MIB as usize,
            worker_threads: 2,
            max_open_files: 64,
            sync_every_commit: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(
        "ledger index {} was built for keys '{found}', not '{expected}'; \
         delete the folder and it is rebuilt from the dataset's slices",
        .dir.display()
    )]
    Foreign { dir: PathBuf, found: String, expected: String },

    #[error(
        "ledger index {} is damaged ({reason}); delete the folder and it is rebuilt from the dataset's slices",
        .dir.display()
    )]
    Damaged { dir: PathBuf, reason: String },

    #[error(
        "ledger index {} is open in another process; stop that process, or give this one another data dir",
        .dir.display()
    )]
    Locked { dir: PathBuf },

    #[error("ledger index {}: {what} failed: {source}; check the disk (space, permissions, errors)", .dir.display())]
    Store { dir: PathBuf, what: &'static str, source: fjall::Error },

    #[error("ledger index {}: {what} failed: {source}; check the disk (space, permissions, errors)", .dir.display())]
    Io { dir: PathBuf, what: &'static str, source: std::io::Error },

    #[error(
        "a primary key takes {len} bytes in Arrow's row format; the Ledger index takes keys of \
         1 to {MAX_KEY} bytes: shorten the key columns' values"
    )]
    KeySize { len: usize },

    #[error("one commit holds more than 4 GiB of new primary keys; ingest the input in parts")]
    TooManyPending,

    #[error("ledger index {}: {problem}; this is a bug in the caller", .dir.display())]
    Misuse {
        dir: PathBuf,
        #[source]
        problem: Misuse,
    },
}

/// A call out of order; the index is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum Misuse {
    #[error("covered offset {offset} is before the covered offset {covered} already held")]
    OffsetBehind { covered: u64, offset: u64 },
    #[error("commit of other keys while {0} keys of a merge are pending (commit_pending or rollback first)")]
    PendingKeys(usize),
}

impl IndexError {
    /// The folder holds no usable index of these keys: delete it and rebuild from the slices.
    pub fn needs_rebuild(&self) -> bool {
        matches!(self, IndexError::Foreign { .. } | IndexError::Damaged { .. })
    }
}

#[derive(Debug, Clone)]
pub struct IndexStats {
    pub approximate_keys: usize,
    /// Memtables, active and sealed (written out by the background thread).
    pub write_buffer_bytes: u64,
    pub block_cache_bytes: u64,
    pub tables: usize,
    pub level0_tables: usize,
    pub journals: usize,
}

pub struct LedgerIndex {
    dir: PathBuf,
    db: Database,
    keys: Keyspace,
    meta: Keyspace,
    covered: Option<u64>,
    sync_every_commit: bool,
    memtable_bytes: u64,
    /// Bytes written since this index last rotated the memtable (see `write`).
    unrotated_bytes: u64,
    hasher: DefaultHashBuilder,
    /// Keys `find_new` reported new and the dataset has not committed yet.
    pending: KeySet,
    /// While catching up: the offset the pending keys cover (they are committed ones).
    catching_up: Option<u64>,
    recent: RecentKeys,
}

impl LedgerIndex {
    /// Opens the index in `dir` with the default configuration, creating it if the folder is
    /// missing or empty.
    pub fn open(dir: &Path, key_schema_fingerprint: &str) -> Result<LedgerIndex, IndexError> {
        LedgerIndex::open_with(dir, key_schema_fingerprint, &IndexConfig::default())
    }

    /// Opens the index in `dir`, creating it if the folder is missing or empty. A folder that
    /// holds something else, an index of other keys or a damaged one is an error for which
    /// [`IndexError::needs_rebuild`] is true.
    pub fn open_with(
        dir: &Path,
        key_schema_fingerprint: &str,
        config: &IndexConfig,
    ) -> Result<LedgerIndex, IndexError> {
        let io = |what| move |source| IndexError::Io { dir: dir.to_owned(), what, source };
        std::fs::create_dir_all(dir).map_err(io("creating the folder"))?;
        // fjall would create its files beside whatever is there; refuse a foreign folder.
        let fresh = std::fs::read_dir(dir).map_err(io("listing the folder"))?.next().is_none();
        if !fresh && !dir.join("version").exists() {
            return Err(damaged(dir, "the folder holds files that are not an index"));
        }
        let db = Database::builder(dir)
            .cache_size(config.store_cache_bytes)
            // fjall panics below these minimums.
            .worker_threads(config.worker_threads.max(1))
            .max_cached_files(Some(config.max_open_files.max(10)))
            .max_journaling_size(64 * MIB)
            .open()
            .map_err(|e| open_error(dir, e))?;
        let meta = db.keyspace(META, KeyspaceCreateOptions::default).map_err(|e| open_error(dir, e))?;
        let memtable = config.memtable_bytes.max(MIB);
        let keys = db
            .keyspace(KEYS, || {
                // Filters and indexes split into block-sized partitions at every level (fjall
                // does it from level 3 only): a lookup then reads a small partition through
                // the small cache, not a whole table's filter (measured: a 1M-key table's
                // filter, reloaded and checksummed for each lookup, made a lookup ~130 us).
                KeyspaceCreateOptions::default()
                    .max_memtable_size(memtable)
                    .filter_block_partitioning_policy(PartitioningPolicy::all(true))
                    .index_block_partitioning_policy(PartitioningPolicy::all(true))
            })
            .map_err(|e| open_error(dir, e))?;
        let hasher = DefaultHashBuilder::default();
        let mut index = LedgerIndex {
            dir: dir.to_owned(),
            db,
            keys,
            meta,
            covered: None,
            sync_every_commit: config.sync_every_commit,
            memtable_bytes: memtable,
            unrotated_bytes: 0,
            pending: KeySet::new(hasher.clone()),
            catching_up: None,
            recent: RecentKeys::new(config.recent_keys_bytes, &hasher),
            hasher,
        };
        index.read_meta(key_schema_fingerprint, fresh)?;
        Ok(index)
    }

    /// Opens the index; one of other keys, or damaged, is deleted and created anew (its
    /// `covered()` is then `None`: the caller feeds it every slice).
    pub fn open_or_recreate(
        dir: &Path,
        key_schema_fingerprint: &str,
        config: &IndexConfig,
    ) -> Result<LedgerIndex, IndexError> {
        match LedgerIndex::open_with(dir, key_schema_fingerprint, config) {
            Err(e) if e.needs_rebuild() => {
                tracing::warn!("{e}: deleting it to rebuild");
                std::fs::remove_dir_all(dir).map_err(|source| IndexError::Io {
                    dir: dir.to_owned(),
                    what: "deleting the index",
                    source,
                })?;
                LedgerIndex::open_with(dir, key_schema_fingerprint, config)
            }
            other => other,
        }
    }

    fn read_meta(&mut self, fingerprint: &str, fresh: bool) -> Result<(), IndexError> {
        let get = |key: &[u8]| self.meta.get(key).map_err(|e| self.store("reading the index's metadata", e));
        let format = get(FORMAT_KEY)?;
        let found = get(FINGERPRINT_KEY)?;
        let covered = get(COVERED_KEY)?;
        let resetting = get(RESETTING_KEY)?.is_some();
        let Some(found) = found else {
            if !fresh {
                return Err(damaged(&self.dir, "it has no fingerprint (its creation did not finish?)"));
            }
            let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
            batch.insert(&self.meta, FORMAT_KEY, FORMAT);
            batch.insert(&self.meta, FINGERPRINT_KEY, fingerprint.as_bytes());
            return batch.commit().map_err(|e| self.store("creating the index", e));
        };
        if format.as_deref() != Some(FORMAT) {
            let format = format.map(|f| String::from_utf8_lossy(&f).into_owned());
            return Err(damaged(&self.dir, &format!("its format is {format:?}, not {:?}", "ledger-index/1")));
        }
        if *found != *fingerprint.as_bytes() {
            return Err(IndexError::Foreign {
                dir: self.dir.clone(),
                found: String::from_utf8_lossy(&found).into_owned(),
                expected: fingerprint.to_owned(),
            });
        }
        if resetting {
            // A reset was cut short: finish it.
            return self.reset();
        }
        self.covered = match covered {
            None => None,
            Some(bytes) => match <[u8; 8]>::try_from(&*bytes) {
                Ok(bytes) => Some(u64::from_be_bytes(bytes)),
                Err(_) => return Err(damaged(&self.dir, "its covered offset is not 8 bytes")),
            },
        };
        Ok(())
    }

    /// The last dataset offset whose keys the index holds; `None` if it holds none.
    pub fn covered(&self) -> Option<u64> {
        self.covered
    }

    /// For a merge: which of `keys` (a batch's key columns in Arrow's row format, in record
    /// order) are new. A key is a duplicate if the index holds it, if an earlier key of this
    /// batch is the same (the first wins), or if it is pending from an earlier call not yet
    /// committed. The new keys become pending: [`commit_pending`](Self::commit_pending) once
    /// the dataset committed them, [`rollback`](Self::rollback) if it did not.
    pub fn find_new<K: AsRef<[u8]>>(
        &mut self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<bool>, IndexError> {
        let mut new = Vec::new();
        for key in keys {
            let key = checked(key.as_ref())?;
            let hash = self.hasher.hash_one(key);
            let is_new = if self.pending.contains(hash, key) || self.recent.contains(hash, key) {
                false
            } else if self.keys.contains_key(key).map_err(|e| self.store("looking up a key", e))? {
                // Found in the store: a redelivery, likely to come again soon.
                self.recent.insert(hash, key);
                false
            } else if self.pending.insert(hash, key) {
                true
            } else {
                return Err(IndexError::TooManyPending);
            };
            new.push(is_new);
        }
        Ok(new)
    }

    /// The dataset committed the pending keys, up to offset `covered`: they and the offset
    /// are written together. On error the keys stay pending; the index is then behind the
    /// dataset (see the module doc, step 5).
    pub fn commit_pending(&mut self, covered: u64) -> Result<(), IndexError> {
        self.check_offset(covered)?;
        let pending = std::mem::replace(&mut self.pending, KeySet::new(self.hasher.clone()));
        let written = self.write(pending.iter(), pending.len(), covered);
        // A bulk load's keys are not the recent ones a redelivery repeats.
        if written.is_ok() && pending.len() < BULK_KEYS {
            for (hash, key) in pending.entries() {
                self.recent.insert(hash, key);
            }
        }
        self.pending = pending;
        if written.is_ok() {
            self.pending.clear();
        }
        written
    }

    /// Takes in the keys of a committed slice (every record, whatever its op and whatever it
    /// repeats) up to offset `covered`, for catching up from the slices. No merge may be
    /// pending.
    pub fn commit<K: AsRef<[u8]>>(&mut self, keys: &[K], covered: u64) -> Result<(), IndexError> {
        self.catch_up(keys, covered)?;
        self.finish_catch_up()
    }

    /// For catching up from many slices: takes in a batch's keys (committed, up to offset
    /// `covered`) and writes them in big sorted loads, not one per batch;
    /// [`finish_catch_up`](Self::finish_catch_up) writes the rest. No merge may be pending.
    pub fn catch_up<K: AsRef<[u8]>>(&mut self, keys: &[K], covered: u64) -> Result<(), IndexError> {
        self.check_offset(covered)?;
        if self.catching_up.is_none() && !self.pending.is_empty() {
            return Err(self.misuse(Misuse::PendingKeys(self.pending.len())));
        }
        for key in keys {
            checked(key.as_ref())?;
        }
        for key in keys {
            let key = key.as_ref();
            if !self.pending.insert(self.hasher.hash_one(key), key) {
                return Err(IndexError::TooManyPending);
            }
        }
        self.catching_up = Some(covered);
        if self.pending.used() >= CATCH_UP_BYTES {
            self.finish_catch_up()?;
        }
        Ok(())
    }

    /// Writes the keys `catch_up` holds, with the offset they cover.
    pub fn finish_catch_up(&mut self) -> Result<(), IndexError> {
        match self.catching_up.take() {
            Some(covered) => self.commit_pending(covered),
            None => Ok(()),
        }
    }

    /// Forgets the pending keys: the dataset did not commit them.
    pub fn rollback(&mut self) {
        self.catching_up = None;
        self.pending.clear();
    }

    /// Empties the index (for a rebuild from every slice). A reset cut short by a crash is
    /// finished at the next open.
    pub fn reset(&mut self) -> Result<(), IndexError> {
        // The marker and the covered offset go first, durably: an index left half-cleared
        // must never claim to cover anything.
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.meta, RESETTING_KEY, b"");
        batch.remove(&self.meta, COVERED_KEY);
        batch.commit().map_err(|e| self.store("starting a reset", e))?;
        self.covered = None;
        self.catching_up = None;
        self.pending.clear();
        self.recent.clear();
        self.keys.clear().map_err(|e| self.store("clearing the keys", e))?;
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.remove(&self.meta, RESETTING_KEY);
        batch.commit().map_err(|e| self.store("finishing a reset", e))
    }

    /// Makes every commit so far durable (fsync), e.g. at shutdown; dropping the index does
    /// it too, as far as it can.
    pub fn persist(&self) -> Result<(), IndexError> {
        self.db.persist(PersistMode::SyncAll).map_err(|e| self.store("syncing", e))
    }

    /// The number of keys, roughly (the store counts a key written twice until compaction).
    pub fn approximate_len(&self) -> usize {
        self.keys.approximate_len()
    }

    /// Bytes the index takes on disk.
    pub fn disk_bytes(&self) -> Result<u64, IndexError> {
        self.db.disk_space().map_err(|e| self.store("measuring the disk space", e))
    }

    /// Figures for metrics and logs: what the store holds in memory and on disk.
    pub fn stats(&self) -> IndexStats {
        IndexStats {
            approximate_keys: self.keys.approximate_len(),
            write_buffer_bytes: self.db.write_buffer_size(),
            block_cache_bytes: self.db.cache_size(),
            tables: self.keys.table_count(),
            level0_tables: self.keys.l0_table_count(),
            journals: self.db.journal_count(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes keys and the covered offset in one atomic batch; many keys (a big ingest, a
    /// rebuild) go straight into a table of their own instead, before the offset.
    fn write<'k>(
        &mut self,
        keys: impl Iterator<Item = &'k [u8]>,
        count: usize,
        covered: u64,
    ) -> Result<(), IndexError> {
        if count >= BULK_KEYS {
            return self.ingest(keys, covered);
        }
        let durability = self.sync_every_commit.then_some(PersistMode::SyncData);
        let mut batch = self.db.batch().durability(durability);
        for key in keys {
            // The key and the memtable's own bookkeeping, roughly.
            self.unrotated_bytes += key.len() as u64 + 32;
            batch.insert(&self.keys, key, b"");
        }
        batch.insert(&self.meta, COVERED_KEY, covered.to_be_bytes());
        batch.commit().map_err(|e| self.store("writing keys", e))?;
        self.covered = Some(covered);
        // fjall asks a background thread to rotate a full memtable; while that thread is in
        // a long compaction the request waits and the memtable grows without bound (measured:
        // 340 MB after 10M keys). Rotating here seals it at once, and fjall then holds writes
        // back once 4 sealed memtables wait for a flush, which bounds memory.
        if self.unrotated_bytes > self.memtable_bytes {
            self.unrotated_bytes = 0;
            self.keys.rotate_memtable().map_err(|e| self.store("sealing the memtable", e))?;
        }
        Ok(())
    }

    /// Bulk load: the keys sorted into new tables (fjall's ingestion bypasses the memtable,
    /// whose skip list made a million inserts take seconds), then the covered offset. Keys
    /// land before the offset that claims them, so a crash in between leaves the index
    /// behind the dataset, never ahead of its keys.
    fn ingest<'k>(&mut self, keys: impl Iterator<Item = &'k [u8]>, covered: u64) -> Result<(), IndexError> {
        let mut sorted: Vec<&[u8]> = keys.collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut ingestion = self.keys.start_ingestion().map_err(|e| self.store("starting a bulk load", e))?;
        for key in sorted {
            ingestion.write(key, &[] as &[u8]).map_err(|e| self.store("bulk loading keys", e))?;
        }
        ingestion.finish().map_err(|e| self.store("finishing a bulk load", e))?;
        let durability = self.sync_every_commit.then_some(PersistMode::SyncData);
        let mut batch = self.db.batch().durability(durability);
        batch.insert(&self.meta, COVERED_KEY, covered.to_be_bytes());
        batch.commit().map_err(|e| self.store("writing the covered offset", e))?;
        self.covered = Some(covered);
        Ok(())
    }

    fn check_offset(&self, offset: u64) -> Result<(), IndexError> {
        match self.covered {
            Some(covered) if offset < covered => Err(self.misuse(Misuse::OffsetBehind { covered, offset })),
            _ => Ok(()),
        }
    }

    fn store(&self, what: &'static str, source: fjall::Error) -> IndexError {
        IndexError::Store { dir: self.dir.clone(), what, source }
    }

    fn misuse(&self, problem: Misuse) -> IndexError {
        IndexError::Misuse { dir: self.dir.clone(), problem }
    }
}

fn checked(key: &[u8]) -> Result<&[u8], IndexError> {
    match key.len() {
        1..=MAX_KEY => Ok(key),
        len => Err(IndexError::KeySize { len }),
    }
}

fn damaged(dir: &Path, reason: &str) -> IndexError {
    IndexError::Damaged { dir: dir.to_owned(), reason: reason.to_owned() }
}

/// fjall's errors at open: a lock held elsewhere, or I/O (permissions, a full disk) are not the
/// index's fault; anything about its contents means it is damaged.
fn open_error(dir: &Path, e: fjall::Error) -> IndexError {
    match e {
        fjall::Error::Locked => IndexError::Locked { dir: dir.to_owned() },
        fjall::Error::Io(source) => IndexError::Io { dir: dir.to_owned(), what: "opening the index", source },
        other => damaged(dir, &format!("{other:?}")),
    }
}

mod key_set;
#[cfg(test)]
mod tests;
