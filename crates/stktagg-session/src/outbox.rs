//! Sending entries: the caller's tables mapped to our table ids on the wire, the
//! definition sent before a table's first update and whenever the selected table
//! changes, update ids, and the choice of timed or untimed forms.
//!
//! The caller names its tables with [`TableKey`]s of its own choosing and hands a
//! definition only when the session needs one; the session owns every id that goes on
//! the wire.

use bytes::BytesMut;
use stktagg_wire::frame;

/// Looked up for every update sent (keys: table keys and ids).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use stktagg_wire::{
    Encoder, Key, Message, SharedUpdate, TableDefinition, UpdateRef, Value, WireError,
};

/// The caller's name for a table it sends on a session (any number it likes: a store
/// table id, a teach-back table's index...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableKey(pub u64);

/// Which part of the outgoing stream an entry belongs to: the engine keeps them in
/// order (teach-back, then the lesson, then live changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The peer's own entries taught back to it.
    TeachBack,
    /// A full resync we teach.
    Lesson,
    /// Changes as they happen.
    Live,
}

/// Whether a producer has more to send in its phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More entries remain: call again when there is room.
    More,
    /// Nothing more in this phase for now.
    Done,
}

/// Where the entries a session sends come from. The session calls it from
/// [`crate::PeerSession::poll_transmit`] whenever there is room in the write buffer,
/// in the order of a lesson: [`Feed::teach_back`] and [`Feed::lesson`] only while
/// the peer's full resync is being taught, [`Feed::live`] otherwise. Each call should
/// send a batch (a few hundred entries at most) and return.
pub trait Feed {
    /// Sends some of the peer's own entries back to it.
    fn teach_back(&mut self, out: &mut Outbox<'_>) -> Progress {
        let _ = out;
        Progress::Done
    }

    /// Sends some entries of the full resync the peer asked for.
    fn lesson(&mut self, out: &mut Outbox<'_>) -> Progress {
        let _ = out;
        Progress::Done
    }

    /// Whether the lesson just sent was complete: the session then ends it with
    /// RESYNC FINISHED, else with RESYNC PARTIAL.
    fn lesson_complete(&self) -> bool {
        true
    }

    /// Sends some live changes.
    fn live(&mut self, out: &mut Outbox<'_>) -> Progress {
        let _ = out;
        Progress::Done
    }
}

/// A feed with nothing to send: every lesson is empty and FINISHED.
#[derive(Debug, Clone, Copy, Default)]
pub struct NothingToSend;

impl Feed for NothingToSend {}

/// The transmit state of an established session.
#[derive(Debug)]
pub(crate) struct Tx {
    pub(crate) encoder: Encoder,
    /// Our table id per caller table, with the last update id sent.
    ids: TableIds,
    next_id: u32,
    /// The peer announced version 2.0: never send it timed updates.
    downgraded: bool,
    /// Teach-back tables (our id) with the last update id sent and not yet acked.
    pub(crate) taught_unacked: HashMap<u32, u32>,
    /// Updates encoded, all phases.
    pub(crate) updates_sent: u64,
}

impl Tx {
    pub(crate) fn new(max_message_len: usize, downgraded: bool) -> Tx {
        Tx {
            encoder: Encoder::with_max_message_len(max_message_len),
            ids: TableIds::default(),
            next_id: 1,
            downgraded,
            taught_unacked: HashMap::default(),
            updates_sent: 0,
        }
    }

    /// Encodes a message of ours. Our own messages always encode; a failure is a bug
    /// in the caller's values, reported to it.
    pub(crate) fn push(&mut self, msg: &Message, buf: &mut BytesMut) -> Result<(), WireError> {
        self.encoder.encode(msg, buf)
    }
}

/// Our table id and the last update id sent, per caller table. Looked up for every
/// update sent, and consecutive updates are mostly of one table: the last one found
/// is tried first, before the index.
#[derive(Debug, Default)]
struct TableIds {
    /// `(caller's table, our table id, last update id sent)`, never removed.
    entries: Vec<(TableKey, u32, u32)>,
    index: HashMap<TableKey, usize>,
    last_found: usize,
}

impl TableIds {
    fn find(&mut self, table: TableKey) -> Option<usize> {
        if self
            .entries
            .get(self.last_found)
            .is_some_and(|e| e.0 == table)
        {
            return Some(self.last_found);
        }
        let i = *self.index.get(&table)?;
        self.last_found = i;
        Some(i)
    }

    /// Our table id and the last update id sent.
    fn get(&mut self, table: TableKey) -> Option<(u32, u32)> {
        let i = self.find(table)?;
        self.entries.get(i).map(|e| (e.1, e.2))
    }

    fn set_last(&mut self, table: TableKey, last: u32) {
        if let Some(e) = self.find(table).and_then(|i| self.entries.get_mut(i)) {
            e.2 = last;
        }
    }

    fn insert(&mut self, table: TableKey, id: u32) {
        self.index.insert(table, self.entries.len());
        self.last_found = self.entries.len();
        self.entries.push((table, id, 0));
    }
}

/// The write side handed to a [`Feed`]: it frames entries for this session.
#[derive(Debug)]
pub struct Outbox<'a> {
    pub(crate) tx: &'a mut Tx,
    pub(crate) buf: &'a mut BytesMut,
    pub(crate) phase: Phase,
    pub(crate) high_water: usize,
}

impl Outbox<'_> {
    /// Whether the write buffer is above its high-water mark (stop producing).
    pub fn is_full(&self) -> bool {
        self.buf.len() >= self.high_water
    }

    /// The phase this entry belongs to.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Sends one entry of `table`. `definition` is called only when the peer must be
    /// (re)told the table's definition; its `table_id` is overwritten with ours.
    /// `expire_ms` is the entry's remaining lifetime: it is sent (a timed update)
    /// only if the table has an expiry and the peer speaks 2.1.
    ///
    /// # Errors
    /// The encoder's refusal of values that do not match the definition: the entry
    /// is not sent and the session stays consistent.
    pub fn send(
        &mut self,
        table: TableKey,
        definition: impl FnOnce() -> Option<TableDefinition>,
        key: &Key,
        values: &[Value],
        expire_ms: Option<u32>,
    ) -> Result<bool, WireError> {
        let Some((table_id, update_id)) = self.select(table, definition)? else {
            return Ok(false);
        };
        let has_expiry = self
            .tx
            .encoder
            .definition(table_id)
            .is_some_and(|d| d.expire_ms > 0);
        let timed = !self.tx.downgraded && has_expiry && expire_ms.is_some();
        let kind = self.tx.encoder.update_kind(table_id, update_id, timed);
        let update = UpdateRef {
            kind,
            table_id,
            update_id,
            expire_ms: if timed { expire_ms } else { None },
            key,
            values,
        };
        self.tx.encoder.encode_update(update, self.buf)?;
        // Only now is the update id used.
        self.tx.ids.set_last(table, update_id);
        if self.phase == Phase::TeachBack {
            self.tx.taught_unacked.insert(table_id, update_id);
        }
        self.tx.updates_sent += 1;
        Ok(true)
    }

    /// Sends one untimed entry of `table` whose key and values were encoded once for
    /// every session that sends it (see [`stktagg_wire::SharedUpdate`]); otherwise as
    /// [`Outbox::send`].
    ///
    /// # Errors
    /// The shared encoding does not fit this session's definition of the table.
    pub fn send_shared(
        &mut self,
        table: TableKey,
        definition: impl FnOnce() -> Option<TableDefinition>,
        shared: &SharedUpdate,
    ) -> Result<bool, WireError> {
        let Some((table_id, update_id)) = self.select(table, definition)? else {
            return Ok(false);
        };
        self.tx
            .encoder
            .encode_update_shared(table_id, update_id, shared, self.buf)?;
        self.tx.ids.set_last(table, update_id);
        if self.phase == Phase::TeachBack {
            self.tx.taught_unacked.insert(table_id, update_id);
        }
        self.tx.updates_sent += 1;
        Ok(true)
    }

    /// Sends a run of update messages of `table` that the caller encoded itself (a
    /// load generator's stream, built once so that sending it costs no encoding), as
    /// [`Outbox::send`] would have sent them one by one: `definition` is called when
    /// the peer must be (re)told the table's definition, and the session's update ids
    /// continue from the run's last one.
    ///
    /// `updates` holds whole update messages (any of the four forms) laid out by
    /// `definition()`, without dictionary values, the first one with update id
    /// `first_update_id`. Update messages do not name their table, so the run fits
    /// whichever id the session gives the table. The session reads only the frame
    /// headers and the update ids written out: it checks that every message is an
    /// update within the size limit, that no timed form goes to a peer that speaks
    /// 2.0, and that the first update has `first_update_id` (an incremental first
    /// update must be exactly the next id, so right after a definition the first
    /// update must carry its id, as the first of a stream built from update 1 does).
    /// Keys and values are the caller's word.
    ///
    /// Returns `Ok(false)` when `definition` gave none (nothing sent).
    ///
    /// # Errors
    /// [`PreencodedError`]; no update is sent then (the table's definition may have
    /// been, which leaves the session consistent).
    pub fn send_preencoded(
        &mut self,
        table: TableKey,
        definition: impl FnOnce() -> Option<TableDefinition>,
        updates: &[u8],
        first_update_id: u32,
    ) -> Result<bool, PreencodedError> {
        if updates.is_empty() {
            return Ok(true);
        }
        let limit = self.tx.encoder.max_message_len();
        let run = scan_updates(updates, limit, self.tx.downgraded, first_update_id)?;
        // The id the first update takes, checked before anything is written.
        let ours = self.tx.ids.get(table).map(|(id, _)| id);
        let first = match run.first_id {
            Some(id) => Some(id),
            None => ours
                .filter(|&id| self.tx.encoder.selected_table() == Some(id))
                .and_then(|id| self.tx.encoder.last_update_id(id))
                .map(|last| last.wrapping_add(1)),
        };
        if first != Some(first_update_id) {
            return Err(PreencodedError::Wire(WireError::IncrementalIdMismatch {
                expected: first,
                got: first_update_id,
            }));
        }
        let Some((table_id, _)) = self.select(table, definition)? else {
            return Ok(false);
        };
        let last = run.last_id;
        self.tx.encoder.record_sent_updates(table_id, last)?;
        self.buf.extend_from_slice(updates);
        self.tx.ids.set_last(table, last);
        if self.phase == Phase::TeachBack {
            self.tx.taught_unacked.insert(table_id, last);
        }
        self.tx.updates_sent += run.count;
        Ok(true)
    }

    /// Selects `table` on the wire, defining it first when needed, and returns our
    /// table id and the update id the next update takes.
    fn select(
        &mut self,
        table: TableKey,
        definition: impl FnOnce() -> Option<TableDefinition>,
    ) -> Result<Option<(u32, u32)>, WireError> {
        let (id, last, fresh) = match self.tx.ids.get(table) {
            Some((id, last)) => (id, last, false),
            None => (self.tx.next_id, 0, true),
        };
        if fresh || self.tx.encoder.selected_table() != Some(id) {
            // HAProxy re-sends a full definition to change tables, and so do we.
            let Some(def) = definition() else {
                return Ok(None);
            };
            let def = TableDefinition {
                table_id: id,
                ..def
            };
            self.tx.push(&Message::TableDefinition(def), self.buf)?;
            if fresh {
                self.tx.next_id += 1;
                self.tx.ids.insert(table, id);
            }
        }
        Ok(Some((id, last.wrapping_add(1))))
    }
}

/// Why [`Outbox::send_preencoded`] refused a run.
#[derive(Debug, thiserror::Error)]
pub enum PreencodedError {
    /// The bytes at `offset` are not a whole update message (another message, or a
    /// message cut short).
    #[error("pre-encoded run: no whole update message at byte {offset}")]
    NotAnUpdate {
        /// Where the offending message starts in the run.
        offset: usize,
    },
    /// A message over the session's size limit.
    #[error(
        "pre-encoded run: message of {len} bytes at byte {offset} exceeds the limit of {limit}"
    )]
    Oversized {
        /// Where the message starts in the run.
        offset: usize,
        /// Its size.
        len: u64,
        /// The session's limit.
        limit: usize,
    },
    /// A timed update for a peer that speaks 2.0 (it must get no timed updates).
    #[error("pre-encoded run: timed update at byte {offset} for a peer that speaks 2.0")]
    TimedToDowngraded {
        /// Where the message starts in the run.
        offset: usize,
    },
    /// The definition could not be encoded, the first update is not the one the
    /// caller announced or not the next one, or the table has dictionary data.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// What the frame headers of a pre-encoded run say.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    /// Messages.
    count: u64,
    /// The id the first message carries, if it carries one.
    first_id: Option<u32>,
    /// The id of the last message (an incremental one follows the one before it;
    /// the first, if incremental, is taken to be `first_update_id`).
    last_id: u32,
}

/// Walks the frames of a pre-encoded run: a few byte reads per message, no key or
/// value decoding, so that a generator's send path stays a copy.
fn scan_updates(
    bytes: &[u8],
    limit: usize,
    downgraded: bool,
    first_update_id: u32,
) -> Result<Run, PreencodedError> {
    let mut run = Run {
        count: 0,
        first_id: None,
        last_id: first_update_id.wrapping_sub(1),
    };
    let mut at = 0;
    while at < bytes.len() {
        let offset = at;
        let not_update = PreencodedError::NotAnUpdate { offset };
        let (class, msg_type) = match bytes[at..] {
            [c, t, ..] => (c, t),
            _ => return Err(not_update),
        };
        let (has_id, timed) = match (class, msg_type) {
            (frame::CLASS_STICK_TABLE, frame::STKT_UPDATE) => (true, false),
            (frame::CLASS_STICK_TABLE, frame::STKT_INCUPDATE) => (false, false),
            (frame::CLASS_STICK_TABLE, frame::STKT_UPDATE_TIMED) => (true, true),
            (frame::CLASS_STICK_TABLE, frame::STKT_INCUPDATE_TIMED) => (false, true),
            _ => return Err(not_update),
        };
        if timed && downgraded {
            return Err(PreencodedError::TimedToDowngraded { offset });
        }
        let len_at = at + 2;
        let len_end = bytes.len().min(len_at + frame::MAX_LENGTH_LEN);
        let Ok(Some((body_len, len_len))) = stktagg_wire::varint::decode(&bytes[len_at..len_end])
        else {
            return Err(not_update);
        };
        let total = 2 + len_len as u64 + body_len;
        if total > limit as u64 {
            return Err(PreencodedError::Oversized {
                offset,
                len: total,
                limit,
            });
        }
        // `total <= limit`, so it fits a usize.
        let body = len_at + len_len;
        let end = at + total as usize;
        if end > bytes.len() || (has_id && body_len < 4) {
            return Err(not_update);
        }
        if has_id {
            let id = u32::from_be_bytes([
                bytes[body],
                bytes[body + 1],
                bytes[body + 2],
                bytes[body + 3],
            ]);
            if run.count == 0 {
                run.first_id = Some(id);
            }
            run.last_id = id;
        } else {
            run.last_id = run.last_id.wrapping_add(1);
        }
        run.count += 1;
        at = end;
    }
    Ok(run)
}
