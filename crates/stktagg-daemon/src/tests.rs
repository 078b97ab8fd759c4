//! In-process tests: a whole daemon on loopback, driven by mock peers that speak
//! the protocol through the codec. They cover what real HAProxy nodes cannot easily
//! be made to do: hostile input, slow readers, several sources at once.

use crate::{Daemon, Options, load_str};
use bytes::{Bytes, BytesMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use stktagg_wire::hello::{Hello, LineDecoder, StatusCode, decode_status};
use stktagg_wire::{
    DataSpec, DataType, Decoder, Encoder, FreqCtr, Key, KeyType, Message, TableDefinition, Update,
    UpdateKind, Value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start(extra_peers: &str) -> (Daemon, SocketAddr) {
    let port = free_port();
    let cfg = format!(
        "aggregations t\n  peer agg 127.0.0.1:{port} local\n  peer s1\n  peer s2\n  peer s3\n{extra_peers}  from .in to .out\n"
    );
    let loaded = load_str(&cfg, "test.cfg").expect("valid config");
    let d = Daemon::start(loaded, Options::default())
        .await
        .expect("daemon starts");
    let addr = d.sections[0].listen_addr();
    (d, addr)
}

struct Mock {
    stream: TcpStream,
    buf: BytesMut,
    dec: Decoder,
    enc: Encoder,
}

impl Mock {
    async fn connect(addr: SocketAddr, remote: &str, local: &str) -> Result<Mock, StatusCode> {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut out = BytesMut::new();
        Hello::new(remote, local, 1)
            .encode(&mut out)
            .expect("hello");
        stream.write_all(&out).await.expect("write hello");
        let mut buf = BytesMut::new();
        let lines = LineDecoder::default();
        let status = loop {
            if let Some(s) = decode_status(&lines, &mut buf).expect("status line") {
                break s;
            }
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(&mut buf))
                .await
                .expect("status in time")
                .expect("read");
            assert!(n > 0, "closed before the status line");
        };
        if status != StatusCode::Succeeded {
            return Err(status);
        }
        Ok(Mock {
            stream,
            buf,
            dec: Decoder::new(),
            enc: Encoder::new(),
        })
    }

    async fn send(&mut self, msgs: &[Message]) {
        let mut out = BytesMut::new();
        for m in msgs {
            self.enc.encode(m, &mut out).expect("encode");
        }
        self.stream.write_all(&out).await.expect("write");
    }

    /// Next message within `wait`; `None` on timeout or close.
    async fn recv(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(m) = self
                .dec
                .decode(&mut self.buf)
                .expect("daemon sends valid messages")
            {
                return Some(m);
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// Reads until `pred` matches, answering the daemon's resync duties like a node.
    async fn until(
        &mut self,
        wait: Duration,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.recv(left).await?;
            match &m {
                Message::ResyncRequest => self.send(&[Message::ResyncFinished]).await,
                Message::ResyncFinished | Message::ResyncPartial => {
                    self.send(&[Message::ResyncConfirm]).await
                }
                _ => {}
            }
            if pred(&m) {
                return Some(m);
            }
        }
    }
}

fn def(name: &str) -> TableDefinition {
    TableDefinition {
        table_id: 7,
        name: Bytes::copy_from_slice(name.as_bytes()),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms: 30_000,
        data: vec![
            DataSpec::plain(DataType::HttpReqCnt),
            DataSpec {
                data_type: DataType::HttpReqRate,
                period_ms: 10_000,
                nbelem: 0,
            },
        ],
    }
}

fn update(id: u32, ip: u8, cnt: u32) -> Message {
    Message::Update(Update {
        kind: UpdateKind::Full,
        table_id: 7,
        update_id: id,
        expire_ms: None,
        key: Key::from_ipv4(Ipv4Addr::new(10, 0, 0, ip)),
        values: vec![
            Value::Uint(cnt),
            Value::Freq(FreqCtr {
                age: 0,
                curr: cnt,
                prev: 0,
            }),
        ],
    })
}

fn count_of(m: &Message, ip: u8) -> Option<u32> {
    match m {
        Message::Update(u) if u.key == Key::from_ipv4(Ipv4Addr::new(10, 0, 0, ip)) => {
            match u.values.first() {
                Some(Value::Uint(v)) => Some(*v),
                _ => None,
            }
        }
        _ => None,
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn sources_get_the_sum_back_and_acks_use_their_table_id() {
    let (d, addr) = start("").await;
    let mut a = Mock::connect(addr, "agg", "s1").await.expect("200");
    let mut b = Mock::connect(addr, "agg", "s2").await.expect("200");
    a.send(&[Message::TableDefinition(def("/x.in")), update(1, 1, 5)])
        .await;
    b.send(&[Message::TableDefinition(def("/x.in")), update(1, 1, 7)])
        .await;
    let ack = a
        .until(WAIT, |m| matches!(m, Message::Ack { .. }))
        .await
        .expect("an ack");
    assert_eq!(
        ack,
        Message::Ack {
            table_id: 7,
            update_id: 1
        }
    );
    // Both sources end up with 12 for the key, in a table named /x.out.
    for m in [&mut a, &mut b] {
        let got = m.until(WAIT, |msg| count_of(msg, 1) == Some(12)).await;
        assert!(got.is_some(), "the sum 12 never arrived");
        let out = m
            .dec
            .definition(m.dec.selected_table().expect("a table"))
            .expect("def");
        assert_eq!(&out.name[..], b"/x.out");
    }
    // A new snapshot from a replaces its contribution: 6 + 7, not 5 + 6 + 7.
    a.send(&[update(2, 1, 6)]).await;
    assert!(
        a.until(WAIT, |msg| count_of(msg, 1) == Some(13))
            .await
            .is_some()
    );
    d.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn bad_hellos_get_haproxys_status_codes() {
    let (d, addr) = start("").await;
    assert_eq!(
        Mock::connect(addr, "not-us", "s1").await.err(),
        Some(StatusCode::LocalPeerMismatch)
    );
    assert_eq!(
        Mock::connect(addr, "agg", "stranger").await.err(),
        Some(StatusCode::UnknownPeer)
    );
    // Our own name is not a peer either.
    assert_eq!(
        Mock::connect(addr, "agg", "agg").await.err(),
        Some(StatusCode::UnknownPeer)
    );
    d.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_hostile_peer_loses_its_session_and_nobody_else_notices() {
    let (d, addr) = start("").await;
    let mut good = Mock::connect(addr, "agg", "s1").await.expect("200");
    good.send(&[Message::TableDefinition(def("/x.in")), update(1, 1, 3)])
        .await;
    assert!(
        good.until(WAIT, |m| count_of(m, 1) == Some(3))
            .await
            .is_some()
    );

    // Class 255 is a protocol error: 01 00, then the daemon closes.
    let mut bad = Mock::connect(addr, "agg", "s2").await.expect("200");
    bad.stream.write_all(&[0xff, 0x00]).await.expect("write");
    let got = bad
        .until(WAIT, |m| matches!(m, Message::ProtocolError))
        .await;
    assert_eq!(got, Some(Message::ProtocolError));
    assert!(bad.recv(WAIT).await.is_none(), "the session is closed");

    // A declared length over the limit: 01 01 before any body is buffered.
    let mut big = Mock::connect(addr, "agg", "s3").await.expect("200");
    let mut frame = vec![0x0a, 0x80];
    stktagg_wire::varint::encode(1 << 20, &mut frame);
    big.stream.write_all(&frame).await.expect("write");
    let got = big.until(WAIT, |m| matches!(m, Message::SizeLimit)).await;
    assert_eq!(got, Some(Message::SizeLimit));

    // The good session never noticed.
    good.send(&[update(2, 1, 4)]).await;
    assert!(
        good.until(WAIT, |m| count_of(m, 1) == Some(4))
            .await
            .is_some()
    );
    let s = &d.sections[0];
    assert_eq!(
        s.peers[1]
            .stats
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        s.peers[2]
            .stats
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        s.peers[0]
            .stats
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    d.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_peer_that_never_reads_does_not_hold_back_the_others() {
    let (d, addr) = start("").await;
    // s3 connects and then never reads a byte.
    let stuck = Mock::connect(addr, "agg", "s3").await.expect("200");
    let mut a = Mock::connect(addr, "agg", "s1").await.expect("200");
    a.send(&[Message::TableDefinition(def("/x.in"))]).await;
    // Many keys, many times: far more than fits in the stuck peer's socket buffers.
    let mut id = 0;
    for round in 0..20u32 {
        let mut msgs = Vec::new();
        for ip in 1..=250u8 {
            id += 1;
            msgs.push(update(id, ip, round + 1));
        }
        a.send(&msgs).await;
    }
    // a still gets the latest sums promptly.
    assert!(
        a.until(WAIT, |m| count_of(m, 250) == Some(20))
            .await
            .is_some()
    );
    // The stuck peer's backlog is its coalesced dirty set: at most one entry per key.
    drop(stuck);
    d.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_peer_that_asks_is_taught_its_own_entries_back() {
    let (d, addr) = start("").await;
    let mut a = Mock::connect(addr, "agg", "s1").await.expect("200");
    a.send(&[Message::TableDefinition(def("/x.in")), update(1, 9, 42)])
        .await;
    assert!(
        a.until(WAIT, |m| count_of(m, 9) == Some(42))
            .await
            .is_some()
    );
    drop(a);
    // s1 "restarts": a new session that asks for a resync.
    let mut a = Mock::connect(addr, "agg", "s1").await.expect("200");
    a.send(&[Message::ResyncRequest]).await;
    let mut taught_input = false;
    let mut last_taught = None;
    let mut finished = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(taught_input && finished) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(m) = a.recv(left).await else { break };
        if let Message::Update(u) = &m {
            let name = a.dec.definition(u.table_id).map(|d| d.name.clone());
            if name.as_deref() == Some(&b"/x.in"[..]) && count_of(&m, 9) == Some(42) {
                // Its own input table, with a remaining lifetime (timed update).
                assert!(u.expire_ms.is_some_and(|e| e > 0 && e <= 30_000));
                taught_input = true;
                last_taught = Some((u.table_id, u.update_id));
            }
        }
        match m {
            Message::ResyncFinished | Message::ResyncPartial => {
                finished = true;
                a.send(&[Message::ResyncConfirm]).await;
            }
            Message::ResyncRequest => a.send(&[Message::ResyncPartial]).await,
            _ => {}
        }
    }
    assert!(taught_input, "its own entry was not taught back");
    assert!(finished, "the teach did not end");
    // Once the taught entries are acknowledged, the daemon asks for a full resync
    // (HAProxy 3.2.0 would otherwise never push changes to a learned entry).
    let (tid, uid) = last_taught.expect("a taught update");
    a.send(&[Message::Ack {
        table_id: tid,
        update_id: uid,
    }])
    .await;
    let got = a.until(WAIT, |m| matches!(m, Message::ResyncRequest)).await;
    assert_eq!(got, Some(Message::ResyncRequest));
    d.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn random_bytes_from_peers_never_hurt_the_daemon() {
    let (d, addr) = start("").await;
    let mut good = Mock::connect(addr, "agg", "s1").await.expect("200");
    good.send(&[Message::TableDefinition(def("/x.in")), update(1, 1, 1)])
        .await;
    assert!(
        good.until(WAIT, |m| count_of(m, 1) == Some(1))
            .await
            .is_some()
    );
    // A deterministic generator (xorshift): 150 hostile sessions, each sending a
    // valid DEFINE or nothing, then random bytes, some shaped like stick-table
    // messages so that they get past the framing.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..150u32 {
        let Ok(mut bad) = Mock::connect(addr, "agg", "s2").await else {
            continue;
        };
        if round % 2 == 0 {
            bad.send(&[Message::TableDefinition(def("/x.in"))]).await;
        }
        let len = (next() % 300) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 3 == 0 && junk.len() > 3 {
            // A plausible frame header: class 10, an update type, a small length.
            junk[0] = 0x0a;
            junk[1] = [0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86][(next() % 7) as usize];
            junk[2] = (next() % 100) as u8;
        }
        let _ = bad.stream.write_all(&junk).await;
        let _ = bad.stream.shutdown().await;
    }
    // The good session still works, and its own contribution is exactly what it
    // sent (s2's junk may decode as updates of its own: those are s2's share).
    good.send(&[update(2, 1, 2)]).await;
    let got = good
        .until(WAIT, |m| count_of(m, 1).is_some_and(|v| v >= 2))
        .await;
    assert!(got.is_some(), "the good session stopped working");
    let s = &d.sections[0];
    let table = s.store.output_by_name(b"/x.out").expect("the output table");
    let key = Key::from_ipv4(Ipv4Addr::new(10, 0, 0, 1));
    let now = s.clock.now_ms();
    let detail = s.store.detail(table, &key, now).expect("the key");
    let mine: Vec<_> = detail.iter().filter(|c| c.source.0 == 0).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].values[0], Value::Uint(2));
    assert!(
        s.peers[1]
            .stats
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    d.stop(Duration::from_secs(2)).await;
}
