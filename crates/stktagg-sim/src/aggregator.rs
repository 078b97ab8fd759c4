//! One simulated aggregator: the real section logic ([`SectionCore`] over the real
//! store, one [`SessionCore`] and one [`PeerSession`] per established connection),
//! driven the way the daemon drives it, with the network and the clock of the
//! simulation instead of tokio's.
//!
//! What the daemon's tasks do, step by step (`crates/stktagg-daemon/src`):
//! - `listener`: an accepted connection gets an acceptor engine; its hello names a
//!   configured peer (504 otherwise), from that peer's address (`addr-check`);
//!   the resync policy is the peer's; 200 and a heartbeat go out; the session is
//!   handed to the peer.
//! - `peer`: one session per peer, the newest wins (the running one is flushed and
//!   cancelled); we dial only while we hold none, first after 200 to 800 ms, then
//!   with exponential backoff and full jitter; a dial in progress is dropped when
//!   an incoming session arrives.
//! - `session`: bytes in, `handle_events`, a resync asked by the section's
//!   election ([`Signals`]) applied to the running session (or the next one),
//!   `poll_transmit` whenever the store wakes the session, there is room to write,
//!   or the 250 ms tick comes (with the engine's timers); the engine's last words
//!   on a protocol end.
//! - `supervisor`: expiry and rate refresh every 250 ms.
//!
//! Two checks watch this aggregator from outside its logic: every FINISHED it
//! sends to an aggregator is honest (it has heard FINISHED from each of its sources
//! since it started, or the start-up grace is over), and each session's pending
//! changes stay within the number of keys.

use crate::endpoint::{Cx, Endpoint, Tap, earliest};
use crate::net::{ACCEPTOR, DIALER, DialError};
use crate::store::SimStore;
use bytes::BytesMut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use stktagg_section::{Ending, SectionCore, SessionCore, Signals, TableStore, resync_policy};
use stktagg_session::{Learning, NothingToSend, PeerSession, SessionConfig, Teaching};
use stktagg_store::Waker;
use stktagg_topology::{PeerId, Role, SectionPlan, SourceKind};
use stktagg_wire::StatusCode;
use stktagg_wire::frame::{self, CLASS_CONTROL, CTRL_RESYNC_FINISHED};

/// After start, how long an aggregator may answer PARTIAL while its sources have not
/// all resynced to it: the daemon's `STARTUP_GRACE`.
pub const STARTUP_GRACE_MS: u64 = 10_000;
/// The engine's write high-water mark here: lower than the daemon's 64 KiB, so that
/// the simulation's small tables fill it and slow readers exercise coalescing.
pub const SIM_HIGH_WATER: usize = 2048;
/// The daemon's housekeeping period and rate-refresh budget.
const HOUSEKEEPING_MS: u64 = 250;
/// The daemon's session tick (its `select!` loop's interval).
const SESSION_TICK_MS: u64 = 250;
const REFRESH_BUDGET: usize = 2048;

/// What the store calls when a session has something to send.
#[derive(Debug, Default)]
struct WakeFlag(AtomicBool);

impl Waker for WakeFlag {
    fn wake(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl WakeFlag {
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The section's resync requests, one flag per peer, kept until a session of the
/// peer takes it (the daemon's `Notify` permits do the same).
#[derive(Debug)]
struct ResyncFlags(Mutex<Vec<bool>>);

impl Signals for ResyncFlags {
    fn request_resync(&self, peer: PeerId) {
        if let Some(f) = stktagg_section::lock(&self.0).get_mut(peer.0) {
            *f = true;
        }
    }
}

impl ResyncFlags {
    fn take(&self, peer: usize) -> bool {
        stktagg_section::lock(&self.0)
            .get_mut(peer)
            .is_some_and(std::mem::take)
    }

    fn is_set(&self, peer: usize) -> bool {
        stktagg_section::lock(&self.0)
            .get(peer)
            .copied()
            .unwrap_or(false)
    }
}

/// The `global` timeouts and limits the daemon's tasks use, in milliseconds.
#[derive(Debug, Clone)]
pub struct Tunables {
    /// `timeout hello`.
    pub hello_ms: u64,
    /// `timeout connect`.
    pub connect_ms: u64,
    /// `timeout idle`.
    pub idle_ms: u64,
    /// `tune.heartbeat`.
    pub heartbeat_ms: u64,
    /// `tune.reconnect-min`.
    pub reconnect_min_ms: u64,
    /// `tune.reconnect-max`.
    pub reconnect_max_ms: u64,
    /// `tune.max-message-size`.
    pub max_message_len: usize,
}

impl Tunables {
    /// From a configuration's `global` section, as the daemon's `load` reads it.
    pub fn from_global(g: &stktagg_config::Global) -> Tunables {
        Tunables {
            hello_ms: g.hello_timeout.as_millis() as u64,
            connect_ms: g.connect_timeout.as_millis() as u64,
            idle_ms: g.idle_timeout.as_millis() as u64,
            heartbeat_ms: g.heartbeat_interval.as_millis() as u64,
            reconnect_min_ms: g.reconnect_min.as_millis() as u64,
            reconnect_max_ms: g.reconnect_max.as_millis() as u64,
            max_message_len: g.max_message_size,
        }
    }
}

/// The daemon's backoff: exponential with full jitter, reset by a session.
#[derive(Debug)]
struct Backoff {
    min: u64,
    max: u64,
    current: u64,
}

impl Backoff {
    fn new(min: u64, max: u64) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            current: min,
        }
    }

    fn reset(&mut self) {
        self.current = self.min;
    }

    fn next(&mut self, cx: &mut Cx<'_>) -> u64 {
        let d = cx.rng.range(self.current / 2, self.current);
        self.current = (self.current * 2).min(self.max);
        d
    }
}

#[derive(Debug)]
struct Running {
    ep: Endpoint,
    core: SessionCore<SimStore>,
    wake: Arc<WakeFlag>,
    /// The last lesson the peer ended in this session ended with FINISHED, as read
    /// off the wire (the election's "complete", observed from outside the
    /// section's bookkeeping).
    finished: bool,
    /// RESYNC FINISHED messages the tap had seen at the last step.
    finished_seen: u64,
}

#[derive(Debug)]
struct Dialing {
    ep: Endpoint,
    deadline: u64,
}

#[derive(Debug)]
struct Slot {
    addr: Option<String>,
    running: Option<Running>,
    dialing: Option<Dialing>,
    next_dial: u64,
    backoff: Backoff,
    /// A dial in progress, forced by a fault, whatever the running session.
    forced: bool,
}

/// One simulated aggregator (see the module documentation).
#[derive(Debug)]
pub struct Aggregator {
    /// Its local peer name.
    pub name: String,
    proc: usize,
    plan: SectionPlan,
    tun: Tunables,
    /// The section's logic and its store.
    pub core: Arc<SectionCore<SimStore>>,
    signals: Arc<ResyncFlags>,
    slots: Vec<Slot>,
    handshakes: Vec<(Endpoint, u64)>,
    /// When it (re)started.
    pub started_at: u64,
    next_housekeeping: u64,
    /// The sessions' next tick.
    next_tick: u64,
    /// Each source has ended a lesson to us with FINISHED since we started (seen
    /// in the engine's resync state, independently of the section's bookkeeping).
    finished: Vec<bool>,
    /// The most changes ever pending for one session.
    pub max_pending: usize,
    /// Keys per table: one session's pending changes are bounded by this times the
    /// number of tables.
    keys_per_table: usize,
    /// The first broken invariant seen during a step.
    violation: Option<String>,
}

impl Aggregator {
    /// An aggregator starting at `cx.now` over `store` (empty, or what it held before
    /// a restart with its state).
    pub fn start(
        name: String,
        proc: usize,
        plan: SectionPlan,
        tun: Tunables,
        store: Arc<SimStore>,
        keys_per_table: usize,
        cx: &mut Cx<'_>,
    ) -> Aggregator {
        let now = cx.now;
        let core = Arc::new(SectionCore::new(plan.clone(), store, now, STARTUP_GRACE_MS));
        let n = plan.peers.len();
        let slots = plan
            .peers
            .iter()
            .map(|p| Slot {
                addr: p.addr.as_ref().map(|a| format!("{}:{}", a.host, a.port)),
                running: None,
                dialing: None,
                // Leave the peer a moment to dial us first, as the daemon does.
                next_dial: now + cx.rng.range(200, 800),
                backoff: Backoff::new(tun.reconnect_min_ms, tun.reconnect_max_ms),
                forced: false,
            })
            .collect();
        cx.trace.log(now, &name, format_args!("starts"));
        Aggregator {
            name,
            proc,
            tun,
            core,
            signals: Arc::new(ResyncFlags(Mutex::new(vec![false; n]))),
            slots,
            handshakes: Vec::new(),
            started_at: now,
            next_housekeeping: now + HOUSEKEEPING_MS,
            next_tick: (now / SESSION_TICK_MS + 1) * SESSION_TICK_MS,
            finished: vec![false; n],
            max_pending: 0,
            keys_per_table,
            violation: None,
            plan,
        }
    }

    /// The section plan.
    pub fn plan(&self) -> &SectionPlan {
        &self.plan
    }

    /// The store (shared with a restart that keeps the state).
    pub fn store(&self) -> Arc<SimStore> {
        self.core.store.clone()
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            pid: self.proc as u32,
            max_message_len: self.tun.max_message_len,
            hello_timeout_ms: self.tun.hello_ms,
            heartbeat_ms: self.tun.heartbeat_ms,
            idle_timeout_ms: self.tun.idle_ms,
            high_water: SIM_HIGH_WATER,
            ..SessionConfig::new(self.plan.local_name.clone())
        }
    }

    /// A fault: dial `peer` now, even though a session may be running (a duplicate
    /// session for the same peer: the newest wins, on both sides).
    pub fn force_dial(&mut self, peer: usize, cx: &mut Cx<'_>) {
        if let Some(slot) = self.slots.get_mut(peer)
            && slot.addr.is_some()
        {
            if let Some(d) = slot.dialing.take() {
                d.ep.close(cx);
            }
            slot.forced = true;
            slot.next_dial = cx.now;
        }
    }

    /// One step at `cx.now`; a broken invariant is returned as its description.
    pub fn step(&mut self, cx: &mut Cx<'_>) -> Result<(), String> {
        let now = cx.now;
        if now >= self.next_housekeeping {
            let store = &self.core.store.0;
            store.expire(now);
            store.refresh_rates_budget(now, REFRESH_BUDGET);
            self.next_housekeeping = now + HOUSEKEEPING_MS;
        }
        for conn in cx.net.take_accepts(self.proc) {
            let engine = PeerSession::accept(self.session_config(), now);
            let mut ep = Endpoint::new(conn, ACCEPTOR, engine);
            ep.tap = Some(Tap::new(3));
            self.handshakes.push((ep, now + self.tun.hello_ms));
        }
        self.serve_handshakes(cx);
        self.dial_due(cx);
        self.serve_dials(cx);
        self.serve_sessions(cx);
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        self.check_election()
    }

    fn fail(&mut self, violation: String) {
        self.violation.get_or_insert(violation);
    }

    /// When this aggregator next has something to do on its own.
    pub fn wake_at(&self, cx_now: u64, net: &crate::net::Net) -> Option<u64> {
        let now = cx_now;
        let mut t = Some(self.next_housekeeping);
        if self.slots.iter().any(|s| s.running.is_some()) {
            t = earliest(t, Some(self.next_tick));
        }
        for (ep, deadline) in &self.handshakes {
            t = earliest(t, earliest(ep.wake_at(now, net), Some(*deadline)));
        }
        for (i, s) in self.slots.iter().enumerate() {
            if s.addr.is_some() && (s.running.is_none() || s.forced) && s.dialing.is_none() {
                t = earliest(t, Some(s.next_dial));
            }
            if let Some(d) = &s.dialing {
                t = earliest(t, earliest(d.ep.wake_at(now, net), Some(d.deadline)));
            }
            if let Some(r) = &s.running {
                if r.wake.is_set() || self.signals.is_set(i) {
                    t = earliest(t, Some(now + 1));
                }
                t = earliest(t, r.ep.wake_at(now, net));
            }
        }
        t
    }

    fn serve_handshakes(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        for (mut ep, deadline) in std::mem::take(&mut self.handshakes) {
            let eof = ep.pull(cx);
            ep.engine.handle_timeout(now);
            let mut verdict = None;
            let mut ended = false;
            while let Some(event) = ep.engine.poll_event() {
                match event {
                    stktagg_session::Event::HelloReceived(h) => {
                        verdict = Some(h);
                        break;
                    }
                    stktagg_session::Event::Closed(_) => {
                        ended = true;
                        break;
                    }
                    _ => {}
                }
            }
            if let Some(hello) = verdict {
                self.verdict(ep, &hello.local_name, cx);
            } else if ended {
                // A malformed hello: the engine's answer, then the close.
                ep.engine
                    .poll_transmit(now, &mut NothingToSend, &mut ep.out);
                ep.close(cx);
            } else if eof || now >= deadline {
                ep.close(cx);
            } else {
                self.handshakes.push((ep, deadline));
            }
        }
    }

    /// The listener's checks on a valid hello, then the hand-over.
    fn verdict(&mut self, mut ep: Endpoint, claimed: &str, cx: &mut Cx<'_>) {
        let now = cx.now;
        let remote_ip = ep.remote(cx.net).and_then(|p| cx.ips.get(p).copied());
        let peer = self.core.peer_by_name(claimed);
        let refused = match (peer, remote_ip) {
            (None, _) | (_, None) => true,
            (Some(p), Some(ip)) => !self.plan.peers[p].accepts_from(ip),
        };
        let Some(p) = peer.filter(|_| !refused) else {
            cx.trace.log(
                now,
                &self.name,
                format_args!("refuses a hello claiming {claimed}"),
            );
            ep.engine.refuse(StatusCode::UnknownPeer);
            ep.engine
                .poll_transmit(now, &mut NothingToSend, &mut ep.out);
            ep.close(cx);
            return;
        };
        ep.engine
            .set_resync_policy(resync_policy(self.core.peers[p].role));
        ep.engine.accept_hello();
        ep.engine
            .poll_transmit(now, &mut NothingToSend, &mut ep.out);
        ep.push(cx);
        self.hand_over(p, ep, false, cx);
    }

    /// A session established with `p` (newest wins).
    fn hand_over(&mut self, p: usize, ep: Endpoint, dialed: bool, cx: &mut Cx<'_>) {
        let slot = &mut self.slots[p];
        if let Some(d) = slot.dialing.take() {
            // The daemon's dial future is dropped when a session comes in.
            d.ep.close(cx);
        }
        slot.forced = false;
        slot.backoff.reset();
        if let Some(old) = slot.running.take() {
            self.core.peers[p]
                .stats
                .collisions
                .fetch_add(1, Ordering::Relaxed);
            self.end_session(p, old, Ending::Cancelled, cx);
        }
        self.start_session(p, ep, dialed, cx);
    }

    fn start_session(&mut self, p: usize, ep: Endpoint, dialed: bool, cx: &mut Cx<'_>) {
        let now = cx.now;
        cx.net.note_established(ep.conn);
        let wake = Arc::new(WakeFlag::default());
        let core = SessionCore::start(
            self.core.clone(),
            self.signals.clone(),
            PeerId(p),
            format!("conn{}", ep.conn.0),
            wake.clone(),
            now,
        );
        cx.trace.log(
            now,
            &self.name,
            format_args!(
                "session with {} up (conn{}, {})",
                self.core.peers[p].name,
                ep.conn.0,
                if dialed { "dialed" } else { "accepted" }
            ),
        );
        // Served in this step: whatever arrived with the handshake, the engine's
        // first requests.
        wake.wake();
        self.slots[p].running = Some(Running {
            ep,
            core,
            wake,
            finished: false,
            finished_seen: 0,
        });
    }

    /// Ends a running session: the daemon flushes what is pending when it cancels
    /// one, sends the engine's last words on a protocol end, and nothing after the
    /// peer closed.
    fn end_session(&mut self, p: usize, mut r: Running, ending: Ending, cx: &mut Cx<'_>) {
        let now = cx.now;
        if matches!(ending, Ending::Cancelled | Ending::Protocol(_)) {
            r.core.set_now(now);
            self.transmit(p, &mut r, cx);
        }
        cx.trace.log(
            now,
            &self.name,
            format_args!(
                "session with {} down (conn{}): {ending}",
                self.core.peers[p].name, r.ep.conn.0
            ),
        );
        let before = self.relayed();
        r.ep.close(cx);
        r.core.set_now(now);
        r.core.finish(&ending);
        self.trace_relays(before, cx);
    }

    fn dial_due(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        for p in 0..self.slots.len() {
            let slot = &self.slots[p];
            let Some(addr) = slot.addr.clone() else {
                continue;
            };
            if (slot.running.is_some() && !slot.forced)
                || slot.dialing.is_some()
                || now < slot.next_dial
            {
                continue;
            }
            let alive = cx.alive;
            match cx.net.connect(self.proc, &addr, |q| alive[q]) {
                Ok(conn) => {
                    let peer = &self.core.peers[p];
                    let Ok(mut engine) = PeerSession::dial(self.session_config(), &peer.name, now)
                    else {
                        continue;
                    };
                    engine.set_resync_policy(resync_policy(peer.role));
                    let mut ep = Endpoint::new(conn, DIALER, engine);
                    ep.tap = Some(Tap::new(1));
                    ep.engine
                        .poll_transmit(now, &mut NothingToSend, &mut ep.out);
                    ep.push(cx);
                    let deadline = now + self.tun.hello_ms;
                    self.slots[p].dialing = Some(Dialing { ep, deadline });
                }
                Err(e) => {
                    let slot = &mut self.slots[p];
                    slot.forced = false;
                    let wait = if e == DialError::Unreachable {
                        self.tun.connect_ms
                    } else {
                        0
                    };
                    slot.next_dial = now + wait + slot.backoff.next(cx);
                }
            }
        }
    }

    fn serve_dials(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        for p in 0..self.slots.len() {
            let Some(mut d) = self.slots[p].dialing.take() else {
                continue;
            };
            let eof = d.ep.pull(cx);
            if d.ep.engine.is_established() {
                // Liveness at once, before the session starts.
                d.ep.engine
                    .poll_transmit(now, &mut NothingToSend, &mut d.ep.out);
                d.ep.push(cx);
                let slot = &mut self.slots[p];
                slot.forced = false;
                slot.backoff.reset();
                if let Some(old) = slot.running.take() {
                    self.end_session(p, old, Ending::Cancelled, cx);
                }
                self.start_session(p, d.ep, true, cx);
            } else if d.ep.engine.closed_reason().is_some() || eof || now >= d.deadline {
                let why =
                    d.ep.engine
                        .closed_reason()
                        .map_or_else(|| "no status".to_owned(), ToString::to_string);
                cx.trace.log(
                    now,
                    &self.name,
                    format_args!("dial to {} failed: {why}", self.core.peers[p].name),
                );
                d.ep.close(cx);
                let slot = &mut self.slots[p];
                slot.forced = false;
                slot.next_dial = now + slot.backoff.next(cx);
            } else {
                self.slots[p].dialing = Some(d);
            }
        }
    }

    fn serve_sessions(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        // The daemon's session loop wakes every 250 ms whatever happens (timers,
        // and changes held back while the section is not publishing yet).
        let tick = now >= self.next_tick;
        if tick {
            self.next_tick = (now / SESSION_TICK_MS + 1) * SESSION_TICK_MS;
        }
        let mut order: Vec<usize> = (0..self.slots.len())
            .filter(|&p| self.slots[p].running.is_some())
            .collect();
        cx.rng.shuffle(&mut order);
        for p in order {
            // Look before taking: a session is large, and most have nothing to do.
            let due = self.slots[p].running.as_ref().is_some_and(|r| {
                tick || r.wake.is_set() || self.signals.is_set(p) || r.ep.due(now, cx.net)
            });
            if !due {
                continue;
            }
            let Some(mut r) = self.slots[p].running.take() else {
                continue;
            };
            let signalled = self.signals.take(p);
            r.wake.take();
            let states = (r.ep.engine.learning(), r.ep.engine.teaching());
            if signalled {
                r.ep.engine.request_resync();
            }
            let before = self.relayed();
            let eof = r.ep.pull(cx);
            if tick || r.ep.engine.poll_timeout().is_some_and(|t| t <= now) {
                r.ep.engine.handle_timeout(now);
            }
            r.core.set_now(now);
            let end = r.core.handle_events(&mut r.ep.engine, now);
            self.trace_relays(before, cx);
            self.trace_resync(p, states, &r.ep.engine, cx);
            // What the peer said, read off the wire: a FINISHED (always the
            // answer to our request) since we started. The engine's state alone
            // can miss one, when a request follows it in the same step.
            if let Some(tap) = &r.ep.tap {
                if tap.finished > r.finished_seen && self.core.peers[p].is_source() {
                    self.finished[p] = true;
                }
                r.finished_seen = tap.finished;
                r.finished = tap.last_end == Some(true);
            }
            if let Some(end) = end {
                self.end_session(p, r, Ending::Protocol(end), cx);
                let slot = &mut self.slots[p];
                slot.next_dial = now + slot.backoff.next(cx);
                continue;
            }
            if eof {
                self.end_session(p, r, Ending::Closed, cx);
                let slot = &mut self.slots[p];
                slot.next_dial = now + slot.backoff.next(cx);
                continue;
            }
            self.transmit(p, &mut r, cx);
            let pending = r.core.pending();
            self.max_pending = self.max_pending.max(pending);
            // The table count costs a pass over the tables: only when it matters.
            if pending > self.keys_per_table
                && pending > self.core.store.table_count() * self.keys_per_table
            {
                let bound = self.core.store.table_count() * self.keys_per_table;
                self.fail(format!(
                    "{}: {pending} changes pending for {}, more than the {bound} keys of its tables",
                    self.name, self.core.peers[p].name
                ));
            }
            self.slots[p].running = Some(r);
        }
    }

    /// `poll_transmit`, the honesty check on what it wrote, and the write.
    fn transmit(&mut self, p: usize, r: &mut Running, cx: &mut Cx<'_>) {
        let now = cx.now;
        let start = r.ep.out.len();
        r.ep.engine.poll_transmit(now, &mut r.core, &mut r.ep.out);
        let role = self.core.peers[p].role;
        if role != Role::Source(SourceKind::Node) && r.ep.out.len() > start {
            let mut fresh = BytesMut::from(&r.ep.out[start..]);
            while let Ok(Some(f)) = frame::split_frame(&mut fresh, self.tun.max_message_len) {
                if f.class == CLASS_CONTROL && f.msg_type == CTRL_RESYNC_FINISHED {
                    self.check_finished(p, cx);
                }
            }
        }
        r.ep.push(cx);
    }

    /// FINISHED to an aggregator says "I hold complete data": we must have heard
    /// FINISHED from every source since we started, or be past the start-up grace.
    fn check_finished(&mut self, p: usize, cx: &mut Cx<'_>) {
        let now = cx.now;
        cx.trace.log(
            now,
            &self.name,
            format_args!("answers FINISHED to {}", self.core.peers[p].name),
        );
        let missing: Vec<&str> = self
            .core
            .peers
            .iter()
            .filter(|q| q.is_source() && !self.finished[q.id.0])
            .map(|q| q.name.as_str())
            .collect();
        if missing.is_empty() || now.saturating_sub(self.started_at) >= STARTUP_GRACE_MS {
            return;
        }
        let v = format!(
            "{} answered FINISHED to {} {} ms after its start, before a full resync from {}",
            self.name,
            self.core.peers[p].name,
            now - self.started_at,
            missing.join(", ")
        );
        self.fail(v);
    }

    /// Traces the changes of a session's resync states.
    fn trace_resync(
        &self,
        p: usize,
        (learning, teaching): (Learning, Teaching),
        engine: &PeerSession,
        cx: &mut Cx<'_>,
    ) {
        let peer = &self.core.peers[p].name;
        let now = cx.now;
        let (l, t) = (engine.learning(), engine.teaching());
        if l != learning {
            let what = match l {
                Learning::Asked => "asks for a resync",
                Learning::Finished => "got a full lesson (FINISHED)",
                Learning::Partial { .. } => "got a lesson ending PARTIAL",
                Learning::Idle => "is idle",
            };
            cx.trace
                .log(now, &self.name, format_args!("{what} from {peer}"));
        }
        if t != teaching && t == Teaching::TeachBack {
            cx.trace.log(
                now,
                &self.name,
                format_args!("is asked for a resync by {peer}"),
            );
        }
    }

    /// The relayed member of each group, to trace its changes.
    fn relayed(&self) -> Vec<Option<PeerId>> {
        (0..self.plan.groups.len())
            .map(|g| self.core.active_member(g as u16))
            .collect()
    }

    fn trace_relays(&self, before: Vec<Option<PeerId>>, cx: &mut Cx<'_>) {
        for (g, was) in before.into_iter().enumerate() {
            let now = self.core.active_member(g as u16);
            if now != was {
                let name = now.map_or("nobody", |m| self.core.peers[m.0].name.as_str());
                cx.trace.log(
                    cx.now,
                    &self.name,
                    format_args!("group {} relays {name}", self.core.group_number(g as u16)),
                );
            }
        }
    }

    /// Relays follow the election (SPEC §3): whenever a member of a group is
    /// complete (its session is up and the last lesson it ended there was
    /// FINISHED, as this simulation sees its sessions), the relayed member is the
    /// first complete one in configuration order.
    fn check_election(&self) -> Result<(), String> {
        for g in &self.plan.groups {
            let best = g.members.iter().copied().find(|m| {
                self.slots[m.0]
                    .running
                    .as_ref()
                    .is_some_and(|r| r.finished && r.ep.engine.is_established())
            });
            let Some(best) = best else {
                continue;
            };
            let active = self.core.active_member(g.id.0 as u16);
            if active != Some(best) {
                let name =
                    |m: Option<PeerId>| m.map_or("nobody", |m| self.core.peers[m.0].name.as_str());
                return Err(format!(
                    "{}: group {} relays {} while {} is the first complete member",
                    self.name,
                    self.core.group_number(g.id.0 as u16),
                    name(active),
                    name(Some(best))
                ));
            }
        }
        Ok(())
    }

    /// The peers that are sources, with their kind.
    pub fn peer_roles(&self) -> Vec<(String, Role)> {
        self.plan
            .peers
            .iter()
            .map(|p| (p.name.clone(), p.role))
            .collect()
    }

    /// Every session that is established now, by peer name.
    pub fn established(&self) -> Vec<String> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.running.is_some())
            .map(|(p, _)| self.core.peers[p].name.clone())
            .collect()
    }
}
