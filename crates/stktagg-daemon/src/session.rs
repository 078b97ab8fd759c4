//! One established peer session.
//!
//! The session task owns the socket. It reads and decodes messages, feeds input
//! tables into the store, acknowledges them, answers resync requests, and writes the
//! changes the store reports for this peer. It never blocks the rest of the daemon:
//! its outbound state is the store's coalesced dirty set for this peer (latest value
//! per key) plus a write buffer that is only refilled below a high-water mark, so a
//! slow or stuck peer costs at most one entry per key.
//!
//! Reading and writing happen in one `select!` loop, never one waiting for the other,
//! so two peers that both write a lot cannot deadlock on full socket buffers.

use crate::section::{Incoming, Section, SessionState};
use bytes::BytesMut;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use stktagg_store::{InputHandle, RelayHandle, Subscription, SubscriptionFilter, TableId};
use stktagg_topology::{PeerId, Role, Route, SourceKind};
use stktagg_wire::{Decoder, Encoder, Key, Message, TableDefinition, Update, Value, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Write buffer size above which no new updates are produced until it drains.
const HIGH_WATER: usize = 64 * 1024;
/// Free space made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Entries taken from the dirty set or a teach queue per round.
const BATCH: usize = 256;
/// Most tables a section holds (outputs and relays).
const MAX_TABLES: usize = 1024;
/// Delay before asking an aggregator again after it answered PARTIAL.
const RESYNC_RETRY: Duration = Duration::from_secs(1);
/// Delay before asking a HAProxy node again after it answered PARTIAL
/// (HAProxy's own `PEER_RESYNC_TIMEOUT`).
const NODE_RESYNC_RETRY: Duration = Duration::from_secs(5);

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// Shutdown or a newer session took over.
    Cancelled,
    /// The peer closed the connection.
    Closed,
    /// Nothing received within the idle timeout.
    Silent,
    /// The peer sent something we cannot accept.
    Protocol(WireError),
    /// The peer told us it found an error in what we sent.
    PeerError(&'static str),
    /// A socket error.
    Io(std::io::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Cancelled => f.write_str("session closed by us (shutdown or replaced)"),
            End::Closed => f.write_str("connection closed by peer"),
            End::Silent => f.write_str("peer silent past the idle timeout"),
            End::Protocol(e) => write!(f, "protocol error from peer: {e}"),
            End::PeerError(what) => write!(f, "peer reported {what}"),
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

/// A table we send on this session: one of the store's, or a source's own input
/// table taught back to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum OutTable {
    Store(TableId),
    TeachBack(bytes::Bytes),
}

/// An entry to teach back to a restarted source: its own last values.
#[derive(Debug)]
struct TeachBack {
    name: bytes::Bytes,
    def: TableDefinition,
    entries: VecDeque<(Key, Vec<Value>, Option<u32>)>,
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
    tracing::info!(section = %section.name, peer = %peer.name, dialed = conn.dialed, downgraded = conn.downgraded, "session established");

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
    let mut s = Session {
        section: section.clone(),
        id,
        downgraded: conn.downgraded,
        decoder: Decoder::with_max_message_len(section.tunables.max_message_size),
        encoder: Encoder::new(),
        inbound: HashMap::new(),
        pending_acks: BTreeMap::new(),
        out_ids: HashMap::new(),
        next_out_id: 1,
        selected: None,
        teach: None,
        teach_back: VecDeque::new(),
        awaiting_resync: false,
        taught_unacked: HashMap::new(),
        retry_resync_at: None,
        node_partial: false,
        peer_end: None,
        out: BytesMut::with_capacity(16 * 1024),
        counters: crate::metrics::UpdateCounters::new(&section.name, &peer.name),
        sub,
        wake,
        last_tx: tokio::time::Instant::now(),
    };
    let end = s.run(conn, cancel).await;
    peer.stats.set_state(SessionState::Idle);
    crate::metrics::session_up(&section.name, &peer.name, false);
    if let End::Protocol(e) = &end {
        peer.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
        crate::metrics::protocol_error(&section.name, &peer.name, &crate::metrics::error_kind(e));
    }
    // A peer that keeps failing must not flood the logs: a few lines a minute, with
    // the count of the ones left out.
    if let Some(suppressed) = peer.stats.log_limit.allow() {
        match &end {
            End::Protocol(_) | End::PeerError(_) | End::Silent => {
                tracing::warn!(section = %section.name, peer = %peer.name, suppressed, "session ended: {end}")
            }
            _ => {
                tracing::info!(section = %section.name, peer = %peer.name, suppressed, "session ended: {end}")
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

struct Session {
    section: Arc<Section>,
    id: PeerId,
    downgraded: bool,
    decoder: Decoder,
    encoder: Encoder,
    inbound: HashMap<u32, Inbound>,
    pending_acks: BTreeMap<u32, u32>,
    /// Our table ids for the store's tables on this session, with the last update id.
    out_ids: HashMap<OutTable, (u32, u32)>,
    next_out_id: u32,
    /// The table currently selected on the wire (our id).
    selected: Option<u32>,
    /// A full resync we owe the peer: the entries still to send, then FINISHED.
    teach: Option<VecDeque<(TableId, Key)>>,
    teach_back: VecDeque<TeachBack>,
    /// Teach-back tables (our id) with the last update id sent and not yet acked.
    /// Once all are acked we ask the source for a full resync: HAProxy 3.2.0 never
    /// pushes local changes to an entry it learned from a peer (fixed in 3.3), and a
    /// resync request makes the taught entries its own again. Harmless elsewhere: the
    /// source resends what it holds, which is what we hold. HAProxy 3.3+ sends no
    /// acks while it is learning, and needs no such resync.
    taught_unacked: HashMap<u32, u32>,
    /// We sent RESYNC REQUEST and wait for FINISHED or PARTIAL.
    awaiting_resync: bool,
    /// When to ask a peer again after it answered PARTIAL.
    retry_resync_at: Option<tokio::time::Instant>,
    /// A node answered our last resync request with PARTIAL.
    node_partial: bool,
    /// The peer told us it closes (it sent an error message).
    peer_end: Option<End>,
    out: BytesMut,
    counters: crate::metrics::UpdateCounters,
    sub: Subscription,
    wake: Arc<Wake>,
    last_tx: tokio::time::Instant,
}

impl Session {
    fn peer(&self) -> &crate::section::PeerRuntime {
        &self.section.peers[self.id.0]
    }

    async fn run(&mut self, conn: Incoming, cancel: CancellationToken) -> End {
        let (mut rd, mut wr) = conn.stream.into_split();
        let mut inbuf = conn.leftover;
        let t = self.section.tunables.clone();
        // A heartbeat at once: HAProxy may check liveness within 50 ms of a collision.
        self.push(&Message::Heartbeat);
        if self.peer().is_source() || self.peer().group().is_some() {
            self.request_resync();
        }
        let resync_flag = self.peer().resync_flag();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_rx = tokio::time::Instant::now();
        // Anything already buffered after the hello.
        if let Err(e) = self.process_input(&mut inbuf) {
            return self.fail(&mut wr, e).await;
        }
        loop {
            self.produce();
            // Read in large chunks: a full buffer would otherwise grow by a few bytes
            // per read.
            inbuf.reserve(READ_CHUNK);
            let writing = !self.out.is_empty();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    // Drain: what is pending for this peer (up to the high-water mark)
                    // and the write buffer, best effort and bounded in time.
                    self.produce();
                    let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(&self.out)).await;
                    return End::Cancelled;
                }
                // Writing before reading: a source that streams at full speed must
                // not hold back its acks and sums (nor the other peers' sums) until
                // it pauses. Reading is never stopped, so two aggregators that both
                // have a full write buffer cannot deadlock each other.
                r = wr.write_buf(&mut self.out), if writing => {
                    match r {
                        Ok(_) => self.last_tx = tokio::time::Instant::now(),
                        Err(e) => return End::Io(e),
                    }
                }
                r = rd.read_buf(&mut inbuf) => {
                    match r {
                        Ok(0) => return End::Closed,
                        Ok(_) => {
                            last_rx = tokio::time::Instant::now();
                            self.peer().stats.last_rx_ms.store(self.section.clock.now_ms(), Ordering::Relaxed);
                            if let Err(e) = self.process_input(&mut inbuf) {
                                return self.fail(&mut wr, e).await;
                            }
                            if let Some(end) = self.take_peer_end() {
                                return end;
                            }
                        }
                        Err(e) => return End::Io(e),
                    }
                }
                _ = self.wake.0.notified(), if !writing => {}
                _ = resync_flag.notified() => {
                    self.request_resync();
                }
                _ = tick.tick() => {
                    if last_rx.elapsed() > t.idle_timeout {
                        return End::Silent;
                    }
                    if self.retry_resync_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
                        self.retry_resync_at = None;
                        self.request_resync();
                    }
                    if self.last_tx.elapsed() >= t.heartbeat_interval && self.out.is_empty() {
                        self.push(&Message::Heartbeat);
                    }
                }
            }
        }
    }

    /// Sends RESYNC REQUEST and marks the start of a full resync from this peer.
    fn request_resync(&mut self) {
        let now = self.section.clock.now_ms();
        let source = self.peer().source_id();
        self.section.store.begin_resync(source, now);
        self.awaiting_resync = true;
        self.push(&Message::ResyncRequest);
    }

    /// Sends PROTOCOL ERROR (or SIZE LIMIT) and ends the session.
    async fn fail(&mut self, wr: &mut tokio::net::tcp::OwnedWriteHalf, e: WireError) -> End {
        self.out.clear();
        if let Some(msg) = e.reply() {
            self.push(&msg);
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(&self.out)).await;
        End::Protocol(e)
    }

    fn take_peer_end(&mut self) -> Option<End> {
        self.peer_end.take()
    }

    /// Encodes a message into the write buffer. Our own messages always encode; a
    /// failure is a bug, logged and skipped rather than fatal to the daemon.
    fn push(&mut self, msg: &Message) {
        if let Err(e) = self.encoder.encode(msg, &mut self.out) {
            tracing::error!(section = %self.section.name, peer = %self.peer().name, error = %e, ?msg, "failed to encode our own message");
        }
    }

    /// Decodes and handles every complete message in `inbuf`, then acknowledges.
    fn process_input(&mut self, inbuf: &mut BytesMut) -> Result<(), WireError> {
        while let Some(msg) = self.decoder.decode(inbuf)? {
            self.handle(msg)?;
            if self.peer_end.is_some() {
                break;
            }
        }
        let acks = std::mem::take(&mut self.pending_acks);
        for (table_id, update_id) in acks {
            self.push(&Message::Ack {
                table_id,
                update_id,
            });
        }
        Ok(())
    }

    fn handle(&mut self, msg: Message) -> Result<(), WireError> {
        let now = self.section.clock.now_ms();
        match msg {
            Message::Heartbeat => {
                self.peer()
                    .stats
                    .last_heartbeat_ms
                    .store(now, Ordering::Relaxed);
            }
            Message::TableDefinition(def) => self.on_definition(def),
            Message::TableSwitch { .. } => {}
            Message::Update(u) => self.on_update(u, now),
            Message::Ack {
                table_id,
                update_id,
            } => self.on_ack(table_id, update_id),
            Message::ResyncRequest => self.on_resync_request(now),
            Message::ResyncFinished | Message::ResyncPartial => {
                self.push(&Message::ResyncConfirm);
                let finished = matches!(msg, Message::ResyncFinished);
                self.on_resync_end(finished, now);
            }
            Message::ResyncConfirm => {
                // A node answers PARTIAL while it is learning from us, and is complete
                // once it confirms our lesson: ask it again now rather than at the
                // retry timer. Only nodes: an aggregator's PARTIAL is about its own
                // sources, and asking it again on every CONFIRM would ping-pong.
                if self.node_partial && self.teach.is_none() {
                    self.node_partial = false;
                    self.retry_resync_at = None;
                    self.request_resync();
                }
            }
            Message::ProtocolError => {
                self.peer_end = Some(End::PeerError("a protocol error in what we sent"));
            }
            Message::SizeLimit => {
                self.peer_end = Some(End::PeerError("a message over its size limit"));
            }
            Message::Ignored { class, msg_type } => {
                tracing::debug!(section = %self.section.name, peer = %self.peer().name, class, msg_type, "ignoring unknown message");
            }
        }
        Ok(())
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

    fn on_update(&mut self, u: Update, now: u64) {
        self.pending_acks.insert(u.table_id, u.update_id);
        let peer = &self.section.peers[self.id.0];
        peer.stats.updates_in.fetch_add(1, Ordering::Relaxed);
        self.counters.received.increment(1);
        let expire = u.expire_ms.filter(|_| {
            self.decoder
                .definition(u.table_id)
                .is_some_and(|d| d.expire_ms > 0)
        });
        let res = match self.inbound.get(&u.table_id) {
            Some(Inbound::Aggregate(h)) => {
                self.section.store.apply(h, &u.key, &u.values, expire, now)
            }
            // The store only hears the group's active member.
            Some(Inbound::Relay(h)) => self
                .section
                .store
                .relay_apply(h, &u.key, &u.values, expire, now),
            Some(Inbound::Ignored) | None => return,
        };
        if let Err(e) = res {
            tracing::debug!(section = %self.section.name, peer = %peer.name, error = %e, "update refused");
        }
    }

    fn on_ack(&mut self, table_id: u32, update_id: u32) {
        let Some(&last) = self.taught_unacked.get(&table_id) else {
            return;
        };
        // Update ids wrap; "at or after" in modular arithmetic.
        if update_id.wrapping_sub(last) < (1 << 31) {
            self.taught_unacked.remove(&table_id);
            if self.taught_unacked.is_empty() && self.teach_back.is_empty() && !self.awaiting_resync
            {
                self.request_resync();
            }
        }
    }

    fn on_resync_request(&mut self, now: u64) {
        let section = self.section.clone();
        let peer = &section.peers[self.id.0];
        peer.stats.resyncs_out.fetch_add(1, Ordering::Relaxed);
        crate::metrics::resync(&self.section.name, &peer.name, "out");
        let filter = self.sub.filter();
        let mut queue = VecDeque::new();
        for t in self.section.store.tables() {
            let wanted = match t.kind {
                stktagg_store::TableKind::Output => filter.outputs,
                stktagg_store::TableKind::Relay { .. } => filter.relays,
            };
            if wanted {
                queue.extend(self.section.store.keys(t.id).into_iter().map(|k| (t.id, k)));
            }
        }
        self.teach = Some(queue);
        if peer.is_source() && self.section.plan.teach_back {
            self.teach_back = self
                .section
                .store
                .contributions_of(peer.source_id(), now)
                .into_iter()
                .map(|c| TeachBack {
                    name: c.input_name,
                    def: c.definition,
                    entries: c
                        .entries
                        .into_iter()
                        .map(|e| (e.key, e.values, e.expire_ms))
                        .collect(),
                })
                .collect();
        }
        tracing::info!(section = %self.section.name, peer = %peer.name, "peer asked for a full resync");
    }

    fn on_resync_end(&mut self, finished: bool, now: u64) {
        if !self.awaiting_resync {
            return;
        }
        self.awaiting_resync = false;
        let section = self.section.clone();
        let peer = &section.peers[self.id.0];
        peer.stats.resyncs_in.fetch_add(1, Ordering::Relaxed);
        crate::metrics::resync(&self.section.name, &peer.name, "in");
        // A source that says PARTIAL was not up to date itself: a node that has just
        // restarted and is still learning, or an aggregator still rebuilding. What it
        // did not send is not gone: a node gets it back from our teach-back, an
        // aggregator from its own sources. So its earlier contributions stay until it
        // sends them again or they expire. Only a node we do not teach back has really
        // lost them: it counts anew, and so does its share of the sums.
        let lost =
            matches!(peer.role, Role::Source(SourceKind::Node)) && !self.section.plan.teach_back;
        if finished || !peer.is_source() || lost {
            self.section.store.end_resync(peer.source_id(), now);
        }
        if finished {
            peer.stats.resynced.store(true, Ordering::Relaxed);
        } else {
            // Not complete yet (it has just started): ask again later, as HAProxy does
            // after a PARTIAL. Aggregators are asked again soon (an upper one is not
            // relayed before it is complete; a lower one holds us PARTIAL until it
            // is); a node, whose lesson costs its whole table, after HAProxy's 5 s.
            let is_node = matches!(peer.role, Role::Source(SourceKind::Node));
            self.node_partial = is_node;
            let delay = if is_node {
                NODE_RESYNC_RETRY
            } else {
                RESYNC_RETRY
            };
            self.retry_resync_at = Some(tokio::time::Instant::now() + delay);
        }
        if let Some(group) = peer.group() {
            if !finished {
                peer.stats.resynced.store(false, Ordering::Relaxed);
            }
            on_group_change(&self.section, group, Some(self.id));
        }
    }

    /// Fills the write buffer from the teach queues and the dirty set, up to the
    /// high-water mark.
    fn produce(&mut self) {
        let now = self.section.clock.now_ms();
        while self.out.len() < HIGH_WATER {
            if let Some(tb) = self.teach_back.front_mut() {
                if let Some((key, values, expire)) = tb.entries.pop_front() {
                    let (name, def) = (tb.name.clone(), tb.def.clone());
                    self.send_teach_back(&name, &def, key, values, expire);
                    continue;
                }
                self.teach_back.pop_front();
                continue;
            }
            if let Some(queue) = self.teach.as_mut() {
                let batch: Vec<_> = (0..BATCH).map_while(|_| queue.pop_front()).collect();
                if batch.is_empty() {
                    self.teach = None;
                    // PARTIAL tells an aggregator not to rely on us yet. A HAProxy node
                    // told PARTIAL would wait 5 s before it pushes its own counts, and
                    // we would wait for those counts to be complete: nodes always get
                    // FINISHED; the sums reach them live as they complete.
                    let is_node = matches!(self.peer().role, Role::Source(SourceKind::Node));
                    let end = if is_node || self.section.up_to_date() {
                        Message::ResyncFinished
                    } else {
                        Message::ResyncPartial
                    };
                    self.push(&end);
                    continue;
                }
                for (table, key) in batch {
                    self.send_entry(table, key, now, false);
                }
                continue;
            }
            let batch = self.sub.drain(BATCH);
            if batch.is_empty() {
                break;
            }
            for (table, key) in batch {
                self.send_entry(table, key, now, true);
            }
        }
    }

    /// Selects our table on the wire, sending its definition when needed (`def` is
    /// only called then), and returns our table id and the next update id for it.
    fn select(
        &mut self,
        key: &OutTable,
        def: impl FnOnce(u32) -> Option<TableDefinition>,
    ) -> Option<(u32, u32)> {
        let (id, fresh) = match self.out_ids.get(key) {
            Some((id, _)) => (*id, false),
            None => (self.next_out_id, true),
        };
        if fresh || self.selected != Some(id) {
            // HAProxy re-sends a full definition to change tables, and so do we.
            let def = def(id)?;
            self.push(&Message::TableDefinition(def));
            self.selected = Some(id);
            if fresh {
                self.next_out_id += 1;
                self.out_ids.insert(key.clone(), (id, 0));
            }
        }
        let e = self.out_ids.get_mut(key)?;
        e.1 = e.1.wrapping_add(1);
        Some((e.0, e.1))
    }

    /// Sends one entry's current value; `live` for a change (as opposed to a full
    /// resync we teach), which is what the propagation histogram measures.
    fn send_entry(&mut self, table: TableId, key: Key, now: u64, live: bool) {
        let Some(entry) = self.section.store.read(table, &key, now) else {
            // Gone since it was marked (expired): there are no deletes on the wire.
            return;
        };
        let changed_at = entry.changed_at;
        // An Arc clone, so the closure does not borrow the session.
        let store = self.section.store.clone();
        let def = |id| {
            store.table_info(table).map(|i| TableDefinition {
                table_id: id,
                ..i.definition
            })
        };
        let Some((table_id, update_id)) = self.select(&OutTable::Store(table), def) else {
            return;
        };
        let kind = self.encoder.update_kind(table_id, update_id, false);
        self.push(&Message::Update(Update {
            kind,
            table_id,
            update_id,
            expire_ms: None,
            key,
            values: entry.values,
        }));
        let peer = self.peer();
        peer.stats.updates_out.fetch_add(1, Ordering::Relaxed);
        self.counters.sent.increment(1);
        if live && changed_at > 0 {
            crate::metrics::propagation(now.saturating_sub(changed_at));
        }
    }

    fn send_teach_back(
        &mut self,
        name: &bytes::Bytes,
        def: &TableDefinition,
        key: Key,
        values: Vec<Value>,
        expire: Option<u32>,
    ) {
        let tkey = OutTable::TeachBack(name.clone());
        let Some((table_id, update_id)) = self.select(&tkey, |id| {
            Some(TableDefinition {
                table_id: id,
                name: name.clone(),
                ..def.clone()
            })
        }) else {
            return;
        };
        let timed = !self.downgraded && def.expire_ms > 0 && expire.is_some();
        let kind = self.encoder.update_kind(table_id, update_id, timed);
        self.taught_unacked.insert(table_id, update_id);
        self.push(&Message::Update(Update {
            kind,
            table_id,
            update_id,
            expire_ms: if timed { expire } else { None },
            key,
            values,
        }));
    }
}
