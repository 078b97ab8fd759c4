//! [`TableStore`]: what a section needs from its tables, as a trait, so that the
//! section's logic can run over the real store ([`stktagg_store::Store`]) or a
//! substitute.

use std::sync::Arc;
use stktagg_store::{
    Applied, Change, EntryMeta, OutputEntry, SharedChange, SourceId, Store, StoreError,
    Subscription, SubscriptionFilter, TableId, TableKind, TaughtTable, Waker,
};
use stktagg_wire::{Key, TableDefinition, Value};

/// The tables of one section, as its sessions use them.
pub trait TableStore: Send + Sync + 'static {
    /// A source's registered input table.
    type Input: Send + Sync;
    /// A group member's registered relayed table.
    type Relay: Send + Sync;
    /// One destination's coalesced changes.
    type Sub: Send;

    /// Registers `source`'s input table `name`, aggregated into the output `output`.
    fn register_input(
        &self,
        source: SourceId,
        name: &[u8],
        def: &TableDefinition,
        output: &[u8],
    ) -> Result<Self::Input, StoreError>;
    /// Replaces `source`'s contribution to `key`.
    fn apply(
        &self,
        input: &Self::Input,
        key: &Key,
        values: &[Value],
        expire_ms: Option<u32>,
        now: u64,
    ) -> Result<Applied, StoreError>;
    /// Registers a group member's table `name`, relayed as it is.
    fn register_relay(
        &self,
        group: u16,
        member: SourceId,
        def: &TableDefinition,
        name: &[u8],
    ) -> Result<Self::Relay, StoreError>;
    /// Applies a relayed update (heard only from the group's relayed member).
    fn relay_apply(
        &self,
        relay: &Self::Relay,
        key: &Key,
        values: &[Value],
        expire_ms: Option<u32>,
        now: u64,
    ) -> Result<Applied, StoreError>;
    /// A full resync from `source` starts: what it does not send again is dropped at
    /// its end.
    fn begin_resync(&self, source: SourceId, now: u64);
    /// The full resync from `source` ended.
    fn end_resync(&self, source: SourceId, now: u64);
    /// The group's relayed member becomes `member`, its tables replaced by its lesson.
    fn relay_replace(&self, group: u16, member: SourceId, now: u64);
    /// The group's relayed member.
    fn active_member(&self, group: u16) -> Option<SourceId>;
    /// Follows the changes of the tables matching `filter`, and marks every existing
    /// entry (a new session starts with a full push).
    fn subscribe_all(&self, filter: SubscriptionFilter, waker: Arc<dyn Waker>) -> Self::Sub;
    /// At most `max` changed entries of the subscription, each with its encoding
    /// shared by every destination when there is one.
    fn drain(&self, sub: &Self::Sub, max: usize) -> Vec<Change>;
    /// [`TableStore::drain`] into a reused buffer (cleared first).
    fn drain_into(&self, sub: &Self::Sub, max: usize, out: &mut Vec<Change>) {
        *out = self.drain(sub, max);
    }
    /// An entry's values encoded once for every destination (`None`: gone, or not
    /// shareable: each destination reads and encodes it).
    fn shared_change(&self, table: TableId, key: &Key, now: u64) -> Option<SharedChange>;
    /// How many changed entries wait in the subscription (bounded by the number of
    /// keys, never by the number of updates).
    fn pending(&self, sub: &Self::Sub) -> usize;
    /// Every entry of the tables matching `filter` (a lesson).
    fn lesson(&self, filter: SubscriptionFilter) -> Vec<(TableId, Key)>;
    /// An entry's published values.
    fn read(&self, table: TableId, key: &Key, now: u64) -> Option<OutputEntry>;
    /// [`TableStore::read`] into a reused values buffer (the send path's).
    fn read_into(
        &self,
        table: TableId,
        key: &Key,
        now: u64,
        values: &mut Vec<Value>,
    ) -> Option<EntryMeta> {
        let e = self.read(table, key, now)?;
        let meta = e.meta();
        *values = e.values;
        Some(meta)
    }
    /// A table's definition as sent on the wire.
    fn definition(&self, table: TableId) -> Option<TableDefinition>;
    /// The source's own entries, to teach back to it.
    fn contributions_of(&self, source: SourceId, now: u64) -> Vec<TaughtTable>;
    /// Whether an output table called `name` exists.
    fn has_output(&self, name: &[u8]) -> bool;
    /// How many tables exist.
    fn table_count(&self) -> usize;
    /// Sets the most entries the output table `input` feeds may hold (its rule's
    /// `size`). A store without limits ignores it (the default, for test
    /// doubles).
    fn set_output_size(&self, input: &Self::Input, entries: usize) {
        let _ = (input, entries);
    }
    /// Removes a source (a peer removed from the configuration): its
    /// contributions are dropped and its handles refused. Returns how many
    /// contributions were dropped. A store that cannot do this keeps them until
    /// they expire (the default, for test doubles).
    fn drop_source(&self, source: SourceId, now: u64) -> usize {
        let _ = (source, now);
        0
    }
}

impl TableStore for Store {
    type Input = stktagg_store::InputHandle;
    type Relay = stktagg_store::RelayHandle;
    type Sub = Subscription;

    fn register_input(
        &self,
        source: SourceId,
        name: &[u8],
        def: &TableDefinition,
        output: &[u8],
    ) -> Result<Self::Input, StoreError> {
        Store::register_input(self, source, name, def, output)
    }

    fn apply(
        &self,
        input: &Self::Input,
        key: &Key,
        values: &[Value],
        expire_ms: Option<u32>,
        now: u64,
    ) -> Result<Applied, StoreError> {
        Store::apply(self, input, key, values, expire_ms, now)
    }

    fn register_relay(
        &self,
        group: u16,
        member: SourceId,
        def: &TableDefinition,
        name: &[u8],
    ) -> Result<Self::Relay, StoreError> {
        Store::register_relay(self, group, member, def, name)
    }

    fn relay_apply(
        &self,
        relay: &Self::Relay,
        key: &Key,
        values: &[Value],
        expire_ms: Option<u32>,
        now: u64,
    ) -> Result<Applied, StoreError> {
        Store::relay_apply(self, relay, key, values, expire_ms, now)
    }

    fn begin_resync(&self, source: SourceId, now: u64) {
        Store::begin_resync(self, source, now);
    }

    fn end_resync(&self, source: SourceId, now: u64) {
        Store::end_resync(self, source, now);
    }

    fn relay_replace(&self, group: u16, member: SourceId, now: u64) {
        Store::relay_replace(self, group, member, now);
    }

    fn active_member(&self, group: u16) -> Option<SourceId> {
        Store::active_member(self, group)
    }

    fn subscribe_all(&self, filter: SubscriptionFilter, waker: Arc<dyn Waker>) -> Self::Sub {
        let sub = Store::subscribe(self, filter, waker);
        Store::mark_all(self, &sub);
        sub
    }

    fn drain(&self, sub: &Self::Sub, max: usize) -> Vec<Change> {
        sub.drain_changes(max)
    }

    fn drain_into(&self, sub: &Self::Sub, max: usize, out: &mut Vec<Change>) {
        sub.drain_changes_into(max, out);
    }

    fn shared_change(&self, table: TableId, key: &Key, now: u64) -> Option<SharedChange> {
        Store::shared_change(self, table, key, now)
    }

    fn pending(&self, sub: &Self::Sub) -> usize {
        sub.pending()
    }

    fn lesson(&self, filter: SubscriptionFilter) -> Vec<(TableId, Key)> {
        let mut all = Vec::new();
        for t in Store::tables(self) {
            let wanted = match t.kind {
                TableKind::Output => filter.outputs,
                TableKind::Relay { .. } => filter.relays,
            };
            if wanted {
                all.extend(Store::keys(self, t.id).into_iter().map(|k| (t.id, k)));
            }
        }
        all
    }

    fn read(&self, table: TableId, key: &Key, now: u64) -> Option<OutputEntry> {
        Store::read(self, table, key, now)
    }

    fn read_into(
        &self,
        table: TableId,
        key: &Key,
        now: u64,
        values: &mut Vec<Value>,
    ) -> Option<EntryMeta> {
        Store::read_into(self, table, key, now, values)
    }

    fn definition(&self, table: TableId) -> Option<TableDefinition> {
        Store::table_info(self, table).map(|i| i.definition)
    }

    fn contributions_of(&self, source: SourceId, now: u64) -> Vec<TaughtTable> {
        Store::contributions_of(self, source, now)
    }

    fn has_output(&self, name: &[u8]) -> bool {
        Store::output_by_name(self, name).is_some()
    }

    fn table_count(&self) -> usize {
        Store::table_summaries(self).len()
    }

    fn drop_source(&self, source: SourceId, now: u64) -> usize {
        Store::drop_source(self, source, now)
    }

    fn set_output_size(&self, input: &Self::Input, entries: usize) {
        Store::set_limit(self, input.output(), entries);
    }
}
