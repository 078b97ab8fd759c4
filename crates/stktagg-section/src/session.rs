//! [`SessionCore`]: what one peer session means to its section. The protocol engine
//! ([`stktagg_session::PeerSession`]) reports events and asks for entries; this
//! gives them their meaning: input tables go into the store, a resync request is
//! answered from the store, the store's changes for this peer are what is sent
//! live, and the group election hears of every session that comes and goes.
//!
//! A peer with a `shard` in a section with `shards` gets only the entries of its
//! shard, live, in lessons and taught back: HAProxy's rule for its own sharded
//! peers, with HAProxy's key-to-shard function ([`stktagg_wire::shard`]). The seed
//! is a table's local id in a HAProxy peers section named like our section
//! (`<section>/<table>`), so that a HAProxy node and a stktagg intermediate whose
//! sections have one name agree on every key's shard.

use crate::section::{PeerInfo, SectionCore, Signals};
use crate::stats::SessionState;
use crate::store::TableStore;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use stktagg_session::{End, Event, Feed, Outbox, PeerSession, Progress, ResyncPolicy, TableKey};
use stktagg_store::{Change, SharedChange, StoreError, SubscriptionFilter, TableId, Waker};
use stktagg_topology::{IgnoreReason, PeerId, Role, Route, SourceKind};
use stktagg_wire::shard::{key_shard, local_id, table_seed};
use stktagg_wire::{Key, KeyType, TableDefinition, Update, Value};

/// The session's maps, looked up for every update (keys: table ids and
/// definitions).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

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

/// The resync policy for a peer: sources and upstreams are asked at once; a node
/// that answers PARTIAL is asked again when it confirms our lesson or after
/// HAProxy's 5 s, an aggregator after 1 s; a source that acknowledged every entry
/// taught back to it is asked again (HAProxy 3.2.0 never pushes changes to an entry
/// it learned from a peer; a resync makes them its own again).
pub fn resync_policy(role: Role) -> ResyncPolicy {
    let is_node = matches!(role, Role::Source(SourceKind::Node));
    ResyncPolicy {
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

/// Why a session ended.
#[derive(Debug)]
pub enum Ending {
    /// Shutdown or a newer session took over.
    Cancelled,
    /// The peer closed the connection.
    Closed,
    /// The protocol engine ended it (silence, bad input, the peer's complaint).
    Protocol(End),
    /// A socket error.
    Io(std::io::Error),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Cancelled => f.write_str("session closed by us (shutdown or replaced)"),
            Ending::Closed => f.write_str("connection closed by peer"),
            Ending::Protocol(e) => write!(f, "{e}"),
            Ending::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// What we do with a table a peer defined to us, by the peer's table id.
enum Inbound<S: TableStore> {
    Aggregate(S::Input),
    Relay(S::Relay),
    Ignored,
}

/// A source's own input table, taught back to it after its restart.
#[derive(Debug)]
struct TeachBack {
    key: TableKey,
    def: TableDefinition,
    entries: VecDeque<(Key, Vec<Value>, Option<u32>)>,
}

/// Which entries a sharded peer receives: those of one shard.
#[derive(Debug)]
struct ShardFilter {
    /// The section's `shards`.
    shards: u32,
    /// The peer's `shard`.
    shard: u32,
    /// Our section's name: the peers section name in every table's seed.
    section: String,
}

impl ShardFilter {
    /// The seed of the table HAProxy would know as `wire_name` in our section.
    fn seed(&self, wire_name: &[u8]) -> u64 {
        table_seed(&local_id(&self.section, wire_name))
    }

    /// Whether `key`, of a table with `seed` and `key_type`, is in the peer's shard.
    fn holds(&self, seed: u64, key_type: KeyType, key: &Key) -> bool {
        key_shard(seed, key_type, key, self.shards) == self.shard
    }
}

/// How one store table goes out on a session, worked out at its first entry (a
/// table's name and definition never change).
#[derive(Debug, Clone, Copy)]
struct Outgoing {
    /// The engine's name for it: that of the first table sent with the same
    /// definition. Tables relayed from several `up` groups under one name (the
    /// shards of a sharded upper tier, or independent upstreams) go out as one
    /// table: HAProxy knows a table by its name, and two ids for one name would
    /// have it redefine the table at every switch between them.
    key: TableKey,
    /// Its key type, for the shard of a key.
    key_type: KeyType,
    /// Its seed, for a sharded peer (0 otherwise).
    seed: u64,
}

/// One established session's meaning (see the module documentation).
pub struct SessionCore<S: TableStore> {
    section: Arc<SectionCore<S>>,
    signals: Arc<dyn Signals>,
    id: PeerId,
    remote: String,
    inbound: HashMap<u32, Inbound<S>>,
    /// Each table the peer defined (by its table id) and how it was routed: a
    /// reload that changes the routing re-routes them ([`SessionCore::switch_section`]).
    defined: HashMap<u32, (TableDefinition, Route)>,
    filter: SubscriptionFilter,
    /// The full resync we teach: the entries still to send.
    lesson: VecDeque<(TableId, Key)>,
    /// The peer's own entries still to teach back, per input table.
    teach_back: VecDeque<TeachBack>,
    /// Table keys of the teach-back tables, by input table name.
    teach_back_keys: HashMap<Bytes, TableKey>,
    /// For a sharded peer, which entries it gets.
    shard: Option<ShardFilter>,
    /// How each store table goes out (`None`: a table that is gone).
    outgoing: HashMap<TableId, Option<Outgoing>>,
    /// The last table looked up in `outgoing` (changes come in runs of one table).
    last_outgoing: Option<(TableId, Option<Outgoing>)>,
    /// The engine's name for each definition sent (table ids left out).
    keys_by_def: HashMap<TableDefinition, TableKey>,
    counters: crate::metrics::UpdateCounters,
    /// The values of the entry being sent (reused: the send path allocates nothing
    /// per entry).
    values: Vec<Value>,
    /// The changes being sent (reused, as `values`).
    batch: Vec<Change>,
    sub: S::Sub,
    now: u64,
}

impl<S: TableStore> std::fmt::Debug for SessionCore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCore")
            .field("section", &self.section.name)
            .field("peer", &self.peer().name)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl<S: TableStore> SessionCore<S> {
    /// A session with peer `id` is established at `now` (`remote` names its address
    /// in logs). `waker` is woken whenever the store has something for this peer.
    pub fn start(
        section: Arc<SectionCore<S>>,
        signals: Arc<dyn Signals>,
        id: PeerId,
        remote: String,
        waker: Arc<dyn Waker>,
        now: u64,
    ) -> Self {
        let peer = &section.peers[id.0];
        let n = peer.stats.sessions.fetch_add(1, Ordering::Relaxed);
        if n > 0 {
            peer.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        peer.stats.set_state(SessionState::Established);
        peer.stats.last_hello_ms.store(now, Ordering::Relaxed);
        peer.stats.last_rx_ms.store(now, Ordering::Relaxed);
        crate::metrics::session_up(&section.name, &peer.name, true);
        let filter = SubscriptionFilter {
            outputs: true,
            relays: peer.is_source(),
        };
        // A peer that reconnects without restarting does not ask for a resync, and
        // it may have missed changes while it was away: every session starts by
        // sending every entry the peer should hold (coalesced with live changes).
        let sub = section.store.subscribe_all(filter, waker);
        let counters = crate::metrics::UpdateCounters::new(&section.name, &peer.name);
        let shard = section.plan.shard_of(id).map(|shard| ShardFilter {
            shards: section.plan.shards,
            shard,
            section: section.name.clone(),
        });
        SessionCore {
            signals,
            id,
            remote,
            inbound: HashMap::default(),
            defined: HashMap::default(),
            filter,
            lesson: VecDeque::new(),
            teach_back: VecDeque::new(),
            teach_back_keys: HashMap::default(),
            shard,
            outgoing: HashMap::default(),
            last_outgoing: None,
            keys_by_def: HashMap::default(),
            counters,
            values: Vec::new(),
            batch: Vec::new(),
            sub,
            now,
            section,
        }
    }

    /// The section.
    pub fn section(&self) -> &SectionCore<S> {
        &self.section
    }

    /// The peer.
    pub fn peer(&self) -> &PeerInfo {
        &self.section.peers[self.id.0]
    }

    /// How many changed entries wait to be sent to this peer.
    pub fn pending(&self) -> usize {
        self.section.store.pending(&self.sub)
    }

    /// Moves the session to `section`, the core that succeeds its own after a
    /// reload ([`SectionCore::successor`]), and re-routes the tables the peer has
    /// defined by the new plan. A table whose route changed (a rule or a
    /// `forward` added or removed) is registered anew, and the peer is asked for
    /// a full resync: the entries it sent before the change were routed the old
    /// way (or ignored), and its lesson puts each where it now goes; what the old
    /// route left behind is dropped at the lesson's end, as after any resync.
    /// Tables whose route is the same are left alone: a reload that does not
    /// change this peer's routing costs its session nothing.
    ///
    /// A session of a peer the new plan removed, or whose role changed, is about
    /// to be closed by its runner: it moves without re-routing anything.
    pub fn switch_section(&mut self, section: Arc<SectionCore<S>>) {
        if Arc::ptr_eq(&self.section, &section) {
            return;
        }
        let same_role = section
            .plan
            .peer(self.id)
            .is_some_and(|p| p.role == self.peer().role && p.name == self.peer().name);
        self.section = section;
        if !same_role {
            return;
        }
        let mut rerouted = Vec::new();
        let tables: Vec<u32> = self.defined.keys().copied().collect();
        for table_id in tables {
            let Some((def, old)) = self.defined.get(&table_id).cloned() else {
                continue;
            };
            let route = self.route(&def);
            // Ignored for another reason is still ignored: nothing to redo.
            let both_ignored =
                matches!(route, Route::Ignore { .. }) && matches!(old, Route::Ignore { .. });
            if route != old && !both_ignored {
                rerouted.push(String::from_utf8_lossy(&def.name).into_owned());
                self.on_definition(def);
            }
        }
        if !rerouted.is_empty() {
            let peer = self.peer();
            tracing::info!(section = %self.section.name, peer = %peer.name, tables = %rerouted.join(", "), "the reload changed the routing of this peer's tables: asking it for a full resync");
            self.signals.request_resync(self.id);
        }
    }

    /// Sets the time the next calls run at.
    pub fn set_now(&mut self, now: u64) {
        self.now = now;
    }

    /// Handles every pending event of `engine`; the protocol end, if it closed.
    pub fn handle_events(&mut self, engine: &mut PeerSession, now: u64) -> Option<End> {
        self.now = now;
        let mut updates = 0;
        let end = self.handle_some_events(engine, &mut updates);
        if updates > 0 {
            // Counted once per read pass, not per update.
            let peer = self.peer();
            peer.stats.updates_in.fetch_add(updates, Ordering::Relaxed);
            self.counters.received.increment(updates);
        }
        if end.is_some() {
            return end;
        }
        if let Some(t) = engine.last_heartbeat() {
            self.peer()
                .stats
                .last_heartbeat_ms
                .store(t, Ordering::Relaxed);
        }
        None
    }

    /// Handles the events waiting, counting updates in `updates`; the end of the
    /// session if one of them is.
    fn handle_some_events(&mut self, engine: &mut PeerSession, updates: &mut u64) -> Option<End> {
        while let Some(event) = engine.poll_event() {
            match event {
                Event::TableDefined(def) => self.on_definition(def),
                Event::Update(u) => {
                    *updates += 1;
                    let values = self.on_update(u);
                    engine.recycle_values(values);
                }
                Event::ResyncAsked => {
                    let source = self.peer().source_id();
                    self.section.store.begin_resync(source, self.now);
                }
                Event::ResyncEnded { finished } => self.on_resync_end(finished),
                Event::ResyncRequested => self.on_resync_request(),
                Event::Closed(end) => return Some(end),
                // The source read our whole lesson, teach-back first: it holds
                // what we taught, nothing is owed any more.
                Event::Confirmed => *crate::lock(&self.peer().stats.teach_back_owed) = None,
                Event::HelloReceived(_) | Event::Established { .. } | Event::Acked { .. } => {}
            }
        }
        None
    }

    /// The session is over: counts, logs, and re-elects the peer's group.
    pub fn finish(self, ending: &Ending) {
        let section = &self.section;
        let peer = self.peer();
        peer.stats.set_state(SessionState::Idle);
        crate::metrics::session_up(&section.name, &peer.name, false);
        if let Ending::Protocol(End::Protocol(e)) = ending {
            peer.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            crate::metrics::protocol_error(
                &section.name,
                &peer.name,
                crate::metrics::error_kind(e),
            );
        }
        // A peer that keeps failing must not flood the logs: a few lines a minute,
        // with the count of the ones left out.
        let remote = &self.remote;
        if let Some(suppressed) = peer.stats.log_limit.allow(self.now) {
            if matches!(ending, Ending::Protocol(_)) {
                tracing::warn!(section = %section.name, peer = %peer.name, %remote, suppressed, "session ended: {ending}");
            } else {
                tracing::info!(section = %section.name, peer = %peer.name, %remote, suppressed, "session ended: {ending}");
            }
        }
        if !matches!(ending, Ending::Cancelled) {
            *crate::lock(&peer.stats.last_error) = Some(ending.to_string());
        }
        if let Some(group) = peer.group() {
            peer.stats.resynced.store(false, Ordering::Relaxed);
            section.elect(group, self.now, self.signals.as_ref());
        }
    }

    /// Where the plan sends table `def` of this peer, within the bound on tables.
    fn route(&self, def: &TableDefinition) -> Route {
        let section = &self.section;
        let peer = self.peer();
        let name = String::from_utf8_lossy(&def.name);
        let route = section.plan.route_incoming(self.id, &name);
        if let Route::Aggregate { output } = &route
            && !section.store.has_output(output.as_bytes())
            && section.store.table_count() >= MAX_TABLES
        {
            // Tables are created on demand from the names peers send: a bound keeps a
            // peer that invents names from growing the store without end.
            if let Some(suppressed) = peer.stats.log_limit.allow(self.now) {
                tracing::warn!(section = %section.name, peer = %peer.name, table = %name, suppressed, "too many tables, ignoring a new one");
            }
            return Route::Ignore {
                reason: IgnoreReason::NoRule,
            };
        }
        route
    }

    fn on_definition(&mut self, def: TableDefinition) {
        let section = self.section.clone();
        let peer = &section.peers[self.id.0];
        let name = String::from_utf8_lossy(&def.name).into_owned();
        let route = self.route(&def);
        self.defined
            .insert(def.table_id, (def.clone(), route.clone()));
        let store = &section.store;
        let inbound = match route {
            Route::Aggregate { output } => {
                match store.register_input(peer.source_id(), &def.name, &def, output.as_bytes()) {
                    Ok(h) => {
                        store.set_output_size(&h, section.plan.output_size(&output));
                        crate::metrics::table_full(&section.name, &output, 0);
                        Inbound::Aggregate(h)
                    }
                    Err(e) => {
                        crate::metrics::table_ignored(&section.name, &peer.name);
                        tracing::warn!(section = %section.name, peer = %peer.name, table = %name, error = %e, "input table refused");
                        Inbound::Ignored
                    }
                }
            }
            Route::Relay { group } => {
                let group = group.0 as u16;
                match store.register_relay(group, peer.source_id(), &def, &def.name) {
                    Ok(handle) => {
                        section.relay_defined(group, self.id, self.now);
                        Inbound::Relay(handle)
                    }
                    Err(e) => {
                        tracing::warn!(section = %section.name, peer = %peer.name, table = %name, error = %e, "relayed table refused");
                        Inbound::Ignored
                    }
                }
            }
            Route::Ignore { reason } => {
                crate::metrics::table_ignored(&section.name, &peer.name);
                tracing::debug!(section = %section.name, peer = %peer.name, table = %name, %reason, "ignoring table");
                Inbound::Ignored
            }
        };
        self.inbound.insert(def.table_id, inbound);
    }

    /// Applies an update; gives its values buffer back for the next one.
    fn on_update(&mut self, u: Update) -> Vec<Value> {
        let peer = &self.section.peers[self.id.0];
        let store = &self.section.store;
        let res = match self.inbound.get(&u.table_id) {
            Some(Inbound::Aggregate(h)) => store.apply(h, &u.key, &u.values, u.expire_ms, self.now),
            // The store only hears the group's relayed member.
            Some(Inbound::Relay(h)) => {
                store.relay_apply(h, &u.key, &u.values, u.expire_ms, self.now)
            }
            Some(Inbound::Ignored) | None => return u.values,
        };
        match res {
            Ok(_) => {}
            Err(StoreError::TableFull { table, limit }) => {
                // Never evicted: the new key waits for room (expiry) or a larger
                // `size`; every refusal counts, the warning is rate-limited.
                crate::metrics::table_full(&self.section.name, &table, 1);
                if let Some(suppressed) = peer.stats.log_limit.allow(self.now) {
                    tracing::warn!(section = %self.section.name, peer = %peer.name, %table, limit, suppressed, "output table full: a new key is refused (raise the rule's `size`, or wait for entries to expire)");
                }
            }
            Err(e) => {
                tracing::debug!(section = %self.section.name, peer = %peer.name, error = %e, "update refused");
            }
        }
        u.values
    }

    fn on_resync_request(&mut self) {
        let section = self.section.clone();
        let peer = &section.peers[self.id.0];
        peer.stats.resyncs_out.fetch_add(1, Ordering::Relaxed);
        crate::metrics::resync(&section.name, &peer.name, "out");
        self.lesson = section.store.lesson(self.filter).into();
        self.teach_back.clear();
        if peer.is_source() && section.plan.teach_back {
            // What an earlier session began to teach and the source did not
            // confirm is still owed: its lesson since may have replaced the old
            // counts we hold with the few it made after its restart.
            let mut tables = section.store.contributions_of(peer.source_id(), self.now);
            {
                let mut owed = crate::lock(&peer.stats.teach_back_owed);
                if let Some(before) = owed.as_ref() {
                    before.lay_over(&mut tables, self.now);
                    tracing::info!(section = %section.name, peer = %peer.name, "teaching back what an earlier session could not");
                }
                *owed = Some(crate::OwedTeachBack {
                    at_ms: self.now,
                    tables: tables.clone(),
                });
            }
            for c in tables {
                let mut entries: VecDeque<_> = c
                    .entries
                    .into_iter()
                    .map(|e| (e.key, e.values, e.expire_ms))
                    .collect();
                if let Some(f) = &self.shard {
                    let seed = f.seed(&c.input_name);
                    let key_type = c.definition.key_type;
                    entries.retain(|(key, ..)| f.holds(seed, key_type, key));
                }
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
                    entries,
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
        peer.stats.resynced.store(finished, Ordering::Relaxed);
        peer.stats.answered_resync.store(true, Ordering::Relaxed);
        if let Some(group) = peer.group() {
            section.elect(group, self.now, self.signals.as_ref());
        }
    }

    /// Sends one entry of a store table; `Some(when it changed)` if it went out
    /// (the caller counts what it sent, once per batch).
    fn send_entry(&mut self, out: &mut Outbox<'_>, table: TableId, key: Key) -> Option<u64> {
        let o = self.wanted(table, &key)?;
        let store = &self.section.store;
        // None: gone since it was marked (expired); there are no deletes on the wire.
        let entry = store.read_into(table, &key, self.now, &mut self.values)?;
        let def = || store.definition(table);
        match out.send(o.key, def, &key, &self.values, None) {
            Ok(true) => Some(entry.changed_at),
            Ok(false) => None,
            Err(e) => {
                tracing::error!(section = %self.section.name, peer = %self.peer().name, error = %e, "failed to encode our own update");
                None
            }
        }
    }

    /// Counts `n` entries sent to the peer.
    fn count_sent(&self, n: u64) {
        if n > 0 {
            self.peer()
                .stats
                .updates_out
                .fetch_add(n, Ordering::Relaxed);
            self.counters.sent.increment(n);
        }
    }

    /// How `key` of store table `table` goes out on this session, if the peer
    /// gets it: a sharded peer gets the keys of its shard only.
    fn wanted(&mut self, table: TableId, key: &Key) -> Option<Outgoing> {
        let o = self.outgoing(table)?;
        match &self.shard {
            Some(f) if !f.holds(o.seed, o.key_type, key) => None,
            _ => Some(o),
        }
    }

    /// How store table `table` goes out on this session.
    fn outgoing(&mut self, table: TableId) -> Option<Outgoing> {
        if let Some((t, o)) = self.last_outgoing
            && t == table
        {
            return o;
        }
        if let Some(&o) = self.outgoing.get(&table) {
            self.last_outgoing = Some((table, o));
            return o;
        }
        let o = self.section.store.definition(table).map(|def| {
            let seed = self.shard.as_ref().map_or(0, |f| f.seed(&def.name));
            let key_type = def.key_type;
            let own = TableKey(u64::from(table.0));
            let key = *self
                .keys_by_def
                .entry(TableDefinition { table_id: 0, ..def })
                .or_insert(own);
            Outgoing {
                key,
                key_type,
                seed,
            }
        });
        self.outgoing.insert(table, o);
        o
    }
}

impl<S: TableStore> SessionCore<S> {
    /// Sends a live change encoded once for every destination; whether it went out.
    fn send_shared(
        &mut self,
        out: &mut Outbox<'_>,
        table: TableId,
        to: Outgoing,
        shared: &SharedChange,
    ) -> bool {
        let store = &self.section.store;
        let def = || store.definition(table);
        match out.send_shared(to.key, def, &shared.update) {
            Ok(sent) => sent,
            Err(e) => {
                tracing::error!(section = %self.section.name, peer = %self.peer().name, error = %e, "failed to frame a shared update");
                false
            }
        }
    }
}

impl<S: TableStore> Feed for SessionCore<S> {
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
            if let Err(e) = out.send(tb.key, def, &key, &values, expire) {
                tracing::error!(section = %self.section.name, error = %e, "failed to encode a taught-back entry");
            }
        }
        Progress::More
    }

    fn lesson(&mut self, out: &mut Outbox<'_>) -> Progress {
        let mut sent = 0;
        let mut progress = Progress::More;
        for _ in 0..BATCH {
            let Some((table, key)) = self.lesson.pop_front() else {
                progress = Progress::Done;
                break;
            };
            sent += u64::from(self.send_entry(out, table, key).is_some());
        }
        self.count_sent(sent);
        progress
    }

    /// PARTIAL tells an aggregator not to rely on us yet. A HAProxy node told
    /// PARTIAL would wait 5 s before it pushes its own counts, and we would wait for
    /// those counts to be complete: nodes always get FINISHED; the sums reach them
    /// live as they complete.
    fn lesson_complete(&self) -> bool {
        matches!(self.peer().role, Role::Source(SourceKind::Node))
            || self.section.up_to_date(self.now)
    }

    /// Changes wait, coalesced in the dirty set, while our sums are being rebuilt
    /// ([`SectionCore::publishing`]); the session's timer tick brings us back here.
    fn live(&mut self, out: &mut Outbox<'_>) -> Progress {
        if !self.section.publishing(self.now) {
            return Progress::Done;
        }
        let mut batch = std::mem::take(&mut self.batch);
        self.section.store.drain_into(&self.sub, BATCH, &mut batch);
        if batch.is_empty() {
            self.batch = batch;
            return Progress::Done;
        }
        let mut sent = 0;
        // The batch's propagation sample: when its oldest change sent was made.
        let mut oldest = u64::MAX;
        for change in batch.drain(..) {
            let Some(to) = self.wanted(change.table, &change.key) else {
                continue;
            };
            let store = &self.section.store;
            let now = self.now;
            // Encoded once, by whichever session sends it first.
            let shared = change.shared.as_ref().and_then(|slot| {
                slot.get_or_init(|| store.shared_change(change.table, &change.key, now))
                    .as_ref()
            });
            let changed_at = match shared {
                Some(sh) => self
                    .send_shared(out, change.table, to, sh)
                    .then_some(sh.changed_at),
                None => self.send_entry(out, change.table, change.key),
            };
            if let Some(at) = changed_at {
                sent += 1;
                if at > 0 {
                    oldest = oldest.min(at);
                }
            }
        }
        self.batch = batch;
        self.count_sent(sent);
        if oldest != u64::MAX {
            self.counters.propagation(self.now.saturating_sub(oldest));
        }
        Progress::More
    }
}
