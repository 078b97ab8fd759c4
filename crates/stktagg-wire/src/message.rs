//! The messages of peers protocol 2.1, after the handshake.

use crate::data::{DataSpec, Value};
use crate::key::{Key, KeyType};
use bytes::Bytes;

/// A table definition (`0a 82`): announces a table and selects it for the updates
/// that follow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableDefinition {
    /// The sender-local table id (HAProxy numbers them from 1; 0 means "no id").
    pub table_id: u32,
    /// The table's network name: `/<table>` for a peers-section table, the backend
    /// name for a backend table.
    pub name: Bytes,
    /// The key type.
    pub key_type: KeyType,
    /// The key length (`key_size`): 4, 16, the string length + 1, or the binary length.
    pub key_len: u32,
    /// The table's expiry in milliseconds, 0 if it has none.
    pub expire_ms: u32,
    /// The stored data types, in ascending id order, with their parameters.
    pub data: Vec<DataSpec>,
}

impl TableDefinition {
    /// The data-type bitfield as sent on the wire.
    pub fn bitfield(&self) -> u64 {
        self.data.iter().fold(0, |acc, d| acc | d.data_type.bit())
    }
}

/// Which of the four update messages carries an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateKind {
    /// `0a 80`: carries its update id.
    Full,
    /// `0a 81`: the update id is the previous one + 1 and is not on the wire.
    Incremental,
    /// `0a 85`: carries its update id and the entry's remaining lifetime.
    Timed,
    /// `0a 86`: incremental, with the entry's remaining lifetime.
    IncrementalTimed,
}

impl UpdateKind {
    /// Whether the update id is on the wire.
    pub fn has_id(self) -> bool {
        matches!(self, UpdateKind::Full | UpdateKind::Timed)
    }

    /// Whether the remaining lifetime is on the wire.
    pub fn is_timed(self) -> bool {
        matches!(self, UpdateKind::Timed | UpdateKind::IncrementalTimed)
    }
}

/// One entry's values (`0a 80`, `0a 81`, `0a 85`, `0a 86`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Update {
    /// The message form.
    pub kind: UpdateKind,
    /// The sender's table id this update belongs to (the last definition or switch).
    /// Not on the wire: filled in by the decoder, used by the encoder to pick the
    /// definition that gives the value layout.
    pub table_id: u32,
    /// The update id (for incremental forms, the previous id + 1, as the receiver
    /// computes it).
    pub update_id: u32,
    /// The remaining lifetime in milliseconds, for timed forms.
    pub expire_ms: Option<u32>,
    /// The key.
    pub key: Key,
    /// One value per data type of the table definition, in ascending id order.
    pub values: Vec<Value>,
}

/// An [`Update`] whose key and values are borrowed: what the encoder needs to send
/// an entry without the caller building (and allocating) a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateRef<'a> {
    /// The message form.
    pub kind: UpdateKind,
    /// The table id the update belongs to.
    pub table_id: u32,
    /// The update id.
    pub update_id: u32,
    /// The remaining lifetime in milliseconds, for timed forms.
    pub expire_ms: Option<u32>,
    /// The key.
    pub key: &'a Key,
    /// One value per data type of the table definition.
    pub values: &'a [Value],
}

impl Update {
    /// The same update, borrowed.
    pub fn as_ref(&self) -> UpdateRef<'_> {
        UpdateRef {
            kind: self.kind,
            table_id: self.table_id,
            update_id: self.update_id,
            expire_ms: self.expire_ms,
            key: &self.key,
            values: &self.values,
        }
    }
}

/// A message of protocol 2.1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// `00 00`: please teach me everything.
    ResyncRequest,
    /// `00 01`: the teach is over and I was up to date.
    ResyncFinished,
    /// `00 02`: the teach is over but I was not up to date myself.
    ResyncPartial,
    /// `00 03`: your teach reached me.
    ResyncConfirm,
    /// `00 04`: keep-alive.
    Heartbeat,
    /// `01 00`: the sender found a protocol error and closes.
    ProtocolError,
    /// `01 01`: a message was over the sender's size limit; it closes.
    SizeLimit,
    /// `0a 82`.
    TableDefinition(TableDefinition),
    /// `0a 83`: selects an already defined table by the sender's id.
    TableSwitch {
        /// The sender-local table id.
        table_id: u32,
    },
    /// `0a 80`, `0a 81`, `0a 85`, `0a 86`.
    Update(Update),
    /// `0a 84`: acknowledges updates up to `update_id` of the receiver's table
    /// `table_id` (the id from the acknowledged side's definition).
    Ack {
        /// The table id chosen by the side whose updates are acknowledged.
        table_id: u32,
        /// The last update id received.
        update_id: u32,
    },
    /// A message HAProxy ignores (unknown class or type): decoded so that the session
    /// can count it as liveness and go on.
    Ignored {
        /// The class byte.
        class: u8,
        /// The type byte.
        msg_type: u8,
    },
}
