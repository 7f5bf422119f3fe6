//! CPU time a server spent, from Linux's `/proc`, so that a figure per row holds on a
//! machine the load generator shares: user plus system time of a process, or of the
//! threads of this process whose name starts with a prefix (the in-process HTTP peer).

/// Clock ticks per second of `/proc`'s times: USER_HZ, 100 on every architecture Linux
/// exports to user space (what `getconf CLK_TCK` prints).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process's user plus system CPU seconds so far.
pub(super) fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    seconds_of(&stat)
}

/// The CPU seconds so far of this process's threads named `prefix…`.
pub(super) fn threads_seconds(prefix: &str) -> Option<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        if name_of(&stat).is_some_and(|name| name.starts_with(prefix)) {
            total += seconds_of(&stat).unwrap_or(0.0);
        }
    }
    Some(total)
}

/// The command name, between the first `(` and the last `)` (it may hold either).
fn name_of(stat: &str) -> Option<&str> {
    Some(&stat[stat.find('(')? + 1..stat.rfind(')')?])
}

/// Fields 14 and 15 of `stat(5)`, utime and stime, counted after the name.
fn seconds_of(stat: &str) -> Option<f64> {
    let mut after = stat[stat.rfind(')')? + 1..].split_whitespace();
    let utime: f64 = after.nth(11)?.parse().ok()?;
    let stime: f64 = after.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (odf (gw) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(name_of(stat), Some("odf (gw) x"));
        assert_eq!(seconds_of(stat), Some(3.0));
        assert!(process_seconds(std::process::id()).is_some());
    }

    #[test]
    fn a_busy_thread_of_this_process_is_counted_by_its_name() {
        let spin = std::thread::Builder::new()
            .name("cpu-test-spin".into())
            .spawn(|| {
                let started = std::time::Instant::now();
                let mut x = 0u64;
                while started.elapsed() < std::time::Duration::from_millis(300) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                threads_seconds("cpu-test-spin")
            })
            .unwrap();
        let seconds = spin.join().unwrap().unwrap();
        assert!(seconds > 0.0, "a thread that spun for 300 ms shows no CPU time");
        assert_eq!(threads_seconds("no-such-thread-name"), Some(0.0));
    }
}
