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
//! - `reload`: SIGHUP: a changed configuration applied in place.
//! - `notify`: systemd's readiness notifications.
//! - `shutdown`: signals and the drain.

pub mod api;
pub mod clock;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod peer;
pub mod reload;
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
    /// The Prometheus listener's bound address, if any.
    pub prometheus: Option<SocketAddr>,
    tasks: tokio::task::JoinSet<()>,
    shutdown: CancellationToken,
    clock: clock::Clock,
    /// The configuration in force.
    running: Loaded,
    options: Options,
    /// The sections as the runtime API sees them.
    shared: api::SharedSections,
    api: api::ApiContext,
    /// The runtime API sockets served, each with what stops it (a reload that
    /// moves or removes it).
    apis: Vec<(load::ApiSocket, CancellationToken)>,
    /// Stops the metrics listener (a reload that moves it).
    metrics_stop: Option<CancellationToken>,
}

impl Daemon {
    /// Binds every listener and starts every task. Returns once all listeners are bound.
    pub async fn start(loaded: Loaded, options: Options) -> Result<Daemon> {
        let shutdown = CancellationToken::new();
        let clock = clock::Clock::new();
        let shared = api::SharedSections::default();
        let mut d = Daemon {
            sections: Vec::new(),
            api_paths: Vec::new(),
            api_path: None,
            prometheus: None,
            tasks: tokio::task::JoinSet::new(),
            shutdown,
            clock,
            api: api::ApiContext::shared(shared.clone(), clock),
            shared,
            running: loaded.clone(),
            options,
            apis: Vec::new(),
            metrics_stop: None,
        };
        // The recorder first: sessions look their counters up when they start.
        metrics::install_recorder()?;
        d.tasks.spawn(metrics::process_task(d.shutdown.clone()));
        let prometheus = d.options.prometheus.or(loaded.prometheus);
        if let Some(addr) = prometheus {
            let listener = metrics::bind(addr).await?;
            d.start_metrics(listener);
        }
        for (i, plan) in loaded.plan.sections.iter().enumerate() {
            let section = Arc::new(section::Section::new(
                plan.clone(),
                &loaded.tunables,
                clock,
                loaded.tls.get(i).cloned().unwrap_or_default(),
                &d.shutdown,
            ));
            register_metrics(&section);
            let listener = listener::bind(&section)
                .await
                .with_context(|| format!("section `{}`", section.name))?;
            supervisor::start(&section, listener, &mut d.tasks);
            d.sections.push(section);
        }
        d.publish_sections();
        // Every `stats socket` line is a listener of its own, with its own level.
        for sock in &loaded.stats_sockets {
            let listener = api::bind(sock)
                .with_context(|| format!("starting the runtime API on {}", sock.path.display()))?;
            d.start_api(sock, listener);
        }
        Ok(d)
    }

    /// Serves the metrics on `listener` (replacing the listener before, if any).
    fn start_metrics(&mut self, listener: tokio::net::TcpListener) {
        self.prometheus = listener.local_addr().ok();
        let stop = self.shutdown.child_token();
        if let Some(old) = self.metrics_stop.replace(stop.clone()) {
            old.cancel();
        }
        self.tasks.spawn(metrics::serve(listener, stop));
    }

    /// Serves the runtime API socket `sock` on `listener`.
    fn start_api(&mut self, sock: &load::ApiSocket, listener: tokio::net::UnixListener) {
        let stop = self.shutdown.child_token();
        api::serve(
            listener,
            sock.level,
            self.api.clone(),
            &mut self.tasks,
            stop.clone(),
        );
        self.apis.push((sock.clone(), stop));
        self.publish_api_paths();
    }

    /// Stops serving the runtime API socket at `path`; removes its file unless
    /// `keep_file` (a new socket was bound at the same path).
    fn stop_api(&mut self, path: &std::path::Path, keep_file: bool) {
        self.apis.retain(|(s, stop)| {
            if s.path != path {
                return true;
            }
            stop.cancel();
            false
        });
        if !keep_file {
            let _ = std::fs::remove_file(path);
        }
        self.publish_api_paths();
    }

    fn publish_api_paths(&mut self) {
        self.api_paths = self.apis.iter().map(|(s, _)| s.path.clone()).collect();
        self.api_path = self.api_paths.first().cloned();
    }

    /// Shows the runtime API the sections as they are now.
    fn publish_sections(&self) {
        *self
            .shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = self.sections.clone();
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
    let core = section.core();
    let peers: Vec<&str> = core.live_peers().map(|p| p.name.as_str()).collect();
    metrics::register_section(&section.name, &peers, &group_labels(&core));
}

/// Each `up` group's label and members, for the metrics.
fn group_labels(
    core: &stktagg_section::SectionCore<stktagg_store::Store>,
) -> Vec<metrics::GroupLabels> {
    core.plan
        .groups
        .iter()
        .map(|g| metrics::GroupLabels {
            group: core.group_number(g.id.0 as u16),
            members: g
                .members
                .iter()
                .map(|m| core.peers[m.0].name.clone())
                .collect(),
        })
        .collect()
}

/// Runs the daemon until SIGTERM or SIGINT, then drains; SIGHUP reloads the
/// configuration files ([`Daemon::reload`]).
pub async fn run_until_signal(loaded: Loaded, options: Options) -> Result<()> {
    let files = options.config_files.clone();
    // Installed before anything is bound: a signal during start-up is not lost.
    let mut signals = shutdown::Signals::install()?;
    let mut daemon = Daemon::start(loaded, options).await?;
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
    notify::ready(&daemon.status_line());
    while signals.next().await == shutdown::Signal::Reload {
        notify::reloading();
        let outcome = daemon.reload(load(&files)).await;
        outcome.log();
        notify::ready(&format!(
            "{}; last reload: {}",
            daemon.status_line(),
            match outcome.result() {
                "ok" => "applied",
                "invalid" => "refused, the files are invalid (see the journal)",
                _ => "refused, it could not be applied (see the journal)",
            }
        ));
    }
    notify::stopping();
    tracing::info!("shutting down");
    daemon.stop(std::time::Duration::from_secs(5)).await;
    Ok(())
}

#[cfg(test)]
mod tests;
