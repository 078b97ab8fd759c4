//! Codec throughput on the ingest path: decoding a run of updates as HAProxy pushes
//! them (one full update, then incremental ones; IPv4 keys; `gpc0`, `http_req_cnt`,
//! `http_req_rate(10s)`), and encoding the same updates.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use stktagg_wire::{
    DataSpec, DataType, Decoder, Encoder, FreqCtr, Key, KeyType, Message, TableDefinition, Update,
    UpdateKind, Value,
};

const N: u32 = 10_000;

fn definition() -> TableDefinition {
    TableDefinition {
        table_id: 1,
        name: Bytes::from_static(b"/bench.uncombined"),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms: 60_000,
        data: vec![
            DataSpec::plain(DataType::Gpc0),
            DataSpec::plain(DataType::HttpReqCnt),
            DataSpec {
                data_type: DataType::HttpReqRate,
                period_ms: 10_000,
                nbelem: 0,
            },
        ],
    }
}

fn updates() -> Vec<Message> {
    (0..N)
        .map(|i| {
            Message::Update(Update {
                kind: if i == 0 {
                    UpdateKind::Full
                } else {
                    UpdateKind::Incremental
                },
                table_id: 1,
                update_id: i + 1,
                expire_ms: None,
                key: Key::from_u32(0x0a00_0000 + i.wrapping_mul(7919) % 1_000_000),
                values: vec![
                    Value::Uint(i % 7),
                    Value::Uint(i + 1),
                    Value::Freq(FreqCtr {
                        age: i % 10_000,
                        curr: i % 100,
                        prev: 50,
                    }),
                ],
            })
        })
        .collect()
}

fn bench_codec(c: &mut Criterion) {
    let msgs = updates();
    let mut enc = Encoder::new();
    let mut define = BytesMut::new();
    enc.encode(&Message::TableDefinition(definition()), &mut define)
        .expect("define");
    let mut stream = BytesMut::new();
    for m in &msgs {
        enc.encode(m, &mut stream).expect("encode");
    }
    let stream = stream.freeze();

    let mut group = c.benchmark_group("codec");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(u64::from(N)));
    group.bench_function("decode_updates", |b| {
        b.iter(|| {
            let mut dec = Decoder::new();
            let mut buf = BytesMut::from(&define[..]);
            buf.extend_from_slice(&stream);
            let mut n = 0u32;
            while let Some(m) = dec.decode(&mut buf).expect("decode") {
                black_box(&m);
                n += 1;
            }
            assert_eq!(n, N + 1);
        });
    });
    group.bench_function("encode_updates", |b| {
        let mut out = BytesMut::with_capacity(stream.len() + define.len());
        b.iter(|| {
            let mut enc = Encoder::new();
            out.clear();
            enc.encode(&Message::TableDefinition(definition()), &mut out)
                .expect("define");
            for m in &msgs {
                enc.encode(m, &mut out).expect("encode");
            }
            black_box(out.len());
        });
    });
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
