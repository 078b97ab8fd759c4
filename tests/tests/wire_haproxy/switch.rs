//! TABLE SWITCH (0x83): HAProxy 2.6 accepts ours and selects the table we defined
//! under that id; it never sends one itself, it re-sends a full DEFINE instead.

use crate::encode::{WAIT, def, dump_with, expect_ack, expect_acks, settled, update};
use crate::peers_dump::{num, show_peers};
use std::time::Duration;
use stktagg_tests::PeerLab;
use stktagg_tests::lab::MOCK_PEER;
use stktagg_wire::{DataSpec, DataType, Key, KeyType, Message, TableDefinition, Update, Value};

fn two_tables(label: &str) -> PeerLab {
    PeerLab::builder(label)
        .table("t1 type ip size 1k expire 30s store gpc0")
        .table("t2 type ip size 1k expire 30s store gpc0")
        .start()
        .unwrap()
}

fn gpc0_def(id: u32, name: &str) -> Message {
    Message::TableDefinition(def(
        id,
        name,
        KeyType::Ipv4,
        4,
        vec![DataSpec::plain(DataType::Gpc0)],
    ))
}

fn ip(s: &str) -> Key {
    Key::from_ipv4(s.parse().unwrap())
}

/// The next id of `table_id` as an incremental update (0x81), which HAProxy numbers
/// from the last id it got for the table it has selected.
fn incremental(table_id: u32, update_id: u32, key: &str, gpc0: u32) -> Message {
    Message::Update(Update {
        kind: stktagg_wire::UpdateKind::Incremental,
        table_id,
        update_id,
        expire_ms: None,
        key: ip(key),
        values: vec![Value::Uint(gpc0)],
    })
}

fn gpc0_of(lab: &PeerLab, table: &str, key: &str) -> Option<i128> {
    lab.api()
        .show_table(table)
        .unwrap()
        .entry(key)
        .and_then(|e| e.num("gpc0"))
}

#[test]
fn haproxy_accepts_our_table_switch() {
    let lab = two_tables("switch");
    let mut p = settled(&lab);
    p.send(&gpc0_def(1, "/t1")).unwrap();
    p.send(&update(1, 1, ip("10.0.1.1"), vec![Value::Uint(11)]))
        .unwrap();
    p.send(&gpc0_def(2, "/t2")).unwrap();
    p.send(&update(2, 1, ip("10.0.2.1"), vec![Value::Uint(21)]))
        .unwrap();
    // Back to table 1 without redefining it: SWITCH, then an incremental update,
    // which HAProxy numbers 2 only if table 1 (and its last id, 1) is selected.
    p.send(&Message::TableSwitch { table_id: 1 }).unwrap();
    assert_eq!(
        p.sent.last().unwrap().1[..],
        [0x0a, 0x83, 0x01, 0x01],
        "switch bytes"
    );
    p.send(&incremental(1, 2, "10.0.1.2", 12)).unwrap();
    expect_acks(&mut p, &[(1, 2), (2, 1)]);

    let t1 = dump_with(&lab, "lab/t1", "10.0.1.2");
    assert_eq!(t1.entry("10.0.1.1").unwrap().num("gpc0"), Some(11));
    assert_eq!(t1.entry("10.0.1.2").unwrap().num("gpc0"), Some(12));
    assert_eq!(t1.entries.len(), 2, "{t1:?}");
    let t2 = lab.api().show_table("lab/t2").unwrap();
    assert_eq!(t2.entry("10.0.2.1").unwrap().num("gpc0"), Some(21));
    assert!(t2.entry("10.0.1.2").is_none(), "{t2:?}");

    // And to table 2 again, likewise.
    p.send(&Message::TableSwitch { table_id: 2 }).unwrap();
    p.send(&incremental(2, 2, "10.0.2.2", 22)).unwrap();
    expect_ack(&mut p, 2, 2);
    assert_eq!(gpc0_of(&lab, "lab/t2", "10.0.2.2"), Some(22));
    assert_eq!(gpc0_of(&lab, "lab/t1", "10.0.2.2"), None);

    // HAProxy remembers both of our ids (`remote_id`) and what it got for each.
    let d = show_peers(&lab);
    let agg = d.peer(MOCK_PEER);
    let (s1, s2) = (agg.table("lab/t1"), agg.table("lab/t2"));
    assert_eq!((num(s1, "remote_id"), num(s1, "last_get")), (1, 2));
    assert_eq!((num(s2, "remote_id"), num(s2, "last_get")), (2, 2));

    // A switch to an id we never defined selects no table: HAProxy drops the next
    // update (no ack, nothing stored) and keeps the session. The codec refuses to
    // encode such a switch, so it goes out raw; the update after it is encoded for
    // table 2 (its bytes carry no table id).
    assert!(
        p.encoder
            .encode(
                &Message::TableSwitch { table_id: 9 },
                &mut bytes::BytesMut::new()
            )
            .is_err()
    );
    p.send_raw(&[0x0a, 0x83, 0x01, 0x09]).unwrap();
    p.send(&update(2, 50, ip("10.0.9.9"), vec![Value::Uint(99)]))
        .unwrap();
    let quiet = p.collect_for(Duration::from_millis(1000)).unwrap();
    assert!(
        !quiet
            .iter()
            .any(|r| matches!(r.message, Message::Ack { .. })),
        "{quiet:?}"
    );
    assert_eq!(gpc0_of(&lab, "lab/t1", "10.0.9.9"), None);
    assert_eq!(gpc0_of(&lab, "lab/t2", "10.0.9.9"), None);
    // A switch to a known id works again afterwards.
    p.send(&Message::TableSwitch { table_id: 1 }).unwrap();
    p.send(&update(1, 60, ip("10.0.1.6"), vec![Value::Uint(16)]))
        .unwrap();
    expect_ack(&mut p, 1, 60);
    assert_eq!(gpc0_of(&lab, "lab/t1", "10.0.1.6"), Some(16));
}

/// Receives until an update for `key` arrives; returns the messages on the way
/// that are not heartbeats or acks, the update last.
fn table_messages_until(p: &mut stktagg_tests::MockPeer, key: &str) -> Vec<Message> {
    let want = ip(key);
    p.recv_until(WAIT, |m| matches!(m, Message::Update(u) if u.key == want))
        .unwrap()
        .into_iter()
        .map(|r| r.message)
        .filter(|m| {
            matches!(
                m,
                Message::TableDefinition(_) | Message::TableSwitch { .. } | Message::Update(_)
            )
        })
        .collect()
}

fn defined(m: &Message) -> &TableDefinition {
    match m {
        Message::TableDefinition(d) => d,
        other => panic!("expected a DEFINE, got {other:?}"),
    }
}

#[test]
fn haproxy_switches_back_with_a_full_definition_never_0x83() {
    let lab = two_tables("noswitch");
    let mut p = settled(&lab);
    let api = lab.api();
    api.set_table("lab/t1", "10.0.1.1", &[("gpc0", "1")])
        .unwrap();
    let a = table_messages_until(&mut p, "10.0.1.1");
    api.set_table("lab/t2", "10.0.2.1", &[("gpc0", "2")])
        .unwrap();
    let b = table_messages_until(&mut p, "10.0.2.1");
    api.set_table("lab/t1", "10.0.1.2", &[("gpc0", "3")])
        .unwrap();
    let c = table_messages_until(&mut p, "10.0.1.2");
    for (msgs, table) in [(&a, "/t1"), (&b, "/t2"), (&c, "/t1")] {
        assert_eq!(msgs.len(), 2, "{table}: {msgs:?}");
        let d = defined(&msgs[0]);
        assert_eq!(&d.name[..], table.as_bytes());
        let Message::Update(u) = &msgs[1] else {
            panic!("{msgs:?}")
        };
        assert_eq!(u.table_id, d.table_id);
    }
    // The same definition both times for t1, under the same HAProxy id.
    assert_eq!(defined(&a[0]), defined(&c[0]));
    assert_ne!(defined(&a[0]).table_id, defined(&b[0]).table_id);
    assert!(
        !p.log
            .iter()
            .any(|r| matches!(r.message, Message::TableSwitch { .. }) || r.frame.msg_type() == 0x83),
        "haproxy sent a switch"
    );
}
