//! Durable file operations. A file becomes visible under its final name only once its bytes
//! are on disk: write a temp file beside it, fsync it, rename it over the target, fsync the
//! folder. A crash at any instant leaves either the old file or the new one, never a torn one.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Temp files start with this; whatever a crash left behind is removed by `remove_temp_files`.
pub const TEMP_PREFIX: &str = ".tmp-";

/// An I/O failure with what was being done and to which path. The `io::Error` is part of
/// the message rather than a `source`, so that error chains do not print it twice.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {error}")]
pub struct IoError {
    pub action: &'static str,
    pub path: PathBuf,
    pub error: io::Error,
}

pub trait Context<T> {
    fn context(self, action: &'static str, path: &Path) -> Result<T, IoError>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, action: &'static str, path: &Path) -> Result<T, IoError> {
        self.map_err(|error| IoError { action, path: path.to_owned(), error })
    }
}

/// A name for a temp file in `dir` that no other writer picks.
pub fn temp_path(dir: &Path) -> PathBuf {
    let mut nonce = [0u8; 8];
    // Falling back to the clock is fine: the pid and time still make the name unique here.
    if getrandom::fill(&mut nonce).is_err() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        nonce = (now.as_nanos() as u64).to_le_bytes();
    }
    dir.join(format!("{TEMP_PREFIX}{}-{}", std::process::id(), hex::encode(nonce)))
}

/// Replaces (or creates) `path` with `bytes`, atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let dir = parent(path);
    let temp = temp_path(dir);
    let result = (|| {
        write_synced(&temp, bytes)?;
        fs::rename(&temp, path).context("rename into place", path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Writes a new file and waits until its bytes are on disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let mut file = File::create(path).context("create", path)?;
    file.write_all(bytes).context("write", path)?;
    file.sync_all().context("sync", path)
}

/// Makes a folder's entries (new names, renames) durable.
pub fn sync_dir(dir: &Path) -> Result<(), IoError> {
    File::open(dir).and_then(|d| d.sync_all()).context("sync folder", dir)
}

pub fn create_dir(dir: &Path) -> Result<(), IoError> {
    fs::create_dir_all(dir).context("create folder", dir)
}

/// Writes a secret readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).context("create", path)?;
    file.write_all(bytes).context("write", path)?;
    file.sync_all().context("sync", path)
}

/// Why an exclusive lock was not taken.
#[derive(Debug)]
pub enum LockError {
    Io(IoError),
    /// Another process held it for longer than the time allowed; `holder` is what it wrote
    /// in the lock file (its pid).
    TimedOut {
        holder: String,
        waited: Duration,
    },
}

/// Takes an exclusive lock on `path` (created if missing), across processes, waiting at
/// most `timeout` for another holder. The holder's pid is written into the file so that a
/// waiter can say whom it waits for. Released when the returned file is dropped.
pub fn lock_file(path: &Path, timeout: Duration) -> Result<File, LockError> {
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .context("open", path)
        .map_err(LockError::Io)?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(LockError::Io(IoError { action: "lock", path: path.to_owned(), error: e }));
            }
        }
        let waited = started.elapsed();
        let holder = || {
            fs::read_to_string(path)
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map_or_else(|| "another writer".to_string(), |pid| format!("process {}", pid.trim()))
        };
        if waited >= timeout {
            return Err(LockError::TimedOut { holder: holder(), waited });
        }
        if !told && waited >= Duration::from_secs(1) {
            tracing::warn!(
                "waiting for the write lock {}, held by {} (giving up after {} s)",
                path.display(),
                holder(),
                timeout.as_secs()
            );
            told = true;
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    // Best effort: the pid only serves messages.
    let _ = file.set_len(0).and_then(|()| file.write_all(std::process::id().to_string().as_bytes()));
    Ok(file)
}

/// Removes temp files (and folders) that writers which are no longer running left in `dir`.
/// Files of live processes are kept: another writer may be staging them.
pub fn remove_temp_files(dir: &Path) -> Result<(), IoError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("list", dir),
    };
    for entry in entries {
        let entry = entry.context("list", dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.strip_prefix(TEMP_PREFIX).is_some_and(|rest| !writer_alive(rest)) {
            let path = entry.path();
            let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            removed.context("remove stale temp file", &path)?;
        }
    }
    Ok(())
}

/// Whether the process that named a temp file `<pid>-<nonce>` may still be writing it.
fn writer_alive(name: &str) -> bool {
    name.split('-').next().and_then(|p| p.parse::<u32>().ok()).is_some_and(process_alive)
}

/// Whether process `pid` may be running. Where that cannot be known (no /proc), it is
/// assumed to be, so that its files are kept.
pub fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // A pid no process has (beyond pid_max), and a malformed name.
        fs::write(dir.path().join(format!("{TEMP_PREFIX}4294967295-00")), b"half").unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}junk")), b"half").unwrap();
        // This process is alive: its file may be in the middle of being staged.
        let live = temp_path(dir.path());
        fs::write(&live, b"staging").unwrap();
        fs::write(dir.path().join("keep"), b"x").unwrap();
        remove_temp_files(dir.path()).unwrap();
        let mut names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        let mut expected = vec![dir.path().join("keep"), live];
        expected.sort();
        assert_eq!(names, expected);
    }
}
