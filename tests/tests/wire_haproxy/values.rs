//! Every data type, one table each: what the codec encodes, HAProxy 2.6 stores
//! and prints with `show table` as predicted. Counters read back as sent (values
//! at the varint length boundaries), except `conn_cur`, which 2.6 ignores on
//! receipt; rates read back through HAProxy's frequency-counter read rule, for
//! ages in the current period, the previous one, further back, and the future.
//! Data-type bits 25 and 26 (3.0's glitch counters) are skipped by 2.6, and go
//! both ways with a 3.0 table that stores them.

use crate::encode::{WAIT, def, expect_acks, settled, update};
use crate::peers_dump::{num, show_peers};
use std::time::Instant;
use stktagg_tests::lab::MOCK_PEER;
use stktagg_tests::{Entry, HaproxyVersion, PeerLab};
use stktagg_wire::{
    DataSpec, DataType, DictValue, FreqCtr, Key, KeyType, Message, ParamKind, Value,
};

/// The period of every rate table here, in ms.
const PERIOD: u32 = 10_000;

/// What `show table` should print for one field.
#[derive(Debug, Clone, Copy)]
enum Shown {
    /// This exact text.
    Text(&'static str),
    /// HAProxy's reading of this counter, some time after it arrived.
    Rate(FreqCtr),
}

/// One data type: the table that stores it, and one update per row (keys
/// 10.0.0.1, 10.0.0.2, ...) with the fields each row must show.
struct Case {
    data_type: DataType,
    /// The `store` clause of the HAProxy table.
    store: &'static str,
    spec: DataSpec,
    rows: Vec<(Value, Vec<(&'static str, Shown)>)>,
}

fn fc(age: u32, curr: u32, prev: u32) -> FreqCtr {
    FreqCtr { age, curr, prev }
}

/// Rate rows beyond the plain `{age 0, curr v, prev 0}` one, each with a different
/// branch of the read rule (P = 10 s):
/// - half-way through the current period: curr + prev * remain / P, about 80;
/// - half-way through the next one: only the previous period's part, about 15;
/// - two periods back: 0;
/// - curr 0 and prev 1: the low-rate correction gives 1, not 0;
/// - an age just below 2^32: a period that starts 1 s in the future, about 140.
const VARIANTS: [FreqCtr; 5] = [
    FreqCtr {
        age: 5_000,
        curr: 30,
        prev: 100,
    },
    FreqCtr {
        age: 15_000,
        curr: 30,
        prev: 100,
    },
    FreqCtr {
        age: 25_000,
        curr: 30,
        prev: 100,
    },
    FreqCtr {
        age: 9_000,
        curr: 0,
        prev: 1,
    },
    FreqCtr {
        age: u32::MAX - 999,
        curr: 30,
        prev: 100,
    },
];

fn scalar(data_type: DataType, store: &'static str, v: Value, shown: &'static str) -> Case {
    Case {
        data_type,
        store,
        spec: DataSpec::plain(data_type),
        rows: vec![(v, vec![(data_type.name(), Shown::Text(shown))])],
    }
}

fn rate(data_type: DataType, store: &'static str, v: u32) -> Case {
    let mut rows = vec![(
        Value::Freq(fc(0, v, 0)),
        vec![(data_type.name(), Shown::Rate(fc(0, v, 0)))],
    )];
    for f in VARIANTS {
        rows.push((Value::Freq(f), vec![(data_type.name(), Shown::Rate(f))]));
    }
    Case {
        data_type,
        store,
        spec: DataSpec {
            data_type,
            period_ms: PERIOD,
            nbelem: 0,
        },
        rows,
    }
}

fn cases() -> Vec<Case> {
    use DataType::*;
    let u = Value::Uint;
    vec![
        scalar(ServerId, "server_id", Value::Sint(-5), "-5"),
        // Values at the varint length boundaries: 1, 2, 3, 4, 5 bytes and more.
        scalar(Gpt0, "gpt0", u(239), "239"),
        scalar(Gpc0, "gpc0", u(u32::MAX), "4294967295"),
        scalar(ConnCnt, "conn_cnt", u(240), "240"),
        // 2.6 marks conn_cur local: the value is skipped on receipt, the entry is
        // still created (and acknowledged) with its own conn_cur, 0.
        scalar(ConnCur, "conn_cur", u(7), "0"),
        scalar(SessCnt, "sess_cnt", u(2_288), "2288"),
        scalar(HttpReqCnt, "http_req_cnt", u(264_432), "264432"),
        scalar(HttpErrCnt, "http_err_cnt", u(33_818_864), "33818864"),
        scalar(
            BytesInCnt,
            "bytes_in_cnt",
            Value::Ull(4_328_786_160),
            "4328786160",
        ),
        scalar(
            BytesOutCnt,
            "bytes_out_cnt",
            Value::Ull(1_161_999_626_690_365_680),
            "1161999626690365680",
        ),
        scalar(Gpc1, "gpc1", u(1), "1"),
        scalar(
            ServerKey,
            "server_key",
            Value::Dict(DictValue::Name("s7".into())),
            "s7",
        ),
        scalar(HttpFailCnt, "http_fail_cnt", u(2_287), "2287"),
        rate(Gpc0Rate, "gpc0_rate(10s)", 1),
        rate(ConnRate, "conn_rate(10s)", 239),
        rate(SessRate, "sess_rate(10s)", 240),
        rate(HttpReqRate, "http_req_rate(10s)", 2_288),
        rate(HttpErrRate, "http_err_rate(10s)", 264_432),
        rate(BytesInRate, "bytes_in_rate(10s)", 33_818_864),
        rate(BytesOutRate, "bytes_out_rate(10s)", 4_000_000_000),
        rate(Gpc1Rate, "gpc1_rate(10s)", 77),
        rate(HttpFailRate, "http_fail_rate(10s)", 12_345),
        Case {
            data_type: Gpt,
            store: "gpt(2)",
            spec: DataSpec {
                data_type: Gpt,
                period_ms: 0,
                nbelem: 2,
            },
            rows: vec![(
                Value::UintArray(vec![3, 4_000_000_000]),
                vec![
                    ("gpt0", Shown::Text("3")),
                    ("gpt1", Shown::Text("4000000000")),
                ],
            )],
        },
        Case {
            data_type: Gpc,
            store: "gpc(2)",
            spec: DataSpec {
                data_type: Gpc,
                period_ms: 0,
                nbelem: 2,
            },
            rows: vec![(
                Value::UintArray(vec![5, 6]),
                vec![("gpc0", Shown::Text("5")), ("gpc1", Shown::Text("6"))],
            )],
        },
        Case {
            data_type: GpcRate,
            store: "gpc_rate(2,10s)",
            spec: DataSpec {
                data_type: GpcRate,
                period_ms: PERIOD,
                nbelem: 2,
            },
            rows: vec![(
                Value::FreqArray(vec![fc(0, 7, 0), VARIANTS[0]]),
                vec![
                    ("gpc0_rate", Shown::Rate(fc(0, 7, 0))),
                    ("gpc1_rate", Shown::Rate(VARIANTS[0])),
                ],
            )],
        },
    ]
}

/// HAProxy 2.6's reading of a frequency counter `elapsed` ms after it arrived
/// as `f`, in a table whose period is `period` (peers-protocol.md §9).
///
/// On receipt HAProxy sets the period start to `now - age` (32-bit, so an age
/// above 2^31 is a start in the future). A read then takes
/// `remain = start + P - now`; if that is negative the current period is over:
/// `remain += P`, the old current count becomes the previous one if still within
/// reach (else 0), and the current count is 0. With no current events and at
/// most one previous event the rate is that count; otherwise it is
/// `(prev * remain + curr * P) / P`, rounded down.
fn read_rate(f: FreqCtr, period: u32, elapsed: i64) -> u64 {
    let p = i64::from(period);
    let age = i64::from(f.age as i32);
    let mut remain = p - age - elapsed;
    let (mut curr, mut past) = (u64::from(f.curr), u64::from(f.prev));
    if remain < 0 {
        remain += p;
        past = if remain >= 0 { curr } else { 0 };
        curr = 0;
    }
    if curr == 0 && past <= 1 {
        return past;
    }
    (past * remain.max(0) as u64 + curr * p as u64) / p as u64
}

/// The readings HAProxy may print for `f` when between 0 and `max_elapsed` ms
/// passed (HAProxy also clears the low bit of the start tick: one more ms).
fn rate_bounds(f: FreqCtr, max_elapsed: i64) -> (u64, u64) {
    let readings = (0..=max_elapsed + 1).map(|e| read_rate(f, PERIOD, e));
    let (lo, hi) = readings.fold((u64::MAX, 0), |(lo, hi), r| (lo.min(r), hi.max(r)));
    (lo, hi)
}

fn check_field(e: &Entry, field: &str, shown: Shown, max_elapsed: i64, what: &str) {
    let f = e
        .field(field)
        .unwrap_or_else(|| panic!("{what}: no `{field}` in {e:?}"));
    match shown {
        Shown::Text(t) => assert_eq!(f.value, t, "{what}: {field}"),
        Shown::Rate(fc) => {
            assert_eq!(f.period_ms, Some(PERIOD), "{what}: {field}");
            let got: u64 = f.value.parse().unwrap();
            let (lo, hi) = rate_bounds(fc, max_elapsed);
            assert!(
                (lo..=hi).contains(&got),
                "{what}: {field} = {got}, read rule predicts {lo}..={hi} for {fc:?} \
                 within {max_elapsed} ms"
            );
        }
    }
}

#[test]
fn read_rule_examples() {
    // peers-protocol.md §9's worked example: P = 10 s, curr 30, prev 100, 5 s in.
    let f = fc(5_000, 30, 100);
    assert_eq!(read_rate(f, 10_000, 0), 80);
    assert_eq!(read_rate(f, 10_000, 7_000), 24);
    assert_eq!(read_rate(f, 10_000, 16_000), 0);
    assert_eq!(read_rate(fc(0, 42, 0), 10_000, 9_999), 42);
    assert_eq!(read_rate(VARIANTS[1], 10_000, 0), 15);
    assert_eq!(read_rate(VARIANTS[3], 10_000, 0), 1);
    assert_eq!(read_rate(VARIANTS[4], 10_000, 0), 140);
    assert_eq!(rate_bounds(f, 99), (79, 80));
}

#[test]
fn every_data_type_one_by_one() {
    let cases = cases();
    let mut lab = PeerLab::builder("values");
    for c in &cases {
        lab = lab.table(&format!(
            "v_{} type ip size 1k expire 30s store {}",
            c.data_type.name(),
            c.store
        ));
    }
    let lab = lab.start().unwrap();
    let mut p = settled(&lab);
    // Every type of 2.6 but none of 3.0 has a case.
    let mut covered: Vec<DataType> = cases.iter().map(|c| c.data_type).collect();
    covered.sort();
    let all_2_6: Vec<DataType> = DataType::ALL
        .iter()
        .copied()
        .filter(|t| t.in_haproxy_2_6())
        .collect();
    assert_eq!(covered, all_2_6);

    let start = Instant::now();
    let mut want_acks = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let id = 100 + i as u32;
        // Each definition carries exactly one type, and its parameters when it has
        // any (period, element count).
        let d = def(
            id,
            &format!("/v_{}", c.data_type.name()),
            KeyType::Ipv4,
            4,
            vec![c.spec],
        );
        assert_eq!(d.bitfield(), c.data_type.bit());
        assert_eq!(
            c.spec.period_ms != 0,
            matches!(
                c.data_type.params(),
                ParamKind::Period | ParamKind::ArrayPeriod
            )
        );
        p.send(&Message::TableDefinition(d)).unwrap();
        for (j, (v, _)) in c.rows.iter().enumerate() {
            let key = Key::from_ipv4(std::net::Ipv4Addr::new(10, 0, 0, j as u8 + 1));
            p.send(&update(id, j as u32 + 1, key, vec![v.clone()]))
                .unwrap();
        }
        want_acks.push((id, c.rows.len() as u32));
    }
    expect_acks(&mut p, &want_acks);

    for c in &cases {
        let table = format!("lab/v_{}", c.data_type.name());
        let d = lab.api().show_table(&table).unwrap();
        let max_elapsed = start.elapsed().as_millis() as i64 + 2;
        assert_eq!(d.entries.len(), c.rows.len(), "{table}: {d:?}");
        for (j, (v, fields)) in c.rows.iter().enumerate() {
            let key = format!("10.0.0.{}", j + 1);
            let e = d
                .entry(&key)
                .unwrap_or_else(|| panic!("{table}: no {key} in {d:?}"));
            // Only the table's own fields are printed.
            assert_eq!(e.fields.len(), fields.len(), "{table} {key}: {e:?}");
            for (field, shown) in fields {
                check_field(
                    e,
                    field,
                    *shown,
                    max_elapsed,
                    &format!("{table} {key} ({v:?})"),
                );
            }
        }
    }
    // conn_cur was ignored, not refused: HAProxy recorded our definition of it
    // and acknowledged the update; the session is still up.
    let peers = show_peers(&lab);
    let agg = peers.peer(MOCK_PEER);
    let cc = agg.table("lab/v_conn_cur");
    assert_eq!(num(cc, "remote_data"), DataType::ConnCur.bit());
    assert_eq!(num(cc, "last_get"), 1);
    assert_eq!(agg.num("proto_err"), 0);
}

#[test]
fn data_types_25_and_26_are_skipped_by_haproxy_2_6() {
    let lab = PeerLab::builder("glitch")
        .table("t type ip size 1k expire 30s store gpc0,http_req_rate(10s)")
        .start()
        .unwrap();
    let mut p = settled(&lab);
    let rate = |dt| DataSpec {
        data_type: dt,
        period_ms: PERIOD,
        nbelem: 0,
    };
    let d = def(
        5,
        "/t",
        KeyType::Ipv4,
        4,
        vec![
            DataSpec::plain(DataType::Gpc0),
            rate(DataType::HttpReqRate),
            DataSpec::plain(DataType::GlitchCnt),
            rate(DataType::GlitchRate),
        ],
    );
    let bits = d.bitfield();
    assert_eq!(bits, (1 << 2) | (1 << 10) | (1 << 25) | (1 << 26));
    p.send(&Message::TableDefinition(d)).unwrap();
    // The glitch definition parameters (26, period) end the DEFINE, and the glitch
    // values end each update: 2.6 reads neither.
    let define = &p.sent.last().unwrap().1;
    assert!(
        stktagg_tests::frame::to_hex(define).ends_with("0a f0 e2 03 1a f0 e2 03"),
        "{}",
        stktagg_tests::frame::to_hex(define)
    );
    let values = |g: u32, r: u32, gc: u32, gr: u32| {
        vec![
            Value::Uint(g),
            Value::Freq(fc(0, r, 0)),
            Value::Uint(gc),
            Value::Freq(fc(0, gr, 0)),
        ]
    };
    let k = |i: u8| Key::from_ipv4(std::net::Ipv4Addr::new(10, 0, 0, i));
    p.send(&update(5, 1, k(1), values(3, 4, 5, 6))).unwrap();
    // An incremental update next: 2.6 kept its place in the stream.
    p.send(&Message::Update(stktagg_wire::Update {
        kind: stktagg_wire::UpdateKind::Incremental,
        table_id: 5,
        update_id: 2,
        expire_ms: None,
        key: k(2),
        values: values(7, 8, 9_999, 10_000),
    }))
    .unwrap();
    expect_acks(&mut p, &[(5, 2)]);
    let dump = lab.api().show_table("lab/t").unwrap();
    for (key, gpc0, rate) in [("10.0.0.1", "3", "4"), ("10.0.0.2", "7", "8")] {
        let e = dump.entry(key).unwrap_or_else(|| panic!("{dump:?}"));
        let names: Vec<&str> = e.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["gpc0", "http_req_rate"], "{e:?}");
        assert_eq!(
            (e.get("gpc0"), e.get("http_req_rate")),
            (Some(gpc0), Some(rate))
        );
    }
    // HAProxy recorded our whole bitfield, bits 25 and 26 included, and decodes
    // updates by it: the bits it knows.
    let peers = show_peers(&lab);
    let t = peers.peer(MOCK_PEER).table("lab/t");
    assert_eq!(num(t, "remote_data"), bits);
    assert_eq!((num(t, "remote_id"), num(t, "last_get")), (5, 2));
}

#[test]
fn glitch_types_round_trip_with_haproxy_3_0() {
    // HAProxy 3.0 added `glitch_cnt` (25) and `glitch_rate` (26). From 3.0 on, a
    // table that stores them pushes them (decoded here field by field) and stores
    // ours (read back with `show table`). 2.6 refuses such a table at start, which
    // this checks instead: there, the test above is the live evidence.
    let table = "t type ip size 1k expire 30s store gpc0,glitch_cnt,glitch_rate(10s)";
    let builder = PeerLab::builder("glitch30").table(table);
    let version = stktagg_tests::haproxy_version().unwrap();
    if version < HaproxyVersion::new(3, 0, 0) {
        let err = builder.start().unwrap_err().to_string();
        assert!(err.contains("unknown store option 'glitch_cnt'"), "{err}");
        return;
    }
    let lab = builder.start().unwrap();
    lab.api()
        .set_table(
            "lab/t",
            "10.0.0.1",
            &[("gpc0", "2"), ("glitch_cnt", "7"), ("glitch_rate", "3")],
        )
        .unwrap();

    // HAProxy -> us: the DEFINE lists bits 25 and 26 with glitch_rate's period, and
    // the update carries both values after gpc0.
    let mut p = lab.dial().unwrap();
    let got = p
        .recv_until(WAIT, |m| matches!(m, Message::Update(_)))
        .unwrap();
    let d = got
        .iter()
        .find_map(|r| match &r.message {
            Message::TableDefinition(d) => Some(d.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no DEFINE before the update: {got:?}"));
    assert_eq!(
        d.data,
        vec![
            DataSpec::plain(DataType::Gpc0),
            DataSpec::plain(DataType::GlitchCnt),
            DataSpec {
                data_type: DataType::GlitchRate,
                period_ms: PERIOD,
                nbelem: 0,
            },
        ]
    );
    let Some(Message::Update(u)) = got.last().map(|r| &r.message) else {
        panic!("{got:?}")
    };
    assert_eq!(u.key, Key::from_ipv4("10.0.0.1".parse().unwrap()));
    let [Value::Uint(2), Value::Uint(7), Value::Freq(rate)] = u.values[..] else {
        panic!("{u:?}")
    };
    // `set table` stores curr = value, prev = 0, at "now".
    assert_eq!((rate.curr, rate.prev), (3, 0), "{rate:?}");
    p.recv_until(WAIT, |m| *m == Message::ResyncConfirm)
        .unwrap();

    // Us -> HAProxy: our DEFINE with the same types, one update, read back.
    let ours = DataSpec {
        data_type: DataType::GlitchRate,
        period_ms: PERIOD,
        nbelem: 0,
    };
    p.send(&Message::TableDefinition(def(
        5,
        "/t",
        KeyType::Ipv4,
        4,
        vec![
            DataSpec::plain(DataType::Gpc0),
            DataSpec::plain(DataType::GlitchCnt),
            ours,
        ],
    )))
    .unwrap();
    let k2 = Key::from_ipv4("10.0.0.2".parse().unwrap());
    p.send(&update(
        5,
        1,
        k2,
        vec![
            Value::Uint(4),
            Value::Uint(70_000),
            Value::Freq(fc(0, 9, 0)),
        ],
    ))
    .unwrap();
    expect_acks(&mut p, &[(5, 1)]);
    let dump = lab.api().show_table("lab/t").unwrap();
    let e = dump.entry("10.0.0.2").unwrap_or_else(|| panic!("{dump:?}"));
    assert_eq!(
        (e.get("gpc0"), e.get("glitch_cnt"), e.get("glitch_rate")),
        (Some("4"), Some("70000"), Some("9")),
        "{e:?}"
    );
}
