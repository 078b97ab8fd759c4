//! What a new plan changes, by meaning: peers added, removed, readdressed or
//! given another role, rules and forwards added or removed, the listener moved.
//!
//! Plans are compared by what they do, never by where their lines are: a comment
//! added above a peer, peers reordered outside an `up` group, or rules written in
//! another order change nothing. Peers are matched by name and groups by their
//! members' names, so a fresh plan compares with a renumbered one.

use std::fmt;
use std::net::IpAddr;

use stktagg_config::PeerAddr;

use crate::plan::{PeerPlan, Plan, Role, SectionPlan, SourceKind};

/// One change to a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A peer appeared.
    PeerAdded {
        /// Its name.
        name: String,
        /// Its role, as [`role_label`] words it.
        role: String,
        /// Where we dial it.
        addr: Option<PeerAddr>,
    },
    /// A peer is gone.
    PeerRemoved {
        /// Its name.
        name: String,
    },
    /// A peer's address changed (where we dial it).
    PeerReaddressed {
        /// Its name.
        name: String,
        /// The address before.
        from: Option<PeerAddr>,
        /// The address now.
        to: Option<PeerAddr>,
    },
    /// A peer's role or group changed: to us it is another peer.
    PeerRoleChanged {
        /// Its name.
        name: String,
        /// The role before.
        from: String,
        /// The role now.
        to: String,
    },
    /// The address a session claiming the peer must come from changed.
    AddrCheckChanged {
        /// Its name.
        name: String,
        /// The checked IP before (`None`: unchecked).
        from: Option<IpAddr>,
        /// The checked IP now.
        to: Option<IpAddr>,
    },
    /// The failover order of an `up` group changed.
    FailoverOrder {
        /// The group, as [`group_label`] words it.
        group: String,
        /// Its members now, in order.
        members: Vec<String>,
    },
    /// The `local` peer's address (where we listen) changed.
    ListenerMoved {
        /// Before.
        from: PeerAddr,
        /// Now.
        to: PeerAddr,
    },
    /// The `local` peer's name changed.
    LocalRenamed {
        /// Before.
        from: String,
        /// Now.
        to: String,
    },
    /// A `from ... to ...` rule appeared.
    RuleAdded(String),
    /// A rule is gone.
    RuleRemoved(String),
    /// A `forward` suffix appeared.
    ForwardAdded(String),
    /// A `forward` suffix is gone.
    ForwardRemoved(String),
    /// `option teach-back` was turned on or off.
    TeachBack(bool),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = |a: &Option<PeerAddr>| {
            a.as_ref()
                .map_or_else(|| "(dials in)".to_owned(), ToString::to_string)
        };
        let ip = |a: &Option<IpAddr>| a.map_or_else(|| "any".to_owned(), |ip| ip.to_string());
        match self {
            Change::PeerAdded {
                name,
                role,
                addr: a,
            } => {
                write!(f, "peer `{name}` added ({role}, {})", addr(a))
            }
            Change::PeerRemoved { name } => write!(f, "peer `{name}` removed"),
            Change::PeerReaddressed { name, from, to } => {
                write!(
                    f,
                    "peer `{name}` readdressed {} -> {}",
                    addr(from),
                    addr(to)
                )
            }
            Change::PeerRoleChanged { name, from, to } => {
                write!(f, "peer `{name}` role changed {from} -> {to}")
            }
            Change::AddrCheckChanged { name, from, to } => {
                write!(f, "peer `{name}` accepted from {} -> {}", ip(from), ip(to))
            }
            Change::FailoverOrder { group, members } => {
                write!(f, "{group} failover order now {}", members.join(", "))
            }
            Change::ListenerMoved { from, to } => write!(f, "listener moved {from} -> {to}"),
            Change::LocalRenamed { from, to } => {
                write!(f, "local peer renamed `{from}` -> `{to}`")
            }
            Change::RuleAdded(r) => write!(f, "rule `{r}` added"),
            Change::RuleRemoved(r) => write!(f, "rule `{r}` removed"),
            Change::ForwardAdded(s) => write!(f, "forward `{s}` added"),
            Change::ForwardRemoved(s) => write!(f, "forward `{s}` removed"),
            Change::TeachBack(on) => {
                write!(f, "teach-back turned {}", if *on { "on" } else { "off" })
            }
        }
    }
}

/// A change to the whole plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanChange {
    /// A section appeared.
    SectionAdded(String),
    /// A section is gone.
    SectionRemoved(String),
    /// A section changed.
    Section {
        /// Its name.
        name: String,
        /// What changed in it.
        changes: Vec<Change>,
    },
}

impl fmt::Display for PlanChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanChange::SectionAdded(n) => write!(f, "section `{n}` added"),
            PlanChange::SectionRemoved(n) => write!(f, "section `{n}` removed"),
            PlanChange::Section { name, changes } => {
                let all: Vec<String> = changes.iter().map(ToString::to_string).collect();
                write!(f, "section `{name}`: {}", all.join("; "))
            }
        }
    }
}

/// The role of a peer in words: `node`, `down`, `up`, `up group 2`.
pub fn role_label(plan: &SectionPlan, p: &PeerPlan) -> String {
    match p.role {
        Role::Source(SourceKind::Node) => "node".to_owned(),
        Role::Source(SourceKind::Down) => "down".to_owned(),
        Role::Upstream { group } => match plan.group(group).and_then(|g| g.number) {
            Some(n) => format!("up group {n}"),
            None => "up".to_owned(),
        },
    }
}

/// A group in words: `group 2`, or `up peer x` for a group of one.
pub fn group_label(plan: &SectionPlan, group: &crate::plan::GroupPlan) -> String {
    match group.number {
        Some(n) => format!("group {n}"),
        None => {
            let first = group.members.first().and_then(|m| plan.peer(*m));
            format!("up peer `{}`", first.map_or("?", |p| p.name.as_str()))
        }
    }
}

fn rule_text(r: &crate::plan::RulePlan) -> String {
    if r.size == stktagg_config::defaults::TABLE_SIZE {
        format!("from {} to {}", r.from, r.to)
    } else {
        format!("from {} to {} size {}", r.from, r.to, r.size)
    }
}

/// Added and removed items of two lists compared as sets, in their lists' order.
fn set_diff<T: PartialEq + Clone>(old: &[T], new: &[T]) -> (Vec<T>, Vec<T>) {
    let added = new.iter().filter(|x| !old.contains(x)).cloned().collect();
    let removed = old.iter().filter(|x| !new.contains(x)).cloned().collect();
    (added, removed)
}

/// What changes from `old` to `new` (the same section), in a stable order:
/// the section's own lines, then peers in `new`'s order, removed peers, groups,
/// rules and forwards.
pub fn section_changes(old: &SectionPlan, new: &SectionPlan) -> Vec<Change> {
    let mut out = Vec::new();
    if old.local_name != new.local_name {
        out.push(Change::LocalRenamed {
            from: old.local_name.clone(),
            to: new.local_name.clone(),
        });
    }
    if old.listener != new.listener {
        out.push(Change::ListenerMoved {
            from: old.listener.clone(),
            to: new.listener.clone(),
        });
    }
    for p in &new.peers {
        let Some(o) = old.peers.iter().find(|o| o.name == p.name) else {
            out.push(Change::PeerAdded {
                name: p.name.clone(),
                role: role_label(new, p),
                addr: p.addr.clone(),
            });
            continue;
        };
        let (was, is) = (role_label(old, o), role_label(new, p));
        if was != is {
            out.push(Change::PeerRoleChanged {
                name: p.name.clone(),
                from: was,
                to: is,
            });
        }
        if o.addr != p.addr {
            out.push(Change::PeerReaddressed {
                name: p.name.clone(),
                from: o.addr.clone(),
                to: p.addr.clone(),
            });
        }
        // A checked peer that moves is checked at its new address: the readdress
        // says it all.
        let follows = o.addr != p.addr && o.checked_ip.is_some() && p.checked_ip.is_some();
        if o.checked_ip != p.checked_ip && !follows {
            out.push(Change::AddrCheckChanged {
                name: p.name.clone(),
                from: o.checked_ip,
                to: p.checked_ip,
            });
        }
    }
    for o in &old.peers {
        if !new.peers.iter().any(|p| p.name == o.name) {
            out.push(Change::PeerRemoved {
                name: o.name.clone(),
            });
        }
    }
    let members = |plan: &SectionPlan, g: &crate::plan::GroupPlan| -> Vec<String> {
        g.members
            .iter()
            .filter_map(|m| plan.peer(*m).map(|p| p.name.clone()))
            .collect()
    };
    for g in &new.groups {
        let label = group_label(new, g);
        let Some(o) = old.groups.iter().find(|o| group_label(old, o) == label) else {
            continue;
        };
        let (before, now) = (members(old, o), members(new, g));
        // Members added or removed are reported as peers; only the order of the
        // members that stay is news.
        let kept_before: Vec<&String> = before.iter().filter(|m| now.contains(m)).collect();
        let kept_now: Vec<&String> = now.iter().filter(|m| before.contains(m)).collect();
        if kept_before != kept_now {
            out.push(Change::FailoverOrder {
                group: label,
                members: now,
            });
        }
    }
    let rules = |s: &SectionPlan| s.rules.iter().map(rule_text).collect::<Vec<_>>();
    let (added, removed) = set_diff(&rules(old), &rules(new));
    out.extend(added.into_iter().map(Change::RuleAdded));
    out.extend(removed.into_iter().map(Change::RuleRemoved));
    let (added, removed) = set_diff(&old.forwards, &new.forwards);
    out.extend(added.into_iter().map(Change::ForwardAdded));
    out.extend(removed.into_iter().map(Change::ForwardRemoved));
    if old.teach_back != new.teach_back {
        out.push(Change::TeachBack(new.teach_back));
    }
    out
}

/// What changes from `old` to `new`, section by section (matched by name);
/// empty when the two plans do the same thing.
pub fn plan_changes(old: &Plan, new: &Plan) -> Vec<PlanChange> {
    let mut out = Vec::new();
    for s in &new.sections {
        match old.section(&s.name) {
            None => out.push(PlanChange::SectionAdded(s.name.clone())),
            Some(o) => {
                let changes = section_changes(o, s);
                if !changes.is_empty() {
                    out.push(PlanChange::Section {
                        name: s.name.clone(),
                        changes,
                    });
                }
            }
        }
    }
    for o in &old.sections {
        if new.section(&o.name).is_none() {
            out.push(PlanChange::SectionRemoved(o.name.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Plan {
        let cfg = stktagg_config::parse_str(text, "t.cfg").expect("valid config");
        crate::resolve(&cfg).expect("resolves")
    }

    const BASE: &str = "aggregations a
  peer me 127.0.0.1:10000 local
  peer h1 127.0.0.1:10001
  peer h2 127.0.0.1:10002
  peer u1 127.0.0.1:10003 up group 1
  peer u2 127.0.0.1:10004 up group 1
  from .in to .out
  forward .fwd
";

    fn lines(old: &str, new: &str) -> Vec<String> {
        plan_changes(&plan(old), &plan(new))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn comments_and_order_change_nothing() {
        let moved = "# a comment\n\naggregations a
  peer me 127.0.0.1:10000 local
  # another
  peer h2 127.0.0.1:10002
  peer h1 127.0.0.1:10001
  peer u1 127.0.0.1:10003 up group 1
  peer u2 127.0.0.1:10004 up group 1
  forward .fwd
  from .in to .out
";
        assert!(lines(BASE, moved).is_empty(), "{:?}", lines(BASE, moved));
    }

    #[test]
    fn changes_are_said_by_meaning() {
        let new = "aggregations a
  peer me 127.0.0.1:10000 local
  peer h1 127.0.0.2:10001
  peer h3 127.0.0.1:10005 down
  peer u2 127.0.0.1:10004 up group 1
  peer u1 127.0.0.1:10003 up group 1
  from .in to .out
  from .in2 to .out2
aggregations b
  peer me 127.0.0.1:20000 local
  from .in to .out
";
        assert_eq!(
            lines(BASE, new),
            [
                "section `a`: peer `h1` readdressed 127.0.0.1:10001 -> 127.0.0.2:10001; \
                 peer `h3` added (down, 127.0.0.1:10005); peer `h2` removed; \
                 group 1 failover order now u2, u1; rule `from .in2 to .out2` added; \
                 forward `.fwd` removed",
                "section `b` added",
            ]
        );
        assert_eq!(
            lines(new, BASE).last().map(String::as_str),
            Some("section `b` removed")
        );
    }

    #[test]
    fn a_role_change_and_a_move_of_the_listener_are_said() {
        let new = BASE
            .replace("10002\n", "10002 up\n")
            .replace("10000 local", "10009 local");
        assert_eq!(
            lines(BASE, &new),
            [
                "section `a`: listener moved 127.0.0.1:10000 -> 127.0.0.1:10009; \
              peer `h2` role changed node -> up"
            ]
        );
    }

    #[test]
    fn a_renumbered_plan_compares_by_name() {
        let old = plan(BASE).sections.remove(0);
        let (_, slots) = crate::renumber(old.clone(), &crate::Slots::default());
        let fresh = plan(&BASE.replace("  peer h1 127.0.0.1:10001\n", ""))
            .sections
            .remove(0);
        let (renumbered, _) = crate::renumber(fresh, &slots);
        assert_eq!(
            section_changes(&old, &renumbered),
            [Change::PeerRemoved {
                name: "h1".to_owned()
            }]
        );
    }
}
