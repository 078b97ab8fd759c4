//! Store tests: aggregation per data type, resync, expiry, coalescing, relays,
//! teach-back, and properties over random update streams.

use crate::rules::{StoredFreq, read_rate};
use crate::*;
use bytes::Bytes;
use proptest::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use stktagg_wire::{
    DataSpec, DataType as T, DictValue, FreqCtr, Key, KeyType, TableDefinition, Value,
};

const P: u32 = 10_000;

fn spec(data_type: T, period_ms: u32, nbelem: u32) -> DataSpec {
    DataSpec {
        data_type,
        period_ms,
        nbelem,
    }
}

fn def(name: &str, expire_ms: u32, data: Vec<DataSpec>) -> TableDefinition {
    TableDefinition {
        table_id: 7,
        name: Bytes::copy_from_slice(name.as_bytes()),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms,
        data,
    }
}

/// `http_req_cnt, http_req_rate(10s)` with a 30 s expiry.
fn simple(name: &str) -> TableDefinition {
    def(
        name,
        30_000,
        vec![spec(T::HttpReqCnt, 0, 0), spec(T::HttpReqRate, P, 0)],
    )
}

fn ip(n: u8) -> Key {
    Key::from_ipv4(std::net::Ipv4Addr::new(10, 0, 0, n))
}

fn freq(age: u32, curr: u32, prev: u32) -> Value {
    Value::Freq(FreqCtr { age, curr, prev })
}

#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Waker for CountingWaker {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn sub(store: &Store, outputs: bool, relays: bool) -> (Subscription, Arc<CountingWaker>) {
    let w = Arc::new(CountingWaker::default());
    let s = store.subscribe(SubscriptionFilter { outputs, relays }, w.clone());
    (s, w)
}

fn uint(v: &Value) -> u32 {
    match v {
        Value::Uint(x) => *x,
        other => panic!("not a uint: {other:?}"),
    }
}

fn published(v: &Value) -> FreqCtr {
    match v {
        Value::Freq(f) => *f,
        other => panic!("not a rate: {other:?}"),
    }
}

fn s(n: u16) -> SourceId {
    SourceId(n)
}

#[test]
fn store_is_send_and_sync() {
    fn check<X: Send + Sync>() {}
    check::<Store>();
    check::<InputHandle>();
    check::<RelayHandle>();
    check::<Subscription>();
}

#[test]
fn every_data_type_combines_per_spec() {
    let store = Store::default();
    let d = def(
        "/t.in",
        0,
        vec![
            spec(T::ServerId, 0, 0),
            spec(T::Gpt0, 0, 0),
            spec(T::Gpc0, 0, 0),
            spec(T::ConnCur, 0, 0),
            spec(T::BytesInCnt, 0, 0),
            spec(T::ServerKey, 0, 0),
            spec(T::Gpt, 0, 2),
            spec(T::Gpc, 0, 3),
            spec(T::GpcRate, 5000, 2),
        ],
    );
    let a = store.register_input(s(0), b"/t.in", &d, b"/t.out").unwrap();
    let b = store.register_input(s(1), b"/t.in", &d, b"/t.out").unwrap();
    assert!(a.mismatches().is_empty());
    let vals =
        |sid: i32, gpt0: u32, gpc0: u32, bytes: u64, srv: &'static str, rates: (u32, u32)| {
            vec![
                Value::Sint(sid),
                Value::Uint(gpt0),
                Value::Uint(gpc0),
                Value::Uint(2),
                Value::Ull(bytes),
                Value::Dict(DictValue::Name(Bytes::from_static(srv.as_bytes()))),
                Value::UintArray(vec![gpt0, 1]),
                Value::UintArray(vec![1, 2, gpc0]),
                Value::FreqArray(vec![
                    FreqCtr {
                        age: 0,
                        curr: rates.0,
                        prev: 0,
                    },
                    FreqCtr {
                        age: 0,
                        curr: rates.1,
                        prev: 0,
                    },
                ]),
            ]
        };
    let k = ip(1);
    store
        .apply(
            &a,
            &k,
            &vals(3, 7, u32::MAX - 1, 5_000_000_000, "s1", (4, 0)),
            None,
            1000,
        )
        .unwrap();
    store
        .apply(
            &b,
            &k,
            &vals(-2, 5, 10, u64::MAX - 1, "s2", (6, 1)),
            None,
            1000,
        )
        .unwrap();
    let out = store.read(a.output(), &k, 1000).unwrap();
    assert_eq!(out.expire_ms, None);
    assert_eq!(
        out.values,
        vec![
            // Latest wins: b was received last.
            Value::Sint(-2),
            // Tags: max.
            Value::Uint(7),
            // Counters: saturating sum at 32 bits.
            Value::Uint(u32::MAX),
            Value::Uint(4),
            // 64-bit counters saturate at 64 bits.
            Value::Ull(u64::MAX),
            Value::Dict(DictValue::Name(Bytes::from_static(b"s2"))),
            // Arrays element-wise: gpt max, gpc sum.
            Value::UintArray(vec![7, 1]),
            Value::UintArray(vec![2, 4, u32::MAX]),
            Value::FreqArray(vec![rules::publish_rate(10, 10), rules::publish_rate(1, 1)]),
        ]
    );
    // A later update from a wins "latest" back.
    store
        .apply(&a, &k, &vals(3, 7, 1, 1, "s1", (4, 0)), None, 1001)
        .unwrap();
    let out = store.read(a.output(), &k, 1001).unwrap();
    assert_eq!(out.values[0], Value::Sint(3));
    assert_eq!(
        out.values[5],
        Value::Dict(DictValue::Name(Bytes::from_static(b"s1")))
    );
    assert_eq!(out.values[2], Value::Uint(11));
}

#[test]
fn an_update_replaces_the_source_contribution() {
    let store = Store::default();
    let d = simple("/x.in");
    let a = store.register_input(s(0), b"/x.in", &d, b"/x.out").unwrap();
    let b = store.register_input(s(1), b"/x.in", &d, b"/x.out").unwrap();
    let k = ip(1);
    let up = |h: &InputHandle, cnt: u32| {
        store
            .apply(h, &k, &[Value::Uint(cnt), freq(0, 0, 0)], None, 0)
            .unwrap()
    };
    assert_eq!(up(&a, 10), Applied::Changed);
    assert_eq!(up(&b, 5), Applied::Changed);
    assert_eq!(up(&a, 12), Applied::Changed);
    // Replaying the same snapshot changes nothing.
    assert_eq!(up(&a, 12), Applied::Unchanged);
    assert_eq!(uint(&store.read(a.output(), &k, 0).unwrap().values[0]), 17);
    // A new session's registration reuses the contribution: still 17, not 29.
    let a2 = store.register_input(s(0), b"/x.in", &d, b"/x.out").unwrap();
    assert_eq!(up(&a2, 12), Applied::Unchanged);
    assert_eq!(uint(&store.read(a.output(), &k, 0).unwrap().values[0]), 17);
}

#[test]
fn clear_removes_entries_and_the_next_update_starts_from_its_source() {
    let store = Store::default();
    let d = simple("/x.in");
    let a = store.register_input(s(0), b"/x.in", &d, b"/x.out").unwrap();
    let b = store.register_input(s(1), b"/x.in", &d, b"/x.out").unwrap();
    let up = |h: &InputHandle, k: &Key, cnt: u32| {
        store
            .apply(h, k, &[Value::Uint(cnt), freq(0, cnt, 0)], None, 0)
            .unwrap();
    };
    for k in [ip(1), ip(2)] {
        up(&a, &k, 10);
        up(&b, &k, 5);
    }
    let out = a.output();
    assert_eq!(store.clear(out, Some(&ip(1))), 1);
    assert_eq!(store.clear(out, Some(&ip(1))), 0, "already gone");
    assert!(store.read(out, &ip(1), 0).is_none());
    assert_eq!(uint(&store.read(out, &ip(2), 0).unwrap().values[0]), 15);
    // Every contribution went with the entry: b's next update is the sum.
    up(&b, &ip(1), 6);
    assert_eq!(uint(&store.read(out, &ip(1), 0).unwrap().values[0]), 6);
    assert_eq!(store.clear(out, None), 2);
    assert_eq!(store.entry_count(out), Some(0));
    // Rate refresh and expiry find nothing to trip on.
    store.refresh_rates(1_000);
    store.expire(1_000_000);
    assert_eq!(store.clear(TableId(999), None), 0);
}

#[test]
fn rates_are_summed_at_one_instant_and_published_to_decay() {
    let store = Store::default();
    let d = simple("/r.in");
    let a = store.register_input(s(0), b"/r.in", &d, b"/r.out").unwrap();
    let b = store.register_input(s(1), b"/r.in", &d, b"/r.out").unwrap();
    let k = ip(1);
    let t0 = 1_000_000u64;
    // The fact sheet's counter (reads 80 at t0) and a fresh one reading 20.
    store
        .apply(&a, &k, &[Value::Uint(1), freq(5000, 30, 100)], None, t0)
        .unwrap();
    store
        .apply(&b, &k, &[Value::Uint(1), freq(0, 20, 0)], None, t0)
        .unwrap();
    let out = store.read(a.output(), &k, t0).unwrap();
    let f = published(&out.values[1]);
    // 100 in all, 30 + 20 of it in the sources' current periods.
    assert_eq!(
        f,
        FreqCtr {
            age: 0,
            curr: 50,
            prev: 50
        }
    );
    // Evaluate the published counter as a stock HAProxy would after receiving it at t0.
    let rx = StoredFreq::on_receipt(f, t0 as u32);
    for (t, want) in [
        (0, 100),
        (1000, 95),
        (5000, 75),
        (9999, 50),
        (10_000, 50),
        (15_000, 25),
        (30_000, 0),
    ] {
        assert_eq!(read_rate(rx, P, t0 as u32 + t), want, "at +{t} ms");
    }
    // Read later, the sum is re-evaluated: a's counter decays (30 in the previous
    // period, 8 s left of it) and b keeps its 20 for the rest of its period.
    let later = store.read(a.output(), &k, t0 + 7000).unwrap();
    assert_eq!(
        published(&later.values[1]),
        FreqCtr {
            age: 0,
            curr: 20,
            prev: 24
        }
    );
}

#[test]
fn rates_with_another_period_are_excluded_and_reported() {
    let store = Store::default();
    let d = simple("/p.in");
    let mut other = simple("/p.in");
    other.data[1].period_ms = 5000;
    let a = store.register_input(s(0), b"/p.in", &d, b"/p.out").unwrap();
    let b = store
        .register_input(s(1), b"/p.in", &other, b"/p.out")
        .unwrap();
    assert_eq!(
        b.mismatches(),
        &[Mismatch::Period {
            data_type: T::HttpReqRate,
            input_ms: 5000,
            output_ms: P
        }]
    );
    let k = ip(2);
    store
        .apply(&a, &k, &[Value::Uint(1), freq(0, 7, 0)], None, 50)
        .unwrap();
    store
        .apply(&b, &k, &[Value::Uint(2), freq(0, 1000, 0)], None, 50)
        .unwrap();
    let out = store.read(a.output(), &k, 50).unwrap();
    assert_eq!(uint(&out.values[0]), 3);
    assert_eq!(published(&out.values[1]).curr, 7);
    assert_eq!(published(&out.values[1]).prev, 0);
    // The excluded rate is still kept for teach-back.
    let taught = store.contributions_of(s(1), 50);
    assert_eq!(taught[0].entries[0].values[1], freq(0, 1000, 0));
}

#[test]
fn definitions_map_by_type_and_key_mismatch_is_refused() {
    let store = Store::default();
    let d = simple("/m.in");
    store.register_input(s(0), b"/m.in", &d, b"/m.out").unwrap();
    let mut bad = simple("/m.in");
    bad.key_type = KeyType::String;
    bad.key_len = 33;
    let err = store
        .register_input(s(1), b"/m.in", &bad, b"/m.out")
        .unwrap_err();
    assert!(
        matches!(err, StoreError::KeyMismatch { got_len: 33, .. }),
        "{err}"
    );
    // Another data type list: the output keeps its own, extras are ignored.
    let extra = def(
        "/m.in",
        30_000,
        vec![spec(T::Gpc0, 0, 0), spec(T::HttpReqCnt, 0, 0)],
    );
    let h = store
        .register_input(s(2), b"/m.in", &extra, b"/m.out")
        .unwrap();
    assert_eq!(
        h.mismatches(),
        &[Mismatch::Missing(T::HttpReqRate), Mismatch::Extra(T::Gpc0)]
    );
    let k = ip(3);
    store
        .apply(&h, &k, &[Value::Uint(99), Value::Uint(4)], None, 0)
        .unwrap();
    let out = store.read(h.output(), &k, 0).unwrap();
    assert_eq!(uint(&out.values[0]), 4);
    assert_eq!(out.values.len(), 2);
    // Wrong value count or kind is an error and changes nothing.
    let e = store.apply(&h, &k, &[Value::Uint(1)], None, 0).unwrap_err();
    assert_eq!(
        e,
        StoreError::ValueCount {
            expected: 2,
            got: 1
        }
    );
    let e = store
        .apply(&h, &k, &[Value::Uint(1), Value::Ull(1)], None, 0)
        .unwrap_err();
    assert_eq!(
        e,
        StoreError::ValueKind {
            data_type: T::HttpReqCnt
        }
    );
    let e = store
        .apply(
            &h,
            &Key::from_str_bytes("toolongforipv4"),
            &[Value::Uint(1), Value::Uint(1)],
            None,
            0,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::BadKey { len: 14, .. }));
    assert_eq!(uint(&store.read(h.output(), &k, 0).unwrap().values[0]), 4);
}

#[test]
fn string_keys_are_truncated_like_haproxy() {
    let store = Store::default();
    let mut d = simple("/s.in");
    d.key_type = KeyType::String;
    d.key_len = 4;
    let h = store.register_input(s(0), b"/s.in", &d, b"/s.out").unwrap();
    store
        .apply(
            &h,
            &Key::from_str_bytes("abcdef"),
            &[Value::Uint(1), freq(0, 0, 0)],
            None,
            0,
        )
        .unwrap();
    store
        .apply(
            &h,
            &Key::from_str_bytes("abcxyz"),
            &[Value::Uint(2), freq(0, 0, 0)],
            None,
            0,
        )
        .unwrap();
    assert_eq!(store.keys(h.output()), vec![Key::from_str_bytes("abc")]);
}

#[test]
fn full_resync_replaces_a_source_contributions() {
    let store = Store::default();
    let d = simple("/z.in");
    let a = store.register_input(s(0), b"/z.in", &d, b"/z.out").unwrap();
    let b = store.register_input(s(1), b"/z.in", &d, b"/z.out").unwrap();
    let out = a.output();
    let v = |n| [Value::Uint(n), freq(0, 0, 0)];
    for k in 1..=3 {
        store.apply(&a, &ip(k), &v(10), None, 0).unwrap();
    }
    store.apply(&b, &ip(2), &v(1), None, 0).unwrap();
    // Nothing is dropped by an end without a begin.
    assert_eq!(store.end_resync(s(0), 0), 0);

    store.begin_resync(s(0), 100);
    assert_eq!(store.resync_since(s(0)), Some(100));
    // Until the resync ends, the old contributions still count.
    assert_eq!(uint(&store.read(out, &ip(3), 100).unwrap().values[0]), 10);
    // A new session re-registers, then the source sends only key 1.
    let a2 = store.register_input(s(0), b"/z.in", &d, b"/z.out").unwrap();
    store.apply(&a2, &ip(1), &v(11), None, 150).unwrap();
    let (sub, _w) = sub(&store, true, false);
    assert_eq!(store.end_resync(s(0), 200), 2);
    assert_eq!(store.resync_since(s(0)), None);
    assert_eq!(uint(&store.read(out, &ip(1), 200).unwrap().values[0]), 11);
    assert_eq!(uint(&store.read(out, &ip(2), 200).unwrap().values[0]), 1);
    assert!(store.read(out, &ip(3), 200).is_none());
    let mut dirty: Vec<Key> = sub.drain(10).into_iter().map(|(_, k)| k).collect();
    dirty.sort();
    assert_eq!(dirty, vec![ip(2), ip(3)]);
}

#[test]
fn contributions_expire() {
    let store = Store::default();
    let d = simple("/e.in");
    let a = store.register_input(s(0), b"/e.in", &d, b"/e.out").unwrap();
    let b = store.register_input(s(1), b"/e.in", &d, b"/e.out").unwrap();
    let out = a.output();
    let v = |n| [Value::Uint(n), freq(0, 0, 0)];
    store.apply(&a, &ip(1), &v(1), None, 1000).unwrap(); // expires at 31 000
    store.apply(&b, &ip(1), &v(2), Some(5000), 1000).unwrap(); // timed: 6000
    store.apply(&b, &ip(2), &v(3), Some(1 << 31), 1000).unwrap(); // clamped: 31 000
    assert_eq!(
        store.read(out, &ip(1), 1000).unwrap().expire_ms,
        Some(30_000)
    );
    let (sub, w) = sub(&store, true, false);
    // Subscribing wakes nobody: there is nothing to take yet.
    assert_eq!(w.count(), 0);
    assert_eq!(store.expire(5999), 0);
    assert_eq!(store.expire(6000), 1);
    assert_eq!(uint(&store.read(out, &ip(1), 6000).unwrap().values[0]), 1);
    assert_eq!(sub.drain(10), vec![(out, ip(1))]);
    assert_eq!(w.count(), 1, "an expiry is a change");
    // a refreshes key 1 at 20 000: its contribution now lives until 50 000.
    store.apply(&a, &ip(1), &v(1), None, 20_000).unwrap();
    assert_eq!(store.expire(31_000), 1);
    assert!(store.read(out, &ip(2), 31_000).is_none());
    assert!(store.read(out, &ip(1), 31_000).is_some());
    assert_eq!(store.expire(49_999), 0);
    assert_eq!(store.expire(50_000), 1);
    assert_eq!(store.entry_count(out), Some(0));
    // Tables without expiry keep contributions forever, timed field or not.
    let forever = def("/f.in", 0, vec![spec(T::Gpc0, 0, 0)]);
    let f = store
        .register_input(s(0), b"/f.in", &forever, b"/f.out")
        .unwrap();
    store
        .apply(&f, &ip(9), &[Value::Uint(1)], Some(10), 0)
        .unwrap();
    assert_eq!(store.expire(u64::from(u32::MAX) * 4), 0);
    assert_eq!(store.read(f.output(), &ip(9), 0).unwrap().expire_ms, None);
}

#[test]
fn a_key_changed_a_thousand_times_is_sent_once_with_its_latest_value() {
    let store = Store::default();
    let d = simple("/c.in");
    let a = store.register_input(s(0), b"/c.in", &d, b"/c.out").unwrap();
    let (sub, w) = sub(&store, true, false);
    // The table exists but nothing changed yet: nothing to take, nobody woken.
    assert_eq!(w.count(), 0);
    for n in 1..=1000u32 {
        let r = store
            .apply(
                &a,
                &ip(1),
                &[Value::Uint(n), freq(0, 0, 0)],
                None,
                u64::from(n),
            )
            .unwrap();
        assert_eq!(r, Applied::Changed);
    }
    assert_eq!(sub.pending(), 1);
    assert_eq!(w.count(), 1, "woken once, by the first change");
    let dirty = sub.drain(100);
    assert_eq!(dirty, vec![(a.output(), ip(1))]);
    assert_eq!(
        uint(&store.read(a.output(), &ip(1), 1000).unwrap().values[0]),
        1000
    );
    // Drained: the next change wakes again.
    store
        .apply(&a, &ip(1), &[Value::Uint(1001), freq(0, 0, 0)], None, 1001)
        .unwrap();
    assert_eq!(w.count(), 2);
    // drain(max) hands out at most max keys, oldest first.
    for k in 2..=5 {
        store
            .apply(&a, &ip(k), &[Value::Uint(1), freq(0, 0, 0)], None, 1001)
            .unwrap();
    }
    let first: Vec<Key> = sub.drain(2).into_iter().map(|x| x.1).collect();
    assert_eq!(first, vec![ip(1), ip(2)]);
    assert_eq!(sub.pending(), 3);
}

#[test]
fn subscriptions_follow_new_tables_filter_and_unsubscribe_on_drop() {
    let store = Store::default();
    let (outs, wo) = sub(&store, true, false);
    let (rels, wr) = sub(&store, false, true);
    assert_eq!(store.stats().subscriptions, 2);
    let a = store
        .register_input(s(0), b"/n.in", &simple("/n.in"), b"/n.out")
        .unwrap();
    let r = store
        .register_relay(1, s(9), &simple("/n.l2"), b"/n.l2")
        .unwrap();
    store.relay_replace(1, s(9), 0);
    // New tables reach a subscription with their first change, not before.
    assert_eq!((wo.count(), wr.count()), (0, 0));
    assert_eq!(store.tables().len(), 2);
    let v = [Value::Uint(1), freq(0, 0, 0)];
    store.apply(&a, &ip(1), &v, None, 0).unwrap();
    store.relay_apply(&r, &ip(2), &v, None, 0).unwrap();
    assert_eq!((wo.count(), wr.count()), (1, 1));
    // Each sees only the tables its filter names.
    assert_eq!(outs.drain(10), vec![(a.output(), ip(1))]);
    assert_eq!(rels.drain(10), vec![(r.table(), ip(2))]);
    let info = store.table_info(a.output()).unwrap();
    assert_eq!(info.name, Bytes::from_static(b"/n.out"));
    assert_eq!(info.definition.table_id, a.output().0);
    assert_eq!(info.definition.expire_ms, 30_000);
    // A late subscriber gets no past change; a full push marks every key of the
    // matching tables (and wakes it), in table order.
    let (late, wl) = sub(&store, true, true);
    assert_eq!(late.pending(), 0);
    assert_eq!(wl.count(), 0);
    assert_eq!(store.mark_all(&late), 2);
    assert_eq!(wl.count(), 1);
    assert_eq!(
        late.drain(10),
        vec![(a.output(), ip(1)), (r.table(), ip(2))]
    );
    // And it follows existing tables from their next change on.
    store.apply(&a, &ip(3), &v, None, 0).unwrap();
    assert_eq!(outs.pending(), 1);
    assert_eq!(rels.pending(), 0);
    assert_eq!(late.drain(10), vec![(a.output(), ip(3))]);
    assert_eq!(store.mark_all(&rels), 1);
    drop(outs);
    drop(late);
    assert_eq!(store.stats().subscriptions, 1);
}

#[test]
fn relay_failover_replaces_the_relayed_data() {
    let store = Store::default();
    let d = simple("/g.l2");
    let m1 = store.register_relay(1, s(10), &d, b"/g.l2").unwrap();
    let m2 = store.register_relay(1, s(11), &d, b"/g.l2").unwrap();
    assert_eq!(m1.table(), m2.table());
    // Registering elects nobody; the section's election relays m1.
    assert_eq!(store.active_member(1), None);
    store.relay_replace(1, s(10), 0);
    assert_eq!(store.active_member(1), Some(s(10)));
    let t = m1.table();
    let v = |n| [Value::Uint(n), freq(100, 40, 10)];
    store.apply_relay_all(&m1, &[(1, 100), (2, 200)], 0);
    // The standby's updates are not heard.
    assert_eq!(
        store.relay_apply(&m2, &ip(1), &v(7), None, 0).unwrap(),
        Applied::Ignored
    );
    assert_eq!(uint(&store.read(t, &ip(1), 0).unwrap().values[0]), 100);

    // Failover: m2 becomes active and resyncs; it only knows key 1.
    store.relay_replace(1, s(11), 1000);
    assert_eq!(store.active_member(1), Some(s(11)));
    assert_eq!(
        store.relay_apply(&m1, &ip(2), &v(999), None, 1000).unwrap(),
        Applied::Ignored
    );
    store.relay_apply(&m2, &ip(1), &v(150), None, 1000).unwrap();
    // Until its resync ends, the old data stays (no gap for destinations).
    assert_eq!(uint(&store.read(t, &ip(2), 1000).unwrap().values[0]), 200);
    // Relay rates pass through, re-aged.
    let e = store.read(t, &ip(1), 1500).unwrap();
    assert_eq!(uint(&e.values[0]), 150);
    assert_eq!(e.values[1], freq(600, 40, 10));
    assert_eq!(store.end_resync(s(11), 1100), 1);
    assert!(store.read(t, &ip(2), 1100).is_none());
    // Exactly one contribution: never counted twice.
    let detail = store.detail(t, &ip(1), 1100).unwrap();
    assert_eq!(detail.len(), 1);
    assert_eq!(detail[0].source, s(11));
    assert_eq!(store.entry_count(t), Some(1));
}

impl Store {
    /// Test helper: the active member sends `(key, count)` pairs.
    fn apply_relay_all(&self, h: &RelayHandle, kv: &[(u8, u32)], now: u64) {
        for &(k, n) in kv {
            let r = self
                .relay_apply(h, &ip(k), &[Value::Uint(n), freq(100, 40, 10)], None, now)
                .unwrap();
            assert_eq!(r, Applied::Changed);
        }
    }
}

#[test]
fn teach_back_returns_the_source_entries_as_sent() {
    let store = Store::default();
    let d = def(
        "/tb.in",
        30_000,
        vec![
            spec(T::Gpc0, 0, 0),
            spec(T::HttpReqRate, P, 0),
            spec(T::Gpc, 0, 2),
        ],
    );
    let out_def = def(
        "/tb.in",
        30_000,
        vec![spec(T::HttpReqRate, P, 0), spec(T::Gpc, 0, 3)],
    );
    // The output comes from another source's definition: it lacks gpc0 and has
    // three gpc elements.
    store
        .register_input(s(1), b"/tb.in", &out_def, b"/tb.out")
        .unwrap();
    let a = store
        .register_input(s(0), b"/tb.in", &d, b"/tb.out")
        .unwrap();
    store
        .apply(
            &a,
            &ip(1),
            &[
                Value::Uint(5),
                freq(2000, 30, 100),
                Value::UintArray(vec![1, 2]),
            ],
            None,
            10_000,
        )
        .unwrap();
    let taught = store.contributions_of(s(0), 14_000);
    assert_eq!(taught.len(), 1);
    assert_eq!(taught[0].input_name, Bytes::from_static(b"/tb.in"));
    assert_eq!(taught[0].definition, d);
    assert_eq!(
        taught[0].entries,
        vec![TaughtEntry {
            key: ip(1),
            // gpc0 is not stored by the output: it comes back as 0.
            values: vec![
                Value::Uint(0),
                freq(6000, 30, 100),
                Value::UintArray(vec![1, 2])
            ],
            expire_ms: Some(26_000),
        }]
    );
    assert!(store.contributions_of(s(1), 14_000)[0].entries.is_empty());
    assert!(store.contributions_of(s(7), 14_000).is_empty());
}

#[test]
fn dropping_a_source_removes_its_contributions_and_refuses_its_handles() {
    let store = Store::default();
    let d = simple("/d.in");
    let a = store.register_input(s(0), b"/d.in", &d, b"/d.out").unwrap();
    let b = store.register_input(s(1), b"/d.in", &d, b"/d.out").unwrap();
    let v = |n| [Value::Uint(n), freq(0, 0, 0)];
    store.apply(&a, &ip(1), &v(1), None, 0).unwrap();
    store.apply(&b, &ip(1), &v(2), None, 0).unwrap();
    store.apply(&a, &ip(2), &v(3), None, 0).unwrap();
    assert_eq!(store.drop_source(s(0), 5), 2);
    assert_eq!(
        uint(&store.read(a.output(), &ip(1), 5).unwrap().values[0]),
        2
    );
    assert!(store.read(a.output(), &ip(2), 5).is_none());
    assert_eq!(
        store.apply(&a, &ip(1), &v(1), None, 6).unwrap_err(),
        StoreError::SourceDropped(0)
    );
    assert_eq!(store.stats().inputs, 1);
}

#[test]
fn refresh_rates_republishes_while_the_sum_differs_then_forgets() {
    let store = Store::default();
    let d = simple("/rr.in");
    let a = store
        .register_input(s(0), b"/rr.in", &d, b"/rr.out")
        .unwrap();
    let (sub, _) = sub(&store, true, false);
    let t0 = 100_000u64;
    // The fact sheet's counter: 5 s into its period, 30 now and 100 before (reads 80).
    store
        .apply(
            &a,
            &ip(1),
            &[Value::Uint(50), freq(5000, 30, 100)],
            None,
            t0,
        )
        .unwrap();
    sub.drain(10);
    // Right away the published counter reads the true sum: nothing to do.
    assert_eq!(store.refresh_rates(t0), 0);
    let e = store.read(a.output(), &ip(1), t0).unwrap();
    assert_eq!(
        published(&e.values[1]),
        FreqCtr {
            age: 0,
            curr: 30,
            prev: 50
        }
    );
    // 2 s later the source reads 30 + 100·3/10 = 60, the published counter
    // 30 + 50·8/10 = 70 (its phase differs): re-published as 30 + 30.
    assert_eq!(store.refresh_rates(t0 + 2000), 1);
    assert_eq!(sub.drain(10), vec![(a.output(), ip(1))]);
    let e = store.read(a.output(), &ip(1), t0 + 2000).unwrap();
    assert_eq!(
        published(&e.values[1]),
        FreqCtr {
            age: 0,
            curr: 30,
            prev: 30
        }
    );
    // At +12 s the source's 30 are in its previous period (9 left), while the
    // counter published at +2 s still holds its 30 current: re-published.
    assert_eq!(store.refresh_rates(t0 + 12_000), 1);
    let e = store.read(a.output(), &ip(1), t0 + 12_000).unwrap();
    assert_eq!(
        published(&e.values[1]),
        FreqCtr {
            age: 0,
            curr: 0,
            prev: 9
        }
    );
    sub.drain(10);
    // Long after, both the true rate and the published counter are 0: nothing to
    // send, and the key is forgotten.
    assert_eq!(store.refresh_rates(t0 + 40_000), 0);
    assert_eq!(store.refresh_rates(t0 + 41_000), 0);
    assert_eq!(sub.pending(), 0);
    // New activity brings it back; a counter whose period starts when it is
    // published decays exactly as the source's: no re-publication is needed.
    store
        .apply(
            &a,
            &ip(1),
            &[Value::Uint(51), freq(0, 1, 0)],
            None,
            t0 + 50_000,
        )
        .unwrap();
    assert_eq!(sub.drain(10), vec![(a.output(), ip(1))]);
    assert_eq!(store.refresh_rates(t0 + 55_000), 0);
    assert_eq!(store.refresh_rates(t0 + 61_000), 0);
    assert_eq!(store.refresh_rates(t0 + 71_000), 0);
    assert_eq!(sub.pending(), 0);
}

#[test]
fn unchanged_updates_keep_destination_copies_alive() {
    let store = Store::default();
    let d = def("/k.in", 10_000, vec![spec(T::Gpt0, 0, 0)]);
    let a = store.register_input(s(0), b"/k.in", &d, b"/k.out").unwrap();
    let (sub, _) = sub(&store, true, false);
    store.apply(&a, &ip(1), &[Value::Uint(3)], None, 0).unwrap();
    sub.drain(10);
    store
        .apply(&a, &ip(1), &[Value::Uint(3)], None, 4000)
        .unwrap();
    assert_eq!(sub.pending(), 0);
    // Past half the expiry since it was last sent: re-sent although unchanged.
    assert_eq!(
        store
            .apply(&a, &ip(1), &[Value::Uint(3)], None, 5000)
            .unwrap(),
        Applied::Unchanged
    );
    assert_eq!(sub.pending(), 1);
}

#[test]
fn introspection_lists_tables_entries_and_contributions() {
    let store = Store::default();
    let d = simple("/i.in");
    let a = store.register_input(s(3), b"/i.in", &d, b"/i.out").unwrap();
    let b = store
        .register_input(s(4), b"/i.other", &d, b"/i.out")
        .unwrap();
    store
        .apply(&a, &ip(1), &[Value::Uint(1), freq(0, 2, 0)], None, 0)
        .unwrap();
    store
        .apply(&b, &ip(1), &[Value::Uint(4), freq(0, 3, 0)], None, 10)
        .unwrap();
    let list = store.table_summaries();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].used, 1);
    assert_eq!(list[0].key_type, KeyType::Ipv4);
    let dump = store.dump(a.output(), 10);
    assert_eq!(dump.len(), 1);
    assert_eq!(uint(&dump[0].1.values[0]), 5);
    assert_eq!(dump[0].1.expire_ms, Some(30_000));
    let detail = store.detail(a.output(), &ip(1), 10).unwrap();
    assert_eq!(detail.len(), 2);
    assert_eq!(detail[0].source, s(3));
    assert_eq!(detail[0].input_name, Bytes::from_static(b"/i.in"));
    assert_eq!(detail[0].expire_ms, Some(29_990));
    assert_eq!(detail[1].input_name, Bytes::from_static(b"/i.other"));
    assert_eq!(detail[1].values[0], Value::Uint(4));
    assert_eq!(store.output_by_name(b"/i.out"), Some(a.output()));
    assert_eq!(store.stats().entries, 1);
}

#[test]
fn table_limit_refuses_new_keys() {
    let store = Store::new(StoreOptions {
        max_entries_per_table: 2,
        ..StoreOptions::default()
    });
    let a = store
        .register_input(s(0), b"/l.in", &simple("/l.in"), b"/l.out")
        .unwrap();
    let v = [Value::Uint(1), freq(0, 0, 0)];
    store.apply(&a, &ip(1), &v, None, 0).unwrap();
    store.apply(&a, &ip(2), &v, None, 0).unwrap();
    assert!(matches!(
        store.apply(&a, &ip(3), &v, None, 0),
        Err(StoreError::TableFull { limit: 2, .. })
    ));
    // Existing keys still update.
    store.apply(&a, &ip(2), &v, None, 1).unwrap();
    // A table's own limit (a rule's `size`): raised, the new key fits; lowered
    // below what it holds, nothing is evicted and new keys wait for room.
    store.set_limit(a.output(), 3);
    store.apply(&a, &ip(3), &v, None, 2).unwrap();
    assert_eq!(store.table_summaries()[0].size, 3);
    store.set_limit(a.output(), 1);
    assert_eq!(store.entry_count(a.output()), Some(3));
    assert!(matches!(
        store.apply(&a, &ip(4), &v, None, 3),
        Err(StoreError::TableFull { limit: 1, .. })
    ));
    store.apply(&a, &ip(1), &v, None, 3).unwrap();
}

#[test]
fn concurrent_sources_sum_exactly() {
    let store = Arc::new(Store::default());
    let d = def("/cc.in", 0, vec![spec(T::HttpReqCnt, 0, 0)]);
    let threads: Vec<_> = (0..4u16)
        .map(|src| {
            let store = store.clone();
            let d = d.clone();
            std::thread::spawn(move || {
                let h = store
                    .register_input(s(src), b"/cc.in", &d, b"/cc.out")
                    .unwrap();
                for round in 1..=50u32 {
                    for k in 0..50u8 {
                        store
                            .apply(&h, &ip(k), &[Value::Uint(round * 10)], None, 0)
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let out = store.output_by_name(b"/cc.out").unwrap();
    for k in 0..50u8 {
        assert_eq!(uint(&store.read(out, &ip(k), 0).unwrap().values[0]), 2000);
    }
}

/// One update of the property tests: (source, key, count, bytes, tag, rate).
type Upd = (u16, u8, u32, u64, u32, (u32, u32, u32));

fn prop_def() -> TableDefinition {
    def(
        "/pp.in",
        60_000,
        vec![
            spec(T::Gpt0, 0, 0),
            spec(T::HttpReqCnt, 0, 0),
            spec(T::BytesInCnt, 0, 0),
            spec(T::HttpReqRate, P, 0),
            spec(T::Gpc, 0, 2),
        ],
    )
}

fn prop_values(u: &Upd) -> Vec<Value> {
    let (_, _, cnt, bytes, tag, (age, curr, prev)) = *u;
    vec![
        Value::Uint(tag),
        Value::Uint(cnt),
        Value::Ull(bytes),
        freq(age, curr, prev),
        Value::UintArray(vec![cnt, tag]),
    ]
}

fn run(updates: &[Upd], now: u64) -> (Store, Vec<Applied>) {
    let store = Store::default();
    let d = prop_def();
    let handles: Vec<InputHandle> = (0..3)
        .map(|i| {
            store
                .register_input(s(i), b"/pp.in", &d, b"/pp.out")
                .unwrap()
        })
        .collect();
    let results = updates
        .iter()
        .map(|u| {
            store
                .apply(&handles[u.0 as usize], &ip(u.1), &prop_values(u), None, now)
                .unwrap()
        })
        .collect();
    (store, results)
}

fn snapshot(store: &Store, now: u64) -> Vec<(Key, Vec<Value>)> {
    let Some(t) = store.output_by_name(b"/pp.out") else {
        return Vec::new();
    };
    let mut v: Vec<(Key, Vec<Value>)> = store
        .dump(t, now)
        .into_iter()
        .map(|(k, e)| (k, e.values))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The last update per (source, key), in the stream's order.
fn finals(updates: &[Upd]) -> Vec<Upd> {
    let mut out: Vec<Upd> = Vec::new();
    for u in updates.iter().rev() {
        if !out.iter().any(|x| x.0 == u.0 && x.1 == u.1) {
            out.push(*u);
        }
    }
    out.reverse();
    out
}

fn upd() -> impl Strategy<Value = Upd> {
    (
        0u16..3,
        0u8..4,
        prop_oneof![any::<u32>(), 0u32..1000],
        prop_oneof![any::<u64>(), 0u64..1000],
        any::<u32>(),
        (any::<u32>(), 0u32..1_000_000, 0u32..1_000_000),
    )
}

proptest! {
    #[test]
    fn the_aggregate_depends_only_on_each_source_latest_snapshot(
        updates in prop::collection::vec(upd(), 1..40),
        seed in any::<u64>(),
        now in any::<u64>(),
    ) {
        let now = now >> 1;
        let (a, _) = run(&updates, now);
        // The same final snapshots, in a different order, with no history.
        let mut f = finals(&updates);
        let n = f.len();
        f.rotate_left((seed as usize) % n);
        if seed & 1 == 1 {
            f.reverse();
        }
        let (b, _) = run(&f, now);
        prop_assert_eq!(snapshot(&a, now), snapshot(&b, now));
    }

    #[test]
    fn replaying_a_snapshot_never_changes_the_aggregate(
        updates in prop::collection::vec(upd(), 1..40),
        now in any::<u64>(),
    ) {
        let now = now >> 1;
        let f = finals(&updates);
        let mut stream = updates.clone();
        stream.extend_from_slice(&f);
        let (a, results) = run(&stream, now);
        let (b, _) = run(&updates, now);
        prop_assert_eq!(snapshot(&a, now), snapshot(&b, now));
        for r in &results[updates.len()..] {
            prop_assert_eq!(*r, Applied::Unchanged);
        }
    }

    #[test]
    fn sums_saturate_per_width(
        updates in prop::collection::vec(upd(), 1..40),
    ) {
        let (store, _) = run(&updates, 0);
        let snap = snapshot(&store, 0);
        for (key, values) in snap {
            let mine: Vec<Upd> = finals(&updates).into_iter().filter(|u| ip(u.1) == key).collect();
            let cnt: u128 = mine.iter().map(|u| u128::from(u.2)).sum();
            let bytes: u128 = mine.iter().map(|u| u128::from(u.3)).sum();
            let tag = mine.iter().map(|u| u.4).max().unwrap_or(0);
            prop_assert_eq!(&values[0], &Value::Uint(tag));
            prop_assert_eq!(&values[1], &Value::Uint(cnt.min(u128::from(u32::MAX)) as u32));
            prop_assert_eq!(&values[2], &Value::Ull(bytes.min(u128::from(u64::MAX)) as u64));
            let tags: u128 = mine.iter().map(|u| u128::from(u.4)).sum();
            let sat = |x: u128| x.min(u128::from(u32::MAX)) as u32;
            prop_assert_eq!(&values[4], &Value::UintArray(vec![sat(cnt), sat(tags)]));
        }
    }
}

#[test]
fn fresh_changes_are_drained_before_background_ones() {
    let store = Store::default();
    let d = simple("/pr.in");
    let a = store
        .register_input(s(0), b"/pr.in", &d, b"/pr.out")
        .unwrap();
    let v = |n| [Value::Uint(n), freq(0, 0, 0)];
    for k in 1..=3 {
        store.apply(&a, &ip(k), &v(1), None, 10).unwrap();
    }
    // A new destination: its full push is background work.
    let (sub, _) = sub(&store, true, false);
    assert_eq!(store.mark_all(&sub), 3);
    assert_eq!(sub.pending(), 3);
    // A fresh change of a new key, and of a key already queued in the background.
    store.apply(&a, &ip(4), &v(1), None, 11).unwrap();
    store.apply(&a, &ip(2), &v(5), None, 11).unwrap();
    assert_eq!(sub.pending(), 4);
    let t = a.output();
    assert_eq!(sub.drain(2), vec![(t, ip(4)), (t, ip(2))]);
    // Then the rest of the background, each key once.
    let mut rest = sub.drain(10);
    rest.sort();
    assert_eq!(rest, vec![(t, ip(1)), (t, ip(3))]);
    assert_eq!(sub.pending(), 0);
    assert!(sub.drain(10).is_empty());
}

#[test]
fn a_busy_table_does_not_starve_another_one() {
    let store = Store::default();
    let d = simple("/hot.in");
    let hot = store
        .register_input(s(0), b"/hot.in", &d, b"/hot.out")
        .unwrap();
    let d = simple("/cold.in");
    let cold = store
        .register_input(s(0), b"/cold.in", &d, b"/cold.out")
        .unwrap();
    let (sub, _) = sub(&store, true, false);
    let v = |n| [Value::Uint(n), freq(0, 0, 0)];
    // The hot table always has more changes than one drain takes.
    for k in 1..=200 {
        store.apply(&hot, &ip(k), &v(1), None, 10).unwrap();
    }
    store.apply(&cold, &ip(1), &v(1), None, 10).unwrap();
    let cold_out = cold.output();
    let mut seen_at = None;
    for round in 0..4 {
        // More hot changes keep coming between drains.
        for k in 1..=20 {
            store.apply(&hot, &ip(k), &v(round + 2), None, 11).unwrap();
        }
        if sub.drain(16).iter().any(|(t, _)| *t == cold_out) {
            seen_at = Some(round);
            break;
        }
    }
    // Drains start from one table further each time: with two tables, the cold
    // one is read first within two drains.
    assert!(
        seen_at.is_some_and(|r| r < 2),
        "the cold table's change waited: {seen_at:?}"
    );
}

#[test]
fn a_budgeted_refresh_covers_every_key_over_several_calls() {
    let store = Store::default();
    let d = simple("/rb.in");
    let a = store
        .register_input(s(0), b"/rb.in", &d, b"/rb.out")
        .unwrap();
    let (sub, _) = sub(&store, true, false);
    let t0 = 100_000u64;
    for k in 1..=10 {
        // Mid-period counters: the published shape drifts from them over time.
        store
            .apply(&a, &ip(k), &[Value::Uint(1), freq(5000, 30, 100)], None, t0)
            .unwrap();
    }
    sub.drain(100);
    // 2 s later every key has drifted; 4 keys per call: 3 calls cover the 10 keys.
    let later = t0 + 2000;
    let marked: Vec<usize> = (0..3)
        .map(|_| store.refresh_rates_budget(later, 4))
        .collect();
    assert_eq!(marked, vec![4, 4, 2]);
    assert_eq!(sub.pending(), 10);
    // Republished: a new round finds nothing to do.
    assert_eq!(store.refresh_rates_budget(later, 100), 0);
}

/// A waker that checks, each time it is called, that the store holds none of its
/// locks, then calls back into the store (as a waker is allowed to).
struct LockProbe {
    store: std::sync::OnceLock<std::sync::Weak<Store>>,
    /// The keys whose entry shards are checked.
    keys: Vec<Key>,
    wakes: AtomicUsize,
    held: std::sync::Mutex<Vec<(usize, &'static str)>>,
}

impl Waker for LockProbe {
    fn wake(&self) {
        let n = self.wakes.fetch_add(1, Ordering::SeqCst) + 1;
        let Some(store) = self.store.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let held = store.locks_held(&self.keys);
        if held.is_empty() {
            // Re-entering would deadlock on any lock held for writing: only when
            // none is held (a failure is reported, not hung on).
            for t in store.tables() {
                for k in &self.keys {
                    let _ = store.read(t.id, k, 0);
                }
            }
            let _ = store.table_summaries();
        } else {
            let mut v = self.held.lock().unwrap();
            v.extend(held.into_iter().map(|h| (n, h)));
        }
    }
}

/// ARCHITECTURE.md: "no lock is held while calling out (wakers)". Every path that
/// wakes a destination (a change, a relayed change, a full push, a resync's end, an
/// expiry, a rate refresh, a dropped source, a failover) is taken with a waker that
/// fails if any store lock is held when it is called, and re-enters the store.
#[test]
fn wakers_are_called_with_no_store_lock_held() {
    let store = Arc::new(Store::default());
    let probe = Arc::new(LockProbe {
        store: std::sync::OnceLock::new(),
        keys: (1..=3).map(ip).collect(),
        wakes: AtomicUsize::new(0),
        held: std::sync::Mutex::default(),
    });
    assert!(probe.store.set(Arc::downgrade(&store)).is_ok());
    let all = SubscriptionFilter {
        outputs: true,
        relays: true,
    };
    // Two destinations: the change logs share encodings only with several.
    let probed = store.subscribe(all, probe.clone());
    let (other, _) = sub(&store, true, true);
    let d = simple("/w.in");
    let a = store.register_input(s(0), b"/w.in", &d, b"/w.out").unwrap();
    let b = store.register_input(s(1), b"/w.in", &d, b"/w.out").unwrap();
    let r = store.register_relay(1, s(9), &d, b"/w.l2").unwrap();
    store.relay_replace(1, s(9), 0);
    let wakes = || probe.wakes.load(Ordering::SeqCst);
    // Each step must wake the probe (after a drain, so that it waits again).
    let step = |what: &str, f: &dyn Fn()| {
        while !probed.drain_changes(64).is_empty() {}
        other.drain_changes(usize::MAX);
        let before = wakes();
        f();
        assert!(wakes() > before, "{what} did not wake the destination");
    };
    let rate = |c| [Value::Uint(c), freq(5000, 30, 100)];
    step("a change", &|| {
        store.apply(&a, &ip(1), &rate(1), None, 1000).unwrap();
        store.apply(&b, &ip(2), &rate(2), Some(500), 1000).unwrap();
    });
    step("a relayed change", &|| {
        store.relay_apply(&r, &ip(3), &rate(3), None, 1000).unwrap();
    });
    step("a full push", &|| {
        assert_eq!(store.mark_all(&probed), 3);
    });
    step("a rate refresh", &|| {
        assert!(store.refresh_rates_budget(4000, 100) > 0);
    });
    step("an expiry", &|| {
        assert_eq!(store.expire(1500), 1);
    });
    step("a resync's end", &|| {
        store.begin_resync(s(0), 2000);
        store.apply(&a, &ip(3), &rate(1), None, 2000).unwrap();
        assert_eq!(store.end_resync(s(0), 2000), 1);
    });
    step("a dropped source", &|| {
        assert_eq!(store.drop_source(s(0), 3000), 1);
    });
    step("a failover's end", &|| {
        store.relay_replace(1, s(9), 3000);
        assert_eq!(store.end_resync(s(9), 3000), 1);
    });
    // New tables wake nobody (nothing to take yet), and take no probe's lock.
    store
        .register_input(s(1), b"/w2.in", &d, b"/w2.out")
        .unwrap();
    let held = probe.held.lock().unwrap().clone();
    assert!(
        held.is_empty(),
        "locks held while waking (wake #, lock): {held:?}"
    );
    assert!(wakes() >= 8);
}
