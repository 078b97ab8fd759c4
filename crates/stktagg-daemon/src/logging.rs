//! Logging set-up: readable lines by default, JSON lines on request.

use anyhow::{Result, anyhow};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` is a tracing filter (`info`,
/// `stktagg_daemon=debug`, ...); `RUST_LOG` wins when set.
pub fn init(level: &str, json: bool) -> Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .map_err(|e| anyhow!("bad log level `{level}`: {e}"))?;
    use std::io::IsTerminal;
    // Colours only on a terminal: not in files, pipes or the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let res = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    res.map_err(|e| anyhow!("installing the logger: {e}"))
}
