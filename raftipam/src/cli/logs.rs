//! Where the long-running commands (`node`, `shim`, `up`) log: stderr, as journald takes it
//! under systemd. Colour only when stderr is a terminal and `NO_COLOR` is not set (journald
//! would otherwise store the escape codes); `--log-format json` writes one JSON object a line
//! for log shippers. `RUST_LOG` chooses what is logged (default: info, openraft's warnings).

use std::io::IsTerminal;

use clap::ValueEnum;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// Whether log lines may carry colour: stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Starts logging (once per process; later calls change nothing).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}
