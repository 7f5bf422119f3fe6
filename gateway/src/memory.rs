//! What the process asks of glibc's malloc, so that a server running for months on a Pi
//! keeps its resident memory near what it uses.
//!
//! glibc makes up to eight arenas per core as threads contend, keeps the pages of the memory
//! freed inside them, and after a big buffer is freed serves the next ones of that size from
//! its arenas rather than from mmap (its threshold moves up, to 32 MiB): at 100 MQTT devices
//! a heap of 46 MB at its peak (heaptrack) sat in 114 MB of anonymous memory, 61 MB of it one
//! arena of a worker thread. Two arenas, a fixed mmap threshold (a commit's big buffers go
//! back to the system when freed) and the free pages given back every few seconds keep what
//! is resident closer to the heap, at the same CPU per row (README, Performance). mimalloc and jemalloc (features `mimalloc`, `jemalloc` of this
//! crate) were measured too and won on neither CPU nor memory. Other C libraries and
//! allocators are left as they are.

/// Allocations from this size on are mapped on their own and unmapped when freed.
#[cfg(all(target_os = "linux", target_env = "gnu", not(any(feature = "mimalloc", feature = "jemalloc"))))]
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Bounds glibc's malloc to two arenas and fixes its mmap threshold, each unless the
/// environment sets it (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`). Call it first in
/// `main`, before any thread starts.
pub fn tune_malloc() {
    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        not(any(feature = "mimalloc", feature = "jemalloc"))
    ))]
    {
        // SAFETY: mallopt sets tunables; called before other threads exist.
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        }
    }
}

/// Gives the free pages inside malloc's arenas back to the system (malloc_trim(3)).
pub fn release_free_memory() {
    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        not(any(feature = "mimalloc", feature = "jemalloc"))
    ))]
    // SAFETY: malloc_trim only walks malloc's own free lists, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
