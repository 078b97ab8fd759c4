//! [`SimStore`]: the real store, with the order of what it lists made
//! deterministic.
//!
//! The store keeps its entries in hash maps seeded per process and per map
//! (foldhash, dashmap): two runs of one seed would list keys in different orders,
//! and the order of a lesson or of a batch of changes decides which entries are on
//! the wire when a connection is cut. Everything goes to [`stktagg_store::Store`]
//! unchanged; only the lists it returns are sorted. A batch of changes is sorted
//! as a whole, which is exact as long as every batch holds every pending key (the
//! simulation's key universe is smaller than a session's batch, see
//! `crate::world::KEYS_PER_FAMILY`).

use std::sync::Arc;
use stktagg_section::TableStore;
use stktagg_store::{
    Applied, Change, EntryMeta, OutputEntry, SharedChange, SourceId, Store, StoreError,
    SubscriptionFilter, TableId, TaughtTable, Waker,
};
use stktagg_wire::{Key, TableDefinition, Value};

/// The real store, listing in a deterministic order (see the module documentation).
#[derive(Debug, Default)]
pub struct SimStore(pub Store);

impl TableStore for SimStore {
    type Input = <Store as TableStore>::Input;
    type Relay = <Store as TableStore>::Relay;
    type Sub = <Store as TableStore>::Sub;

    fn register_input(
        &self,
        source: SourceId,
        name: &[u8],
        def: &TableDefinition,
        output: &[u8],
    ) -> Result<Self::Input, StoreError> {
        TableStore::register_input(&self.0, source, name, def, output)
    }

    fn apply(
        &self,
        input: &Self::Input,
        key: &Key,
        values: &[Value],
        expire_ms: Option<u32>,
        now: u64,
    ) -> Result<Applied, StoreError> {
        TableStore::apply(&self.0, input, key, values, expire_ms, now)
    }

    fn register_relay(
        &self,
        group: u16,
        member: SourceId,
        def: &TableDefinition,
        name: &[u8],
    ) -> Result<Self::Relay, StoreError> {
        TableStore::register_relay(&self.0, group, member, def, name)
    }

    fn relay_apply(
        &self,
        relay: &Self::Relay,
        key: &Key,
        values: &[Value],
        expire_ms: Option<u32>,
        now: u64,
    ) -> Result<Applied, StoreError> {
        TableStore::relay_apply(&self.0, relay, key, values, expire_ms, now)
    }

    fn begin_resync(&self, source: SourceId, now: u64) {
        TableStore::begin_resync(&self.0, source, now);
    }

    fn end_resync(&self, source: SourceId, now: u64) {
        TableStore::end_resync(&self.0, source, now);
    }

    fn relay_replace(&self, group: u16, member: SourceId, now: u64) {
        TableStore::relay_replace(&self.0, group, member, now);
    }

    fn active_member(&self, group: u16) -> Option<SourceId> {
        TableStore::active_member(&self.0, group)
    }

    fn subscribe_all(&self, filter: SubscriptionFilter, waker: Arc<dyn Waker>) -> Self::Sub {
        TableStore::subscribe_all(&self.0, filter, waker)
    }

    fn drain(&self, sub: &Self::Sub, max: usize) -> Vec<Change> {
        let mut batch = TableStore::drain(&self.0, sub, max);
        batch.sort_by(|a, b| (a.table, &a.key).cmp(&(b.table, &b.key)));
        batch
    }

    fn shared_change(&self, table: TableId, key: &Key, now: u64) -> Option<SharedChange> {
        TableStore::shared_change(&self.0, table, key, now)
    }

    fn pending(&self, sub: &Self::Sub) -> usize {
        TableStore::pending(&self.0, sub)
    }

    fn lesson(&self, filter: SubscriptionFilter) -> Vec<(TableId, Key)> {
        let mut all = TableStore::lesson(&self.0, filter);
        all.sort();
        all
    }

    fn read(&self, table: TableId, key: &Key, now: u64) -> Option<OutputEntry> {
        TableStore::read(&self.0, table, key, now)
    }

    fn read_into(
        &self,
        table: TableId,
        key: &Key,
        now: u64,
        values: &mut Vec<Value>,
    ) -> Option<EntryMeta> {
        TableStore::read_into(&self.0, table, key, now, values)
    }

    fn definition(&self, table: TableId) -> Option<TableDefinition> {
        TableStore::definition(&self.0, table)
    }

    fn contributions_of(&self, source: SourceId, now: u64) -> Vec<TaughtTable> {
        let mut tables = TableStore::contributions_of(&self.0, source, now);
        for t in &mut tables {
            t.entries.sort_by(|a, b| a.key.cmp(&b.key));
        }
        tables
    }

    fn has_output(&self, name: &[u8]) -> bool {
        TableStore::has_output(&self.0, name)
    }

    fn table_count(&self) -> usize {
        TableStore::table_count(&self.0)
    }
}
