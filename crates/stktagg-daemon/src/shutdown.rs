//! Signals that stop or reload the daemon.

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal as Stream, SignalKind, signal};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: drain and exit.
    Stop,
    /// SIGHUP: reload the configuration.
    Reload,
}

/// The signals the daemon acts on, installed once.
#[derive(Debug)]
pub struct Signals {
    term: Stream,
    int: Stream,
    hup: Stream,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// The next signal. SIGHUPs that arrive during a reload are merged into one
    /// (the kernel coalesces pending signals): the next reload reads the files as
    /// they are then.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => {
                tracing::info!("SIGTERM received");
                Signal::Stop
            }
            _ = self.int.recv() => {
                tracing::info!("SIGINT received");
                Signal::Stop
            }
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
