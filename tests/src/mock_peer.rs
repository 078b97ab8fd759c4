//! A small blocking peer that speaks the peers protocol to a real HAProxy through
//! the `stktagg-wire` codec.
//!
//! It can dial HAProxy's peers port (`MockPeer::dial`) or accept HAProxy's own
//! connection (`MockPeer::accept`, listening on the address declared for our peer in
//! HAProxy's peers section). Every read has a deadline. Bytes are cut into messages
//! by `frame::split_frame` first and each message is then decoded by the codec, which
//! must consume exactly that message; the raw bytes are kept next to the decoded
//! message so that tests can record captures.
//!
//! HAProxy drops peers that break its rules (peers-protocol.md §2.4, §4, §8, §12),
//! so unless a test turns them off in `Duties`, the mock:
//! - sends a HEARTBEAT right after the handshake, then every `HEARTBEAT_EVERY` while
//!   it waits for input;
//! - answers a RESYNC REQUEST with RESYNC FINISHED (an empty lesson);
//! - answers RESYNC FINISHED / PARTIAL with CONFIRM;
//! - acknowledges each update with the sender's table id and the update id.

use crate::error::{HarnessError, Result};
use crate::frame::{RawFrame, split_frame, to_hex};
use bytes::BytesMut;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use stktagg_wire::hello::{Hello, HelloOutcome, HelloParser, StatusCode, Version};
use stktagg_wire::{Decoder, Encoder, Message};

/// How often the mock sends a heartbeat while it waits (HAProxy tolerates 5 s).
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(1500);
/// How long a read blocks at most before the mock checks its duties again.
const READ_SLICE: Duration = Duration::from_millis(100);
/// How long connecting and the handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The automatic protocol duties of the mock (all on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duties {
    /// Send a heartbeat after the handshake and every `HEARTBEAT_EVERY`.
    pub heartbeat: bool,
    /// Answer RESYNC REQUEST with RESYNC FINISHED.
    pub answer_resync: bool,
    /// Answer RESYNC FINISHED / PARTIAL with CONFIRM.
    pub confirm: bool,
    /// Acknowledge every update.
    pub ack: bool,
}

impl Default for Duties {
    fn default() -> Self {
        Duties {
            heartbeat: true,
            answer_resync: true,
            confirm: true,
            ack: true,
        }
    }
}

/// One message received, with its bytes.
#[derive(Debug, Clone)]
pub struct Received {
    /// Exactly the bytes HAProxy sent for this message.
    pub frame: RawFrame,
    /// The codec's decoding of them.
    pub message: Message,
}

/// The hello a dialing mock sends, encoded by the codec: `HAProxyS <version>`, the
/// name of the peer it calls (HAProxy's local peer), and its own name with our pid
/// and relative pid 1.
pub fn hello_bytes(version: Version, remote_name: &str, local_name: &str) -> Result<BytesMut> {
    let mut hello = Hello::new(remote_name, local_name, std::process::id());
    hello.version = version;
    let mut buf = BytesMut::new();
    hello.encode(&mut buf)?;
    Ok(buf)
}

/// Connects to `addr`, writes `hello` as is (which may be malformed on purpose),
/// and reads the status line. Returns the open stream, the status line without its
/// LF, and the codec's reading of it. A connection closed without any status is
/// `HarnessError::Closed`.
pub fn handshake_raw(
    addr: SocketAddr,
    hello: &[u8],
) -> Result<(TcpStream, String, StatusCode, BytesMut)> {
    handshake_raw_from(None, addr, hello)
}

/// [`handshake_raw`] from source address `source` (a loopback alias, so that the
/// peer sees the connection come from there), or from the system's choice
/// (`127.0.0.1` towards a loopback address) with `None`.
pub fn handshake_raw_from(
    source: Option<Ipv4Addr>,
    addr: SocketAddr,
    hello: &[u8],
) -> Result<(TcpStream, String, StatusCode, BytesMut)> {
    let mut s = match source {
        Some(src) => crate::http::connect_from(src, addr)?,
        None => TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)
            .map_err(|e| HarnessError::io(format!("connecting to {addr}"), e))?,
    };
    s.set_nodelay(true)
        .map_err(|e| HarnessError::io("setting TCP_NODELAY", e))?;
    s.write_all(hello)
        .map_err(|e| HarnessError::io(format!("sending the hello to {addr}"), e))?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut buf = BytesMut::new();
    loop {
        if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(pos + 1);
            let text = String::from_utf8_lossy(&line[..pos])
                .trim_end_matches('\r')
                .to_owned();
            let code = StatusCode::from_atoi(&line[..pos]);
            return Ok((s, text, code, buf));
        }
        match read_some(&mut s, &mut buf, deadline)? {
            ReadOutcome::Data => {}
            ReadOutcome::Eof => {
                return Err(HarnessError::Closed {
                    context: format!(
                        "waiting for the status line, got `{}`",
                        String::from_utf8_lossy(&buf)
                    ),
                });
            }
            ReadOutcome::TimedOut => {
                return Err(HarnessError::Timeout {
                    what: "the status line".into(),
                    waited: HANDSHAKE_TIMEOUT,
                    last: format!("got `{}`", String::from_utf8_lossy(&buf)),
                });
            }
        }
    }
}

enum ReadOutcome {
    Data,
    Eof,
    TimedOut,
}

/// Reads once into `buf`, waiting at most until `deadline` (and at most
/// `READ_SLICE`, so that callers get control back to do their duties).
fn read_some(s: &mut TcpStream, buf: &mut BytesMut, deadline: Instant) -> Result<ReadOutcome> {
    let now = Instant::now();
    if now >= deadline {
        return Ok(ReadOutcome::TimedOut);
    }
    let wait = (deadline - now)
        .min(READ_SLICE)
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(wait))
        .map_err(|e| HarnessError::io("setting a read timeout", e))?;
    let mut chunk = [0u8; 16384];
    match s.read(&mut chunk) {
        Ok(0) => Ok(ReadOutcome::Eof),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(ReadOutcome::Data)
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Ok(if Instant::now() >= deadline {
                ReadOutcome::TimedOut
            } else {
                ReadOutcome::Data
            })
        }
        // A signal delivered to this thread: just read again.
        Err(e) if e.kind() == ErrorKind::Interrupted => Ok(ReadOutcome::Data),
        // A reset after HAProxy closed on an error is an end of stream for us.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(ReadOutcome::Eof),
        Err(e) => Err(HarnessError::io("reading from the peer", e)),
    }
}

/// A peers-protocol session with HAProxy, after a successful handshake.
#[derive(Debug)]
pub struct MockPeer {
    stream: TcpStream,
    rx: BytesMut,
    /// The codec's receive state (table definitions, dictionary cache).
    pub decoder: Decoder,
    /// The codec's transmit state.
    pub encoder: Encoder,
    /// The automatic duties.
    pub duties: Duties,
    last_tx: Instant,
    /// Every message received so far, in order.
    pub log: Vec<Received>,
    /// Every message sent so far with its encoding, in order (duties included).
    pub sent: Vec<(Message, bytes::Bytes)>,
}

impl MockPeer {
    /// Wraps an established stream (handshake done) and sends the first heartbeat.
    pub fn from_stream(stream: TcpStream, leftover: BytesMut, duties: Duties) -> Result<MockPeer> {
        stream
            .set_nodelay(true)
            .map_err(|e| HarnessError::io("setting TCP_NODELAY", e))?;
        let mut p = MockPeer {
            stream,
            rx: leftover,
            decoder: Decoder::default(),
            encoder: Encoder::default(),
            duties,
            last_tx: Instant::now(),
            log: Vec::new(),
            sent: Vec::new(),
        };
        if duties.heartbeat {
            // HAProxy may check liveness within 50 ms of a collision (§2.4).
            p.send(&Message::Heartbeat)?;
        }
        Ok(p)
    }

    /// Dials HAProxy's peers port as `local_name`, calling HAProxy's local peer
    /// `remote_name`, with version 2.1. Fails unless the status is 200.
    pub fn dial(addr: SocketAddr, remote_name: &str, local_name: &str) -> Result<MockPeer> {
        MockPeer::dial_with(
            addr,
            remote_name,
            local_name,
            Version::V2_1,
            Duties::default(),
        )
    }

    /// `dial` with a protocol version (`2.0` downgrades: no timed updates) and duties.
    pub fn dial_with(
        addr: SocketAddr,
        remote_name: &str,
        local_name: &str,
        version: Version,
        duties: Duties,
    ) -> Result<MockPeer> {
        let hello = hello_bytes(version, remote_name, local_name)?;
        let (s, line, code, rest) = handshake_raw(addr, &hello)?;
        if code != StatusCode::Succeeded {
            return Err(HarnessError::Refused { line });
        }
        MockPeer::from_stream(s, rest, duties)
    }

    /// Accepts one connection on `listener` (the address HAProxy has for us), reads
    /// HAProxy's hello, checks that it calls `our_name`, answers `200` and returns the
    /// session with HAProxy's name (first token of its third line).
    pub fn accept(
        listener: &TcpListener,
        our_name: &str,
        timeout: Duration,
    ) -> Result<(MockPeer, String)> {
        listener
            .set_nonblocking(true)
            .map_err(|e| HarnessError::io("making the listener non-blocking", e))?;
        let deadline = Instant::now() + timeout;
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    if Instant::now() >= deadline {
                        return Err(HarnessError::Timeout {
                            what: "haproxy to dial the mock".into(),
                            waited: timeout,
                            last: "no connection".into(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(HarnessError::io("accepting", e)),
            }
        };
        s.set_nonblocking(false)
            .map_err(|e| HarnessError::io("making the stream blocking", e))?;
        // HAProxy must call us by `our_name`; any caller name is accepted here, the
        // lab checks it.
        let mut parser = HelloParser::new(our_name);
        let any_peer = |_: &str| true;
        let mut buf = BytesMut::new();
        let hello = loop {
            match parser.feed(&mut buf, &any_peer)? {
                Some(HelloOutcome::Complete(h)) => break h,
                Some(HelloOutcome::Reject(code)) => {
                    return Err(HarnessError::Unexpected(format!(
                        "haproxy's hello would be answered {code}"
                    )));
                }
                None => {}
            }
            match read_some(&mut s, &mut buf, deadline)? {
                ReadOutcome::Data => {}
                ReadOutcome::Eof | ReadOutcome::TimedOut => {
                    return Err(HarnessError::Closed {
                        context: "reading haproxy's hello".into(),
                    });
                }
            }
        };
        let caller = hello.local_name.clone();
        let rest = buf;
        s.write_all(b"200\n")
            .map_err(|e| HarnessError::io("sending status 200", e))?;
        Ok((MockPeer::from_stream(s, rest, Duties::default())?, caller))
    }

    /// Encodes and sends one message.
    pub fn send(&mut self, msg: &Message) -> Result<()> {
        let mut buf = BytesMut::new();
        self.encoder.encode(msg, &mut buf)?;
        self.send_raw(&buf)?;
        self.sent.push((msg.clone(), buf.freeze()));
        Ok(())
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .map_err(|e| HarnessError::io("writing to haproxy", e))?;
        self.last_tx = Instant::now();
        Ok(())
    }

    fn do_duties(&mut self, msg: &Message) -> Result<()> {
        match msg {
            Message::ResyncRequest if self.duties.answer_resync => {
                self.send(&Message::ResyncFinished)
            }
            Message::ResyncFinished | Message::ResyncPartial if self.duties.confirm => {
                self.send(&Message::ResyncConfirm)
            }
            Message::Update(u) if self.duties.ack => self.send(&Message::Ack {
                table_id: u.table_id,
                update_id: u.update_id,
            }),
            _ => Ok(()),
        }
    }

    fn maybe_heartbeat(&mut self) -> Result<()> {
        if self.duties.heartbeat && self.last_tx.elapsed() >= HEARTBEAT_EVERY {
            self.send(&Message::Heartbeat)?;
        }
        Ok(())
    }

    /// Receives the next message, waiting at most `timeout`, doing the duties
    /// meanwhile. A closed connection is `HarnessError::Closed`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let frame = split_frame(&mut self.rx).map_err(|e| {
                HarnessError::Unexpected(format!("cannot frame haproxy's bytes: {e:?}"))
            })?;
            if let Some(frame) = frame {
                let mut buf = BytesMut::from(&frame.raw[..]);
                let message = match self.decoder.decode(&mut buf) {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        return Err(HarnessError::Unexpected(format!(
                            "the codec wants more bytes than the whole message `{}`",
                            frame.hex()
                        )));
                    }
                    Err(e) => {
                        return Err(HarnessError::Unexpected(format!(
                            "the codec rejected `{}`: {e}",
                            frame.hex()
                        )));
                    }
                };
                if !buf.is_empty() {
                    return Err(HarnessError::Unexpected(format!(
                        "the codec left {} bytes of `{}` unread",
                        buf.len(),
                        frame.hex()
                    )));
                }
                self.do_duties(&message)?;
                let r = Received { frame, message };
                self.log.push(r.clone());
                return Ok(r);
            }
            self.maybe_heartbeat()?;
            match read_some(&mut self.stream, &mut self.rx, deadline)? {
                ReadOutcome::Data => {}
                ReadOutcome::Eof => {
                    return Err(HarnessError::Closed {
                        context: format!("{} bytes pending: {}", self.rx.len(), to_hex(&self.rx)),
                    });
                }
                ReadOutcome::TimedOut => {
                    return Err(HarnessError::Timeout {
                        what: "a message from haproxy".into(),
                        waited: timeout,
                        last: format!("{} bytes pending", self.rx.len()),
                    });
                }
            }
        }
    }

    /// Receives messages until `pred` accepts one, at most for `timeout`; returns
    /// everything received on the way, the accepted message last.
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Result<Vec<Received>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.recv(left).map_err(|e| match e {
                HarnessError::Timeout { .. } => HarnessError::Timeout {
                    what: "a matching message from haproxy".into(),
                    waited: timeout,
                    last: format!(
                        "received: {:?}",
                        got.iter()
                            .map(|r: &Received| &r.message)
                            .collect::<Vec<_>>()
                    ),
                },
                other => other,
            })?;
            let done = pred(&r.message);
            got.push(r);
            if done {
                return Ok(got);
            }
        }
    }

    /// Receives everything that arrives during `window` (doing the duties), stopping
    /// early only if the connection closes.
    pub fn collect_for(&mut self, window: Duration) -> Result<Vec<Received>> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(got);
            }
            match self.recv(left) {
                Ok(r) => got.push(r),
                Err(HarnessError::Timeout { .. }) => return Ok(got),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads raw bytes until HAProxy closes the connection, at most for `timeout`,
    /// without decoding or duties; returns what arrived (plus anything buffered).
    pub fn read_until_closed(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            match read_some(&mut self.stream, &mut self.rx, deadline)? {
                ReadOutcome::Data => {}
                ReadOutcome::Eof => return Ok(self.rx.split().to_vec()),
                ReadOutcome::TimedOut => {
                    return Err(HarnessError::Timeout {
                        what: "haproxy to close the connection".into(),
                        waited: timeout,
                        last: format!("got {}", to_hex(&self.rx)),
                    });
                }
            }
        }
    }
}
