//! HAProxy's reaction to bad messages (peers-protocol.md §3), decoded by the codec.

use bytes::BytesMut;
use std::time::Duration;
use stktagg_tests::{HarnessError, MockPeer, PeerLab};
use stktagg_wire::{
    DataSpec, DataType, Key, KeyType, Message, TableDefinition, Update, UpdateKind, Value,
};

fn lab(label: &str) -> PeerLab {
    PeerLab::builder(label)
        .table("t type ip size 1k expire 30s store gpc0")
        .start()
        .unwrap()
}

/// Dials and waits until HAProxy's startup resync exchange is over, so that what
/// follows is only the test's traffic.
fn settled(lab: &PeerLab) -> MockPeer {
    let mut p = lab.dial().unwrap();
    p.recv_until(Duration::from_secs(5), |m| *m == Message::ResyncConfirm)
        .unwrap();
    p
}

/// Receives until the connection closes; returns the messages seen.
fn until_closed(p: &mut MockPeer) -> Vec<Message> {
    let mut got = Vec::new();
    loop {
        match p.recv(Duration::from_secs(6)) {
            Ok(r) => got.push(r.message),
            Err(HarnessError::Closed { .. }) => return got,
            Err(e) => panic!("expected a close, got {e} after {got:?}"),
        }
    }
}

#[test]
fn oversized_message_gets_size_limit_then_close() {
    let lab = lab("oversize");
    let mut p = settled(&lab);
    let mut raw = BytesMut::from(&[0x0a, 0x80][..]);
    // A length over tune.bufsize (16384), with no body: HAProxy judges the length.
    stktagg_wire::varint::encode(20_000, &mut raw);
    p.send_raw(&raw).unwrap();
    let got = until_closed(&mut p);
    assert_eq!(got.last(), Some(&Message::SizeLimit), "{got:?}");
    assert_eq!(p.log.last().unwrap().frame.hex(), "01 01");
}

#[test]
fn class_255_gets_protocol_error_then_close() {
    let lab = lab("class255");
    let mut p = settled(&lab);
    p.send_raw(&[0xff, 0x00]).unwrap();
    let got = until_closed(&mut p);
    assert_eq!(got.last(), Some(&Message::ProtocolError), "{got:?}");
    assert_eq!(p.log.last().unwrap().frame.hex(), "01 00");
}

#[test]
fn unknown_messages_are_ignored_and_the_session_stays_up() {
    let lab = lab("unknown");
    let mut p = settled(&lab);
    // Unknown stick-table type with a body, unknown control type, unknown class,
    // class-10 type without bit 7.
    p.send_raw(&[
        0x0a, 0x87, 0x02, 0x00, 0x00, 0x00, 0x09, 0x05, 0x01, 0x0a, 0x05,
    ])
    .unwrap();
    let def = TableDefinition {
        table_id: 3,
        name: "/t".into(),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms: 30_000,
        data: vec![DataSpec::plain(DataType::Gpc0)],
    };
    p.send(&Message::TableDefinition(def)).unwrap();
    p.send(&Message::Update(Update {
        kind: UpdateKind::Full,
        table_id: 3,
        update_id: 1,
        expire_ms: None,
        key: Key::from_ipv4("10.9.9.9".parse().unwrap()),
        values: vec![Value::Uint(77)],
    }))
    .unwrap();
    let got = p
        .recv_until(Duration::from_secs(5), |m| matches!(m, Message::Ack { .. }))
        .unwrap();
    assert_eq!(
        got.last().unwrap().message,
        Message::Ack {
            table_id: 3,
            update_id: 1
        }
    );
    let e = lab.api().show_table("lab/t").unwrap();
    assert_eq!(e.entry("10.9.9.9").unwrap().num("gpc0"), Some(77));
}
