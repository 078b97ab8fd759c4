//! The transmit side of a session: [`Message`]s in, bytes out.
//!
//! [`Encoder`] remembers what the receiver has been told, so that it can refuse to
//! send what the receiver would reject or misread: the definitions sent (an update
//! is laid out by its table's definition), the table the receiver has selected, the
//! last update id per table (an incremental update must be exactly the next one),
//! and the dictionary transmit cache (round-robin slots; the full form the first
//! time a name goes out, the short form after).
//!
//! Encoding is all or nothing: on error nothing is written and no state changes.
//! Every error here is our own fault ([`crate::Fault::Local`]).

use crate::data::{DataSpec, DictValue, FreqCtr, ParamKind, Storage, Value};
use crate::dict::{TxDict, TxEntry};
use crate::error::WireError;
use crate::frame;
use crate::key::{Key, KeyType};
use crate::message::{Message, TableDefinition, UpdateKind, UpdateRef};
use crate::tables::{TableMap, layout_of};
use crate::varint;
use bytes::{BufMut, Bytes, BytesMut};

/// HAProxy's largest array size (`STKTABLE_MAX_DT_ARRAY_SIZE`).
pub const MAX_ARRAY_LEN: u32 = 100;

/// The transmit state of one session. Create one per session, after the handshake.
#[derive(Debug, Clone)]
pub struct Encoder {
    max_message_len: usize,
    /// Last update id per table; `None` right after a definition, because the
    /// receiver's own counter is then unknown to us (HAProxy keeps it per local
    /// table, across sessions), so the first update after a definition must carry
    /// its id, as HAProxy's own sender does.
    tables: TableMap<Option<u32>>,
    dict: TxDict,
    scratch: BytesMut,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder that refuses messages over 16384 bytes, HAProxy's default
    /// `tune.bufsize`.
    pub fn new() -> Self {
        Encoder::with_max_message_len(frame::DEFAULT_MAX_MESSAGE_LEN)
    }

    /// An encoder with another size limit: the receiver's buffer size.
    pub fn with_max_message_len(max_message_len: usize) -> Self {
        Encoder {
            max_message_len: max_message_len.max(frame::MIN_MAX_MESSAGE_LEN),
            tables: TableMap::default(),
            dict: TxDict::default(),
            scratch: BytesMut::new(),
        }
    }

    /// The size limit.
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// The definition last sent for `table_id`.
    pub fn definition(&self, table_id: u32) -> Option<&TableDefinition> {
        self.tables.get(table_id).map(|t| &t.def)
    }

    /// The table the receiver has selected (last definition or switch sent).
    pub fn selected_table(&self) -> Option<u32> {
        self.tables.selected
    }

    /// The last update id sent for `table_id` since its definition.
    pub fn last_update_id(&self, table_id: u32) -> Option<u32> {
        self.tables.get(table_id).and_then(|t| t.last_update_id)
    }

    /// The most compact update kind that carries `update_id` for `table_id`: an
    /// incremental form when it is exactly the next id, else a form with the id.
    /// `timed` asks for the forms with an expire (never for a downgraded session).
    pub fn update_kind(&self, table_id: u32, update_id: u32, timed: bool) -> UpdateKind {
        let next = self.last_update_id(table_id).map(|l| l.wrapping_add(1));
        match (next == Some(update_id), timed) {
            (true, false) => UpdateKind::Incremental,
            (true, true) => UpdateKind::IncrementalTimed,
            (false, false) => UpdateKind::Full,
            (false, true) => UpdateKind::Timed,
        }
    }

    /// Records that updates of `table_id` up to `last_update_id` went out as bytes
    /// encoded elsewhere (a load generator's pre-encoded stream, written after this
    /// encoder defined the table), so that the next update's kind and id follow them.
    /// The caller vouches for those bytes; this only keeps the session state true.
    ///
    /// # Errors
    /// [`WireError::UndefinedTable`] or [`WireError::TableNotSelected`] (such updates
    /// would have gone to another table), or [`WireError::InvalidDefinition`] for a
    /// table with dictionary data (this encoder's dictionary cache cannot know what
    /// those bytes sent); nothing changes then.
    pub fn record_sent_updates(
        &mut self,
        table_id: u32,
        last_update_id: u32,
    ) -> Result<(), WireError> {
        if self.tables.selected != Some(table_id) {
            return Err(match self.tables.get(table_id) {
                None => WireError::UndefinedTable { table_id },
                Some(_) => WireError::TableNotSelected {
                    table_id,
                    selected: self.tables.selected,
                },
            });
        }
        let table = self
            .tables
            .get_mut(table_id)
            .ok_or(WireError::UndefinedTable { table_id })?;
        if table
            .def
            .data
            .iter()
            .any(|s| s.data_type.storage() == Storage::Dict)
        {
            return Err(invalid(
                &table.def,
                "dictionary data cannot be sent pre-encoded",
            ));
        }
        table.last_update_id = Some(last_update_id);
        Ok(())
    }

    /// Appends the encoding of `msg` to `dst`.
    ///
    /// # Errors
    /// A local-fault [`WireError`] if the message is invalid or does not fit the
    /// session state (see the module documentation); `dst` is then untouched.
    pub fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<(), WireError> {
        use frame::*;
        let (class, msg_type) = match msg {
            Message::ResyncRequest => (CLASS_CONTROL, CTRL_RESYNC_REQUEST),
            Message::ResyncFinished => (CLASS_CONTROL, CTRL_RESYNC_FINISHED),
            Message::ResyncPartial => (CLASS_CONTROL, CTRL_RESYNC_PARTIAL),
            Message::ResyncConfirm => (CLASS_CONTROL, CTRL_RESYNC_CONFIRM),
            Message::Heartbeat => (CLASS_CONTROL, CTRL_HEARTBEAT),
            Message::ProtocolError => (CLASS_ERROR, ERR_PROTOCOL),
            Message::SizeLimit => (CLASS_ERROR, ERR_SIZE_LIMIT),
            Message::Ignored { class, msg_type } => {
                if !is_ignored(*class, *msg_type) {
                    return Err(WireError::NotIgnorable {
                        class: *class,
                        msg_type: *msg_type,
                    });
                }
                (*class, *msg_type)
            }
            Message::TableDefinition(def) => return self.encode_define(def, dst),
            Message::TableSwitch { table_id } => {
                if self.tables.get(*table_id).is_none() {
                    return Err(WireError::UndefinedTable {
                        table_id: *table_id,
                    });
                }
                let mut body = BytesMut::new();
                varint::encode(u64::from(*table_id), &mut body);
                self.put(dst, STKT_SWITCH, &body)?;
                self.tables.selected = Some(*table_id);
                return Ok(());
            }
            Message::Ack {
                table_id,
                update_id,
            } => {
                let mut body = BytesMut::new();
                varint::encode(u64::from(*table_id), &mut body);
                body.put_u32(*update_id);
                return self.put(dst, STKT_ACK, &body);
            }
            Message::Update(u) => return self.encode_update(u.as_ref(), dst),
        };
        put_frame(dst, class, msg_type, &[]);
        Ok(())
    }

    /// Writes a stick-table frame after checking its size.
    fn put(&self, dst: &mut BytesMut, msg_type: u8, body: &[u8]) -> Result<(), WireError> {
        let len = frame::frame_len(msg_type, body.len());
        if len > self.max_message_len {
            return Err(WireError::Oversized {
                len,
                limit: self.max_message_len,
            });
        }
        frame::put_frame(dst, frame::CLASS_STICK_TABLE, msg_type, body);
        Ok(())
    }

    fn encode_define(
        &mut self,
        def: &TableDefinition,
        dst: &mut BytesMut,
    ) -> Result<(), WireError> {
        check_definition(def)?;
        let mut body = std::mem::take(&mut self.scratch);
        body.clear();
        varint::encode(u64::from(def.table_id), &mut body);
        varint::encode(def.name.len() as u64, &mut body);
        body.put_slice(&def.name);
        varint::encode(u64::from(def.key_type.id()), &mut body);
        varint::encode(u64::from(def.key_len), &mut body);
        varint::encode(def.bitfield(), &mut body);
        // Always sent, as HAProxy does: it announces the parameter tail.
        varint::encode(u64::from(def.expire_ms), &mut body);
        for spec in &def.data {
            let t = spec.data_type;
            if t.params() != ParamKind::None {
                varint::encode(u64::from(t.id()), &mut body);
            }
            if t.is_array() {
                varint::encode(u64::from(spec.nbelem), &mut body);
            }
            if t.storage() == Storage::FreqCtr {
                varint::encode(u64::from(spec.period_ms), &mut body);
            }
        }
        let r = self.put(dst, frame::STKT_DEFINE, &body);
        self.scratch = body;
        r?;
        self.tables.define(def.clone(), 0, |_| None);
        Ok(())
    }

    /// Appends an update message whose key and values are borrowed: the same bytes,
    /// checks and state changes as [`Encoder::encode`] of the equivalent
    /// [`Message::Update`](crate::Message::Update).
    ///
    /// # Errors
    /// As [`Encoder::encode`]; `dst` is then untouched.
    pub fn encode_update(&mut self, u: UpdateRef<'_>, dst: &mut BytesMut) -> Result<(), WireError> {
        if u.kind.is_timed() != u.expire_ms.is_some() {
            return Err(WireError::ExpireMismatch { kind: u.kind });
        }
        let table = self
            .tables
            .get(u.table_id)
            .ok_or(WireError::UndefinedTable {
                table_id: u.table_id,
            })?;
        if self.tables.selected != Some(u.table_id) {
            return Err(WireError::TableNotSelected {
                table_id: u.table_id,
                selected: self.tables.selected,
            });
        }
        if !u.kind.has_id() {
            let expected = table.last_update_id.map(|l| l.wrapping_add(1));
            if expected != Some(u.update_id) {
                return Err(WireError::IncrementalIdMismatch {
                    expected,
                    got: u.update_id,
                });
            }
        }
        let def = &table.def;
        check_key(u.key, def.key_type, def.key_len)?;
        check_values(u.values, &def.data)?;

        let mut body = std::mem::take(&mut self.scratch);
        body.clear();
        if u.kind.has_id() {
            body.put_u32(u.update_id);
        }
        if let Some(expire) = u.expire_ms {
            body.put_u32(expire);
        }
        put_key(&mut body, u.key, def.key_type, def.key_len);
        let mut dict_insert = None;
        for v in u.values {
            put_value(&mut body, v, &self.dict, &mut dict_insert);
        }
        let msg_type = match u.kind {
            UpdateKind::Full => frame::STKT_UPDATE,
            UpdateKind::Incremental => frame::STKT_INCUPDATE,
            UpdateKind::Timed => frame::STKT_UPDATE_TIMED,
            UpdateKind::IncrementalTimed => frame::STKT_INCUPDATE_TIMED,
        };
        let r = self.put(dst, msg_type, &body);
        self.scratch = body;
        r?;
        // Commit: the message is out.
        if let Some(name) = dict_insert {
            self.dict.insert(&name);
        }
        if let Some(t) = self.tables.get_mut(u.table_id) {
            t.last_update_id = Some(u.update_id);
        }
        Ok(())
    }
}

/// An update's key and values encoded once, to be framed by every session that
/// sends that entry ([`Encoder::encode_update_shared`]): a change that goes to a
/// hundred peers is encoded once, not a hundred times.
///
/// It fits any session whose definition of the table has the same key type, key
/// length and data types (checked when framing). Tables with dictionary values
/// (`server_key`) cannot share an encoding: a dictionary entry is sent in full or by
/// id depending on each session's cache, so [`SharedUpdate::encode`] declines them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedUpdate {
    /// The whole incremental frame (the usual form: a session sends its updates
    /// with consecutive ids), copied as it is; its key and values start at
    /// `body_at`, for the form with an id.
    frame: Bytes,
    body_at: usize,
    layout: u64,
}

/// What a table's shared encodings are checked against: computed once per table
/// ([`SharedLayout::of`]), so that encoding a change does not walk the definition
/// again. Tables with dictionary values have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedLayout(u64);

impl SharedLayout {
    /// The layout of a table defined as `def`; `None` if it has dictionary values
    /// (see [`SharedUpdate`]).
    pub fn of(def: &TableDefinition) -> Option<SharedLayout> {
        let dict = def
            .data
            .iter()
            .any(|d| d.data_type.storage() == Storage::Dict);
        (!dict).then(|| SharedLayout(layout_of(def)))
    }
}

impl SharedUpdate {
    /// Encodes `key` and `values` for a table defined as `def` (its table id does not
    /// matter). `Ok(None)` for a table with dictionary values.
    ///
    /// # Errors
    /// The key or the values do not match the definition.
    pub fn encode(
        def: &TableDefinition,
        key: &Key,
        values: &[Value],
    ) -> Result<Option<SharedUpdate>, WireError> {
        match SharedLayout::of(def) {
            Some(layout) => SharedUpdate::encode_with(layout, def, key, values).map(Some),
            None => Ok(None),
        }
    }

    /// [`SharedUpdate::encode`] for a table whose layout the caller keeps.
    ///
    /// # Errors
    /// The key or the values do not match the definition.
    pub fn encode_with(
        layout: SharedLayout,
        def: &TableDefinition,
        key: &Key,
        values: &[Value],
    ) -> Result<SharedUpdate, WireError> {
        check_key(key, def.key_type, def.key_len)?;
        check_values(values, &def.data)?;
        // The body goes to this thread's scratch buffer first (its length prefixes
        // the frame), then once into a frame of its size: one allocation.
        thread_local! {
            static BODY: std::cell::RefCell<BytesMut> = std::cell::RefCell::default();
        }
        let encode = |body: &mut BytesMut| {
            body.clear();
            put_key(body, key, def.key_type, def.key_len);
            let no_dict = TxDict::default();
            let mut unused = None;
            for v in values {
                put_value(body, v, &no_dict, &mut unused);
            }
            // What `put_frame` reserves: the longest length prefix.
            let mut frame = BytesMut::with_capacity(2 + varint::MAX_LEN + body.len());
            frame::put_frame(
                &mut frame,
                frame::CLASS_STICK_TABLE,
                frame::STKT_INCUPDATE,
                body,
            );
            SharedUpdate {
                body_at: frame.len() - body.len(),
                frame: frame.freeze(),
                layout: layout.0,
            }
        };
        Ok(BODY.with(|cell| match cell.try_borrow_mut() {
            Ok(mut body) => encode(&mut body),
            Err(_) => encode(&mut BytesMut::new()),
        }))
    }

    /// The encoded key and values.
    pub fn as_bytes(&self) -> &[u8] {
        &self.frame[self.body_at..]
    }

    /// Whether it fits a table whose definition has this layout fingerprint.
    fn fits(&self, layout: u64) -> bool {
        self.layout == layout
    }
}

impl Encoder {
    /// Appends an untimed update of the selected table `table_id` with id `update_id`
    /// whose key and values were encoded once ([`SharedUpdate`]): the same message as
    /// [`Encoder::encode`] of the equivalent [`Update`], in its most compact form.
    ///
    /// # Errors
    /// The table is not defined or not selected, or its definition does not fit the
    /// shared encoding; `dst` is then untouched.
    pub fn encode_update_shared(
        &mut self,
        table_id: u32,
        update_id: u32,
        shared: &SharedUpdate,
        dst: &mut BytesMut,
    ) -> Result<(), WireError> {
        let max = self.max_message_len;
        let selected = self.tables.selected;
        let table = self
            .tables
            .get_mut(table_id)
            .ok_or(WireError::UndefinedTable { table_id })?;
        if selected != Some(table_id) {
            return Err(WireError::TableNotSelected { table_id, selected });
        }
        if !shared.fits(table.layout) {
            return Err(WireError::SharedLayout { table_id });
        }
        let incremental = table.last_update_id.map(|l| l.wrapping_add(1)) == Some(update_id);
        let body = shared.as_bytes();
        let len = if incremental {
            shared.frame.len()
        } else {
            frame::frame_len(frame::STKT_UPDATE, 4 + body.len())
        };
        if len > max {
            return Err(WireError::Oversized { len, limit: max });
        }
        if incremental {
            dst.extend_from_slice(&shared.frame);
        } else {
            dst.reserve(len);
            dst.put_slice(&[frame::CLASS_STICK_TABLE, frame::STKT_UPDATE]);
            varint::encode(4 + body.len() as u64, dst);
            dst.put_u32(update_id);
            dst.put_slice(body);
        }
        table.last_update_id = Some(update_id);
        Ok(())
    }
}

fn invalid(def: &TableDefinition, reason: &'static str) -> WireError {
    WireError::InvalidDefinition {
        table_id: def.table_id,
        reason,
    }
}

/// Checks a definition against what a receiver can take.
fn check_definition(def: &TableDefinition) -> Result<(), WireError> {
    if def.table_id == 0 {
        // HAProxy uses 0 as "no id": switches and acks would be ambiguous.
        return Err(invalid(def, "table id 0"));
    }
    if def.name.is_empty() {
        return Err(invalid(def, "empty name"));
    }
    let key_len_ok = match def.key_type.fixed_len() {
        Some(fixed) => def.key_len == fixed,
        None => def.key_len >= 1,
    };
    if !key_len_ok {
        return Err(invalid(def, "key length does not fit the key type"));
    }
    for pair in def.data.windows(2) {
        if pair[0].data_type >= pair[1].data_type {
            return Err(invalid(def, "data types not in strictly ascending order"));
        }
    }
    for spec in &def.data {
        let t = spec.data_type;
        if t.is_array() {
            if spec.nbelem == 0 || spec.nbelem > MAX_ARRAY_LEN {
                return Err(invalid(def, "array size outside 1..=100"));
            }
        } else if spec.nbelem != 0 {
            return Err(invalid(def, "array size on a non-array type"));
        }
        if t.storage() != Storage::FreqCtr && spec.period_ms != 0 {
            return Err(invalid(def, "period on a type that is not a rate"));
        }
    }
    Ok(())
}

fn check_key(key: &Key, key_type: KeyType, key_len: u32) -> Result<(), WireError> {
    let len = key.as_bytes().len();
    let ok = match key_type {
        KeyType::Sint | KeyType::Ipv4 | KeyType::Ipv6 => len as u64 == u64::from(key_len),
        // HAProxy keeps key_len - 1 bytes and a NUL: a longer key would be cut.
        KeyType::String => (len as u64) < u64::from(key_len),
        // Shorter binary keys are zero-padded to the key length.
        KeyType::Binary => len as u64 <= u64::from(key_len),
    };
    if ok {
        Ok(())
    } else {
        Err(WireError::InvalidKey {
            key_type,
            key_len,
            len,
        })
    }
}

fn check_values(values: &[Value], data: &[DataSpec]) -> Result<(), WireError> {
    if values.len() != data.len() {
        return Err(WireError::ValueCount {
            expected: data.len(),
            got: values.len(),
        });
    }
    for (index, (v, spec)) in values.iter().zip(data).enumerate() {
        let t = spec.data_type;
        let n = spec.nbelem as usize;
        let ok = match (t.is_array(), t.storage(), v) {
            (true, Storage::FreqCtr, Value::FreqArray(a)) => a.len() == n,
            (true, Storage::Uint, Value::UintArray(a)) => a.len() == n,
            (false, Storage::Sint, Value::Sint(_))
            | (false, Storage::Uint, Value::Uint(_))
            | (false, Storage::Ull, Value::Ull(_))
            | (false, Storage::FreqCtr, Value::Freq(_))
            | (false, Storage::Dict, Value::Dict(_)) => true,
            _ => false,
        };
        if !ok {
            return Err(WireError::ValueShape {
                index,
                data_type: t,
            });
        }
    }
    Ok(())
}

fn put_key(body: &mut BytesMut, key: &Key, key_type: KeyType, key_len: u32) {
    let b = key.as_bytes();
    match key_type {
        KeyType::String => {
            varint::encode(b.len() as u64, body);
            body.put_slice(b);
        }
        KeyType::Binary => {
            body.put_slice(b);
            body.put_bytes(0, (key_len as usize).saturating_sub(b.len()));
        }
        KeyType::Sint | KeyType::Ipv4 | KeyType::Ipv6 => body.put_slice(b),
    }
}

fn put_freq(body: &mut BytesMut, f: &FreqCtr) {
    varint::encode(u64::from(f.age), body);
    varint::encode(u64::from(f.curr), body);
    varint::encode(u64::from(f.prev), body);
}

/// Writes one value already checked against its data type. A dictionary name is
/// looked up without changing the cache; the insertion is left to the caller.
fn put_value(
    body: &mut BytesMut,
    v: &Value,
    dict: &TxDict,
    dict_insert: &mut Option<bytes::Bytes>,
) {
    match v {
        // Sign-extend to 64 bits, as HAProxy does: -1 takes 10 bytes.
        Value::Sint(i) => varint::encode(i64::from(*i) as u64, body),
        Value::Uint(u) => varint::encode(u64::from(*u), body),
        Value::Ull(u) => varint::encode(*u, body),
        Value::Freq(f) => put_freq(body, f),
        Value::UintArray(a) => a.iter().for_each(|u| varint::encode(u64::from(*u), body)),
        Value::FreqArray(a) => a.iter().for_each(|f| put_freq(body, f)),
        Value::Dict(DictValue::Absent) => varint::encode(0, body),
        Value::Dict(DictValue::Name(name)) => match dict.peek(name) {
            TxEntry::Short(id) => {
                varint::encode(1, body);
                varint::encode(u64::from(id), body);
            }
            TxEntry::Full(id) => {
                let inner = varint::encoded_len(u64::from(id))
                    + varint::encoded_len(name.len() as u64)
                    + name.len();
                varint::encode(inner as u64, body);
                varint::encode(u64::from(id), body);
                varint::encode(name.len() as u64, body);
                body.put_slice(name);
                *dict_insert = Some(name.clone());
            }
        },
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;
    use crate::data::{DataType, FreqCtr};
    use crate::decode::Decoder;
    use crate::message::Update;

    fn def(data: Vec<DataSpec>) -> TableDefinition {
        TableDefinition {
            table_id: 3,
            name: Bytes::from_static(b"/t"),
            key_type: KeyType::Ipv4,
            key_len: 4,
            expire_ms: 0,
            data,
        }
    }

    fn rate() -> DataSpec {
        DataSpec {
            data_type: DataType::HttpReqRate,
            period_ms: 10_000,
            nbelem: 0,
        }
    }

    #[test]
    fn a_shared_update_frames_exactly_as_the_update_would() {
        let d = def(vec![DataSpec::plain(DataType::HttpReqCnt), rate()]);
        let key = Key::from_ipv4(std::net::Ipv4Addr::new(10, 0, 0, 1));
        let values = vec![
            Value::Uint(300),
            Value::Freq(FreqCtr {
                age: 5,
                curr: 7,
                prev: 9,
            }),
        ];
        let shared = SharedUpdate::encode(&d, &key, &values).unwrap().unwrap();
        for ids in [[5u32, 6], [1, 9]] {
            let (mut a, mut b) = (Encoder::new(), Encoder::new());
            let (mut wa, mut wb) = (BytesMut::new(), BytesMut::new());
            a.encode(&Message::TableDefinition(d.clone()), &mut wa)
                .unwrap();
            b.encode(&Message::TableDefinition(d.clone()), &mut wb)
                .unwrap();
            for id in ids {
                let kind = a.update_kind(3, id, false);
                let u = Update {
                    kind,
                    table_id: 3,
                    update_id: id,
                    expire_ms: None,
                    key: key.clone(),
                    values: values.clone(),
                };
                a.encode(&Message::Update(u), &mut wa).unwrap();
                b.encode_update_shared(3, id, &shared, &mut wb).unwrap();
            }
            assert_eq!(wa, wb);
            let mut dec = Decoder::new();
            let mut n = 0;
            while let Some(m) = dec.decode(&mut wb).unwrap() {
                if let Message::Update(u) = m {
                    assert_eq!(
                        (u.key.clone(), u.values.clone()),
                        (key.clone(), values.clone())
                    );
                    n += 1;
                }
            }
            assert_eq!(n, 2);
        }
    }

    #[test]
    fn the_decoder_decodes_into_a_recycled_values_buffer() {
        let d = def(vec![DataSpec::plain(DataType::HttpReqCnt), rate()]);
        let mut e = Encoder::new();
        let mut w = BytesMut::new();
        e.encode(&Message::TableDefinition(d.clone()), &mut w)
            .unwrap();
        for (id, n) in [(1u32, 10u32), (2, 20)] {
            let u = Update {
                kind: e.update_kind(3, id, false),
                table_id: 3,
                update_id: id,
                expire_ms: None,
                key: Key::from_u32(n),
                values: vec![Value::Uint(n), Value::Freq(FreqCtr::default())],
            };
            e.encode(&Message::Update(u), &mut w).unwrap();
        }
        let mut dec = Decoder::new();
        let mut next_update = |dec: &mut Decoder| loop {
            if let Some(Message::Update(u)) = dec.decode(&mut w).unwrap() {
                return u;
            }
        };
        let first = next_update(&mut dec);
        let buffer = first.values.as_ptr();
        dec.recycle(first.values);
        let second = next_update(&mut dec);
        assert_eq!(second.values.as_ptr(), buffer);
        assert_eq!(second.values[0], Value::Uint(20));
        assert_eq!(second.values.len(), 2);
    }

    #[test]
    fn shared_updates_refuse_what_they_do_not_fit() {
        let d = def(vec![DataSpec::plain(DataType::HttpReqCnt)]);
        let key = Key::from_ipv4(std::net::Ipv4Addr::new(10, 0, 0, 1));
        let shared = SharedUpdate::encode(&d, &key, &[Value::Uint(1)])
            .unwrap()
            .unwrap();
        let mut e = Encoder::new();
        let mut w = BytesMut::new();
        // Not defined, then defined with other data types.
        assert!(e.encode_update_shared(3, 1, &shared, &mut w).is_err());
        let other = def(vec![DataSpec::plain(DataType::Gpc0)]);
        e.encode(&Message::TableDefinition(other), &mut w).unwrap();
        let before = w.len();
        assert!(matches!(
            e.encode_update_shared(3, 1, &shared, &mut w),
            Err(WireError::SharedLayout { table_id: 3 })
        ));
        assert_eq!(w.len(), before);
        // Dictionary values cannot be shared; bad values are refused.
        let dict = def(vec![DataSpec::plain(DataType::ServerKey)]);
        let v = [Value::Dict(crate::data::DictValue::Absent)];
        assert_eq!(SharedUpdate::encode(&dict, &key, &v).unwrap(), None);
        assert_eq!(SharedLayout::of(&dict), None);
        assert!(SharedUpdate::encode(&d, &key, &[]).is_err());
        // A layout kept by the caller gives the same encoding, and tells tables
        // apart by what the encoding depends on, not by name or id.
        let layout = SharedLayout::of(&d).unwrap();
        let again = SharedUpdate::encode_with(layout, &d, &key, &[Value::Uint(1)]).unwrap();
        assert_eq!(again, shared);
        let renamed = TableDefinition {
            table_id: 9,
            name: Bytes::from_static(b"/other"),
            ..d.clone()
        };
        assert_eq!(SharedLayout::of(&renamed), Some(layout));
        let other = def(vec![DataSpec::plain(DataType::Gpc0)]);
        assert_ne!(SharedLayout::of(&other), Some(layout));
    }
}

#[cfg(test)]
mod examples;
