//! Outbound change tracking: one coalesced change log per table, one cursor per
//! destination.
//!
//! Each table keeps its changed keys in order, each key once, at the sequence number
//! of its latest change (a key that changes a thousand times while a peer is slow is
//! in the log once). Each destination (a peer session that receives our tables)
//! holds a [`Subscription`]: per table, the sequence number it has taken up to. A
//! change therefore costs the same whether two peers or a hundred follow the table:
//! one insertion in the table's log, never one per destination. A destination reads
//! its changes by walking the log past its cursor, and the daemon reads each key's
//! latest value when it sends it. The log keeps a key until every destination has
//! taken it, so memory is bounded by the number of keys, never by the number of
//! updates or of destinations, and a slow or stuck peer costs at most one entry per
//! key.
//!
//! Two logs per table: fresh changes (a source changed a value) and background ones
//! (decaying rates re-published); a destination takes fresh changes first, so a
//! refresh never delays a change. A full push to one destination (a new session:
//! [`crate::Store::mark_all`]) is that destination's own set, taken last.
//!
//! Locking: one `Mutex` per table's logs, held to append or to walk one batch; one
//! per subscription's own set. No lock is held while calling out: wakers are
//! collected under a lock and woken after it is released.

use crate::ids::{KeyHasher, TableId, TableKind};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use stktagg_wire::{Key, SharedUpdate};

/// Wakes the task that drains a subscription. The daemon implements it with tokio's
/// `Notify`.
pub trait Waker: Send + Sync {
    /// Called when a subscription that found nothing to take has something again
    /// (a change in a table it follows, a full push). Called with no store lock
    /// held, so it may call back into the store; it must not block.
    fn wake(&self);
}

/// Which tables a subscription follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionFilter {
    /// Aggregated output tables (sent to sources and to up peers).
    pub outputs: bool,
    /// Relay tables (sent to sources only).
    pub relays: bool,
}

impl SubscriptionFilter {
    pub(crate) fn matches(self, kind: TableKind) -> bool {
        match kind {
            TableKind::Output => self.outputs,
            TableKind::Relay { .. } => self.relays,
        }
    }
}

/// How urgent a change is for its destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// A source changed the value: send before anything in the background.
    Fresh,
    /// A refresh (decaying rates) or a full push to a new session: sent when no
    /// fresh change waits, so that it never delays one.
    Background,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned log is still a valid log: a panic elsewhere cannot leave it half
    // updated in a way that matters, so keep going.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What every destination sends for one change: the entry's key and values encoded
/// once, by the first destination that sends it (`None`: the entry is gone, or its
/// table cannot share an encoding: each destination reads and encodes it).
pub type SharedSlot = Arc<OnceLock<Option<SharedChange>>>;

/// One change, encoded once for every destination.
#[derive(Debug, Clone)]
pub struct SharedChange {
    /// The key and values, encoded.
    pub update: SharedUpdate,
    /// When the entry was marked for its destinations (see `OutputEntry::changed_at`).
    pub changed_at: u64,
}

/// One change taken from a subscription.
#[derive(Debug, Clone)]
pub struct Change {
    /// The table.
    pub table: TableId,
    /// The key; read its current value with `Store::read`, or use `shared`.
    pub key: Key,
    /// The change encoded once for every destination that takes it from the table's
    /// log; `None` for a full push (one destination's own), or when the table had a
    /// single destination when the change was logged.
    pub shared: Option<SharedSlot>,
}

/// A key in a log and its shared encoding slot; `None` for a hole.
type Slot = Option<(Key, Option<SharedSlot>)>;

/// Changed keys in order of their latest change, each key once.
///
/// A ring of slots in sequence order: a change appends a slot, and the key's older
/// slot, if any, becomes a hole (an append and one hash-map update per change, no
/// tree). Holes are passed over when read and compacted away once they outnumber
/// the live slots, so the log stays within twice its keys whatever the updates.
#[derive(Default)]
struct Log {
    /// `(sequence number, the key and its shared encoding slot)`, `None` for a
    /// hole. Each key's shared encoding slot exists only while several
    /// destinations follow the table: for one, encoding it once more costs less
    /// than sharing. The back slot is never a hole (a hole is made by a later
    /// append).
    slots: VecDeque<(u64, Slot)>,
    /// Each live key's slot, as an absolute position (`popped` + its index).
    pos_of: HashMap<Key, u64, KeyHasher>,
    /// Slots popped from the front since the log began.
    popped: u64,
    holes: usize,
}

impl Log {
    fn push(&mut self, key: &Key, seq: u64, shared: bool) {
        let pos = self.popped + self.slots.len() as u64;
        if let Some(old) = self.pos_of.insert(key.clone(), pos) {
            let live = usize::try_from(old - self.popped)
                .ok()
                .and_then(|i| self.slots.get_mut(i))
                .and_then(|slot| slot.1.take());
            if live.is_some() {
                self.holes += 1;
            }
        }
        let slot = shared.then(SharedSlot::default);
        self.slots.push_back((seq, Some((key.clone(), slot))));
        if self.holes > 64 && self.holes * 2 > self.slots.len() {
            self.compact();
        }
    }

    /// Drops the holes; live slots keep their order and get new positions.
    fn compact(&mut self) {
        self.slots.retain(|(_, item)| item.is_some());
        self.holes = 0;
        for (i, (_, item)) in self.slots.iter().enumerate() {
            if let Some((key, _)) = item
                && let Some(p) = self.pos_of.get_mut(key)
            {
                *p = self.popped + i as u64;
            }
        }
    }

    /// Up to `max` changes after `cursor`, appended to `out`; the new cursor.
    fn take_after(&self, cursor: u64, max: usize, table: TableId, out: &mut Vec<Change>) -> u64 {
        let start = self.slots.partition_point(|(seq, _)| *seq <= cursor);
        let mut last = cursor;
        let mut taken = 0;
        for (seq, item) in self.slots.range(start..) {
            if taken == max {
                break;
            }
            last = *seq;
            if let Some((key, slot)) = item {
                out.push(Change {
                    table,
                    key: key.clone(),
                    shared: slot.clone(),
                });
                taken += 1;
            }
        }
        last
    }

    fn has_after(&self, cursor: u64) -> bool {
        self.slots.back().is_some_and(|(seq, _)| *seq > cursor)
    }

    /// Forgets the keys every destination has taken.
    fn trim(&mut self, upto: u64) {
        while let Some((seq, _)) = self.slots.front() {
            if *seq > upto {
                break;
            }
            if let Some((_, item)) = self.slots.pop_front() {
                match item {
                    Some((key, _)) => {
                        self.pos_of.remove(&key);
                    }
                    None => self.holes -= 1,
                }
            }
            self.popped += 1;
        }
        if self.slots.is_empty() {
            self.slots.shrink_to(64);
            self.pos_of.shrink_to(64);
        }
    }
}

/// A destination's position in one table's logs: the last sequence number taken,
/// fresh and background.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    fresh: u64,
    background: u64,
}

#[derive(Default)]
struct LogState {
    /// The sequence number of the last change (both logs share the count).
    last_seq: u64,
    fresh: Log,
    background: Log,
    /// Per subscription id, its position.
    cursors: HashMap<u64, Cursor>,
    /// Subscriptions that found nothing new, to wake at the next change.
    waiters: HashMap<u64, Arc<dyn Waker>>,
}

impl LogState {
    /// Forgets what every destination has taken (everything if none follows).
    fn trim(&mut self) {
        let min_fresh = self.cursors.values().map(|c| c.fresh).min();
        let min_bg = self.cursors.values().map(|c| c.background).min();
        self.fresh.trim(min_fresh.unwrap_or(self.last_seq));
        self.background.trim(min_bg.unwrap_or(self.last_seq));
    }
}

/// One table's change logs.
pub(crate) struct TableLog {
    table: TableId,
    kind: TableKind,
    state: Mutex<LogState>,
}

/// A subscription's own part: what is only for it.
#[derive(Default)]
struct Own {
    /// Keys of a full push, each once, in the order they were marked.
    set: std::collections::HashSet<(TableId, Key), KeyHasher>,
    order: VecDeque<(TableId, Key)>,
}

pub(crate) struct SubShared {
    id: u64,
    pub(crate) filter: SubscriptionFilter,
    own: Mutex<Own>,
    waker: Arc<dyn Waker>,
    /// Which table's log a drain reads first: each drain starts one further, so
    /// that a table that always has changes cannot starve the others.
    first: std::sync::atomic::AtomicUsize,
}

impl SubShared {
    /// Marks keys in this subscription only (a full push), in the background.
    pub(crate) fn mark_own<'a>(&self, table: TableId, keys: impl IntoIterator<Item = &'a Key>) {
        let wake = {
            let mut own = lock(&self.own);
            let was_empty = own.set.is_empty();
            for k in keys {
                let item = (table, k.clone());
                if own.set.insert(item.clone()) {
                    own.order.push_back(item);
                }
            }
            was_empty && !own.set.is_empty()
        };
        if wake {
            self.waker.wake();
        }
    }
}

/// The change logs of every table, and the live subscriptions.
#[derive(Default)]
pub(crate) struct SubRegistry {
    logs: RwLock<HashMap<TableId, Arc<TableLog>>>,
    subs: RwLock<Vec<Arc<SubShared>>>,
    next_id: AtomicU64,
}

impl SubRegistry {
    fn logs(&self) -> std::sync::RwLockReadGuard<'_, HashMap<TableId, Arc<TableLog>>> {
        self.logs.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn subs(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<SubShared>>> {
        self.subs.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The logs a filter follows.
    fn logs_for(&self, filter: SubscriptionFilter) -> Vec<Arc<TableLog>> {
        let mut v: Vec<_> = self
            .logs()
            .values()
            .filter(|l| filter.matches(l.kind))
            .cloned()
            .collect();
        v.sort_by_key(|l| l.table);
        v
    }

    /// A new subscription, following every matching table from its next change.
    /// Nothing is woken: there is nothing to take yet. The caller makes sure no
    /// table is created meanwhile (see `Store::subscribe`).
    pub(crate) fn add(
        self: &Arc<Self>,
        filter: SubscriptionFilter,
        waker: Arc<dyn Waker>,
    ) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(SubShared {
            id,
            filter,
            own: Mutex::new(Own::default()),
            waker,
            first: std::sync::atomic::AtomicUsize::new(0),
        });
        // Existing tables: from their next change on (a full push is `mark_all`).
        for log in self.logs_for(filter) {
            let mut st = lock(&log.state);
            let at = st.last_seq;
            st.cursors.insert(
                id,
                Cursor {
                    fresh: at,
                    background: at,
                },
            );
            // Caught up by definition: woken at the next change.
            st.waiters.insert(id, shared.waker.clone());
        }
        self.subs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(shared.clone());
        Subscription {
            shared,
            registry: Arc::downgrade(self),
        }
    }

    /// Appends keys of one table to its log (the handle [`SubRegistry::new_table`]
    /// gave: no registry lock on the way): one insertion per key, whatever the
    /// number of destinations; wakes the destinations that were waiting.
    pub(crate) fn mark<'a>(
        &self,
        log: &TableLog,
        keys: impl IntoIterator<Item = &'a Key>,
        urgency: Urgency,
    ) {
        let waiters = {
            let mut st = lock(&log.state);
            if st.cursors.is_empty() {
                // Nobody follows this table: nothing to remember.
                return;
            }
            let shared = st.cursors.len() > 1;
            for k in keys {
                st.last_seq += 1;
                let seq = st.last_seq;
                match urgency {
                    Urgency::Fresh => st.fresh.push(k, seq, shared),
                    Urgency::Background => st.background.push(k, seq, shared),
                }
            }
            std::mem::take(&mut st.waiters)
        };
        for w in waiters.values() {
            w.wake();
        }
    }

    /// A table was created: every matching subscription follows it from its start
    /// and is woken by its first change (nobody is woken now: there is nothing to
    /// take yet, and the caller holds the store's registry lock).
    pub(crate) fn new_table(&self, table: TableId, kind: TableKind) -> Arc<TableLog> {
        let mut st = LogState::default();
        for s in self.subs().iter().filter(|s| s.filter.matches(kind)) {
            st.cursors.insert(s.id, Cursor::default());
            st.waiters.insert(s.id, s.waker.clone());
        }
        let log = Arc::new(TableLog {
            table,
            kind,
            state: Mutex::new(st),
        });
        self.logs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(table, log.clone());
        log
    }

    pub(crate) fn len(&self) -> usize {
        self.subs().len()
    }

    fn remove(&self, id: u64) {
        self.subs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|s| s.id != id);
        for log in self.logs().values() {
            let mut st = lock(&log.state);
            st.cursors.remove(&id);
            st.waiters.remove(&id);
            st.trim();
        }
    }
}

/// One destination's view of the changes: its cursors in every table's logs, and
/// its own full-push set. Dropping it unsubscribes.
pub struct Subscription {
    shared: Arc<SubShared>,
    registry: Weak<SubRegistry>,
}

impl Subscription {
    /// The tables this subscription follows.
    pub(crate) fn filter(&self) -> SubscriptionFilter {
        self.shared.filter
    }

    /// [`Subscription::drain_changes`] without the shared slots (tests).
    #[cfg(test)]
    pub(crate) fn drain(&self, max: usize) -> Vec<(TableId, Key)> {
        self.drain_changes(max)
            .into_iter()
            .map(|c| (c.table, c.key))
            .collect()
    }

    /// Takes up to `max` changed keys: fresh changes first, oldest first, then
    /// background ones (rate refreshes), then this subscription's full push. Each
    /// key appears once per log however often it changed; read its current value
    /// with `Store::read`, or share the encoding in the change's slot. When it
    /// returns fewer than `max`, everything was taken and the waker is called at the
    /// next change; keep draining while it returns `max`.
    pub fn drain_changes(&self, max: usize) -> Vec<Change> {
        let mut out = Vec::with_capacity(max.min(1024));
        self.drain_changes_into(max, &mut out);
        out
    }

    /// [`Subscription::drain_changes`] into a reused buffer (cleared first).
    pub fn drain_changes_into(&self, max: usize, out: &mut Vec<Change>) {
        out.clear();
        let Some(reg) = self.registry.upgrade() else {
            return;
        };
        let id = self.shared.id;
        let mut logs = reg.logs_for(self.shared.filter);
        if !logs.is_empty() {
            let first = self
                .shared
                .first
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let n = logs.len();
            logs.rotate_left(first % n);
        }
        for background in [false, true] {
            for log in &logs {
                if out.len() >= max {
                    break;
                }
                let mut st = lock(&log.state);
                let Some(mut c) = st.cursors.get(&id).copied() else {
                    continue;
                };
                let room = max - out.len();
                let before = out.len();
                if background {
                    c.background = st.background.take_after(c.background, room, log.table, out);
                } else {
                    c.fresh = st.fresh.take_after(c.fresh, room, log.table, out);
                }
                if out.len() > before {
                    st.cursors.insert(id, c);
                    st.trim();
                }
            }
        }
        {
            let mut own = lock(&self.shared.own);
            // A key of the full push that went out as a change is not sent again.
            if !own.set.is_empty() {
                for c in out.iter() {
                    own.set.remove(&(c.table, c.key.clone()));
                }
            }
            while out.len() < max {
                let Some(item) = own.order.pop_front() else {
                    break;
                };
                if own.set.remove(&item) {
                    out.push(Change {
                        table: item.0,
                        key: item.1,
                        shared: None,
                    });
                }
            }
            if own.set.is_empty() {
                own.order.clear();
                own.order.shrink_to(64);
                own.set.shrink_to(64);
            }
        }
        if out.len() < max {
            // Caught up: be woken at the next change. Checked under each log's lock,
            // so no change can slip in between.
            let mut wake_now = false;
            for log in &logs {
                let mut st = lock(&log.state);
                let Some(c) = st.cursors.get(&id).copied() else {
                    continue;
                };
                if st.fresh.has_after(c.fresh) || st.background.has_after(c.background) {
                    wake_now = true;
                } else {
                    st.waiters.insert(id, self.shared.waker.clone());
                }
            }
            if wake_now {
                self.shared.waker.wake();
            }
        }
    }

    /// The number of changed keys waiting, each once.
    pub fn pending(&self) -> usize {
        let own = lock(&self.shared.own);
        let Some(reg) = self.registry.upgrade() else {
            return own.set.len();
        };
        let id = self.shared.id;
        let mut keys: std::collections::HashSet<(TableId, Key), KeyHasher> = own.set.clone();
        for log in reg.logs_for(self.shared.filter) {
            let st = lock(&log.state);
            if let Some(c) = st.cursors.get(&id) {
                let mut items = Vec::new();
                st.fresh
                    .take_after(c.fresh, usize::MAX, log.table, &mut items);
                st.background
                    .take_after(c.background, usize::MAX, log.table, &mut items);
                keys.extend(items.into_iter().map(|c| (c.table, c.key)));
            }
        }
        keys.len()
    }

    pub(crate) fn shared(&self) -> &SubShared {
        &self.shared
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(reg) = self.registry.upgrade() {
            reg.remove(self.shared.id);
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.shared.id)
            .field("filter", &self.shared.filter)
            .field("pending", &self.pending())
            .finish()
    }
}

/// Whether anyone (in a single-threaded test: the caller) holds `m`.
#[cfg(test)]
pub(crate) fn mutex_held<T>(m: &Mutex<T>) -> bool {
    matches!(m.try_lock(), Err(std::sync::TryLockError::WouldBlock))
}

/// Whether anyone holds `l`, for reading or for writing.
#[cfg(test)]
pub(crate) fn rwlock_held<T>(l: &RwLock<T>) -> bool {
    matches!(l.try_write(), Err(std::sync::TryLockError::WouldBlock))
}

#[cfg(test)]
impl SubRegistry {
    /// The change tracking's locks that are held right now, by name (see
    /// `Store::locks_held`).
    pub(crate) fn locks_held(&self) -> Vec<&'static str> {
        let mut held = Vec::new();
        if rwlock_held(&self.logs) {
            held.push("the change logs' registry");
        }
        if rwlock_held(&self.subs) {
            held.push("the subscriptions' registry");
        }
        if let Ok(logs) = self.logs.try_read()
            && logs.values().any(|l| mutex_held(&l.state))
        {
            held.push("a table's change log");
        }
        if let Ok(subs) = self.subs.try_read()
            && subs.iter().any(|s| mutex_held(&s.own))
        {
            held.push("a subscription's full-push set");
        }
        held
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// What a log must hold: each key once, at its latest sequence number.
    #[derive(Default)]
    struct Model {
        by_seq: BTreeMap<u64, u32>,
        seq_of: HashMap<u32, u64>,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u32),
        /// Trim up to the sequence number this far back from the last.
        Trim(u64),
        /// Take up to this many after the sequence number this far back.
        Take(u64, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            // Few keys and rare trims: many holes, so that compaction runs.
            16 => (0u32..12).prop_map(Op::Push),
            1 => (0u64..50).prop_map(Op::Trim),
            2 => ((0u64..80), (0usize..20)).prop_map(|(b, m)| Op::Take(b, m)),
        ]
    }

    proptest! {
        #[test]
        fn the_log_holds_each_key_once_at_its_latest_change(ops in proptest::collection::vec(op(), 1..600)) {
            let (mut log, mut model, mut seq) = (Log::default(), Model::default(), 0u64);
            let table = TableId(1);
            for op in ops {
                match op {
                    Op::Push(k) => {
                        seq += 1;
                        log.push(&Key::from_u32(k), seq, false);
                        if let Some(old) = model.seq_of.insert(k, seq) {
                            model.by_seq.remove(&old);
                        }
                        model.by_seq.insert(seq, k);
                    }
                    Op::Trim(back) => {
                        let upto = seq.saturating_sub(back);
                        log.trim(upto);
                        while let Some(e) = model.by_seq.first_entry() {
                            if *e.key() > upto {
                                break;
                            }
                            let k = e.remove();
                            model.seq_of.remove(&k);
                        }
                    }
                    Op::Take(back, max) => {
                        let cursor = seq.saturating_sub(back);
                        let mut out = Vec::new();
                        let next = log.take_after(cursor, max, table, &mut out);
                        let want: Vec<(u64, u32)> = model
                            .by_seq
                            .range(cursor + 1..)
                            .take(max)
                            .map(|(s, k)| (*s, *k))
                            .collect();
                        let got: Vec<Key> = out.iter().map(|c| c.key.clone()).collect();
                        let want_keys: Vec<Key> = want.iter().map(|(_, k)| Key::from_u32(*k)).collect();
                        prop_assert_eq!(got, want_keys);
                        // The cursor moves past what was taken, never past a change
                        // that was not.
                        let first_not_taken = model.by_seq.range(cursor + 1..).nth(want.len()).map(|(s, _)| *s);
                        prop_assert!(next >= want.last().map_or(cursor, |w| w.0));
                        prop_assert!(first_not_taken.is_none_or(|f| next < f));
                        prop_assert_eq!(log.has_after(cursor), model.by_seq.range(cursor + 1..).next().is_some());
                    }
                }
                // Bounded by the keys, whatever the updates.
                let live = model.by_seq.len();
                prop_assert_eq!(log.pos_of.len(), live);
                prop_assert!(log.slots.len() <= 2 * live + 65, "{} slots for {} keys", log.slots.len(), live);
            }
        }
    }
}
