//! [`PeerSession`]: one peers-protocol session, from the first hello byte to the
//! close, as a state machine without IO.
//!
//! The caller owns the socket and the clock. It feeds received bytes with
//! [`PeerSession::handle_input`], drains [`PeerSession::poll_event`], writes what
//! [`PeerSession::poll_transmit`] produces, and calls [`PeerSession::handle_timeout`]
//! at [`PeerSession::poll_timeout`]. Time is milliseconds on any monotonic clock.

use crate::config::SessionConfig;
use crate::event::{End, Event, PeerComplaint};
use crate::outbox::{Feed, Outbox, Phase, Progress, Tx};
use crate::resync::{Learning, Teaching};
use bytes::BytesMut;
use std::collections::{BTreeMap, VecDeque};
use stktagg_wire::hello::{HelloOutcome, HelloParser, LineDecoder, decode_status};
use stktagg_wire::{Decoder, Hello, Message, StatusCode, Value, WireError, frame};

/// The handshake, on either side.
#[derive(Debug)]
enum Handshake {
    /// Dialer: our hello is written; waiting for the status line.
    Status { lines: LineDecoder },
    /// Acceptor: reading the peer's hello.
    Hello { parser: Box<HelloParser> },
    /// Acceptor: the hello is valid; the caller decides.
    Verdict,
}

/// The session's state.
#[derive(Debug)]
enum State {
    Handshake(Handshake),
    Established(Box<Link>),
    Closed,
}

/// An established session's protocol state.
#[derive(Debug)]
struct Link {
    decoder: Decoder,
    tx: Tx,
    /// The last update id received per peer table, to acknowledge.
    pending_acks: BTreeMap<u32, u32>,
    learning: Learning,
    teaching: Teaching,
    last_tx: u64,
}

/// One peers-protocol session (see the module documentation).
#[derive(Debug)]
pub struct PeerSession {
    config: SessionConfig,
    state: State,
    /// Received bytes not yet consumed.
    inbuf: BytesMut,
    /// Our control messages and handshake lines, written before any entry.
    control: BytesMut,
    events: VecDeque<Event>,
    /// The last time passed in.
    now: u64,
    started: u64,
    last_rx: u64,
    /// The caller asked for a resync before the session was established.
    ask_when_established: bool,
    /// The peer's hello, once known (acceptor) or ours (dialer).
    hello: Option<Hello>,
    /// The last time a heartbeat was received.
    last_heartbeat: Option<u64>,
    /// Updates received (see [`PeerSession::updates_received`]).
    updates_received: u64,
}

impl PeerSession {
    fn new(config: SessionConfig, now: u64, handshake: Handshake) -> PeerSession {
        PeerSession {
            config,
            state: State::Handshake(handshake),
            inbuf: BytesMut::new(),
            control: BytesMut::new(),
            events: VecDeque::new(),
            now,
            started: now,
            last_rx: now,
            ask_when_established: false,
            hello: None,
            last_heartbeat: None,
            updates_received: 0,
        }
    }

    /// A session we open: our hello to `remote_name` is the first thing written.
    ///
    /// # Errors
    /// [`WireError::InvalidName`] if a name cannot go in a hello.
    pub fn dial(
        config: SessionConfig,
        remote_name: &str,
        now: u64,
    ) -> Result<PeerSession, WireError> {
        let hello = Hello::new(remote_name, config.local_name.clone(), config.pid);
        let lines = LineDecoder::new(config.max_message_len);
        let mut s = PeerSession::new(config, now, Handshake::Status { lines });
        hello.encode(&mut s.control)?;
        s.hello = Some(hello);
        Ok(s)
    }

    /// A session the peer opened: its hello is expected first.
    pub fn accept(config: SessionConfig, now: u64) -> PeerSession {
        let lines = LineDecoder::new(config.max_message_len);
        let parser = HelloParser::with_line_decoder(config.local_name.clone(), lines);
        PeerSession::new(
            config,
            now,
            Handshake::Hello {
                parser: Box::new(parser),
            },
        )
    }

    /// The hello of this session: the peer's (acceptor) or ours (dialer).
    pub fn hello(&self) -> Option<&Hello> {
        self.hello.as_ref()
    }

    /// Whether messages flow.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Why the session closed, while the [`Event::Closed`] that says it has not
    /// been taken by [`PeerSession::poll_event`] yet.
    pub fn closed_reason(&self) -> Option<&End> {
        self.events.iter().find_map(|e| match e {
            Event::Closed(end) => Some(end),
            _ => None,
        })
    }

    /// Our state as a learner.
    pub fn learning(&self) -> Learning {
        match &self.state {
            State::Established(l) => l.learning,
            _ => Learning::Idle,
        }
    }

    /// Our state as a teacher.
    pub fn teaching(&self) -> Teaching {
        match &self.state {
            State::Established(l) => l.teaching,
            _ => Teaching::Idle,
        }
    }

    /// Updates encoded since the session was established.
    pub fn updates_sent(&self) -> u64 {
        match &self.state {
            State::Established(l) => l.tx.updates_sent,
            _ => 0,
        }
    }

    /// Updates received over the whole session (it survives the close), decoded or
    /// only counted (see [`crate::SessionConfig::decode_updates`]).
    pub fn updates_received(&self) -> u64 {
        self.updates_received
    }

    /// The last time a byte was received.
    pub fn last_rx(&self) -> u64 {
        self.last_rx
    }

    /// The last time a heartbeat was received, if one was.
    pub fn last_heartbeat(&self) -> Option<u64> {
        self.last_heartbeat
    }

    /// Changes the resync policy (before the session is established for
    /// `ask_on_start` to apply).
    pub fn set_resync_policy(&mut self, policy: crate::ResyncPolicy) {
        self.config.resync = policy;
    }

    /// Bytes received and not yet decoded.
    pub fn buffered_input(&self) -> usize {
        self.inbuf.len()
    }

    /// Feeds bytes received from the peer. Any byte counts as liveness, whether or
    /// not the caller has found time to process it yet.
    pub fn handle_input(&mut self, now: u64, data: &[u8]) {
        self.now = self.now.max(now);
        if data.is_empty() || self.is_closed() {
            return;
        }
        self.last_rx = self.now;
        self.inbuf.extend_from_slice(data);
        self.advance_handshake();
    }

    /// The buffer to read into directly, to save a copy: read into the spare
    /// capacity of the returned buffer, then call [`PeerSession::input_received`].
    pub fn input_buffer(&mut self) -> &mut BytesMut {
        &mut self.inbuf
    }

    /// Says that bytes were appended to [`PeerSession::input_buffer`] at `now`.
    pub fn input_received(&mut self, now: u64) {
        self.now = self.now.max(now);
        if self.is_closed() {
            self.inbuf.clear();
            return;
        }
        self.last_rx = self.now;
        self.advance_handshake();
    }

    /// Acceptor: answers a valid hello with 200 (and a heartbeat at once: HAProxy
    /// may check a new session's liveness within 50 ms of a collision).
    pub fn accept_hello(&mut self) {
        if !matches!(self.state, State::Handshake(Handshake::Verdict)) {
            return;
        }
        StatusCode::Succeeded.encode(&mut self.control);
        let downgraded = self.hello.as_ref().is_some_and(Hello::downgraded);
        self.establish(downgraded);
    }

    /// Acceptor: answers a hello with an error status and ends the session.
    pub fn refuse(&mut self, code: StatusCode) {
        if !matches!(self.state, State::Handshake(_)) {
            return;
        }
        code.encode(&mut self.control);
        self.close(End::Rejected(code));
    }

    /// Asks the peer for a full resync (now, or once established).
    pub fn request_resync(&mut self) {
        let State::Established(link) = &mut self.state else {
            self.ask_when_established = true;
            return;
        };
        if let Err(e) = link.tx.push(&Message::ResyncRequest, &mut self.control) {
            debug_assert!(false, "control message failed to encode: {e}");
        }
        link.learning = Learning::Asked;
        self.events.push_back(Event::ResyncAsked);
    }

    /// Handles the timers: the handshake deadline, the idle rule, the resync retry
    /// after a PARTIAL. (Heartbeats are produced by `poll_transmit`.)
    pub fn handle_timeout(&mut self, now: u64) {
        self.now = self.now.max(now);
        let now = self.now;
        match &mut self.state {
            State::Closed => {}
            State::Handshake(_) => {
                if now.saturating_sub(self.started) >= self.config.hello_timeout_ms {
                    self.close(End::HandshakeTimeout);
                }
            }
            State::Established(link) => {
                if now.saturating_sub(self.last_rx) >= self.config.idle_timeout_ms {
                    self.close(End::Silent);
                } else if link.learning.retry_due(now) {
                    self.request_resync();
                }
            }
        }
    }

    /// When [`PeerSession::handle_timeout`] (or `poll_transmit`, for a heartbeat)
    /// must be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.state {
            State::Closed => None,
            State::Handshake(_) => Some(self.started + self.config.hello_timeout_ms),
            State::Established(link) => {
                let idle = self.last_rx + self.config.idle_timeout_ms;
                let heartbeat = link.last_tx + self.config.heartbeat_ms;
                let mut t = idle.min(heartbeat);
                if let Some(r) = link.learning.deadline() {
                    t = t.min(r);
                }
                Some(t)
            }
        }
    }

    /// Hands back the values of an [`Event::Update`] once the caller has used them:
    /// the next update is decoded into them (see [`Decoder::recycle`]).
    pub fn recycle_values(&mut self, values: Vec<Value>) {
        if let State::Established(link) = &mut self.state {
            link.decoder.recycle(values);
        }
    }

    /// The next event, decoding received messages on demand: the caller drains this
    /// after each input, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            let State::Established(link) = &mut self.state else {
                return None;
            };
            let frame = match frame::split_frame(&mut self.inbuf, link.decoder.max_message_len()) {
                Ok(None) => return None,
                Ok(Some(frame)) => frame,
                Err(e) => {
                    self.fail(e);
                    continue;
                }
            };
            if !self.config.decode_updates {
                // Counting only: the id is all an ack needs.
                match link.decoder.skip_update(&frame) {
                    Ok(Some((table_id, update_id))) => {
                        link.pending_acks.insert(table_id, update_id);
                        self.updates_received += 1;
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.fail(e);
                        continue;
                    }
                }
            }
            match link.decoder.decode_frame(frame) {
                Ok(msg) => {
                    if let Some(e) = self.on_message(msg) {
                        return Some(e);
                    }
                }
                Err(e) => self.fail(e),
            }
        }
    }

    /// Appends what is to be sent to `buf`: control messages and acks first, then
    /// entries from `feed` (teach-back, lesson, live, in that order) until `buf` holds
    /// the high-water mark, and a heartbeat when nothing was sent for a while.
    pub fn poll_transmit(&mut self, now: u64, feed: &mut dyn Feed, buf: &mut BytesMut) {
        self.now = self.now.max(now);
        let now = self.now;
        let start = buf.len();
        buf.extend_from_slice(&self.control);
        self.control.clear();
        let high_water = self.config.high_water;
        let State::Established(link) = &mut self.state else {
            return;
        };
        link.flush_acks(buf);
        while buf.len() < high_water {
            let phase = match link.teaching {
                Teaching::TeachBack => Phase::TeachBack,
                Teaching::Tables => Phase::Lesson,
                Teaching::Idle | Teaching::Sent => Phase::Live,
            };
            let mut out = Outbox {
                tx: &mut link.tx,
                buf,
                phase,
                high_water,
            };
            let progress = match phase {
                Phase::TeachBack => feed.teach_back(&mut out),
                Phase::Lesson => feed.lesson(&mut out),
                Phase::Live => feed.live(&mut out),
            };
            if progress == Progress::More {
                continue;
            }
            match phase {
                Phase::TeachBack => link.teaching = Teaching::Tables,
                Phase::Lesson => {
                    let end = if feed.lesson_complete() {
                        Message::ResyncFinished
                    } else {
                        Message::ResyncPartial
                    };
                    link.push_control(&end, buf);
                    link.teaching = Teaching::Sent;
                }
                Phase::Live => break,
            }
        }
        if buf.len() == start && now.saturating_sub(link.last_tx) >= self.config.heartbeat_ms {
            link.push_control(&Message::Heartbeat, buf);
        }
        if buf.len() > start {
            link.last_tx = now;
        }
    }

    fn advance_handshake(&mut self) {
        let State::Handshake(hs) = &mut self.state else {
            return;
        };
        match hs {
            Handshake::Status { lines } => match decode_status(lines, &mut self.inbuf) {
                Ok(None) => {}
                Ok(Some(StatusCode::Succeeded)) => {
                    // Liveness at once (see `accept_hello`).
                    self.establish(false);
                }
                Ok(Some(code)) => self.close(End::Refused(code)),
                Err(e) => self.close(End::Protocol(e)),
            },
            Handshake::Hello { parser } => {
                // Every name is "known" here: which peers may call is the caller's
                // verdict, and HAProxy checks it last too (status 504).
                match parser.feed(&mut self.inbuf, &|_: &str| true) {
                    Ok(None) => {}
                    Ok(Some(HelloOutcome::Complete(hello))) => {
                        self.state = State::Handshake(Handshake::Verdict);
                        self.hello = Some(hello.clone());
                        self.events.push_back(Event::HelloReceived(hello));
                    }
                    Ok(Some(HelloOutcome::Reject(code))) => {
                        code.encode(&mut self.control);
                        self.close(End::Rejected(code));
                    }
                    // A line too long: HAProxy closes without a status.
                    Err(e) => self.close(End::Protocol(e)),
                }
            }
            Handshake::Verdict => {}
        }
    }

    fn establish(&mut self, downgraded: bool) {
        let mut link = Box::new(Link {
            decoder: Decoder::with_max_message_len(self.config.max_message_len),
            tx: Tx::new(self.config.max_message_len, downgraded),
            pending_acks: BTreeMap::new(),
            learning: Learning::Idle,
            teaching: Teaching::Idle,
            last_tx: self.now,
        });
        link.push_control(&Message::Heartbeat, &mut self.control);
        self.state = State::Established(link);
        self.last_rx = self.now;
        self.events.push_back(Event::Established { downgraded });
        if self.config.resync.ask_on_start || std::mem::take(&mut self.ask_when_established) {
            self.request_resync();
        }
    }

    fn close(&mut self, end: End) {
        self.state = State::Closed;
        self.inbuf.clear();
        self.events.push_back(Event::Closed(end));
    }

    /// Bad input: HAProxy's reply, then the end.
    fn fail(&mut self, e: WireError) {
        if let (Some(reply), State::Established(link)) = (e.reply(), &mut self.state) {
            link.push_control(&reply, &mut self.control);
        }
        self.close(End::Protocol(e));
    }

    fn on_message(&mut self, msg: Message) -> Option<Event> {
        let now = self.now;
        let policy = self.config.resync;
        let State::Established(link) = &mut self.state else {
            return None;
        };
        match msg {
            Message::Heartbeat => {
                self.last_heartbeat = Some(now);
                None
            }
            Message::TableSwitch { .. } | Message::Ignored { .. } => None,
            Message::TableDefinition(def) => Some(Event::TableDefined(def)),
            Message::Update(mut u) => {
                link.pending_acks.insert(u.table_id, u.update_id);
                self.updates_received += 1;
                if !self.config.decode_updates {
                    // Decoded whole only for its dictionary values.
                    return None;
                }
                let has_expiry = link
                    .decoder
                    .definition(u.table_id)
                    .is_some_and(|d| d.expire_ms > 0);
                if !has_expiry {
                    u.expire_ms = None;
                }
                Some(Event::Update(u))
            }
            Message::Ack {
                table_id,
                update_id,
            } => {
                if link.on_ack(table_id, update_id) && policy.ask_after_teach_back {
                    self.request_resync();
                }
                Some(Event::Acked {
                    table_id,
                    update_id,
                })
            }
            Message::ResyncRequest => {
                link.teaching = Teaching::TeachBack;
                Some(Event::ResyncRequested)
            }
            Message::ResyncFinished | Message::ResyncPartial => {
                link.push_control(&Message::ResyncConfirm, &mut self.control);
                let finished = matches!(msg, Message::ResyncFinished);
                let next = link
                    .learning
                    .on_end(finished, now, policy.retry_after_partial_ms)?;
                link.learning = next;
                Some(Event::ResyncEnded { finished })
            }
            Message::ResyncConfirm => {
                let was_sent = link.teaching == Teaching::Sent;
                if was_sent {
                    link.teaching = Teaching::Idle;
                }
                let retry = matches!(link.learning, Learning::Partial { .. })
                    && policy.retry_on_confirm
                    && !link.teaching.in_progress();
                if retry {
                    self.request_resync();
                }
                Some(Event::Confirmed)
            }
            Message::ProtocolError => {
                self.close(End::PeerError(PeerComplaint::ProtocolError));
                None
            }
            Message::SizeLimit => {
                self.close(End::PeerError(PeerComplaint::SizeLimit));
                None
            }
        }
    }
}

impl Link {
    fn push_control(&mut self, msg: &Message, buf: &mut BytesMut) {
        if let Err(e) = self.tx.push(msg, buf) {
            debug_assert!(false, "control message failed to encode: {e}");
        }
    }

    /// Acknowledges the last update received per peer table.
    fn flush_acks(&mut self, buf: &mut BytesMut) {
        for (table_id, update_id) in std::mem::take(&mut self.pending_acks) {
            self.push_control(
                &Message::Ack {
                    table_id,
                    update_id,
                },
                buf,
            );
        }
    }

    /// Records an ack of our updates; true when it was the last teach-back table
    /// still unacknowledged and the lesson is past its teach-back.
    fn on_ack(&mut self, table_id: u32, update_id: u32) -> bool {
        let Some(&last) = self.tx.taught_unacked.get(&table_id) else {
            return false;
        };
        // Update ids wrap; "at or after" in modular arithmetic.
        if update_id.wrapping_sub(last) >= (1 << 31) {
            return false;
        }
        self.tx.taught_unacked.remove(&table_id);
        self.tx.taught_unacked.is_empty()
            && self.teaching != Teaching::TeachBack
            && self.learning != Learning::Asked
    }
}
