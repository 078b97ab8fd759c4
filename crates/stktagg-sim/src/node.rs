//! A simulated HAProxy node: the protocol engine playing a node with HAProxy 2.6's
//! behaviour (`/work/shared/docs/peers-protocol.md` §2.5, §4, §8):
//!
//! - its own counters in its `<base>.uncombined` tables, 32-bit, wrapping as 2.6's
//!   `http_req_cnt` and `gpc0` do, and a 10 s request rate (HAProxy's
//!   frequency-counter update rule); no `conn_cur` (2.6 never learns it);
//! - the tables it learns (`<base>.aggr`, `<base>.l2`) kept as they arrive;
//! - on start without its state, it asks its first established peer for a full
//!   resync and holds its pushes to that peer until the lesson ends (FINISHED or
//!   PARTIAL); after FINISHED, or 5 s with nobody to ask, or 5 s after a PARTIAL,
//!   it is up to date; a session that drops while it is asked is asked again on
//!   the next one;
//! - entries of its own `.uncombined` tables taught to it (teach-back) become its
//!   local values again (it is not pushed live: only a local change is);
//! - asked for a resync, it teaches every entry of every table, then FINISHED if it
//!   is up to date, PARTIAL otherwise;
//! - it pushes each local change with the entry's full values, and every local
//!   entry on a new session;
//! - one session per peer, the newest wins; redial 50 to 2050 ms after a session
//!   ends, 5 s after a failed dial.
//!
//! The node also keeps, for the simulation's oracle, the highest value each of its
//! counters ever reached (`peaks`): what any aggregator may hold of it is one of
//! the values it had, so the sum of peaks bounds any correct aggregate.

use crate::aggregator::SIM_HIGH_WATER;
use crate::endpoint::{Cx, Endpoint, earliest};
use crate::net::{ACCEPTOR, DIALER};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use stktagg_session::{End, Event, Feed, Outbox, PeerSession, Progress, SessionConfig, TableKey};
use stktagg_wire::{DataSpec, DataType, FreqCtr, Key, KeyType, StatusCode, TableDefinition, Value};

/// HAProxy's `PEER_RESYNC_TIMEOUT`.
const RESYNC_TIMEOUT_MS: u64 = 5_000;
/// HAProxy's `PEER_RECONNECT_TIMEOUT`, after a failed dial.
const RECONNECT_MS: u64 = 5_000;
/// The tables' `expire` (never reached in a run: expiry is not simulated).
pub const EXPIRE_MS: u32 = 120_000;
/// The request rate's period.
pub const RATE_PERIOD_MS: u32 = 10_000;
/// Entries sent per feed call.
const BATCH: usize = 64;

/// A family of tables: `<base>.uncombined`, `<base>.aggr`, `<base>.l2`.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The name before the suffix, as on the wire (`/ip`).
    pub base: &'static str,
    /// Its key type.
    pub key_type: KeyType,
    /// Whether it stores the request rate.
    pub rate: bool,
}

/// The families of the topologies' node configuration (`tests/topologies/*/
/// node.cfg.tmpl`): IP-keyed with a rate, string-keyed without.
pub const FAMILIES: [Family; 2] = [
    Family {
        base: "/ip",
        key_type: KeyType::Ipv4,
        rate: true,
    },
    Family {
        base: "/str",
        key_type: KeyType::String,
        rate: false,
    },
];

impl Family {
    /// The table definition of `<base><suffix>` on a node.
    pub fn definition(&self, suffix: &str) -> TableDefinition {
        let mut data = vec![
            DataSpec::plain(DataType::Gpc0),
            DataSpec::plain(DataType::HttpReqCnt),
        ];
        if self.rate {
            data.push(DataSpec {
                data_type: DataType::HttpReqRate,
                period_ms: RATE_PERIOD_MS,
                nbelem: 0,
            });
        }
        TableDefinition {
            table_id: 0,
            name: Bytes::from(format!("{}{suffix}", self.base)),
            key_type: self.key_type,
            key_len: match self.key_type {
                KeyType::String => 33,
                _ => 4,
            },
            expire_ms: EXPIRE_MS,
            data,
        }
    }

    /// The `i`-th key of the family.
    pub fn key(&self, i: usize) -> Key {
        match self.key_type {
            KeyType::String => Key::from_str_bytes(format!("client-{i}")),
            _ => Key::from_ipv4(std::net::Ipv4Addr::new(10, 0, 0, i as u8 + 1)),
        }
    }
}

/// The two summed counters of an entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `http_req_cnt`.
    pub cnt: u32,
    /// `gpc0`.
    pub gpc0: u32,
}

impl Counters {
    /// Each counter the larger of the two.
    pub fn max(self, o: Counters) -> Counters {
        Counters {
            cnt: self.cnt.max(o.cnt),
            gpc0: self.gpc0.max(o.gpc0),
        }
    }

    /// Saturating sums, as the aggregator sums 32-bit counters.
    pub fn saturating_add(self, o: Counters) -> Counters {
        Counters {
            cnt: self.cnt.saturating_add(o.cnt),
            gpc0: self.gpc0.saturating_add(o.gpc0),
        }
    }

    /// Both counters at most the other's.
    pub fn within(self, bound: Counters) -> bool {
        self.cnt <= bound.cnt && self.gpc0 <= bound.gpc0
    }

    /// The counters of values laid out as `data`.
    pub fn of(values: &[Value], data: &[DataSpec]) -> Counters {
        let mut c = Counters::default();
        for (v, d) in values.iter().zip(data) {
            match (d.data_type, v) {
                (DataType::HttpReqCnt, Value::Uint(x)) => c.cnt = *x,
                (DataType::Gpc0, Value::Uint(x)) => c.gpc0 = *x,
                _ => {}
            }
        }
        c
    }
}

/// HAProxy's frequency counter (`freq_ctr`), with its update rule.
#[derive(Debug, Clone, Copy, Default)]
pub struct Freq {
    tick: u32,
    curr: u32,
    prev: u32,
}

impl Freq {
    fn add(&mut self, now: u32, n: u32) {
        let p = RATE_PERIOD_MS;
        if now.wrapping_sub(self.tick) >= p {
            self.prev = self.curr;
            self.curr = 0;
            self.tick = self.tick.wrapping_add(p);
            if now.wrapping_sub(self.tick) >= p {
                self.prev = 0;
                self.tick = now;
            }
        }
        self.curr = self.curr.wrapping_add(n);
    }

    fn wire(self, now: u32) -> FreqCtr {
        FreqCtr {
            age: now.wrapping_sub(self.tick),
            curr: self.curr,
            prev: self.prev,
        }
    }

    fn from_wire(f: FreqCtr, now: u32) -> Freq {
        Freq {
            tick: now.wrapping_sub(f.age),
            curr: f.curr,
            prev: f.prev,
        }
    }
}

/// One entry of a node's table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Entry {
    /// Its counters.
    pub c: Counters,
    rate: Freq,
}

/// One of the node's tables.
#[derive(Debug, Clone)]
pub struct NodeTable {
    /// Its family, by index in [`FAMILIES`].
    pub family: usize,
    /// Its suffix (`.uncombined`, `.aggr`, `.l2`).
    pub suffix: &'static str,
    /// Its definition.
    pub def: TableDefinition,
}

impl NodeTable {
    /// Whether it holds the node's own counts.
    pub fn is_local(&self) -> bool {
        self.suffix == ".uncombined"
    }
}

/// Where the node stands in its own full resync (HAProxy's section state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncState {
    /// Learning from a peer: ask the first established one, until `deadline` if
    /// none is asked; after a PARTIAL, that peer is not asked again.
    Learning { deadline: u64, skip: bool },
    /// Up to date.
    Finished,
}

/// A session's own state, beside its engine.
#[derive(Debug, Default)]
struct SessionState {
    /// The peer's table definitions, by its table id.
    peer_defs: BTreeMap<u32, TableDefinition>,
    /// Local entries changed and not pushed yet.
    dirty: BTreeSet<(usize, Key)>,
    /// The lesson still to teach.
    lesson: VecDeque<(usize, Key)>,
    /// A lesson was asked for and has not started.
    lesson_due: bool,
    /// We asked this peer for our resync and it has not ended the lesson.
    assigned: bool,
}

#[derive(Debug)]
struct Running {
    ep: Endpoint,
    s: SessionState,
}

/// One simulated HAProxy node (see the module documentation).
#[derive(Debug)]
pub struct Node {
    /// Its peer name.
    pub name: String,
    proc: usize,
    /// Its one peer: the aggregator's name and address.
    peer: (String, String),
    /// Its tables, in the order of its configuration.
    pub tables: Vec<NodeTable>,
    /// Their entries.
    pub entries: Vec<BTreeMap<Key, Entry>>,
    /// The highest counters each local entry ever had (the oracle's memory: it
    /// survives restarts).
    pub peaks: BTreeMap<(usize, Key), Counters>,
    /// Learned entries changed since the oracle last looked.
    pub view_changes: Vec<(usize, Key)>,
    /// After a restart without its tables: the counts its aggregator held for it
    /// then, which teach-back must give back (set by the oracle; dropped when the
    /// node gives up learning, as HAProxy does after 5 s without a peer).
    pub debt: Option<BTreeMap<(usize, Key), Counters>>,
    /// Whether it is running.
    pub alive: bool,
    /// Whether it receives traffic.
    pub traffic: bool,
    keys_per_family: usize,
    sync: SyncState,
    running: Option<Running>,
    dialing: Option<(Endpoint, u64)>,
    handshakes: Vec<(Endpoint, u64)>,
    next_dial: u64,
    next_traffic: u64,
    forced: bool,
}

impl Node {
    /// A node that has been running for a while: up to date, with counts for most
    /// keys (a few close to 2^32, so that they wrap during the run).
    pub fn new(
        name: String,
        proc: usize,
        peer: (String, String),
        suffixes: &[&'static str],
        keys_per_family: usize,
        cx: &mut Cx<'_>,
    ) -> Node {
        let mut tables = Vec::new();
        for (f, fam) in FAMILIES.iter().enumerate() {
            for s in suffixes {
                tables.push(NodeTable {
                    family: f,
                    suffix: s,
                    def: fam.definition(s),
                });
            }
        }
        let mut node = Node {
            name,
            proc,
            peer,
            entries: vec![BTreeMap::new(); tables.len()],
            tables,
            peaks: BTreeMap::new(),
            view_changes: Vec::new(),
            debt: None,
            alive: true,
            traffic: true,
            keys_per_family,
            sync: SyncState::Finished,
            running: None,
            dialing: None,
            handshakes: Vec::new(),
            next_dial: cx.now + cx.rng.range(0, 50),
            next_traffic: cx.now + cx.rng.range(0, 100),
            forced: false,
        };
        let now32 = cx.now as u32;
        for t in 0..node.tables.len() {
            if !node.tables[t].is_local() {
                continue;
            }
            let fam = FAMILIES[node.tables[t].family];
            for i in 0..keys_per_family {
                if !cx.rng.chance(3, 4) {
                    continue;
                }
                // Key 0 is a counter about to wrap.
                let cnt = if i == 0 {
                    u32::MAX - cx.rng.range(0, 40) as u32
                } else {
                    cx.rng.range(1, 1000) as u32
                };
                let mut e = Entry {
                    c: Counters {
                        cnt,
                        gpc0: cx.rng.range(0, 20) as u32,
                    },
                    rate: Freq::default(),
                };
                e.rate.add(now32, 1);
                node.set_local(t, fam.key(i), e);
            }
        }
        cx.trace.log(cx.now, &node.name, format_args!("starts"));
        node
    }

    /// The index of `<family><suffix>`.
    pub fn table_index(&self, family: usize, suffix: &str) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.family == family && t.suffix == suffix)
    }

    fn set_local(&mut self, t: usize, key: Key, e: Entry) {
        let peak = self.peaks.entry((t, key.clone())).or_default();
        *peak = peak.max(e.c);
        self.entries[t].insert(key, e);
    }

    /// The node dies: its sessions are gone (the network closes its connections).
    pub fn kill(&mut self) {
        self.alive = false;
        self.running = None;
        self.dialing = None;
        self.handshakes.clear();
    }

    /// The node starts again, with its tables (a reload: it learned them from its
    /// old process) or without (it must learn from its peers).
    pub fn restart(&mut self, keep_state: bool, cx: &mut Cx<'_>) {
        self.alive = true;
        if keep_state {
            // A reload: the new process learns the old one's tables, and is up to
            // date if the old one was; otherwise it goes on learning from its peers.
            if let SyncState::Learning { .. } = self.sync {
                self.sync = SyncState::Learning {
                    deadline: cx.now + RESYNC_TIMEOUT_MS,
                    skip: false,
                };
            }
        } else {
            for t in &mut self.entries {
                t.clear();
            }
            self.sync = SyncState::Learning {
                deadline: cx.now + RESYNC_TIMEOUT_MS,
                skip: false,
            };
        }
        self.next_dial = cx.now + cx.rng.range(0, 50);
        cx.trace.log(
            cx.now,
            &self.name,
            format_args!(
                "restarts {}",
                if keep_state {
                    "with its tables"
                } else {
                    "empty"
                }
            ),
        );
    }

    /// A fault: dial the aggregator now, whatever the running session.
    pub fn force_dial(&mut self, cx: &mut Cx<'_>) {
        if let Some((ep, _)) = self.dialing.take() {
            ep.close(cx);
        }
        self.forced = true;
        self.next_dial = cx.now;
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            pid: self.proc as u32,
            high_water: SIM_HIGH_WATER,
            ..SessionConfig::new(self.name.clone())
        }
    }

    /// When the node next has something to do on its own.
    pub fn wake_at(&self, now: u64, net: &crate::net::Net) -> Option<u64> {
        let mut t = None;
        if self.traffic {
            t = Some(self.next_traffic);
        }
        if let SyncState::Learning { deadline, .. } = self.sync {
            t = earliest(t, Some(deadline));
        }
        if (self.running.is_none() || self.forced) && self.dialing.is_none() {
            t = earliest(t, Some(self.next_dial));
        }
        if let Some((ep, deadline)) = &self.dialing {
            t = earliest(t, earliest(ep.wake_at(now, net), Some(*deadline)));
        }
        for (ep, deadline) in &self.handshakes {
            t = earliest(t, earliest(ep.wake_at(now, net), Some(*deadline)));
        }
        if let Some(r) = &self.running {
            if !r.s.dirty.is_empty() && !r.s.assigned {
                t = earliest(t, Some(now + 1));
            }
            t = earliest(t, r.ep.wake_at(now, net));
        }
        t
    }

    /// One step at `cx.now`.
    pub fn step(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        if self.traffic && now >= self.next_traffic {
            self.traffic_tick(cx);
            self.next_traffic = now + cx.rng.range(100, 300);
        }
        if let SyncState::Learning { deadline, .. } = self.sync
            && now >= deadline
            && !self.running.as_ref().is_some_and(|r| r.s.assigned)
        {
            self.sync = SyncState::Finished;
            let what = if self.debt.take().is_some() {
                "resync timer expired before any lesson: its old counts are lost"
            } else {
                "resync timer expired: up to date"
            };
            cx.trace.log(now, &self.name, format_args!("{what}"));
        }
        for conn in cx.net.take_accepts(self.proc) {
            let engine = PeerSession::accept(self.session_config(), now);
            self.handshakes
                .push((Endpoint::new(conn, ACCEPTOR, engine), now + 5_000));
        }
        self.serve_handshakes(cx);
        self.dial(cx);
        self.serve_session(cx);
    }

    /// Requests hit the node: a few counters go up.
    fn traffic_tick(&mut self, cx: &mut Cx<'_>) {
        let now32 = cx.now as u32;
        for _ in 0..cx.rng.range(1, 3) {
            let f = cx.rng.index(FAMILIES.len());
            let Some(t) = self.table_index(f, ".uncombined") else {
                continue;
            };
            let key = FAMILIES[f].key(cx.rng.index(self.keys_per_family));
            let n = cx.rng.range(1, 3) as u32;
            let mut e = self.entries[t].get(&key).copied().unwrap_or_default();
            e.c.cnt = e.c.cnt.wrapping_add(n);
            if cx.rng.chance(1, 3) {
                e.c.gpc0 = e.c.gpc0.wrapping_add(1);
            }
            e.rate.add(now32, n);
            self.set_local(t, key.clone(), e);
            if let Some(r) = &mut self.running {
                r.s.dirty.insert((t, key));
            }
        }
    }

    fn serve_handshakes(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        for (mut ep, deadline) in std::mem::take(&mut self.handshakes) {
            let eof = ep.pull(cx);
            let mut verdict = None;
            let mut ended = false;
            while let Some(e) = ep.engine.poll_event() {
                match e {
                    Event::HelloReceived(h) => {
                        verdict = Some(h.local_name);
                        break;
                    }
                    Event::Closed(_) => {
                        ended = true;
                        break;
                    }
                    _ => {}
                }
            }
            if let Some(caller) = verdict {
                if caller == self.peer.0 {
                    ep.engine.accept_hello();
                    ep.engine
                        .poll_transmit(now, &mut stktagg_session::NothingToSend, &mut ep.out);
                    ep.push(cx);
                    self.hand_over(ep, cx);
                } else {
                    ep.engine.refuse(StatusCode::UnknownPeer);
                    ep.engine
                        .poll_transmit(now, &mut stktagg_session::NothingToSend, &mut ep.out);
                    ep.close(cx);
                }
            } else if ended || eof || now >= deadline {
                ep.engine
                    .poll_transmit(now, &mut stktagg_session::NothingToSend, &mut ep.out);
                ep.close(cx);
            } else {
                self.handshakes.push((ep, deadline));
            }
        }
    }

    fn dial(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        if (self.running.is_none() || self.forced)
            && self.dialing.is_none()
            && now >= self.next_dial
        {
            let alive = cx.alive;
            match cx.net.connect(self.proc, &self.peer.1, |q| alive[q]) {
                Ok(conn) => {
                    let Ok(engine) = PeerSession::dial(self.session_config(), &self.peer.0, now)
                    else {
                        return;
                    };
                    let mut ep = Endpoint::new(conn, DIALER, engine);
                    ep.engine
                        .poll_transmit(now, &mut stktagg_session::NothingToSend, &mut ep.out);
                    ep.push(cx);
                    self.dialing = Some((ep, now + 5_000));
                }
                Err(_) => {
                    self.forced = false;
                    self.next_dial = now + RECONNECT_MS;
                }
            }
        }
        let Some((mut ep, deadline)) = self.dialing.take() else {
            return;
        };
        let eof = ep.pull(cx);
        if ep.engine.is_established() {
            ep.engine
                .poll_transmit(now, &mut stktagg_session::NothingToSend, &mut ep.out);
            ep.push(cx);
            self.hand_over(ep, cx);
        } else if ep.engine.closed_reason().is_some() || eof || now >= deadline {
            ep.close(cx);
            self.forced = false;
            self.next_dial = now + RECONNECT_MS;
        } else {
            self.dialing = Some((ep, deadline));
        }
    }

    /// A new session (newest wins): every local entry is pushed on it, and it is
    /// asked for our resync if we are still learning.
    fn hand_over(&mut self, mut ep: Endpoint, cx: &mut Cx<'_>) {
        cx.net.note_established(ep.conn);
        if let Some((d, _)) = self.dialing.take() {
            d.close(cx);
        }
        self.forced = false;
        if let Some(old) = self.running.take() {
            self.lost_session(&old.s, cx.now);
            old.ep.close(cx);
        }
        let mut s = SessionState::default();
        for (t, table) in self.tables.iter().enumerate() {
            if table.is_local() {
                s.dirty
                    .extend(self.entries[t].keys().map(|k| (t, k.clone())));
            }
        }
        if let SyncState::Learning { skip: false, .. } = self.sync {
            ep.engine.request_resync();
            s.assigned = true;
        }
        cx.trace.log(
            cx.now,
            &self.name,
            format_args!(
                "session up (conn{}){}",
                ep.conn.0,
                if s.assigned {
                    ", asks for a resync"
                } else {
                    ""
                }
            ),
        );
        self.running = Some(Running { ep, s });
    }

    /// A session asked for our resync is gone: the next one is asked.
    fn lost_session(&mut self, s: &SessionState, now: u64) {
        if s.assigned
            && let SyncState::Learning { .. } = self.sync
        {
            self.sync = SyncState::Learning {
                deadline: now + RESYNC_TIMEOUT_MS,
                skip: false,
            };
        }
    }

    fn serve_session(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        let Some(mut r) = self.running.take() else {
            return;
        };
        let eof = r.ep.pull(cx);
        if r.ep.engine.poll_timeout().is_some_and(|t| t <= now) {
            r.ep.engine.handle_timeout(now);
        }
        let end = self.handle_events(&mut r, cx);
        if end.is_some() || eof {
            if let Some(end) = &end {
                cx.trace.log(
                    now,
                    &self.name,
                    format_args!("session down (conn{}): {end}", r.ep.conn.0),
                );
                self.transmit(&mut r, cx);
            } else {
                cx.trace.log(
                    now,
                    &self.name,
                    format_args!("session down (conn{}): closed by peer", r.ep.conn.0),
                );
            }
            self.lost_session(&r.s, now);
            r.ep.close(cx);
            self.next_dial = now + cx.rng.range(50, 2050);
            return;
        }
        self.transmit(&mut r, cx);
        self.running = Some(r);
    }

    fn transmit(&mut self, r: &mut Running, cx: &mut Cx<'_>) {
        if r.s.lesson_due {
            r.s.lesson_due = false;
            for (t, entries) in self.entries.iter().enumerate() {
                r.s.lesson.extend(entries.keys().map(|k| (t, k.clone())));
            }
            cx.trace.log(
                cx.now,
                &self.name,
                format_args!(
                    "teaches {} entries, then {}",
                    r.s.lesson.len(),
                    if self.sync == SyncState::Finished {
                        "FINISHED"
                    } else {
                        "PARTIAL"
                    }
                ),
            );
        }
        let mut feed = NodeFeed {
            tables: &self.tables,
            entries: &self.entries,
            s: &mut r.s,
            complete: self.sync == SyncState::Finished,
            now32: cx.now as u32,
        };
        r.ep.engine.poll_transmit(cx.now, &mut feed, &mut r.ep.out);
        r.ep.push(cx);
    }

    fn handle_events(&mut self, r: &mut Running, cx: &mut Cx<'_>) -> Option<End> {
        let now = cx.now;
        while let Some(e) = r.ep.engine.poll_event() {
            match e {
                Event::TableDefined(def) => {
                    r.s.peer_defs.insert(def.table_id, def);
                }
                Event::Update(u) => {
                    let Some(def) = r.s.peer_defs.get(&u.table_id) else {
                        continue;
                    };
                    let Some(t) = self.tables.iter().position(|t| t.def.name == def.name) else {
                        // HAProxy ignores tables it does not declare.
                        continue;
                    };
                    let mut e = Entry {
                        c: Counters::of(&u.values, &def.data),
                        rate: Freq::default(),
                    };
                    for (v, d) in u.values.iter().zip(&def.data) {
                        if let (DataType::HttpReqRate, Value::Freq(f)) = (d.data_type, v) {
                            e.rate = Freq::from_wire(*f, now as u32);
                        }
                    }
                    if self.tables[t].is_local() {
                        // Taught back: our own counts again.
                        self.set_local(t, u.key, e);
                    } else {
                        self.entries[t].insert(u.key.clone(), e);
                        self.view_changes.push((t, u.key));
                    }
                }
                Event::ResyncRequested => {
                    // HAProxy handles every message it has received before it
                    // writes: the lesson is what the tables hold when it is sent.
                    r.s.lesson.clear();
                    r.s.lesson_due = true;
                }
                Event::ResyncEnded { finished } => {
                    if r.s.assigned {
                        r.s.assigned = false;
                        self.sync = if finished {
                            SyncState::Finished
                        } else {
                            SyncState::Learning {
                                deadline: now + RESYNC_TIMEOUT_MS,
                                skip: true,
                            }
                        };
                        cx.trace.log(
                            now,
                            &self.name,
                            format_args!(
                                "learned its tables ({})",
                                if finished { "FINISHED" } else { "PARTIAL" }
                            ),
                        );
                    }
                }
                Event::Closed(end) => return Some(end),
                Event::HelloReceived(_)
                | Event::Established { .. }
                | Event::Acked { .. }
                | Event::ResyncAsked
                | Event::Confirmed => {}
            }
        }
        None
    }

    /// The node's current value of a learned entry.
    pub fn view(&self, t: usize, key: &Key) -> Option<Counters> {
        self.entries[t].get(key).map(|e| e.c)
    }

    /// The node's own counters for a key of a family (0 when it has no entry).
    pub fn local(&self, family: usize, key: &Key) -> Option<Counters> {
        let t = self.table_index(family, ".uncombined")?;
        self.entries[t].get(key).map(|e| e.c)
    }

    /// The highest own counters the node ever had for a key of a family.
    pub fn peak(&self, family: usize, key: &Key) -> Counters {
        self.table_index(family, ".uncombined")
            .and_then(|t| self.peaks.get(&(t, key.clone())).copied())
            .unwrap_or_default()
    }
}

/// The node's side of the engine's feed.
struct NodeFeed<'a> {
    tables: &'a [NodeTable],
    entries: &'a [BTreeMap<Key, Entry>],
    s: &'a mut SessionState,
    complete: bool,
    now32: u32,
}

impl NodeFeed<'_> {
    fn send(&self, out: &mut Outbox<'_>, t: usize, key: Key) {
        let Some(e) = self.entries[t].get(&key) else {
            return;
        };
        let table = &self.tables[t];
        let mut values = vec![Value::Uint(e.c.gpc0), Value::Uint(e.c.cnt)];
        if FAMILIES[table.family].rate {
            values.push(Value::Freq(e.rate.wire(self.now32)));
        }
        let def = || Some(table.def.clone());
        // Our own values always match our own definition.
        let _ = out.send(TableKey(t as u64), def, &key, &values, Some(EXPIRE_MS));
    }
}

impl Feed for NodeFeed<'_> {
    fn lesson(&mut self, out: &mut Outbox<'_>) -> Progress {
        for _ in 0..BATCH {
            let Some((t, key)) = self.s.lesson.pop_front() else {
                return Progress::Done;
            };
            self.send(out, t, key);
        }
        Progress::More
    }

    fn lesson_complete(&self) -> bool {
        self.complete
    }

    fn live(&mut self, out: &mut Outbox<'_>) -> Progress {
        // Nothing goes to the peer we are learning from until its lesson ends.
        if self.s.assigned {
            return Progress::Done;
        }
        for _ in 0..BATCH {
            let Some((t, key)) = self.s.dirty.pop_first() else {
                return Progress::Done;
            };
            self.send(out, t, key);
        }
        Progress::More
    }
}
