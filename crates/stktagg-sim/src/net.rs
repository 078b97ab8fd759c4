//! The in-memory network: connections made of two byte pipes, delivery delays,
//! partitions, slow readers.
//!
//! A pipe is a FIFO of chunks, each with the instant it becomes readable: bytes of
//! one stream are never reordered (a chunk is never delivered before the one
//! written before it), while two streams keep no order between them (each link
//! has its own latency and jitter, and processes are served in a shuffled order).
//! A pipe holds at most [`PIPE_CAPACITY`] bytes, like a socket's buffers: a writer
//! whose reader is slow keeps its bytes, and the engine stops producing above its
//! high-water mark.
//!
//! Faults: a *cut* partition resets every connection between two processes at
//! once (both ends see the end, what was in flight is lost); a *blackhole* keeps
//! them open but delivers nothing until it heals (then the stream resumes, as TCP
//! would, unless a side has given up on it meanwhile: the idle rule). Either way,
//! new connections between the two fail. A slow reader reads a bounded number of
//! bytes per [`SLOW_READ_EVERY_MS`].

use crate::rng::Rng;
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};

/// A process of the simulation (an aggregator or a node), by index.
pub type ProcId = usize;

/// One connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

/// The side of a connection: the dialer or the acceptor.
pub const DIALER: usize = 0;
/// The acceptor's side.
pub const ACCEPTOR: usize = 1;

/// Bytes a pipe holds (written and not yet read), like a socket's buffers.
pub const PIPE_CAPACITY: usize = 4 * 1024;
/// A slow reader reads its budget once per this many milliseconds.
pub const SLOW_READ_EVERY_MS: u64 = 20;

/// Why a connection could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialError {
    /// Nobody listens there (or the process is dead): refused at once.
    Refused,
    /// A partition: the attempt times out.
    Unreachable,
}

/// A partition between two processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// Connections are reset at once.
    Cut,
    /// Nothing gets through; connections stay open.
    Blackhole,
}

#[derive(Debug, Default)]
struct Pipe {
    chunks: VecDeque<(u64, Bytes)>,
    queued: usize,
    /// The latest delivery instant so far: later chunks never overtake it.
    last_at: u64,
    /// The writer closed: the end is readable at this instant, after the data.
    fin_at: Option<u64>,
    /// A slow reader's next read.
    next_read_at: u64,
}

#[derive(Debug)]
struct Conn {
    ends: [ProcId; 2],
    /// `pipes[s]` carries what side `s` writes.
    pipes: [Pipe; 2],
    /// Each side has let go of the connection.
    gone: [bool; 2],
    /// Reset by a cut: both ends see the end, data in flight is lost.
    reset: bool,
    /// A blackhole holds everything (the link's state, kept here because it is
    /// looked at on every step).
    blocked: bool,
    /// The read budget of the reader on each side, if it is slow.
    slow: [Option<usize>; 2],
}

#[derive(Debug, Clone, Copy, Default)]
struct Link {
    base_ms: u64,
    extra_ms: u64,
    partition: Option<Partition>,
}

/// What a read found.
#[derive(Debug, Default)]
pub struct Read {
    /// The bytes read (within the reader's budget).
    pub data: Vec<u8>,
    /// The connection is over for this reader (after `data`).
    pub eof: bool,
}

/// The network (see the module documentation).
#[derive(Debug, Default)]
pub struct Net {
    conns: BTreeMap<ConnId, Conn>,
    next_conn: u32,
    listeners: BTreeMap<String, ProcId>,
    accepts: Vec<(ProcId, ConnId)>,
    links: BTreeMap<(ProcId, ProcId), Link>,
    slow: BTreeMap<ProcId, usize>,
    established: Vec<[ProcId; 2]>,
    /// Bytes delivered so far.
    pub bytes_delivered: u64,
    /// A hash of every delivery (instant, connection, side, bytes): two runs of one
    /// seed must end with the same value.
    pub hash: u64,
}

fn pair(a: ProcId, b: ProcId) -> (ProcId, ProcId) {
    (a.min(b), a.max(b))
}

impl Net {
    /// A network; `hash` starts at the FNV offset.
    pub fn new() -> Net {
        Net {
            hash: 0xcbf2_9ce4_8422_2325,
            ..Net::default()
        }
    }

    /// `proc` listens at `addr` (`host:port`).
    pub fn listen(&mut self, addr: String, proc: ProcId) {
        self.listeners.insert(addr, proc);
    }

    /// Declares the link between two processes with its base latency.
    pub fn link(&mut self, a: ProcId, b: ProcId, base_ms: u64) {
        self.links.entry(pair(a, b)).or_default().base_ms = base_ms;
    }

    /// Every declared link.
    pub fn links(&self) -> Vec<(ProcId, ProcId)> {
        self.links.keys().copied().collect()
    }

    /// Adds `extra_ms` to a link's latency (0 removes it).
    pub fn set_delay(&mut self, a: ProcId, b: ProcId, extra_ms: u64) {
        self.links.entry(pair(a, b)).or_default().extra_ms = extra_ms;
    }

    /// Partitions two processes (a cut resets their connections), or heals them.
    pub fn set_partition(&mut self, a: ProcId, b: ProcId, p: Option<Partition>) {
        self.links.entry(pair(a, b)).or_default().partition = p;
        for c in self.conns.values_mut() {
            if pair(c.ends[0], c.ends[1]) != pair(a, b) {
                continue;
            }
            c.blocked = p.is_some();
            if p == Some(Partition::Cut) {
                c.reset = true;
                for pipe in &mut c.pipes {
                    pipe.chunks.clear();
                    pipe.queued = 0;
                }
            }
        }
    }

    /// Makes `proc` a slow reader (`Some(bytes per read)`) or a normal one.
    pub fn set_slow(&mut self, proc: ProcId, budget: Option<usize>) {
        let budget = budget.map(|b| b.max(1));
        match budget {
            Some(b) => self.slow.insert(proc, b),
            None => self.slow.remove(&proc),
        };
        for c in self.conns.values_mut() {
            for side in 0..2 {
                if c.ends[side] == proc {
                    c.slow[side] = budget;
                }
            }
        }
    }

    fn latency(&self, a: ProcId, b: ProcId, rng: &mut Rng) -> u64 {
        let l = self.links.get(&pair(a, b)).copied().unwrap_or(Link {
            base_ms: 5,
            ..Link::default()
        });
        l.base_ms + rng.range(0, l.base_ms / 2) + l.extra_ms
    }

    fn partition(&self, a: ProcId, b: ProcId) -> Option<Partition> {
        self.links.get(&pair(a, b)).and_then(|l| l.partition)
    }

    /// Opens a connection from `from` to whoever listens at `addr`, if it is
    /// `alive`. The acceptor finds it with [`Net::take_accepts`].
    ///
    /// # Errors
    /// [`DialError`]: nobody listening or dead, or partitioned.
    pub fn connect(
        &mut self,
        from: ProcId,
        addr: &str,
        alive: impl Fn(ProcId) -> bool,
    ) -> Result<ConnId, DialError> {
        let Some(&to) = self.listeners.get(addr) else {
            return Err(DialError::Refused);
        };
        if self.partition(from, to).is_some() {
            return Err(DialError::Unreachable);
        }
        if !alive(to) {
            return Err(DialError::Refused);
        }
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                ends: [from, to],
                pipes: [Pipe::default(), Pipe::default()],
                gone: [false; 2],
                reset: false,
                blocked: false,
                slow: [self.slow.get(&from).copied(), self.slow.get(&to).copied()],
            },
        );
        self.accepts.push((to, id));
        Ok(id)
    }

    /// The connections made to `proc` since the last call.
    pub fn take_accepts(&mut self, proc: ProcId) -> Vec<ConnId> {
        let mut mine = Vec::new();
        self.accepts.retain(|&(p, c)| {
            if p == proc {
                mine.push(c);
                false
            } else {
                true
            }
        });
        mine
    }

    /// The process at the other end of `conn` from `side`.
    pub fn remote(&self, conn: ConnId, side: usize) -> Option<ProcId> {
        self.conns.get(&conn).map(|c| c.ends[1 - side])
    }

    /// Room left in the pipe `side` writes to.
    pub fn room(&self, conn: ConnId, side: usize) -> usize {
        self.conns
            .get(&conn)
            .map_or(0, |c| PIPE_CAPACITY.saturating_sub(c.pipes[side].queued))
    }

    /// Moves as much of `out` as fits into the pipe `side` writes to. Bytes written
    /// to a connection the other side has let go of are lost.
    pub fn write(
        &mut self,
        now: u64,
        conn: ConnId,
        side: usize,
        out: &mut BytesMut,
        rng: &mut Rng,
    ) {
        if out.is_empty() {
            return;
        }
        let Some(c) = self.conns.get(&conn) else {
            out.clear();
            return;
        };
        if c.reset || c.gone[0] || c.gone[1] {
            out.clear();
            return;
        }
        let ends = c.ends;
        let latency = self.latency(ends[0], ends[1], rng);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let pipe = &mut c.pipes[side];
        let n = PIPE_CAPACITY.saturating_sub(pipe.queued).min(out.len());
        if n == 0 {
            return;
        }
        let chunk = out.split_to(n).freeze();
        let at = pipe.last_at.max(now + latency);
        pipe.last_at = at;
        pipe.queued += n;
        pipe.chunks.push_back((at, chunk));
    }

    /// Whether the reader on `side` has something to read (bytes or the end) now.
    pub fn readable(&self, now: u64, conn: ConnId, side: usize) -> bool {
        self.conns
            .get(&conn)
            .and_then(|c| Net::due(c, side))
            .is_some_and(|t| t <= now)
    }

    /// When the reader on `side` next has something to read.
    fn due(c: &Conn, side: usize) -> Option<u64> {
        if c.gone[side] {
            return None;
        }
        if c.reset {
            return Some(0);
        }
        if c.blocked {
            return None;
        }
        let pipe = &c.pipes[1 - side];
        match pipe.chunks.front() {
            Some(&(at, _)) => {
                let paced = if c.slow[side].is_some() {
                    pipe.next_read_at
                } else {
                    0
                };
                Some(at.max(paced))
            }
            None => pipe.fin_at,
        }
    }

    /// Reads what the reader on `side` can read now: every chunk due, within a slow
    /// reader's budget, then the end if it is due and everything was read.
    pub fn read(&mut self, now: u64, conn: ConnId, side: usize) -> Read {
        let mut r = Read::default();
        let Some(c) = self.conns.get(&conn) else {
            r.eof = true;
            return r;
        };
        if c.gone[side] {
            r.eof = true;
            return r;
        }
        if c.reset {
            r.eof = true;
            return r;
        }
        if c.blocked {
            return r;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return r;
        };
        let budget = c.slow[side];
        let pipe = &mut c.pipes[1 - side];
        if budget.is_some() && now < pipe.next_read_at {
            return r;
        }
        let mut left = budget.unwrap_or(usize::MAX);
        while left > 0 {
            let Some((at, chunk)) = pipe.chunks.front_mut() else {
                break;
            };
            if *at > now {
                break;
            }
            if chunk.len() <= left {
                left -= chunk.len();
                r.data.extend_from_slice(chunk);
                pipe.chunks.pop_front();
            } else {
                let part = chunk.split_to(left);
                r.data.extend_from_slice(&part);
                left = 0;
            }
        }
        pipe.queued -= r.data.len();
        if budget.is_some() && !r.data.is_empty() {
            pipe.next_read_at = now + SLOW_READ_EVERY_MS;
        }
        if pipe.chunks.is_empty() && pipe.fin_at.is_some_and(|t| t <= now) {
            r.eof = true;
        }
        if !r.data.is_empty() {
            self.bytes_delivered += r.data.len() as u64;
            self.hash = fnv(self.hash, &now.to_le_bytes());
            self.hash = fnv(self.hash, &conn.0.to_le_bytes());
            self.hash = fnv(self.hash, &[side as u8]);
            self.hash = fnv(self.hash, &r.data);
        }
        r
    }

    /// `side` lets go of the connection: what it wrote is still delivered, then the
    /// end; what was written to it is dropped.
    pub fn close(&mut self, now: u64, conn: ConnId, side: usize, rng: &mut Rng) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let latency = self.latency(c.ends[0], c.ends[1], rng);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.gone[side] = true;
        let mine = &mut c.pipes[side];
        mine.fin_at = Some(mine.last_at.max(now + latency));
        let theirs = &mut c.pipes[1 - side];
        theirs.chunks.clear();
        theirs.queued = 0;
        if c.gone[0] && c.gone[1] {
            self.conns.remove(&conn);
        }
    }

    /// The process dies: every connection it holds is closed from its side.
    pub fn kill(&mut self, now: u64, proc: ProcId, rng: &mut Rng) {
        let mine: Vec<(ConnId, usize)> = self
            .conns
            .iter()
            .filter_map(|(&id, c)| {
                (0..2)
                    .find(|&s| c.ends[s] == proc && !c.gone[s])
                    .map(|s| (id, s))
            })
            .collect();
        for (id, side) in mine {
            self.close(now, id, side, rng);
        }
        self.accepts.retain(|&(p, _)| p != proc);
    }

    /// The next instant after `now` at which some reader has something to read.
    pub fn next_event(&self, now: u64) -> Option<u64> {
        let mut next: Option<u64> = None;
        for c in self.conns.values() {
            for side in 0..2 {
                if let Some(t) = Net::due(c, side) {
                    let t = t.max(now + 1);
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        next
    }

    /// A session is established on `conn` (either side says so; the world uses
    /// it to play faults that wait for a session).
    pub fn note_established(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            self.established.push(c.ends);
        }
    }

    /// The pairs of processes that established a session since the last call.
    pub fn take_established(&mut self) -> Vec<[ProcId; 2]> {
        std::mem::take(&mut self.established)
    }

    /// Connections still held by someone.
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }
}

/// FNV-1a over `bytes`, continuing from `h`.
pub fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> (Net, ConnId, Rng) {
        let mut net = Net::new();
        net.listen("b:1".to_owned(), 1);
        net.link(0, 1, 4);
        let c = net.connect(0, "b:1", |_| true);
        let Ok(c) = c else {
            panic!("connect: {c:?}");
        };
        assert_eq!(net.take_accepts(1), vec![c]);
        (net, c, Rng::new(1, 0))
    }

    #[test]
    fn a_stream_keeps_its_order_and_its_latency() {
        let (mut net, c, mut rng) = two();
        for i in 0..10u8 {
            let mut out = BytesMut::from(&[i][..]);
            net.write(i.into(), c, DIALER, &mut out, &mut rng);
            assert!(out.is_empty());
        }
        assert!(!net.readable(3, c, ACCEPTOR), "faster than the link");
        let mut got = Vec::new();
        for t in 0..40 {
            got.extend(net.read(t, c, ACCEPTOR).data);
        }
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
    }

    #[test]
    fn a_full_pipe_keeps_the_writers_bytes_and_a_slow_reader_reads_its_budget() {
        let (mut net, c, mut rng) = two();
        net.set_slow(1, Some(100));
        let mut out = BytesMut::from(&vec![7u8; PIPE_CAPACITY + 10][..]);
        net.write(0, c, DIALER, &mut out, &mut rng);
        assert_eq!(out.len(), 10);
        assert_eq!(net.room(c, DIALER), 0);
        assert_eq!(net.read(100, c, ACCEPTOR).data.len(), 100);
        assert!(net.read(101, c, ACCEPTOR).data.is_empty(), "paced");
        assert_eq!(net.next_event(101), Some(100 + SLOW_READ_EVERY_MS));
        assert_eq!(net.room(c, DIALER), 100);
    }

    #[test]
    fn a_close_delivers_the_data_then_the_end_and_a_cut_resets_at_once() {
        let (mut net, c, mut rng) = two();
        let mut out = BytesMut::from(&b"abc"[..]);
        net.write(0, c, DIALER, &mut out, &mut rng);
        net.close(0, c, DIALER, &mut rng);
        let r = net.read(100, c, ACCEPTOR);
        assert_eq!((r.data.as_slice(), r.eof), (&b"abc"[..], true));
        let (mut net, c, mut rng) = two();
        let mut out = BytesMut::from(&b"abc"[..]);
        net.write(0, c, DIALER, &mut out, &mut rng);
        net.set_partition(0, 1, Some(Partition::Cut));
        let r = net.read(100, c, ACCEPTOR);
        assert!(r.data.is_empty() && r.eof);
        assert_eq!(net.connect(0, "b:1", |_| true), Err(DialError::Unreachable));
    }

    #[test]
    fn a_blackhole_holds_the_stream_until_it_heals() {
        let (mut net, c, mut rng) = two();
        net.set_partition(0, 1, Some(Partition::Blackhole));
        let mut out = BytesMut::from(&b"abc"[..]);
        net.write(0, c, DIALER, &mut out, &mut rng);
        assert!(net.read(100, c, ACCEPTOR).data.is_empty());
        assert_eq!(net.next_event(100), None);
        net.set_partition(0, 1, None);
        assert_eq!(net.read(101, c, ACCEPTOR).data, b"abc");
    }
}
