//! Renumbering a reloaded plan onto the running one's ids ([`renumber`]), over
//! random pairs of sections drawn from one pool of peer names:
//! - a peer whose name ran before keeps its id, and so does a group;
//! - no two peers (or groups) share an id, and a removed peer's id is given to
//!   nobody else;
//! - every table is routed for a peer exactly as the fresh plan routes it for
//!   the peer of the same name, and the routing invariants still hold;
//! - a name that comes back gets its first id again.

use proptest::prelude::*;
use stktagg_config::{
    Aggregations, Config, FromSpec, Global, Peer, PeerAddr, PeerRole, Rule, TlsOptions,
};
use stktagg_topology::{PeerId, Route, SectionPlan, Slots, renumber, resolve};

use crate::invariants::{check_invariants, names, span};

fn role() -> impl Strategy<Value = PeerRole> {
    prop_oneof![
        Just(PeerRole::Node),
        Just(PeerRole::Down),
        Just(PeerRole::Up { group: None }),
        (0u32..3).prop_map(|g| PeerRole::Up { group: Some(g) }),
    ]
}

/// A section whose peers are some of `p0`..`p7`, in a random order.
fn section() -> impl Strategy<Value = SectionPlan> {
    (
        prop::collection::vec(any::<bool>(), 8),
        prop::collection::vec(role(), 8),
        Just((0..8).collect::<Vec<usize>>()).prop_shuffle(),
    )
        .prop_map(|(present, roles, order)| {
            let mut peers = vec![Peer {
                name: "me".to_owned(),
                addr: Some(PeerAddr {
                    host: "127.0.0.1".to_owned(),
                    port: 10000,
                }),
                role: PeerRole::Local,
                addr_check: None,
                tls: TlsOptions::default(),
                shard: 0,
                span: span(),
            }];
            for i in order.into_iter().filter(|&i| present[i]) {
                peers.push(Peer {
                    name: format!("p{i}"),
                    addr: None,
                    role: roles[i],
                    addr_check: None,
                    tls: TlsOptions::default(),
                    shard: 0,
                    span: span(),
                });
            }
            let cfg = Config {
                global: Global::default(),
                sections: vec![Aggregations {
                    name: "prop".to_owned(),
                    peers,
                    rules: vec![Rule {
                        from: FromSpec::Suffix(".uncombined".to_owned()),
                        to: ".aggr".to_owned(),
                        size: None,
                        span: span(),
                    }],
                    forwards: vec![stktagg_config::Forward {
                        suffix: ".l2".to_owned(),
                        span: span(),
                    }],
                    teach_back: true,
                    addr_check: true,
                    default_server: TlsOptions::default(),
                    shards: 0,
                    span: span(),
                }],
                warnings: Vec::new(),
            };
            resolve(&cfg).unwrap().sections.remove(0)
        })
}

fn member_names(s: &SectionPlan, id: PeerId) -> Vec<String> {
    let group = s.group(s.group_of(id).unwrap()).unwrap();
    group
        .members
        .iter()
        .map(|m| s.peer(*m).unwrap().name.clone())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn renumbering_keeps_ids_and_routing(old in section(), new in section()) {
        let (running, slots) = renumber(old.clone(), &Slots::default());
        prop_assert_eq!(&running, &old, "a first plan keeps its ids");
        let (renumbered, next) = renumber(new.clone(), &slots);
        // Ids are unique, findable, and below the slot count.
        let mut ids: Vec<PeerId> = renumbered.peers.iter().map(|p| p.id).collect();
        ids.sort();
        ids.dedup();
        prop_assert_eq!(ids.len(), renumbered.peers.len());
        let mut groups: Vec<_> = renumbered.groups.iter().map(|g| g.id).collect();
        groups.sort();
        groups.dedup();
        prop_assert_eq!(groups.len(), renumbered.groups.len());
        let names = names();
        for p in &renumbered.peers {
            prop_assert!(p.id.0 < next.peer_count());
            prop_assert_eq!(renumbered.peer(p.id).map(|q| &q.name), Some(&p.name));
            prop_assert_eq!(renumbered.peer_by_name(&p.name), Some(p.id));
            prop_assert_eq!(next.peer_name(p.id), Some(p.name.as_str()));
            // A name that ran before keeps its id; a removed peer's id is nobody
            // else's.
            if let Some(before) = old.peer_by_name(&p.name) {
                prop_assert_eq!(p.id, before);
            } else {
                prop_assert!(p.id.0 >= old.peers.len());
            }
            // Routing is the fresh plan's, for the peer of the same name.
            let fresh = new.peer_by_name(&p.name).unwrap();
            prop_assert_eq!(renumbered.is_source(p.id), new.is_source(fresh));
            if !new.is_source(fresh) {
                prop_assert_eq!(member_names(&renumbered, p.id), member_names(&new, fresh));
                // A group that ran before keeps its id.
                let label = |s: &SectionPlan, id| {
                    let g = s.group(s.group_of(id).unwrap()).unwrap();
                    (g.number, member_names(s, id)[0].clone())
                };
                for q in old.upstreams() {
                    let (n_old, first_old) = label(&old, q.id);
                    let (n_new, first_new) = label(&renumbered, p.id);
                    let same = match (n_old, n_new) {
                        (Some(a), Some(b)) => a == b,
                        (None, None) => first_old == first_new && q.name == p.name,
                        _ => false,
                    };
                    if same {
                        prop_assert_eq!(old.group_of(q.id), renumbered.group_of(p.id));
                    }
                }
            }
            for n in &names {
                let (a, b) = (renumbered.route_incoming(p.id, n), new.route_incoming(fresh, n));
                match (a, b) {
                    (Route::Relay { group: ga }, Route::Relay { group: gb }) => {
                        prop_assert_eq!(Some(ga), renumbered.group_of(p.id));
                        prop_assert_eq!(Some(gb), new.group_of(fresh));
                    }
                    (a, b) => prop_assert_eq!(a, b),
                }
            }
        }
        check_invariants(&renumbered, &names);
        // The old names come back: every one gets its first id again.
        let (back, _) = renumber(old.clone(), &next);
        prop_assert_eq!(back, old);
    }
}
