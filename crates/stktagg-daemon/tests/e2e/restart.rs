//! Restarts: the aggregator (SIGKILL during traffic) and one node (hard restart).

use crate::fleet::{Block, CONVERGE, Fleet, FleetSpec, Snapshot, frontend, http_get, table_pair};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const IN: &str = "cl/req.uncombined";
const OUT: &str = "cl/req.aggr";

fn req_fleet(label: &str, block: u8, agg_lines: Vec<String>) -> Fleet {
    Fleet::start(FleetSpec {
        label,
        block: Block(block),
        tables: table_pair(
            "req",
            "type ip size 1k expire 30s store http_req_cnt,http_req_rate(10s)",
        ),
        body: Box::new(|ctx| {
            frontend(
                ctx,
                &["http-request track-sc0 src table cl/req.uncombined".into()],
            )
        }),
        agg_lines,
    })
    .unwrap()
}

/// Polls snapshots every 20 ms for at most `limit`, calling `check` on each: `Err`
/// fails the test, `Ok(true)` ends the watch. Returns how many snapshots were taken
/// and, unless `check` ended it, the last snapshot, for the failure message.
fn watch(
    fleet: &Fleet,
    key: &str,
    limit: Duration,
    mut check: impl FnMut(&Snapshot) -> Result<bool, String>,
) -> (usize, Option<Snapshot>) {
    let start = Instant::now();
    let mut n = 0;
    let mut last = None;
    while start.elapsed() < limit {
        let s = fleet.snapshot(IN, OUT, key).unwrap();
        n += 1;
        match check(&s) {
            Ok(true) => return (n, None),
            Ok(false) => {}
            Err(e) => panic!("after {:?}: {e}\n{s:?}", start.elapsed()),
        }
        last = Some(s);
        std::thread::sleep(Duration::from_millis(20));
    }
    (n, last)
}

/// Fails with `what`, the last snapshot, and our view of the key and the peers when
/// a watch ran out.
fn assert_done(fleet: &Fleet, key: &str, outcome: Option<Snapshot>, what: &str) {
    if let Some(s) = outcome {
        let api = fleet.agg.api();
        let ours = api
            .command(&format!("show table ag/req.aggr key {key} detail"))
            .unwrap_or_else(|e| e.to_string());
        let peers = api.command("show peers").unwrap_or_else(|e| e.to_string());
        panic!(
            "{what}: inputs {:?}, outputs {:?}\nours:\n{ours}\n{peers}\n{s:?}",
            s.input_values("http_req_cnt"),
            s.output_values("http_req_cnt")
        );
    }
}

/// No node's output may exceed the sum of the inputs read after it.
fn never_above_sum(s: &Snapshot) -> Result<(), String> {
    let sum = s.input_sum("http_req_cnt");
    let outs = s.output_values("http_req_cnt");
    if outs.iter().any(|v| *v > sum) {
        return Err(format!("an output {outs:?} exceeds the nodes' sum {sum}"));
    }
    Ok(())
}

#[test]
fn aggregator_restart_during_traffic_rebuilds_without_doubling() {
    let mut fleet = req_fleet("e2e_agg_restart", 4, vec![]);
    let key = fleet.block.client(0).to_string();
    let src = fleet.block.client(0);
    let targets: Vec<_> = fleet.nodes.iter().map(|n| n.http).collect();
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let mut readings = 0;
    std::thread::scope(|scope| {
        // Bounded traffic: at most 800 requests or 10 s, round robin over the nodes.
        let traffic = scope.spawn(|| {
            let start = Instant::now();
            for i in 0..800 {
                if stop.load(Ordering::Relaxed) || start.elapsed() > Duration::from_secs(10) {
                    break;
                }
                if matches!(http_get(src, targets[i % 3], &[]), Ok(200)) {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let check = |s: &Snapshot| never_above_sum(s).map(|()| false);
        readings += watch(&fleet, &key, Duration::from_millis(700), check).0;
        fleet.agg.kill_hard().unwrap();
        readings += watch(&fleet, &key, Duration::from_millis(500), check).0;
        fleet.agg.spawn().unwrap();
        // Traffic goes on while the aggregator rebuilds its state from the nodes.
        readings += watch(&fleet, &key, Duration::from_millis(2000), check).0;
        stop.store(true, Ordering::Relaxed);
        traffic.join().unwrap();
    });
    let total = i128::from(sent.load(Ordering::Relaxed));
    assert!(total > 50, "only {total} requests went through");
    let (n, last) = watch(&fleet, &key, CONVERGE, |s| {
        never_above_sum(s)?;
        Ok(s.input_sum("http_req_cnt") == total && s.outputs_equal("http_req_cnt", total).is_ok())
    });
    assert_done(
        &fleet,
        &key,
        last,
        &format!("the sums did not come back to {total}"),
    );
    readings += n;
    let ours = fleet.our_entry("ag/req.aggr", &key).unwrap().unwrap();
    assert_eq!(ours.num("http_req_cnt"), Some(total), "{ours:?}");
    eprintln!("aggregator restart: {total} requests, {readings} snapshots, none above the sum");
}

/// Hard-restarts hap2 after 3, 4 and 5 requests into hap1, hap2, hap3, then sends
/// 3 more into hap2. Returns nothing; asserts as it goes.
fn node_restart(label: &str, block: u8, teach_back: bool) {
    let agg_lines = if teach_back {
        vec![]
    } else {
        vec!["no option teach-back".to_owned()]
    };
    let mut fleet = req_fleet(label, block, agg_lines);
    let key = fleet.block.client(0).to_string();
    for (n, count) in [(0, 3), (1, 4), (2, 5)] {
        fleet.hit(n, 0, count).unwrap();
    }
    let (_, last) = watch(&fleet, &key, CONVERGE, |s| {
        Ok(s.outputs_equal("http_req_cnt", 12).is_ok())
    });
    assert_done(&fleet, &key, last, "no initial sum of 12");

    fleet.nodes[1].kill_hard().unwrap();
    // While hap2 is down its contribution stays (until the table's 30 s expiry): the
    // other nodes' sums do not move.
    let others = |s: &[Option<stktagg_tests::Entry>]| -> Vec<i128> {
        [0, 2]
            .iter()
            .map(|&n| {
                s[n].as_ref()
                    .and_then(|e| e.num("http_req_cnt"))
                    .unwrap_or(0)
            })
            .collect()
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        let outs: Vec<_> = [0, 2]
            .iter()
            .map(|&n| fleet.node_entry(n, OUT, &key).unwrap())
            .collect();
        let v: Vec<i128> = outs
            .iter()
            .map(|e| e.as_ref().and_then(|e| e.num("http_req_cnt")).unwrap_or(0))
            .collect();
        assert_eq!(v, [12, 12], "sums moved while hap2 was down");
        std::thread::sleep(Duration::from_millis(20));
    }
    fleet.nodes[1].start().unwrap();

    if teach_back {
        // hap2 learns its own 4 back; hap1 and hap3 read 12 throughout, hap2's output
        // never exceeds it.
        let (n, last) = watch(&fleet, &key, CONVERGE, |s| {
            let o = others(&s.outputs);
            if o != [12, 12] {
                return Err(format!("hap1/hap3 read {o:?} while hap2 restarted"));
            }
            let own = s.input_values("http_req_cnt");
            let out2 = s.output_values("http_req_cnt")[1];
            if own[1] > 4 || out2 > 12 {
                return Err(format!("hap2 counts {} and reads {out2}", own[1]));
            }
            Ok(own == [3, 4, 5] && out2 == 12)
        });
        assert_done(&fleet, &key, last, "hap2 never learned its 4 requests back");
        // And nothing changes once hap2's own resync reaches us.
        let (m, _) = watch(&fleet, &key, Duration::from_millis(1000), |s| {
            s.outputs_equal("http_req_cnt", 12)?;
            Ok(false)
        });
        eprintln!("node restart with teach-back: {} snapshots at 12", n + m);
        // hap2 counts on from 4: three more requests raise the sum by exactly 3.
        fleet.hit(1, 0, 3).unwrap();
        let (_, last) = watch(&fleet, &key, CONVERGE, |s| {
            never_above_sum(s)?;
            Ok(s.input_values("http_req_cnt") == [3, 7, 5]
                && s.outputs_equal("http_req_cnt", 15).is_ok())
        });
        assert_done(
            &fleet,
            &key,
            last,
            "three more requests into hap2 did not make 15",
        );
    } else {
        // Without teach-back hap2 restarts from nothing and has lost its 4. Still
        // learning, it answers our resync request with PARTIAL; as it is not taught
        // back, its old contribution ends there: the sums fall to 3 + 0 + 5 = 8,
        // never above the old 12 on the way.
        let (_, last) = watch(&fleet, &key, CONVERGE, |s| {
            if s.inputs[1].is_some() {
                return Err("hap2 has an input entry without teach-back".into());
            }
            let outs = s.output_values("http_req_cnt");
            if outs.iter().any(|v| *v > 12) {
                return Err(format!("outputs {outs:?} above the old sum 12"));
            }
            Ok(s.outputs_equal("http_req_cnt", 8).is_ok())
        });
        assert_done(
            &fleet,
            &key,
            last,
            "without teach-back the restarted node's share did not end",
        );
        eprintln!("node restart without teach-back: sums dropped to 8, hap2 counting 0");
        // It counts anew: 3 requests make 3 + 3 + 5.
        fleet.hit(1, 0, 3).unwrap();
        let (_, last) = watch(&fleet, &key, CONVERGE, |s| {
            let outs = s.output_values("http_req_cnt");
            if outs.iter().any(|v| *v > 11) {
                return Err(format!("outputs {outs:?} above the new sum 11"));
            }
            Ok(s.input_values("http_req_cnt") == [3, 3, 5]
                && s.outputs_equal("http_req_cnt", 11).is_ok())
        });
        assert_done(
            &fleet,
            &key,
            last,
            "three requests into the restarted hap2 did not make 11",
        );
    }
}

#[test]
fn node_hard_restart_learns_its_counts_back() {
    node_restart("e2e_node_tb", 5, true);
}

#[test]
fn node_hard_restart_without_teach_back_counts_anew() {
    node_restart("e2e_node_notb", 6, false);
}
