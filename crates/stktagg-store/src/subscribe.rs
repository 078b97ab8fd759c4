//! Outbound change tracking, coalesced per destination.
//!
//! Each destination (a peer session that receives our tables) holds a
//! [`Subscription`]. Every change to a matching table inserts `(TableId, Key)` into
//! the subscription's dirty *set*: a key that changes a thousand times while the peer
//! is slow is queued once, and the daemon reads its latest value when it sends it.
//! Memory per subscription is therefore bounded by the number of keys, never by the
//! number of updates.
//!
//! Locking: one `Mutex` per subscription guards its dirty set; it is only held to
//! insert or pop, never while calling out. The registry of subscriptions is an
//! `RwLock` taken for reading on every change and for writing only to subscribe or
//! unsubscribe. [`Waker::wake`] is called with that read lock held, so it must be
//! quick and must not call back into the store (tokio's `Notify::notify_one` is fine).

use crate::store::{KeyHasher, TableId, TableKind};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use stktagg_wire::Key;

/// Wakes the task that drains a subscription. The daemon implements it with tokio's
/// `Notify`.
pub trait Waker: Send + Sync {
    /// Called when the subscription's set of changed keys goes from empty to
    /// non-empty, when its list of new tables does, and on subscribing if tables
    /// already exist. Must not block and must not call into the store.
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

/// The dirty set: each pending key once, with whether it is fresh, and two queues.
/// A key marked in the background and then freshly is queued in both; whichever
/// pop comes first sends it, the other finds it gone (or still fresh) and skips it.
#[derive(Default)]
struct Dirty {
    set: HashMap<(TableId, Key), bool, KeyHasher>,
    order: VecDeque<(TableId, Key)>,
    background: VecDeque<(TableId, Key)>,
    tables: Vec<TableId>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

pub(crate) struct SubShared {
    id: u64,
    pub(crate) filter: SubscriptionFilter,
    dirty: Mutex<Dirty>,
    waker: Arc<dyn Waker>,
}

impl SubShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Dirty> {
        // A poisoned set is still a valid set: a panic elsewhere cannot leave it half
        // updated in a way that matters, so keep going.
        self.dirty.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn mark<'a>(
        &self,
        table: TableId,
        keys: impl IntoIterator<Item = &'a Key>,
        urgency: Urgency,
    ) {
        let fresh = urgency == Urgency::Fresh;
        let wake = {
            let mut d = self.lock();
            let was_empty = d.is_empty();
            for k in keys {
                let item = (table, k.clone());
                // One hash per key: the entry says whether it is queued, and how.
                match d.set.entry(item) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let item = v.key().clone();
                        v.insert(fresh);
                        if fresh {
                            d.order.push_back(item);
                        } else {
                            d.background.push_back(item);
                        }
                    }
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        if fresh && !*o.get() {
                            // Queued in the background: move it ahead.
                            o.insert(true);
                            let item = o.key().clone();
                            d.order.push_back(item);
                        }
                    }
                }
            }
            was_empty && !d.is_empty()
        };
        if wake {
            self.waker.wake();
        }
    }

    pub(crate) fn new_table(&self, table: TableId) {
        let wake = {
            let mut d = self.lock();
            let was_empty = d.tables.is_empty();
            d.tables.push(table);
            was_empty
        };
        if wake {
            self.waker.wake();
        }
    }
}

/// The registry of live subscriptions.
#[derive(Default)]
pub(crate) struct SubRegistry {
    subs: RwLock<Vec<Arc<SubShared>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl SubRegistry {
    pub(crate) fn add(
        self: &Arc<Self>,
        filter: SubscriptionFilter,
        waker: Arc<dyn Waker>,
        tables: Vec<TableId>,
    ) -> Subscription {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wake_now = !tables.is_empty();
        let shared = Arc::new(SubShared {
            id,
            filter,
            dirty: Mutex::new(Dirty {
                tables,
                ..Dirty::default()
            }),
            waker,
        });
        self.write().push(shared.clone());
        if wake_now {
            shared.waker.wake();
        }
        Subscription {
            shared,
            registry: Arc::downgrade(self),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<SubShared>>> {
        self.subs.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<SubShared>>> {
        self.subs.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks keys of one table dirty in every matching subscription.
    pub(crate) fn mark<'a>(
        &self,
        table: TableId,
        kind: TableKind,
        keys: impl IntoIterator<Item = &'a Key> + Clone,
        urgency: Urgency,
    ) {
        for sub in self.read().iter().filter(|s| s.filter.matches(kind)) {
            sub.mark(table, keys.clone(), urgency);
        }
    }

    /// Tells every matching subscription about a new table.
    pub(crate) fn new_table(&self, table: TableId, kind: TableKind) {
        for sub in self.read().iter().filter(|s| s.filter.matches(kind)) {
            sub.new_table(table);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }
}

/// One destination's coalesced set of pending changes. Dropping it unsubscribes.
pub struct Subscription {
    shared: Arc<SubShared>,
    registry: Weak<SubRegistry>,
}

impl Subscription {
    /// The tables this subscription follows.
    pub fn filter(&self) -> SubscriptionFilter {
        self.shared.filter
    }

    /// Takes the tables created since the last call (and, on the first call, every
    /// matching table that existed when subscribing), in creation order. Call it
    /// before [`Subscription::drain`]: a table's first changed key is never queued
    /// before the table itself, so a DEFINE can always go out first.
    pub fn drain_tables(&self) -> Vec<TableId> {
        std::mem::take(&mut self.shared.lock().tables)
    }

    /// Takes up to `max` changed keys: fresh changes first, oldest first, then
    /// background ones (rate refreshes, full pushes). Each key appears once however
    /// often it changed; read its current value with `Store::read`. The waker is only
    /// called again when the set goes from empty to non-empty, so keep draining while
    /// this returns `max` items.
    pub fn drain(&self, max: usize) -> Vec<(TableId, Key)> {
        let mut d = self.shared.lock();
        let mut out = Vec::with_capacity(max.min(d.set.len()));
        while out.len() < max {
            let Some(item) = d.order.pop_front() else {
                break;
            };
            // Gone if a background pop sent it meanwhile.
            if d.set.remove(&item).is_some() {
                out.push(item);
            }
        }
        while out.len() < max {
            let Some(item) = d.background.pop_front() else {
                break;
            };
            // Still in the background (not moved ahead, not sent): send it now.
            if d.set.get(&item) == Some(&false) {
                d.set.remove(&item);
                out.push(item);
            }
        }
        if d.set.is_empty() {
            // Give back the memory a burst left behind; stale queue entries go too.
            d.order.clear();
            d.background.clear();
            d.set.shrink_to(64);
            d.order.shrink_to(64);
            d.background.shrink_to(64);
        }
        out
    }

    /// The number of changed keys waiting.
    pub fn pending(&self) -> usize {
        self.shared.lock().set.len()
    }

    pub(crate) fn shared(&self) -> &SubShared {
        &self.shared
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(reg) = self.registry.upgrade() {
            let id = self.shared.id;
            reg.write().retain(|s| s.id != id);
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
