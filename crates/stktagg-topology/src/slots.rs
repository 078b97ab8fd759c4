//! Stable peer and group ids across configuration reloads.
//!
//! A freshly resolved plan numbers peers and groups by their position in the
//! file. The daemon keys much by these ids: the store keeps each source's
//! contributions under its peer id and each group's relayed tables under its
//! group id, and every running session knows its peer by id. A reload that
//! inserts a peer in the middle of a section must therefore not renumber the
//! peers after it. [`renumber`] maps a fresh plan onto the ids handed out so far
//! ([`Slots`]): a peer or group that existed keeps its id, a new one gets the next
//! free id, and the id of one that is gone is never given to anyone else (a name
//! that comes back gets its old id again, whose data was dropped when it left).
//!
//! Ids only ever grow, by one per distinct peer name a section has had since
//! the process started; nothing is allocated per id that is not in use.

use crate::plan::{GroupId, PeerId, Role, SectionPlan};

/// What identifies an `up` group across reloads: its `group <n>` number, or,
/// for an `up` peer without one, the peer's name (its group of one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum GroupKey {
    Numbered(u32),
    Alone(String),
}

/// The ids handed out in one section so far: position `i` of `peers` is the
/// name of the peer that holds (or held) `PeerId(i)`, and likewise for groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slots {
    peers: Vec<String>,
    groups: Vec<GroupKey>,
}

impl Slots {
    /// How many peer ids have been handed out (live or retired): every peer id of
    /// a renumbered plan is below this.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// How many group ids have been handed out.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The name of the peer that holds or held `id`.
    pub fn peer_name(&self, id: PeerId) -> Option<&str> {
        self.peers.get(id.0).map(String::as_str)
    }

    /// The id handed out to the peer called `name`, live or retired.
    pub fn peer_id(&self, name: &str) -> Option<PeerId> {
        self.peers.iter().position(|n| n == name).map(PeerId)
    }

    fn peer_slot(&mut self, name: &str) -> PeerId {
        match self.peer_id(name) {
            Some(id) => id,
            None => {
                self.peers.push(name.to_owned());
                PeerId(self.peers.len() - 1)
            }
        }
    }

    fn group_slot(&mut self, key: GroupKey) -> GroupId {
        match self.groups.iter().position(|k| *k == key) {
            Some(i) => GroupId(i),
            None => {
                self.groups.push(key);
                GroupId(self.groups.len() - 1)
            }
        }
    }
}

/// Renumbers `plan`, freshly resolved (ids are positions), onto the ids handed
/// out so far in its section: each peer keeps the id its name had, each group the
/// id of its number (or of its lone member's name); new ones get ids after every
/// id handed out. Returns the renumbered plan and the slots to use next time.
///
/// The renumbered plan keeps the file's order in `peers`, `groups` and each
/// group's members (the failover order); only the ids change, and may no longer
/// be positions: look peers and groups up with [`SectionPlan::peer`] and
/// [`SectionPlan::group`]. Routing is unchanged (property-tested): a table is
/// routed for a peer exactly as the fresh plan routes it for the peer of the
/// same name.
///
/// With empty `slots`, the plan comes back unchanged.
pub fn renumber(mut plan: SectionPlan, slots: &Slots) -> (SectionPlan, Slots) {
    let mut next = slots.clone();
    // Fresh ids are positions: the old id of a peer is its index here.
    let peer_ids: Vec<PeerId> = plan.peers.iter().map(|p| next.peer_slot(&p.name)).collect();
    let group_ids: Vec<GroupId> = plan
        .groups
        .iter()
        .map(|g| {
            let key = match g.number {
                Some(n) => GroupKey::Numbered(n),
                // A group without a number has exactly one member.
                None => GroupKey::Alone(
                    g.members
                        .first()
                        .and_then(|m| plan.peers.get(m.0))
                        .map(|p| p.name.clone())
                        .unwrap_or_default(),
                ),
            };
            next.group_slot(key)
        })
        .collect();
    let peer_id = |old: PeerId| peer_ids.get(old.0).copied().unwrap_or(old);
    let group_id = |old: GroupId| group_ids.get(old.0).copied().unwrap_or(old);
    for p in &mut plan.peers {
        p.id = peer_id(p.id);
        if let Role::Upstream { group } = &mut p.role {
            *group = group_id(*group);
        }
    }
    for g in &mut plan.groups {
        g.id = group_id(g.id);
        for m in &mut g.members {
            *m = peer_id(*m);
        }
    }
    (plan, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(peers: &str) -> SectionPlan {
        let text =
            format!("aggregations t\n  peer me 127.0.0.1:10000 local\n{peers}  from .in to .out\n");
        let cfg = stktagg_config::parse_str(&text, "t.cfg").expect("valid config");
        let mut plan = crate::resolve(&cfg).expect("resolves");
        plan.sections.remove(0)
    }

    fn ids(s: &SectionPlan) -> Vec<(String, usize)> {
        s.peers.iter().map(|p| (p.name.clone(), p.id.0)).collect()
    }

    #[test]
    fn a_fresh_plan_keeps_its_ids() {
        let fresh = section("  peer a\n  peer b up group 1\n  peer c up\n");
        let (plan, slots) = renumber(fresh.clone(), &Slots::default());
        assert_eq!(plan, fresh);
        assert_eq!(slots.peer_count(), 3);
        assert_eq!(slots.group_count(), 2);
    }

    #[test]
    fn an_insertion_renumbers_nobody_and_a_name_that_comes_back_gets_its_id() {
        let (_, slots) = renumber(section("  peer a\n  peer b\n  peer c\n"), &Slots::default());
        let (plan, slots) = renumber(section("  peer a\n  peer x\n  peer c\n"), &slots);
        assert_eq!(
            ids(&plan),
            [("a".into(), 0), ("x".into(), 3), ("c".into(), 2)]
        );
        assert_eq!(plan.peer_by_name("c"), Some(PeerId(2)));
        assert_eq!(plan.peer(PeerId(3)).map(|p| p.name.as_str()), Some("x"));
        assert!(plan.peer(PeerId(1)).is_none(), "b is gone");
        let (plan, _) = renumber(section("  peer b\n  peer c\n"), &slots);
        assert_eq!(ids(&plan), [("b".into(), 1), ("c".into(), 2)]);
    }

    #[test]
    fn groups_keep_their_ids_by_number_or_by_their_lone_member() {
        let (_, slots) = renumber(
            section("  peer u1 up group 7\n  peer u2 up group 7\n  peer solo up\n"),
            &Slots::default(),
        );
        let (plan, _) = renumber(
            section("  peer new up group 9\n  peer solo up\n  peer u2 up group 7\n"),
            &slots,
        );
        let group_of = |name: &str| plan.group_of(plan.peer_by_name(name).expect("a peer"));
        assert_eq!(group_of("u2"), Some(GroupId(0)));
        assert_eq!(group_of("solo"), Some(GroupId(1)));
        assert_eq!(group_of("new"), Some(GroupId(2)));
        let g7 = plan.group(GroupId(0)).expect("group 7");
        assert_eq!(g7.members, [PeerId(1)]);
    }
}
