//! The Prometheus endpoint, scraped over plain HTTP, series by series.

use crate::rig::{Block, CONVERGE, Daemon, Fleet, FleetOpts, Scrape, peer_block, root};
use std::collections::BTreeSet;
use std::time::Duration;
use stktagg_tests::mock_peer::{handshake_raw_from, hello_bytes};
use stktagg_tests::{HarnessError, MockPeer, eventually};
use stktagg_wire::{StatusCode, Version};

/// Scrapes until `check` passes (counters move asynchronously), at most `bound`.
fn scrape_until(
    addr: std::net::SocketAddr,
    what: &str,
    bound: Duration,
    check: impl Fn(&Scrape) -> Result<(), String>,
) -> Scrape {
    eventually(what, bound, || {
        let s = Scrape::fetch(addr).map_err(|e| e.to_string())?;
        check(&s)
            .map(|()| s.clone())
            .map_err(|e| format!("{e}\n{}", s.text))
    })
    .unwrap()
}

fn at_least(s: &Scrape, name: &str, labels: &[(&str, &str)], min: f64) -> Result<(), String> {
    match s.get(name, labels) {
        Some(v) if v >= min => Ok(()),
        other => Err(format!("{name}{labels:?} = {other:?}, want >= {min}")),
    }
}

fn exactly(s: &Scrape, name: &str, labels: &[(&str, &str)], want: f64) -> Result<(), String> {
    match s.get(name, labels) {
        Some(v) if v == want => Ok(()),
        other => Err(format!("{name}{labels:?} = {other:?}, want {want}")),
    }
}

#[test]
fn every_series_with_an_up_group_failing_over() {
    let fleet = Fleet::start(
        "ops_metrics_group",
        Block(8),
        FleetOpts {
            tops: true,
            rogue: false,
        },
    )
    .unwrap();
    fleet.hit(0, 0, 3).unwrap();
    fleet.hit(1, 0, 2).unwrap();
    fleet.hit(1, 1, 1).unwrap();
    let ag = ("section", "ag");
    // The sums reach the tops, whose `.l2` comes back and is relayed to the nodes.
    let s = scrape_until(
        fleet.prometheus,
        "sums, relays and the group in the metrics",
        Duration::from_secs(20),
        |s| {
            exactly(
                s,
                "stktagg_table_entries",
                &[ag, ("table", "/req.aggr")],
                2.0,
            )?;
            exactly(s, "stktagg_table_entries", &[ag, ("table", "/req.l2")], 2.0)?;
            exactly(
                s,
                "stktagg_group_active_member",
                &[ag, ("group", "1"), ("peer", "top1")],
                1.0,
            )?;
            exactly(
                s,
                "stktagg_group_active_member",
                &[ag, ("group", "1"), ("peer", "top2")],
                0.0,
            )?;
            for p in ["hap1", "hap2"] {
                let peer = ("peer", p);
                at_least(s, "stktagg_updates_received_total", &[ag, peer], 1.0)?;
                at_least(s, "stktagg_updates_sent_total", &[ag, peer], 1.0)?;
                at_least(
                    s,
                    "stktagg_resyncs_total",
                    &[ag, peer, ("direction", "in")],
                    1.0,
                )?;
            }
            for p in ["top1", "top2"] {
                at_least(s, "stktagg_updates_sent_total", &[ag, ("peer", p)], 1.0)?;
            }
            at_least(
                s,
                "stktagg_updates_received_total",
                &[ag, ("peer", "top1")],
                1.0,
            )?;
            at_least(s, "stktagg_propagation_seconds_count", &[], 1.0)?;
            Ok(())
        },
    );
    for p in ["hap1", "hap2", "top1", "top2"] {
        assert_eq!(
            s.get("stktagg_peer_up", &[ag, ("peer", p)]),
            Some(1.0),
            "{p}"
        );
        assert_eq!(
            s.get("stktagg_sessions_total", &[ag, ("peer", p)]),
            Some(1.0),
            "{p}"
        );
    }
    // Types and the histogram's shape.
    for (name, kind) in [
        ("stktagg_peer_up", "gauge"),
        ("stktagg_updates_received_total", "counter"),
        ("stktagg_updates_sent_total", "counter"),
        ("stktagg_resyncs_total", "counter"),
        ("stktagg_sessions_total", "counter"),
        ("stktagg_table_entries", "gauge"),
        ("stktagg_group_active_member", "gauge"),
        ("stktagg_group_switches_total", "counter"),
        ("stktagg_propagation_seconds", "histogram"),
    ] {
        assert!(
            s.has_type(name, kind),
            "no `# TYPE {name} {kind}`:\n{}",
            s.text
        );
    }
    let count = s.get("stktagg_propagation_seconds_count", &[]).unwrap();
    assert_eq!(
        s.get("stktagg_propagation_seconds_bucket", &[("le", "+Inf")]),
        Some(count)
    );
    // Live updates on loopback reach the peers well within 250 ms. (Not the mean:
    // entries re-sent by a full resync are observed too, with their age.)
    let fast = s
        .get("stktagg_propagation_seconds_bucket", &[("le", "0.25")])
        .unwrap();
    assert!(fast >= 1.0 && fast <= count, "{}", s.text);
    assert!(s.get("stktagg_propagation_seconds_sum", &[]).unwrap() >= 0.0);
    // Bounded labels: no series carries a key (client addresses never appear).
    assert!(
        !s.text.contains(&fleet.block.client(0).to_string()),
        "{}",
        s.text
    );
    // The first election (none to top1) is a switch.
    let switches = s
        .get("stktagg_group_switches_total", &[ag, ("group", "1")])
        .unwrap();
    assert!(switches >= 1.0, "{}", s.text);
    let agg_updates = s
        .get("stktagg_updates_received_total", &[ag, ("peer", "hap1")])
        .unwrap();

    // addr-check: every peer's refusal counter is there from the start, at 0; a session claiming hap1 from another loopback address is refused (504)
    // and counted under hap1 and under the 504s.
    for p in ["hap1", "hap2", "top1", "top2"] {
        assert_eq!(
            s.get("stktagg_hello_wrong_address_total", &[ag, ("peer", p)]),
            Some(0.0),
            "{p}"
        );
    }
    assert!(s.has_type("stktagg_hello_wrong_address_total", "counter"));
    let hello = hello_bytes(Version::V2_1, "stktagg", "hap1").unwrap();
    let (_conn, status, code, _) =
        handshake_raw_from(Some(fleet.block.ip(7)), fleet.listen, &hello).unwrap();
    assert_eq!(code, StatusCode::UnknownPeer, "{status}");
    scrape_until(
        fleet.prometheus,
        "the impostor counted",
        Duration::from_secs(5),
        |s| {
            exactly(
                s,
                "stktagg_hello_wrong_address_total",
                &[ag, ("peer", "hap1")],
                1.0,
            )?;
            at_least(
                s,
                "stktagg_hello_rejected_total",
                &[ag, ("code", "504")],
                1.0,
            )
        },
    );

    // `show aggrs` names the relayed table; `show peers` the active member.
    let aggrs = fleet.agg.api.command("show aggrs").unwrap();
    assert!(aggrs.contains("  forward .l2\n"), "{aggrs}");
    assert!(
        aggrs.contains("table=ag/req.l2 (relayed from group"),
        "{aggrs}"
    );
    let peers = fleet.agg.api.command("show peers").unwrap();
    let line = |p: &str| -> String { peer_block(&peers, p).unwrap() };
    assert!(line("top1").contains("role=(up group=1 active)"), "{peers}");
    assert!(
        line("top2").contains("role=(up group=1 standby)"),
        "{peers}"
    );
    assert!(line("hap1").contains("role=(node)"), "{peers}");
    assert!(line("hap1").contains(" addr_refused=1 "), "{peers}");
    assert!(line("hap1").contains(" sessions=1 "), "{peers}");

    // Fail-over: top1 stops, top2 takes over; one more switch.
    let mut tops = fleet.tops.unwrap();
    tops.daemons[0].stop();
    let s = scrape_until(
        fleet.prometheus,
        "top2 active after top1 stopped",
        Duration::from_secs(20),
        |s| {
            exactly(s, "stktagg_peer_up", &[ag, ("peer", "top1")], 0.0)?;
            exactly(
                s,
                "stktagg_group_active_member",
                &[ag, ("group", "1"), ("peer", "top1")],
                0.0,
            )?;
            exactly(
                s,
                "stktagg_group_active_member",
                &[ag, ("group", "1"), ("peer", "top2")],
                1.0,
            )?;
            at_least(
                s,
                "stktagg_group_switches_total",
                &[ag, ("group", "1")],
                switches + 1.0,
            )?;
            Ok(())
        },
    );
    let peers = fleet.agg.api.command("show peers").unwrap();
    assert!(
        peers.contains("role=(up group=1 active) state=ESTA"),
        "{peers}"
    );
    // Counters only grow.
    assert!(
        s.get("stktagg_updates_received_total", &[ag, ("peer", "hap1")])
            .unwrap()
            >= agg_updates
    );
    // The relayed table is top2's now, still on the nodes.
    let k = fleet.block.client(0).to_string();
    eventually("hap1's req.l2 holds the fleet sum", CONVERGE, || {
        let d = fleet.nodes[0]
            .api()
            .show_table(&Fleet::node_table("req.l2"))?;
        match d.entry(&k).and_then(|e| e.num("http_req_cnt")) {
            Some(5) => Ok(()),
            other => Err(HarnessError::Unexpected(format!("{other:?}: {d:?}"))),
        }
    })
    .unwrap();
}

#[test]
fn protocol_errors_are_counted_by_kind() {
    let b = Block(9);
    let listen = b.addr(1);
    let prom = b.addr(1);
    let d = Daemon::start(
        "ops_metrics_proto",
        &format!(
            "global\n    stats socket {{dir}}/api.sock\n    prometheus {prom}\n\n\
             aggregations s\n    peer me {listen} local\n    peer rogue\n    from .a to .b\n"
        ),
        &[],
    )
    .unwrap();
    // The series exists at 0 before the first error, so that `increase()` over it
    // sees the error.
    let s = Scrape::fetch(prom).unwrap();
    assert_eq!(
        s.get(
            "stktagg_protocol_errors_total",
            &[("peer", "rogue"), ("kind", "ReservedClass")]
        ),
        Some(0.0)
    );
    // A valid hello, then a message of the reserved class 255.
    let mut raw = MockPeer::dial(listen, "me", "rogue").unwrap();
    raw.send_raw(&[0xff, 0x07]).unwrap();
    let _ = raw.read_until_closed(Duration::from_secs(5));
    let s = scrape_until(
        prom,
        "a protocol error counted",
        Duration::from_secs(5),
        |s| {
            exactly(
                s,
                "stktagg_protocol_errors_total",
                &[
                    ("section", "s"),
                    ("peer", "rogue"),
                    ("kind", "ReservedClass"),
                ],
                1.0,
            )?;
            exactly(
                s,
                "stktagg_peer_up",
                &[("section", "s"), ("peer", "rogue")],
                0.0,
            )
        },
    );
    assert!(s.has_type("stktagg_protocol_errors_total", "counter"));
    assert_eq!(
        s.get(
            "stktagg_sessions_total",
            &[("section", "s"), ("peer", "rogue")]
        ),
        Some(1.0)
    );
    let peers = d.api.command("show peers").unwrap();
    assert!(peers.contains("proto_err=1"), "{peers}");
    assert!(
        peers.contains("last_error=\"protocol error from peer"),
        "{peers}"
    );
    // The daemon goes on: a second, well-behaved session is accepted.
    let mut again = MockPeer::dial(listen, "me", "rogue").unwrap();
    again.send(&stktagg_wire::Message::Heartbeat).unwrap();
    eventually("rogue up again", Duration::from_secs(5), || {
        let p = d.api.command("show peers")?;
        if p.contains("state=ESTA") && p.contains("sessions=2") {
            Ok(())
        } else {
            Err(HarnessError::Unexpected(p))
        }
    })
    .unwrap();
}

/// Every `stktagg_…` name `src/metrics.rs` describes.
fn described() -> BTreeSet<String> {
    let src = std::fs::read_to_string(root().join("crates/stktagg-daemon/src/metrics.rs")).unwrap();
    let mut names = BTreeSet::new();
    for chunk in src.split("describe_").skip(1) {
        if let Some(name) = chunk
            .split('"')
            .nth(1)
            .filter(|n| n.starts_with("stktagg_"))
        {
            names.insert(name.to_owned());
        }
    }
    assert!(names.len() >= 12, "{names:?}");
    names
}

#[test]
fn a_daemon_whose_peers_never_connected_exports_every_series_at_zero() {
    let b = Block(13);
    let listen = b.addr(1);
    let prom = b.addr(1);
    // Nothing listens at the nodes' and the tops' addresses; `lone` has none.
    let d = Daemon::start(
        "ops_metrics_zero",
        &format!(
            "global\n    stats socket {{dir}}/api.sock\n    prometheus {prom}\n\n\
             aggregations s\n    peer me {listen} local\n    peer hap1 {}\n    peer hap2 {}\n    \
             peer lone\n    peer top1 {} up group 1\n    peer top2 {} up group 1\n    \
             from .uncombined to .aggr\n    forward .l2\n",
            b.addr(4),
            b.addr(5),
            b.addr(2),
            b.addr(3)
        ),
        &[],
    )
    .unwrap();
    // Let every peer with an address fail a dial first: failed dials are no session.
    eventually("every dial failed once", Duration::from_secs(10), || {
        let p = d.api.command("show peers")?;
        let failed = p.matches("Connection refused").count();
        if failed >= 4 {
            Ok(())
        } else {
            Err(HarnessError::Unexpected(p))
        }
    })
    .unwrap();
    let s = Scrape::fetch(prom).unwrap();
    let sec = ("section", "s");
    let peers = ["hap1", "hap2", "lone", "top1", "top2"];
    for p in peers {
        let peer = ("peer", p);
        for name in [
            "stktagg_peer_up",
            "stktagg_sessions_total",
            "stktagg_updates_received_total",
            "stktagg_updates_sent_total",
            "stktagg_tables_ignored_total",
            "stktagg_hello_wrong_address_total",
        ] {
            assert_eq!(
                s.get(name, &[sec, peer]),
                Some(0.0),
                "{name} {p}:\n{}",
                s.text
            );
        }
        for dir in ["in", "out"] {
            assert_eq!(
                s.get("stktagg_resyncs_total", &[sec, peer, ("direction", dir)]),
                Some(0.0),
                "{p} {dir}"
            );
        }
        for kind in stktagg_daemon::metrics::PROTOCOL_ERROR_KINDS {
            assert_eq!(
                s.get(
                    "stktagg_protocol_errors_total",
                    &[sec, peer, ("kind", kind)]
                ),
                Some(0.0),
                "{p} {kind}"
            );
        }
    }
    for code in ["501", "502", "503", "504"] {
        assert_eq!(
            s.get("stktagg_hello_rejected_total", &[sec, ("code", code)]),
            Some(0.0),
            "{code}"
        );
    }
    assert_eq!(
        s.get("stktagg_group_switches_total", &[sec, ("group", "1")]),
        Some(0.0)
    );
    for p in ["top1", "top2"] {
        assert_eq!(
            s.get(
                "stktagg_group_active_member",
                &[sec, ("group", "1"), ("peer", p)]
            ),
            Some(0.0)
        );
    }
    // The histogram is there, per section, empty: every bucket, the sum and the count.
    assert_eq!(
        s.get("stktagg_propagation_seconds_count", &[sec]),
        Some(0.0)
    );
    assert_eq!(s.get("stktagg_propagation_seconds_sum", &[sec]), Some(0.0));
    for le in ["0.0001", "0.001", "0.25", "1", "+Inf"] {
        assert_eq!(
            s.get("stktagg_propagation_seconds_bucket", &[sec, ("le", le)]),
            Some(0.0),
            "le={le}"
        );
    }
    // Every described series is exported but the per-table ones (no table exists
    // before a peer defines one), and every stktagg sample is 0 but the build info.
    for name in described() {
        let present = s.samples.iter().any(|x| {
            x.name == name
                || x.name
                    .strip_prefix(&name)
                    .is_some_and(|r| r.starts_with('_'))
        });
        let per_table = [
            "stktagg_table_entries",
            "stktagg_table_size",
            "stktagg_table_full_total",
        ];
        assert_eq!(
            present,
            !per_table.contains(&name.as_str()),
            "{name}:\n{}",
            s.text
        );
    }
    // The configuration in force was applied at start: the last reload (the
    // start) succeeded, now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let applied = s
        .get("stktagg_config_last_reload_success_timestamp_seconds", &[])
        .unwrap();
    assert!((now - applied).abs() < 120.0, "{applied} vs {now}");
    for r in ["ok", "invalid", "failed"] {
        assert_eq!(
            s.get("stktagg_config_reloads_total", &[("result", r)]),
            Some(0.0),
            "{r}"
        );
    }
    for x in s.samples.iter().filter(|x| {
        x.name.starts_with("stktagg_")
            && x.name != "stktagg_config_last_reload_success_timestamp_seconds"
    }) {
        let want = match x.name.as_str() {
            "stktagg_build_info" | "stktagg_config_last_reload_successful" => 1.0,
            _ => 0.0,
        };
        assert_eq!(x.value, want, "{x:?}");
    }
    assert_eq!(
        s.get(
            "stktagg_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // Process metrics, under their standard names.
    let rss = s.get("process_resident_memory_bytes", &[]).unwrap();
    assert!(rss > 1e6 && rss < 1e9, "{rss}");
    assert!(s.get("process_open_fds", &[]).unwrap() >= 3.0);
    assert!(s.get("process_max_fds", &[]).is_some());
    assert!(s.get("process_threads", &[]).unwrap() >= 1.0);
    assert!(s.get("process_cpu_seconds_total", &[]).unwrap() >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = s.get("process_start_time_seconds", &[]).unwrap();
    assert!((now - started).abs() < 120.0, "{started} vs {now}");
}
