//! Routing invariants over random sections and random table names:
//! - a table is never routed back to its sender under the same name;
//! - nothing received from an upstream is ever aggregated;
//! - what we send (outputs, relayed tables) is never someone's input;
//! - relayed tables go to sources only, never to the upstream they came from.

use proptest::prelude::*;
use stktagg_config::{
    Aggregations, Config, Forward, FromSpec, Global, Peer, PeerAddr, PeerRole, Rule, Span,
    TlsOptions,
};
use stktagg_topology::{PeerId, Route, SectionPlan, resolve};

const SUFFIXES: &[&str] = &[".uncombined", ".aggr", ".l2", ".x", ".y", ".sum"];
const BASES: &[&str] = &["/req", "/conn", "be", "/a.b", ""];

pub fn span() -> Span {
    Span {
        file: "prop.cfg".into(),
        line: 1,
        column: 1,
    }
}

fn role() -> impl Strategy<Value = PeerRole> {
    prop_oneof![
        Just(PeerRole::Node),
        Just(PeerRole::Down),
        Just(PeerRole::Up { group: None }),
        (0u32..3).prop_map(|g| PeerRole::Up { group: Some(g) }),
    ]
}

/// A section with 0..6 remote peers, one or two rules and up to two forwards,
/// its suffixes drawn without repetition (as the checker requires).
fn section() -> impl Strategy<Value = Config> {
    (
        prop::collection::vec(role(), 0..6),
        Just(SUFFIXES.to_vec()).prop_shuffle(),
        any::<bool>(),
        1usize..3,
        0usize..3,
    )
        .prop_map(|(roles, suffixes, any_rule, n_rules, n_forwards)| {
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
            for (i, role) in roles.into_iter().enumerate() {
                peers.push(Peer {
                    name: format!("p{i}"),
                    addr: None,
                    role,
                    addr_check: None,
                    tls: TlsOptions::default(),
                    shard: 0,
                    span: span(),
                });
            }
            let mut next = suffixes.into_iter();
            let mut rules = Vec::new();
            for i in 0..n_rules {
                let from = if any_rule && i == 0 {
                    FromSpec::Any
                } else {
                    FromSpec::Suffix(next.next().unwrap_or(".f").to_owned())
                };
                rules.push(Rule {
                    from,
                    to: next.next().unwrap_or(".t").to_owned(),
                    size: None,
                    span: span(),
                });
            }
            let forwards = (0..n_forwards)
                .filter_map(|_| next.next())
                .map(|s| Forward {
                    suffix: s.to_owned(),
                    span: span(),
                })
                .collect();
            Config {
                global: Global::default(),
                sections: vec![Aggregations {
                    name: "prop".to_owned(),
                    peers,
                    rules,
                    forwards,
                    teach_back: true,
                    addr_check: true,
                    default_server: TlsOptions::default(),
                    shards: 0,
                    span: span(),
                }],
                warnings: Vec::new(),
            }
        })
}

pub fn names() -> Vec<String> {
    let mut out = Vec::new();
    for b in BASES {
        out.push((*b).to_owned());
        for s in SUFFIXES {
            out.push(format!("{b}{s}"));
            for s2 in SUFFIXES {
                out.push(format!("{b}{s}{s2}"));
            }
        }
    }
    out
}

pub fn check_invariants(s: &SectionPlan, names: &[String]) {
    let ids: Vec<PeerId> = s.peers.iter().map(|p| p.id).collect();
    let sources: Vec<PeerId> = ids.iter().copied().filter(|id| s.is_source(*id)).collect();
    for &p in &ids {
        // Upstreams never receive relayed tables, sources always do; everyone
        // receives outputs.
        assert_eq!(s.receives_relay(p), s.is_source(p));
        assert!(s.receives_output(p));
        for n in names {
            match s.route_incoming(p, n) {
                Route::Aggregate { output } => {
                    assert!(s.is_source(p), "aggregated {n} from upstream {p:?}");
                    assert_ne!(&output, n, "{n} aggregated into itself");
                    // The output is never input, nor relayed, whoever sends it.
                    for &q in &ids {
                        assert!(
                            !matches!(
                                s.route_incoming(q, &output),
                                Route::Aggregate { .. } | Route::Relay { .. }
                            ),
                            "output {output} of {n} is routed again from {q:?}"
                        );
                    }
                }
                Route::Relay { group } => {
                    assert!(!s.is_source(p), "relayed {n} from source {p:?}");
                    assert!(s.group(group).unwrap().members.contains(&p));
                    // Not back to its sender, and never input when a source
                    // echoes it back.
                    assert!(!s.receives_relay(p));
                    for &q in &sources {
                        assert!(
                            !matches!(s.route_incoming(q, n), Route::Aggregate { .. }),
                            "relayed {n} is input from {q:?}"
                        );
                    }
                }
                Route::Ignore { .. } => {}
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn routing_invariants_hold(cfg in section()) {
        let plan = resolve(&cfg).unwrap();
        let names = names();
        for s in &plan.sections {
            // Peer and group ids are indices.
            for (i, p) in s.peers.iter().enumerate() {
                prop_assert_eq!(p.id, PeerId(i));
            }
            for (i, g) in s.groups.iter().enumerate() {
                prop_assert_eq!(g.id.0, i);
                prop_assert!(!g.members.is_empty());
                for m in &g.members {
                    prop_assert_eq!(s.group_of(*m), Some(g.id));
                }
            }
            check_invariants(s, &names);
        }
    }

    #[test]
    fn resolve_rejects_conflicting_suffixes(a in prop::sample::select(SUFFIXES)) {
        // `from X to X`, built by hand past the checker, is refused.
        let mut cfg = stktagg_config::parse_str(stktagg_config::DEFAULT_CONFIG, "d").unwrap();
        cfg.sections[0].rules[0].from = FromSpec::Suffix(a.to_owned());
        cfg.sections[0].rules[0].to = a.to_owned();
        prop_assert!(resolve(&cfg).is_err());
    }
}
