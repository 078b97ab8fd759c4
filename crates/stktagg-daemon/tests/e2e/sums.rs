//! Every data-type family, summed (or maxed, or latest) over three nodes.

use crate::fleet::{
    Block, CONVERGE, Fleet, FleetSpec, Snapshot, frontend, http_get, rate_tolerance, table_pair,
};
use std::time::Duration;
use stktagg_tests::eventually;

const REQ_IN: &str = "cl/req.uncombined";
const REQ_OUT: &str = "cl/req.aggr";
/// `gpt0` each node sets on every request: the maximum is not the last node's.
const GPT: [u32; 3] = [7, 42, 13];

/// Waits until every node's output equals `want(snapshot)` for each field.
fn converge(
    fleet: &Fleet,
    input: &str,
    output: &str,
    key: &str,
    check: impl Fn(&Snapshot) -> Result<(), String>,
) -> Snapshot {
    eventually(&format!("{output} {key} to converge"), CONVERGE, || {
        let s = fleet
            .snapshot(input, output, key)
            .map_err(|e| e.to_string())?;
        check(&s).map(|()| s)
    })
    .unwrap()
}

/// Asserts that every node's output rate is within `rate_tolerance` of the sum of
/// the nodes' own rates, over a few snapshots spread across a second.
fn assert_rates_within_bound(fleet: &Fleet, input: &str, output: &str, key: &str) {
    let mut worst: (i128, i128, i128) = (0, 0, 0);
    for _ in 0..4 {
        let s = fleet.snapshot(input, output, key).unwrap();
        let sum = s.input_sum("http_req_rate");
        assert!(sum > 0, "the nodes' own rates are 0: {s:?}");
        let tol = rate_tolerance(sum, 10_000);
        for (n, got) in s.output_values("http_req_rate").into_iter().enumerate() {
            assert!(
                (got - sum).abs() <= tol,
                "hap{} reads http_req_rate {got} for {key}, the nodes' rates sum to {sum} \
                 (tolerance {tol}): {s:?}",
                n + 1
            );
            if (got - sum).abs() >= (worst.0 - worst.1).abs() {
                worst = (got, sum, tol);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "rates {output} {key}: largest gap: a node read {} for a sum of {} (tolerance {})",
        worst.0, worst.1, worst.2
    );
}

#[test]
fn ip_table_in_a_peers_section_sums_every_family() {
    let fleet = Fleet::start(FleetSpec {
        label: "e2e_sums_ip",
        block: Block(1),
        tables: table_pair(
            "req",
            "type ip size 1k expire 30s store \
             http_req_cnt,http_req_rate(10s),gpc0,gpt0,conn_cur,bytes_in_cnt,bytes_out_cnt,server_id",
        ),
        body: Box::new(|ctx| {
            frontend(
                ctx,
                &[
                    // Tracked at connection level so that idle connections count in
                    // conn_cur; requests on the connection still count.
                    "tcp-request connection track-sc0 src table cl/req.uncombined".into(),
                    "http-request sc-inc-gpc0(0)".into(),
                    format!("http-request sc-set-gpt0(0) {}", GPT[ctx.index]),
                ],
            )
        }),
        agg_lines: vec![],
    })
    .unwrap();
    let (c0, c1) = (
        fleet.block.client(0).to_string(),
        fleet.block.client(1).to_string(),
    );

    // Client 1 never reaches hap2, which therefore has no entry for it.
    for (node, client, count) in [(0, 0, 3), (0, 1, 1), (1, 0, 5), (2, 0, 2), (2, 1, 4)] {
        fleet.hit(node, client, count).unwrap();
    }
    for (key, counts) in [(&c0, [3, 5, 2]), (&c1, [1, 0, 4])] {
        let want: i128 = counts.iter().sum();
        let s = converge(&fleet, REQ_IN, REQ_OUT, key, |s| {
            // The nodes' own counts first: a failure here is HAProxy's, not ours.
            let own = s.input_values("http_req_cnt");
            if own != counts {
                return Err(format!("nodes counted {own:?}, not {counts:?}"));
            }
            s.outputs_equal("http_req_cnt", want)?;
            s.outputs_equal("gpc0", s.input_sum("gpc0"))?;
            s.outputs_equal("bytes_in_cnt", s.input_sum("bytes_in_cnt"))?;
            s.outputs_equal("bytes_out_cnt", s.input_sum("bytes_out_cnt"))?;
            let max = s.input_values("gpt0").into_iter().max().unwrap_or(0);
            s.outputs_equal("gpt0", max)
        });
        assert_eq!(s.input_sum("gpc0"), want);
        assert!(s.input_sum("bytes_in_cnt") > 0, "no traffic bytes: {s:?}");
        let want_gpt = if key == &c0 { 42 } else { 13 };
        assert_eq!(s.output_values("gpt0"), vec![want_gpt; 3]);
        assert_rates_within_bound(&fleet, REQ_IN, REQ_OUT, key);
    }

    // 64-bit counters: each node's share fits in 32 bits or barely not, the sum does
    // not; `set table` is a local update that the node pushes like traffic.
    let bytes_in = [3_000_000_001u64, 2_500_000_000, 4_000_000_003];
    let bytes_out = [5_000_000_000u64, 1, 7_000_000_000];
    for n in 0..3 {
        fleet.nodes[n]
            .api()
            .unwrap()
            .set_table(
                REQ_IN,
                &c0,
                &[
                    ("bytes_in_cnt", &bytes_in[n].to_string()),
                    ("bytes_out_cnt", &bytes_out[n].to_string()),
                ],
            )
            .unwrap();
    }
    let (sum_in, sum_out) = (
        i128::from(bytes_in.iter().sum::<u64>()),
        i128::from(bytes_out.iter().sum::<u64>()),
    );
    assert!(sum_in > i128::from(u32::MAX) && sum_out > i128::from(u32::MAX));
    converge(&fleet, REQ_IN, REQ_OUT, &c0, |s| {
        s.outputs_equal("bytes_in_cnt", sum_in)?;
        s.outputs_equal("bytes_out_cnt", sum_out)?;
        s.outputs_equal("http_req_cnt", 10)
    });
    let ours = fleet.our_entry("ag/req.aggr", &c0).unwrap().unwrap();
    assert_eq!(ours.num("bytes_in_cnt"), Some(sum_in), "{ours:?}");

    // server_id: the most recently updated node's value wins, not the largest.
    for (node, id) in [(0, 3), (2, 5), (0, 4)] {
        fleet.nodes[node]
            .api()
            .unwrap()
            .set_table(REQ_IN, &c0, &[("server_id", &id.to_string())])
            .unwrap();
        converge(&fleet, REQ_IN, REQ_OUT, &c0, |s| {
            s.outputs_equal("server_id", id)?;
            s.outputs_equal("http_req_cnt", 10)
        });
    }

    // conn_cur: idle connections from client 1, two into hap1 and one into hap3.
    // 2.6 nodes never learn conn_cur from a peer, so the sum is read from our own
    // runtime API, and the nodes' outputs are checked to stay 0.
    let conns: Vec<_> = [0, 0, 2]
        .iter()
        .map(|&n| crate::fleet::connect_from(fleet.block.client(1), fleet.nodes[n].http).unwrap())
        .collect();
    let s = converge(&fleet, REQ_IN, REQ_OUT, &c1, |s| {
        let own = s.input_values("conn_cur");
        if own != [2, 0, 1] {
            return Err(format!("nodes count conn_cur {own:?}"));
        }
        let ours = fleet
            .our_entry("ag/req.aggr", &c1)
            .map_err(|e| e.to_string())?
            .and_then(|e| e.num("conn_cur"));
        if ours == Some(3) {
            Ok(())
        } else {
            Err(format!("our conn_cur is {ours:?}, want 3"))
        }
    });
    assert_eq!(
        s.output_values("conn_cur"),
        vec![0; 3],
        "a 2.6 node learned conn_cur"
    );
    drop(conns);
    eventually("our conn_cur back to 0", CONVERGE, || {
        let e = fleet
            .our_entry("ag/req.aggr", &c1)
            .map_err(|e| e.to_string())?;
        match e.and_then(|e| e.num("conn_cur")) {
            Some(0) => Ok(()),
            other => Err(format!("conn_cur {other:?}")),
        }
    })
    .unwrap();
}

#[test]
fn string_and_ip_tables_in_backends_and_peers_sections_sum() {
    let st = "stick-table type string len 32 size 1k expire 30s \
              store http_req_cnt,http_req_rate(10s),gpc0 peers cl";
    let ipb = "stick-table type ip size 1k expire 30s store http_req_cnt peers cl";
    let fleet = Fleet::start(FleetSpec {
        label: "e2e_sums_str",
        block: Block(2),
        tables: table_pair(
            "user",
            "type string len 32 size 1k expire 30s store http_req_cnt",
        ),
        body: Box::new(move |ctx| {
            // The older way: one backend per table; the wire name is the backend's.
            format!(
                "backend st.uncombined\n    {st}\n\nbackend st.aggr\n    {st}\n\n\
                 backend ipb.uncombined\n    {ipb}\n\nbackend ipb.aggr\n    {ipb}\n\n{}",
                frontend(
                    ctx,
                    &[
                        "http-request track-sc0 req.hdr(x-user) table cl/user.uncombined".into(),
                        "http-request track-sc1 req.hdr(x-user) table st.uncombined".into(),
                        "http-request sc-inc-gpc0(1)".into(),
                        "http-request track-sc2 src table ipb.uncombined".into(),
                    ],
                )
            )
        }),
        agg_lines: vec![],
    })
    .unwrap();
    // Each user comes from its own client address, so the IP table sees two keys too.
    let users = ["alice", "bob.smith-42"];
    for (node, user, count) in [(0, 0, 2), (0, 1, 1), (1, 0, 3), (2, 1, 4)] {
        for _ in 0..count {
            let st = http_get(
                fleet.block.client(user),
                fleet.nodes[node].http,
                &[("X-User", users[user])],
            )
            .unwrap();
            assert_eq!(st, 200);
        }
    }
    for (user, counts) in [(0, [2, 3, 0]), (1, [1, 0, 4])] {
        let ip = fleet.block.client(user).to_string();
        let tables = [
            ("st.uncombined", "st.aggr", users[user], "st.aggr"),
            ("ipb.uncombined", "ipb.aggr", ip.as_str(), "ipb.aggr"),
            (
                "cl/user.uncombined",
                "cl/user.aggr",
                users[user],
                "ag/user.aggr",
            ),
        ];
        for (input, output, key, ours_name) in tables {
            converge(&fleet, input, output, key, |s| {
                let own = s.input_values("http_req_cnt");
                if own != counts {
                    return Err(format!("nodes counted {own:?}, not {counts:?}"));
                }
                s.outputs_equal("http_req_cnt", 5)
            });
            let ours = fleet.our_entry(ours_name, key).unwrap().unwrap();
            assert_eq!(ours.num("http_req_cnt"), Some(5), "{ours_name}: {ours:?}");
        }
        let key = users[user];
        converge(&fleet, "st.uncombined", "st.aggr", key, |s| {
            s.outputs_equal("gpc0", 5)
        });
        assert_rates_within_bound(&fleet, "st.uncombined", "st.aggr", key);
    }
}
