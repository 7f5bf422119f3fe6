//! Where log lines go and how they look: stderr, with colours on a terminal; under systemd
//! (stderr connected to the journal, `JOURNAL_STREAM`) without a time stamp (the journal keeps
//! its own) and with each line's priority as an `sd-daemon(3)` prefix (`<3>` error ... `<7>`
//! debug), so that `journalctl -p warning` finds the warnings.

use std::fmt;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// Installs the log subscriber; `default_filter` applies unless `RUST_LOG` says otherwise.
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if stderr_is_journal() {
        let format = format::format().without_time().with_level(false).with_ansi(false);
        builder.with_ansi(false).event_format(Journald(format)).init();
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
}

/// `JOURNAL_STREAM` is `device:inode` of the journal's socket; it is inherited by children
/// whose stderr may go elsewhere, so it counts only if stderr is that very socket.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(stderr) => dev.parse() == Ok(stderr.dev()) && ino.parse() == Ok(stderr.ino()),
        Err(_) => false,
    }
}

/// Each event with its syslog priority in front, in the format journald reads from a stream.
struct Journald<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
