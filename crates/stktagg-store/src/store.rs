//! The store of one `aggregations` section: contributions, outputs and relays.
//!
//! # Locking
//!
//! - Each table's entries live in a `DashMap<Key, Entry>`. A shard guard is only
//!   held for in-memory work on one entry (or, in the rare full sweeps of a resync
//!   end or a dropped source, on one shard's entries): never across a call out of
//!   the store, never while waking a subscriber, never across anything that blocks.
//! - While an entry guard is held, the store may take, in this order only: the
//!   table's expiry-wheel `Mutex`, the table's rate-activity set (another `DashMap`),
//!   and the server-name interner's `RwLock` (for reading). None of these is ever held
//!   while an entry guard is taken, so no cycle exists.
//! - Dirty marks go to subscriptions after the entry guard is released, and a
//!   destination's [`Waker`] is called with no lock of the store held: wakers are
//!   collected under a change log's lock and called after it is released (the test
//!   `wakers_are_called_with_no_store_lock_held` checks every path that wakes).
//! - The registry (tables, inputs, groups, sources) is one `RwLock`, written only by
//!   registrations and resync/source events, read to look a table up by id. The hot
//!   path (`apply`, `relay_apply`) does not touch it: handles carry what they need.
//!   It is taken before the subscription registry when both are needed (new tables,
//!   subscribing), so a subscription never misses nor doubles a new table.
//!
//! # Time
//!
//! `now` is the daemon's monotonic clock in ms. Expiry instants are absolute on that
//! clock (64 bits). Frequency counters use its low 32 bits, like HAProxy's `now_ms`.
//!
//! # Expiry
//!
//! Each table has a wheel of 100 ms buckets (a `BTreeMap` from bucket to keys). An
//! entry sits in at most one bucket at a time, the one of its earliest known expiry;
//! later applies that push expiry further do not touch the wheel. When a bucket falls
//! due, each of its entries drops its expired contributions and is queued again for
//! the next expiry of what remains. So `expire(now)` costs the number of entries due,
//! not the table size, and each entry touches the wheel about once per expiry period.
//!
//! # Rates
//!
//! Summed rates are published in the shape described in [`crate::rules`] and decay on
//! the receivers by themselves. [`Store::refresh_rates_budget`] re-marks the keys whose
//! published counter, read at `now` with HAProxy's read rule, differs from the true
//! sum at `now`; the daemon calls it every second or so, which bounds how often a
//! busy key is re-sent. Only keys with a non-zero rate (or a published counter not yet
//! decayed) are visited. Relay tables pass their rates through unchanged (re-aged):
//! the upper aggregator that published them re-publishes them itself.
//!
//! # Keep-alive
//!
//! A destination's copy of an entry expires on the destination's own clock. An
//! `apply` that leaves the aggregate unchanged still re-marks the key when it was
//! last marked more than half the table's expiry ago, so a key whose sources keep
//! touching it never expires on the destinations.

use crate::error::StoreError;
use crate::ids::{KeyHasher, SourceId, TableId, TableKind};
use crate::layout::{self, HDR, Layout, Mapping, Mismatch, get_u64, put_u64};
use crate::subscribe::Urgency;
use crate::subscribe::{SubRegistry, Subscription, SubscriptionFilter, TableLog, Waker};
use bytes::Bytes;
use dashmap::DashMap;
use std::collections::VecDeque;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use stktagg_wire::{DictValue, Key, KeyType, SharedLayout, SharedUpdate, TableDefinition, Value};

/// Shards of a table's entry map (a power of two).
const ENTRY_SHARDS: usize = 128;

/// Keys marked per lock of a destination's dirty set in bulk passes.
const MARK_BATCH: usize = 256;

/// Width of an expiry-wheel bucket in ms.
const WHEEL_MS: u64 = 100;

/// Limits of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The most entries one table may hold until [`Store::set_limit`] says
    /// otherwise; a new key beyond it is refused. Shown as the table's `size` in
    /// listings.
    pub max_entries_per_table: usize,
    /// The most distinct server names (`server_key` values) kept.
    pub max_server_names: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_entries_per_table: 16 << 20,
            max_server_names: 1 << 16,
        }
    }
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Applied {
    /// The published value of the key changed (or the key is new): it was marked
    /// dirty for subscribers.
    Changed,
    /// The published value is the same as before.
    Unchanged,
    /// A relay update from a member that is not the group's active member: dropped.
    Ignored,
}

/// The published state of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputEntry {
    /// The values, in the table definition's order (rates in their published shape
    /// for outputs, re-aged as received for relays).
    pub values: Vec<Value>,
    /// Remaining lifetime in ms of the entry (the longest of its contributions),
    /// `None` when it never expires.
    pub expire_ms: Option<u32>,
    /// Clock reading (the `now` of the call) when the entry was last marked for its
    /// destinations, 0 if never: the start of its propagation to them.
    pub changed_at: u64,
}

/// What [`Store::read_into`] tells of an entry besides its values (the other fields
/// of [`OutputEntry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// Remaining lifetime in ms, `None` when it never expires.
    pub expire_ms: Option<u32>,
    /// When the entry was last marked for its destinations, 0 if never.
    pub changed_at: u64,
}

impl OutputEntry {
    /// An entry of these values and what [`Store::read_into`] tells besides.
    pub fn new(values: Vec<Value>, meta: EntryMeta) -> OutputEntry {
        OutputEntry {
            values,
            expire_ms: meta.expire_ms,
            changed_at: meta.changed_at,
        }
    }

    /// What it tells besides its values.
    pub fn meta(&self) -> EntryMeta {
        EntryMeta {
            expire_ms: self.expire_ms,
            changed_at: self.changed_at,
        }
    }
}

/// A table's identity and definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The table's id.
    pub id: TableId,
    /// The table's name as sent on the wire.
    pub name: Bytes,
    /// Output or relay.
    pub kind: TableKind,
    /// The definition to announce (its `table_id` is `id`).
    pub definition: TableDefinition,
}

/// One line of a table listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    /// The table's id.
    pub id: TableId,
    /// The table's name.
    pub name: Bytes,
    /// Output or relay.
    pub kind: TableKind,
    /// The key type.
    pub key_type: KeyType,
    /// The key length.
    pub key_len: u32,
    /// The entry limit.
    pub size: usize,
    /// The entries held.
    pub used: usize,
}

/// One contribution behind an entry (`show table <t> key <k> detail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContributionDetail {
    /// The contributing source (or relaying member).
    pub source: SourceId,
    /// The input table's name (the relay table's name for relays).
    pub input_name: Bytes,
    /// The contribution's values in the output table's layout, rates re-aged to now.
    pub values: Vec<Value>,
    /// Remaining lifetime in ms, `None` when it never expires.
    pub expire_ms: Option<u32>,
}

/// A source's own entries of one input table, for teach-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaughtTable {
    /// The input table's name.
    pub input_name: Bytes,
    /// The input definition the source last registered.
    pub definition: TableDefinition,
    /// The entries.
    pub entries: Vec<TaughtEntry>,
}

/// One entry to teach back to its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaughtEntry {
    /// The key.
    pub key: Key,
    /// The values as the source last sent them (in its definition's order), rates
    /// re-aged to now. Types the output does not store come back as zero values.
    pub values: Vec<Value>,
    /// Remaining lifetime in ms, `None` when it never expires.
    pub expire_ms: Option<u32>,
}

/// Counts of what the store holds (tests).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StoreStats {
    /// Output tables.
    pub outputs: usize,
    /// Relay tables.
    pub relays: usize,
    /// Entries over all tables.
    pub entries: usize,
    /// Live input registrations.
    pub inputs: usize,
    /// Live subscriptions.
    pub subscriptions: usize,
}

#[derive(Debug)]
struct Entry {
    /// One block for the key's words: first the rate sums and their current parts
    /// as of `pub_at` (what receivers were given; two words per rate, output tables
    /// only: `pub_len` words), then the contributions, `stride` words each (see
    /// `layout`). One heap block per key rather than two.
    words: Vec<u32>,
    /// The expiry-wheel bucket this entry is queued in, 0 if none.
    sched: u64,
    /// When the entry was last marked dirty.
    pub_at: u64,
    /// How many words of `words` are published rates.
    pub_len: u32,
    /// Whether the key is in the table's rate-activity set.
    rate_active: bool,
}

impl Entry {
    fn split(&self) -> usize {
        self.pub_len as usize
    }

    /// The contributions.
    fn records(&self) -> &[u32] {
        &self.words[self.split()..]
    }

    fn has_records(&self) -> bool {
        self.words.len() > self.split()
    }

    /// The published rates (sum, current part) and the contributions, apart.
    fn parts_mut(&mut self) -> (&mut [u32], &mut [u32]) {
        let at = self.split();
        self.words.split_at_mut(at)
    }

    fn pub_rates(&self) -> &[u32] {
        &self.words[..self.split()]
    }

    /// Adds a contribution, growing the block by exactly one record: doubling
    /// would leave up to half the contributions' memory unused.
    fn push_record(&mut self, rec: &[u32]) {
        self.words.reserve_exact(rec.len());
        self.words.extend_from_slice(rec);
    }

    fn clear_records(&mut self) {
        self.words.truncate(self.split());
    }

    /// Removes the records for which `drop` is true; returns how many were removed.
    fn retain_records(&mut self, stride: usize, drop: impl FnMut(&[u32]) -> bool) -> usize {
        let at = self.split();
        retain_records(&mut self.words, at, stride, drop)
    }
}

struct Table {
    id: TableId,
    name: Bytes,
    kind: TableKind,
    def: TableDefinition,
    layout: Layout,
    /// What its changes' shared encodings are checked against (`None`: a table with
    /// dictionary values, which every destination encodes itself).
    shared: Option<SharedLayout>,
    /// Its change logs (also in the subscriptions' registry, by id).
    log: Arc<TableLog>,
    entries: DashMap<Key, Entry, KeyHasher>,
    wheel: Mutex<BTreeMap<u64, Vec<Key>>>,
    rate_active: DashMap<Key, (), KeyHasher>,
    /// The most entries it holds ([`Store::set_limit`]; the store's default
    /// until set). A new key beyond it is refused, never another evicted.
    limit: AtomicUsize,
}

impl Table {
    fn is_relay(&self) -> bool {
        matches!(self.kind, TableKind::Relay { .. })
    }

    fn new_entry(&self) -> Entry {
        let rates = if self.is_relay() {
            0
        } else {
            self.layout.rate_values
        };
        let mut words = Vec::with_capacity(2 * rates + self.layout.stride);
        words.resize(2 * rates, 0);
        Entry {
            words,
            sched: 0,
            pub_at: 0,
            pub_len: u32::try_from(2 * rates).unwrap_or(u32::MAX),
            rate_active: false,
        }
    }

    /// Checks a key against the table's key type and length. String keys longer than
    /// the table allows are truncated, as HAProxy does on store.
    fn check_key(&self, key: &Key) -> Result<Key, StoreError> {
        let len = key.as_bytes().len();
        let key_len = self.def.key_len;
        let ok = match self.def.key_type.fixed_len() {
            Some(l) => len == l as usize,
            None if self.def.key_type == KeyType::String => {
                let max = key_len.saturating_sub(1) as usize;
                if len > max {
                    return Ok(key.truncated(max));
                }
                true
            }
            None => len == key_len as usize,
        };
        if ok {
            Ok(key.clone())
        } else {
            Err(StoreError::BadKey {
                len,
                key_type: self.def.key_type,
                key_len,
            })
        }
    }

    fn check_def(&self, def: &TableDefinition) -> Result<(), StoreError> {
        if def.key_type != self.def.key_type || def.key_len != self.def.key_len {
            return Err(StoreError::KeyMismatch {
                table: String::from_utf8_lossy(&self.name).into_owned(),
                want_type: self.def.key_type,
                want_len: self.def.key_len,
                got_type: def.key_type,
                got_len: def.key_len,
            });
        }
        Ok(())
    }

    fn schedule(&self, e: &mut Entry, key: &Key, expire_at: u64) {
        if expire_at == 0 {
            return;
        }
        let b = expire_at.div_ceil(WHEEL_MS);
        if e.sched == 0 || b < e.sched {
            e.sched = b;
            lock(&self.wheel).entry(b).or_default().push(key.clone());
        }
    }

    fn summary(&self, size: usize) -> TableSummary {
        TableSummary {
            id: self.id,
            name: self.name.clone(),
            kind: self.kind,
            key_type: self.def.key_type,
            key_len: self.def.key_len,
            size,
            used: self.entries.len(),
        }
    }

    fn info(&self) -> TableInfo {
        TableInfo {
            id: self.id,
            name: self.name.clone(),
            kind: self.kind,
            definition: self.def.clone(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data behind our mutexes stays consistent at every await-free step, so a
    // panic elsewhere is no reason to stop serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn records(rs: &[u32], stride: usize) -> std::slice::ChunksExact<'_, u32> {
    rs.chunks_exact(stride)
}

/// Removes the records (`stride` words each, from word `at` on) for which `drop`
/// is true; returns how many were removed.
fn retain_records(
    rs: &mut Vec<u32>,
    at: usize,
    stride: usize,
    mut drop: impl FnMut(&[u32]) -> bool,
) -> usize {
    let n = rs.len().saturating_sub(at) / stride;
    let rec = |r: usize| at + r * stride..at + (r + 1) * stride;
    let mut w = 0;
    for r in 0..n {
        let keep = !drop(&rs[rec(r)]);
        if keep {
            if w != r {
                rs.copy_within(rec(r), at + w * stride);
            }
            w += 1;
        }
    }
    rs.truncate(at + w * stride);
    n - w
}

/// Per-thread buffers of the update path: the record being written and the key's
/// aggregate before and after it. Reusing them saves three allocations per update.
#[derive(Default)]
struct Scratch {
    rec: Vec<u32>,
    before: Vec<u32>,
    after: Vec<u32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Runs `f` with this thread's scratch buffers (fresh ones if they are in use, which
/// the store itself never causes: nothing in the update path calls back into it).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut sc) => f(&mut sc),
        Err(_) => f(&mut Scratch::default()),
    })
}

fn expire_of(rec: &[u32]) -> u64 {
    get_u64(rec, 2)
}

fn remaining(expire_at: u64, now: u64) -> Option<u32> {
    (expire_at != 0).then(|| u32::try_from(expire_at.saturating_sub(now)).unwrap_or(u32::MAX))
}

/// The absolute expiry of a contribution: `now` + the timed update's remaining
/// lifetime (clamped to the table's expiry, as HAProxy 3.2+ does), else + the table's
/// expiry; 0 (never) for tables without expiry, whose timed field is meaningless.
fn expiry_at(table_expire: u32, timed: Option<u32>, now: u64) -> u64 {
    if table_expire == 0 {
        return 0;
    }
    let ms = timed.map_or(table_expire, |t| t.min(table_expire));
    (now + u64::from(ms)).max(1)
}

/// The remaining lifetime of an entry: the longest of its records', `None` if one
/// never expires.
fn entry_remaining(rs: &[u32], stride: usize, now: u64) -> Option<u32> {
    let mut max = 0u64;
    for r in records(rs, stride) {
        let e = expire_of(r);
        if e == 0 {
            return None;
        }
        max = max.max(e);
    }
    remaining(max, now)
}

struct InputReg {
    contributor: u32,
    source: SourceId,
    name: Bytes,
    table: Arc<Table>,
    generation: AtomicU32,
    alive: AtomicBool,
    current: Mutex<(Arc<TableDefinition>, Arc<Mapping>)>,
}

/// A source's registration of one input table; pass it to [`Store::apply`].
#[derive(Clone)]
pub struct InputHandle {
    reg: Arc<InputReg>,
    def: Arc<TableDefinition>,
    mapping: Arc<Mapping>,
}

impl InputHandle {
    /// The output table this input feeds.
    pub fn output(&self) -> TableId {
        self.reg.table.id
    }

    /// How the input's definition differs from the output's (periods, arrays,
    /// missing or extra types); the daemon logs these once.
    pub fn mismatches(&self) -> &[Mismatch] {
        &self.mapping.mismatches
    }
}

impl fmt::Debug for InputHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputHandle")
            .field("source", &self.reg.source)
            .field("input", &String::from_utf8_lossy(&self.reg.name))
            .field("output", &self.reg.table.id)
            .finish()
    }
}

const NO_MEMBER: u32 = u32::MAX;

struct Group {
    active: AtomicU32,
    generation: AtomicU32,
    /// When a replacement (or resync) of the relayed data began, 0 if none pending.
    pending_since: AtomicU64,
}

impl Group {
    fn active(&self) -> Option<SourceId> {
        let a = self.active.load(Ordering::Acquire);
        (a != NO_MEMBER).then_some(SourceId(a as u16))
    }
}

/// A member's registration of one relay table; pass it to [`Store::relay_apply`].
#[derive(Clone)]
pub struct RelayHandle {
    group: Arc<Group>,
    group_id: u16,
    member: SourceId,
    table: Arc<Table>,
    mapping: Arc<Mapping>,
}

impl RelayHandle {
    /// The relay table.
    #[cfg(test)]
    pub(crate) fn table(&self) -> TableId {
        self.table.id
    }

    /// How the member's definition differs from the relay table's.
    pub fn mismatches(&self) -> &[Mismatch] {
        &self.mapping.mismatches
    }
}

impl fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayHandle")
            .field("group", &self.group_id)
            .field("member", &self.member)
            .field("table", &self.table.id)
            .finish()
    }
}

#[derive(Default)]
struct SourceState {
    resync_since: Option<u64>,
}

#[derive(Default)]
struct Registry {
    tables: Vec<Arc<Table>>,
    outputs_by_name: HashMap<Bytes, TableId>,
    relays_by_name: HashMap<(u16, Bytes), TableId>,
    inputs: Vec<Arc<InputReg>>,
    input_index: HashMap<(SourceId, Bytes, TableId), u32>,
    sources: HashMap<SourceId, SourceState>,
    groups: HashMap<u16, Arc<Group>>,
}

impl Registry {
    fn table(&self, id: TableId) -> Option<Arc<Table>> {
        let i = (id.0 as usize).checked_sub(1)?;
        self.tables.get(i).cloned()
    }

    fn regs_of(&self, source: SourceId) -> Vec<Arc<InputReg>> {
        self.inputs
            .iter()
            .filter(|r| r.source == source && r.alive.load(Ordering::Acquire))
            .cloned()
            .collect()
    }

    fn group(&mut self, group: u16) -> Arc<Group> {
        self.groups
            .entry(group)
            .or_insert_with(|| {
                Arc::new(Group {
                    active: AtomicU32::new(NO_MEMBER),
                    generation: AtomicU32::new(0),
                    pending_since: AtomicU64::new(0),
                })
            })
            .clone()
    }

    fn relay_tables(&self, group: u16) -> Vec<Arc<Table>> {
        self.tables
            .iter()
            .filter(|t| t.kind == TableKind::Relay { group })
            .cloned()
            .collect()
    }
}

/// Interned server names: `server_key` values are stored as small ids.
#[derive(Default)]
struct Interner {
    inner: RwLock<(HashMap<Bytes, u32>, Vec<Bytes>)>,
}

impl Interner {
    fn intern(&self, v: &DictValue, limit: usize) -> Result<u32, StoreError> {
        let DictValue::Name(name) = v else {
            return Ok(0);
        };
        if let Some(id) = self
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .get(name)
        {
            return Ok(*id);
        }
        let mut w = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = w.0.get(name) {
            return Ok(*id);
        }
        if w.1.len() >= limit {
            return Err(StoreError::DictFull { limit });
        }
        // Own the bytes: the caller's may be a slice of a large receive buffer.
        let owned = Bytes::copy_from_slice(name);
        w.1.push(owned.clone());
        let id = w.1.len() as u32;
        w.0.insert(owned, id);
        Ok(id)
    }

    fn name(&self, id: u32) -> DictValue {
        if id == 0 {
            return DictValue::Absent;
        }
        let r = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        r.1.get(id as usize - 1)
            .map_or(DictValue::Absent, |b| DictValue::Name(b.clone()))
    }
}

/// How an upsert replaces existing records.
#[derive(Clone, Copy)]
enum Replace {
    /// Replace this contributor's record, keep the others (outputs).
    Contributor(u32),
    /// Replace everything (relays: one contributor at a time).
    All,
}

/// The store of one `aggregations` section. `Send + Sync`; share it behind an `Arc`.
pub struct Store {
    opts: StoreOptions,
    registry: RwLock<Registry>,
    subs: Arc<SubRegistry>,
    seq: AtomicU64,
    dict: Interner,
    /// The keys a budgeted rate refresh has still to visit in its current round.
    refresh_queue: Mutex<VecDeque<(TableId, Key)>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("opts", &self.opts)
            .field("tables", &self.reg_read().tables.len())
            .field("subscriptions", &self.subs.len())
            .finish()
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new(StoreOptions::default())
    }
}

impl Store {
    /// An empty store.
    pub fn new(opts: StoreOptions) -> Store {
        Store {
            opts,
            registry: RwLock::new(Registry::default()),
            subs: Arc::new(SubRegistry::default()),
            seq: AtomicU64::new(0),
            dict: Interner::default(),
            refresh_queue: Mutex::new(VecDeque::new()),
        }
    }

    fn reg_read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn reg_write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn table(&self, id: TableId) -> Option<Arc<Table>> {
        self.reg_read().table(id)
    }

    fn tables_snapshot(&self) -> Vec<Arc<Table>> {
        self.reg_read().tables.clone()
    }

    /// Creates a table in the registry and tells subscribers, with the registry
    /// still locked so that a concurrent `subscribe` sees it exactly once.
    fn create_table(
        &self,
        reg: &mut Registry,
        name: &[u8],
        kind: TableKind,
        def: &TableDefinition,
    ) -> Result<Arc<Table>, StoreError> {
        let id = TableId(reg.tables.len() as u32 + 1);
        let name = Bytes::copy_from_slice(name);
        let layout = Layout::new(&def.data)?;
        // Still under the registry's lock: a concurrent `subscribe` sees the table
        // exactly once.
        let log = self.subs.new_table(id, kind);
        let table = Arc::new(Table {
            id,
            name: name.clone(),
            kind,
            def: TableDefinition {
                table_id: id.0,
                name: name.clone(),
                ..def.clone()
            },
            layout,
            shared: SharedLayout::of(def),
            log,
            // Many small shards: a shard that grows is rehashed under its write lock,
            // and with 128 of them that pause stays short even for millions of keys.
            entries: DashMap::with_hasher_and_shard_amount(KeyHasher::default(), ENTRY_SHARDS),
            wheel: Mutex::new(BTreeMap::new()),
            rate_active: DashMap::with_hasher(KeyHasher::default()),
            limit: AtomicUsize::new(self.opts.max_entries_per_table),
        });
        reg.tables.push(table.clone());
        match kind {
            TableKind::Output => reg.outputs_by_name.insert(name, id),
            TableKind::Relay { group } => reg.relays_by_name.insert((group, name), id),
        };
        Ok(table)
    }

    /// Registers a source's input table that routes to the output `output_name`
    /// (creating the output from `def` if it does not exist yet: key type, key
    /// length, data types, periods and expiry are the input's).
    ///
    /// Registering the same `(source, input_name, output)` again (a new session, a
    /// new DEFINE) returns a handle on the same contributions, so they are replaced,
    /// never counted twice. A definition with another key type or length than the
    /// output is refused; other differences are accepted and listed by
    /// [`InputHandle::mismatches`].
    pub fn register_input(
        &self,
        source: SourceId,
        input_name: &[u8],
        def: &TableDefinition,
        output_name: &[u8],
    ) -> Result<InputHandle, StoreError> {
        let mut reg = self.reg_write();
        let table = match reg.outputs_by_name.get(output_name).copied() {
            Some(id) => reg.table(id).ok_or(StoreError::UnknownTable(id.0))?,
            None => self.create_table(&mut reg, output_name, TableKind::Output, def)?,
        };
        table.check_def(def)?;
        let mapping = Arc::new(Mapping::new(&table.layout, &def.data)?);
        let def = Arc::new(def.clone());
        let index_key = (source, Bytes::copy_from_slice(input_name), table.id);
        let input = match reg.input_index.get(&index_key) {
            Some(&c) => reg.inputs[c as usize].clone(),
            None => {
                let contributor = reg.inputs.len() as u32;
                let input = Arc::new(InputReg {
                    contributor,
                    source,
                    name: index_key.1.clone(),
                    table,
                    generation: AtomicU32::new(0),
                    alive: AtomicBool::new(true),
                    current: Mutex::new((def.clone(), mapping.clone())),
                });
                reg.inputs.push(input.clone());
                reg.input_index.insert(index_key, contributor);
                input
            }
        };
        *lock(&input.current) = (def.clone(), mapping.clone());
        Ok(InputHandle {
            reg: input,
            def,
            mapping,
        })
    }

    /// Replaces the source's contribution to `key` with `values` (in the order of the
    /// input definition), received at `now`. `expire_ms` is the remaining lifetime
    /// carried by a timed update; without it the input definition's expiry applies.
    /// Recomputes the key's aggregate and marks it dirty if it changed.
    pub fn apply(
        &self,
        input: &InputHandle,
        key: &Key,
        values: &[Value],
        expire_ms: Option<u32>,
        now: u64,
    ) -> Result<Applied, StoreError> {
        let reg = &input.reg;
        if !reg.alive.load(Ordering::Acquire) {
            return Err(StoreError::SourceDropped(reg.source.0));
        }
        let table = &reg.table;
        let key = table.check_key(key)?;
        with_scratch(|sc| {
            let rec = &mut sc.rec;
            self.fill_record(table, &input.mapping, values, now, rec)?;
            rec[0] = reg.contributor;
            rec[1] = reg.generation.load(Ordering::Acquire);
            put_u64(rec, 2, expiry_at(input.def.expire_ms, expire_ms, now));
            let mode = Replace::Contributor(reg.contributor);
            self.upsert(table, &key, mode, now, sc)
        })
    }

    /// Stores `sc.rec` for `key` and recomputes the key's aggregate (into `sc.before`
    /// and `sc.after`, reused buffers: the hot path allocates nothing per update).
    fn upsert(
        &self,
        table: &Table,
        key: &Key,
        mode: Replace,
        now: u64,
        sc: &mut Scratch,
    ) -> Result<Applied, StoreError> {
        let Scratch { rec, before, after } = sc;
        let layout = &table.layout;
        let stride = layout.stride;
        let now32 = now as u32;
        let (applied, mark, stored_key) = {
            let mut guard = match table.entries.get_mut(key) {
                Some(g) => g,
                None => {
                    let limit = table.limit.load(Ordering::Relaxed);
                    if table.entries.len() >= limit {
                        return Err(StoreError::TableFull {
                            table: String::from_utf8_lossy(&table.name).into_owned(),
                            limit,
                        });
                    }
                    // Own the key bytes: the caller's may be a slice of a receive buffer.
                    table
                        .entries
                        .entry(key.detached())
                        .or_insert_with(|| table.new_entry())
                }
            };
            let stored_key = guard.key().clone();
            let e = guard.value_mut();
            let is_new = !e.has_records();
            if layout.has_latest {
                // Taken under the entry's lock, so it orders updates of one key as
                // they were applied.
                let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
                put_u64(rec, HDR, seq);
            }
            after.clear();
            let changed = match mode {
                Replace::Contributor(c) => {
                    // A new entry changes whatever its values: no "before" to compute.
                    if !is_new {
                        layout.aggregate(e.records(), now32, before);
                    }
                    let pos = records(e.records(), stride).position(|r| r[0] == c);
                    match pos {
                        Some(i) => {
                            e.parts_mut().1[i * stride..(i + 1) * stride].copy_from_slice(rec)
                        }
                        None => e.push_record(rec),
                    }
                    layout.aggregate(e.records(), now32, after);
                    is_new || before != after
                }
                Replace::All => {
                    // Relays publish their record as it is: compare the values, not
                    // the header (generation, expiry, sequence).
                    let skip = HDR + if layout.has_latest { 2 } else { 0 };
                    let recs = e.records();
                    let changed = is_new || recs.len() != stride || recs[skip..] != rec[skip..];
                    e.clear_records();
                    e.push_record(rec);
                    changed
                }
            };
            table.schedule(e, &stored_key, expire_of(rec));
            let expire = u64::from(table.def.expire_ms);
            let keep_alive = expire > 0 && now.saturating_sub(e.pub_at) >= expire / 2;
            let mark = changed || keep_alive;
            if mark {
                e.pub_at = now;
                if e.pub_len > 0 {
                    for (p, (s, c, _)) in e
                        .parts_mut()
                        .0
                        .chunks_exact_mut(2)
                        .zip(layout.rates_of(after))
                    {
                        p[0] = s;
                        p[1] = c;
                    }
                }
            }
            if e.pub_len > 0 && !e.rate_active && layout.rates_of(after).any(|(s, _, _)| s > 0) {
                e.rate_active = true;
                table.rate_active.insert(stored_key.clone(), ());
            }
            let applied = if changed {
                Applied::Changed
            } else {
                Applied::Unchanged
            };
            (applied, mark, stored_key)
        };
        if mark {
            self.subs.mark(&table.log, [&stored_key], Urgency::Fresh);
        }
        Ok(applied)
    }

    /// Writes `values` (in the sender's layout, mapped by `mapping`) into a zeroed
    /// record of `table`'s stride; the header words are the caller's.
    fn fill_record(
        &self,
        table: &Table,
        mapping: &Mapping,
        values: &[Value],
        now: u64,
        rec: &mut Vec<u32>,
    ) -> Result<(), StoreError> {
        rec.clear();
        rec.resize(table.layout.stride, 0);
        let limit = self.opts.max_server_names;
        mapping.write(&table.layout, values, now as u32, rec, &mut |d| {
            self.dict.intern(d, limit)
        })
    }

    /// Starts a full resync from `source` (the daemon sends it `00 00`): every
    /// contribution of the source that is not refreshed before [`Store::end_resync`]
    /// is then dropped. If the source is the active member of an up group, its relayed
    /// data is resynchronised the same way.
    pub fn begin_resync(&self, source: SourceId, now: u64) {
        let mut reg = self.reg_write();
        for input in reg.regs_of(source) {
            input.generation.fetch_add(1, Ordering::AcqRel);
        }
        reg.sources.entry(source).or_default().resync_since = Some(now);
        for g in reg.groups.values() {
            if g.active() == Some(source) {
                g.generation.fetch_add(1, Ordering::AcqRel);
                g.pending_since.store(now.max(1), Ordering::Release);
            }
        }
    }

    /// Ends a full resync from `source` (it sent RESYNC FINISHED or PARTIAL): drops
    /// its contributions not refreshed since [`Store::begin_resync`], and, for a group
    /// whose active member it is, the relayed keys it did not send since the resync or
    /// replacement began. Returns the number of contributions dropped. Without a
    /// preceding `begin_resync` nothing is dropped.
    pub fn end_resync(&self, source: SourceId, now: u64) -> usize {
        let (inputs, relays) = {
            let mut reg = self.reg_write();
            let started = reg
                .sources
                .get_mut(&source)
                .and_then(|s| s.resync_since.take())
                .is_some();
            let inputs = if started {
                reg.regs_of(source)
            } else {
                Vec::new()
            };
            let mut relays = Vec::new();
            for (&gid, g) in &reg.groups {
                if g.active() == Some(source) && g.pending_since.swap(0, Ordering::AcqRel) != 0 {
                    relays.push((g.generation.load(Ordering::Acquire), reg.relay_tables(gid)));
                }
            }
            (inputs, relays)
        };
        let mut dropped = 0;
        for input in inputs {
            let (c, generation) = (input.contributor, input.generation.load(Ordering::Acquire));
            dropped += self.sweep(&input.table, now, |r| r[0] == c && r[1] != generation);
        }
        for (generation, tables) in relays {
            for t in tables {
                dropped += self.sweep(&t, now, |r| r[1] != generation);
            }
        }
        dropped
    }

    /// Whether a resync from `source` is under way, and since when.
    #[cfg(test)]
    pub(crate) fn resync_since(&self, source: SourceId) -> Option<u64> {
        self.reg_read()
            .sources
            .get(&source)
            .and_then(|s| s.resync_since)
    }

    /// Removes a source (a peer removed from the configuration): its contributions
    /// are dropped at once and its handles refused from now on. If it was the active
    /// member of a group, the group has no active member until
    /// [`Store::relay_replace`]; the relayed data stays until then.
    pub fn drop_source(&self, source: SourceId, now: u64) -> usize {
        let inputs = {
            let mut reg = self.reg_write();
            let inputs = reg.regs_of(source);
            for i in &inputs {
                i.alive.store(false, Ordering::Release);
            }
            reg.input_index.retain(|k, _| k.0 != source);
            reg.sources.remove(&source);
            for g in reg.groups.values() {
                if g.active() == Some(source) {
                    g.active.store(NO_MEMBER, Ordering::Release);
                    g.pending_since.store(0, Ordering::Release);
                }
            }
            inputs
        };
        inputs
            .iter()
            .map(|i| {
                let c = i.contributor;
                self.sweep(&i.table, now, |r| r[0] == c)
            })
            .sum()
    }

    /// Drops the records matching `drop` from every entry of `table` (a full scan,
    /// for rare events), removes emptied entries and marks changed keys dirty.
    fn sweep(&self, table: &Table, now: u64, drop: impl Fn(&[u32]) -> bool) -> usize {
        let stride = table.layout.stride;
        let mut changed = Vec::new();
        let mut dropped = 0;
        table.entries.retain(|k, e| {
            let n = e.retain_records(stride, &drop);
            if n == 0 {
                return true;
            }
            dropped += n;
            e.pub_at = now;
            changed.push(k.clone());
            if !e.has_records() {
                if e.rate_active {
                    table.rate_active.remove(k);
                }
                return false;
            }
            true
        });
        self.mark_batched(table, &changed, Urgency::Fresh);
        dropped
    }

    /// Marks `keys` of `table` dirty for every matching destination, in small batches:
    /// each destination's dirty set is locked per batch, so that a session draining
    /// its changes never waits for a whole table (a mass expiry, a resync sweep, a
    /// refresh round).
    fn mark_batched(&self, table: &Table, keys: &[Key], urgency: Urgency) {
        for batch in keys.chunks(MARK_BATCH) {
            self.subs.mark(&table.log, batch.iter(), urgency);
        }
    }

    /// Removes contributions whose expiry is at or before `now`, removes entries left
    /// without contributions and marks what changed dirty. Costs the number of entries
    /// due (see the module documentation), so call it every 100 ms to 1 s. Returns the
    /// number of contributions removed.
    pub fn expire(&self, now: u64) -> usize {
        let mut removed = 0;
        for table in self.tables_snapshot() {
            let due = {
                let mut w = lock(&table.wheel);
                let later = w.split_off(&(now / WHEEL_MS + 1));
                std::mem::replace(&mut *w, later)
            };
            if due.is_empty() {
                continue;
            }
            let stride = table.layout.stride;
            let mut changed = Vec::new();
            for (b, keys) in due {
                for key in keys {
                    let (n, empty) = {
                        let Some(mut g) = table.entries.get_mut(&key) else {
                            continue;
                        };
                        let e = g.value_mut();
                        if e.sched != b {
                            // A stale queue slot: the entry was re-queued or re-created.
                            continue;
                        }
                        e.sched = 0;
                        let n = e.retain_records(stride, |r| {
                            let x = expire_of(r);
                            x != 0 && x <= now
                        });
                        let next = records(e.records(), stride)
                            .map(expire_of)
                            .filter(|&x| x != 0)
                            .min();
                        if let Some(next) = next {
                            table.schedule(e, &key, next);
                        }
                        if n > 0 {
                            e.pub_at = now;
                        }
                        (n, !e.has_records())
                    };
                    if empty {
                        table.entries.remove_if(&key, |_, e| {
                            let empty = !e.has_records();
                            if empty && e.rate_active {
                                table.rate_active.remove(&key);
                            }
                            empty
                        });
                    }
                    if n > 0 {
                        removed += n;
                        changed.push(key);
                    }
                }
            }
            self.mark_batched(&table, &changed, Urgency::Fresh);
        }
        removed
    }

    /// Re-marks the output keys whose published rates, read at `now` by HAProxy's read
    /// rule, differ from the true sums at `now` (beyond [`rules::drifted`]'s bound);
    /// forgets keys whose rates and published counters are all back to 0. Visits
    /// every key with rate activity. Returns the number of keys marked.
    ///
    /// [`rules::drifted`]: crate::rules::drifted
    #[cfg(test)]
    pub(crate) fn refresh_rates(&self, now: u64) -> usize {
        let mut marked = 0;
        for table in self.tables_snapshot() {
            if table.is_relay() || table.layout.rate_values == 0 || table.rate_active.is_empty() {
                continue;
            }
            // Snapshot the keys first: the set must not be held while entries are
            // locked (the lock order is entries, then the set).
            let keys: Vec<Key> = table.rate_active.iter().map(|r| r.key().clone()).collect();
            marked += self.refresh_keys(&table, keys, now);
        }
        marked
    }

    /// Like `refresh_rates` (test builds), visiting at most `max_keys` keys per call: a
    /// round over every key with rate activity is spread over as many calls as it
    /// takes, so that a large table costs a bounded amount of work per call. A table
    /// with fewer active keys than `max_keys` is refreshed whole at every call.
    /// Returns the number of keys marked.
    pub fn refresh_rates_budget(&self, now: u64, max_keys: usize) -> usize {
        let batch: Vec<(TableId, Key)> = {
            let mut q = self
                .refresh_queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if q.is_empty() {
                // A new round: every active key of every output table.
                for table in self.tables_snapshot() {
                    if table.is_relay() || table.layout.rate_values == 0 {
                        continue;
                    }
                    q.extend(
                        table
                            .rate_active
                            .iter()
                            .map(|r| (table.id, r.key().clone())),
                    );
                }
                q.shrink_to_fit();
            }
            let n = max_keys.min(q.len());
            q.drain(..n).collect()
        };
        let mut marked = 0;
        let mut i = 0;
        while i < batch.len() {
            let tid = batch[i].0;
            let j = batch[i..]
                .iter()
                .position(|(t, _)| *t != tid)
                .map_or(batch.len(), |p| i + p);
            if let Some(table) = self.table(tid) {
                let keys = batch[i..j].iter().map(|(_, k)| k.clone()).collect();
                marked += self.refresh_keys(&table, keys, now);
            }
            i = j;
        }
        marked
    }

    fn refresh_keys(&self, table: &Table, keys: Vec<Key>, now: u64) -> usize {
        let now32 = now as u32;
        let mut changed = Vec::new();
        let mut agg = Vec::new();
        for key in keys {
            let Some(mut g) = table.entries.get_mut(&key) else {
                continue;
            };
            let e = g.value_mut();
            if !e.rate_active {
                continue;
            }
            table.layout.aggregate(e.records(), now32, &mut agg);
            let pub_at = e.pub_at as u32;
            let mut differs = false;
            let mut idle = true;
            for (p, (s, _, period)) in e
                .pub_rates()
                .chunks_exact(2)
                .zip(table.layout.rates_of(&agg))
            {
                let seen = crate::rules::published_rate_at(p[0], p[1], pub_at, period, now32);
                differs |= crate::rules::drifted(seen, s);
                idle &= seen == 0 && s == 0;
            }
            if differs {
                e.pub_at = now;
                for (p, (s, c, _)) in e
                    .parts_mut()
                    .0
                    .chunks_exact_mut(2)
                    .zip(table.layout.rates_of(&agg))
                {
                    p[0] = s;
                    p[1] = c;
                }
                changed.push(key.clone());
            } else if idle {
                e.rate_active = false;
                table.rate_active.remove(&key);
            }
        }
        self.mark_batched(table, &changed, Urgency::Background);
        changed.len()
    }

    /// Registers a member's relay table (a `forward` table received from a member of
    /// up group `group`). The table is created from the first definition, under its
    /// own `name`; a later definition with another key type or length is refused.
    /// Registering elects nobody: the group's relayed member is set by
    /// [`Store::relay_replace`] only.
    pub fn register_relay(
        &self,
        group: u16,
        member: SourceId,
        def: &TableDefinition,
        name: &[u8],
    ) -> Result<RelayHandle, StoreError> {
        // Which member is relayed is the section's election, never a side effect of
        // registering (see `relay_replace`).
        let mut reg = self.reg_write();
        let g = reg.group(group);
        let table = match reg
            .relays_by_name
            .get(&(group, Bytes::copy_from_slice(name)))
        {
            Some(&id) => reg.table(id).ok_or(StoreError::UnknownTable(id.0))?,
            None => self.create_table(&mut reg, name, TableKind::Relay { group }, def)?,
        };
        table.check_def(def)?;
        let mapping = Arc::new(Mapping::new(&table.layout, &def.data)?);
        Ok(RelayHandle {
            group: g,
            group_id: group,
            member,
            table,
            mapping,
        })
    }

    /// Applies a relayed update. Only the group's active member is heard
    /// ([`Applied::Ignored`] otherwise); its values replace the entry's whole content
    /// (relay tables have exactly one contributor).
    pub fn relay_apply(
        &self,
        relay: &RelayHandle,
        key: &Key,
        values: &[Value],
        expire_ms: Option<u32>,
        now: u64,
    ) -> Result<Applied, StoreError> {
        if relay.group.active() != Some(relay.member) {
            return Ok(Applied::Ignored);
        }
        let table = &relay.table;
        let key = table.check_key(key)?;
        with_scratch(|sc| {
            let rec = &mut sc.rec;
            self.fill_record(table, &relay.mapping, values, now, rec)?;
            rec[0] = u32::from(relay.member.0);
            rec[1] = relay.group.generation.load(Ordering::Acquire);
            put_u64(rec, 2, expiry_at(table.def.expire_ms, expire_ms, now));
            self.upsert(table, &key, Replace::All, now, sc)
        })
    }

    /// Fails a group over to `new_member` (or restarts the relay from the same
    /// member): from now on only its updates are heard, each replacing the relayed
    /// entry; when its full resync ends ([`Store::end_resync`]) every relayed key it
    /// did not send is dropped. Until then the previous data stays, so destinations
    /// never see a gap, and no key is ever counted twice.
    pub fn relay_replace(&self, group: u16, new_member: SourceId, now: u64) {
        let g = self.reg_write().group(group);
        g.active.store(u32::from(new_member.0), Ordering::Release);
        g.generation.fetch_add(1, Ordering::AcqRel);
        g.pending_since.store(now.max(1), Ordering::Release);
    }

    /// The active member of a group.
    pub fn active_member(&self, group: u16) -> Option<SourceId> {
        self.reg_read().groups.get(&group).and_then(|g| g.active())
    }

    /// Follows changes to the tables matching `filter`, existing ones and those
    /// created later, from their next change on: existing keys are not marked (use
    /// [`Store::mark_all`] for a full push). A table reaches the subscription with
    /// its first changed key; [`Store::table_info`] gives its definition.
    pub fn subscribe(&self, filter: SubscriptionFilter, waker: Arc<dyn Waker>) -> Subscription {
        // Held across `add` so that no table is created in between (see
        // `create_table`): the new subscription follows every table exactly once.
        let _reg = self.reg_read();
        self.subs.add(filter, waker)
    }

    /// Marks every key of every table matching the subscription's filter dirty in
    /// that subscription (a full push, e.g. to answer a resync request). Memory stays
    /// bounded by the number of keys. Returns the number of keys marked.
    pub fn mark_all(&self, sub: &Subscription) -> usize {
        let mut n = 0;
        for t in self.tables_snapshot() {
            if !sub.filter().matches(t.kind) {
                continue;
            }
            let keys = self.keys(t.id);
            n += keys.len();
            sub.shared().mark_own(t.id, keys.iter());
        }
        n
    }

    /// A table's name, kind and definition.
    pub fn table_info(&self, id: TableId) -> Option<TableInfo> {
        self.table(id).map(|t| t.info())
    }

    /// Every table, in creation order.
    pub fn tables(&self) -> Vec<TableInfo> {
        self.tables_snapshot().iter().map(|t| t.info()).collect()
    }

    /// The table listing (`show table`).
    pub fn table_summaries(&self) -> Vec<TableSummary> {
        self.tables_snapshot()
            .iter()
            .map(|t| t.summary(t.limit.load(Ordering::Relaxed)))
            .collect()
    }

    /// The output table of that name.
    pub fn output_by_name(&self, name: &[u8]) -> Option<TableId> {
        self.reg_read().outputs_by_name.get(name).copied()
    }

    /// The published values of one entry at `now`: sums for outputs (rates in their
    /// published shape), the active member's values for relays (rates re-aged).
    pub fn read(&self, table: TableId, key: &Key, now: u64) -> Option<OutputEntry> {
        let mut values = Vec::new();
        let meta = self.read_into(table, key, now, &mut values)?;
        Some(OutputEntry::new(values, meta))
    }

    /// [`Store::read`] into a reused values buffer (cleared first): the send path
    /// reads every entry it sends, and allocates nothing for it this way.
    pub fn read_into(
        &self,
        table: TableId,
        key: &Key,
        now: u64,
        values: &mut Vec<Value>,
    ) -> Option<EntryMeta> {
        let t = self.table(table)?;
        let g = t.entries.get(key)?;
        Some(self.entry_into(&t, g.records(), g.pub_at, now, values))
    }

    /// An entry's published values into `values`, and the rest of what it tells.
    fn entry_into(
        &self,
        t: &Table,
        rs: &[u32],
        changed_at: u64,
        now: u64,
        values: &mut Vec<Value>,
    ) -> EntryMeta {
        let dict = |id| self.dict.name(id);
        let stride = t.layout.stride;
        if t.is_relay() {
            match rs.get(..stride) {
                Some(rec) => t
                    .layout
                    .record_to_values_into(rec, now as u32, &dict, values),
                None => {
                    values.clear();
                    values.extend(t.def.data.iter().map(layout::zero_value));
                }
            }
        } else {
            with_scratch(|sc| {
                t.layout.aggregate(rs, now as u32, &mut sc.after);
                t.layout.agg_to_values_into(&sc.after, &dict, values);
            });
        }
        EntryMeta {
            expire_ms: entry_remaining(rs, stride, now),
            changed_at,
        }
    }

    /// An entry's current values encoded once for every destination
    /// ([`crate::SharedChange`]); `None` if the entry is gone or its table has
    /// dictionary values (each destination then encodes its own).
    pub fn shared_change(
        &self,
        table: TableId,
        key: &Key,
        now: u64,
    ) -> Option<crate::SharedChange> {
        let t = self.table(table)?;
        let layout = t.shared?;
        let mut values = Vec::with_capacity(t.def.data.len());
        let meta = self.read_into(table, key, now, &mut values)?;
        let update = SharedUpdate::encode_with(layout, &t.def, key, &values).ok()?;
        Some(crate::SharedChange {
            update,
            changed_at: meta.changed_at,
        })
    }

    /// The keys of a table (a snapshot; read each with [`Store::read`] to stream a
    /// large table without holding any lock).
    pub fn keys(&self, table: TableId) -> Vec<Key> {
        self.table(table)
            .map(|t| t.entries.iter().map(|r| r.key().clone()).collect())
            .unwrap_or_default()
    }

    /// Every entry of a table with its published values at `now` (`show table`, a
    /// full push of a small table).
    pub fn dump(&self, table: TableId, now: u64) -> Vec<(Key, OutputEntry)> {
        let Some(t) = self.table(table) else {
            return Vec::new();
        };
        t.entries
            .iter()
            .map(|r| {
                let mut values = Vec::new();
                let meta = self.entry_into(&t, r.records(), r.pub_at, now, &mut values);
                (r.key().clone(), OutputEntry::new(values, meta))
            })
            .collect()
    }

    /// Sets the most entries `table` holds (a rule's `size`). Lowering it below
    /// the entries it has removes none: new keys are refused until expiry makes
    /// room.
    pub fn set_limit(&self, table: TableId, limit: usize) {
        if let Some(t) = self.table(table) {
            t.limit.store(limit, Ordering::Relaxed);
        }
    }

    /// Removes entries of `table` with every contribution to them: the entry for
    /// `key`, or every entry (the runtime API's `clear table`). Returns how many
    /// were removed. Nothing is marked: there are no deletes on the wire, so
    /// receivers keep what they have until their own expiry, and a source's next
    /// update of a removed key starts its sum again from that source alone.
    pub fn clear(&self, table: TableId, key: Option<&Key>) -> usize {
        let Some(t) = self.table(table) else {
            return 0;
        };
        let forget = |k: &Key, e: &Entry| {
            if e.rate_active {
                t.rate_active.remove(k);
            }
        };
        match key {
            Some(k) => {
                let Ok(k) = t.check_key(k) else {
                    return 0;
                };
                match t.entries.remove(&k) {
                    Some((k, e)) => {
                        forget(&k, &e);
                        1
                    }
                    None => 0,
                }
            }
            None => {
                let mut n = 0;
                t.entries.retain(|k, e| {
                    forget(k, e);
                    n += 1;
                    false
                });
                n
            }
        }
    }

    /// The entries of one table.
    #[cfg(test)]
    pub(crate) fn entry_count(&self, table: TableId) -> Option<usize> {
        self.table(table).map(|t| t.entries.len())
    }

    /// The contributions behind one entry, in arrival order of their sources.
    pub fn detail(&self, table: TableId, key: &Key, now: u64) -> Option<Vec<ContributionDetail>> {
        let t = self.table(table)?;
        let recs: Vec<u32> = t.entries.get(key)?.records().to_vec();
        let dict = |id| self.dict.name(id);
        let reg = self.reg_read();
        Some(
            records(&recs, t.layout.stride)
                .map(|r| {
                    let (source, input_name) = if t.is_relay() {
                        (SourceId(r[0] as u16), t.name.clone())
                    } else {
                        reg.inputs
                            .get(r[0] as usize)
                            .map_or((SourceId(u16::MAX), Bytes::new()), |i| {
                                (i.source, i.name.clone())
                            })
                    };
                    ContributionDetail {
                        source,
                        input_name,
                        values: t.layout.record_to_values(r, now as u32, &dict),
                        expire_ms: remaining(expire_of(r), now),
                    }
                })
                .collect(),
        )
    }

    /// Teach-back (SPEC §5): the source's own last entries, per input table, with
    /// the values as it last sent them (rates re-aged to `now`) and their remaining
    /// lifetime. A full scan of the outputs it feeds.
    pub fn contributions_of(&self, source: SourceId, now: u64) -> Vec<TaughtTable> {
        let inputs = self.reg_read().regs_of(source);
        let dict = |id| self.dict.name(id);
        inputs
            .iter()
            .map(|input| {
                let (def, mapping) = lock(&input.current).clone();
                let t = &input.table;
                let c = input.contributor;
                let mut entries = Vec::new();
                for item in t.entries.iter() {
                    if let Some(r) = records(item.records(), t.layout.stride).find(|r| r[0] == c) {
                        entries.push(TaughtEntry {
                            key: item.key().clone(),
                            values: mapping.read_back(&t.layout, r, now as u32, &dict),
                            expire_ms: remaining(expire_of(r), now),
                        });
                    }
                }
                TaughtTable {
                    input_name: input.name.clone(),
                    definition: (*def).clone(),
                    entries,
                }
            })
            .collect()
    }

    /// Counts of what the store holds.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> StoreStats {
        let reg = self.reg_read();
        let mut s = StoreStats {
            inputs: reg
                .inputs
                .iter()
                .filter(|i| i.alive.load(Ordering::Acquire))
                .count(),
            subscriptions: self.subs.len(),
            ..StoreStats::default()
        };
        for t in &reg.tables {
            match t.kind {
                TableKind::Output => s.outputs += 1,
                TableKind::Relay { .. } => s.relays += 1,
            }
            s.entries += t.entries.len();
        }
        s
    }
}

#[cfg(test)]
impl Store {
    /// The store's locks that are held right now, by name: every lock of the store,
    /// and the entry (and rate-activity) shards of `keys` in every table. Called by
    /// a test waker to prove that no lock is held while calling out; in a
    /// single-threaded test, anything held is held by the caller of the waker.
    pub(crate) fn locks_held(&self, keys: &[Key]) -> Vec<&'static str> {
        use crate::subscribe::{mutex_held, rwlock_held};
        let mut held = Vec::new();
        if rwlock_held(&self.registry) {
            held.push("the registry");
        }
        if mutex_held(&self.refresh_queue) {
            held.push("the refresh queue");
        }
        if rwlock_held(&self.dict.inner) {
            held.push("the server-name interner");
        }
        // Readable unless write-locked (then already reported above).
        if let Ok(reg) = self.registry.try_read() {
            for input in &reg.inputs {
                if mutex_held(&input.current) {
                    held.push("an input's definition");
                }
            }
            for t in &reg.tables {
                if mutex_held(&t.wheel) {
                    held.push("a table's expiry wheel");
                }
                for k in keys {
                    if t.entries.try_get_mut(k).is_locked() {
                        held.push("an entry shard");
                    }
                    if t.rate_active.try_get_mut(k).is_locked() {
                        held.push("a rate-activity shard");
                    }
                }
            }
        }
        held.extend(self.subs.locks_held());
        held
    }
}
