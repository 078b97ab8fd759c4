//! Decodes captures of real HAProxy 2.6.12 traffic (`captures/*.hex`) with the codec
//! and checks the decoded values, without running haproxy, so the codec stays checked
//! against real bytes everywhere.
//!
//! The files are written by `tests/tests/wire_haproxy` (crate `stktagg-tests`) with
//! `STKTAGG_RECORD=1`; each starts with `#` lines describing the configuration and
//! the expected values, then holds one message per line as hex. Values that change
//! from run to run (ages, remaining lifetimes) are checked by range.

#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use std::collections::BTreeMap;
use stktagg_wire::{
    DataSpec, DataType, Decoder, DictValue, Key, KeyType, Message, ParamKind, TableDefinition,
    Update, UpdateKind, Value,
};

/// The messages of one capture, each line decoded by one session decoder that must
/// consume exactly that line.
fn load(name: &str) -> Vec<Message> {
    let path = format!("{}/tests/captures/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut dec = Decoder::default();
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let bytes: Vec<u8> = line
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        let mut buf = BytesMut::from(&bytes[..]);
        let msg = dec
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: `{line}`: {e}"))
            .unwrap_or_else(|| panic!("{name}: `{line}` is incomplete"));
        assert!(buf.is_empty(), "{name}: `{line}` left {} bytes", buf.len());
        out.push(msg);
    }
    // The whole capture fed one byte at a time gives the same messages.
    let all: Vec<u8> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| {
            l.split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut dec = Decoder::default();
    let mut buf = BytesMut::new();
    let mut again = Vec::new();
    for b in all {
        buf.extend_from_slice(&[b]);
        while let Some(m) = dec.decode(&mut buf).unwrap() {
            again.push(m);
        }
    }
    assert_eq!(again, out, "{name}: byte-by-byte decoding differs");
    out
}

/// Splits messages into definitions (by name) and updates (with their table name).
fn split(msgs: &[Message]) -> (BTreeMap<String, TableDefinition>, Vec<(String, Update)>) {
    let mut defs = BTreeMap::new();
    let mut names = BTreeMap::new();
    let mut ups = Vec::new();
    for m in msgs {
        match m {
            Message::TableDefinition(d) => {
                let n = String::from_utf8(d.name.to_vec()).unwrap();
                names.insert(d.table_id, n.clone());
                defs.insert(n, d.clone());
            }
            Message::Update(u) => ups.push((names[&u.table_id].clone(), u.clone())),
            _ => {}
        }
    }
    (defs, ups)
}

fn find<'a>(ups: &'a [(String, Update)], table: &str) -> &'a Update {
    &ups.iter().find(|(n, _)| n == table).unwrap().1
}

#[test]
fn keys_of_every_type() {
    let msgs = load("keys");
    assert_eq!(msgs.len(), 12);
    let (defs, ups) = split(&msgs);
    let cases = [
        (
            "/ints",
            KeyType::Sint,
            4,
            Key::from_u32(3_000_000_000),
            1,
            1,
        ),
        (
            "/ips",
            KeyType::Ipv4,
            4,
            Key::from_ipv4("10.1.2.3".parse().unwrap()),
            2,
            1,
        ),
        (
            "/ip6s",
            KeyType::Ipv6,
            16,
            Key::from_ipv6("2001:db8::1".parse().unwrap()),
            3,
            1,
        ),
        (
            "/strs",
            KeyType::String,
            9,
            Key::from_str_bytes("abcdefgh"),
            4,
            1,
        ),
        (
            "/str32",
            KeyType::String,
            32,
            Key::from_str_bytes("a-string"),
            5,
            1,
        ),
        (
            "/bins",
            KeyType::Binary,
            6,
            Key::from_str_bytes(b"AB\0\0\0\0"),
            1,
            2,
        ),
    ];
    for (name, kt, len, key, gpc0, id) in cases {
        let d = &defs[name];
        assert_eq!(
            (d.key_type, d.key_len, d.expire_ms),
            (kt, len, 30_000),
            "{name}"
        );
        assert_eq!(d.data, vec![DataSpec::plain(DataType::Gpc0)], "{name}");
        let u = find(&ups, name);
        assert_eq!(
            (u.kind, u.update_id, u.expire_ms),
            (UpdateKind::Full, id, None),
            "{name}"
        );
        assert_eq!(u.key, key, "{name}");
        assert_eq!(u.values, vec![Value::Uint(gpc0)], "{name}");
    }
}

#[test]
fn every_data_type_of_haproxy_2_6() {
    let (defs, ups) = split(&load("all_types"));
    let all = &defs["/all"];
    assert_eq!(
        (all.table_id, all.key_type, all.expire_ms),
        (2, KeyType::Ipv4, 60_000)
    );
    assert_eq!(all.bitfield(), (1 << 22) - 1);
    for d in &all.data {
        let p = if d.data_type.params() == ParamKind::Period {
            10_000
        } else {
            0
        };
        assert_eq!((d.period_ms, d.nbelem), (p, 0), "{d:?}");
    }
    let u = find(&ups, "/all");
    assert_eq!(u.key, Key::from_ipv4("10.0.0.1".parse().unwrap()));
    let v: BTreeMap<DataType, &Value> = all
        .data
        .iter()
        .map(|d| d.data_type)
        .zip(&u.values)
        .collect();
    let uints = [
        (DataType::Gpt0, 11),
        (DataType::Gpc0, 12),
        (DataType::ConnCnt, 4_000_000_000),
        (DataType::ConnCur, 16),
        (DataType::SessCnt, 17),
        (DataType::HttpReqCnt, 19),
        (DataType::HttpErrCnt, 21),
        (DataType::Gpc1, 27),
        (DataType::HttpFailCnt, 30),
    ];
    for (t, want) in uints {
        assert_eq!(v[&t], &Value::Uint(want), "{t}");
    }
    let rates = [
        (DataType::Gpc0Rate, 13),
        (DataType::ConnRate, 15),
        (DataType::SessRate, 18),
        (DataType::HttpReqRate, 42),
        (DataType::HttpErrRate, 22),
        (DataType::BytesInRate, 24),
        (DataType::BytesOutRate, 26),
        (DataType::Gpc1Rate, 28),
        (DataType::HttpFailRate, 31),
    ];
    for (t, want) in rates {
        let Value::Freq(f) = v[&t] else {
            panic!("{t}: {:?}", v[&t])
        };
        assert_eq!((f.curr, f.prev), (want, 0), "{t}");
        assert!(f.age < 5_000, "{t}: age {}", f.age);
    }
    assert_eq!(v[&DataType::ServerId], &Value::Sint(-7));
    assert_eq!(v[&DataType::ServerKey], &Value::Dict(DictValue::Absent));
    assert_eq!(v[&DataType::BytesInCnt], &Value::Ull(5_000_000_000));
    assert_eq!(v[&DataType::BytesOutCnt], &Value::Ull(1 << 40));

    let arr = &defs["/arr"];
    assert_eq!(
        arr.data,
        vec![
            DataSpec {
                data_type: DataType::Gpt,
                period_ms: 0,
                nbelem: 3
            },
            DataSpec {
                data_type: DataType::Gpc,
                period_ms: 0,
                nbelem: 2
            },
            DataSpec {
                data_type: DataType::GpcRate,
                period_ms: 5_000,
                nbelem: 2
            },
        ]
    );
    let u = find(&ups, "/arr");
    assert_eq!(u.values[0], Value::UintArray(vec![7, 0, 0]));
    assert_eq!(u.values[1], Value::UintArray(vec![3, 0]));
    let Value::FreqArray(r) = &u.values[2] else {
        panic!("{:?}", u.values[2])
    };
    assert_eq!((r[0].curr, r[0].prev), (9, 0));
    // Never touched: its age is the sender's whole clock, a large number.
    assert_eq!((r[1].curr, r[1].prev), (0, 0));
    assert!(r[1].age > 1_000_000, "{:?}", r[1]);
}

#[test]
fn dictionary_full_then_short_form() {
    let (defs, ups) = split(&load("dict"));
    let be = &defs["be"];
    assert_eq!(
        (be.key_type, be.key_len, be.expire_ms),
        (KeyType::String, 17, 30_000)
    );
    assert_eq!(
        be.data,
        vec![
            DataSpec::plain(DataType::ServerId),
            DataSpec::plain(DataType::ServerKey)
        ]
    );
    assert_eq!(ups.len(), 2);
    let s1 = Value::Dict(DictValue::Name("s1".into()));
    assert_eq!((ups[0].1.kind, ups[0].1.update_id), (UpdateKind::Full, 1));
    assert_eq!(
        (ups[1].1.kind, ups[1].1.update_id),
        (UpdateKind::Incremental, 2)
    );
    assert_eq!(ups[0].1.key, Key::from_str_bytes("k1"));
    assert_eq!(ups[1].1.key, Key::from_str_bytes("k2"));
    for (_, u) in &ups {
        assert_eq!(u.values, vec![Value::Sint(1), s1.clone()]);
    }
}

#[test]
fn timed_resync() {
    let msgs = load("resync_timed");
    let (_, ups) = split(&msgs);
    assert_eq!(ups.len(), 3);
    let kinds: Vec<_> = ups.iter().map(|(_, u)| u.kind).collect();
    assert_eq!(
        kinds,
        [
            UpdateKind::Timed,
            UpdateKind::IncrementalTimed,
            UpdateKind::IncrementalTimed
        ]
    );
    for (i, (name, u)) in ups.iter().enumerate() {
        assert_eq!(name, "/t");
        assert_eq!(u.update_id, i as u32 + 1);
        let exp = u.expire_ms.unwrap();
        assert!(exp > 20_000 && exp <= 30_000, "{exp}");
        assert_eq!(
            u.key,
            Key::from_ipv4(std::net::Ipv4Addr::new(10, 0, 0, i as u8 + 1))
        );
        assert_eq!(u.values, vec![Value::Uint(i as u32 + 1)]);
    }
    assert_eq!(msgs.last(), Some(&Message::ResyncFinished));
}

#[test]
fn acks_and_control() {
    assert_eq!(
        load("acks"),
        vec![
            Message::Ack {
                table_id: 77,
                update_id: 300
            },
            Message::Ack {
                table_id: 77,
                update_id: 301
            },
        ]
    );
    assert_eq!(
        load("control"),
        vec![Message::ResyncRequest, Message::ResyncConfirm]
    );
}

#[test]
fn partial_resync() {
    let msgs = load("partial");
    assert_eq!(msgs.len(), 5);
    assert_eq!(msgs[0], Message::ResyncRequest);
    let Message::TableDefinition(d) = &msgs[1] else {
        panic!("{:?}", msgs[1])
    };
    assert_eq!(
        (&d.name[..], d.table_id, d.key_type, d.key_len, d.expire_ms),
        (&b"/t"[..], 1, KeyType::Ipv4, 4, 30_000)
    );
    assert_eq!(d.data, vec![DataSpec::plain(DataType::Gpc0)]);
    let Message::Update(u) = &msgs[2] else {
        panic!("{:?}", msgs[2])
    };
    assert_eq!((u.kind, u.table_id, u.update_id), (UpdateKind::Timed, 1, 1));
    let exp = u.expire_ms.unwrap();
    assert!(exp > 20_000 && exp <= 30_000, "{exp}");
    assert_eq!(u.key, Key::from_ipv4("10.0.0.1".parse().unwrap()));
    assert_eq!(u.values, vec![Value::Uint(5)]);
    assert_eq!(msgs[3..], [Message::ResyncPartial, Message::ResyncConfirm]);
}
