//! One `aggregations` section at run time.
//!
//! A section owns its store, its listener and one task per peer. Sections share
//! nothing: each is an independent aggregation domain.

use crate::clock::Clock;
use crate::load::Tunables;
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use stktagg_store::{SourceId, Store, StoreOptions};
use stktagg_topology::{PeerId, Role, SectionPlan};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Locks a mutex, ignoring poisoning: the data under our mutexes stays consistent
/// whatever a panicking holder did (plain values replaced whole).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A TCP connection whose handshake is done, on its way to its peer task.
#[derive(Debug)]
pub struct Incoming {
    /// The connection.
    pub stream: TcpStream,
    /// The protocol engine, established (it holds any bytes read after the hello).
    pub engine: stktagg_session::PeerSession,
    /// The peer's address.
    pub remote: SocketAddr,
    /// We dialed this session (else the peer did).
    pub dialed: bool,
}

impl Section {
    /// The engine configuration for this section's sessions (the resync policy is
    /// set per peer once the peer is known: [`crate::session::resync_policy`]).
    pub fn session_config(&self) -> stktagg_session::SessionConfig {
        let t = &self.tunables;
        stktagg_session::SessionConfig {
            pid: std::process::id(),
            max_message_len: t.max_message_size,
            hello_timeout_ms: t.hello_timeout.as_millis() as u64,
            heartbeat_ms: t.heartbeat_interval.as_millis() as u64,
            idle_timeout_ms: t.idle_timeout.as_millis() as u64,
            ..stktagg_session::SessionConfig::new(self.local_name.clone())
        }
    }
}

/// A peer session's state, as shown by `show peers` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SessionState {
    /// No session and no attempt in progress.
    Idle = 0,
    /// Dialing or in the handshake.
    Connecting = 1,
    /// Established.
    Established = 2,
}

impl SessionState {
    /// The word `show peers` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Idle => "IDLE",
            SessionState::Connecting => "CONN",
            SessionState::Established => "ESTA",
        }
    }
}

/// Counters and state of one peer, read by the runtime API and the metrics.
#[derive(Debug, Default)]
pub struct PeerStats {
    state: AtomicU8,
    /// Updates received.
    pub updates_in: AtomicU64,
    /// Updates sent.
    pub updates_out: AtomicU64,
    /// Full resyncs received from this peer (its FINISHED after our request).
    pub resyncs_in: AtomicU64,
    /// Full resyncs we taught this peer.
    pub resyncs_out: AtomicU64,
    /// Sessions established, after the first.
    pub reconnects: AtomicU64,
    /// Sessions established in all.
    pub sessions: AtomicU64,
    /// Sessions replaced by a newer one (collisions).
    pub collisions: AtomicU64,
    /// Sessions ended by bad input from the peer.
    pub protocol_errors: AtomicU64,
    /// Clock reading of the last established hello, 0 if never.
    pub last_hello_ms: AtomicU64,
    /// Clock reading of the last message received, 0 if never.
    pub last_rx_ms: AtomicU64,
    /// Clock reading of the last heartbeat received, 0 if never.
    pub last_heartbeat_ms: AtomicU64,
    /// The peer's last full resync to us ended with FINISHED (for `up` peers: it can
    /// be the group's active member; for sources: we hold its data).
    pub resynced: std::sync::atomic::AtomicBool,
    /// Why the last session ended.
    pub last_error: Mutex<Option<String>>,
    /// Limits this peer's warning lines (failed sessions, dial errors).
    pub log_limit: crate::ratelimit::LogLimiter,
}

impl PeerStats {
    /// The session state.
    pub fn state(&self) -> SessionState {
        match self.state.load(Ordering::Relaxed) {
            1 => SessionState::Connecting,
            2 => SessionState::Established,
            _ => SessionState::Idle,
        }
    }

    /// Sets the session state.
    pub fn set_state(&self, s: SessionState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }
}

/// One configured peer of a section (never the `local` one).
#[derive(Debug)]
pub struct PeerRuntime {
    /// Index in the section's peer list; also the store's source id.
    pub id: PeerId,
    /// The peer's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Where to dial it (host and port), if it has an address.
    pub addr: Option<(String, u16)>,
    /// Counters.
    pub stats: PeerStats,
    incoming_tx: mpsc::Sender<Incoming>,
    incoming_rx: Mutex<Option<mpsc::Receiver<Incoming>>>,
    resync: Arc<tokio::sync::Notify>,
}

impl PeerRuntime {
    /// Hands a freshly accepted session to the peer's task (newest session wins).
    pub async fn hand_over(&self, incoming: Incoming) {
        // The channel holds one pending session; a second one replaces nothing but
        // waits, which is fine: the task takes sessions as fast as they come.
        let _ = self.incoming_tx.send(incoming).await;
    }

    /// Asks the running session (or the next one) to request a full resync.
    pub fn request_resync(&self) {
        self.resync.notify_one();
    }

    /// What a session waits on for [`PeerRuntime::request_resync`].
    pub fn resync_flag(&self) -> Arc<tokio::sync::Notify> {
        self.resync.clone()
    }

    /// The store's id for this peer as a source.
    pub fn source_id(&self) -> SourceId {
        SourceId(self.id.0 as u16)
    }

    /// Whether this peer sends us input tables (a node or a `down` aggregator).
    pub fn is_source(&self) -> bool {
        matches!(self.role, Role::Source(_))
    }

    /// The `up` group of this peer, if it is an upstream.
    pub fn group(&self) -> Option<u16> {
        match self.role {
            Role::Upstream { group } => Some(group.0 as u16),
            Role::Source(_) => None,
        }
    }
}

/// Which member of each `up` group is relayed.
#[derive(Debug, Default)]
pub struct Groups {
    /// Per group id, the active member (if any).
    active: Mutex<std::collections::BTreeMap<u16, Option<PeerId>>>,
    /// Member switches, all groups.
    pub switches: AtomicU64,
}

/// One `aggregations` section.
#[derive(Debug)]
pub struct Section {
    /// The section name.
    pub name: String,
    /// Our local peer name.
    pub local_name: String,
    /// The resolved plan.
    pub plan: SectionPlan,
    /// The tables.
    pub store: Arc<Store>,
    /// Tunables (timeouts, limits).
    pub tunables: Tunables,
    /// The clock.
    pub clock: Clock,
    /// Peers by id (never the local one).
    pub peers: Vec<PeerRuntime>,
    /// The `up` groups.
    pub groups: Groups,
    /// Clock reading at start.
    pub started_ms: u64,
    /// Limits warning lines about rejected hellos (they come from anyone).
    pub reject_log_limit: crate::ratelimit::LogLimiter,
    listen_addr: OnceLock<SocketAddr>,
}

impl Section {
    /// Builds a section from its plan.
    pub fn new(plan: SectionPlan, tunables: &Tunables, clock: Clock) -> Section {
        let peers = plan
            .peers
            .iter()
            .map(|p| {
                let (tx, rx) = mpsc::channel(1);
                PeerRuntime {
                    id: p.id,
                    name: p.name.clone(),
                    role: p.role,
                    addr: p.addr.as_ref().map(|a| (a.host.clone(), a.port)),
                    stats: PeerStats::default(),
                    incoming_tx: tx,
                    incoming_rx: Mutex::new(Some(rx)),
                    resync: Arc::default(),
                }
            })
            .collect();
        let groups = Groups::default();
        for g in plan.groups.iter() {
            lock(&groups.active).insert(g.id.0 as u16, None);
        }
        Section {
            name: plan.name.clone(),
            local_name: plan.local_name.clone(),
            store: Arc::new(Store::new(StoreOptions::default())),
            tunables: tunables.clone(),
            clock,
            peers,
            groups,
            started_ms: clock.now_ms(),
            reject_log_limit: crate::ratelimit::LogLimiter::default(),
            listen_addr: OnceLock::new(),
            plan,
        }
    }

    /// The peer called `name`, if it is one of ours (the local peer is not).
    pub fn peer_by_name(&self, name: &str) -> Option<usize> {
        self.peers.iter().position(|p| p.name == name)
    }

    /// The configured listen address, resolved.
    pub async fn configured_listen_addr(&self) -> Result<SocketAddr> {
        let a = &self.plan.listener;
        let mut addrs = tokio::net::lookup_host((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("resolving {}:{}", a.host, a.port))?;
        match addrs.next() {
            Some(addr) => Ok(addr),
            None => bail!("{}:{} resolves to no address", a.host, a.port),
        }
    }

    /// Records the address actually bound.
    pub fn set_listen_addr(&self, addr: SocketAddr) {
        let _ = self.listen_addr.set(addr);
    }

    /// The address the section listens on (after `bind`).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
            .get()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Whether we hold complete data ourselves: every source has finished a full
    /// resync to us since we started, or the start-up grace period is over (a source
    /// that never comes back must not keep us incomplete forever). A peer that asks
    /// us for a resync is answered FINISHED when this holds, PARTIAL otherwise, as
    /// HAProxy does with its own resync state; an aggregator below us then waits for
    /// a FINISHED before it relays our tables.
    pub fn up_to_date(&self) -> bool {
        let grace = self.tunables.startup_grace.as_millis() as u64;
        self.clock.now_ms().saturating_sub(self.started_ms) >= grace
            || self
                .peers
                .iter()
                .filter(|p| p.is_source())
                .all(|p| p.stats.resynced.load(Ordering::Relaxed))
    }

    /// The number of `group` as written in the configuration, for logs and displays.
    pub fn group_number(&self, group: u16) -> String {
        self.plan
            .groups
            .get(group as usize)
            .and_then(|g| g.number)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("#{group}"))
    }

    /// The member of `group` currently relayed.
    pub fn active_member(&self, group: u16) -> Option<PeerId> {
        lock(&self.groups.active).get(&group).copied().flatten()
    }

    /// Re-elects the active member of `group`: the first member in configuration
    /// order whose session is established and fully resynced. Returns the new active
    /// member if it changed.
    pub fn elect(&self, group: u16) -> Option<Option<PeerId>> {
        let g = self.plan.groups.iter().find(|g| g.id.0 == group as usize)?;
        let best = g.members.iter().copied().find(|m| {
            let stats = &self.peers[m.0].stats;
            stats.state() == SessionState::Established && stats.resynced.load(Ordering::Relaxed)
        });
        let mut active = lock(&self.groups.active);
        let slot = active.entry(group).or_insert(None);
        if *slot == best {
            return None;
        }
        *slot = best;
        drop(active);
        self.groups.switches.fetch_add(1, Ordering::Relaxed);
        crate::metrics::group_switch(&self.name, &self.group_number(group));
        tracing::info!(section = %self.name, group = %self.group_number(group), active = ?best.map(|m| self.peers[m.0].name.as_str()), "group active member changed");
        Some(best)
    }
}

/// Starts the section's tasks: listener, one task per peer, housekeeping.
pub fn start(
    section: &Arc<Section>,
    listener: tokio::net::TcpListener,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: CancellationToken,
) {
    tasks.spawn(crate::listener::run(
        section.clone(),
        listener,
        shutdown.clone(),
    ));
    for peer in section.peers.iter() {
        let Some(rx) = lock(&peer.incoming_rx).take() else {
            continue;
        };
        tasks.spawn(crate::peer::run(
            section.clone(),
            peer.id,
            rx,
            shutdown.clone(),
        ));
    }
    tasks.spawn(housekeeping(section.clone(), shutdown));
}

/// Expires contributions and re-publishes decaying rates.
///
/// The rate refresh checks each key with a non-zero rate against what receivers read
/// from its published counter. It visits at most `REFRESH_BUDGET` keys per 250 ms
/// tick: a table with fewer active keys is checked whole at every tick (receivers
/// stay within one tick of the true sum); a larger one is checked in rounds of
/// several ticks, so that the refresh never costs more than a few percent of a core
/// and never holds up fresh changes.
async fn housekeeping(section: Arc<Section>, shutdown: CancellationToken) {
    const TICK: std::time::Duration = std::time::Duration::from_millis(250);
    const REFRESH_BUDGET: usize = 2048;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = section.clock.now_ms();
        // Both passes can visit many keys: off the async workers, so that sessions
        // on the same worker are not held up behind them.
        let store = section.store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            store.expire(now);
            store.refresh_rates_budget(now, REFRESH_BUDGET);
        })
        .await;
        crate::metrics::table_sizes(&section);
    }
}
