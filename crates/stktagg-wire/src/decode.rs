//! The receive side of a session: bytes in, [`Message`]s out.
//!
//! [`Decoder`] holds what the peer told us earlier in the session and what later
//! messages need: the table definitions by the peer's table ids, the selected table
//! (last definition or switch), each table's last update id (incremental updates
//! carry none) and the 128-slot dictionary cache of `server_key` names.
//!
//! Decisions where HAProxy is lax or undefined (it is the *receiver's* leniency we
//! choose not to copy, since a conforming sender never needs it):
//! - A varint that does not fit its field's width is an error, not truncated; this
//!   includes `Uint` values and freq-ctr counts above `u32::MAX`. `Sint` values keep
//!   their low 32 bits (they are sign-extended on the wire) and a freq-ctr age keeps
//!   its low 32 bits (ages are modular and large ones are normal).
//! - Data-type bits this crate does not know (ids from 27 on) are ignored, as HAProxy
//!   2.6 ignores bits from 25 on: their ids are above every known type, so their
//!   values and parameters come last and are skipped as trailing bytes.
//!   [`Decoder::unknown_data_bits`] reports them.
//! - A definition without the optional expire field (pre-1.9 senders) gets expire 0;
//!   an array type then has no element count, which is an error (HAProxy ignores
//!   such a definition). A tail group missing or naming another type is an error.
//! - A string key longer than `key_len - 1` is cut to that length, as HAProxy
//!   stores it, but all of its announced bytes must be present.
//! - Updates with no selected table, switches to an unknown id, short-form
//!   dictionary ids never filled, and dictionary values with bytes left over are
//!   errors (HAProxy would ignore or misparse them).

use crate::data::{DataSpec, DataType, DictValue, FreqCtr, ParamKind, Storage, Value};
use crate::dict::{DICT_SLOTS, RxDict};
use crate::error::WireError;
use crate::frame::{self, Frame};
use crate::key::{Key, KeyType};
use crate::message::{Message, TableDefinition, Update, UpdateKind};
use crate::tables::TableMap;
use crate::varint;
use bytes::{Bytes, BytesMut};

/// The default number of distinct tables one session may define.
pub const DEFAULT_MAX_TABLES: usize = 1024;

/// The data-type bits this crate knows (ids 0 to 26).
const KNOWN_DATA_BITS: u64 = (1 << 27) - 1;

/// A cursor over one message body. Running out of bytes here is malformed input.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn varint(&mut self, field: &'static str) -> Result<u64, WireError> {
        match varint::decode(&self.buf[self.pos..])? {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(WireError::Truncated { field }),
        }
    }

    pub(crate) fn varint_u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        varint::to_u32(self.varint(field)?, field)
    }

    pub(crate) fn u32_be(&mut self, field: &'static str) -> Result<u32, WireError> {
        let b = self.bytes(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn bytes(&mut self, n: u64, field: &'static str) -> Result<Bytes, WireError> {
        if n > self.remaining() as u64 {
            return Err(WireError::Truncated { field });
        }
        // `n <= remaining`, so it fits a usize.
        let n = n as usize;
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }
}

/// The receive state of one session. Create one per session, after the handshake.
///
/// After an error the session must end: the decoder's state is then unspecified.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_message_len: usize,
    max_tables: usize,
    tables: TableMap<u32>,
    dict: RxDict,
    /// A values buffer handed back by the caller ([`Decoder::recycle`]), which the
    /// next update decodes into: a steady stream allocates none.
    spare: Vec<Value>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder with HAProxy's default limit of 16384 bytes per message.
    pub fn new() -> Self {
        Decoder::with_max_message_len(frame::DEFAULT_MAX_MESSAGE_LEN)
    }

    /// A decoder with another message size limit (at least 7 bytes).
    pub fn with_max_message_len(max_message_len: usize) -> Self {
        Decoder {
            max_message_len: max_message_len.max(frame::MIN_MAX_MESSAGE_LEN),
            max_tables: DEFAULT_MAX_TABLES,
            tables: TableMap::default(),
            dict: RxDict::default(),
            spare: Vec::new(),
        }
    }

    /// Hands back the values of a decoded update once the caller is done with
    /// them: the next update is decoded into the same buffer.
    pub fn recycle(&mut self, mut values: Vec<Value>) {
        if values.capacity() > self.spare.capacity() {
            values.clear();
            self.spare = values;
        }
    }

    /// Sets how many distinct tables the peer may define (a memory bound).
    pub fn with_max_tables(mut self, max_tables: usize) -> Self {
        self.max_tables = max_tables;
        self
    }

    /// The message size limit (the whole message: header, length and body).
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// The peer's definition of its table `table_id`.
    pub fn definition(&self, table_id: u32) -> Option<&TableDefinition> {
        self.tables.get(table_id).map(|t| &t.def)
    }

    /// The data-type bits of `table_id`'s definition that this crate does not know
    /// and skipped (0 when all are known).
    pub fn unknown_data_bits(&self, table_id: u32) -> Option<u64> {
        self.tables.get(table_id).map(|t| t.unknown_bits)
    }

    /// The table the next update belongs to.
    pub fn selected_table(&self) -> Option<u32> {
        self.tables.selected
    }

    /// The last update id received for `table_id` (what to acknowledge).
    pub fn last_update_id(&self, table_id: u32) -> Option<u32> {
        self.tables.get(table_id).map(|t| t.last_update_id)
    }

    /// Decodes one message off the front of `buf`, consuming exactly its bytes.
    /// Returns `Ok(None)` while more bytes are needed; `buf` then holds fewer than
    /// [`Decoder::max_message_len`] bytes.
    ///
    /// # Errors
    /// Any decoding [`WireError`]; all are the peer's fault and end the session
    /// (send [`WireError::reply`] first).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, WireError> {
        match frame::split_frame(buf, self.max_message_len)? {
            Some(frame) => self.decode_frame(frame).map(Some),
            None => Ok(None),
        }
    }

    /// Reads only the table and update id of an update frame, for a receiver that
    /// counts updates without looking at them (a load generator): the decoder's
    /// state moves on as [`Decoder::decode_frame`] would move it, but the key and
    /// values are neither decoded nor checked. Returns `None`, changing nothing, for
    /// any other frame and for an update of a table with dictionary data (its values
    /// fill the dictionary cache): give those to [`Decoder::decode_frame`].
    ///
    /// # Errors
    /// [`WireError::UpdateWithoutTable`], or [`WireError::Truncated`] for an id or
    /// expire cut short; the session must end, as after any decoding error.
    pub fn skip_update(&mut self, frame: &Frame) -> Result<Option<(u32, u32)>, WireError> {
        let kind = match (frame.class, frame.msg_type) {
            (frame::CLASS_STICK_TABLE, frame::STKT_UPDATE) => UpdateKind::Full,
            (frame::CLASS_STICK_TABLE, frame::STKT_INCUPDATE) => UpdateKind::Incremental,
            (frame::CLASS_STICK_TABLE, frame::STKT_UPDATE_TIMED) => UpdateKind::Timed,
            (frame::CLASS_STICK_TABLE, frame::STKT_INCUPDATE_TIMED) => UpdateKind::IncrementalTimed,
            _ => return Ok(None),
        };
        let table_id = self.tables.selected.ok_or(WireError::UpdateWithoutTable)?;
        let table = self
            .tables
            .get_mut(table_id)
            .ok_or(WireError::UnknownTableId { table_id })?;
        if table
            .def
            .data
            .iter()
            .any(|s| s.data_type.storage() == Storage::Dict)
        {
            return Ok(None);
        }
        let fixed = 4 * (usize::from(kind.has_id()) + usize::from(kind.is_timed()));
        if frame.body.len() < fixed {
            return Err(WireError::Truncated {
                field: if kind.has_id() { "update id" } else { "expire" },
            });
        }
        let update_id = match frame.body[..] {
            [a, b, c, d, ..] if kind.has_id() => u32::from_be_bytes([a, b, c, d]),
            // HAProxy's receiver does `last_get++` on a 32-bit counter.
            _ => table.last_update_id.wrapping_add(1),
        };
        table.last_update_id = update_id;
        Ok(Some((table_id, update_id)))
    }

    /// Interprets a frame cut by [`frame::split_frame`], for callers that look at
    /// frames first.
    ///
    /// # Errors
    /// As [`Decoder::decode`].
    pub fn decode_frame(&mut self, frame: Frame) -> Result<Message, WireError> {
        let Frame {
            class,
            msg_type,
            body,
        } = frame;
        if class == frame::CLASS_RESERVED {
            return Err(WireError::ReservedClass { msg_type });
        }
        let mut r = Reader::new(body);
        Ok(match (class, msg_type) {
            (frame::CLASS_CONTROL, frame::CTRL_RESYNC_REQUEST) => Message::ResyncRequest,
            (frame::CLASS_CONTROL, frame::CTRL_RESYNC_FINISHED) => Message::ResyncFinished,
            (frame::CLASS_CONTROL, frame::CTRL_RESYNC_PARTIAL) => Message::ResyncPartial,
            (frame::CLASS_CONTROL, frame::CTRL_RESYNC_CONFIRM) => Message::ResyncConfirm,
            (frame::CLASS_CONTROL, frame::CTRL_HEARTBEAT) => Message::Heartbeat,
            (frame::CLASS_ERROR, frame::ERR_PROTOCOL) => Message::ProtocolError,
            (frame::CLASS_ERROR, frame::ERR_SIZE_LIMIT) => Message::SizeLimit,
            (frame::CLASS_STICK_TABLE, frame::STKT_DEFINE) => self.decode_define(&mut r)?,
            (frame::CLASS_STICK_TABLE, frame::STKT_SWITCH) => {
                let table_id = r.varint_u32("table id")?;
                if self.tables.get(table_id).is_none() {
                    return Err(WireError::UnknownTableId { table_id });
                }
                self.tables.selected = Some(table_id);
                Message::TableSwitch { table_id }
            }
            (frame::CLASS_STICK_TABLE, frame::STKT_ACK) => Message::Ack {
                table_id: r.varint_u32("table id")?,
                update_id: r.u32_be("update id")?,
            },
            (frame::CLASS_STICK_TABLE, frame::STKT_UPDATE) => {
                self.decode_update(&mut r, UpdateKind::Full)?
            }
            (frame::CLASS_STICK_TABLE, frame::STKT_INCUPDATE) => {
                self.decode_update(&mut r, UpdateKind::Incremental)?
            }
            (frame::CLASS_STICK_TABLE, frame::STKT_UPDATE_TIMED) => {
                self.decode_update(&mut r, UpdateKind::Timed)?
            }
            (frame::CLASS_STICK_TABLE, frame::STKT_INCUPDATE_TIMED) => {
                self.decode_update(&mut r, UpdateKind::IncrementalTimed)?
            }
            // Everything else is ignored by HAProxy, body and all (`frame::is_ignored`).
            _ => Message::Ignored { class, msg_type },
        })
    }

    fn decode_define(&mut self, r: &mut Reader) -> Result<Message, WireError> {
        let table_id = r.varint_u32("table id")?;
        let name_len = r.varint("table name length")?;
        // HAProxy requires a non-empty name followed by at least one more byte.
        if name_len == 0 || name_len >= r.remaining() as u64 {
            return Err(WireError::BadTableName);
        }
        let name = r.bytes(name_len, "table name")?;
        let key_type_id = r.varint("key type")?;
        let key_type =
            KeyType::from_id(key_type_id).ok_or(WireError::UnknownKeyType { id: key_type_id })?;
        let key_len = r.varint_u32("key length")?;
        let key_len_ok = match key_type.fixed_len() {
            Some(fixed) => key_len == fixed,
            None => key_len >= 1,
        };
        if !key_len_ok {
            return Err(WireError::BadKeyLength { key_type, key_len });
        }
        let bits = r.varint("data types")?;
        let has_tail = r.remaining() > 0;
        let expire_ms = if has_tail { r.varint_u32("expire")? } else { 0 };
        let mut data = Vec::new();
        for t in DataType::ALL
            .iter()
            .copied()
            .filter(|t| bits & t.bit() != 0)
        {
            let mut spec = DataSpec::plain(t);
            if t.params() != ParamKind::None {
                if !has_tail {
                    if t.is_array() {
                        return Err(WireError::DefinitionParams { data_type: t });
                    }
                } else {
                    let missing = |_| WireError::DefinitionParams { data_type: t };
                    let id = r.varint("data type parameters").map_err(missing)?;
                    if id != u64::from(t.id()) {
                        return Err(WireError::DefinitionParams { data_type: t });
                    }
                    if t.is_array() {
                        spec.nbelem = param_u32(r, t, "array size")?;
                    }
                    if t.storage() == Storage::FreqCtr {
                        spec.period_ms = param_u32(r, t, "period")?;
                    }
                }
            }
            data.push(spec);
        }
        let def = TableDefinition {
            table_id,
            name,
            key_type,
            key_len,
            expire_ms,
            data,
        };
        if self.tables.would_grow(&def) && self.tables.len() >= self.max_tables {
            return Err(WireError::TooManyTables {
                limit: self.max_tables,
            });
        }
        self.tables
            .define(def.clone(), bits & !KNOWN_DATA_BITS, |prev| {
                prev.unwrap_or(0)
            });
        Ok(Message::TableDefinition(def))
    }

    fn decode_update(&mut self, r: &mut Reader, kind: UpdateKind) -> Result<Message, WireError> {
        let table_id = self.tables.selected.ok_or(WireError::UpdateWithoutTable)?;
        // One lookup per update: the same entry is read and then committed to.
        let table = self
            .tables
            .get_mut(table_id)
            .ok_or(WireError::UnknownTableId { table_id })?;
        let def = &table.def;
        let update_id = if kind.has_id() {
            r.u32_be("update id")?
        } else {
            // HAProxy's receiver does `last_get++` on a 32-bit counter.
            table.last_update_id.wrapping_add(1)
        };
        let expire_ms = if kind.is_timed() {
            Some(r.u32_be("expire")?)
        } else {
            None
        };
        let key = decode_key(r, def.key_type, def.key_len)?;
        let mut values = std::mem::take(&mut self.spare);
        values.clear();
        values.reserve(def.data.len());
        let mut dict_fill = None;
        for spec in &def.data {
            values.push(decode_value(r, spec, &self.dict, &mut dict_fill)?);
        }
        // Commit only now that the whole update parsed.
        if let Some((id, name)) = dict_fill {
            self.dict.set(id, name);
        }
        table.last_update_id = update_id;
        Ok(Message::Update(Update {
            kind,
            table_id,
            update_id,
            expire_ms,
            key,
            values,
        }))
    }
}

fn param_u32(r: &mut Reader, t: DataType, field: &'static str) -> Result<u32, WireError> {
    match r.varint(field) {
        Ok(v) => varint::to_u32(v, field),
        Err(WireError::Truncated { .. }) => Err(WireError::DefinitionParams { data_type: t }),
        Err(e) => Err(e),
    }
}

/// Reads a key of a table with this key type and length.
pub(crate) fn decode_key(
    r: &mut Reader,
    key_type: KeyType,
    key_len: u32,
) -> Result<Key, WireError> {
    let bytes = match key_type {
        KeyType::Sint => r.bytes(4, "key")?,
        KeyType::Ipv4 | KeyType::Ipv6 | KeyType::Binary => r.bytes(u64::from(key_len), "key")?,
        KeyType::String => {
            let n = r.varint("key length")?;
            let mut s = r.bytes(n, "key")?;
            // HAProxy stores at most key_len - 1 bytes (room for its NUL).
            s.truncate(key_len.saturating_sub(1) as usize);
            s
        }
    };
    Ok(Key::from_bytes(bytes))
}

fn decode_value(
    r: &mut Reader,
    spec: &DataSpec,
    dict: &RxDict,
    dict_fill: &mut Option<(u8, Bytes)>,
) -> Result<Value, WireError> {
    let t = spec.data_type;
    if t.is_array() {
        // Each element takes at least one byte: never reserve more than the body holds.
        let cap = (spec.nbelem as usize).min(r.remaining());
        return Ok(match t.storage() {
            Storage::FreqCtr => {
                let mut v = Vec::with_capacity(cap);
                for _ in 0..spec.nbelem {
                    v.push(decode_freq(r)?);
                }
                Value::FreqArray(v)
            }
            _ => {
                let mut v = Vec::with_capacity(cap);
                for _ in 0..spec.nbelem {
                    v.push(r.varint_u32("uint value")?);
                }
                Value::UintArray(v)
            }
        });
    }
    Ok(match t.storage() {
        // Sign-extended on the wire; the receiver keeps the low 32 bits.
        Storage::Sint => Value::Sint(r.varint("sint value")? as u32 as i32),
        Storage::Uint => Value::Uint(r.varint_u32("uint value")?),
        Storage::Ull => Value::Ull(r.varint("ull value")?),
        Storage::FreqCtr => Value::Freq(decode_freq(r)?),
        Storage::Dict => Value::Dict(decode_dict(r, dict, dict_fill)?),
    })
}

fn decode_freq(r: &mut Reader) -> Result<FreqCtr, WireError> {
    Ok(FreqCtr {
        // Modular: the sender's clock minus a tick, mod 2^32. Never rejected.
        age: r.varint("freq_ctr age")? as u32,
        curr: r.varint_u32("freq_ctr current")?,
        prev: r.varint_u32("freq_ctr previous")?,
    })
}

fn decode_dict(
    r: &mut Reader,
    dict: &RxDict,
    dict_fill: &mut Option<(u8, Bytes)>,
) -> Result<DictValue, WireError> {
    let len = r.varint("dictionary length")?;
    if len == 0 {
        return Ok(DictValue::Absent);
    }
    let mut d = Reader::new(r.bytes(len, "dictionary value")?);
    let id = d
        .varint("dictionary id")
        .map_err(|_| WireError::BadDictLength)?;
    if id == 0 || id > DICT_SLOTS as u64 {
        return Err(WireError::DictIdOutOfRange { id });
    }
    // 1..=128 fits a byte.
    let id = id as u8;
    if d.remaining() == 0 {
        return dict
            .get(id)
            .cloned()
            .map(DictValue::Name)
            .ok_or(WireError::UnknownDictId { id });
    }
    let strlen = d
        .varint("dictionary string length")
        .map_err(|_| WireError::BadDictLength)?;
    if strlen != d.remaining() as u64 {
        return Err(WireError::BadDictLength);
    }
    let name = d.bytes(strlen, "dictionary string")?;
    *dict_fill = Some((id, name.clone()));
    Ok(DictValue::Name(name))
}
