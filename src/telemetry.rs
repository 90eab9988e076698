//! Tracing set-up: the first thing the daemon does, so that even a refused config is logged
//! the configured way. `RUST_LOG`, when set, wins over `[log] level`.
//!
//! Journald-friendly: colour codes only when stderr is a terminal, and under systemd
//! (`$JOURNAL_STREAM` set) text lines carry no timestamp of their own, since the journal
//! stamps every line.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (logs go to stderr). Safe to call more than once: later
/// calls are ignored, which is what tests that start several daemons in one process need.
pub fn init(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text if std::env::var_os("JOURNAL_STREAM").is_some() => {
            builder.without_time().try_init()
        }
        LogFormat::Text => builder.try_init(),
    };
}

/// Tracing for commands that run before any config is read (`check-config`, the CLI).
pub fn init_default() {
    init(&LogConfig::default());
}
