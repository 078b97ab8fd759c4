//! Signals that stop the daemon.

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

/// Waits for SIGTERM or SIGINT. On SIGHUP, calls `on_hup` and goes on waiting.
pub async fn wait_for_signal(mut on_hup: impl FnMut()) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received");
                return Ok(());
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received");
                return Ok(());
            }
            _ = hup.recv() => on_hup(),
        }
    }
}
