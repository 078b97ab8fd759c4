//! Apply throughput: 3 sources updating 10k and 1M keys of one output table
//! (`http_req_cnt, http_req_rate(10s), gpc0, conn_cur`, 30 s expiry), keys visited
//! in a scattered order. The per-update cost should stay flat as the table grows.
//!
//! The `scaling` group is the store's side of `cargo xtask bench`'s scaling curve:
//! one source over 10k to 10M keys (`STKTAGG_BENCH_MAX_KEYS` caps the sizes, for
//! quick runs); the xtask reads criterion's `estimates.json` for each size.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use stktagg_store::{InputHandle, SourceId, Store};
use stktagg_wire::{DataSpec, DataType, FreqCtr, Key, KeyType, TableDefinition, Value};

const BATCH: u64 = 10_000;

fn definition() -> TableDefinition {
    let plain = DataSpec::plain;
    TableDefinition {
        table_id: 1,
        name: Bytes::from_static(b"/bench.in"),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms: 30_000,
        data: vec![
            plain(DataType::Gpc0),
            plain(DataType::ConnCur),
            plain(DataType::HttpReqCnt),
            DataSpec {
                data_type: DataType::HttpReqRate,
                period_ms: 10_000,
                nbelem: 0,
            },
        ],
    }
}

fn values(n: u32) -> [Value; 4] {
    [
        Value::Uint(n & 7),
        Value::Uint(1),
        Value::Uint(n),
        Value::Freq(FreqCtr {
            age: n % 10_000,
            curr: n % 100,
            prev: 50,
        }),
    ]
}

fn bench_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(BATCH));
    for keys in [10_000u32, 1_000_000] {
        let store = Store::default();
        let def = definition();
        let handles: Vec<InputHandle> = (0..3)
            .map(|s| {
                store
                    .register_input(SourceId(s), b"/bench.in", &def, b"/bench.out")
                    .expect("register")
            })
            .collect();
        let all: Vec<Key> = (0..keys)
            .map(|k| Key::from_u32(k.wrapping_mul(7919)))
            .collect();
        for (i, k) in all.iter().enumerate() {
            for h in &handles {
                store
                    .apply(h, k, &values(i as u32), None, 0)
                    .expect("populate");
            }
        }
        let mut i: u64 = 0;
        group.bench_with_input(BenchmarkId::from_parameter(keys), &keys, |b, &keys| {
            b.iter(|| {
                for _ in 0..BATCH {
                    // A multiplicative hash scatters the visits over the whole table.
                    let k = &all[(i.wrapping_mul(2_654_435_761) % u64::from(keys)) as usize];
                    let h = &handles[(i % 3) as usize];
                    let r = store.apply(h, k, &values(i as u32), None, 1000 + i / 1000);
                    black_box(r.expect("apply"));
                    i += 1;
                }
            });
        });
    }
    group.finish();
}

fn bench_scaling(c: &mut Criterion) {
    let max: u32 = std::env::var("STKTAGG_BENCH_MAX_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let mut group = c.benchmark_group("scaling");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(BATCH));
    for keys in [10_000u32, 100_000, 1_000_000, 10_000_000] {
        if keys > max {
            continue;
        }
        let store = Store::default();
        let def = definition();
        let h = store
            .register_input(SourceId(0), b"/bench.in", &def, b"/bench.out")
            .expect("register");
        let all: Vec<Key> = (0..keys)
            .map(|k| Key::from_u32(k.wrapping_mul(7919)))
            .collect();
        for (i, k) in all.iter().enumerate() {
            store
                .apply(&h, k, &values(i as u32), None, 0)
                .expect("populate");
        }
        let mut i: u64 = 0;
        group.bench_with_input(BenchmarkId::from_parameter(keys), &keys, |b, &keys| {
            b.iter(|| {
                for _ in 0..BATCH {
                    let k = &all[(i.wrapping_mul(2_654_435_761) % u64::from(keys)) as usize];
                    let r = store.apply(&h, k, &values(i as u32), None, 1000 + i / 1000);
                    black_box(r.expect("apply"));
                    i += 1;
                }
            });
        });
    }
    group.finish();
}

/// A waker that does nothing: the bench drains by itself.
struct NoWake;

impl stktagg_store::Waker for NoWake {
    fn wake(&self) {}
}

/// The cost of a change as the number of destinations grows: 10k updates over 100k
/// keys with 1, 10 and 100 subscriptions (each drained between batches, outside the
/// measure). The cost of marking a change must not grow with the destinations.
fn bench_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(BATCH));
    let keys = 100_000u32;
    for destinations in [1usize, 10, 100] {
        let store = Store::default();
        let def = definition();
        let h = store
            .register_input(SourceId(0), b"/bench.in", &def, b"/bench.out")
            .expect("register");
        let all: Vec<Key> = (0..keys)
            .map(|k| Key::from_u32(k.wrapping_mul(7919)))
            .collect();
        for (i, k) in all.iter().enumerate() {
            store
                .apply(&h, k, &values(i as u32), None, 0)
                .expect("populate");
        }
        let filter = stktagg_store::SubscriptionFilter {
            outputs: true,
            relays: false,
        };
        let subs: Vec<_> = (0..destinations)
            .map(|_| store.subscribe(filter, std::sync::Arc::new(NoWake)))
            .collect();
        let mut i: u64 = 0;
        group.bench_with_input(
            BenchmarkId::from_parameter(destinations),
            &destinations,
            |b, _| {
                b.iter_batched(
                    || {
                        for s in &subs {
                            while !s.drain_changes(4096).is_empty() {}
                        }
                    },
                    |()| {
                        for _ in 0..BATCH {
                            let k =
                                &all[(i.wrapping_mul(2_654_435_761) % u64::from(keys)) as usize];
                            let r = store.apply(&h, k, &values(i as u32), None, 1000 + i / 1000);
                            black_box(r.expect("apply"));
                            i += 1;
                        }
                    },
                    criterion::BatchSize::PerIteration,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_apply, bench_scaling, bench_fanout);
criterion_main!(benches);
