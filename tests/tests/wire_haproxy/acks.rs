//! What HAProxy 2.6 does with our ACKs (0x84): the acknowledged update id becomes
//! its push cursor for us (`update` in `show peers`), and a new session resumes
//! pushing after it. Without an ack, a new session pushes everything again.

use crate::encode::{WAIT, def, expect_ack, update};
use crate::peers_dump::{Fields, num, show_peers};
use std::time::Duration;
use stktagg_tests::lab::MOCK_PEER;
use stktagg_tests::{Duties, MockPeer, PeerLab, eventually};
use stktagg_wire::hello::Version;
use stktagg_wire::{DataSpec, DataType, Key, KeyType, Message, UpdateKind, Value};

/// The mock's duties without its automatic acks: the test acks by hand.
fn no_acks() -> Duties {
    Duties {
        ack: false,
        ..Duties::default()
    }
}

/// Receives `n` updates; returns HAProxy's table id (from its DEFINE) and the
/// updates' ids and kinds, in order.
fn pushed(p: &mut MockPeer, n: usize) -> (u32, Vec<(u32, UpdateKind)>) {
    let mut table_id = None;
    let mut ids = Vec::new();
    while ids.len() < n {
        match p.recv(WAIT).unwrap().message {
            Message::TableDefinition(d) => table_id = Some(d.table_id),
            Message::Update(u) => ids.push((u.update_id, u.kind)),
            _ => {}
        }
    }
    (table_id.expect("no DEFINE before the updates"), ids)
}

/// HAProxy's view of table `t` for our peer.
fn cursor(lab: &PeerLab) -> Fields {
    show_peers(lab).peer(MOCK_PEER).table("lab/t").clone()
}

/// Closes the session and waits until HAProxy has released it, so that the next
/// dial is a new session rather than a collision with the old one.
fn hang_up(lab: &PeerLab, p: MockPeer) {
    drop(p);
    eventually("haproxy to release our session", WAIT, || {
        let d = show_peers(lab);
        match d.peer(MOCK_PEER).fields.get("state").map(String::as_str) {
            Some("EST") => Err("still established"),
            _ => Ok(()),
        }
    })
    .unwrap();
}

#[test]
fn our_ack_sets_where_haproxy_resumes_on_the_next_session() {
    let lab = PeerLab::builder("ackcursor")
        .table("t type ip size 1k expire 30s store gpc0")
        .start()
        .unwrap();
    for i in 1..=5 {
        lab.api()
            .set_table("lab/t", &format!("10.0.0.{i}"), &[("gpc0", &i.to_string())])
            .unwrap();
    }
    let all: Vec<u32> = (1..=5).collect();

    // Session 1, no acks: HAProxy pushes ids 1..5 and its cursor stays at 0.
    let mut p = lab.dial_with(Version::V2_1, no_acks()).unwrap();
    let (hap_id, got) = pushed(&mut p, 5);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), all);
    let c = cursor(&lab);
    assert_eq!(num(&c, "local_id"), u64::from(hap_id));
    assert_eq!((num(&c, "last_pushed"), num(&c, "update")), (5, 0));
    hang_up(&lab, p);

    // Session 2: nothing was acknowledged, so everything comes again.
    let mut p = lab.dial_with(Version::V2_1, no_acks()).unwrap();
    let (id2, got) = pushed(&mut p, 5);
    assert_eq!(id2, hap_id);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), all);
    // We acknowledge up to 3, with HAProxy's table id: its cursor moves to 3.
    p.send(&Message::Ack {
        table_id: hap_id,
        update_id: 3,
    })
    .unwrap();
    assert_eq!(
        p.sent.last().unwrap().1[..],
        [0x0a, 0x84, 0x05, hap_id as u8, 0, 0, 0, 3]
    );
    eventually("haproxy's cursor to reach our ack", WAIT, || {
        let c = cursor(&lab);
        match num(&c, "update") {
            3 => Ok(()),
            n => Err(format!("update={n} in {c:?}")),
        }
    })
    .unwrap();
    // The other direction, for contrast: our update moves HAProxy's `last_get`,
    // and its ack of it moves `last_acked`.
    p.send(&Message::TableDefinition(def(
        7,
        "/t",
        KeyType::Ipv4,
        4,
        vec![DataSpec::plain(DataType::Gpc0)],
    )))
    .unwrap();
    p.send(&update(
        7,
        40,
        Key::from_ipv4("10.0.0.40".parse().unwrap()),
        vec![Value::Uint(40)],
    ))
    .unwrap();
    expect_ack(&mut p, 7, 40);
    let c = cursor(&lab);
    assert_eq!(
        (
            num(&c, "remote_id"),
            num(&c, "last_get"),
            num(&c, "last_acked")
        ),
        (7, 40, 40)
    );
    assert_eq!(
        num(&c, "update"),
        3,
        "our own update leaves the push cursor alone"
    );
    hang_up(&lab, p);

    // Session 3: HAProxy resumes after our ack; ids up to 3 never come again.
    let mut p = lab.dial_with(Version::V2_1, no_acks()).unwrap();
    let (_, got) = pushed(&mut p, 2);
    assert_eq!(
        got,
        vec![(4, UpdateKind::Full), (5, UpdateKind::Incremental)]
    );
    let rest = p.collect_for(Duration::from_millis(1000)).unwrap();
    assert!(
        !rest.iter().any(|r| matches!(r.message, Message::Update(_))),
        "{rest:?}"
    );
    let c = cursor(&lab);
    assert_eq!((num(&c, "teaching_origin"), num(&c, "last_pushed")), (3, 5));
}
