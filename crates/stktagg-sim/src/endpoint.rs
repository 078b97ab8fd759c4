//! What every simulated process shares: the context of a step ([`Cx`]), the trace,
//! and one end of a connection with its protocol engine ([`Endpoint`]).

use crate::net::{ConnId, Net, ProcId};
use crate::rng::Rng;
use bytes::BytesMut;
use std::fmt::Write as _;
use std::net::IpAddr;
use stktagg_session::PeerSession;

/// What a process sees while it takes its step at `now`.
#[derive(Debug)]
pub struct Cx<'a> {
    /// The simulated clock, in milliseconds.
    pub now: u64,
    /// The network.
    pub net: &'a mut Net,
    /// The run's randomness.
    pub rng: &'a mut Rng,
    /// The run's trace.
    pub trace: &'a mut Trace,
    /// Which processes are alive.
    pub alive: &'a [bool],
    /// Each process's IP address (the source of its dials).
    pub ips: &'a [IpAddr],
}

/// The event trace of a run: what a failing seed prints.
#[derive(Debug, Default)]
pub struct Trace {
    /// One line per event, in order.
    pub lines: Vec<String>,
}

impl Trace {
    /// Records an event of `who` at `now`.
    pub fn log(&mut self, now: u64, who: &str, what: std::fmt::Arguments<'_>) {
        let mut line = String::with_capacity(64);
        let _ = write!(line, "{:>6}.{:03} {who:<7} ", now / 1000, now % 1000);
        let _ = line.write_fmt(what);
        self.lines.push(line);
    }
}

/// One end of a connection and the engine that speaks on it.
#[derive(Debug)]
pub struct Endpoint {
    /// The connection.
    pub conn: ConnId,
    /// Our side of it.
    pub side: usize,
    /// The protocol engine.
    pub engine: PeerSession,
    /// What the engine produced and the network has not taken yet (a socket's
    /// write buffer).
    pub out: BytesMut,
    /// A reader of the incoming stream beside the engine's, if the owner watches it.
    pub tap: Option<Tap>,
}

/// Cuts the incoming stream into frames beside the engine, to see what the peer
/// sent independently of what the logic under test made of it. It starts at the
/// connection's first byte: the handshake's lines, then frames.
#[derive(Debug)]
pub struct Tap {
    lines: usize,
    buf: BytesMut,
    /// RESYNC FINISHED messages seen so far.
    pub finished: u64,
    /// How the last lesson the peer ended ended: FINISHED (true) or PARTIAL.
    pub last_end: Option<bool>,
}

impl Tap {
    /// A tap on a stream that starts with `lines` handshake lines (the status line
    /// a dialer reads; the three hello lines an acceptor reads).
    pub fn new(lines: usize) -> Tap {
        Tap {
            lines,
            buf: BytesMut::new(),
            finished: 0,
            last_end: None,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while self.lines > 0 {
            let Some(i) = self.buf.iter().position(|&c| c == b'\n') else {
                return;
            };
            let _ = self.buf.split_to(i + 1);
            self.lines -= 1;
        }
        let max = stktagg_wire::frame::DEFAULT_MAX_MESSAGE_LEN;
        while let Ok(Some(f)) = stktagg_wire::frame::split_frame(&mut self.buf, max) {
            if f.class != stktagg_wire::frame::CLASS_CONTROL {
                continue;
            }
            match f.msg_type {
                stktagg_wire::frame::CTRL_RESYNC_FINISHED => {
                    self.finished += 1;
                    self.last_end = Some(true);
                }
                stktagg_wire::frame::CTRL_RESYNC_PARTIAL => self.last_end = Some(false),
                _ => {}
            }
        }
    }
}

impl Endpoint {
    /// An endpoint on `side` of `conn`.
    pub fn new(conn: ConnId, side: usize, engine: PeerSession) -> Endpoint {
        Endpoint {
            conn,
            side,
            engine,
            out: BytesMut::new(),
            tap: None,
        }
    }

    /// The process at the other end.
    pub fn remote(&self, net: &Net) -> Option<ProcId> {
        net.remote(self.conn, self.side)
    }

    /// Feeds the engine what the network delivers now; whether the connection is
    /// over (after those bytes).
    pub fn pull(&mut self, cx: &mut Cx<'_>) -> bool {
        let r = cx.net.read(cx.now, self.conn, self.side);
        if !r.data.is_empty() {
            if let Some(tap) = &mut self.tap {
                tap.feed(&r.data);
            }
            self.engine.handle_input(cx.now, &r.data);
        }
        r.eof
    }

    /// Hands the network as much of the write buffer as it takes.
    pub fn push(&mut self, cx: &mut Cx<'_>) {
        cx.net
            .write(cx.now, self.conn, self.side, &mut self.out, cx.rng);
    }

    /// Writes what it can, then lets go of the connection.
    pub fn close(mut self, cx: &mut Cx<'_>) {
        self.push(cx);
        cx.net.close(cx.now, self.conn, self.side, cx.rng);
    }

    /// Whether the endpoint has something to do now: bytes or the end to read,
    /// bytes to write and room for them, or a timer due.
    pub fn due(&self, now: u64, net: &Net) -> bool {
        net.readable(now, self.conn, self.side)
            || (!self.out.is_empty() && net.room(self.conn, self.side) > 0)
            || self.engine.poll_timeout().is_some_and(|t| t <= now)
    }

    /// When the endpoint next has something to do on its own (the network's
    /// deliveries are the network's): its engine's timer, or at once if it has
    /// bytes to write and room for them.
    pub fn wake_at(&self, now: u64, net: &Net) -> Option<u64> {
        if !self.out.is_empty() && net.room(self.conn, self.side) > 0 {
            return Some(now + 1);
        }
        self.engine.poll_timeout()
    }
}

/// The earliest of two optional instants.
pub fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
