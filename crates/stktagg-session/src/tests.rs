//! Two engines against each other in memory, on simulated milliseconds: no sockets,
//! no sleeps.

use crate::*;
use bytes::{Bytes, BytesMut};
use stktagg_wire::{
    DataSpec, DataType, Key, KeyType, Message, StatusCode, TableDefinition, Value, WireError,
};

fn table(name: &str, expire_ms: u32) -> TableDefinition {
    TableDefinition {
        table_id: 0,
        name: Bytes::copy_from_slice(name.as_bytes()),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms,
        data: vec![DataSpec::plain(DataType::HttpReqCnt)],
    }
}

fn key(i: u8) -> Key {
    Key::from_ipv4(std::net::Ipv4Addr::new(10, 0, 0, i))
}

/// A feed with queues per phase: (table, key, count) entries.
#[derive(Debug, Default)]
struct Queues {
    teach_back: Vec<(u64, u8, u32)>,
    lesson: Vec<(u64, u8, u32)>,
    live: Vec<(u64, u8, u32)>,
    /// Pre-encoded runs sent live before `live`: (table, bytes, first update id).
    preencoded: Vec<(u64, Bytes, u32)>,
    complete: bool,
}

impl Queues {
    fn drain(q: &mut Vec<(u64, u8, u32)>, out: &mut Outbox<'_>) -> Progress {
        // Small batches, so that phases interleave with the buffer limit.
        for _ in 0..2 {
            if q.is_empty() {
                return Progress::Done;
            }
            let (t, k, v) = q.remove(0);
            let name = format!("t{t}");
            let sent = out.send(
                TableKey(t),
                || Some(table(&name, 60_000)),
                &key(k),
                &[Value::Uint(v)],
                Some(30_000),
            );
            assert!(matches!(sent, Ok(true)), "{sent:?}");
        }
        if q.is_empty() {
            Progress::Done
        } else {
            Progress::More
        }
    }
}

impl Feed for Queues {
    fn teach_back(&mut self, out: &mut Outbox<'_>) -> Progress {
        Queues::drain(&mut self.teach_back, out)
    }
    fn lesson(&mut self, out: &mut Outbox<'_>) -> Progress {
        Queues::drain(&mut self.lesson, out)
    }
    fn lesson_complete(&self) -> bool {
        self.complete
    }
    fn live(&mut self, out: &mut Outbox<'_>) -> Progress {
        if !self.preencoded.is_empty() {
            let (t, bytes, first) = self.preencoded.remove(0);
            let name = format!("t{t}");
            let sent =
                out.send_preencoded(TableKey(t), || Some(table(&name, 60_000)), &bytes, first);
            assert!(matches!(sent, Ok(true)), "{sent:?}");
            return Progress::More;
        }
        Queues::drain(&mut self.live, out)
    }
}

/// One side of a pair: its engine, its feed and what it has seen.
#[derive(Debug)]
struct Side {
    s: PeerSession,
    feed: Queues,
    events: Vec<Event>,
    /// Accept every hello (acceptor side).
    verdict: Option<StatusCode>,
    /// Stop reading (a peer that never reads) / stop writing (a silent peer).
    deaf: bool,
    mute: bool,
}

impl Side {
    fn new(s: PeerSession) -> Side {
        Side {
            s,
            feed: Queues {
                complete: true,
                ..Queues::default()
            },
            events: Vec::new(),
            verdict: Some(StatusCode::Succeeded),
            deaf: false,
            mute: false,
        }
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.s.poll_event() {
            if matches!(e, Event::HelloReceived(_)) {
                match self.verdict {
                    Some(StatusCode::Succeeded) => self.s.accept_hello(),
                    Some(code) => self.s.refuse(code),
                    None => {}
                }
            }
            self.events.push(e);
        }
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }

    fn closed(&self) -> Option<&End> {
        self.events.iter().find_map(|e| match e {
            Event::Closed(end) => Some(end),
            _ => None,
        })
    }

    /// Counts received per key, in arrival order.
    fn updates(&self) -> Vec<(u8, u64)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Update(u) => match (&u.key, u.values.first()) {
                    (k, Some(Value::Uint(v))) => Some((k.as_bytes()[3], u64::from(*v))),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }
}

/// A dialer `a` and an acceptor `b`, connected by two in-memory pipes.
#[derive(Debug)]
struct Pair {
    a: Side,
    b: Side,
    now: u64,
}

fn config(name: &str, resync: ResyncPolicy) -> SessionConfig {
    SessionConfig {
        resync,
        high_water: 256,
        ..SessionConfig::new(name)
    }
}

impl Pair {
    fn new(a_policy: ResyncPolicy, b_policy: ResyncPolicy) -> Pair {
        let a = PeerSession::dial(config("a", a_policy), "b", 0);
        let a = match a {
            Ok(a) => a,
            Err(e) => panic!("dial: {e}"),
        };
        let b = PeerSession::accept(config("b", b_policy), 0);
        Pair {
            a: Side::new(a),
            b: Side::new(b),
            now: 0,
        }
    }

    /// Moves bytes both ways and handles timers, `ms` milliseconds at a time, for
    /// `steps` steps.
    fn run(&mut self, steps: usize, ms: u64) {
        for _ in 0..steps {
            for _ in 0..50 {
                if !self.exchange() {
                    break;
                }
            }
            self.now += ms;
            for side in [&mut self.a, &mut self.b] {
                side.s.handle_timeout(self.now);
                side.drain_events();
            }
        }
    }

    /// One exchange both ways; whether any byte moved.
    fn exchange(&mut self) -> bool {
        let now = self.now;
        let ab = transfer(&mut self.a, &mut self.b, now);
        let ba = transfer(&mut self.b, &mut self.a, now);
        ab || ba
    }
}

fn transfer(from: &mut Side, to: &mut Side, now: u64) -> bool {
    if from.mute || to.deaf {
        return false;
    }
    let mut buf = BytesMut::new();
    from.s.poll_transmit(now, &mut from.feed, &mut buf);
    if buf.is_empty() {
        return false;
    }
    to.s.handle_input(now, &buf);
    to.drain_events();
    true
}

#[test]
fn the_handshake_establishes_both_sides_and_sends_heartbeats() {
    let mut p = Pair::new(ResyncPolicy::default(), ResyncPolicy::default());
    p.run(1, 1);
    assert!(p.a.s.is_established() && p.b.s.is_established());
    assert_eq!(
        p.b.count(|e| matches!(e, Event::HelloReceived(h) if h.local_name == "a")),
        1
    );
    assert_eq!(
        p.a.count(|e| matches!(e, Event::Established { downgraded: false })),
        1
    );
    // Heartbeats alone keep the session up far past the idle timeout.
    p.run(60, 500);
    assert!(p.a.closed().is_none() && p.b.closed().is_none());
}

#[test]
fn a_refused_hello_ends_both_sides_with_the_status() {
    let mut p = Pair::new(ResyncPolicy::default(), ResyncPolicy::default());
    p.b.verdict = Some(StatusCode::UnknownPeer);
    p.run(1, 1);
    assert!(matches!(
        p.b.closed(),
        Some(End::Rejected(StatusCode::UnknownPeer))
    ));
    assert!(matches!(
        p.a.closed(),
        Some(End::Refused(StatusCode::UnknownPeer))
    ));
}

#[test]
fn a_bad_hello_is_rejected_in_haproxys_order() {
    for (hello, code) in [
        (&b"HAProxyS 3.0\nb\na 1 1\n"[..], StatusCode::BadVersion),
        (b"HTTP/1.1 200\n", StatusCode::ProtocolError),
        (b"HAProxyS 2.1\nc\na 1 1\n", StatusCode::LocalPeerMismatch),
        (b"HAProxyS 2.1\nb\na\n", StatusCode::ProtocolError),
    ] {
        let mut b = PeerSession::accept(config("b", ResyncPolicy::default()), 0);
        b.handle_input(0, hello);
        let mut out = BytesMut::new();
        let mut events = Vec::new();
        while let Some(e) = b.poll_event() {
            events.push(e);
        }
        b.poll_transmit(0, &mut NothingToSend, &mut out);
        assert_eq!(out, format!("{}\n", code.code()).as_bytes());
        assert!(matches!(events.as_slice(), [Event::Closed(End::Rejected(c))] if *c == code));
    }
}

#[test]
fn a_handshake_that_never_ends_times_out() {
    let mut b = PeerSession::accept(config("b", ResyncPolicy::default()), 0);
    b.handle_input(10, b"HAProxyS 2.1\n");
    assert_eq!(b.poll_timeout(), Some(DEFAULT_HELLO_MS));
    b.handle_timeout(DEFAULT_HELLO_MS);
    assert!(matches!(
        b.poll_event(),
        Some(Event::Closed(End::HandshakeTimeout))
    ));
}

#[test]
fn a_silent_peer_is_closed_after_the_idle_timeout_but_any_byte_counts() {
    let mut p = Pair::new(ResyncPolicy::default(), ResyncPolicy::default());
    p.run(1, 1);
    p.b.mute = true;
    p.run(9, 500);
    assert!(p.a.closed().is_none(), "closed after 4.5 s");
    p.run(2, 500);
    assert!(matches!(p.a.closed(), Some(End::Silent)));
}

#[test]
fn updates_are_acknowledged_with_the_senders_table_id() {
    let mut p = Pair::new(ResyncPolicy::default(), ResyncPolicy::default());
    p.a.feed.live = vec![(7, 1, 5), (7, 2, 6), (9, 1, 1), (7, 3, 7)];
    p.run(3, 1);
    assert_eq!(p.b.updates(), vec![(1, 5), (2, 6), (1, 1), (3, 7)]);
    // Table 7 was defined first (our id 1), table 9 second (our id 2); the switch
    // back to 7 re-sends its definition, as HAProxy does.
    assert_eq!(
        p.b.count(|e| matches!(e, Event::TableDefined(d) if d.table_id == 1)),
        2
    );
    let acked: Vec<_> =
        p.a.events
            .iter()
            .filter_map(|e| match e {
                Event::Acked {
                    table_id,
                    update_id,
                } => Some((*table_id, *update_id)),
                _ => None,
            })
            .collect();
    assert!(
        acked.contains(&(1, 3)) && acked.contains(&(2, 1)),
        "{acked:?}"
    );
    assert_eq!(p.a.s.updates_sent(), 4);
}

fn asker() -> ResyncPolicy {
    ResyncPolicy {
        ask_on_start: true,
        retry_after_partial_ms: Some(1_000),
        ..ResyncPolicy::default()
    }
}

#[test]
fn a_full_resync_teaches_then_finishes_and_is_confirmed() {
    let mut p = Pair::new(asker(), ResyncPolicy::default());
    p.b.feed.lesson = vec![(1, 1, 10), (1, 2, 20), (1, 3, 30)];
    p.run(3, 1);
    assert_eq!(p.a.count(|e| matches!(e, Event::ResyncAsked)), 1);
    assert_eq!(p.b.count(|e| matches!(e, Event::ResyncRequested)), 1);
    assert_eq!(p.a.updates(), vec![(1, 10), (2, 20), (3, 30)]);
    assert_eq!(
        p.a.count(|e| matches!(e, Event::ResyncEnded { finished: true })),
        1
    );
    assert_eq!(p.a.s.learning(), Learning::Finished);
    assert_eq!(p.b.count(|e| matches!(e, Event::Confirmed)), 1);
    assert_eq!(p.b.s.teaching(), Teaching::Idle);
    // No retry after FINISHED.
    p.run(10, 500);
    assert_eq!(p.a.count(|e| matches!(e, Event::ResyncAsked)), 1);
}

#[test]
fn partial_is_asked_again_after_the_retry_delay() {
    let mut p = Pair::new(asker(), ResyncPolicy::default());
    p.b.feed.complete = false;
    p.run(2, 1);
    assert_eq!(
        p.a.count(|e| matches!(e, Event::ResyncEnded { finished: false })),
        1
    );
    assert!(matches!(
        p.a.s.learning(),
        Learning::Partial { retry_at: Some(_) }
    ));
    p.run(5, 100);
    assert_eq!(
        p.a.count(|e| matches!(e, Event::ResyncAsked)),
        1,
        "too early"
    );
    p.b.feed.complete = true;
    p.run(6, 100);
    assert_eq!(p.a.count(|e| matches!(e, Event::ResyncAsked)), 2);
    assert_eq!(p.a.s.learning(), Learning::Finished);
}

#[test]
fn a_node_that_answered_partial_is_asked_again_once_it_confirms_our_lesson() {
    // `a` plays the aggregator: it asks the node at once, and again when the node
    // confirms our lesson; `b` plays a node that is still learning (PARTIAL) and asks
    // for our lesson.
    let a = ResyncPolicy {
        ask_on_start: true,
        retry_after_partial_ms: Some(5_000),
        retry_on_confirm: true,
        ..ResyncPolicy::default()
    };
    let mut p = Pair::new(a, ResyncPolicy::default());
    p.b.feed.complete = false;
    p.run(2, 1);
    assert_eq!(
        p.a.count(|e| matches!(e, Event::ResyncEnded { finished: false })),
        1
    );
    p.b.feed.complete = true;
    p.b.s.request_resync();
    p.a.feed.lesson = vec![(1, 1, 1)];
    p.run(3, 1);
    assert_eq!(p.a.count(|e| matches!(e, Event::Confirmed)), 1);
    assert_eq!(
        p.a.count(|e| matches!(e, Event::ResyncAsked)),
        2,
        "asked again at once"
    );
    assert_eq!(p.a.s.learning(), Learning::Finished);
}

#[test]
fn teach_back_comes_first_then_the_lesson_then_live_changes() {
    let mut p = Pair::new(ResyncPolicy::default(), ResyncPolicy::default());
    p.run(1, 1);
    p.b.feed.teach_back = vec![(100, 1, 1), (100, 2, 2), (100, 3, 3)];
    p.b.feed.lesson = vec![(1, 1, 11), (1, 2, 12), (1, 3, 13)];
    p.b.feed.live = vec![(1, 4, 14)];
    // The request reaches `b` before it next writes: its whole output is ordered.
    p.a.s.request_resync();
    p.run(4, 1);
    let order: Vec<_> =
        p.a.events
            .iter()
            .filter_map(|e| match e {
                Event::Update(_) => Some("u"),
                Event::ResyncEnded { .. } => Some("end"),
                _ => None,
            })
            .collect();
    assert_eq!(
        p.a.updates(),
        vec![(1, 1), (2, 2), (3, 3), (1, 11), (2, 12), (3, 13), (4, 14)]
    );
    assert_eq!(order, vec!["u", "u", "u", "u", "u", "u", "end", "u"]);
}

#[test]
fn teach_back_acked_in_full_makes_us_ask_for_a_resync() {
    let a = ResyncPolicy {
        ask_after_teach_back: true,
        ..ResyncPolicy::default()
    };
    let b = ResyncPolicy {
        ask_on_start: true,
        ..ResyncPolicy::default()
    };
    // `b` (a restarted node) asks; `a` teaches its entries back, and once `b` has
    // acknowledged every one, `a` asks `b` for a resync.
    let mut p = Pair::new(a, b);
    p.a.feed.teach_back = vec![(100, 1, 1), (101, 2, 2)];
    p.run(4, 1);
    assert_eq!(p.b.updates(), vec![(1, 1), (2, 2)]);
    assert_eq!(p.a.count(|e| matches!(e, Event::ResyncAsked)), 1);
    assert_eq!(p.b.count(|e| matches!(e, Event::ResyncRequested)), 1);
}

#[test]
fn bad_bytes_get_haproxys_reply_and_the_other_side_sees_the_complaint() {
    let mut p = Pair::new(ResyncPolicy::default(), ResyncPolicy::default());
    p.run(1, 1);
    // Class 255 is reserved: a protocol error.
    p.b.s.handle_input(p.now, &[0xff, 0x00]);
    p.b.drain_events();
    assert!(matches!(p.b.closed(), Some(End::Protocol(_))));
    p.run(1, 1);
    assert!(matches!(
        p.a.closed(),
        Some(End::PeerError(PeerComplaint::ProtocolError))
    ));
}

#[test]
fn a_downgraded_peer_never_gets_timed_updates() {
    let mut b = PeerSession::accept(config("b", ResyncPolicy::default()), 0);
    b.handle_input(0, b"HAProxyS 2.0\nb\na 1 1\n");
    while let Some(e) = b.poll_event() {
        if matches!(e, Event::HelloReceived(_)) {
            b.accept_hello();
        }
    }
    let mut feed = Queues {
        live: vec![(1, 1, 1)],
        ..Queues::default()
    };
    let mut out = BytesMut::new();
    b.poll_transmit(0, &mut feed, &mut out);
    // Decode what b sent, after its status line.
    let mut d = stktagg_wire::Decoder::new();
    let at = out.iter().position(|&c| c == b'\n').map_or(0, |i| i + 1);
    let mut rest = out.split_off(at);
    let mut kinds = Vec::new();
    while let Ok(Some(m)) = d.decode(&mut rest) {
        if let Message::Update(u) = m {
            kinds.push(u.kind);
        }
    }
    assert_eq!(kinds, vec![stktagg_wire::UpdateKind::Full]);
}

#[test]
fn a_write_buffer_over_its_high_water_mark_stops_the_feed() {
    let mut p = Pair::new(ResyncPolicy::default(), ResyncPolicy::default());
    p.run(1, 1);
    p.a.feed.live = (0..200).map(|i| (1, i as u8, i)).collect();
    let mut buf = BytesMut::new();
    p.a.s.poll_transmit(p.now, &mut p.a.feed, &mut buf);
    assert!(buf.len() >= 256 && buf.len() < 512, "{}", buf.len());
    assert!(!p.a.feed.live.is_empty());
}

#[test]
fn an_update_encoded_once_is_framed_by_each_session() {
    // One shared encoding, sent on two sessions whose table ids differ.
    let d = table("t1", 0);
    let shared = stktagg_wire::SharedUpdate::encode(&d, &key(7), &[Value::Uint(42)])
        .unwrap()
        .unwrap();
    struct SharedFeed(stktagg_wire::SharedUpdate, bool);
    impl Feed for SharedFeed {
        fn live(&mut self, out: &mut Outbox<'_>) -> Progress {
            if std::mem::take(&mut self.1) {
                // Another table first on this session, so that ids differ.
                let sent = out.send(
                    TableKey(9),
                    || Some(table("t9", 0)),
                    &key(1),
                    &[Value::Uint(1)],
                    None,
                );
                assert!(matches!(sent, Ok(true)));
            }
            let sent = out.send_shared(TableKey(1), || Some(table("t1", 0)), &self.0);
            assert!(matches!(sent, Ok(true)), "{sent:?}");
            Progress::Done
        }
    }
    for other_first in [false, true] {
        let mut p = Pair::new(ResyncPolicy::default(), ResyncPolicy::default());
        p.run(1, 1);
        let mut feed = SharedFeed(shared.clone(), other_first);
        let mut buf = BytesMut::new();
        p.a.s.poll_transmit(p.now, &mut feed, &mut buf);
        p.b.s.handle_input(p.now, &buf);
        p.b.drain_events();
        assert!(p.b.updates().contains(&(7, 42)), "{:?}", p.b.updates());
        let t1 = p.b.events.iter().find_map(|e| match e {
            Event::TableDefined(d) if &d.name[..] == b"t1" => Some(d.table_id),
            _ => None,
        });
        assert_eq!(t1, Some(if other_first { 2 } else { 1 }));
    }
}
/// Update messages of a `table(_, _)` table, encoded apart from any session: keys
/// `10.0.0.k` with count `v`, ids `first..`, the first in full form.
fn preencode(first: u32, entries: &[(u8, u32)]) -> Bytes {
    let mut enc = stktagg_wire::Encoder::new();
    let mut out = BytesMut::new();
    let def = TableDefinition {
        table_id: 1,
        ..table("any", 60_000)
    };
    let r = enc.encode(&Message::TableDefinition(def), &mut out);
    assert!(r.is_ok(), "{r:?}");
    out.clear();
    for (i, &(k, v)) in entries.iter().enumerate() {
        let update_id = first.wrapping_add(i as u32);
        let u = stktagg_wire::Update {
            kind: enc.update_kind(1, update_id, false),
            table_id: 1,
            update_id,
            expire_ms: None,
            key: key(k),
            values: vec![Value::Uint(v)],
        };
        let r = enc.encode(&Message::Update(u), &mut out);
        assert!(r.is_ok(), "{r:?}");
    }
    out.freeze()
}

/// The update ids a session received, in order, and whether each carried its id
/// (rather than following the one before).
fn received_ids(side: &Side) -> Vec<(u32, bool)> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::Update(u) => Some((u.update_id, u.kind.has_id())),
            _ => None,
        })
        .collect()
}

#[test]
fn preencoded_runs_continue_the_sessions_update_ids() {
    let (carried, follows) = (true, false);
    let mut p = Pair::new(ResyncPolicy::default(), ResyncPolicy::default());
    p.run(1, 1);
    let run = preencode(1, &[(1, 10), (2, 20), (3, 30), (4, 40)]);
    // The run cut in two at a message boundary, then an entry sent the usual way:
    // ids 1 to 4 from the run, 5 from the engine, all in one table.
    let cut = {
        let one = preencode(1, &[(1, 10), (2, 20)]);
        one.len()
    };
    p.a.feed.preencoded = vec![(7, run.slice(..cut), 1), (7, run.slice(cut..), 3)];
    p.a.feed.live = vec![(7, 5, 50)];
    p.run(3, 1);
    assert_eq!(
        p.b.updates(),
        vec![(1, 10), (2, 20), (3, 30), (4, 40), (5, 50)]
    );
    assert_eq!(
        received_ids(&p.b),
        vec![
            (1, carried),
            (2, follows),
            (3, follows),
            (4, follows),
            (5, follows)
        ]
    );
    assert_eq!(p.a.s.updates_sent(), 5);
    assert!(
        p.a.events.iter().any(|e| matches!(
            e,
            Event::Acked {
                table_id: 1,
                update_id: 5
            }
        )),
        "{:?}",
        p.a.events
    );
    // A second table in between re-sends the first one's definition: the next run
    // of the first table must start with an id, and one that does is followed.
    p.a.feed.live = vec![(8, 1, 1)];
    p.run(2, 1);
    p.a.feed.preencoded = vec![(7, preencode(100, &[(6, 60), (7, 70)]), 100)];
    p.run(2, 1);
    assert_eq!(
        received_ids(&p.b)[5..],
        [(1, carried), (100, carried), (101, follows)]
    );
    assert_eq!(
        p.b.count(|e| matches!(e, Event::TableDefined(d) if d.table_id == 1)),
        2
    );
    assert_eq!(p.a.s.updates_sent(), 8);
}

/// One pre-encoded run to send, and what sending it gave.
struct OneRun {
    def: TableDefinition,
    run: Bytes,
    first_update_id: u32,
    result: Option<Result<bool, PreencodedError>>,
}

impl Feed for OneRun {
    fn live(&mut self, out: &mut Outbox<'_>) -> Progress {
        if self.result.is_none() {
            let def = self.def.clone();
            self.result = Some(out.send_preencoded(
                TableKey(1),
                || Some(def),
                &self.run,
                self.first_update_id,
            ));
        }
        Progress::Done
    }
}

/// On a fresh session (accepted from a 2.0 peer when `downgraded`), sends
/// `before` (which must be accepted), then `run`; returns what sending `run` gave
/// and the bytes written for it.
fn try_preencoded(
    downgraded: bool,
    def: &TableDefinition,
    before: Option<(Bytes, u32)>,
    run: &[u8],
    first_update_id: u32,
) -> (Result<bool, PreencodedError>, BytesMut) {
    let mut s = PeerSession::accept(config("b", ResyncPolicy::default()), 0);
    let version = if downgraded { "2.0" } else { "2.1" };
    s.handle_input(0, format!("HAProxyS {version}\nb\na 1 1\n").as_bytes());
    while let Some(e) = s.poll_event() {
        if matches!(e, Event::HelloReceived(_)) {
            s.accept_hello();
        }
    }
    let mut out = BytesMut::new();
    s.poll_transmit(0, &mut NothingToSend, &mut out);
    if let Some((run, first_update_id)) = before {
        let mut feed = OneRun {
            def: def.clone(),
            run,
            first_update_id,
            result: None,
        };
        s.poll_transmit(0, &mut feed, &mut out);
        assert!(matches!(feed.result, Some(Ok(true))), "{:?}", feed.result);
    }
    out.clear();
    let mut feed = OneRun {
        def: def.clone(),
        run: Bytes::copy_from_slice(run),
        first_update_id,
        result: None,
    };
    s.poll_transmit(0, &mut feed, &mut out);
    let result = feed.result.take();
    let result = result.unwrap_or_else(|| panic!("the feed was not called"));
    (result, out)
}

#[test]
fn preencoded_runs_that_would_break_the_session_are_refused() {
    let def = table("t", 60_000);
    let good = preencode(1, &[(1, 1), (2, 2), (3, 3)]);
    let first_len = preencode(1, &[(1, 1)]).len();
    let ok = |r: &Result<bool, PreencodedError>| matches!(r, Ok(true));

    // The run as built: accepted.
    let (r, out) = try_preencoded(false, &def, None, &good, 1);
    assert!(ok(&r), "{r:?}");
    assert!(out.ends_with(&good));

    // Announced under another id than the one it carries.
    let (r, out) = try_preencoded(false, &def, None, &good, 2);
    assert!(
        matches!(
            r,
            Err(PreencodedError::Wire(WireError::IncrementalIdMismatch {
                expected: Some(1),
                got: 2
            }))
        ),
        "{r:?}"
    );
    assert!(out.is_empty(), "nothing is written for a refused run");

    // An incremental first update right after the definition: its id is unknown to
    // the receiver.
    let (r, _) = try_preencoded(false, &def, None, &good[first_len..], 2);
    assert!(
        matches!(
            r,
            Err(PreencodedError::Wire(WireError::IncrementalIdMismatch {
                expected: None,
                got: 2
            }))
        ),
        "{r:?}"
    );
    // ... but accepted as the continuation of the run before it, and only with the
    // next id.
    let head = Some((good.slice(..first_len), 1));
    let (r, out) = try_preencoded(false, &def, head.clone(), &good[first_len..], 2);
    assert!(ok(&r), "{r:?}");
    assert_eq!(&out[..], &good[first_len..]);
    let (r, _) = try_preencoded(false, &def, head, &good[first_len..], 3);
    assert!(
        matches!(
            r,
            Err(PreencodedError::Wire(WireError::IncrementalIdMismatch {
                expected: Some(2),
                got: 3
            }))
        ),
        "{r:?}"
    );

    // Not updates: a heartbeat, a message cut short.
    let (r, _) = try_preencoded(false, &def, None, &[0, 4], 1);
    assert!(
        matches!(r, Err(PreencodedError::NotAnUpdate { offset: 0 })),
        "{r:?}"
    );
    let (r, _) = try_preencoded(false, &def, None, &good[..good.len() - 1], 1);
    assert!(
        matches!(r, Err(PreencodedError::NotAnUpdate { offset }) if offset > 0),
        "{r:?}"
    );

    // Over the size limit (a length announcing 20000 bytes, the default limit
    // being 16384).
    let mut big = BytesMut::from(&[10u8, 0x80][..]);
    stktagg_wire::varint::encode(20_000, &mut big);
    let (r, _) = try_preencoded(false, &def, None, &big, 1);
    assert!(
        matches!(r, Err(PreencodedError::Oversized { offset: 0, .. })),
        "{r:?}"
    );

    // A timed update to a peer that speaks 2.0.
    // Id 1, expire 5 ms, key 10.0.0.1, count 7.
    let timed = [10, 0x85, 13, 0, 0, 0, 1, 0, 0, 0, 5, 10, 0, 0, 1, 7];
    let (r, _) = try_preencoded(true, &def, None, &timed, 1);
    assert!(
        matches!(r, Err(PreencodedError::TimedToDowngraded { offset: 0 })),
        "{r:?}"
    );

    // A table with dictionary data: the session's dictionary cache would not know
    // what the run sent.
    let dict = TableDefinition {
        data: vec![DataSpec::plain(DataType::ServerKey)],
        ..def.clone()
    };
    let (r, _) = try_preencoded(false, &dict, None, &good[..first_len], 1);
    assert!(
        matches!(
            r,
            Err(PreencodedError::Wire(WireError::InvalidDefinition { .. }))
        ),
        "{r:?}"
    );
}

/// Sends entries of a table with dictionary data (`server_key`), all naming the same
/// server: the first in full, the others through the dictionary cache.
#[derive(Debug)]
struct DictFeed(usize);

impl Feed for DictFeed {
    fn live(&mut self, out: &mut Outbox<'_>) -> Progress {
        let def = TableDefinition {
            data: vec![DataSpec::plain(DataType::ServerKey)],
            ..table("servers", 0)
        };
        while self.0 > 0 {
            let name = stktagg_wire::DictValue::Name(Bytes::from_static(b"srv1"));
            let def = def.clone();
            let sent = out.send(
                TableKey(50),
                || Some(def),
                &key(self.0 as u8),
                &[Value::Dict(name)],
                None,
            );
            assert!(matches!(sent, Ok(true)), "{sent:?}");
            self.0 -= 1;
        }
        Progress::Done
    }
}

#[test]
fn a_counting_receiver_acknowledges_and_counts_without_update_events() {
    let a = PeerSession::dial(config("a", ResyncPolicy::default()), "b", 0);
    let a = a.unwrap_or_else(|e| panic!("dial: {e}"));
    let b = PeerSession::accept(
        SessionConfig {
            decode_updates: false,
            ..config("b", ResyncPolicy::default())
        },
        0,
    );
    let mut p = Pair {
        a: Side::new(a),
        b: Side::new(b),
        now: 0,
    };
    p.run(1, 1);
    // Full and incremental forms, timed and not, and table switches (ids are per
    // table).
    p.a.feed.live = vec![(7, 1, 5), (7, 2, 6), (9, 1, 1), (7, 3, 7), (8, 1, 1)];
    p.run(3, 1);
    assert_eq!(p.b.s.updates_received(), 5);
    assert!(p.b.updates().is_empty(), "{:?}", p.b.updates());
    // The definitions are still reported.
    assert_eq!(p.b.count(|e| matches!(e, Event::TableDefined(_))), 4);
    let acked = |side: &Side, table: u32, id: u32| {
        side.events.iter().any(|e| {
            matches!(e, Event::Acked { table_id, update_id } if *table_id == table && *update_id == id)
        })
    };
    assert!(acked(&p.a, 1, 3) && acked(&p.a, 2, 1) && acked(&p.a, 3, 1));
    // A table with dictionary data is decoded whole, so that the cache follows
    // (the later entries name the server by its cache slot), and only counted.
    let mut dict = DictFeed(3);
    let mut buf = BytesMut::new();
    p.a.s.poll_transmit(p.now, &mut dict, &mut buf);
    p.b.s.handle_input(p.now, &buf);
    p.b.drain_events();
    assert!(p.b.closed().is_none(), "{:?}", p.b.closed());
    assert_eq!(p.b.s.updates_received(), 8);
    assert!(p.b.updates().is_empty());
    p.run(2, 1);
    assert!(acked(&p.a, 4, 3));
}
