//! The resolved plan: who is who in each section, and where each table goes.

use std::net::IpAddr;

use stktagg_config::{Aggregations, Config, FromSpec, PeerAddr, PeerRole, Span};

use crate::TopologyError;

/// A remote peer of a section. A freshly resolved plan numbers peers by their
/// index in [`SectionPlan::peers`] (config order, the `local` peer left out); a
/// plan renumbered for a reload ([`crate::renumber`]) keeps each peer's id from
/// the running plan, so ids stay small integers the daemon can use as array
/// indices, but they may skip the ids of peers that were removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

/// An upstream group: its index in [`SectionPlan::groups`] in a freshly resolved
/// plan, its id from the running plan after [`crate::renumber`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub usize);

/// The whole configuration, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One plan per `aggregations` section, in file order.
    pub sections: Vec<SectionPlan>,
}

/// One aggregation domain: one listener, its peers, its routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionPlan {
    /// The section name.
    pub name: String,
    /// Our own peer name (the `local` peer): the name remote peers must call.
    pub local_name: String,
    /// Where we listen (the `local` peer's address; the daemon resolves names).
    pub listener: PeerAddr,
    /// The `local` peer's address when it is a literal, non-wildcard IP: the
    /// source address our dialer binds ([`SectionPlan::dial_source`]).
    pub source_ip: Option<IpAddr>,
    /// Every remote peer, in config order; `peers[i].id == PeerId(i)` in a fresh
    /// plan, not always after [`crate::renumber`] ([`SectionPlan::peer`] finds a
    /// peer by id in both).
    pub peers: Vec<PeerPlan>,
    /// Upstream groups, in order of their first member; `groups[i].id == GroupId(i)`
    /// in a fresh plan ([`SectionPlan::group`] finds a group by id in both).
    pub groups: Vec<GroupPlan>,
    /// The aggregation rules, in config order.
    pub rules: Vec<RulePlan>,
    /// The `forward` suffixes: tables relayed from upstreams to sources.
    pub forwards: Vec<String>,
    /// Teach a source that asks for a resync its own last entries (SPEC §5).
    pub teach_back: bool,
    /// `shards <n>`: how many shards the keys are split into; 0 for none.
    pub shards: u32,
    /// The `local` peer's `shard`: which shard of a sharded tier we serve, for
    /// the record (HAProxy nodes decide what we receive); 0 for none.
    pub local_shard: u32,
}

/// A remote peer and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPlan {
    /// Its index in the section.
    pub id: PeerId,
    /// Its name, as it says it in the hello.
    pub name: String,
    /// Where we dial it; `None`: it dials us, we never dial it.
    pub addr: Option<PeerAddr>,
    /// What it is to us.
    pub role: Role,
    /// The IP a session claiming this peer must come from
    /// ([`PeerPlan::accepts_from`]); `None`: any address (its address is not a
    /// literal IP, or `no-addr-check` / `no option addr-check`).
    pub checked_ip: Option<IpAddr>,
    /// Its `shard`: we send it only the entries of this shard of the section's
    /// [`SectionPlan::shards`] (see [`SectionPlan::shard_of`]); 0 for every entry.
    pub shard: u32,
    /// Its `peer` line.
    pub span: Span,
}

/// What a remote peer is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It sends us input tables and receives our outputs and relayed tables.
    Source(SourceKind),
    /// An upper aggregator: it receives our outputs; we relay its forward tables.
    Upstream {
        /// Its group (a group of its own when it has no `group` in the config).
        group: GroupId,
    },
}

/// The two kinds of source; they are treated alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A HAProxy node.
    Node,
    /// A lower-level aggregator (`down`).
    Down,
}

/// Replicas of one logical upstream. Of their forward tables, the daemon relays
/// those of one member at a time: the first, in config order, whose session is up
/// and fully resynced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlan {
    /// Its index in the section.
    pub id: GroupId,
    /// The `group <n>` number; `None` for an `up` peer without `group`.
    pub number: Option<u32>,
    /// Its members, in config order (the failover order).
    pub members: Vec<PeerId>,
}

/// One aggregation rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulePlan {
    /// Input tables: `<base><suffix>`, or any table (see [`Route`]).
    pub from: FromSpec,
    /// The output suffix.
    pub to: String,
    /// The most entries each output table holds (`size`, else the default).
    pub size: usize,
}

/// What to do with a table a peer defines to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Input: its entries are this source's contribution to table `output`, which
    /// goes to every peer for which [`SectionPlan::receives_output`] holds.
    Aggregate {
        /// The output table's name.
        output: String,
    },
    /// Relayed unchanged, under its own name, to every peer for which
    /// [`SectionPlan::receives_relay`] holds, while the sender is the group's
    /// active member.
    Relay {
        /// The sender's group.
        group: GroupId,
    },
    /// Not used; count it and log it once per table.
    Ignore {
        /// Why.
        reason: IgnoreReason,
    },
}

/// Why a table is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreReason {
    /// The peer id is not in this section.
    #[error("unknown peer")]
    UnknownPeer,
    /// A source sent a table that is one of our outputs (it holds our sums).
    #[error("it is an output table")]
    OutputTable,
    /// A source sent a table that we relay to it.
    #[error("it is a forwarded table")]
    ForwardedTable,
    /// A source sent a table no rule takes as input.
    #[error("no `from` rule matches its name")]
    NoRule,
    /// An upstream sent a table whose name has no `forward` suffix.
    #[error("an upstream's table without a `forward` suffix")]
    NotForwarded,
    /// The name is only a suffix: there is no base name to build the output from.
    #[error("its name has nothing before the suffix")]
    EmptyBase,
}

/// Resolves a configuration. `parse_str` already enforces everything checked
/// here; the checks are repeated because a [`Config`] can be built by hand, and
/// the routing invariants depend on them.
pub fn resolve(config: &Config) -> Result<Plan, TopologyError> {
    let mut sections = Vec::with_capacity(config.sections.len());
    for s in &config.sections {
        sections.push(resolve_section(s)?);
    }
    Ok(Plan { sections })
}

fn resolve_section(s: &Aggregations) -> Result<SectionPlan, TopologyError> {
    let section = || s.name.clone();
    let mut locals = s.peers.iter().filter(|p| p.role == PeerRole::Local);
    let local = locals
        .next()
        .ok_or_else(|| TopologyError::NoLocal { section: section() })?;
    if locals.next().is_some() {
        return Err(TopologyError::TwoLocals { section: section() });
    }
    let listener = local
        .addr
        .clone()
        .ok_or_else(|| TopologyError::LocalWithoutAddress { section: section() })?;
    if s.rules.is_empty() {
        return Err(TopologyError::NoRule { section: section() });
    }
    check_suffixes(s)?;

    let mut peers: Vec<PeerPlan> = Vec::new();
    let mut groups: Vec<GroupPlan> = Vec::new();
    for p in s.peers.iter().filter(|p| p.role != PeerRole::Local) {
        if p.name == local.name || peers.iter().any(|q| q.name == p.name) {
            return Err(TopologyError::DuplicatePeer {
                section: section(),
                name: p.name.clone(),
            });
        }
        let id = PeerId(peers.len());
        let role = match p.role {
            PeerRole::Node | PeerRole::Local => Role::Source(SourceKind::Node),
            PeerRole::Down => Role::Source(SourceKind::Down),
            PeerRole::Up { group } => {
                let existing = group.and_then(|n| groups.iter().position(|g| g.number == Some(n)));
                let gid = match existing {
                    Some(i) => {
                        if let Some(g) = groups.get_mut(i) {
                            g.members.push(id);
                        }
                        GroupId(i)
                    }
                    None => {
                        let gid = GroupId(groups.len());
                        groups.push(GroupPlan {
                            id: gid,
                            number: group,
                            members: vec![id],
                        });
                        gid
                    }
                };
                Role::Upstream { group: gid }
            }
        };
        if p.shard > s.shards {
            return Err(TopologyError::ShardOutOfRange {
                section: section(),
                name: p.name.clone(),
            });
        }
        peers.push(PeerPlan {
            id,
            name: p.name.clone(),
            addr: p.addr.clone(),
            role,
            checked_ip: p.checked_ip(s.addr_check),
            shard: p.shard,
            span: p.span.clone(),
        });
    }
    for g in &groups {
        let mut shards = g
            .members
            .iter()
            .filter_map(|m| peers.get(m.0))
            .map(|p| p.shard);
        let first = shards.next();
        if shards.any(|sh| Some(sh) != first) {
            return Err(TopologyError::GroupShards {
                section: section(),
                group: g.number.unwrap_or_default(),
            });
        }
    }
    if local.shard > s.shards {
        return Err(TopologyError::ShardOutOfRange {
            section: section(),
            name: local.name.clone(),
        });
    }
    Ok(SectionPlan {
        name: s.name.clone(),
        local_name: local.name.clone(),
        source_ip: listener.source_ip(),
        listener,
        peers,
        groups,
        rules: s
            .rules
            .iter()
            .map(|r| RulePlan {
                from: r.from.clone(),
                to: r.to.clone(),
                size: r.size.unwrap_or(stktagg_config::defaults::TABLE_SIZE),
            })
            .collect(),
        forwards: s.forwards.iter().map(|f| f.suffix.clone()).collect(),
        teach_back: s.teach_back,
        shards: s.shards,
        local_shard: local.shard,
    })
}

/// Each suffix must name one kind of table: distinct, starting with `.`, not
/// empty, none ending with another, at most one `from any`.
fn check_suffixes(s: &Aggregations) -> Result<(), TopologyError> {
    let mut all: Vec<&str> = Vec::new();
    let mut any = 0;
    for r in &s.rules {
        match &r.from {
            FromSpec::Suffix(f) => all.push(f),
            FromSpec::Any => any += 1,
        }
        all.push(&r.to);
    }
    all.extend(s.forwards.iter().map(|f| f.suffix.as_str()));
    if any > 1 {
        return Err(TopologyError::SuffixConflict {
            section: s.name.clone(),
            suffix: "any".to_owned(),
        });
    }
    for (i, a) in all.iter().enumerate() {
        if !a.starts_with('.') || a.len() < 2 {
            return Err(TopologyError::BadSuffix {
                section: s.name.clone(),
                suffix: (*a).to_owned(),
            });
        }
        if all[..i].iter().any(|b| a.ends_with(b) || b.ends_with(a)) {
            return Err(TopologyError::SuffixConflict {
                section: s.name.clone(),
                suffix: (*a).to_owned(),
            });
        }
    }
    Ok(())
}

impl Plan {
    /// The section with this name.
    pub fn section(&self, name: &str) -> Option<&SectionPlan> {
        self.sections.iter().find(|s| s.name == name)
    }
}

impl SectionPlan {
    /// A peer by id. Its position is its id in a fresh plan; a renumbered plan
    /// is searched (peers are few, and this runs per table definition or
    /// connection, never per update).
    pub fn peer(&self, id: PeerId) -> Option<&PeerPlan> {
        match self.peers.get(id.0) {
            Some(p) if p.id == id => Some(p),
            _ => self.peers.iter().find(|p| p.id == id),
        }
    }

    /// A remote peer by the name it gives in its hello.
    pub fn peer_by_name(&self, name: &str) -> Option<PeerId> {
        self.peers.iter().find(|p| p.name == name).map(|p| p.id)
    }

    /// A group by id (see [`SectionPlan::peer`]).
    pub fn group(&self, id: GroupId) -> Option<&GroupPlan> {
        match self.groups.get(id.0) {
            Some(g) if g.id == id => Some(g),
            _ => self.groups.iter().find(|g| g.id == id),
        }
    }

    /// Whether the peer sends us input (a plain or `down` peer).
    pub fn is_source(&self, id: PeerId) -> bool {
        matches!(self.peer(id).map(|p| p.role), Some(Role::Source(_)))
    }

    /// The peer's group, if it is an upstream.
    pub fn group_of(&self, id: PeerId) -> Option<GroupId> {
        match self.peer(id)?.role {
            Role::Upstream { group } => Some(group),
            Role::Source(_) => None,
        }
    }

    /// The sources, in config order.
    pub fn sources(&self) -> impl Iterator<Item = &PeerPlan> {
        self.peers
            .iter()
            .filter(|p| matches!(p.role, Role::Source(_)))
    }

    /// The upstreams, in config order.
    pub fn upstreams(&self) -> impl Iterator<Item = &PeerPlan> {
        self.peers
            .iter()
            .filter(|p| matches!(p.role, Role::Upstream { .. }))
    }

    /// The shard of the entries `peer` receives: `Some(shard)` when the section has
    /// `shards` and the peer a `shard`, `None` when it receives every entry. An
    /// entry's shard is HAProxy's (`stktagg_wire::shard::key_shard`), seeded with
    /// the table's local id in a peers section named like this section.
    pub fn shard_of(&self, id: PeerId) -> Option<u32> {
        let shard = self.peer(id)?.shard;
        (self.shards > 0 && shard > 0).then_some(shard)
    }

    /// Whether the peer receives our aggregated output tables: every source (its
    /// cluster-wide sums) and every upstream (its input).
    pub fn receives_output(&self, id: PeerId) -> bool {
        self.peer(id).is_some()
    }

    /// Whether the peer receives the tables relayed from upstreams: every source,
    /// never an upstream (it would get its own or its replica's sums back).
    pub fn receives_relay(&self, id: PeerId) -> bool {
        self.is_source(id)
    }

    /// The most entries output table `output` may hold: the `size` of the rule
    /// that produces it (the rule whose `to` suffix ends its name), else the
    /// default. Never evicts: the store refuses new keys beyond it.
    pub fn output_size(&self, output: &str) -> usize {
        self.rules
            .iter()
            .find(|r| output.ends_with(r.to.as_str()))
            .map_or(stktagg_config::defaults::TABLE_SIZE, |r| r.size)
    }

    /// What to do with table `table_name` (its name on the wire, such as
    /// `/foo.uncombined`) defined to us by `peer`. Suffixes match the end of the
    /// name; the rest is kept verbatim.
    pub fn route_incoming(&self, peer: PeerId, table_name: &str) -> Route {
        let ignore = |reason| Route::Ignore { reason };
        let Some(p) = self.peer(peer) else {
            return ignore(IgnoreReason::UnknownPeer);
        };
        match p.role {
            Role::Upstream { group } => match self
                .forwards
                .iter()
                .find(|w| table_name.ends_with(w.as_str()))
            {
                Some(w) if table_name.len() == w.len() => ignore(IgnoreReason::EmptyBase),
                Some(_) => Route::Relay { group },
                None => ignore(IgnoreReason::NotForwarded),
            },
            Role::Source(_) => self.route_source_table(table_name),
        }
    }

    fn route_source_table(&self, name: &str) -> Route {
        let ignore = |reason| Route::Ignore { reason };
        if self.rules.iter().any(|r| name.ends_with(r.to.as_str())) {
            return ignore(IgnoreReason::OutputTable);
        }
        if self.forwards.iter().any(|w| name.ends_with(w.as_str())) {
            return ignore(IgnoreReason::ForwardedTable);
        }
        // A named suffix takes precedence over `from any`; suffixes never end with
        // one another, so at most one matches.
        let named = self.rules.iter().find_map(|r| match &r.from {
            FromSpec::Suffix(f) => name.strip_suffix(f.as_str()).map(|base| (base, r)),
            FromSpec::Any => None,
        });
        if let Some((base, rule)) = named {
            if base.is_empty() {
                return ignore(IgnoreReason::EmptyBase);
            }
            return Route::Aggregate {
                output: format!("{base}{}", rule.to),
            };
        }
        match self.rules.iter().find(|r| r.from == FromSpec::Any) {
            Some(rule) if !name.is_empty() => Route::Aggregate {
                output: format!("{name}{}", rule.to),
            },
            Some(_) => ignore(IgnoreReason::EmptyBase),
            None => ignore(IgnoreReason::NoRule),
        }
    }
}
