//! One established peer session: a thin task around the protocol engine.
//!
//! The engine ([`stktagg_session::PeerSession`]) owns the protocol: acks,
//! heartbeats, the idle rule, resyncs both ways and their order. This task moves
//! bytes between the socket and the engine and gives the engine's events a meaning:
//! input tables go into the store, a resync request is answered from the store, the
//! store's changes for this peer are what the engine sends live. It never blocks the
//! rest of the daemon: its outbound state is the store's coalesced dirty set for this
//! peer (latest value per key) plus a write buffer that is only refilled below the
//! engine's high-water mark, so a slow or stuck peer costs at most one entry per key.
//!
//! Reading and writing happen in one `select!` loop, never one waiting for the other
//! and neither with priority, so two peers that both write a lot cannot deadlock on
//! full socket buffers, and a session busy writing still reads (the idle rule looks
//! at bytes received).

use crate::section::{Incoming, Section, SessionState};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use stktagg_session::{End as ProtocolEnd, Event, Feed, Outbox, PeerSession, Progress, TableKey};
use stktagg_store::{InputHandle, RelayHandle, Subscription, SubscriptionFilter, TableId};
use stktagg_topology::{PeerId, Role, Route, SourceKind};
use stktagg_wire::{Key, TableDefinition, Update, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Free space made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Entries taken from the dirty set or a teach queue per call.
const BATCH: usize = 256;
/// Most tables a section holds (outputs and relays).
const MAX_TABLES: usize = 1024;
/// Delay before asking an aggregator again after it answered PARTIAL.
const RESYNC_RETRY_MS: u64 = 1_000;
/// Delay before asking a HAProxy node again after it answered PARTIAL
/// (HAProxy's own `PEER_RESYNC_TIMEOUT`).
const NODE_RESYNC_RETRY_MS: u64 = 5_000;
/// Teach-back tables get table keys above every store table id.
const TEACH_BACK_KEYS: u64 = 1 << 32;

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// Shutdown or a newer session took over.
    Cancelled,
    /// The peer closed the connection.
    Closed,
    /// The protocol engine ended it (silence, bad input, the peer's complaint).
    Protocol(ProtocolEnd),
    /// A socket error.
    Io(std::io::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Cancelled => f.write_str("session closed by us (shutdown or replaced)"),
            End::Closed => f.write_str("connection closed by peer"),
            End::Protocol(e) => write!(f, "{e}"),
            End::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// What we do with a table a peer defined to us, by the peer's table id.
#[derive(Debug)]
enum Inbound {
    Aggregate(InputHandle),
    Relay(RelayHandle),
    Ignored,
}

/// A notifier the store wakes when this peer has something to send.
#[derive(Debug, Default)]
struct Wake(Notify);

impl stktagg_store::Waker for Wake {
    fn wake(&self) {
        self.0.notify_one();
    }
}

/// A source's own input table, taught back to it after its restart.
#[derive(Debug)]
struct TeachBack {
    key: TableKey,
    def: TableDefinition,
    entries: VecDeque<(Key, Vec<Value>, Option<u32>)>,
}

/// The resync policy for a peer: sources and upstreams are asked at once; a node
/// that answers PARTIAL is asked again when it confirms our lesson or after
/// HAProxy's 5 s, an aggregator after 1 s.
pub fn resync_policy(role: Role) -> stktagg_session::ResyncPolicy {
    let is_node = matches!(role, Role::Source(SourceKind::Node));
    stktagg_session::ResyncPolicy {
        ask_on_start: true,
        retry_after_partial_ms: Some(if is_node {
            NODE_RESYNC_RETRY_MS
        } else {
            RESYNC_RETRY_MS
        }),
        retry_on_confirm: is_node,
        ask_after_teach_back: true,
    }
}

/// Runs an established session to its end.
pub async fn run(section: Arc<Section>, id: PeerId, conn: Incoming, cancel: CancellationToken) {
    let peer = &section.peers[id.0];
    let now = section.clock.now_ms();
    let n = peer.stats.sessions.fetch_add(1, Ordering::Relaxed);
    if n > 0 {
        peer.stats.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    peer.stats.set_state(SessionState::Established);
    peer.stats.last_hello_ms.store(now, Ordering::Relaxed);
    peer.stats.last_rx_ms.store(now, Ordering::Relaxed);
    crate::metrics::session_up(&section.name, &peer.name, true);
    tracing::info!(section = %section.name, peer = %peer.name, remote = %conn.remote, dialed = conn.dialed, "session established");

    let wake = Arc::new(Wake::default());
    let filter = SubscriptionFilter {
        outputs: true,
        relays: peer.is_source(),
    };
    let sub = section.store.subscribe(filter, wake.clone());
    // A peer that reconnects without restarting does not ask for a resync, and it may
    // have missed changes while it was away: every session starts by sending every
    // entry the peer should hold (coalesced with live changes in the dirty set).
    section.store.mark_all(&sub);
    let mut core = Core {
        section: section.clone(),
        id,
        inbound: HashMap::new(),
        lesson: VecDeque::new(),
        teach_back: VecDeque::new(),
        teach_back_keys: HashMap::new(),
        counters: crate::metrics::UpdateCounters::new(&section.name, &peer.name),
        sub,
        now,
    };
    let remote = conn.remote;
    let end = drive(&mut core, conn, &wake, cancel).await;
    peer.stats.set_state(SessionState::Idle);
    crate::metrics::session_up(&section.name, &peer.name, false);
    if let End::Protocol(ProtocolEnd::Protocol(e)) = &end {
        peer.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
        crate::metrics::protocol_error(&section.name, &peer.name, crate::metrics::error_kind(e));
    }
    // A peer that keeps failing must not flood the logs: a few lines a minute, with
    // the count of the ones left out.
    if let Some(suppressed) = peer.stats.log_limit.allow() {
        match &end {
            End::Protocol(_) => {
                tracing::warn!(section = %section.name, peer = %peer.name, %remote, suppressed, "session ended: {end}")
            }
            _ => {
                tracing::info!(section = %section.name, peer = %peer.name, %remote, suppressed, "session ended: {end}")
            }
        }
    }
    if !matches!(end, End::Cancelled) {
        *crate::section::lock(&peer.stats.last_error) = Some(end.to_string());
    }
    if let Some(group) = peer.group() {
        peer.stats.resynced.store(false, Ordering::Relaxed);
        on_group_change(&section, group, None);
    }
}

/// Moves bytes between the socket and the engine until the session ends.
async fn drive(core: &mut Core, conn: Incoming, wake: &Wake, cancel: CancellationToken) -> End {
    let Incoming {
        stream, mut engine, ..
    } = conn;
    let (mut rd, mut wr) = stream.into_split();
    let resync_flag = core.peer().resync_flag();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = BytesMut::with_capacity(16 * 1024);
    // Anything already buffered after the hello, and the engine's first requests.
    if let Some(end) = core.handle_events(&mut engine) {
        return flush_and_end(&mut engine, core, &mut wr, &mut out, end).await;
    }
    loop {
        core.now = core.section.clock.now_ms();
        engine.poll_transmit(core.now, core, &mut out);
        let writing = !out.is_empty();
        let inbuf = engine.input_buffer();
        // Read in large chunks: a full buffer would otherwise grow by a few bytes
        // per read.
        inbuf.reserve(READ_CHUNK);
        // No branch has priority (tokio polls them in a random order): a session
        // whose peer reads fast still reads what the peer sends while it writes its
        // backlog, and a source that streams at full speed still gets its acks and
        // sums. The idle rule looks at bytes received, so our own backlog can never
        // make a peer look silent. Reading is never stopped, so two aggregators that
        // both have a full write buffer cannot deadlock each other.
        tokio::select! {
            _ = cancel.cancelled() => {
                // Drain: what is pending for this peer (up to the high-water mark)
                // and the write buffer, best effort and bounded in time.
                engine.poll_transmit(core.section.clock.now_ms(), core, &mut out);
                let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(&out)).await;
                return End::Cancelled;
            }
            r = wr.write_buf(&mut out), if writing => {
                if let Err(e) = r {
                    return End::Io(e);
                }
            }
            r = rd.read_buf(inbuf) => {
                match r {
                    Ok(0) => return End::Closed,
                    Ok(_) => {
                        let now = core.section.clock.now_ms();
                        engine.input_received(now);
                        core.peer().stats.last_rx_ms.store(now, Ordering::Relaxed);
                        if let Some(t) = engine.last_heartbeat() {
                            core.peer().stats.last_heartbeat_ms.store(t, Ordering::Relaxed);
                        }
                    }
                    Err(e) => return End::Io(e),
                }
            }
            _ = wake.0.notified(), if !writing => {}
            _ = resync_flag.notified() => engine.request_resync(),
            _ = tick.tick() => engine.handle_timeout(core.section.clock.now_ms()),
        }
        if let Some(end) = core.handle_events(&mut engine) {
            return flush_and_end(&mut engine, core, &mut wr, &mut out, end).await;
        }
    }
}

/// Writes the engine's last words (HAProxy's error reply) and ends.
async fn flush_and_end(
    engine: &mut PeerSession,
    core: &mut Core,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    out: &mut BytesMut,
    end: ProtocolEnd,
) -> End {
    out.clear();
    engine.poll_transmit(core.section.clock.now_ms(), core, out);
    let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(out)).await;
    End::Protocol(end)
}

/// Re-elects a group's active member and applies a change: from then on only the
/// new member is heard, and the relayed tables are replaced by its full resync,
/// which its session is asked for. `just_resynced` is the member whose full resync
/// just ended: if the store already relays it, its data is complete and current,
/// and no second resync is needed.
fn on_group_change(section: &Section, group: u16, just_resynced: Option<PeerId>) {
    let Some(Some(new)) = section.elect(group) else {
        // No member left: the relayed data stays (stale rather than empty) until a
        // member is back or the entries expire.
        return;
    };
    let member = section.peers[new.0].source_id();
    if just_resynced == Some(new) && section.store.active_member(group) == Some(member) {
        return;
    }
    section
        .store
        .relay_replace(group, member, section.clock.now_ms());
    section.peers[new.0].request_resync();
}

/// What a session means to the section: the engine's events applied to the store,
/// and the store's entries fed to the engine.
struct Core {
    section: Arc<Section>,
    id: PeerId,
    inbound: HashMap<u32, Inbound>,
    /// The full resync we teach: the entries still to send.
    lesson: VecDeque<(TableId, Key)>,
    /// The peer's own entries still to teach back, per input table.
    teach_back: VecDeque<TeachBack>,
    /// Table keys of the teach-back tables, by input table name.
    teach_back_keys: HashMap<Bytes, TableKey>,
    counters: crate::metrics::UpdateCounters,
    sub: Subscription,
    now: u64,
}

impl Core {
    fn peer(&self) -> &crate::section::PeerRuntime {
        &self.section.peers[self.id.0]
    }

    /// Handles every pending event; the protocol end, if the engine closed.
    fn handle_events(&mut self, engine: &mut PeerSession) -> Option<ProtocolEnd> {
        self.now = self.section.clock.now_ms();
        while let Some(event) = engine.poll_event() {
            match event {
                Event::TableDefined(def) => self.on_definition(def),
                Event::Update(u) => self.on_update(u),
                Event::ResyncAsked => {
                    let source = self.peer().source_id();
                    self.section.store.begin_resync(source, self.now);
                }
                Event::ResyncEnded { finished } => self.on_resync_end(finished),
                Event::ResyncRequested => self.on_resync_request(),
                Event::Closed(end) => return Some(end),
                Event::HelloReceived(_)
                | Event::Established { .. }
                | Event::Acked { .. }
                | Event::Confirmed => {}
            }
        }
        None
    }

    fn on_definition(&mut self, def: TableDefinition) {
        let peer = self.peer();
        let name = String::from_utf8_lossy(&def.name).into_owned();
        let mut route = self.section.plan.route_incoming(self.id, &name);
        if let Route::Aggregate { output } = &route
            && self
                .section
                .store
                .output_by_name(output.as_bytes())
                .is_none()
            && self.section.store.table_summaries().len() >= MAX_TABLES
        {
            // Tables are created on demand from the names peers send: a bound keeps a
            // peer that invents names from growing the store without end.
            if let Some(suppressed) = peer.stats.log_limit.allow() {
                tracing::warn!(section = %self.section.name, peer = %peer.name, table = %name, suppressed, "too many tables, ignoring a new one");
            }
            route = Route::Ignore {
                reason: stktagg_topology::IgnoreReason::NoRule,
            };
        }
        let inbound = match route {
            Route::Aggregate { output } => match self.section.store.register_input(
                peer.source_id(),
                &def.name,
                &def,
                output.as_bytes(),
            ) {
                Ok(h) => Inbound::Aggregate(h),
                Err(e) => {
                    crate::metrics::table_ignored(&self.section.name, &peer.name);
                    tracing::warn!(section = %self.section.name, peer = %peer.name, table = %name, error = %e, "input table refused");
                    Inbound::Ignored
                }
            },
            Route::Relay { group } => {
                match self.section.store.register_relay(
                    group.0 as u16,
                    peer.source_id(),
                    &def,
                    &def.name,
                ) {
                    Ok(handle) => Inbound::Relay(handle),
                    Err(e) => {
                        tracing::warn!(section = %self.section.name, peer = %peer.name, table = %name, error = %e, "relayed table refused");
                        Inbound::Ignored
                    }
                }
            }
            Route::Ignore { reason } => {
                crate::metrics::table_ignored(&self.section.name, &peer.name);
                tracing::debug!(section = %self.section.name, peer = %peer.name, table = %name, %reason, "ignoring table");
                Inbound::Ignored
            }
        };
        self.inbound.insert(def.table_id, inbound);
    }

    fn on_update(&mut self, u: Update) {
        let peer = &self.section.peers[self.id.0];
        peer.stats.updates_in.fetch_add(1, Ordering::Relaxed);
        self.counters.received.increment(1);
        let store = &self.section.store;
        let res = match self.inbound.get(&u.table_id) {
            Some(Inbound::Aggregate(h)) => store.apply(h, &u.key, &u.values, u.expire_ms, self.now),
            // The store only hears the group's active member.
            Some(Inbound::Relay(h)) => {
                store.relay_apply(h, &u.key, &u.values, u.expire_ms, self.now)
            }
            Some(Inbound::Ignored) | None => return,
        };
        if let Err(e) = res {
            tracing::debug!(section = %self.section.name, peer = %peer.name, error = %e, "update refused");
        }
    }

    fn on_resync_request(&mut self) {
        let section = self.section.clone();
        let peer = &section.peers[self.id.0];
        peer.stats.resyncs_out.fetch_add(1, Ordering::Relaxed);
        crate::metrics::resync(&section.name, &peer.name, "out");
        let filter = self.sub.filter();
        self.lesson.clear();
        for t in section.store.tables() {
            let wanted = match t.kind {
                stktagg_store::TableKind::Output => filter.outputs,
                stktagg_store::TableKind::Relay { .. } => filter.relays,
            };
            if wanted {
                let keys = section.store.keys(t.id);
                self.lesson.extend(keys.into_iter().map(|k| (t.id, k)));
            }
        }
        self.teach_back.clear();
        if peer.is_source() && section.plan.teach_back {
            for c in section.store.contributions_of(peer.source_id(), self.now) {
                let next = TableKey(TEACH_BACK_KEYS + self.teach_back_keys.len() as u64);
                let key = *self
                    .teach_back_keys
                    .entry(c.input_name.clone())
                    .or_insert(next);
                self.teach_back.push_back(TeachBack {
                    key,
                    def: TableDefinition {
                        name: c.input_name,
                        ..c.definition
                    },
                    entries: c
                        .entries
                        .into_iter()
                        .map(|e| (e.key, e.values, e.expire_ms))
                        .collect(),
                });
            }
        }
        tracing::info!(section = %section.name, peer = %peer.name, "peer asked for a full resync");
    }

    fn on_resync_end(&mut self, finished: bool) {
        let section = self.section.clone();
        let peer = &section.peers[self.id.0];
        peer.stats.resyncs_in.fetch_add(1, Ordering::Relaxed);
        crate::metrics::resync(&section.name, &peer.name, "in");
        // A source that says PARTIAL was not up to date itself: a node that has just
        // restarted and is still learning, or an aggregator still rebuilding. What it
        // did not send is not gone: a node gets it back from our teach-back, an
        // aggregator from its own sources. So its earlier contributions stay until it
        // sends them again or they expire. Only a node we do not teach back has really
        // lost them: it counts anew, and so does its share of the sums. (The engine
        // asks it again later, by the peer's resync policy.)
        let lost = matches!(peer.role, Role::Source(SourceKind::Node)) && !section.plan.teach_back;
        if finished || !peer.is_source() || lost {
            section.store.end_resync(peer.source_id(), self.now);
        }
        if finished {
            peer.stats.resynced.store(true, Ordering::Relaxed);
        }
        if let Some(group) = peer.group() {
            if !finished {
                peer.stats.resynced.store(false, Ordering::Relaxed);
            }
            on_group_change(&section, group, Some(self.id));
        }
    }

    /// Sends one entry of a store table; `live` for a change (as opposed to a full
    /// resync we teach), which is what the propagation histogram measures.
    fn send_entry(&mut self, out: &mut Outbox<'_>, table: TableId, key: Key, live: bool) {
        let store = &self.section.store;
        let Some(entry) = store.read(table, &key, self.now) else {
            // Gone since it was marked (expired): there are no deletes on the wire.
            return;
        };
        let def = || store.table_info(table).map(|i| i.definition);
        match out.send(TableKey(u64::from(table.0)), def, key, entry.values, None) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(section = %self.section.name, peer = %self.peer().name, error = %e, "failed to encode our own update");
                return;
            }
        }
        self.peer()
            .stats
            .updates_out
            .fetch_add(1, Ordering::Relaxed);
        self.counters.sent.increment(1);
        if live && entry.changed_at > 0 {
            self.counters
                .propagation(self.now.saturating_sub(entry.changed_at));
        }
    }
}

impl Feed for Core {
    fn teach_back(&mut self, out: &mut Outbox<'_>) -> Progress {
        let Some(tb) = self.teach_back.front_mut() else {
            return Progress::Done;
        };
        for _ in 0..BATCH {
            let Some((key, values, expire)) = tb.entries.pop_front() else {
                self.teach_back.pop_front();
                return Progress::More;
            };
            let def = || Some(tb.def.clone());
            if let Err(e) = out.send(tb.key, def, key, values, expire) {
                tracing::error!(section = %self.section.name, error = %e, "failed to encode a taught-back entry");
            }
        }
        Progress::More
    }

    fn lesson(&mut self, out: &mut Outbox<'_>) -> Progress {
        for _ in 0..BATCH {
            let Some((table, key)) = self.lesson.pop_front() else {
                return Progress::Done;
            };
            self.send_entry(out, table, key, false);
        }
        Progress::More
    }

    /// PARTIAL tells an aggregator not to rely on us yet. A HAProxy node told
    /// PARTIAL would wait 5 s before it pushes its own counts, and we would wait for
    /// those counts to be complete: nodes always get FINISHED; the sums reach them
    /// live as they complete.
    fn lesson_complete(&self) -> bool {
        matches!(self.peer().role, Role::Source(SourceKind::Node)) || self.section.up_to_date()
    }

    fn live(&mut self, out: &mut Outbox<'_>) -> Progress {
        let batch = self.sub.drain(BATCH);
        if batch.is_empty() {
            return Progress::Done;
        }
        for (table, key) in batch {
            self.send_entry(out, table, key, true);
        }
        Progress::More
    }
}
