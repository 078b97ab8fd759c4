//! The one error type of the crate, and whose fault each error is.
//!
//! Every rule of the protocol that a peer can break has its own variant, so that the
//! daemon can log and count precisely what went wrong. Variants raised while
//! *decoding* are the peer's fault; variants raised while *encoding* mean our own code
//! tried to send something a receiver would reject or misread (see [`Fault`]).

use crate::data::DataType;
use crate::key::KeyType;
use crate::message::{Message, UpdateKind};

/// Who caused an error, in the sense of `pingora-error`: it decides whether the
/// session blames the peer (protocol error metric, `01 00` reply) or our own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The peer sent bytes that break the protocol.
    Peer,
    /// Our own code asked to encode something the protocol cannot carry.
    Local,
    /// The transport failed (only through the `tokio-codec` adapter).
    Io,
}

/// Everything that can go wrong while decoding or encoding the peers protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    // --- Decoding: the peer's fault. ---
    /// A message body ended before a field it must contain. Inside a body, running
    /// out of bytes is malformed input, not "need more bytes".
    #[error("message body truncated while reading {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A varint went on to an 11th byte (HAProxy would shift by 64 or more).
    #[error("varint longer than 10 bytes")]
    VarintTooLong,
    /// A varint's value does not fit in 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A varint decoded fine but does not fit the real width of its field (HAProxy
    /// would silently truncate it, which aliases values).
    #[error("value {value} out of range for {field}")]
    OutOfRange {
        /// The field being read.
        field: &'static str,
        /// The value received.
        value: u64,
    },
    /// The body length of a message did not end within 5 bytes.
    #[error("message length varint longer than 5 bytes")]
    LengthTooLong,
    /// A message announced a size over the receive limit. The peer should get
    /// `01 01` (size limit) before the session closes.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The size of the whole message (header, length and body).
        len: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A message of class 255, which is reserved.
    #[error("message of reserved class 255 (type {msg_type})")]
    ReservedClass {
        /// The type byte.
        msg_type: u8,
    },
    /// A table definition with a key type that is not 2, 4, 5, 6 or 7.
    #[error("unknown key type {id}")]
    UnknownKeyType {
        /// The key type id received.
        id: u64,
    },
    /// A table definition whose key length is impossible for its key type (not 4
    /// for `integer`/`ip`, not 16 for `ipv6`, 0 for `string`/`binary`).
    #[error("bad key length {key_len} for key type {}", key_type.name())]
    BadKeyLength {
        /// The key type.
        key_type: KeyType,
        /// The key length received.
        key_len: u32,
    },
    /// A table definition whose name is empty, or whose name ends the body.
    #[error("table definition with an empty or unterminated name")]
    BadTableName,
    /// A table definition whose parameter tail lacks the group of a rate or array
    /// type, or gives it for another type, or an array type with no tail at all.
    #[error("table definition lacks the parameters of data type {data_type}")]
    DefinitionParams {
        /// The data type whose parameters are missing or mismatched.
        data_type: DataType,
    },
    /// More distinct table definitions than the decoder accepts in one session.
    #[error("more than {limit} tables defined in one session")]
    TooManyTables {
        /// The limit.
        limit: usize,
    },
    /// An update arrived before any table definition selected a table.
    #[error("update before any table definition")]
    UpdateWithoutTable,
    /// A table switch named a table id that no definition of this session gave.
    #[error("unknown table id {table_id}")]
    UnknownTableId {
        /// The table id received.
        table_id: u32,
    },
    /// A dictionary (`server_key`) value with an id outside 1..=128.
    #[error("dictionary id {id} outside 1..=128")]
    DictIdOutOfRange {
        /// The id received.
        id: u64,
    },
    /// A short-form dictionary value naming a slot the peer never filled.
    #[error("unknown dictionary id {id}")]
    UnknownDictId {
        /// The id received.
        id: u8,
    },
    /// A dictionary value whose announced length does not match its content.
    #[error("dictionary value length does not match its content")]
    BadDictLength,
    /// A handshake line reached the line limit without a line feed. HAProxy closes
    /// without a status in this case.
    #[error("handshake line longer than {limit} bytes")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// An update encoded once for several sessions does not fit this session's
    /// definition of the table (another key type, key length or data types).
    #[error("shared update does not fit the definition of table {table_id}")]
    SharedLayout {
        /// Our table id.
        table_id: u32,
    },

    // --- Encoding: our own fault. ---
    /// A table definition we were asked to send is invalid (table id 0, empty name,
    /// key length impossible for the key type, data types not in strictly
    /// ascending order, or parameters that do not fit a data type).
    #[error("invalid table definition {table_id}: {reason}")]
    InvalidDefinition {
        /// The table id of the definition.
        table_id: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// An update or switch for a table this encoder never sent a definition for.
    #[error("table {table_id} was never defined on this session")]
    UndefinedTable {
        /// The table id.
        table_id: u32,
    },
    /// An update for a table other than the one the receiver has selected (send a
    /// definition or a switch first).
    #[error("update for table {table_id} while table {selected:?} is selected")]
    TableNotSelected {
        /// The update's table id.
        table_id: u32,
        /// The table the receiver has selected, if any.
        selected: Option<u32>,
    },
    /// An update whose number of values differs from the definition's data types.
    #[error("update has {got} values, its table defines {expected}")]
    ValueCount {
        /// The number of data types in the definition.
        expected: usize,
        /// The number of values in the update.
        got: usize,
    },
    /// An update value whose shape does not match its data type (wrong storage, or
    /// an array whose length differs from the definition's element count).
    #[error("value {index} does not match data type {data_type}")]
    ValueShape {
        /// The position of the value.
        index: usize,
        /// The data type the definition expects there.
        data_type: DataType,
    },
    /// A timed update without `expire_ms`, or a plain one with it.
    #[error("update kind {kind:?} does not match its expire field")]
    ExpireMismatch {
        /// The update kind.
        kind: UpdateKind,
    },
    /// An incremental update whose id is not the previous id + 1, so the receiver
    /// would compute another id.
    #[error("incremental update id {got}, the receiver expects {expected:?}")]
    IncrementalIdMismatch {
        /// The id the receiver will compute, `None` right after a definition (send
        /// an update with its id first).
        expected: Option<u32>,
        /// The id of the update.
        got: u32,
    },
    /// A key that does not fit its table's key type and length.
    #[error("key of {len} bytes does not fit a {} key of length {key_len}", key_type.name())]
    InvalidKey {
        /// The table's key type.
        key_type: KeyType,
        /// The table's key length.
        key_len: u32,
        /// The key's length in bytes.
        len: usize,
    },
    /// An [`Message::Ignored`] whose class and type a receiver would not ignore.
    #[error("class {class} type {msg_type} is not an ignorable message")]
    NotIgnorable {
        /// The class byte.
        class: u8,
        /// The type byte.
        msg_type: u8,
    },
    /// A message we were asked to send is over the receiver's size limit.
    #[error("encoded message of {len} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// The size of the whole message.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A handshake name that is empty or holds a byte a hello line cannot carry
    /// (LF, CR, NUL, or a space in the caller's name).
    #[error("invalid peer name {name:?} for a hello")]
    InvalidName {
        /// The name.
        name: String,
    },

    // --- Transport. ---
    /// Reading or writing the socket failed (tokio-util adapter only).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl WireError {
    /// Whose fault the error is. All decoding errors are the peer's.
    pub fn fault(&self) -> Fault {
        match self {
            WireError::Truncated { .. }
            | WireError::VarintTooLong
            | WireError::VarintOverflow
            | WireError::OutOfRange { .. }
            | WireError::LengthTooLong
            | WireError::MessageTooLarge { .. }
            | WireError::ReservedClass { .. }
            | WireError::UnknownKeyType { .. }
            | WireError::BadKeyLength { .. }
            | WireError::BadTableName
            | WireError::DefinitionParams { .. }
            | WireError::TooManyTables { .. }
            | WireError::UpdateWithoutTable
            | WireError::UnknownTableId { .. }
            | WireError::DictIdOutOfRange { .. }
            | WireError::UnknownDictId { .. }
            | WireError::BadDictLength
            | WireError::LineTooLong { .. } => Fault::Peer,
            WireError::InvalidDefinition { .. }
            | WireError::UndefinedTable { .. }
            | WireError::TableNotSelected { .. }
            | WireError::ValueCount { .. }
            | WireError::SharedLayout { .. }
            | WireError::ValueShape { .. }
            | WireError::ExpireMismatch { .. }
            | WireError::IncrementalIdMismatch { .. }
            | WireError::InvalidKey { .. }
            | WireError::NotIgnorable { .. }
            | WireError::Oversized { .. }
            | WireError::InvalidName { .. } => Fault::Local,
            WireError::Io(_) => Fault::Io,
        }
    }

    /// Whether the peer caused the error.
    pub fn is_peer_fault(&self) -> bool {
        self.fault() == Fault::Peer
    }

    /// The message HAProxy sends in this situation just before it closes the session:
    /// `01 01` for an oversized message, `01 00` for any other protocol error after
    /// the handshake, nothing for handshake line errors (HAProxy closes silently),
    /// our own errors or transport errors.
    pub fn reply(&self) -> Option<Message> {
        match self {
            WireError::MessageTooLarge { .. } => Some(Message::SizeLimit),
            WireError::LineTooLong { .. } => None,
            e if e.is_peer_fault() => Some(Message::ProtocolError),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_and_replies() {
        let e = WireError::Truncated { field: "key" };
        assert_eq!(e.fault(), Fault::Peer);
        assert_eq!(e.reply(), Some(Message::ProtocolError));
        let e = WireError::MessageTooLarge {
            len: 20000,
            limit: 16384,
        };
        assert_eq!(e.reply(), Some(Message::SizeLimit));
        assert_eq!(
            e.to_string(),
            "message of 20000 bytes exceeds the limit of 16384 bytes"
        );
        let e = WireError::LineTooLong { limit: 16384 };
        assert!(e.is_peer_fault());
        assert_eq!(e.reply(), None);
        let e = WireError::ValueCount {
            expected: 2,
            got: 1,
        };
        assert_eq!(e.fault(), Fault::Local);
        assert_eq!(e.reply(), None);
        let e = WireError::from(std::io::Error::other("boom"));
        assert_eq!(e.fault(), Fault::Io);
        assert_eq!(e.reply(), None);
    }

    #[test]
    fn messages_are_lowercase_without_period() {
        let samples = [
            WireError::VarintTooLong,
            WireError::BadKeyLength {
                key_type: KeyType::Ipv4,
                key_len: 8,
            },
            WireError::DefinitionParams {
                data_type: DataType::GpcRate,
            },
            WireError::InvalidKey {
                key_type: KeyType::String,
                key_len: 33,
                len: 40,
            },
        ];
        for e in samples {
            let s = e.to_string();
            assert!(!s.ends_with('.'), "{s}");
            assert!(s.starts_with(|c: char| !c.is_uppercase()), "{s}");
        }
        assert_eq!(
            WireError::BadKeyLength {
                key_type: KeyType::Ipv4,
                key_len: 8
            }
            .to_string(),
            "bad key length 8 for key type ip"
        );
    }
}
