//! SIGHUP (and `systemctl reload`): a changed configuration applied in place.
//!
//! A reload is all or nothing. The files are loaded and checked first: an
//! invalid file changes nothing and is reported with its errors. Then every new
//! socket is bound (a new section's listener, a moved listener, the stats
//! socket, the metrics listener): if one cannot be, nothing changes either and
//! the reload is reported as failed. Only then is anything changed:
//!
//! - **Sections** that are new start like at start-up; removed ones stop (their
//!   sessions close, their tables go). A section whose plan did not change is not
//!   touched at all.
//! - **Peers** keep their ids across reloads (`stktagg_topology::renumber`), so a
//!   peer that stays keeps its session, its contributions and its counters, even
//!   when peers are inserted or removed around it. A removed peer's session is
//!   closed and its contributions leave the sums at once. A new peer starts like at
//!   start-up. A peer whose role changed (node, `down`, `up`, its group) is a new
//!   peer to us: its session is closed and opened again. A readdressed peer keeps
//!   its running session as long as its new configuration would accept it (its
//!   address is checked by `addr-check` and the session comes from elsewhere: it is
//!   closed); the dialer uses the new address from its next dial.
//! - **Rules and forwards**: a session whose peer's tables are routed otherwise by
//!   the new plan re-routes them and asks the peer for a full resync
//!   (`SessionCore::switch_section`); the lesson puts every entry where it now goes
//!   and what the old routing left is dropped at its end. Sessions whose routing
//!   did not change see nothing.
//! - **Global settings**: timeouts and limits apply to sessions and dials that
//!   start after the reload; `log-level` applies at the next restart.
//! - **Listeners**: a moved peer listener, stats socket or metrics listener is
//!   bound anew and the old one closed; running sessions are not affected. A
//!   `stats socket` line is one socket: one whose path, mode, level, user or
//!   group changed is bound anew, one that is gone is closed and its file
//!   removed.
//! - **TLS**: every certificate, key and CA file named by the configuration is
//!   read again by the load (a renewal needs nothing but a reload): each
//!   section's new handshakes use what was read, established sessions keep the
//!   keys they negotiated. A file that cannot be used makes the configuration
//!   invalid, so the files in force stay.
//!
//! A reload is counted in `stktagg_config_reloads_total{result="ok|invalid|failed"}`,
//! and logged by meaning, one line per change (never by line numbers: a comment
//! added changes nothing).

use crate::load::{ApiSocket, LoadError, Loaded};
use crate::section::Section;
use crate::{Daemon, api, listener, metrics, supervisor};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use stktagg_topology::{PeerId, PlanChange, SectionPlan};
use tokio::net::{TcpListener, UnixListener};

/// How long a reload waits for a stopped peer's session to drain and end.
const PEER_STOP_GRACE: Duration = Duration::from_secs(3);

/// How a reload ended.
#[derive(Debug)]
pub enum Outcome {
    /// The files mean what runs: nothing to do.
    Unchanged,
    /// Applied: what changed, by meaning, one line each.
    Applied(Vec<String>),
    /// The files do not check (the errors, formatted): nothing changed.
    Invalid(String),
    /// The files are valid but could not be applied (a socket could not be
    /// bound): nothing changed.
    Failed(String),
}

impl Outcome {
    /// The `result` label it is counted under.
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Unchanged | Outcome::Applied(_) => "ok",
            Outcome::Invalid(_) => "invalid",
            Outcome::Failed(_) => "failed",
        }
    }

    /// Logs it: what changed, or why nothing did.
    pub fn log(&self) {
        match self {
            Outcome::Unchanged => {
                tracing::info!("reload: the configuration is valid and unchanged");
            }
            Outcome::Applied(lines) => {
                tracing::info!(changes = lines.len(), "reload: configuration applied");
                for l in lines {
                    tracing::info!("reload: {l}");
                }
            }
            Outcome::Invalid(msg) => {
                tracing::error!(
                    "reload: the configuration is invalid, nothing changed (the running one stays):\n{msg}"
                );
            }
            Outcome::Failed(msg) => {
                tracing::error!(
                    "reload: the configuration cannot be applied, nothing changed: {msg}"
                );
            }
        }
    }
}

/// The sockets a reload binds before it changes anything.
#[derive(Default)]
struct Prepared {
    /// New sections, built, and their bound listeners.
    added: Vec<(Arc<Section>, TcpListener)>,
    /// Sections whose listener moved: the new listener and its address.
    moved: Vec<(String, TcpListener, SocketAddr)>,
    /// The stats sockets to open (new, or changed), bound.
    apis: Vec<(ApiSocket, UnixListener)>,
    /// The metrics listener: `Some(None)` closes it.
    metrics: Option<Option<TcpListener>>,
}

impl Daemon {
    /// Applies a newly loaded configuration in place (see the module
    /// documentation), counts and returns the outcome.
    pub async fn reload(&mut self, new: Result<Loaded, LoadError>) -> Outcome {
        let outcome = match new {
            Err(LoadError::Invalid(msg)) => Outcome::Invalid(msg),
            Ok(new) => self.reload_valid(new).await,
        };
        metrics::reload(outcome.result());
        outcome
    }

    async fn reload_valid(&mut self, new: Loaded) -> Outcome {
        // Finished tasks (peers stopped by earlier reloads) are reaped here.
        while self.tasks.try_join_next().is_some() {}
        let mut lines = self.global_changes(&new);
        let plan = stktagg_topology::plan_changes(&self.running.plan, &new.plan);
        lines.extend(plan.iter().flat_map(change_lines));
        if lines.is_empty() {
            // The files named may hold renewed certificates all the same.
            self.set_tls(&new);
            self.running = new;
            return Outcome::Unchanged;
        }
        let prepared = match self.prepare(&new).await {
            Ok(p) => p,
            Err(e) => return Outcome::Failed(format!("{e:#}")),
        };
        lines.extend(self.apply(&new, &plan, prepared).await);
        self.running = new;
        Outcome::Applied(lines)
    }

    /// The metrics listener the configuration asks for (the command line wins).
    fn metrics_addr(&self, l: &Loaded) -> Option<SocketAddr> {
        self.options.prometheus.or(l.prometheus)
    }

    /// Changes outside the sections, by meaning.
    fn global_changes(&self, new: &Loaded) -> Vec<String> {
        let mut out = Vec::new();
        let (a, b) = (&self.running.tunables, &new.tunables);
        let durations = [
            ("timeout hello", a.hello_timeout, b.hello_timeout),
            ("timeout connect", a.connect_timeout, b.connect_timeout),
            ("timeout idle", a.idle_timeout, b.idle_timeout),
            ("tune.heartbeat", a.heartbeat_interval, b.heartbeat_interval),
            ("tune.reconnect-min", a.reconnect_min, b.reconnect_min),
            ("tune.reconnect-max", a.reconnect_max, b.reconnect_max),
        ];
        for (name, x, y) in durations {
            if x != y {
                out.push(format!(
                    "global: {name} {x:?} -> {y:?} (sessions and dials from now on)"
                ));
            }
        }
        if a.max_message_size != b.max_message_size {
            out.push(format!(
                "global: tune.max-message-size {} -> {} (sessions from now on)",
                a.max_message_size, b.max_message_size
            ));
        }
        if self.running.log_level() != new.log_level() {
            out.push(format!(
                "global: log-level {} -> {} (applies at the next restart)",
                self.running.log_level(),
                new.log_level()
            ));
        }
        let sock = |s: &ApiSocket| {
            let id = |x: Option<u32>| x.map_or_else(|| "-".to_owned(), |x| x.to_string());
            format!(
                "{} mode {:o} level {:?} uid {} gid {}",
                s.path.display(),
                s.mode,
                s.level,
                id(s.uid),
                id(s.gid)
            )
        };
        for gone in self
            .running
            .stats_sockets
            .iter()
            .filter(|s| !new.stats_sockets.contains(s))
        {
            out.push(format!("global: stats socket {} closed", sock(gone)));
        }
        for added in new
            .stats_sockets
            .iter()
            .filter(|s| !self.running.stats_sockets.contains(s))
        {
            out.push(format!("global: stats socket {} opened", sock(added)));
        }
        let (m, n) = (self.metrics_addr(&self.running), self.metrics_addr(new));
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
        if m != n {
            out.push(format!("global: prometheus {} -> {}", show(m), show(n)));
        } else if self.options.prometheus.is_some() && self.running.prometheus != new.prometheus {
            out.push(format!(
                "global: prometheus {} in the file is overridden by --prometheus {}",
                show(new.prometheus),
                show(m)
            ));
        }
        out
    }

    /// Binds every socket the new configuration needs and the running one does
    /// not have; on error, what was bound is closed and nothing has changed.
    async fn prepare(&self, new: &Loaded) -> Result<Prepared> {
        let mut p = Prepared::default();
        for (i, plan) in new.plan.sections.iter().enumerate() {
            let Some(running) = self.section(&plan.name) else {
                let section = Arc::new(Section::new(
                    plan.clone(),
                    &new.tunables,
                    self.clock,
                    new.tls.get(i).cloned().unwrap_or_default(),
                    &self.shutdown,
                ));
                let l = listener::bind(&section)
                    .await
                    .with_context(|| format!("section `{}`", plan.name))?;
                p.added.push((section, l));
                continue;
            };
            if running.core().plan.listener != plan.listener {
                // Another spelling of the address we are bound to needs nothing.
                let same = tokio::net::lookup_host(plan.listener.to_string())
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .is_some_and(|a| a == running.listen_addr());
                if !same {
                    let (l, bound) = listener::bind_to(&plan.listener)
                        .await
                        .with_context(|| format!("section `{}`", plan.name))?;
                    p.moved.push((plan.name.clone(), l, bound));
                }
            }
        }
        let (old_addr, new_addr) = (self.metrics_addr(&self.running), self.metrics_addr(new));
        if old_addr != new_addr {
            p.metrics = Some(match new_addr {
                Some(addr) => Some(metrics::bind(addr).await?),
                None => None,
            });
        }
        for sock in &new.stats_sockets {
            if !self.running.stats_sockets.contains(sock) {
                let l = api::bind(sock).with_context(|| {
                    format!("opening the runtime API on {}", sock.path.display())
                })?;
                p.apis.push((sock.clone(), l));
            }
        }
        Ok(p)
    }

    /// Every running section that stays takes the TLS `new` loaded.
    fn set_tls(&self, new: &Loaded) {
        for s in &self.sections {
            if let Some(i) = new.plan.sections.iter().position(|p| p.name == s.name) {
                s.set_tls(new.tls.get(i).cloned().unwrap_or_default());
            }
        }
    }

    fn section(&self, name: &str) -> Option<&Arc<Section>> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Applies `new` with its sockets bound; returns what it did beyond the plan
    /// changes (sessions restarted and why).
    async fn apply(&mut self, new: &Loaded, plan: &[PlanChange], mut p: Prepared) -> Vec<String> {
        let mut notes = Vec::new();
        for s in &self.sections {
            s.set_tunables(&new.tunables);
        }
        self.set_tls(new);
        if let Some(m) = p.metrics.take() {
            match m {
                Some(l) => self.start_metrics(l),
                None => {
                    if let Some(stop) = self.metrics_stop.take() {
                        stop.cancel();
                    }
                    self.prometheus = None;
                }
            }
        }
        let mut sections = Vec::new();
        for section_plan in &new.plan.sections {
            if let Some(i) = p
                .added
                .iter()
                .position(|(s, _)| s.name == section_plan.name)
            {
                let (section, l) = p.added.swap_remove(i);
                crate::register_metrics(&section);
                supervisor::start(&section, l, &mut self.tasks);
                sections.push(section);
                continue;
            }
            let Some(section) = self.section(&section_plan.name).cloned() else {
                continue;
            };
            let changed = plan.iter().any(
                |c| matches!(c, PlanChange::Section { name, .. } if *name == section_plan.name),
            );
            if changed {
                let moved = p
                    .moved
                    .iter()
                    .position(|(n, _, _)| *n == section_plan.name)
                    .map(|i| p.moved.swap_remove(i));
                notes.extend(
                    self.apply_section(&section, section_plan.clone(), moved)
                        .await,
                );
            }
            sections.push(section);
        }
        for s in &self.sections {
            if !sections.iter().any(|n| Arc::ptr_eq(n, s)) {
                s.cancel.cancel();
            }
        }
        self.sections = sections;
        self.publish_sections();
        // Sockets that are gone, or changed (their new one is bound already: a
        // socket at the same path keeps its file).
        let gone: Vec<std::path::PathBuf> = self
            .running
            .stats_sockets
            .iter()
            .filter(|s| !new.stats_sockets.contains(s))
            .map(|s| s.path.clone())
            .collect();
        for path in gone {
            let rebound = p.apis.iter().any(|(s, _)| s.path == path);
            self.stop_api(&path, rebound);
        }
        for (sock, l) in std::mem::take(&mut p.apis) {
            self.start_api(&sock, l);
        }
        notes
    }

    /// Moves one running section to its new plan (see the module documentation).
    async fn apply_section(
        &mut self,
        section: &Arc<Section>,
        fresh: SectionPlan,
        moved: Option<(String, TcpListener, SocketAddr)>,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        let old = section.core();
        let (plan, slots) = stktagg_topology::renumber(fresh, &section.slots());
        let mut retired: Vec<PeerId> = Vec::new();
        let mut restarted: Vec<PeerId> = Vec::new();
        for p in old.live_peers() {
            let Some(np) = plan.peer(p.id) else {
                retired.push(p.id);
                continue;
            };
            let remote = crate::section::lock(&p.stats.addrs)
                .as_ref()
                .and_then(|(_, r)| r.parse::<SocketAddr>().ok());
            if np.role != p.role {
                restarted.push(p.id);
                notes.push(format!(
                    "section `{}`: peer `{}`: session restarted (its role changed)",
                    section.name, p.name
                ));
            } else if let Some(remote) = remote.filter(|r| !np.accepts_from(r.ip())) {
                restarted.push(p.id);
                notes.push(format!(
                    "section `{}`: peer `{}`: session from {remote} closed (addr-check now refuses it)",
                    section.name, p.name
                ));
            }
        }
        let added: Vec<PeerId> = plan
            .peers
            .iter()
            .filter(|p| !old.is_live(p.id))
            .map(|p| p.id)
            .collect();
        // Sessions that end, end under the plan they ran with: their last
        // election and counts are the old plan's.
        for id in retired.iter().chain(&restarted) {
            section.stop_peer(*id, PEER_STOP_GRACE).await;
        }
        let next = old.successor(plan, slots.peer_count());
        section.publish(next, slots);
        let core = section.core();
        let now = section.clock.now_ms();
        for id in &retired {
            core.retire(*id, now, section.resync.as_ref());
        }
        // A rule's `size` applies to its tables at once (a smaller one evicts
        // nothing: new keys wait for room).
        for t in section.store.table_summaries() {
            if t.kind == stktagg_store::TableKind::Output {
                let size = core.plan.output_size(&String::from_utf8_lossy(&t.name));
                section.store.set_limit(t.id, size);
            }
        }
        for id in restarted.iter().chain(&added) {
            section.renew_mailbox(*id);
            supervisor::start_peer(section, *id, &mut self.tasks);
        }
        // Every group settles under the new plan (members added, removed, reordered).
        for g in &core.plan.groups {
            core.elect(g.id.0 as u16, now, section.resync.as_ref());
        }
        let names: Vec<&str> = added
            .iter()
            .filter_map(|id| core.peers.get(id.0).map(|p| p.name.as_str()))
            .collect();
        let new_groups: Vec<metrics::GroupLabels> = crate::group_labels(&core)
            .into_iter()
            .filter(|g| {
                !old.plan
                    .groups
                    .iter()
                    .any(|o| old.group_number(o.id.0 as u16) == g.group)
            })
            .collect();
        metrics::register_section(&section.name, &names, &new_groups);
        if let Some((_, l, bound)) = moved {
            supervisor::start_listener(section, l, &mut self.tasks);
            section.set_listen_addr(bound);
        }
        notes
    }

    /// The systemd status line: what runs.
    pub fn status_line(&self) -> String {
        let peers: usize = self
            .sections
            .iter()
            .map(|s| s.core().live_peers().count())
            .sum();
        format!(
            "{} section(s), {peers} peer(s), configuration from {}",
            self.sections.len(),
            self.running.source
        )
    }
}

/// A plan change as log lines: one per change.
fn change_lines(c: &PlanChange) -> Vec<String> {
    match c {
        PlanChange::Section { name, changes } => changes
            .iter()
            .map(|ch| format!("section `{name}`: {ch}"))
            .collect(),
        other => vec![other.to_string()],
    }
}
