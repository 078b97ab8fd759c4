//! [`SectionCore`]: one `aggregations` section's state and rules, without tasks or
//! sockets: its plan, its tables, its peers' state, and who is relayed in each `up`
//! group.

use crate::ratelimit::LogLimiter;
use crate::stats::{PeerStats, SessionState};
use crate::store::TableStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use stktagg_store::SourceId;
use stktagg_topology::{GroupId, PeerId, PeerPlan, Role, SectionPlan, SourceKind};

/// How long after its session is up a source's first lesson may hold back our
/// changes (see [`SectionCore::publishing`]). HAProxy answers a resync request
/// within milliseconds; an aggregator below us in well under a second.
pub const FIRST_LESSON_WAIT_MS: u64 = 2_000;

/// What a section asks of whoever runs its sessions.
pub trait Signals: Send + Sync {
    /// Asks `peer`'s running session (or its next one) for a full resync.
    fn request_resync(&self, peer: PeerId);
}

/// One configured peer of a section (never the `local` one), or one that was
/// removed by a reload (its slot is kept so that ids stay indices:
/// [`SectionCore::is_live`] tells them apart).
#[derive(Debug)]
pub struct PeerInfo {
    /// Its slot in the section's peer list, stable across reloads; also the
    /// store's source id.
    pub id: PeerId,
    /// The peer's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Where to dial it (host and port), if it has an address.
    pub addr: Option<(String, u16)>,
    /// State and counters, shared with the cores that succeed this one across
    /// reloads, so that a session that outlives a reload counts in one place.
    pub stats: Arc<PeerStats>,
}

impl PeerInfo {
    fn from_plan(p: &PeerPlan, stats: Arc<PeerStats>) -> PeerInfo {
        PeerInfo {
            id: p.id,
            name: p.name.clone(),
            role: p.role,
            addr: p.addr.as_ref().map(|a| (a.host.clone(), a.port)),
            stats,
        }
    }

    /// A slot no plan of this core has used (ids are only ever skipped by
    /// renumbered plans): nobody's, never live.
    fn vacant(id: PeerId) -> PeerInfo {
        PeerInfo {
            id,
            name: String::new(),
            role: Role::Source(SourceKind::Node),
            addr: None,
            stats: Arc::default(),
        }
    }

    /// The same peer, kept in a later core after it was removed: no address
    /// to dial, the same counters.
    fn retired(&self) -> PeerInfo {
        PeerInfo {
            id: self.id,
            name: self.name.clone(),
            role: self.role,
            addr: None,
            stats: self.stats.clone(),
        }
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

/// One `aggregations` section (see the module documentation).
#[derive(Debug)]
pub struct SectionCore<S> {
    /// The section name.
    pub name: String,
    /// Our local peer name.
    pub local_name: String,
    /// The resolved plan (renumbered onto stable ids after a reload:
    /// [`stktagg_topology::renumber`]).
    pub plan: SectionPlan,
    /// The tables.
    pub store: Arc<S>,
    /// Peers by id (never the local one): every slot handed out, the peers of
    /// the plan and those a reload removed ([`SectionCore::live_peers`] gives
    /// only the former).
    pub peers: Vec<PeerInfo>,
    /// Clock reading at start.
    pub started_ms: u64,
    /// After start, how long we may answer PARTIAL while our sources have not all
    /// resynced to us.
    pub startup_grace_ms: u64,
    /// Changes of a group's relayed member, all groups.
    pub group_switches: AtomicU64,
    /// Limits warning lines about rejected hellos (they come from anyone).
    pub reject_log_limit: LogLimiter,
}

impl<S: TableStore> SectionCore<S> {
    /// A section from its plan, over `store`, started at `now`.
    pub fn new(plan: SectionPlan, store: Arc<S>, now: u64, startup_grace_ms: u64) -> Self {
        let slots = plan.peers.iter().map(|p| p.id.0 + 1).max().unwrap_or(0);
        let peers = (0..slots)
            .map(|i| match plan.peer(PeerId(i)) {
                Some(p) => PeerInfo::from_plan(p, Arc::default()),
                None => PeerInfo::vacant(PeerId(i)),
            })
            .collect();
        SectionCore {
            name: plan.name.clone(),
            local_name: plan.local_name.clone(),
            store,
            peers,
            started_ms: now,
            startup_grace_ms,
            group_switches: AtomicU64::new(0),
            reject_log_limit: LogLimiter::default(),
            plan,
        }
    }

    /// The core that takes over from this one after a reload: `plan` is the new
    /// plan renumbered onto this one's ids ([`stktagg_topology::renumber`]) and
    /// `slots` the number of ids handed out. Same store, same start, and each
    /// peer that stays keeps its counters; a removed peer keeps its slot (retired,
    /// its counters kept), and a name that comes back gets them again.
    ///
    /// Sessions hold the core they started with until they move to this one
    /// ([`crate::SessionCore::switch_section`]); until they do, a switch of a
    /// group's member counted there is not counted here (`group_switches` is a
    /// copy: `show info` may miss one switch made during a reload; the metric
    /// counts every one).
    pub fn successor(&self, plan: SectionPlan, slots: usize) -> Self {
        let slots = slots.max(self.peers.len());
        let peers = (0..slots)
            .map(|i| {
                let id = PeerId(i);
                let before = self.peers.get(i);
                match (plan.peer(id), before) {
                    (Some(p), Some(b)) if b.name == p.name => {
                        PeerInfo::from_plan(p, b.stats.clone())
                    }
                    (Some(p), _) => PeerInfo::from_plan(p, Arc::default()),
                    (None, Some(b)) => b.retired(),
                    (None, None) => PeerInfo::vacant(id),
                }
            })
            .collect();
        SectionCore {
            name: plan.name.clone(),
            local_name: plan.local_name.clone(),
            store: self.store.clone(),
            peers,
            started_ms: self.started_ms,
            startup_grace_ms: self.startup_grace_ms,
            group_switches: AtomicU64::new(self.group_switches.load(Ordering::Relaxed)),
            reject_log_limit: LogLimiter::default(),
            plan,
        }
    }

    /// The peer called `name`, if it is one of ours (the local peer is not, nor
    /// a peer a reload removed): its id's index.
    pub fn peer_by_name(&self, name: &str) -> Option<usize> {
        self.plan.peer_by_name(name).map(|id| id.0)
    }

    /// Whether `id` is a peer of the plan (not a slot a reload retired).
    pub fn is_live(&self, id: PeerId) -> bool {
        self.plan.peer(id).is_some()
    }

    /// The peers of the plan, by id (not those a reload removed).
    pub fn live_peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.iter().filter(|p| self.is_live(p.id))
    }

    /// A peer removed by a reload, whose sessions have ended: its contributions
    /// leave the tables at once (the sums it was part of are republished without
    /// it), and if it was an `up` group's relayed member, the group elects
    /// another.
    pub fn retire(&self, id: PeerId, now: u64, signals: &dyn Signals) {
        let Some(peer) = self.peers.get(id.0) else {
            return;
        };
        let dropped = self.store.drop_source(peer.source_id(), now);
        tracing::info!(section = %self.name, peer = %peer.name, contributions = dropped, "removed peer's contributions dropped");
        if let Some(group) = peer.group() {
            self.elect(group, now, signals);
        }
    }

    /// Whether we hold complete data ourselves: every source has finished a full
    /// resync to us since we started, or the start-up grace period is over (a source
    /// that never comes back must not keep us incomplete forever). A peer that asks
    /// us for a resync is answered FINISHED when this holds, PARTIAL otherwise, as
    /// HAProxy does with its own resync state; an aggregator below us then waits for
    /// a FINISHED before it relays our tables.
    pub fn up_to_date(&self, now: u64) -> bool {
        now.saturating_sub(self.started_ms) >= self.startup_grace_ms
            || self
                .live_peers()
                .filter(|p| p.is_source())
                .all(|p| p.stats.resynced.load(Ordering::Relaxed))
    }

    /// Whether we push our changes to peers now. Not while, in the start-up grace
    /// period, a source has not answered our resync request yet, for at most
    /// [`FIRST_LESSON_WAIT_MS`] from our start or, for a source that connects
    /// later, from its session's start: our sums still lack its counts, and pushed
    /// they would pull every peer below values it holds right (the other member of
    /// an active-active pair publishes complete sums; a node keeps our last ones
    /// while we are away). Sessions come up within a second of our start (our
    /// first dial waits up to 0.8 s, HAProxy redials faster), and HAProxy answers
    /// within milliseconds. The wait is bounded per source, so that a stuck or
    /// absent peer never holds the others back for long.
    pub fn publishing(&self, now: u64) -> bool {
        if now.saturating_sub(self.started_ms) >= self.startup_grace_ms {
            return true;
        }
        !self.peers.iter().any(|p| {
            let since = if p.stats.state() == SessionState::Established {
                p.stats.last_hello_ms.load(Ordering::Relaxed)
            } else {
                self.started_ms
            };
            p.is_source()
                && !p.stats.answered_resync.load(Ordering::Relaxed)
                && now.saturating_sub(since) < FIRST_LESSON_WAIT_MS
        })
    }

    /// The number of `group` as written in the configuration, for logs and displays.
    pub fn group_number(&self, group: u16) -> String {
        self.plan
            .group(GroupId(group as usize))
            .and_then(|g| g.number)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("#{group}"))
    }

    /// The member of `group` whose tables are relayed (the store holds this fact;
    /// only [`SectionCore::relay_defined`] and [`SectionCore::elect`] change it).
    pub fn active_member(&self, group: u16) -> Option<PeerId> {
        self.store
            .active_member(group)
            .map(|s| PeerId(usize::from(s.0)))
    }

    /// A member of `group` defined a relayed table. While the group has no relayed
    /// member yet, the first one to define a table is relayed at once, so that the
    /// lesson it is sending is kept; [`SectionCore::elect`] corrects the choice once
    /// members are complete.
    pub fn relay_defined(&self, group: u16, member: PeerId, now: u64) {
        if self.store.active_member(group).is_none() {
            self.switch(group, member, now);
        }
    }

    /// The election rule, the one place that decides who is relayed: the first
    /// member of `group` in configuration order whose session is established and
    /// whose last full resync ended FINISHED. While no member qualifies, the relayed
    /// member stays (stale data beats none) until one does. A new member's tables
    /// replace the old one's by its full resync, which its session is asked for. A
    /// member that is already relayed and has just finished its resync is complete
    /// and current: nothing changes.
    pub fn elect(&self, group: u16, now: u64, signals: &dyn Signals) {
        let Some(g) = self.plan.groups.iter().find(|g| g.id.0 == group as usize) else {
            return;
        };
        let best = g
            .members
            .iter()
            .copied()
            .find(|m| self.peers[m.0].stats.is_complete());
        let Some(best) = best else {
            return;
        };
        if self.active_member(group) == Some(best) {
            return;
        }
        self.switch(group, best, now);
        // Even if its lesson just ended, it was heard while another member was
        // relayed (and dropped): the relayed tables are rebuilt from a new one.
        signals.request_resync(best);
    }

    fn switch(&self, group: u16, member: PeerId, now: u64) {
        self.store
            .relay_replace(group, self.peers[member.0].source_id(), now);
        self.group_switches.fetch_add(1, Ordering::Relaxed);
        crate::metrics::group_switch(&self.name, &self.group_number(group));
        tracing::info!(section = %self.name, group = %self.group_number(group), active = %self.peers[member.0].name, "group active member changed");
    }
}
