//! The resolved plan of each seed configuration, and its summary.

use stktagg_config::PeerAddr;
use stktagg_topology::{
    GroupId, GroupPlan, IgnoreReason, PeerId, Plan, Role, Route, SourceKind, resolve,
};

fn plan(name: &str) -> Plan {
    let path = format!(
        "{}/../stktagg-config/tests/data/ok/{name}.cfg",
        env!("CARGO_MANIFEST_DIR")
    );
    let cfg = stktagg_config::parse_file(&path).unwrap_or_else(|e| panic!("{e}"));
    resolve(&cfg).unwrap()
}

fn addr(host: &str, port: u16) -> PeerAddr {
    PeerAddr {
        host: host.to_owned(),
        port,
    }
}

fn aggregate(output: &str) -> Route {
    Route::Aggregate {
        output: output.to_owned(),
    }
}

fn ignore(reason: IgnoreReason) -> Route {
    Route::Ignore { reason }
}

/// The roles of a section's peers, by name, in order.
fn roles(plan: &Plan) -> Vec<(String, Role)> {
    plan.sections[0]
        .peers
        .iter()
        .map(|p| (p.name.clone(), p.role))
        .collect()
}

#[test]
fn top_level_aggr3() {
    let plan = plan("seed-aggr3");
    assert_eq!(plan.sections.len(), 1);
    let s = &plan.sections[0];
    assert_eq!(s.name, "myl2");
    assert_eq!(s.local_name, "aggr3");
    assert_eq!(s.listener, addr("192.168.56.113", 22222));
    let down = Role::Source(SourceKind::Down);
    assert_eq!(
        roles(&plan),
        vec![("aggr1".to_owned(), down), ("aggr2".to_owned(), down)]
    );
    assert!(s.groups.is_empty());
    let aggr1 = PeerId(0);
    assert_eq!(s.route_incoming(aggr1, "/req.aggr"), aggregate("/req.l2"));
    // Our own output echoed back, and anything unknown, are ignored.
    assert_eq!(
        s.route_incoming(aggr1, "/req.l2"),
        ignore(IgnoreReason::OutputTable)
    );
    assert_eq!(
        s.route_incoming(aggr1, "/req.uncombined"),
        ignore(IgnoreReason::NoRule)
    );
    assert!(s.receives_output(aggr1) && s.receives_relay(aggr1));
}

#[test]
fn top_level_aggr4_with_its_extra_indented_line() {
    let plan = plan("seed-aggr4");
    let s = &plan.sections[0];
    assert_eq!(s.local_name, "aggr4");
    assert_eq!(s.listener, addr("192.168.56.114", 22222));
    assert_eq!(s.peer_by_name("aggr1"), Some(PeerId(0)));
    assert_eq!(
        s.peer(PeerId(0)).unwrap().addr,
        Some(addr("192.168.56.111", 11111))
    );
    assert_eq!(s.peer_by_name("aggr2"), Some(PeerId(1)));
    assert_eq!(
        s.peer_by_name("aggr4"),
        None,
        "the local peer is not a remote peer"
    );
}

#[test]
fn intermediate_aggr1_with_group() {
    let plan = plan("seed-aggr1");
    let s = &plan.sections[0];
    assert_eq!(
        (s.name.as_str(), s.local_name.as_str()),
        ("myaggr", "aggr1")
    );
    assert_eq!(s.listener, addr("192.168.56.111", 11111));
    let node = Role::Source(SourceKind::Node);
    let up = Role::Upstream { group: GroupId(0) };
    assert_eq!(
        roles(&plan),
        vec![
            ("hapee1".to_owned(), node),
            ("hapee2".to_owned(), node),
            ("aggr3".to_owned(), up),
            ("aggr4".to_owned(), up),
        ]
    );
    assert_eq!(
        s.groups,
        vec![GroupPlan {
            id: GroupId(0),
            number: Some(1),
            members: vec![PeerId(2), PeerId(3)],
        }]
    );
    let (hapee1, aggr3, aggr4) = (PeerId(0), PeerId(2), PeerId(3));
    assert_eq!(
        s.route_incoming(hapee1, "/req.uncombined"),
        aggregate("/req.aggr")
    );
    assert_eq!(
        s.route_incoming(hapee1, "/req.aggr"),
        ignore(IgnoreReason::OutputTable)
    );
    assert_eq!(
        s.route_incoming(hapee1, "/req.l2"),
        ignore(IgnoreReason::ForwardedTable)
    );
    assert_eq!(
        s.route_incoming(aggr3, "/req.l2"),
        Route::Relay { group: GroupId(0) }
    );
    assert_eq!(
        s.route_incoming(aggr4, "/req.l2"),
        Route::Relay { group: GroupId(0) }
    );
    // An upstream's other tables are never input.
    assert_eq!(
        s.route_incoming(aggr3, "/req.uncombined"),
        ignore(IgnoreReason::NotForwarded)
    );
    assert_eq!(
        s.route_incoming(aggr3, "/req.aggr"),
        ignore(IgnoreReason::NotForwarded)
    );
    assert!(s.receives_output(hapee1) && s.receives_output(aggr3));
    assert!(s.receives_relay(hapee1));
    assert!(!s.receives_relay(aggr3) && !s.receives_relay(aggr4));
    assert_eq!(
        s.route_incoming(PeerId(9), "/req.uncombined"),
        ignore(IgnoreReason::UnknownPeer)
    );
}

#[test]
fn intermediate_aggr2_matches_aggr1_but_its_nodes() {
    let plan = plan("seed-aggr2");
    let s = &plan.sections[0];
    assert_eq!(s.local_name, "aggr2");
    assert_eq!(s.listener, addr("192.168.56.112", 11111));
    let names: Vec<&str> = s.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["hapee3", "hapee4", "aggr3", "aggr4"]);
    assert_eq!(s.groups.len(), 1);
    assert_eq!(s.groups[0].members, vec![PeerId(2), PeerId(3)]);
}

#[test]
fn intermediate_without_group_gives_each_upstream_its_own_group() {
    for name in ["seed-aggr1-nogroup", "seed-aggr2-nogroup"] {
        let plan = plan(name);
        let s = &plan.sections[0];
        assert_eq!(s.groups.len(), 2, "{name}");
        assert_eq!(s.groups[0].number, None);
        assert_eq!(s.groups[0].members, vec![PeerId(2)]);
        assert_eq!(s.groups[1].members, vec![PeerId(3)]);
        assert_eq!(s.group_of(PeerId(2)), Some(GroupId(0)));
        assert_eq!(s.group_of(PeerId(3)), Some(GroupId(1)));
        assert_eq!(s.group_of(PeerId(0)), None);
        assert_eq!(
            s.route_incoming(PeerId(3), "/t.l2"),
            Route::Relay { group: GroupId(1) }
        );
    }
}

#[test]
fn from_any_and_dial_in_peers() {
    let plan = plan("from-any-dial-in");
    let s = &plan.sections[0];
    assert!(s.peers.iter().all(|p| p.addr.is_none()));
    assert_eq!(s.route_incoming(PeerId(0), "/conn"), aggregate("/conn.sum"));
    assert_eq!(
        s.route_incoming(PeerId(2), "backend1"),
        aggregate("backend1.sum")
    );
    assert_eq!(
        s.route_incoming(PeerId(0), "/conn.sum"),
        ignore(IgnoreReason::OutputTable)
    );
}

#[test]
fn several_sections_resolve_independently() {
    let plan = plan("multi-section");
    assert_eq!(plan.sections.len(), 2);
    let tcp = plan.section("tcp").unwrap();
    assert_eq!(tcp.listener, addr("127.0.0.1", 20000));
    assert_eq!(
        tcp.route_incoming(PeerId(1), "/x.tcp_in"),
        aggregate("/x.tcp_sum")
    );
    assert_eq!(
        plan.section("http")
            .unwrap()
            .route_incoming(PeerId(1), "/x.tcp_in"),
        ignore(IgnoreReason::NoRule)
    );
}

#[test]
fn summary_of_the_ha_intermediate() {
    let expected = "\
section myaggr: we are `aggr1`, listening on 192.168.56.111:11111
  peers:
    #0 hapee1  192.168.56.101:44444  source (haproxy node)
    #1 hapee2  192.168.56.102:44444  source (haproxy node)
    #2 aggr3   192.168.56.113:11111  upstream, group 1
    #3 aggr4   192.168.56.114:11111  upstream, group 1
  upstream groups (relayed from the first member up and resynced):
    group 1: aggr3, aggr4
  routing:
    <base>.uncombined from hapee1, hapee2 -> <base>.aggr to hapee1, hapee2, aggr3, aggr4
    <base>.l2 from group 1 (aggr3, aggr4) -> relayed as is to hapee1, hapee2
    anything else: ignored
  teach-back: on (a source that asks for a resync gets its own last entries back)
  addr-check: on (a session claiming a peer must come from its address)
";
    assert_eq!(plan("seed-aggr1").to_string(), expected);
}

#[test]
fn summary_of_the_top_level() {
    let expected = "\
section myl2: we are `aggr3`, listening on 192.168.56.113:22222
  peers:
    #0 aggr1  192.168.56.111:11111  source (down: lower aggregator)
    #1 aggr2  192.168.56.112:11111  source (down: lower aggregator)
  routing:
    <base>.aggr from aggr1, aggr2 -> <base>.l2 to aggr1, aggr2
    anything else: ignored
  teach-back: on (a source that asks for a resync gets its own last entries back)
  addr-check: on (a session claiming a peer must come from its address)
";
    assert_eq!(plan("seed-aggr3").to_string(), expected);
}

#[test]
fn summary_of_ungrouped_upstreams_and_teach_back_off() {
    let text = plan("full").to_string();
    assert!(text.contains("    l2c (own group)\n"), "{text}");
    assert!(
        text.contains(
            "<base>.l2 from group 1 (l2a, l2b), l2c (own group) -> relayed as is to hap1, hap2"
        ),
        "{text}"
    );
    assert!(text.contains("  teach-back: off\n"), "{text}");
    assert!(
        text.contains(
            "  addr-check: on for hap1; off for hap2, l2a, l2b, l2c (accepted from any address)\n"
        ),
        "{text}"
    );
}

#[test]
fn sharded_upstreams_carry_their_shard_and_a_replicated_shard_is_one_group() {
    let plan = plan("sharded-upper");
    let s = &plan.sections[0];
    assert_eq!((s.shards, s.local_shard), (2, 0));
    let shards: Vec<(&str, Option<u32>)> = s
        .peers
        .iter()
        .map(|p| (p.name.as_str(), s.shard_of(p.id)))
        .collect();
    assert_eq!(
        shards,
        [
            ("hapee1", None),
            ("hapee2", None),
            ("top1a", Some(1)),
            ("top1b", Some(1)),
            ("top2", Some(2))
        ]
    );
    // Shard 1's pair is one group (one relayed member); shard 2 is a group of its own.
    assert_eq!(s.groups.len(), 2);
    assert_eq!(s.groups[0].members, vec![PeerId(2), PeerId(3)]);
    assert_eq!(s.groups[1].members, vec![PeerId(4)]);
    // Sharding changes what we send, never what is routed.
    assert_eq!(
        s.route_incoming(PeerId(4), "/req.l2"),
        Route::Relay { group: GroupId(1) }
    );
}

#[test]
fn summary_of_a_sharded_intermediate_and_of_a_shards_aggregator() {
    let text = plan("sharded-upper").to_string();
    assert!(text.contains("  shards: 2\n"), "{text}");
    assert!(
        text.contains("#4 top2    10.0.0.33:22222  upstream, shard 2\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "    to top1a: only the keys of shard 1 of 2 (HAProxy's key-to-shard function, seeded with `myaggr/<table>`)\n"
        ),
        "{text}"
    );
    let text = plan("sharded-tier").to_string();
    assert!(
        text.contains("  shards: 2 (we serve shard 1: sharded nodes send us only its keys)\n"),
        "{text}"
    );
    assert!(!text.contains("only the keys of shard"), "{text}");
}

#[test]
fn a_shard_beyond_shards_or_mixed_in_a_group_is_refused_when_built_by_hand() {
    let path = format!(
        "{}/../stktagg-config/tests/data/ok/sharded-upper.cfg",
        env!("CARGO_MANIFEST_DIR")
    );
    let cfg = stktagg_config::parse_file(&path).unwrap();
    let mut beyond = cfg.clone();
    beyond.sections[0].shards = 1;
    assert!(matches!(
        resolve(&beyond),
        Err(stktagg_topology::TopologyError::ShardOutOfRange { name, .. }) if name == "top2"
    ));
    let mut mixed = cfg;
    // The config's peers count the local one: [3] is top1a, of group 1 with top1b.
    assert_eq!(mixed.sections[0].peers[3].name, "top1a");
    mixed.sections[0].peers[3].shard = 2;
    assert!(matches!(
        resolve(&mixed),
        Err(stktagg_topology::TopologyError::GroupShards { group: 1, .. })
    ));
}
