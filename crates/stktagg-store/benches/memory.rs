//! Resident memory of the store per key × source contribution and per output key,
//! in a process that holds nothing else (no sockets, no per-destination queues, no
//! other process's noise): what the store's data structures cost, allocator
//! rounding and fragmentation included.
//!
//! Fills K keys from 1 source, then the same keys from S−1 more sources, reading
//! `VmRSS` from `/proc/self/status` before and after each phase, and prints one JSON
//! line: `{"keys", "sources", "key_bytes", "bytes_per_contribution",
//! "bytes_per_output_key", ...}`. Sizes come from `STKTAGG_BENCH_MEM_KEYS` (default
//! 1M) and `STKTAGG_BENCH_MEM_SOURCES` (default 10). `cargo xtask bench` runs it with
//! `cargo bench -p stktagg-store --bench memory`.

use bytes::Bytes;
use stktagg_store::{SourceId, Store};
use stktagg_wire::{DataSpec, DataType, FreqCtr, Key, KeyType, TableDefinition, Value};

/// Resident bytes of this process.
fn rss() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that is not ours means
    // another bench was asked for: do nothing then.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && a != "memory")
    {
        return;
    }
    let keys = env("STKTAGG_BENCH_MEM_KEYS", 1_000_000);
    let sources = env("STKTAGG_BENCH_MEM_SOURCES", 10).max(2);
    // The stream of `stktagg-loadgen`: gpc0, http_req_cnt, http_req_rate(10s).
    let def = TableDefinition {
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
    };
    let store = Store::default();
    let handles: Vec<_> = (0..sources)
        .map(|s| {
            store
                .register_input(
                    SourceId(s as u16),
                    b"/bench.uncombined",
                    &def,
                    b"/bench.aggr",
                )
                .expect("register")
        })
        .collect();
    let values = |i: u32| {
        [
            Value::Uint(i % 7),
            Value::Uint(i + 1),
            Value::Freq(FreqCtr {
                age: i % 10_000,
                curr: i % 100,
                prev: 50,
            }),
        ]
    };
    let key = |k: u32| Key::from_u32(0x0a00_0000 + k);
    let base = rss();
    for k in 0..keys {
        store
            .apply(&handles[0], &key(k), &values(k), None, 1000)
            .expect("apply");
    }
    let one = rss() - base;
    for h in &handles[1..] {
        for k in 0..keys {
            store
                .apply(h, &key(k), &values(k), None, 2000)
                .expect("apply");
        }
    }
    let all = rss() - base;
    let per_contribution = (all - one) as f64 / (f64::from(sources - 1) * f64::from(keys));
    let per_key = one as f64 / f64::from(keys) - per_contribution;
    println!(
        "{{\"keys\":{keys},\"sources\":{sources},\"key_bytes\":4,\"bytes_per_contribution\":{per_contribution:.2},\"bytes_per_output_key\":{per_key:.2},\"total_bytes\":{all}}}"
    );
}
