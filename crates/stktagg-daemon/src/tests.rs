//! In-process tests: a whole daemon on loopback, driven by mock peers that speak
//! the protocol through the session engine. They cover what real HAProxy nodes cannot easily
//! be made to do: hostile input, slow readers, several sources at once.

use crate::{Daemon, Options, load_str};
use bytes::{Bytes, BytesMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;
use stktagg_session::{
    End, Event, Feed, NothingToSend, Outbox, PeerComplaint, PeerSession, Progress, SessionConfig,
    TableKey,
};
use stktagg_wire::{
    DataSpec, DataType, FreqCtr, Key, KeyType, Message, StatusCode, TableDefinition, Update,
    UpdateKind, Value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

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

/// A peer driven by the session engine, as a HAProxy node would speak: it answers
/// resync requests (with FINISHED, or PARTIAL when told), confirms lessons and
/// acknowledges updates by itself. Raw bytes can still be written for the hostile
/// cases.
struct Mock {
    stream: TcpStream,
    engine: PeerSession,
    feed: MockFeed,
    /// The peer's table definitions, by its table id.
    defs: std::collections::HashMap<u32, TableDefinition>,
    epoch: tokio::time::Instant,
}

/// What the mock sends: entries queued by the test, and its answer to a resync
/// (every entry it sent, latest values, as a HAProxy node teaches its table).
#[derive(Default)]
struct MockFeed {
    live: std::collections::VecDeque<(TableDefinition, Update)>,
    partial: bool,
    /// Whether it answers a resync request with `state` (else with nothing).
    teaches: bool,
    /// The latest update sent per table and key.
    state: std::collections::BTreeMap<(Bytes, Bytes), (TableDefinition, Update)>,
    /// The lesson being taught.
    lesson: std::collections::VecDeque<(TableDefinition, Update)>,
}

impl Feed for MockFeed {
    fn lesson_complete(&self) -> bool {
        !self.partial
    }

    fn lesson(&mut self, out: &mut Outbox<'_>) -> Progress {
        let Some((def, u)) = self.lesson.pop_front() else {
            return Progress::Done;
        };
        let table = TableKey(u64::from(def.table_id));
        let sent = out.send(table, || Some(def), &u.key, &u.values, u.expire_ms);
        assert!(matches!(sent, Ok(true)), "the mock's lesson must encode");
        Progress::More
    }

    fn live(&mut self, out: &mut Outbox<'_>) -> Progress {
        let Some((def, u)) = self.live.pop_front() else {
            return Progress::Done;
        };
        let table = TableKey(u64::from(def.table_id));
        let sent = out.send(table, || Some(def), &u.key, &u.values, u.expire_ms);
        assert!(matches!(sent, Ok(true)), "the mock's update must encode");
        Progress::More
    }
}

impl Mock {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    async fn connect(addr: SocketAddr, remote: &str, local: &str) -> Result<Mock, StatusCode> {
        Mock::connect_from(addr, None, remote, local).await
    }

    /// `connect` from a chosen source address (a loopback alias), or from the
    /// system's choice (`127.0.0.1` on loopback) without one.
    async fn connect_from(
        addr: SocketAddr,
        source: Option<IpAddr>,
        remote: &str,
        local: &str,
    ) -> Result<Mock, StatusCode> {
        let stream = dial_from(addr, source).await;
        let engine = PeerSession::dial(SessionConfig::new(local), remote, 0).expect("hello");
        let mut m = Mock {
            stream,
            engine,
            feed: MockFeed::default(),
            defs: Default::default(),
            epoch: tokio::time::Instant::now(),
        };
        m.flush().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !m.engine.is_established() {
            if let Some(End::Refused(code)) = m.engine.closed_reason() {
                return Err(*code);
            }
            assert!(m.read(deadline).await, "closed before the status line");
        }
        Ok(m)
    }

    /// Writes what the engine has to send.
    async fn flush(&mut self) {
        loop {
            let mut out = BytesMut::new();
            self.engine
                .poll_transmit(self.now(), &mut self.feed, &mut out);
            if out.is_empty() {
                return;
            }
            if self.stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    /// Reads once (until `deadline`); false on close, error or timeout.
    async fn read(&mut self, deadline: tokio::time::Instant) -> bool {
        let buf = self.engine.input_buffer();
        buf.reserve(16 * 1024);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {
                let now = self.now();
                self.engine.input_received(now);
                true
            }
            _ => false,
        }
    }

    /// Queues updates of table `def` and sends them.
    async fn send(&mut self, def: &TableDefinition, updates: impl IntoIterator<Item = Update>) {
        for u in updates {
            let at = (def.name.clone(), u.key.to_bytes());
            self.feed.state.insert(at, (def.clone(), u.clone()));
            self.feed.live.push_back((def.clone(), u));
        }
        self.flush().await;
    }

    /// Writes bytes as they are, outside the protocol.
    async fn raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next event within `wait`; `None` on timeout or close.
    async fn next(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(e) = self.engine.poll_event() {
                if let Event::TableDefined(d) = &e {
                    self.defs.insert(d.table_id, d.clone());
                }
                if matches!(e, Event::ResyncRequested) && self.feed.teaches {
                    self.feed.lesson = self.feed.state.values().cloned().collect();
                }
                // Answers (acks, CONFIRM, FINISHED) go out at once.
                self.flush().await;
                return Some(e);
            }
            if self.engine.is_closed() || !self.read(deadline).await {
                return None;
            }
        }
    }

    /// Reads until `pred` matches.
    async fn until(
        &mut self,
        wait: Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self.next(left).await?;
            if pred(&e) {
                return Some(e);
            }
        }
    }

    /// The name of the peer's table `table_id`.
    fn table_name(&self, table_id: u32) -> Option<&[u8]> {
        self.defs.get(&table_id).map(|d| &d.name[..])
    }
}

/// A TCP connection to `addr`, from `source` if given.
async fn dial_from(addr: SocketAddr, source: Option<IpAddr>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .expect("bind the source address");
    }
    socket.connect(addr).await.expect("connect")
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

fn update(ip: u8, cnt: u32) -> Update {
    Update {
        kind: UpdateKind::Full,
        table_id: 7,
        update_id: 0,
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
    }
}

fn count_of(e: &Event, ip: u8) -> Option<u32> {
    match e {
        Event::Update(u) if u.key == Key::from_ipv4(Ipv4Addr::new(10, 0, 0, ip)) => {
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
    let input = def("/x.in");
    a.send(&input, [update(1, 5)]).await;
    b.send(&input, [update(1, 7)]).await;
    let ack = a
        .until(WAIT, |e| matches!(e, Event::Acked { .. }))
        .await
        .expect("an ack");
    // Our engine numbers its tables from 1: the ack names our table, not the
    // daemon's, and the update id we gave.
    assert!(
        matches!(
            ack,
            Event::Acked {
                table_id: 1,
                update_id: 1
            }
        ),
        "{ack:?}"
    );
    // Both sources end up with 12 for the key, in a table named /x.out.
    for m in [&mut a, &mut b] {
        let got = m.until(WAIT, |e| count_of(e, 1) == Some(12)).await;
        let Some(Event::Update(u)) = got else {
            panic!("the sum 12 never arrived");
        };
        assert_eq!(m.table_name(u.table_id), Some(&b"/x.out"[..]));
    }
    // A new snapshot from a replaces its contribution: 6 + 7, not 5 + 6 + 7.
    a.send(&input, [update(1, 6)]).await;
    assert!(
        a.until(WAIT, |e| count_of(e, 1) == Some(13))
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

/// The daemon's complaint that ended a mock's session, if it did.
async fn complaint(m: &mut Mock) -> Option<PeerComplaint> {
    while let Some(e) = m.next(WAIT).await {
        if let Event::Closed(End::PeerError(c)) = e {
            return Some(c);
        }
    }
    None
}

#[tokio::test]
async fn a_hostile_peer_loses_its_session_and_nobody_else_notices() {
    let (d, addr) = start("").await;
    let input = def("/x.in");
    let mut good = Mock::connect(addr, "agg", "s1").await.expect("200");
    good.send(&input, [update(1, 3)]).await;
    assert!(
        good.until(WAIT, |e| count_of(e, 1) == Some(3))
            .await
            .is_some()
    );

    // Class 255 is a protocol error: 01 00, then the daemon closes.
    let mut bad = Mock::connect(addr, "agg", "s2").await.expect("200");
    bad.raw(&[0xff, 0x00]).await;
    assert_eq!(
        complaint(&mut bad).await,
        Some(PeerComplaint::ProtocolError)
    );

    // A declared length over the limit: 01 01 before any body is buffered.
    let mut big = Mock::connect(addr, "agg", "s3").await.expect("200");
    let mut frame = vec![0x0a, 0x80];
    stktagg_wire::varint::encode(1 << 20, &mut frame);
    big.raw(&frame).await;
    assert_eq!(complaint(&mut big).await, Some(PeerComplaint::SizeLimit));

    // The good session never noticed.
    good.send(&input, [update(1, 4)]).await;
    assert!(
        good.until(WAIT, |e| count_of(e, 1) == Some(4))
            .await
            .is_some()
    );
    let s = &d.sections[0];
    let errors = |i: usize| {
        s.core().peers[i]
            .stats
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!((errors(0), errors(1), errors(2)), (0, 1, 1));
    d.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_peer_that_never_reads_does_not_hold_back_the_others() {
    let (d, addr) = start("").await;
    // s3 connects and then never reads a byte.
    let stuck = Mock::connect(addr, "agg", "s3").await.expect("200");
    let mut a = Mock::connect(addr, "agg", "s1").await.expect("200");
    let input = def("/x.in");
    // Many keys, many times: far more than fits in the stuck peer's socket buffers.
    for round in 0..20u32 {
        a.send(&input, (1..=250u8).map(|ip| update(ip, round + 1)))
            .await;
    }
    // a still gets the latest sums promptly.
    assert!(
        a.until(WAIT, |e| count_of(e, 250) == Some(20))
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
    let input = def("/x.in");
    let mut a = Mock::connect(addr, "agg", "s1").await.expect("200");
    a.send(&input, [update(9, 42)]).await;
    assert!(
        a.until(WAIT, |e| count_of(e, 9) == Some(42))
            .await
            .is_some()
    );
    drop(a);
    // s1 "restarts": a new session that asks for a resync, and is still learning
    // itself (it answers the daemon's own request with PARTIAL).
    let mut a = Mock::connect(addr, "agg", "s1").await.expect("200");
    a.feed.partial = true;
    a.engine.request_resync();
    a.flush().await;
    let mut taught_input = false;
    let mut finished = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(taught_input && finished) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(e) = a.next(left).await else { break };
        if let Event::Update(u) = &e
            && a.table_name(u.table_id) == Some(&b"/x.in"[..])
            && count_of(&e, 9) == Some(42)
        {
            // Its own input table, with a remaining lifetime (timed update).
            assert!(u.expire_ms.is_some_and(|e| e > 0 && e <= 30_000));
            taught_input = true;
        }
        if matches!(e, Event::ResyncEnded { .. }) {
            assert!(
                taught_input,
                "its own entries come before the end of the lesson"
            );
            finished = true;
        }
    }
    assert!(taught_input, "its own entry was not taught back");
    assert!(finished, "the teach did not end");
    // Once the taught entries are acknowledged (the engine acks by itself), the
    // daemon asks for a full resync (HAProxy 3.2.0 would otherwise never push
    // changes to a learned entry).
    let got = a.until(WAIT, |e| matches!(e, Event::ResyncRequested)).await;
    assert!(got.is_some(), "the daemon did not ask again");
    d.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn random_bytes_from_peers_never_hurt_the_daemon() {
    let (d, addr) = start("").await;
    let input = def("/x.in");
    let mut good = Mock::connect(addr, "agg", "s1").await.expect("200");
    good.send(&input, [update(1, 1)]).await;
    assert!(
        good.until(WAIT, |e| count_of(e, 1) == Some(1))
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
            let mut out = BytesMut::new();
            let mut enc = stktagg_wire::Encoder::new();
            enc.encode(&Message::TableDefinition(def("/x.in")), &mut out)
                .expect("a definition encodes");
            bad.raw(&out).await;
        }
        let len = (next() % 300) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 3 == 0 && junk.len() > 3 {
            // A plausible frame header: class 10, an update type, a small length.
            junk[0] = 0x0a;
            junk[1] = [0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86][(next() % 7) as usize];
            junk[2] = (next() % 100) as u8;
        }
        bad.raw(&junk).await;
        let _ = bad.stream.shutdown().await;
    }
    // The good session still works, and its own contribution is exactly what it
    // sent (s2's junk may decode as updates of its own: those are s2's share).
    good.send(&input, [update(1, 2)]).await;
    let got = good
        .until(WAIT, |e| count_of(e, 1).is_some_and(|v| v >= 2))
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
        s.core().peers[1]
            .stats
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    d.stop(Duration::from_secs(2)).await;
}

/// The remote address of a peer's established session, as `show peers` gives it.
fn remote_of(stats: &crate::section::PeerStats) -> Option<String> {
    crate::section::lock(&stats.addrs)
        .as_ref()
        .map(|(_, remote)| remote.clone())
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an ip")
}

/// The lab: `agg` at 127.0.71.1, nodes `h1` and `h2` at 127.0.71.2 and
/// 127.0.71.3 (checked), `nat` at 127.0.71.4 with `no-addr-check`. The daemon
/// dials their ports in vain (nothing listens there); they dial it.
async fn start_lab() -> (Daemon, SocketAddr) {
    let port = free_port();
    let cfg = format!(
        "aggregations t\n  peer agg 127.0.71.1:{port} local\n  peer h1 127.0.71.2:{}\n  peer h2 127.0.71.3:{}\n  peer nat 127.0.71.4:{} no-addr-check\n  from .in to .out\n",
        free_port(),
        free_port(),
        free_port()
    );
    let loaded = load_str(&cfg, "lab.cfg").expect("valid config");
    let d = Daemon::start(loaded, Options::default())
        .await
        .expect("daemon starts");
    let addr = d.sections[0].listen_addr();
    (d, addr)
}

/// An impostor's attempt: from `source`, a hello claiming `claimed` with a
/// definition and an update of 1 000 000 for 10.0.0.1 written right behind it,
/// before any answer. Returns the status it got; asserts that the connection is
/// then closed.
async fn impostor(addr: SocketAddr, source: &str, claimed: &str) -> Option<StatusCode> {
    let mut stream = dial_from(addr, Some(ip(source))).await;
    let mut engine = PeerSession::dial(SessionConfig::new(claimed), "agg", 0).expect("hello");
    let mut out = BytesMut::new();
    engine.poll_transmit(0, &mut NothingToSend, &mut out);
    let mut enc = stktagg_wire::Encoder::new();
    let input = def("/x.in");
    enc.encode(&Message::TableDefinition(input), &mut out)
        .expect("a definition encodes");
    enc.encode(&Message::Update(update(1, 1_000_000)), &mut out)
        .expect("an update encodes");
    stream.write_all(&out).await.expect("the impostor writes");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut closed = false;
    while !closed {
        let buf = engine.input_buffer();
        buf.reserve(1024);
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed = true,
            Ok(Ok(_)) => engine.input_received(0),
            Err(_) => panic!("the daemon kept the impostor's connection open"),
        }
    }
    match engine.closed_reason() {
        Some(End::Refused(code)) => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn an_impostor_from_another_address_is_refused_and_never_counted() {
    let (d, addr) = start_lab().await;
    let s = &d.sections[0];
    let input = def("/x.in");
    let mut h1 = Mock::connect_from(addr, Some(ip("127.0.71.2")), "agg", "h1")
        .await
        .expect("the real h1 gets 200");
    let h1_local = h1.stream.local_addr().expect("its address");
    h1.send(&input, [update(1, 5)]).await;
    assert!(
        h1.until(WAIT, |e| count_of(e, 1) == Some(5))
            .await
            .is_some()
    );

    // The attack of issue 12: h1's name from 127.0.71.9, an update right behind.
    assert_eq!(
        impostor(addr, "127.0.71.9", "h1").await,
        Some(StatusCode::UnknownPeer)
    );
    let stats = &s.core().peers[0].stats;
    assert_eq!(stats.addr_refused.load(Ordering::Relaxed), 1);
    // The real session was not displaced: no collision, one session, its remote.
    assert_eq!(stats.collisions.load(Ordering::Relaxed), 0);
    assert_eq!(stats.sessions.load(Ordering::Relaxed), 1);
    assert_eq!(
        stats.state(),
        crate::section::SessionState::Established,
        "h1's session went down"
    );
    assert_eq!(remote_of(stats), Some(h1_local.to_string()));
    // Nothing of the impostor is counted: h1's next update makes the sum 6, and
    // the key has h1's contribution only.
    h1.send(&input, [update(1, 6)]).await;
    assert!(
        h1.until(WAIT, |e| count_of(e, 1) == Some(6))
            .await
            .is_some(),
        "h1 did not get its own sum back"
    );
    let table = s.store.output_by_name(b"/x.out").expect("the output table");
    let key = Key::from_ipv4(Ipv4Addr::new(10, 0, 0, 1));
    let detail = s
        .store
        .detail(table, &key, s.clock.now_ms())
        .expect("the key");
    assert_eq!(detail.len(), 1, "{detail:?}");
    assert_eq!(detail[0].source.0, 0);
    assert_eq!(detail[0].values[0], Value::Uint(6));
    assert_eq!(
        stats.updates_in.load(Ordering::Relaxed),
        2,
        "only h1's own updates"
    );

    // A newer session from h1's own address passes the same checks and replaces
    // the running one, as HAProxy's newest-wins rule says.
    let mut again = Mock::connect_from(addr, Some(ip("127.0.71.2")), "agg", "h1")
        .await
        .expect("the real h1 again");
    let again_local = again.stream.local_addr().expect("its address");
    again.send(&input, [update(1, 7)]).await;
    assert!(
        again
            .until(WAIT, |e| count_of(e, 1) == Some(7))
            .await
            .is_some()
    );
    assert_eq!(stats.collisions.load(Ordering::Relaxed), 1);
    assert_eq!(remote_of(stats), Some(again_local.to_string()));
    assert_eq!(stats.addr_refused.load(Ordering::Relaxed), 1);
    d.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn the_opt_out_and_the_loopback_rule_accept_what_they_say() {
    let (d, addr) = start_lab().await;
    let s = &d.sections[0];
    // `no-addr-check`: a peer behind NAT is accepted from any address.
    let nat = Mock::connect_from(addr, Some(ip("127.0.71.9")), "agg", "nat").await;
    assert!(nat.is_ok(), "{:?}", nat.err());
    // A client that binds no source reaches a loopback alias from 127.0.0.1 (as
    // HAProxy nodes on loopback aliases do): accepted for a loopback peer.
    let h2 = Mock::connect_from(addr, None, "agg", "h2")
        .await
        .expect("h2 from 127.0.0.1");
    let h2_local = h2.stream.local_addr().expect("its address");
    assert_eq!(h2_local.ip(), ip("127.0.0.1"));
    assert_eq!(
        remote_of(&s.core().peers[1].stats),
        Some(h2_local.to_string())
    );
    // But not from another alias, and the refusal leaves h2's session alone.
    assert_eq!(
        impostor(addr, "127.0.71.9", "h2").await,
        Some(StatusCode::UnknownPeer)
    );
    assert_eq!(
        s.core().peers[1].stats.addr_refused.load(Ordering::Relaxed),
        1
    );
    assert_eq!(
        s.core().peers[1].stats.collisions.load(Ordering::Relaxed),
        0
    );
    assert_eq!(
        s.core().peers[1].stats.state(),
        crate::section::SessionState::Established
    );
    // An unknown name gets the same answer as a wrong address: a prober learns
    // nothing about which names exist.
    assert_eq!(
        impostor(addr, "127.0.71.9", "stranger").await,
        Some(StatusCode::UnknownPeer)
    );
    assert_eq!(
        s.core().peers[2].stats.addr_refused.load(Ordering::Relaxed),
        0
    );
    drop(h2);
    d.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn our_dials_come_from_our_local_ip() {
    // The upstream is a plain listener on 127.0.72.2: it sees where we dial from.
    let up = TcpListener::bind("127.0.72.2:0").await.expect("bind");
    let up_port = up.local_addr().expect("its address").port();
    let cfg = format!(
        "aggregations t\n  peer agg 127.0.72.1:{} local\n  peer top 127.0.72.2:{up_port} up\n  peer s1\n  from .in to .out\n",
        free_port()
    );
    let loaded = load_str(&cfg, "dial.cfg").expect("valid config");
    let d = Daemon::start(loaded, Options::default())
        .await
        .expect("daemon starts");
    let (_conn, from) = tokio::time::timeout(WAIT, up.accept())
        .await
        .expect("the daemon dials its upstream")
        .expect("accept");
    assert_eq!(from.ip(), ip("127.0.72.1"));
    d.stop(Duration::from_secs(2)).await;
}

fn count_in(m: &Mock, e: &Event, table: &[u8], ip: u8) -> Option<u32> {
    match e {
        Event::Update(u) if m.table_name(u.table_id) == Some(table) => count_of(e, ip),
        _ => None,
    }
}

/// The value of `stktagg_config_reloads_total{result}` in the exposition.
fn reloads(result: &str) -> u64 {
    let text = crate::metrics::render().expect("the recorder is installed");
    let series = format!("stktagg_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_reload_changes_what_it_says_and_nothing_else() {
    let port = free_port();
    let cfg = |peers: &str, rules: &str| {
        format!(
            "aggregations t\n  peer agg 127.0.0.1:{port} local\n{peers}  from .in to .out\n{rules}"
        )
    };
    let three = "  peer s1\n  peer s2\n  peer s3\n";
    let mut d = Daemon::start(
        load_str(&cfg(three, ""), "t.cfg").expect("valid"),
        Options::default(),
    )
    .await
    .expect("daemon starts");
    let addr = d.sections[0].listen_addr();
    let input = def("/x.in");
    let other = TableDefinition {
        table_id: 8,
        ..def("/x.y")
    };
    let mut s1 = Mock::connect(addr, "agg", "s1").await.expect("200");
    let mut s2 = Mock::connect(addr, "agg", "s2").await.expect("200");
    let mut s3 = Mock::connect(addr, "agg", "s3").await.expect("200");
    s1.feed.teaches = true;
    s1.send(&input, [update(1, 5)]).await;
    // No rule takes /x.y yet: ignored.
    s1.send(&other, [update(1, 100)]).await;
    s2.send(&input, [update(1, 7)]).await;
    s3.send(&input, [update(1, 11)]).await;
    for m in [&mut s1, &mut s2, &mut s3] {
        assert!(
            m.until(WAIT, |e| count_of(e, 1) == Some(23))
                .await
                .is_some()
        );
    }

    // 1. A peer inserted before the others: nobody is renumbered.
    let four = "  peer s0\n  peer s1\n  peer s2\n  peer s3\n";
    let out = d.reload(load_str(&cfg(four, ""), "t.cfg")).await;
    let crate::reload::Outcome::Applied(lines) = &out else {
        panic!("{out:?}");
    };
    assert_eq!(lines, &["section `t`: peer `s0` added (node, (dials in))"]);
    let core = d.sections[0].core();
    assert_eq!(core.peer_by_name("s0"), Some(3));
    assert_eq!(core.peer_by_name("s1"), Some(0));
    let mut s0 = Mock::connect(addr, "agg", "s0")
        .await
        .expect("the new peer is known");
    s0.send(&input, [update(1, 2)]).await;
    for (i, m) in [&mut s1, &mut s2, &mut s0].into_iter().enumerate() {
        let got = m.until(WAIT, |e| count_of(e, 1) == Some(25)).await;
        assert!(got.is_some(), "mock {i}");
    }

    // 2. A peer removed: its session closes and its contribution leaves the sum.
    let out = d
        .reload(load_str(
            &cfg("  peer s0\n  peer s1\n  peer s2\n", ""),
            "t.cfg",
        ))
        .await;
    assert!(
        matches!(&out, crate::reload::Outcome::Applied(l) if l == &["section `t`: peer `s3` removed"]),
        "{out:?}"
    );
    assert!(
        s3.until(WAIT, |_| false).await.is_none(),
        "s3's session was closed"
    );
    for m in [&mut s1, &mut s2, &mut s0] {
        assert!(
            m.until(WAIT, |e| count_of(e, 1) == Some(14))
                .await
                .is_some()
        );
    }
    let s = &d.sections[0];
    let table = s.store.output_by_name(b"/x.out").expect("the output table");
    let key = Key::from_ipv4(Ipv4Addr::new(10, 0, 0, 1));
    let detail = s
        .store
        .detail(table, &key, s.clock.now_ms())
        .expect("the key");
    let mut sources: Vec<u16> = detail.iter().map(|c| c.source.0).collect();
    sources.sort();
    assert_eq!(sources, [0, 1, 3], "s3 (id 2) contributes nothing");
    assert_eq!(
        Mock::connect(addr, "agg", "s3").await.err(),
        Some(StatusCode::UnknownPeer),
        "a removed peer is a stranger"
    );

    // 3. A rule added: the peer that defined a table it now takes is asked for a
    // full resync, and the sum it already had never moves; the others are not asked.
    let three = "  peer s0\n  peer s1\n  peer s2\n";
    let out = d
        .reload(load_str(&cfg(three, "  from .y to .ysum\n"), "t.cfg"))
        .await;
    assert!(
        matches!(&out, crate::reload::Outcome::Applied(l) if l == &["section `t`: rule `from .y to .ysum` added"]),
        "{out:?}"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut asked = false;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(e) = s1.next(left).await else {
            panic!("/x.ysum never arrived (asked for a resync: {asked})");
        };
        asked |= matches!(e, Event::ResyncRequested);
        if let Some(v) = count_in(&s1, &e, b"/x.out", 1) {
            assert_eq!(v, 14, "the sum moved during the resync");
        }
        if count_in(&s1, &e, b"/x.ysum", 1) == Some(100) {
            break;
        }
    }
    assert!(asked, "s1 was not asked for a resync");
    let quiet = s2
        .until(Duration::from_millis(700), |e| {
            matches!(e, Event::ResyncRequested)
        })
        .await;
    assert!(
        quiet.is_none(),
        "s2's routing did not change, yet it was asked"
    );

    // 4. A broken file: nothing changes, and it is counted.
    let invalid_before = reloads("invalid");
    let out = d
        .reload(load_str(&cfg("  peer s1 nonsense\n", ""), "t.cfg"))
        .await;
    assert!(matches!(out, crate::reload::Outcome::Invalid(_)), "{out:?}");
    assert_eq!(reloads("invalid"), invalid_before + 1);
    assert!(reloads("ok") >= 3);
    let core = d.sections[0].core();
    assert_eq!(core.plan.rules.len(), 2, "the running rules stay");
    assert_eq!(core.live_peers().count(), 3);

    // The untouched sessions were never re-established, and the sums still move.
    for name in ["s0", "s1", "s2"] {
        let p = &core.peers[core.peer_by_name(name).expect("a peer")];
        assert_eq!(p.stats.sessions.load(Ordering::Relaxed), 1, "{name}");
        assert_eq!(
            p.stats.state(),
            crate::section::SessionState::Established,
            "{name}"
        );
    }
    s2.send(&input, [update(1, 8)]).await;
    assert!(
        s1.until(WAIT, |e| count_of(e, 1) == Some(15))
            .await
            .is_some()
    );
    d.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn clear_table_removes_our_entries_and_the_next_update_starts_the_sum_again() {
    let (d, addr) = start("").await;
    let input = def("/x.in");
    let mut a = Mock::connect(addr, "agg", "s1").await.expect("200");
    let mut b = Mock::connect(addr, "agg", "s2").await.expect("200");
    a.send(&input, [update(1, 5), update(2, 1)]).await;
    b.send(&input, [update(1, 7)]).await;
    assert!(
        a.until(WAIT, |e| count_of(e, 1) == Some(12))
            .await
            .is_some()
    );
    let s = &d.sections[0];
    let ctx = crate::api::ApiContext::new(d.sections.clone(), s.clock);
    let user = stktagg_config::AccessLevel::User;
    assert_eq!(
        crate::api::execute_at(&ctx, user, "clear table t/x.out key 10.0.0.1"),
        "Permission denied\n"
    );
    let op = stktagg_config::AccessLevel::Operator;
    assert_eq!(
        crate::api::execute_at(&ctx, op, "clear table t/nope"),
        "No such table\n"
    );
    assert_eq!(
        crate::api::execute_at(&ctx, op, "clear table t/x.out key 10.0.0.1"),
        "\n"
    );
    let table = s.store.output_by_name(b"/x.out").expect("the output table");
    let now = s.clock.now_ms();
    assert!(
        s.store
            .read(table, &Key::from_ipv4(Ipv4Addr::new(10, 0, 0, 1)), now)
            .is_none()
    );
    assert!(
        s.store
            .read(table, &Key::from_ipv4(Ipv4Addr::new(10, 0, 0, 2)), now)
            .is_some()
    );
    // The next update of the key is the sum again, from that source alone until
    // the others update it too.
    b.send(&input, [update(1, 8)]).await;
    assert!(a.until(WAIT, |e| count_of(e, 1) == Some(8)).await.is_some());
    a.send(&input, [update(1, 6)]).await;
    assert!(
        b.until(WAIT, |e| count_of(e, 1) == Some(14))
            .await
            .is_some()
    );
    assert_eq!(crate::api::execute_at(&ctx, op, "clear table /x.out"), "\n");
    assert_eq!(s.store.table_summaries()[0].used, 0);
    d.stop(Duration::from_secs(2)).await;
}

/// The value of a series in the exposition (0 when absent).
fn series(name_and_labels: &str) -> u64 {
    let text = crate::metrics::render().expect("the recorder is installed");
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_full_table_refuses_new_keys_counts_them_and_a_reload_resizes_it() {
    let port = free_port();
    let cfg = |size: u32| {
        format!(
            "aggregations full\n  peer agg 127.0.0.1:{port} local\n  peer s1\n  from .in to .out size {size}\n"
        )
    };
    let mut d = Daemon::start(
        load_str(&cfg(2), "t.cfg").expect("valid"),
        Options::default(),
    )
    .await
    .expect("daemon starts");
    let addr = d.sections[0].listen_addr();
    let input = def("/x.in");
    let mut a = Mock::connect(addr, "agg", "s1").await.expect("200");
    a.send(&input, [update(1, 1), update(2, 2), update(3, 3)])
        .await;
    assert!(a.until(WAIT, |e| count_of(e, 2) == Some(2)).await.is_some());
    let full = "stktagg_table_full_total{section=\"full\",table=\"/x.out\"} ";
    let deadline = tokio::time::Instant::now() + WAIT;
    while series(full) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refusal was not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = d.sections[0].clone();
    let t = s.store.table_summaries()[0].clone();
    assert_eq!((t.used, t.size), (2, 2), "nothing evicted, nothing added");
    // Existing keys still update.
    a.send(&input, [update(1, 10)]).await;
    assert!(
        a.until(WAIT, |e| count_of(e, 1) == Some(10))
            .await
            .is_some()
    );
    // A larger size applies at once to the running table.
    let out = d.reload(load_str(&cfg(3), "t.cfg")).await;
    assert!(
        matches!(&out, crate::reload::Outcome::Applied(l) if l.iter().any(|l| l.contains("size 3"))),
        "{out:?}"
    );
    assert_eq!(s.store.table_summaries()[0].size, 3);
    a.send(&input, [update(3, 4)]).await;
    assert!(a.until(WAIT, |e| count_of(e, 3) == Some(4)).await.is_some());
    d.stop(Duration::from_secs(2)).await;
}
