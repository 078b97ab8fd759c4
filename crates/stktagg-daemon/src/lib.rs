//! The stktagg daemon: sockets, tasks and time around the sans-IO crates.
//!
//! The binary (`src/main.rs`) only parses the command line; everything else is here,
//! as a library, so that tests can run a whole daemon in-process on port 0.
//!
//! # Layout
//! - `load`: configuration files (or the embedded default) to a resolved plan.
//! - `clock`: the one monotonic clock handed to the sans-IO crates.
//! - `section`: one `aggregations` section at run time: its sans-IO core (store,
//!   peers, group election: crate `stktagg-section`) and its tasks' shared handles.
//! - `supervisor`: starts a section's tasks and does its housekeeping.
//! - `listener`: accepts TCP connections and runs the acceptor side of the handshake.
//! - `peer`: one task per configured peer: dials, takes incoming sessions, applies the
//!   collision rule (newest session wins) and reconnect backoff.
//! - `session`: one established peer session: the engine and the section's session
//!   core around a socket.
//! - `tls`: TLS on peer links (rustls): configurations and certificate identity.
//! - `api`: the runtime API on the `stats socket`.
//! - `metrics`: Prometheus names and the exporter.
//! - `logging`: tracing set-up.
//! - `shutdown`: signals and the drain.

pub mod api;
pub mod clock;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod peer;
pub mod section;
pub mod session;
pub mod shutdown;
pub mod supervisor;
pub mod tls;

mod load;

pub use load::{LoadError, Loaded, load, load_str};

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Run-time options that do not come from the configuration file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Prometheus listener, overriding the configuration's.
    pub prometheus: Option<SocketAddr>,
    /// The configuration files the daemon was started with (re-read on SIGHUP);
    /// empty for the embedded default.
    pub config_files: Vec<std::path::PathBuf>,
}

/// A running daemon: its sections and where they listen.
#[derive(Debug)]
pub struct Daemon {
    /// The sections, in configuration order.
    pub sections: Vec<Arc<section::Section>>,
    /// The runtime API sockets' paths (the first one is `api_path`).
    pub api_paths: Vec<std::path::PathBuf>,
    /// The first runtime API socket's path, if any.
    pub api_path: Option<std::path::PathBuf>,
    /// The Prometheus listener, if any.
    pub prometheus: Option<SocketAddr>,
    tasks: tokio::task::JoinSet<()>,
    shutdown: CancellationToken,
}

impl Daemon {
    /// Binds every listener and starts every task. Returns once all listeners are bound.
    pub async fn start(loaded: Loaded, options: Options) -> Result<Daemon> {
        // The exporter first: sessions look their counters up when they start.
        let prometheus = options.prometheus.or(loaded.prometheus);
        if let Some(addr) = prometheus {
            metrics::install(addr)?;
        }
        let shutdown = CancellationToken::new();
        let clock = clock::Clock::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut sections = Vec::new();
        for (i, plan) in loaded.plan.sections.iter().enumerate() {
            let tls = loaded.tls.get(i).cloned().unwrap_or_default();
            let section = section::Section::new(plan.clone(), &loaded.tunables, clock, tls);
            let section = Arc::new(section);
            register_metrics(&section);
            let listener = listener::bind(&section)
                .await
                .with_context(|| format!("section `{}`", section.name))?;
            supervisor::start(&section, listener, &mut tasks, shutdown.clone());
            sections.push(section);
        }
        if prometheus.is_some() {
            tasks.spawn(metrics::process_task(shutdown.clone()));
        }
        let api_paths: Vec<_> = loaded
            .stats_sockets
            .iter()
            .map(|s| s.path.clone())
            .collect();
        // Every `stats socket` line is a listener of its own, with its own level.
        for sock in &loaded.stats_sockets {
            let ctx = api::ApiContext::new(sections.clone(), clock);
            api::start(sock, ctx, &mut tasks, shutdown.clone())
                .await
                .with_context(|| format!("starting the runtime API on {}", sock.path.display()))?;
        }
        Ok(Daemon {
            sections,
            api_path: api_paths.first().cloned(),
            api_paths,
            prometheus,
            tasks,
            shutdown,
        })
    }

    /// The address each section listens on, in configuration order.
    pub fn listen_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.sections
            .iter()
            .map(|s| (s.name.clone(), s.listen_addr()))
            .collect()
    }

    /// A handle that stops the daemon when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, flushes and closes sessions, and waits for every task, at most
    /// `grace`.
    pub async fn stop(mut self, grace: std::time::Duration) {
        self.shutdown.cancel();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!("shutdown grace period elapsed, aborting remaining tasks");
            self.tasks.abort_all();
        }
        for p in &self.api_paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Registers the section's series at 0, before any of its tasks runs (see
/// `metrics`: a peer that never connects must still have `stktagg_peer_up 0`).
fn register_metrics(section: &section::Section) {
    let peers: Vec<&str> = section.peers.iter().map(|p| p.name.as_str()).collect();
    let groups: Vec<metrics::GroupLabels> = section
        .plan
        .groups
        .iter()
        .map(|g| metrics::GroupLabels {
            group: section.group_number(g.id.0 as u16),
            members: g
                .members
                .iter()
                .map(|m| section.peers[m.0].name.clone())
                .collect(),
        })
        .collect();
    metrics::register_section(&section.name, &peers, &groups);
}

/// SIGHUP: re-reads the TLS files of every section (a renewed certificate takes
/// effect for new sessions; established ones keep going), then re-reads and
/// checks the configuration, but does not apply a change.
///
/// Applying peer additions and removals live needs the sections, stores and peer
/// tasks to be rebuilt in place without dropping unchanged sessions; until that is
/// built, a restart applies a new configuration and costs nothing but a resync (the
/// sources' data is rebuilt from them at once, see `docs/decisions.md`). So SIGHUP
/// says whether the files are valid and whether they differ from what runs, and
/// never stops a running daemon.
fn on_sighup(
    files: &[std::path::PathBuf],
    running: &stktagg_topology::Plan,
    sections: &[Arc<section::Section>],
) {
    for s in sections {
        s.reload_tls();
    }
    match load(files) {
        Err(LoadError::Invalid(msg)) => {
            tracing::error!(
                "SIGHUP: the configuration is invalid, keeping the running one:\n{msg}"
            );
        }
        Ok(l) if &l.plan == running => {
            tracing::info!("SIGHUP: the configuration is valid and unchanged");
        }
        Ok(_) => {
            tracing::warn!(
                "SIGHUP: the configuration changed, but live reload is not supported: \
                 restart stktagg to apply it (peers resync at once)"
            );
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT, then drains.
pub async fn run_until_signal(loaded: Loaded, options: Options) -> Result<()> {
    let files = options.config_files.clone();
    let running_plan = loaded.plan.clone();
    let daemon = Daemon::start(loaded, options).await?;
    for (name, addr) in daemon.listen_addrs() {
        tracing::info!(section = %name, %addr, "listening for peers");
        println!("stktagg: section `{name}` listening for peers on {addr}");
    }
    for p in &daemon.api_paths {
        println!("stktagg: runtime API on {}", p.display());
    }
    if let Some(p) = &daemon.prometheus {
        println!("stktagg: Prometheus metrics on http://{p}/metrics");
    }
    let sections = daemon.sections.clone();
    shutdown::wait_for_signal(|| on_sighup(&files, &running_plan, &sections)).await?;
    tracing::info!("shutting down");
    daemon.stop(std::time::Duration::from_secs(5)).await;
    Ok(())
}

#[cfg(test)]
mod tests;
