//! What the codec encodes, HAProxy 2.6 accepts: we send definitions and updates and
//! read the values back with `show table`; HAProxy acknowledges with our table id
//! and update id.

use crate::capture::record_or_compare;
use std::time::Duration;
use stktagg_tests::{MockPeer, PeerLab, TableDump, eventually};
use stktagg_wire::{
    DataSpec, DataType, DictValue, FreqCtr, Key, KeyType, Message, TableDefinition, Update,
    UpdateKind, Value,
};

pub(crate) const WAIT: Duration = Duration::from_secs(8);

pub(crate) fn def(
    id: u32,
    name: &str,
    key_type: KeyType,
    key_len: u32,
    data: Vec<DataSpec>,
) -> TableDefinition {
    TableDefinition {
        table_id: id,
        name: name.to_owned().into(),
        key_type,
        key_len,
        expire_ms: 30_000,
        data,
    }
}

pub(crate) fn update(table_id: u32, update_id: u32, key: Key, values: Vec<Value>) -> Message {
    Message::Update(Update {
        kind: UpdateKind::Full,
        table_id,
        update_id,
        expire_ms: None,
        key,
        values,
    })
}

/// Dials and lets HAProxy's startup resync exchange finish.
pub(crate) fn settled(lab: &PeerLab) -> MockPeer {
    let mut p = lab.dial().unwrap();
    p.recv_until(WAIT, |m| *m == Message::ResyncConfirm)
        .unwrap();
    p
}

/// Waits until HAProxy has acknowledged every `(table_id, update_id)` of `want`.
/// HAProxy acks at the end of each read pass, one ACK per table, in its own table
/// order, so the acks may come in any order.
pub(crate) fn expect_acks(p: &mut MockPeer, want: &[(u32, u32)]) {
    let mut missing: Vec<(u32, u32)> = want.to_vec();
    p.recv_until(WAIT, |m| {
        if let Message::Ack {
            table_id,
            update_id,
        } = m
        {
            missing.retain(|w| *w != (*table_id, *update_id));
        }
        missing.is_empty()
    })
    .unwrap_or_else(|e| panic!("acks missing from {want:?}: {e}"));
}

/// Waits for HAProxy's ACK of `(table_id, update_id)`.
pub(crate) fn expect_ack(p: &mut MockPeer, table_id: u32, update_id: u32) {
    expect_acks(p, &[(table_id, update_id)]);
}

pub(crate) fn dump_with(lab: &PeerLab, table: &str, key: &str) -> TableDump {
    eventually(&format!("{key} in {table}"), WAIT, || {
        let d = lab.api().show_table(table)?;
        if d.entry(key).is_some() {
            Ok(d)
        } else {
            Err(stktagg_tests::HarnessError::Unexpected(format!("{d:?}")))
        }
    })
    .unwrap()
}

#[test]
fn every_key_type_is_accepted() {
    let lab = PeerLab::builder("enc_keys")
        .table("ints type integer size 1k expire 30s store gpc0")
        .table("ips type ip size 1k expire 30s store gpc0")
        .table("ip6s type ipv6 size 1k expire 30s store gpc0")
        .table("strs type string len 8 size 1k expire 30s store gpc0")
        .table("str32 type string size 1k expire 30s store gpc0")
        .table("bins type binary len 6 size 1k expire 30s store gpc0")
        .start()
        .unwrap();
    let mut p = settled(&lab);
    let gpc0 = || vec![DataSpec::plain(DataType::Gpc0)];
    let cases = [
        (
            11,
            "ints",
            KeyType::Sint,
            4,
            Key::from_u32(3_000_000_000),
            "3000000000",
        ),
        (
            12,
            "ips",
            KeyType::Ipv4,
            4,
            Key::from_ipv4("10.1.2.3".parse().unwrap()),
            "10.1.2.3",
        ),
        (
            13,
            "ip6s",
            KeyType::Ipv6,
            16,
            Key::from_ipv6("2001:db8::1".parse().unwrap()),
            "2001:db8::1",
        ),
        (
            14,
            "strs",
            KeyType::String,
            9,
            Key::from_str_bytes("abc"),
            "abc",
        ),
        (
            15,
            "str32",
            KeyType::String,
            32,
            Key::from_str_bytes("a-string-of-31-characters-long!"),
            "a-string-of-31-characters-long!",
        ),
        (
            16,
            "bins",
            KeyType::Binary,
            6,
            Key::from_str_bytes(b"AB\0\0\0\xff"),
            "4142000000FF",
        ),
    ];
    for (i, (id, name, kt, len, key, _)) in cases.iter().enumerate() {
        p.send(&Message::TableDefinition(def(
            *id,
            &format!("/{name}"),
            *kt,
            *len,
            gpc0(),
        )))
        .unwrap();
        p.send(&update(
            *id,
            100 + i as u32,
            key.clone(),
            vec![Value::Uint(i as u32 + 1)],
        ))
        .unwrap();
    }
    let want: Vec<(u32, u32)> = cases
        .iter()
        .enumerate()
        .map(|(i, (id, ..))| (*id, 100 + i as u32))
        .collect();
    expect_acks(&mut p, &want);
    for (i, (_, name, _, _, _, shown)) in cases.iter().enumerate() {
        let d = dump_with(&lab, &lab.table(name), shown);
        assert_eq!(
            d.entry(shown).unwrap().num("gpc0"),
            Some(i as i128 + 1),
            "{name}"
        );
        // Plain updates get the receiving table's own expiry.
        assert!(d.entry(shown).unwrap().exp_ms > 20_000, "{name}");
    }
}

#[test]
fn counters_rates_arrays_and_server_fields_are_accepted() {
    let lab = PeerLab::builder("enc_values")
        .table("cnt type ip size 1k expire 30s store server_id,gpt0,conn_cnt,bytes_in_cnt,bytes_out_cnt,http_req_rate(10s),server_key")
        .table("arr type ip size 1k expire 30s store gpt(3),gpc(2),gpc_rate(2,5s)")
        .start()
        .unwrap();
    let mut p = settled(&lab);
    let cnt = def(
        21,
        "/cnt",
        KeyType::Ipv4,
        4,
        vec![
            DataSpec::plain(DataType::ServerId),
            DataSpec::plain(DataType::Gpt0),
            DataSpec::plain(DataType::ConnCnt),
            DataSpec {
                data_type: DataType::HttpReqRate,
                period_ms: 10_000,
                nbelem: 0,
            },
            DataSpec::plain(DataType::BytesInCnt),
            DataSpec::plain(DataType::BytesOutCnt),
            DataSpec::plain(DataType::ServerKey),
        ],
    );
    p.send(&Message::TableDefinition(cnt)).unwrap();
    let s9 = Value::Dict(DictValue::Name("s9".into()));
    let values = |sid: i32, base: u32| {
        vec![
            Value::Sint(sid),
            Value::Uint(base),
            Value::Uint(4_000_000_000),
            Value::Freq(FreqCtr {
                age: 0,
                curr: 42,
                prev: 0,
            }),
            Value::Ull(5_000_000_000),
            Value::Ull(1 << 40),
            s9.clone(),
        ]
    };
    let k1 = Key::from_ipv4("10.0.0.1".parse().unwrap());
    let k2 = Key::from_ipv4("10.0.0.2".parse().unwrap());
    p.send(&update(21, 1, k1, values(-1, 9))).unwrap();
    p.send(&update(21, 2, k2, values(1234, 10))).unwrap();

    let arr = def(
        22,
        "/arr",
        KeyType::Ipv4,
        4,
        vec![
            DataSpec {
                data_type: DataType::Gpt,
                period_ms: 0,
                nbelem: 3,
            },
            DataSpec {
                data_type: DataType::Gpc,
                period_ms: 0,
                nbelem: 2,
            },
            DataSpec {
                data_type: DataType::GpcRate,
                period_ms: 5_000,
                nbelem: 2,
            },
        ],
    );
    p.send(&Message::TableDefinition(arr)).unwrap();
    p.send(&update(
        22,
        7,
        Key::from_ipv4("10.0.0.3".parse().unwrap()),
        vec![
            Value::UintArray(vec![1, 2, 3]),
            Value::UintArray(vec![4, 5]),
            Value::FreqArray(vec![
                FreqCtr {
                    age: 0,
                    curr: 6,
                    prev: 0,
                },
                FreqCtr {
                    age: 0,
                    curr: 7,
                    prev: 0,
                },
            ]),
        ],
    ))
    .unwrap();
    expect_acks(&mut p, &[(21, 2), (22, 7)]);

    // The dictionary went out in full form first, short form second.
    let ups: Vec<_> = p
        .sent
        .iter()
        .filter(|(m, _)| matches!(m, Message::Update(u) if u.table_id == 21))
        .map(|(_, b)| stktagg_tests::frame::to_hex(b))
        .collect();
    assert!(ups[0].ends_with("04 01 02 73 39"), "{}", ups[0]);
    assert!(ups[1].ends_with("01 01"), "{}", ups[1]);

    let d = dump_with(&lab, "lab/cnt", "10.0.0.2");
    for (key, sid, gpt0) in [("10.0.0.1", -1, 9), ("10.0.0.2", 1234, 10)] {
        let e = d.entry(key).unwrap();
        assert_eq!(e.num("server_id"), Some(sid), "{key}");
        assert_eq!(e.num("gpt0"), Some(gpt0), "{key}");
        assert_eq!(e.num("conn_cnt"), Some(4_000_000_000), "{key}");
        assert_eq!(e.num("bytes_in_cnt"), Some(5_000_000_000), "{key}");
        assert_eq!(e.num("bytes_out_cnt"), Some(1 << 40), "{key}");
        // curr = 42, prev = 0, age 0: HAProxy reads 42 for the whole period.
        assert_eq!(e.num("http_req_rate"), Some(42), "{key}");
        assert_eq!(e.get("server_key"), Some("s9"), "{key}");
    }
    let d = dump_with(&lab, "lab/arr", "10.0.0.3");
    let e = d.entry("10.0.0.3").unwrap();
    for (f, v) in [
        ("gpt0", 1),
        ("gpt1", 2),
        ("gpt2", 3),
        ("gpc0", 4),
        ("gpc1", 5),
        ("gpc0_rate", 6),
        ("gpc1_rate", 7),
    ] {
        assert_eq!(e.num(f), Some(v), "{f}");
    }
}

#[test]
fn timed_update_sets_the_entry_expiry() {
    let lab = PeerLab::builder("enc_timed")
        .table("t type ip size 1k expire 60s store gpc0")
        .start()
        .unwrap();
    let mut p = settled(&lab);
    p.send(&Message::TableDefinition(def(
        5,
        "/t",
        KeyType::Ipv4,
        4,
        vec![DataSpec::plain(DataType::Gpc0)],
    )))
    .unwrap();
    let key = Key::from_ipv4("10.0.0.5".parse().unwrap());
    p.send(&Message::Update(Update {
        kind: UpdateKind::Timed,
        table_id: 5,
        update_id: 1,
        expire_ms: Some(5_000),
        key: key.clone(),
        values: vec![Value::Uint(1)],
    }))
    .unwrap();
    p.send(&Message::Update(Update {
        kind: UpdateKind::IncrementalTimed,
        table_id: 5,
        update_id: 2,
        expire_ms: Some(8_000),
        key: Key::from_ipv4("10.0.0.6".parse().unwrap()),
        values: vec![Value::Uint(2)],
    }))
    .unwrap();
    expect_ack(&mut p, 5, 2);
    let d = dump_with(&lab, "lab/t", "10.0.0.6");
    let e5 = d.entry("10.0.0.5").unwrap();
    let e6 = d.entry("10.0.0.6").unwrap();
    assert!(e5.exp_ms > 3_000 && e5.exp_ms <= 5_000, "exp={}", e5.exp_ms);
    assert!(e6.exp_ms > 6_000 && e6.exp_ms <= 8_000, "exp={}", e6.exp_ms);
    assert_eq!((e5.num("gpc0"), e6.num("gpc0")), (Some(1), Some(2)));
}

#[test]
fn haproxy_acks_with_our_table_id_and_update_id() {
    let lab = PeerLab::builder("enc_acks")
        .table("t type ip size 1k expire 30s store gpc0")
        .start()
        .unwrap();
    let mut p = settled(&lab);
    let start = p.log.len();
    // An unusual table id, to tell it apart from HAProxy's own (1).
    p.send(&Message::TableDefinition(def(
        77,
        "/t",
        KeyType::Ipv4,
        4,
        vec![DataSpec::plain(DataType::Gpc0)],
    )))
    .unwrap();
    p.send(&update(
        77,
        300,
        Key::from_ipv4("10.0.0.7".parse().unwrap()),
        vec![Value::Uint(1)],
    ))
    .unwrap();
    expect_ack(&mut p, 77, 300);
    // An incremental update: id 301 implied.
    p.send(&Message::Update(Update {
        kind: UpdateKind::Incremental,
        table_id: 77,
        update_id: 301,
        expire_ms: None,
        key: Key::from_ipv4("10.0.0.8".parse().unwrap()),
        values: vec![Value::Uint(2)],
    }))
    .unwrap();
    expect_ack(&mut p, 77, 301);
    // A wrong key length makes HAProxy ignore the definition: the update is never
    // acknowledged, the session stays up.
    p.send(&Message::TableDefinition(def(
        78,
        "/t",
        KeyType::String,
        32,
        vec![DataSpec::plain(DataType::Gpc0)],
    )))
    .unwrap();
    p.send(&update(
        78,
        1,
        Key::from_str_bytes("x"),
        vec![Value::Uint(3)],
    ))
    .unwrap();
    let later = p.collect_for(Duration::from_millis(1500)).unwrap();
    assert!(
        !later
            .iter()
            .any(|r| matches!(r.message, Message::Ack { table_id: 78, .. })),
        "{later:?}"
    );
    assert_eq!(lab.api().show_table("lab/t").unwrap().entries.len(), 2);

    let frames: Vec<_> = p.log[start..]
        .iter()
        .filter(|r| matches!(r.message, Message::Ack { .. }))
        .map(|r| &r.frame)
        .collect();
    let mut control: Vec<_> = p
        .log
        .iter()
        .filter(|r| {
            matches!(
                r.message,
                Message::ResyncRequest | Message::ResyncConfirm | Message::Heartbeat
            )
        })
        .map(|r| &r.frame)
        .collect();
    control.dedup_by(|a, b| a.raw == b.raw);
    record_or_compare(
        "acks",
        "HAProxy 2.6.12 ACKs (0a 84 <our table id> <update id u32>) of our updates to\n\
         table t type ip size 1k expire 30s store gpc0, which we defined as id 77 (/t):\n\
         0x80 update id 300 (10.0.0.7), then 0x81 incremental (id 301, 10.0.0.8).\n\
         Expected: ack (77, 300), then ack (77, 301).",
        &frames,
    );
    let mut all = control;
    all.truncate(2);
    record_or_compare(
        "control",
        "HAProxy 2.6.12 control messages at the start of a session it accepted from us:\n\
         RESYNC REQUEST (00 00, a fresh node asks its first peer) and, after our FINISHED,\n\
         RESYNC CONFIRM (00 03).",
        &all,
    );
}
