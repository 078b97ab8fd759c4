//! The seed's HA example as a new user runs it from `deploy/examples/ha/README.md`:
//! the four aggregator files as they are, and each node's lines merged into
//! Debian's stock `haproxy.cfg`, on loopback aliases.
//!
//! Only what cannot exist on one machine changes: 192.168.56.N becomes
//! 127.0.59.N (a /24 no other test uses; the ports stay the seed's, 80, 11111,
//! 22222, 44444, and our 10090), and the stats sockets move into scratch
//! directories. Debian's file keeps its `chroot`, `user`, `group`, `log` lines and
//! its `defaults`: the nodes run with them (the tests run as root).

use crate::rig::{Daemon, Scrape, root};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use stktagg_tests::http::http_get;
use stktagg_tests::{Haproxy, HarnessError, eventually};

/// The seed's addresses and their stand-ins here.
const SEED_NET: &str = "192.168.56.";
const NET: &str = "127.0.59.";

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 59, n)
}

fn example(file: &str) -> String {
    let p = root().join("deploy/examples/ha").join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_seeds_ha_example_runs_as_documented() {
    stktagg_tests::require_haproxy().unwrap();
    let debian = std::fs::read_to_string(
        root().join("crates/stktagg-daemon/tests/ops/data/debian12-haproxy.cfg"),
    )
    .unwrap();
    assert!(debian.contains("stats socket /run/haproxy/admin.sock"));
    // The aggregators: top level first, so that the intermediates find it.
    let mut aggrs = Vec::new();
    for i in [3, 4, 1, 2] {
        let cfg = example(&format!("aggr{i}.cfg"))
            .replace(SEED_NET, NET)
            .replace("/run/stktagg/stktagg.sock", "{dir}/api.sock");
        aggrs.push((
            i,
            Daemon::start(&format!("ops_ha_aggr{i}"), &cfg, &[]).unwrap(),
        ));
    }
    // The nodes: Debian's file, then the node's lines appended, as the README says.
    let mut nodes = Vec::new();
    for i in 1..=4 {
        let text = debian.replace("/run/haproxy/admin.sock", "{stats_socket}")
            + &example(&format!("haproxy-hapee{i}.cfg")).replace(SEED_NET, NET);
        nodes.push(Haproxy::start_text(&text, &format!("ops_ha_hapee{i}")).unwrap());
    }
    let node_http = |i: usize| SocketAddr::from((ip(100 + i as u8), 80));
    // One client, i requests into hapee{i}: 3 on aggr1's pair, 7 on aggr2's, 10 in
    // the fleet. Requests are counted once every node is attached.
    let agg = |i: u8| &aggrs.iter().find(|(n, _)| *n == i).unwrap().1;
    eventually(
        "every session of both intermediates up",
        Duration::from_secs(20),
        || {
            for i in [1, 2] {
                let p = agg(i).api.command("show peers")?;
                let up = p.matches("state=ESTA").count();
                if up < 4 || !p.contains("role=(up group=1 active)") {
                    return Err(HarnessError::Unexpected(format!("aggr{i}:\n{p}")));
                }
            }
            Ok(())
        },
    )
    .unwrap();
    let client = ip(201);
    for i in 1..=4 {
        for _ in 0..i {
            assert_eq!(http_get(client, node_http(i), &[]).unwrap(), 200);
        }
    }
    let key = client.to_string();
    eventually(
        "every node's .aggr and .l2 right",
        Duration::from_secs(20),
        || {
            for (i, n) in nodes.iter().enumerate() {
                let pair = if i < 2 { 3 } else { 7 };
                for (table, want) in [("mypeers/req.aggr", pair), ("mypeers/req.l2", 10)] {
                    let d = n.api().show_table(table)?;
                    let got = d.entry(&key).and_then(|e| e.num("http_req_cnt"));
                    if got != Some(want) {
                        return Err(HarnessError::Unexpected(format!(
                            "hapee{}: {table} = {got:?}, want {want}",
                            i + 1
                        )));
                    }
                }
            }
            Ok(())
        },
    )
    .unwrap();
    // Every aggregator's metrics on its own address, port 10090, as
    // deploy/prometheus/prometheus.yml scrapes them: every peer up.
    for (i, _) in &aggrs {
        let addr = SocketAddr::from((ip(110 + *i), 10090));
        let s = Scrape::fetch(addr).unwrap();
        let peers: Vec<&str> = s
            .samples
            .iter()
            .filter(|x| x.name == "stktagg_peer_up")
            .map(|x| {
                assert_eq!(x.value, 1.0, "aggr{i}: {x:?}");
                x.labels
                    .iter()
                    .find(|(k, _)| k == "peer")
                    .map(|(_, v)| v.as_str())
                    .unwrap()
            })
            .collect();
        assert_eq!(
            peers.len(),
            if *i <= 2 { 4 } else { 2 },
            "aggr{i}: {peers:?}"
        );
    }
    // The seed's slip: the intermediates name aggr3 at :11111, where nothing
    // listens; the session exists all the same, because aggr3 dialed them.
    let p = agg(1).api.command("show peers").unwrap();
    let aggr3 = crate::rig::peer_block(&p, "aggr3").unwrap();
    assert!(
        aggr3.contains(&format!("addr={NET}113:11111")) && aggr3.contains("state=ESTA"),
        "{aggr3}"
    );
    drop(nodes);
    drop(aggrs);
}
