//! Per-direction table bookkeeping shared by the decoder and the encoder.
//!
//! It mirrors how HAProxy maps one direction's table ids (`peer_treat_definemsg()`):
//! a definition first forgets whatever table had its id, and a table redefined
//! under a new id stops answering to the old one. The last update id belongs to the
//! table's *name* (HAProxy keeps `last_get` on its local table), so it survives a
//! redefinition under a new id.

use crate::message::TableDefinition;
use bytes::Bytes;
use std::collections::HashMap;

/// The maps' hasher: every update looks its table up, so SipHash would show in the
/// profile; ids and names come from the peer, and foldhash is seeded per process.
type Hasher = foldhash::fast::RandomState;

/// One defined table and its update sequence.
#[derive(Debug, Clone)]
pub(crate) struct TableState<L> {
    /// The definition as received or sent.
    pub(crate) def: TableDefinition,
    /// Data-type bits the definition set but this crate does not know (ids >= 27).
    pub(crate) unknown_bits: u64,
    /// The last update id, for the incremental forms.
    pub(crate) last_update_id: L,
    /// The fingerprint of what an update's encoding depends on ([`layout_of`]),
    /// computed once here rather than for every shared update framed.
    pub(crate) layout: u64,
}

/// A fingerprint of what an update's encoding depends on in a definition: key type,
/// key length, data types and their parameters. Deterministic within the process.
pub(crate) fn layout_of(def: &TableDefinition) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    def.key_type.hash(&mut h);
    def.key_len.hash(&mut h);
    def.data.hash(&mut h);
    h.finish()
}

/// The tables of one direction of a session, by table id, plus the selected one.
#[derive(Debug, Clone)]
pub(crate) struct TableMap<L> {
    by_id: HashMap<u32, TableState<L>, Hasher>,
    by_name: HashMap<Bytes, u32, Hasher>,
    pub(crate) selected: Option<u32>,
}

impl<L> Default for TableMap<L> {
    fn default() -> Self {
        TableMap {
            by_id: HashMap::default(),
            by_name: HashMap::default(),
            selected: None,
        }
    }
}

impl<L: Clone> TableMap<L> {
    /// The number of tables that answer to an id.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether defining `def` would add a table rather than replace one.
    pub(crate) fn would_grow(&self, def: &TableDefinition) -> bool {
        !self.by_id.contains_key(&def.table_id) && !self.by_name.contains_key(&def.name)
    }

    /// Records a definition and selects it. `fresh` computes the last update id from
    /// the one the same-named table had, if any.
    pub(crate) fn define(
        &mut self,
        def: TableDefinition,
        unknown_bits: u64,
        fresh: impl FnOnce(Option<L>) -> L,
    ) {
        let previous = self
            .by_name
            .remove(&def.name)
            .and_then(|old_id| self.by_id.remove(&old_id).map(|old| old.last_update_id));
        if let Some(old) = self.by_id.remove(&def.table_id) {
            self.by_name.remove(&old.def.name);
        }
        let id = def.table_id;
        self.by_name.insert(def.name.clone(), id);
        self.by_id.insert(
            id,
            TableState {
                layout: layout_of(&def),
                def,
                unknown_bits,
                last_update_id: fresh(previous),
            },
        );
        self.selected = Some(id);
    }

    /// The table with this id.
    pub(crate) fn get(&self, table_id: u32) -> Option<&TableState<L>> {
        self.by_id.get(&table_id)
    }

    /// The table with this id, mutably.
    pub(crate) fn get_mut(&mut self, table_id: u32) -> Option<&mut TableState<L>> {
        self.by_id.get_mut(&table_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyType;

    fn def(id: u32, name: &'static str) -> TableDefinition {
        TableDefinition {
            table_id: id,
            name: Bytes::from_static(name.as_bytes()),
            key_type: KeyType::Ipv4,
            key_len: 4,
            expire_ms: 0,
            data: vec![],
        }
    }

    #[test]
    fn redefinition_moves_ids_and_keeps_sequence_by_name() {
        let mut m: TableMap<u32> = TableMap::default();
        m.define(def(1, "/a"), 0, |p| p.unwrap_or(0));
        m.get_mut(1).unwrap().last_update_id = 7;
        // Same name, new id: the old id stops resolving, the sequence carries over.
        m.define(def(2, "/a"), 0, |p| p.unwrap_or(0));
        assert!(m.get(1).is_none());
        assert_eq!(m.get(2).unwrap().last_update_id, 7);
        assert_eq!(m.selected, Some(2));
        // Same id, new name: the old table is forgotten.
        m.define(def(2, "/b"), 0, |p| p.unwrap_or(0));
        assert_eq!(m.get(2).unwrap().def.name, "/b");
        assert_eq!(m.get(2).unwrap().last_update_id, 0);
        assert_eq!(m.len(), 1);
        assert!(m.would_grow(&def(3, "/c")));
        assert!(!m.would_grow(&def(3, "/b")));
    }
}
