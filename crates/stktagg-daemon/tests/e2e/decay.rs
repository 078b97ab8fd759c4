//! Rates fall to 0 without traffic, and keys expire, on the nodes and on our side.

use crate::fleet::{Block, CONVERGE, Fleet, FleetSpec, frontend, table_pair};
use std::time::{Duration, Instant};
use stktagg_tests::eventually;

const PERIOD: Duration = Duration::from_secs(1);
const EXPIRE: Duration = Duration::from_secs(4);
const IN: &str = "cl/short.uncombined";
const OUT: &str = "cl/short.aggr";

#[test]
fn rates_decay_to_zero_and_keys_expire() {
    // The expiry is longer than two rate periods, so that the decay is seen on
    // entries that still exist.
    let fleet = Fleet::start(FleetSpec {
        label: "e2e_decay",
        block: Block(3),
        tables: table_pair(
            "short",
            "type ip size 1k expire 4s store http_req_cnt,http_req_rate(1s)",
        ),
        body: Box::new(|ctx| {
            frontend(
                ctx,
                &["http-request track-sc0 src table cl/short.uncombined".into()],
            )
        }),
        agg_lines: vec![],
    })
    .unwrap();
    let key = fleet.block.client(0).to_string();
    for n in 0..3 {
        fleet.hit(n, 0, 2).unwrap();
    }
    let last_request = Instant::now();
    let s = eventually("the sum on every node", CONVERGE, || {
        let s = fleet.snapshot(IN, OUT, &key).map_err(|e| e.to_string())?;
        s.outputs_equal("http_req_cnt", 6).map(|()| s)
    })
    .unwrap();
    // Read within a few ms of the requests, well inside the 1 s period.
    let rates = s.output_values("http_req_rate");
    assert!(
        rates.iter().all(|r| *r > 0),
        "no rate on the outputs: {s:?}"
    );

    // A native 1 s rate reads 0 at most two periods after its last event; ours may
    // add one refresh tick (250 ms) and propagation.
    let decay_bound = 2 * PERIOD + Duration::from_millis(750);
    let decayed = loop {
        let s = fleet.snapshot(IN, OUT, &key).unwrap();
        let ours = fleet.our_entry("ag/short.aggr", &key).unwrap();
        let present = s.outputs.iter().all(Option::is_some) && ours.is_some();
        let ours_rate = ours.and_then(|e| e.num("http_req_rate"));
        if s.output_values("http_req_rate") == [0, 0, 0] && ours_rate == Some(0) {
            assert!(present, "an entry expired before its rate decayed: {s:?}");
            break last_request.elapsed();
        }
        assert!(
            last_request.elapsed() < decay_bound,
            "rates still {:?} (ours {ours_rate:?}) {:?} after the last request",
            s.output_values("http_req_rate"),
            last_request.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("decay: rates read 0 everywhere {decayed:?} after the last request");
    assert_eq!(
        fleet
            .snapshot(IN, OUT, &key)
            .unwrap()
            .output_values("http_req_cnt"),
        [6; 3]
    );

    // Expiry: our contributions end `EXPIRE` after each node's last update; a node's
    // output entry ends `EXPIRE` after the last update we sent it, which the rate
    // refresh can delay by up to two periods.
    let expire_bound = EXPIRE + 2 * PERIOD + Duration::from_millis(1500);
    let gone = loop {
        let s = fleet.snapshot(IN, OUT, &key).unwrap();
        let ours = fleet.our_entry("ag/short.aggr", &key).unwrap();
        let all_gone = ours.is_none()
            && s.outputs.iter().all(Option::is_none)
            && s.inputs.iter().all(Option::is_none);
        if all_gone {
            break last_request.elapsed();
        }
        if ours.is_none() {
            // Once we forgot the key, the nodes must not be told anything new about
            // it: their outputs can only keep the last sum until they expire.
            assert!(
                s.output_values("http_req_cnt")
                    .iter()
                    .all(|v| *v == 6 || *v == 0),
                "{s:?}"
            );
        }
        assert!(
            last_request.elapsed() < expire_bound,
            "entries still present {:?} after the last request: ours {ours:?}, nodes {s:?}",
            last_request.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        gone >= EXPIRE,
        "entries vanished before their expiry: {gone:?}"
    );
    eprintln!("expiry: the key was gone everywhere {gone:?} after the last request");
}
