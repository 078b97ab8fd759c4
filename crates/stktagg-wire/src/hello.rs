//! The handshake: the caller's three hello lines and the acceptor's status line.
//!
//! The connecting side sends `HAProxyS <maj>.<min>\n<called peer>\n<caller> <pid>
//! <relative pid>\n` in one write and waits for `<code>\n`. The accepting side checks
//! each line as soon as it is complete and answers the first failure at once, so
//! [`HelloParser`] is a small state machine fed with bytes that stops at the first bad
//! line, in HAProxy's order (`peer_getline_version()`, `peer_getline_host()`,
//! `peer_getline_last()` in `peers.c`).
//!
//! Lines end with LF; a CR just before it is dropped. HAProxy reads a line into a
//! `tune.bufsize` buffer: if that fills with no LF, it closes without any status,
//! which is [`WireError::LineTooLong`] here. HAProxy handles the lines as C strings,
//! so a NUL byte ends a line's content; [`LineDecoder`] returns whole lines and the
//! parser cuts them at the first NUL to match.

use crate::error::WireError;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{BTreeSet, HashSet};
use std::fmt;

/// The protocol name that starts the first hello line.
pub const PROTO_NAME: &str = "HAProxyS";

/// The default line limit, HAProxy's default `tune.bufsize`.
pub const DEFAULT_MAX_LINE: usize = 16384;

/// A peers protocol version, `<major>.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// The major version; only 2 is accepted.
    pub major: u32,
    /// The minor version; 0 and 1 are accepted.
    pub minor: u32,
}

impl Version {
    /// Version 2.1, the current one (timed updates exist).
    pub const V2_1: Version = Version { major: 2, minor: 1 };
    /// Version 2.0, which HAProxy falls back to after a 502: no timed updates.
    pub const V2_0: Version = Version { major: 2, minor: 0 };

    /// Whether an acceptor of version 2.1 takes this version (major 2, minor <= 1).
    pub fn is_supported(self) -> bool {
        self.major == 2 && self.minor <= 1
    }

    /// Whether a session at this version must never be sent timed updates.
    pub fn is_downgraded(self) -> bool {
        self.minor == 0
    }

    /// Parses exactly `<digits>.<digits>` (HAProxy's `peer_get_version()`). Numbers
    /// too large for `u32` give `None`: HAProxy's `read_uint()` would wrap them, but no
    /// wrapped value is a version anyone sends.
    pub fn parse(s: &[u8]) -> Option<Version> {
        let dot = s.iter().position(|&c| c == b'.')?;
        let (major, minor) = (&s[..dot], &s[dot + 1..]);
        Some(Version {
            major: parse_digits(major)?,
            minor: parse_digits(minor)?,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A non-empty run of ASCII digits as a `u32`.
fn parse_digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// The hello a connecting peer sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hello {
    /// The protocol version announced (line 1).
    pub version: Version,
    /// The name of the peer being called (line 2): must be the acceptor's local name.
    pub remote_name: String,
    /// The caller's own name (first token of line 3).
    pub local_name: String,
    /// The caller's process id (second token of line 3; not checked by HAProxy).
    pub pid: u32,
    /// The caller's relative process id (third token; HAProxy always sends 1).
    pub relative_pid: u32,
}

impl Hello {
    /// A version 2.1 hello from `local_name` to `remote_name`, with relative pid 1 as
    /// HAProxy sends it.
    pub fn new(remote_name: impl Into<String>, local_name: impl Into<String>, pid: u32) -> Self {
        Hello {
            version: Version::V2_1,
            remote_name: remote_name.into(),
            local_name: local_name.into(),
            pid,
            relative_pid: 1,
        }
    }

    /// Whether the session is downgraded to 2.0 (never send timed updates).
    pub fn downgraded(&self) -> bool {
        self.version.is_downgraded()
    }

    /// Appends the three lines to `dst`, to be sent in one write.
    ///
    /// # Errors
    /// [`WireError::InvalidName`] if a name is empty or contains LF, CR or NUL, or if
    /// the caller's name contains a space (it would be cut at the space).
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), WireError> {
        check_name(&self.remote_name, false)?;
        check_name(&self.local_name, true)?;
        let text = format!(
            "{PROTO_NAME} {}\n{}\n{} {} {}\n",
            self.version, self.remote_name, self.local_name, self.pid, self.relative_pid
        );
        dst.put_slice(text.as_bytes());
        Ok(())
    }
}

fn check_name(name: &str, no_space: bool) -> Result<(), WireError> {
    let bad = |c: char| c == '\n' || c == '\r' || c == '\0' || (no_space && c == ' ');
    if name.is_empty() || name.contains(bad) {
        return Err(WireError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The status an acceptor answers a hello with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusCode {
    /// 200: the session is established.
    Succeeded,
    /// 300: try again later (HAProxy uses it only for its own local peer during a
    /// reload). Never send it to a real HAProxy: it stops dialing.
    TryAgain,
    /// 501: malformed hello.
    ProtocolError,
    /// 502: unsupported version.
    BadVersion,
    /// 503: line 2 is not the acceptor's local peer name.
    LocalPeerMismatch,
    /// 504: the caller is not a declared peer.
    UnknownPeer,
    /// Any other value, as `atoi()` reads it (garbage gives 0, which HAProxy treats
    /// as "never tried").
    Other(u32),
}

impl StatusCode {
    /// The numeric code.
    pub fn code(self) -> u32 {
        match self {
            StatusCode::Succeeded => 200,
            StatusCode::TryAgain => 300,
            StatusCode::ProtocolError => 501,
            StatusCode::BadVersion => 502,
            StatusCode::LocalPeerMismatch => 503,
            StatusCode::UnknownPeer => 504,
            StatusCode::Other(c) => c,
        }
    }

    /// The status with this numeric code.
    pub fn from_code(code: u32) -> StatusCode {
        match code {
            200 => StatusCode::Succeeded,
            300 => StatusCode::TryAgain,
            501 => StatusCode::ProtocolError,
            502 => StatusCode::BadVersion,
            503 => StatusCode::LocalPeerMismatch,
            504 => StatusCode::UnknownPeer,
            c => StatusCode::Other(c),
        }
    }

    /// Reads a status line the way HAProxy's `atoi()` does: leading white space, an
    /// optional sign, then the leading digits; anything else gives 0. A negative
    /// value is kept as its 32-bit two's complement.
    pub fn from_atoi(line: &[u8]) -> StatusCode {
        let mut rest = line;
        while let [c, tail @ ..] = rest {
            if matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
                rest = tail;
            } else {
                break;
            }
        }
        let negative = rest.first() == Some(&b'-');
        if matches!(rest.first(), Some(b'-' | b'+')) {
            rest = &rest[1..];
        }
        // glibc's atoi is `(int) strtol(..)`: saturate at 64 bits, then truncate.
        let mut value: i64 = 0;
        for &d in rest.iter().take_while(|d| d.is_ascii_digit()) {
            value = value.saturating_mul(10).saturating_add(i64::from(d - b'0'));
        }
        if negative {
            value = value.saturating_neg();
        }
        StatusCode::from_code(value as i32 as u32)
    }

    /// Appends the status line (`<code>\n`) to `dst`.
    pub fn encode(self, dst: &mut BytesMut) {
        dst.put_slice(format!("{}\n", self.code()).as_bytes());
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// Splits LF-terminated lines off a buffer, dropping a CR just before the LF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineDecoder {
    max_line: usize,
}

impl Default for LineDecoder {
    fn default() -> Self {
        LineDecoder::new(DEFAULT_MAX_LINE)
    }
}

impl LineDecoder {
    /// A decoder whose lines, LF included, may take at most `max_line` bytes (at
    /// least 2).
    pub fn new(max_line: usize) -> Self {
        LineDecoder {
            max_line: max_line.max(2),
        }
    }

    /// The line limit.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Takes one complete line off the front of `buf`, without its terminator.
    /// Returns `Ok(None)` and consumes nothing while the line is incomplete.
    ///
    /// # Errors
    /// [`WireError::LineTooLong`] once `max_line` bytes are buffered with no LF among
    /// them.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
        let window = &buf[..buf.len().min(self.max_line)];
        match window.iter().position(|&c| c == b'\n') {
            Some(lf) => {
                let mut line = buf.split_to(lf + 1);
                line.truncate(lf);
                if line.last() == Some(&b'\r') {
                    line.truncate(lf - 1);
                }
                Ok(Some(line.freeze()))
            }
            None if buf.len() >= self.max_line => Err(WireError::LineTooLong {
                limit: self.max_line,
            }),
            None => Ok(None),
        }
    }
}

/// Reads the acceptor's status line on the dialing side, with `atoi()` semantics.
///
/// # Errors
/// [`WireError::LineTooLong`] as [`LineDecoder::decode`].
pub fn decode_status(
    lines: &LineDecoder,
    buf: &mut BytesMut,
) -> Result<Option<StatusCode>, WireError> {
    Ok(lines
        .decode(buf)?
        .map(|line| StatusCode::from_atoi(c_str(&line))))
}

/// The content of a line as HAProxy's C string functions see it: up to the first NUL.
fn c_str(line: &[u8]) -> &[u8] {
    match line.iter().position(|&c| c == 0) {
        Some(nul) => &line[..nul],
        None => line,
    }
}

/// Answers "is this caller one of our declared peers?" for [`HelloParser`].
pub trait PeerDirectory {
    /// Whether `name` is a peer that may call us.
    fn is_known(&self, name: &str) -> bool;
}

impl<F: Fn(&str) -> bool> PeerDirectory for F {
    fn is_known(&self, name: &str) -> bool {
        self(name)
    }
}

impl PeerDirectory for HashSet<String> {
    fn is_known(&self, name: &str) -> bool {
        self.contains(name)
    }
}

impl PeerDirectory for BTreeSet<String> {
    fn is_known(&self, name: &str) -> bool {
        self.contains(name)
    }
}

impl PeerDirectory for [&str] {
    fn is_known(&self, name: &str) -> bool {
        self.contains(&name)
    }
}

impl PeerDirectory for Vec<String> {
    fn is_known(&self, name: &str) -> bool {
        self.iter().any(|n| n == name)
    }
}

/// What the acceptor learns from a hello.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HelloOutcome {
    /// All three lines are valid: answer 200. Check [`Hello::downgraded`].
    Complete(Hello),
    /// A line failed: answer this status and close.
    Reject(StatusCode),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Version,
    Host {
        version: Version,
    },
    Last {
        version: Version,
        remote_name: String,
    },
    Done,
}

/// The acceptor's hello validator: feed it bytes as they arrive, and answer as soon
/// as it yields an outcome.
///
/// It applies HAProxy 2.6's checks in order, one line at a time:
/// 1. line 1 must start with `HAProxyS ` (one space), else 501; the rest must be
///    exactly `<digits>.<digits>` with major 2 and minor <= 1, else 502;
/// 2. line 2 must equal our local name, else 503;
/// 3. line 3 must contain a space, else 501; its first token must be a known peer,
///    else 504.
///
/// The 300 answer (the caller is our own local name while a session with it exists)
/// depends on session state and is the daemon's business. The parser never consumes
/// bytes after the third line: they belong to the message stream.
#[derive(Debug, Clone)]
pub struct HelloParser {
    local_name: String,
    lines: LineDecoder,
    stage: Stage,
}

impl HelloParser {
    /// A parser for an acceptor whose local peer name is `local_name`, with the
    /// default line limit.
    pub fn new(local_name: impl Into<String>) -> Self {
        Self::with_line_decoder(local_name, LineDecoder::default())
    }

    /// A parser with a custom line limit.
    pub fn with_line_decoder(local_name: impl Into<String>, lines: LineDecoder) -> Self {
        HelloParser {
            local_name: local_name.into(),
            lines,
            stage: Stage::Version,
        }
    }

    /// Whether an outcome was already returned.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Consumes the complete lines of `buf` and returns the outcome once one is
    /// known; `Ok(None)` while more bytes are needed or after the outcome was given.
    ///
    /// # Errors
    /// [`WireError::LineTooLong`]: close the connection without a status, as HAProxy
    /// does.
    pub fn feed(
        &mut self,
        buf: &mut BytesMut,
        peers: &(impl PeerDirectory + ?Sized),
    ) -> Result<Option<HelloOutcome>, WireError> {
        loop {
            if self.stage == Stage::Done {
                return Ok(None);
            }
            let Some(line) = self.lines.decode(buf)? else {
                return Ok(None);
            };
            let line = c_str(&line);
            let stage = std::mem::replace(&mut self.stage, Stage::Done);
            match stage {
                Stage::Version => {
                    let Some(version) = line
                        .strip_prefix(PROTO_NAME.as_bytes())
                        .and_then(|r| r.strip_prefix(b" "))
                    else {
                        return Ok(Some(HelloOutcome::Reject(StatusCode::ProtocolError)));
                    };
                    match Version::parse(version) {
                        Some(version) if version.is_supported() => {
                            self.stage = Stage::Host { version };
                        }
                        _ => return Ok(Some(HelloOutcome::Reject(StatusCode::BadVersion))),
                    }
                }
                Stage::Host { version } => {
                    if line != self.local_name.as_bytes() {
                        return Ok(Some(HelloOutcome::Reject(StatusCode::LocalPeerMismatch)));
                    }
                    self.stage = Stage::Last {
                        version,
                        remote_name: self.local_name.clone(),
                    };
                }
                Stage::Last {
                    version,
                    remote_name,
                } => {
                    let Some(space) = line.iter().position(|&c| c == b' ') else {
                        return Ok(Some(HelloOutcome::Reject(StatusCode::ProtocolError)));
                    };
                    // A caller name that is not UTF-8 cannot be a configured peer.
                    let caller = match std::str::from_utf8(&line[..space]) {
                        Ok(name) if peers.is_known(name) => name.to_owned(),
                        _ => return Ok(Some(HelloOutcome::Reject(StatusCode::UnknownPeer))),
                    };
                    let mut tokens = line[space + 1..].split(|&c| c == b' ');
                    let pid = tokens.next().map_or(0, atoi_u32);
                    let relative_pid = tokens.next().map_or(0, atoi_u32);
                    return Ok(Some(HelloOutcome::Complete(Hello {
                        version,
                        remote_name,
                        local_name: caller,
                        pid,
                        relative_pid,
                    })));
                }
                Stage::Done => return Ok(None),
            }
        }
    }
}

fn atoi_u32(s: &[u8]) -> u32 {
    StatusCode::from_atoi(s).code()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEERS: &[&str] = &["hap1", "hap2"];

    /// Feeds `input` to an acceptor named `agg` and returns its outcome.
    fn accept(input: &[u8]) -> Result<Option<HelloOutcome>, WireError> {
        let mut buf = BytesMut::from(input);
        HelloParser::new("agg").feed(&mut buf, PEERS)
    }

    #[track_caller]
    fn check_reject(input: &str, code: u32) {
        match accept(input.as_bytes()) {
            Ok(Some(HelloOutcome::Reject(s))) => assert_eq!(s.code(), code, "{input:?}"),
            other => panic!("{input:?}: expected {code}, got {other:?}"),
        }
    }

    #[test]
    fn captured_hello_is_accepted() {
        let out = accept(b"HAProxyS 2.1\nagg\nhap1 7845 1\n").unwrap();
        let expected = Hello {
            version: Version::V2_1,
            remote_name: "agg".into(),
            local_name: "hap1".into(),
            pid: 7845,
            relative_pid: 1,
        };
        assert_eq!(out, Some(HelloOutcome::Complete(expected.clone())));
        assert!(!expected.downgraded());
        let mut buf = BytesMut::new();
        Hello::new("agg", "hap1", 7845).encode(&mut buf).unwrap();
        assert_eq!(&buf[..], b"HAProxyS 2.1\nagg\nhap1 7845 1\n");
    }

    #[test]
    fn version_2_0_is_accepted_and_downgraded() {
        let out = accept(b"HAProxyS 2.0\r\nagg\r\nhap2 1 1\r\n").unwrap();
        let Some(HelloOutcome::Complete(h)) = out else {
            panic!("{out:?}")
        };
        assert_eq!(h.version, Version::V2_0);
        assert!(h.downgraded());
        assert_eq!(h.local_name, "hap2");
    }

    #[test]
    fn rejections_in_haproxy_order() {
        check_reject("HAProxyX 2.1\nagg\nhap1 1 1\n", 501);
        check_reject("HAProxyS\nagg\nhap1 1 1\n", 501);
        check_reject("HAProxyS  2.1\n", 502);
        check_reject("HAProxyS 2.2\n", 502);
        check_reject("HAProxyS 3.0\n", 502);
        check_reject("HAProxyS 1.0\n", 502);
        check_reject("HAProxyS 2.1.0\n", 502);
        check_reject("HAProxyS 2.\n", 502);
        check_reject("HAProxyS .1\n", 502);
        check_reject("HAProxyS 2.1 \n", 502);
        check_reject("HAProxyS 99999999999.1\n", 502);
        check_reject("HAProxyS 2.1\nother\nhap1 1 1\n", 503);
        check_reject("HAProxyS 2.1\nAgg\n", 503);
        check_reject("HAProxyS 2.1\nagg\nhap1\n", 501);
        check_reject("HAProxyS 2.1\nagg\n\n", 501);
        check_reject("HAProxyS 2.1\nagg\nnobody 1 1\n", 504);
        check_reject("HAProxyS 2.1\nagg\n hap1 1 1\n", 504);
        // A NUL ends the line's content, as in C.
        check_reject("HAProxyS 2.1\nagg\nhap1\0 1 1\n", 501);
        assert!(matches!(
            accept(b"HAProxyS 2.1\nagg\0junk\nhap1 1 1\n"),
            Ok(Some(HelloOutcome::Complete(_)))
        ));
    }

    #[test]
    fn answers_at_the_first_bad_line() {
        // Line 2 is wrong; line 3 has not arrived: the answer is already known.
        check_reject("HAProxyS 2.1\nother\n", 503);
        // Incomplete lines give nothing yet and consume nothing of the partial line.
        let mut buf = BytesMut::from(&b"HAProxyS 2.1\nag"[..]);
        let mut p = HelloParser::new("agg");
        assert_eq!(p.feed(&mut buf, PEERS).unwrap(), None);
        assert_eq!(&buf[..], b"ag");
    }

    #[test]
    fn byte_by_byte_feeding_stops_after_line_three() {
        let input = b"HAProxyS 2.1\nagg\nhap1 42 1\n\x00\x04";
        let mut p = HelloParser::new("agg");
        let mut buf = BytesMut::new();
        let mut outcome = None;
        for &b in input {
            buf.put_u8(b);
            if let Some(o) = p.feed(&mut buf, PEERS).unwrap() {
                assert!(outcome.is_none());
                outcome = Some(o);
            }
        }
        assert!(p.is_done());
        let Some(HelloOutcome::Complete(h)) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(h.pid, 42);
        // The heartbeat after the hello is left for the message decoder.
        assert_eq!(&buf[..], b"\x00\x04");
    }

    #[test]
    fn directory_closures_and_sets() {
        let known = |n: &str| n.starts_with("hap");
        let mut buf = BytesMut::from(&b"HAProxyS 2.1\nagg\nhap9 1 1\n"[..]);
        let out = HelloParser::new("agg").feed(&mut buf, &known).unwrap();
        assert!(matches!(out, Some(HelloOutcome::Complete(_))));
        let set: HashSet<String> = ["x".to_owned()].into();
        let mut buf = BytesMut::from(&b"HAProxyS 2.1\nagg\nhap9 1 1\n"[..]);
        let out = HelloParser::new("agg").feed(&mut buf, &set).unwrap();
        assert_eq!(out, Some(HelloOutcome::Reject(StatusCode::UnknownPeer)));
    }

    #[test]
    fn long_lines_error_without_status() {
        let lines = LineDecoder::new(8);
        let mut buf = BytesMut::from(&b"1234567\n"[..]);
        assert_eq!(
            lines.decode(&mut buf).unwrap().as_deref(),
            Some(&b"1234567"[..])
        );
        let mut buf = BytesMut::from(&b"1234567"[..]);
        assert_eq!(lines.decode(&mut buf).unwrap(), None);
        buf.put_u8(b'8');
        assert!(matches!(
            lines.decode(&mut buf),
            Err(WireError::LineTooLong { limit: 8 })
        ));
        let mut buf = BytesMut::from(&vec![b'H'; DEFAULT_MAX_LINE][..]);
        assert!(matches!(
            HelloParser::new("agg").feed(&mut buf, PEERS),
            Err(WireError::LineTooLong { limit: 16384 })
        ));
    }

    #[test]
    fn cr_is_only_stripped_before_lf() {
        let lines = LineDecoder::default();
        let mut buf = BytesMut::from(&b"a\rb\r\n\r\n\n"[..]);
        assert_eq!(
            lines.decode(&mut buf).unwrap().as_deref(),
            Some(&b"a\rb"[..])
        );
        assert_eq!(lines.decode(&mut buf).unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(lines.decode(&mut buf).unwrap().as_deref(), Some(&b""[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_status_code() {
        let table = [
            (StatusCode::Succeeded, 200),
            (StatusCode::TryAgain, 300),
            (StatusCode::ProtocolError, 501),
            (StatusCode::BadVersion, 502),
            (StatusCode::LocalPeerMismatch, 503),
            (StatusCode::UnknownPeer, 504),
            (StatusCode::Other(110), 110),
        ];
        for (status, code) in table {
            assert_eq!(status.code(), code);
            assert_eq!(StatusCode::from_code(code), status);
            let mut buf = BytesMut::new();
            status.encode(&mut buf);
            assert_eq!(&buf[..], format!("{code}\n").as_bytes());
            let got = decode_status(&LineDecoder::default(), &mut buf).unwrap();
            assert_eq!(got, Some(status));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn status_lines_follow_atoi() {
        let table: &[(&[u8], u32)] = &[
            (b"200", 200),
            (b"200 OK", 200),
            (b"  503", 503),
            (b"+504", 504),
            (b"garbage", 0),
            (b"", 0),
            (b"-1", u32::MAX),
            (b"12x34", 12),
        ];
        for &(line, code) in table {
            assert_eq!(StatusCode::from_atoi(line).code(), code, "{line:?}");
        }
        let mut buf = BytesMut::from(&b"20"[..]);
        assert_eq!(
            decode_status(&LineDecoder::default(), &mut buf).unwrap(),
            None
        );
        buf.put_slice(b"0\r\n");
        assert_eq!(
            decode_status(&LineDecoder::default(), &mut buf).unwrap(),
            Some(StatusCode::Succeeded)
        );
    }

    #[test]
    fn hello_names_are_checked() {
        let mut buf = BytesMut::new();
        for (remote, local) in [
            ("", "a"),
            ("a", ""),
            ("a\nb", "c"),
            ("a", "b c"),
            ("a", "b\r"),
        ] {
            let err = Hello::new(remote, local, 1).encode(&mut buf).unwrap_err();
            assert!(
                matches!(err, WireError::InvalidName { .. }),
                "{remote:?} {local:?}"
            );
        }
        assert!(buf.is_empty());
        // A space is fine in the called name: line 2 is compared whole.
        Hello::new("a b", "c", 1).encode(&mut buf).unwrap();
        let mut parser = HelloParser::new("a b");
        let out = parser.feed(&mut buf, &|n: &str| n == "c").unwrap();
        assert!(matches!(out, Some(HelloOutcome::Complete(h)) if h.remote_name == "a b"));
    }
}
