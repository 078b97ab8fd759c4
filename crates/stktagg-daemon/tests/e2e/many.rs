//! Fifty sources at once against the `stktagg` binary: one session each, every one
//! driven by the session engine as a HAProxy node would speak, at a rate this
//! machine holds (about 20k updates/s in all). No session may be dropped and every
//! sum must be exact at the end, on every source.

use crate::fleet::Aggregator;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use stktagg_session::{Event, Feed, Outbox, PeerSession, Progress, SessionConfig, TableKey};
use stktagg_tests::ports::free_addr;
use stktagg_wire::{DataSpec, DataType, Key, KeyType, TableDefinition, Value};

const SOURCES: u32 = 50;
const KEYS: u32 = 200;
const ROUNDS: u32 = 20;
/// Updates per second per source (50 sources: 20k/s in all).
const RATE: u32 = 400;
const DEADLINE: Duration = Duration::from_secs(60);

fn input() -> TableDefinition {
    TableDefinition {
        table_id: 1,
        name: Bytes::from_static(b"/m.in"),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms: 120_000,
        data: vec![DataSpec::plain(DataType::HttpReqCnt)],
    }
}

fn key(k: u32) -> Key {
    Key::from_ipv4(Ipv4Addr::from(0x0a00_0000 + k))
}

/// Source `s` sends, in round `r`, the count `r * (s + 1)` for every key: its last
/// snapshot is `ROUNDS * (s + 1)`, and the exact sum of every key over the fleet is
/// `ROUNDS * (1 + 2 + ... + SOURCES)`.
struct Stream {
    source: u32,
    next: u32,
    due: u32,
}

impl Feed for Stream {
    fn live(&mut self, out: &mut Outbox<'_>) -> Progress {
        while self.next < self.due && !out.is_full() {
            let round = self.next / KEYS + 1;
            let k = self.next % KEYS;
            let v = Value::Uint(round * (self.source + 1));
            let sent = out.send(TableKey(1), || Some(input()), &key(k), &[v], None);
            assert!(matches!(sent, Ok(true)), "{sent:?}");
            self.next += 1;
        }
        Progress::Done
    }
}

/// What one source saw: whether its session survived, and the last sum per key.
struct Seen {
    closed: Option<String>,
    sums: HashMap<Key, u32>,
}

fn run_source(addr: SocketAddr, source: u32, expected: u32, start: Instant) -> Seen {
    let name = format!("s{}", source + 1);
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let now = |t: Instant| t.elapsed().as_millis() as u64;
    let mut engine = PeerSession::dial(SessionConfig::new(&name), "agg", now(start)).unwrap();
    let mut feed = Stream {
        source,
        next: 0,
        due: 0,
    };
    let total = KEYS * ROUNDS;
    let mut seen = Seen {
        closed: None,
        sums: HashMap::new(),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = BytesMut::new();
    let mut stream_start = None;
    let mut names: HashMap<u32, Bytes> = HashMap::new();
    loop {
        let t = now(start);
        if engine.is_established() {
            let began = *stream_start.get_or_insert(t);
            feed.due = (((t - began) * u64::from(RATE)) / 1000).min(u64::from(total)) as u32;
        }
        engine.handle_timeout(t);
        out.clear();
        engine.poll_transmit(t, &mut feed, &mut out);
        if !out.is_empty() && sock.write_all(&out).is_err() {
            seen.closed = Some("write failed".into());
            return seen;
        }
        match sock.read(&mut buf) {
            Ok(0) => {
                seen.closed = Some("closed by the aggregator".into());
                return seen;
            }
            Ok(n) => engine.handle_input(now(start), &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => {
                seen.closed = Some(format!("read: {e}"));
                return seen;
            }
        }
        while let Some(ev) = engine.poll_event() {
            match ev {
                Event::TableDefined(d) => {
                    names.insert(d.table_id, d.name);
                }
                Event::Update(u) => {
                    let sum = names.get(&u.table_id).is_some_and(|n| &n[..] == b"/m.out");
                    if let (true, Some(Value::Uint(v))) = (sum, u.values.first()) {
                        seen.sums.insert(u.key, *v);
                    }
                }
                Event::Closed(end) => {
                    seen.closed = Some(end.to_string());
                    return seen;
                }
                _ => {}
            }
        }
        let done = feed.next == total
            && seen.sums.len() == KEYS as usize
            && seen.sums.values().all(|v| *v == expected);
        if done || start.elapsed() > DEADLINE {
            return seen;
        }
    }
}

#[test]
fn fifty_sources_keep_their_sessions_and_every_sum_is_exact() {
    let listen = free_addr().unwrap();
    let mut cfg = format!(
        "global\n    stats socket {{dir}}/agg.sock mode 600 level admin\n\n\
         aggregations many\n    peer agg {listen} local\n"
    );
    for s in 1..=SOURCES {
        cfg.push_str(&format!("    peer s{s}\n"));
    }
    cfg.push_str("    from .in to .out\n");
    let agg = Aggregator::start_alone("e2e_many", &cfg).unwrap();
    let expected = ROUNDS * (SOURCES * (SOURCES + 1) / 2);
    let start = Instant::now();
    let threads: Vec<_> = (0..SOURCES)
        .map(|s| std::thread::spawn(move || run_source(listen, s, expected, start)))
        .collect();
    let seen: Vec<Seen> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (s, v) in seen.iter().enumerate() {
        assert!(
            v.closed.is_none(),
            "source s{}: session ended: {:?}",
            s + 1,
            v.closed
        );
        let wrong: Vec<_> = v
            .sums
            .iter()
            .filter(|(_, x)| **x != expected)
            .take(3)
            .collect();
        assert!(
            v.sums.len() == KEYS as usize && wrong.is_empty(),
            "source s{}: {} keys, some not at {expected}: {wrong:?} (after {:?})",
            s + 1,
            v.sums.len(),
            start.elapsed()
        );
    }
    // The aggregator saw one session per source, and no reconnection.
    let info = agg.api().command("show info").unwrap();
    let field = |name: &str| -> Option<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
    };
    assert_eq!(field("CumSessions"), Some(u64::from(SOURCES)), "{info}");
    assert_eq!(field("Reconnects"), Some(0), "{info}");
}
