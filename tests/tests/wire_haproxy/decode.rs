//! Everything HAProxy 2.6 sends us decodes, field by field: definitions and
//! updates for every key type, every data type 2.6 has, dictionary forms, and the
//! timed updates of a full resync.

use crate::capture::record_or_compare;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use stktagg_tests::{MockPeer, PeerLab, Received, ports};
use stktagg_wire::{
    DataSpec, DataType, DictValue, FreqCtr, Key, KeyType, Message, TableDefinition, Update,
    UpdateKind, Value,
};

const WAIT: Duration = Duration::from_secs(8);

/// One HTTP/1.0 request with an `x-k` header; returns the status line.
pub fn http_get(addr: SocketAddr, key: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(s, "GET / HTTP/1.0\r\nx-k: {key}\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or_default().to_owned()
}

/// An update with the name of its table and the message it came in.
type Pushed = (String, Update, Received);

/// Receives until `n` updates arrived; returns the definitions by name and the
/// updates with the table name they belong to.
fn updates(peer: &mut MockPeer, n: usize) -> (BTreeMap<String, TableDefinition>, Vec<Pushed>) {
    let mut defs = BTreeMap::new();
    let mut by_id = BTreeMap::new();
    let mut ups = Vec::new();
    while ups.len() < n {
        let r = peer
            .recv(WAIT)
            .unwrap_or_else(|e| panic!("{e}; got {:?}", ups.len()));
        match &r.message {
            Message::TableDefinition(d) => {
                let name = String::from_utf8_lossy(&d.name).into_owned();
                by_id.insert(d.table_id, name.clone());
                defs.insert(name, d.clone());
            }
            Message::Update(u) => {
                let name = by_id
                    .get(&u.table_id)
                    .cloned()
                    .expect("update before its definition");
                ups.push((name, u.clone(), r.clone()));
            }
            _ => {}
        }
    }
    (defs, ups)
}

fn update_for<'a>(ups: &'a [Pushed], table: &str) -> &'a Pushed {
    ups.iter()
        .find(|(n, ..)| n == table)
        .unwrap_or_else(|| panic!("no update for {table}"))
}

fn gpc0_def(id_check: &TableDefinition, key_type: KeyType, key_len: u32) {
    assert_eq!(id_check.key_type, key_type, "{id_check:?}");
    assert_eq!(id_check.key_len, key_len, "{id_check:?}");
    assert_eq!(id_check.expire_ms, 30_000);
    assert_eq!(id_check.data, vec![DataSpec::plain(DataType::Gpc0)]);
    assert!(id_check.table_id >= 1);
}

#[test]
fn every_key_type_decodes() {
    let fe = ports::free_addr().unwrap();
    let lab = PeerLab::builder("keys")
        .table("ints type integer size 1k expire 30s store gpc0")
        .table("ips type ip size 1k expire 30s store gpc0")
        .table("ip6s type ipv6 size 1k expire 30s store gpc0")
        .table("strs type string len 8 size 1k expire 30s store gpc0")
        .table("str32 type string size 1k expire 30s store gpc0")
        .table("bins type binary len 6 size 1k expire 30s store gpc0")
        .section(&format!(
            "frontend fe\n    bind {fe}\n    http-request track-sc0 req.hdr(x-k) table {{peers}}/bins\n    http-request sc-inc-gpc0(0)\n    http-request return status 200\n"
        ))
        .start()
        .unwrap();
    let api = lab.api();
    api.set_table("lab/ints", "3000000000", &[("gpc0", "1")])
        .unwrap();
    api.set_table("lab/ips", "10.1.2.3", &[("gpc0", "2")])
        .unwrap();
    api.set_table("lab/ip6s", "2001:db8::1", &[("gpc0", "3")])
        .unwrap();
    api.set_table("lab/strs", "abcdefgh", &[("gpc0", "4")])
        .unwrap();
    api.set_table("lab/str32", "a-string", &[("gpc0", "5")])
        .unwrap();
    // Binary keys cannot be set through the CLI: track a header instead.
    assert!(http_get(fe, "AB").contains("200"));

    let mut peer = lab.dial().unwrap();
    let (defs, ups) = updates(&mut peer, 6);
    gpc0_def(&defs["/ints"], KeyType::Sint, 4);
    gpc0_def(&defs["/ips"], KeyType::Ipv4, 4);
    gpc0_def(&defs["/ip6s"], KeyType::Ipv6, 16);
    gpc0_def(&defs["/strs"], KeyType::String, 9);
    gpc0_def(&defs["/str32"], KeyType::String, 32);
    gpc0_def(&defs["/bins"], KeyType::Binary, 6);

    let want = [
        ("/ints", Key::from_u32(3_000_000_000), 1),
        ("/ips", Key::from_ipv4("10.1.2.3".parse().unwrap()), 2),
        ("/ip6s", Key::from_ipv6("2001:db8::1".parse().unwrap()), 3),
        ("/strs", Key::from_str_bytes("abcdefgh"), 4),
        ("/str32", Key::from_str_bytes("a-string"), 5),
        ("/bins", Key::from_str_bytes(b"AB\0\0\0\0"), 1),
    ];
    for (table, key, gpc0) in &want {
        let (_, u, _) = update_for(&ups, table);
        assert_eq!(&u.key, key, "{table}");
        assert_eq!(u.values, vec![Value::Uint(*gpc0)], "{table}");
        // Live pushes use the untimed forms.
        assert!(!u.kind.is_timed(), "{table}: {u:?}");
        if *table != "/bins" {
            // Tracking touches the binary entry twice (track, then increment).
            assert_eq!(u.update_id, 1, "{table}: first local change of the table");
        }
    }
    // The integer key is 4 raw big-endian bytes on the wire.
    assert!(
        update_for(&ups, "/ints")
            .2
            .frame
            .hex()
            .contains("b2 d0 5e 00")
    );

    let frames: Vec<_> = peer
        .log
        .iter()
        .filter(|r| matches!(r.message, Message::TableDefinition(_) | Message::Update(_)))
        .map(|r| &r.frame)
        .collect();
    record_or_compare(
        "keys",
        "HAProxy 2.6.12 live push after the handshake, one table per key type:\n\
         peers lab: table ints type integer / ips type ip / ip6s type ipv6 / strs type string len 8 /\n\
         str32 type string / bins type binary len 6, each `size 1k expire 30s store gpc0`.\n\
         Set: ints 3000000000 gpc0=1; ips 10.1.2.3 gpc0=2; ip6s 2001:db8::1 gpc0=3;\n\
         strs abcdefgh gpc0=4; str32 a-string gpc0=5; bins \"AB\" (tracked from a header: two touches, so update id 2) gpc0=1.\n\
         Each table: DEFINE (name /<table>, expire 30000, key_len 4/4/16/9/32/6), then one 0x80 update id 1.",
        &frames,
    );
}

fn freq(v: &Value) -> FreqCtr {
    match v {
        Value::Freq(f) => *f,
        other => panic!("not a rate: {other:?}"),
    }
}

#[test]
fn every_data_type_decodes() {
    let lab = PeerLab::builder("alltypes")
        .table("all type ip size 1k expire 60s store server_id,gpt0,gpc0,gpc0_rate(10s),conn_cnt,conn_rate(10s),conn_cur,sess_cnt,sess_rate(10s),http_req_cnt,http_req_rate(10s),http_err_cnt,http_err_rate(10s),bytes_in_cnt,bytes_in_rate(10s),bytes_out_cnt,bytes_out_rate(10s),gpc1,gpc1_rate(10s),server_key,http_fail_cnt,http_fail_rate(10s)")
        .table("arr type ip size 1k expire 60s store gpt(3),gpc(2),gpc_rate(2,5s)")
        .start()
        .unwrap();
    // Distinct values so that a field decoded from the wrong place shows.
    let sets: Vec<(&str, &str)> = vec![
        ("server_id", "-7"),
        ("gpt0", "11"),
        ("gpc0", "12"),
        ("gpc0_rate", "13"),
        ("conn_cnt", "4000000000"),
        ("conn_rate", "15"),
        ("conn_cur", "16"),
        ("sess_cnt", "17"),
        ("sess_rate", "18"),
        ("http_req_cnt", "19"),
        ("http_req_rate", "42"),
        ("http_err_cnt", "21"),
        ("http_err_rate", "22"),
        ("bytes_in_cnt", "5000000000"),
        ("bytes_in_rate", "24"),
        ("bytes_out_cnt", "1099511627776"),
        ("bytes_out_rate", "26"),
        ("gpc1", "27"),
        ("gpc1_rate", "28"),
        ("http_fail_cnt", "30"),
        ("http_fail_rate", "31"),
    ];
    lab.api().set_table("lab/all", "10.0.0.1", &sets).unwrap();
    lab.api()
        .set_table(
            "lab/arr",
            "10.0.0.2",
            &[("gpt", "7"), ("gpc", "3"), ("gpc_rate", "9")],
        )
        .unwrap();

    let mut peer = lab.dial().unwrap();
    let (defs, ups) = updates(&mut peer, 2);

    let all = &defs["/all"];
    assert_eq!(
        (all.key_type, all.key_len, all.expire_ms),
        (KeyType::Ipv4, 4, 60_000)
    );
    let types: Vec<_> = all.data.iter().map(|d| d.data_type).collect();
    assert_eq!(types, DataType::ALL[..22].to_vec(), "ids 0..=21 in order");
    for d in &all.data {
        let p = if matches!(d.data_type.params(), stktagg_wire::ParamKind::Period) {
            10_000
        } else {
            0
        };
        assert_eq!((d.period_ms, d.nbelem), (p, 0), "{d:?}");
    }
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

    let (_, u, _) = update_for(&ups, "/all");
    assert_eq!(u.key, Key::from_ipv4("10.0.0.1".parse().unwrap()));
    assert_eq!(u.values.len(), 22);
    let by_type: BTreeMap<DataType, &Value> = all
        .data
        .iter()
        .map(|d| d.data_type)
        .zip(&u.values)
        .collect();
    assert_eq!(by_type[&DataType::ServerId], &Value::Sint(-7));
    assert_eq!(
        by_type[&DataType::ServerKey],
        &Value::Dict(DictValue::Absent)
    );
    assert_eq!(by_type[&DataType::BytesInCnt], &Value::Ull(5_000_000_000));
    assert_eq!(by_type[&DataType::BytesOutCnt], &Value::Ull(1 << 40));
    for (name, v) in &sets {
        let t = DataType::from_name(name).unwrap();
        let got: &Value = by_type[&t];
        match t.storage() {
            stktagg_wire::Storage::Uint => {
                assert_eq!(got, &Value::Uint(v.parse().unwrap()), "{name}")
            }
            stktagg_wire::Storage::FreqCtr => {
                // `set table` stores curr = value, prev = 0, at "now".
                let f = freq(got);
                assert_eq!((f.curr, f.prev), (v.parse().unwrap(), 0), "{name}");
                assert!(f.age < 5_000, "{name}: age {}", f.age);
            }
            _ => {}
        }
    }

    let (_, u, _) = update_for(&ups, "/arr");
    assert_eq!(u.values[0], Value::UintArray(vec![7, 0, 0]));
    assert_eq!(u.values[1], Value::UintArray(vec![3, 0]));
    let Value::FreqArray(rates) = &u.values[2] else {
        panic!("{:?}", u.values[2])
    };
    assert_eq!(rates.len(), 2);
    assert_eq!((rates[0].curr, rates[0].prev), (9, 0));
    // The untouched element has no events; its age is HAProxy's clock, anything.
    assert_eq!((rates[1].curr, rates[1].prev), (0, 0));

    let frames: Vec<_> = peer
        .log
        .iter()
        .filter(|r| matches!(r.message, Message::TableDefinition(_) | Message::Update(_)))
        .map(|r| &r.frame)
        .collect();
    record_or_compare(
        "all_types",
        "HAProxy 2.6.12 live push of two tables holding every data type of 2.6 (ids 0..24):\n\
         table all type ip size 1k expire 60s store server_id,gpt0,gpc0,gpc0_rate(10s),conn_cnt,conn_rate(10s),\n\
           conn_cur,sess_cnt,sess_rate(10s),http_req_cnt,http_req_rate(10s),http_err_cnt,http_err_rate(10s),\n\
           bytes_in_cnt,bytes_in_rate(10s),bytes_out_cnt,bytes_out_rate(10s),gpc1,gpc1_rate(10s),server_key,\n\
           http_fail_cnt,http_fail_rate(10s)\n\
         table arr type ip size 1k expire 60s store gpt(3),gpc(2),gpc_rate(2,5s)\n\
         set table lab/all key 10.0.0.1: server_id -7, gpt0 11, gpc0 12, gpc0_rate 13, conn_cnt 4000000000,\n\
           conn_rate 15, conn_cur 16, sess_cnt 17, sess_rate 18, http_req_cnt 19, http_req_rate 42,\n\
           http_err_cnt 21, http_err_rate 22, bytes_in_cnt 5000000000, bytes_in_rate 24,\n\
           bytes_out_cnt 1099511627776, bytes_out_rate 26, gpc1 27, gpc1_rate 28, http_fail_cnt 30,\n\
           http_fail_rate 31 (server_key absent). Rates: curr = value, prev = 0, small age.\n\
         set table lab/arr key 10.0.0.2: gpt 7 (element 0), gpc 3, gpc_rate 9.",
        &frames,
    );
}

#[test]
fn server_key_comes_in_full_then_short_form() {
    let fe = ports::free_addr().unwrap();
    let origin = ports::free_addr().unwrap();
    let lab = PeerLab::builder("dict")
        .table("t type ip size 1k expire 30s store gpc0")
        .section(&format!("frontend fe\n    bind {fe}\n    default_backend be\n"))
        .section(&format!("frontend origin\n    bind {origin}\n    http-request return status 200\n"))
        .section(&format!(
            "backend be\n    stick-table type string len 16 size 1k expire 30s store server_id,server_key peers {{peers}}\n    stick on req.hdr(x-k)\n    server s1 {origin}\n"
        ))
        .start()
        .unwrap();
    assert!(http_get(fe, "k1").contains("200"));
    assert!(http_get(fe, "k2").contains("200"));
    let d = lab.api().show_table("be").unwrap();
    assert_eq!(d.entry("k1").unwrap().get("server_key"), Some("s1"));

    let mut peer = lab.dial().unwrap();
    let (defs, ups) = updates(&mut peer, 2);
    let be = &defs["be"];
    assert_eq!((be.key_type, be.key_len), (KeyType::String, 17));
    let s1 = Value::Dict(DictValue::Name("s1".into()));
    let mut keys = Vec::new();
    for (name, u, _) in &ups {
        assert_eq!(name, "be");
        assert_eq!(u.values, vec![Value::Sint(1), s1.clone()]);
        keys.push(u.key.clone());
    }
    keys.sort();
    assert_eq!(
        keys,
        vec![Key::from_str_bytes("k1"), Key::from_str_bytes("k2")]
    );
    // First time through the session's cache: len 4, id 1, strlen 2, "s1".
    assert!(
        ups[0].2.frame.hex().ends_with("01 04 01 02 73 31"),
        "{}",
        ups[0].2.frame.hex()
    );
    // Then the short form: len 1, id 1.
    assert!(
        ups[1].2.frame.hex().ends_with("01 01 01"),
        "{}",
        ups[1].2.frame.hex()
    );

    let frames: Vec<_> = peer
        .log
        .iter()
        .filter(|r| matches!(r.message, Message::TableDefinition(_) | Message::Update(_)))
        .map(|r| &r.frame)
        .collect();
    record_or_compare(
        "dict",
        "HAProxy 2.6.12 live push of a backend table with server_key:\n\
         backend be: stick-table type string len 16 size 1k expire 30s store server_id,server_key peers lab;\n\
         stick on req.hdr(x-k); server s1. Two requests with x-k: k1 then k2, both stuck to s1.\n\
         DEFINE name \"be\" (no slash: backend table), key_len 17. Two updates (k1, k2, in update order),\n\
         server_id=1, server_key \"s1\": first full form (04 01 02 73 31), then short form (01 01).",
        &frames,
    );
}

#[test]
fn resync_teaches_with_timed_updates_then_finished() {
    let lab = PeerLab::builder("resync")
        .table("t type ip size 1k expire 30s store gpc0")
        .start()
        .unwrap();
    for (i, ip) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
        lab.api()
            .set_table("lab/t", ip, &[("gpc0", &(i + 1).to_string())])
            .unwrap();
    }
    let mut peer = lab.dial().unwrap();
    // The live push first (acknowledged by the mock), then our resync request.
    updates(&mut peer, 3);
    let start = peer.log.len();
    peer.send(&Message::ResyncRequest).unwrap();
    let got = peer
        .recv_until(WAIT, |m| {
            matches!(m, Message::ResyncFinished | Message::ResyncPartial)
        })
        .unwrap();
    let lesson: Vec<&Received> = got
        .iter()
        .filter(|r| {
            !matches!(
                r.message,
                Message::Heartbeat | Message::ResyncConfirm | Message::Ack { .. }
            )
        })
        .collect();
    // HAProxy only sends a DEFINE when it switches tables: the live push already
    // selected `/t` on this session, so the lesson starts with the updates.
    assert!(
        matches!(lesson[0].message, Message::Update(_)),
        "{:?}",
        lesson[0].message
    );
    let ups: Vec<&Update> = lesson
        .iter()
        .filter_map(|r| match &r.message {
            Message::Update(u) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(ups.len(), 3, "{lesson:?}");
    assert_eq!(ups[0].kind, UpdateKind::Timed);
    assert!(
        ups[1..]
            .iter()
            .all(|u| u.kind == UpdateKind::IncrementalTimed),
        "{ups:?}"
    );
    for (i, u) in ups.iter().enumerate() {
        let exp = u.expire_ms.unwrap();
        assert!(exp > 20_000 && exp <= 30_000, "remaining lifetime {exp}");
        assert_eq!(u.update_id, ups[0].update_id + i as u32);
        assert_eq!(u.values, vec![Value::Uint(i as u32 + 1)]);
        assert_eq!(
            &peer.decoder.definition(u.table_id).unwrap().name[..],
            b"/t"
        );
    }
    // HAProxy's own resync was answered FINISHED by the mock, so it is up to date.
    assert_eq!(lesson.last().unwrap().message, Message::ResyncFinished);
    assert!(peer.sent.iter().any(|(m, _)| *m == Message::ResyncConfirm));

    // The session's DEFINE of `/t` (from the live push) first, so that the capture
    // decodes on its own, then the lesson.
    let define = peer.log[..start]
        .iter()
        .find(|r| matches!(r.message, Message::TableDefinition(_)))
        .map(|r| &r.frame);
    let frames: Vec<_> = define
        .into_iter()
        .chain(
            peer.log[start..]
                .iter()
                .filter(|r| {
                    matches!(
                        r.message,
                        Message::TableDefinition(_) | Message::Update(_) | Message::ResyncFinished
                    )
                })
                .map(|r| &r.frame),
        )
        .collect();
    record_or_compare(
        "resync_timed",
        "HAProxy 2.6.12 answer to our RESYNC REQUEST (00 00), after its live push was acknowledged:\n\
         table t type ip size 1k expire 30s store gpc0, entries 10.0.0.1 gpc0=1, 10.0.0.2 gpc0=2,\n\
         10.0.0.3 gpc0=3 (update ids 1..3). First line: the DEFINE of /t from the earlier live push (the lesson itself\n\
         has none, as /t was already selected), then 0x85 (id 1, remaining ms, key, gpc0) and\n\
         two 0x86 (ids 2, 3), then RESYNC FINISHED (00 01).",
        &frames,
    );
}

#[test]
fn downgraded_session_resync_uses_untimed_updates() {
    let lab = PeerLab::builder("resync20")
        .table("t type ip size 1k expire 30s store gpc0")
        .start()
        .unwrap();
    lab.api()
        .set_table("lab/t", "10.0.0.1", &[("gpc0", "1")])
        .unwrap();
    let mut peer = lab
        .dial_with(stktagg_wire::hello::Version::V2_0, Default::default())
        .unwrap();
    updates(&mut peer, 1);
    peer.send(&Message::ResyncRequest).unwrap();
    let got = peer
        .recv_until(WAIT, |m| {
            matches!(m, Message::ResyncFinished | Message::ResyncPartial)
        })
        .unwrap();
    let u = got
        .iter()
        .find_map(|r| match &r.message {
            Message::Update(u) => Some(u),
            _ => None,
        })
        .unwrap();
    assert_eq!((u.kind, u.expire_ms), (UpdateKind::Full, None));
}
