//! The meaning of one token on its own: names, suffixes, durations, counts, file
//! modes and `<host>:<port>` addresses. Each checker reports what is wrong at the
//! token and returns the value only if it can be used.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::diag::Diagnostics;
use crate::ast::PeerAddr;
use crate::error::ErrorKind;
use crate::syntax::{AddrTok, Line, Tok};

/// Checks that a section or peer name uses only the characters HAProxy allows.
pub(super) fn check_name(c: &mut Diagnostics, line: &Line, tok: &Tok, what: &'static str) {
    let bad = tok
        .text
        .chars()
        .position(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | ':')));
    if let Some(pos) = bad {
        let ch = tok.text.chars().nth(pos).unwrap_or('?');
        let at = Tok {
            text: ch.to_string(),
            col: tok.col + u32::try_from(pos).unwrap_or(0),
            width: 1,
        };
        c.error_at(
            line.number,
            &line.text,
            &at,
            ErrorKind::InvalidName {
                what,
                name: tok.text.clone(),
                ch,
            },
        );
    }
}

/// Checks a suffix on its own; true if it can be used.
pub(super) fn suffix_ok(c: &mut Diagnostics, line: &Line, tok: &Tok) -> bool {
    let kind = if !tok.text.starts_with('.') {
        ErrorKind::SuffixWithoutDot {
            suffix: tok.text.clone(),
        }
    } else if tok.text.len() == 1 {
        ErrorKind::EmptySuffix {
            suffix: tok.text.clone(),
        }
    } else {
        return true;
    };
    c.error_at(line.number, &line.text, tok, kind);
    false
}

/// An octal file mode of at most four digits (`600`, `0660`).
pub(super) fn parse_mode(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(text, 8).ok()
}

/// `<digits>[us|ms|s|m|h|d]`, no unit meaning milliseconds as in HAProxy.
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let micros_per: u64 = match unit {
        "us" => 1,
        "" | "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return None,
    };
    n.checked_mul(micros_per).map(Duration::from_micros)
}

/// `<digits>[k|m|g]`, the suffixes multiplying by 1024 as in HAProxy's table
/// `size`.
pub(super) fn parse_size(text: &str) -> Option<usize> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let n: usize = digits.parse().ok()?;
    let per: usize = match unit {
        "" => 1,
        "k" | "K" => 1 << 10,
        "m" | "M" => 1 << 20,
        "g" | "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(per)
}

/// The most entries an output table may be given.
pub(super) const MAX_TABLE_SIZE: usize = 1 << 30;

/// A rule's `size`: from 1 entry to 1g.
pub(super) fn table_size(c: &mut Diagnostics, line: &Line, value: &Tok) -> Option<usize> {
    match parse_size(&value.text) {
        Some(n) if (1..=MAX_TABLE_SIZE).contains(&n) => Some(n),
        _ => {
            let kind = ErrorKind::InvalidNumber {
                what: "table size",
                value: value.text.clone(),
                expected: "a number of entries from 1 to 1g, with an optional k, m or g suffix (x1024)",
            };
            c.error_at(line.number, &line.text, value, kind);
            None
        }
    }
}

/// A duration greater than zero.
pub(super) fn duration_value(c: &mut Diagnostics, line: &Line, value: &Tok) -> Option<Duration> {
    let kind = match parse_duration(&value.text) {
        Some(d) if !d.is_zero() => return Some(d),
        Some(_) => ErrorKind::InvalidNumber {
            what: "duration",
            value: value.text.clone(),
            expected: "a duration greater than zero",
        },
        None => ErrorKind::InvalidDuration {
            value: value.text.clone(),
        },
    };
    c.error_at(line.number, &line.text, value, kind);
    None
}

/// The range a count must be in, and how to say it in an error.
pub(super) struct Count {
    /// What the number is, as in "invalid message size".
    pub(super) what: &'static str,
    pub(super) min: usize,
    pub(super) max: usize,
    /// The range in words, as in "a size from 256 to 16777216 bytes".
    pub(super) expected: &'static str,
}

/// A decimal count within `count`'s range.
pub(super) fn number(
    c: &mut Diagnostics,
    line: &Line,
    value: &Tok,
    count: &Count,
) -> Option<usize> {
    match value.text.parse::<usize>() {
        Ok(v) if (count.min..=count.max).contains(&v) => Some(v),
        _ => {
            c.error_at(
                line.number,
                &line.text,
                value,
                ErrorKind::InvalidNumber {
                    what: count.what,
                    value: value.text.clone(),
                    expected: count.expected,
                },
            );
            None
        }
    }
}

/// Checks `<host>:<port>` and reports the first thing wrong with it: the shape,
/// then the host, then the port.
pub(super) fn parse_addr(c: &mut Diagnostics, line: &Line, a: &AddrTok) -> Option<PeerAddr> {
    let port_tok = port_part(c, line, a)?;
    let host = host_value(c, line, a)?;
    let port = port_value(c, line, a, port_tok)?;
    Some(PeerAddr { host, port })
}

/// The port token, if the address has the shape `<host>:<port>`.
fn port_part<'a>(c: &mut Diagnostics, line: &Line, a: &'a AddrTok) -> Option<&'a Tok> {
    let (n, t) = (line.number, line.text.as_str());
    let whole = &a.whole.text;
    let kind = match &a.port {
        Some(p) if !p.text.contains(':') => return Some(p),
        Some(_) => {
            // `::1:10000` or `fe80::1`: an IPv6 address without brackets.
            let host = match whole.rsplit_once(':') {
                Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => whole.as_str(),
            };
            ErrorKind::Ipv6WithoutBrackets {
                host: host.to_owned(),
            }
        }
        None if a.host.text.starts_with('[') && !a.host.text.ends_with(']') => {
            ErrorKind::InvalidIpv6 {
                host: a.host.text.trim_start_matches('[').to_owned(),
            }
        }
        None => ErrorKind::MissingPort {
            addr: whole.clone(),
        },
    };
    c.error_at(n, t, &a.whole, kind);
    None
}

/// The host: a bracketed IPv6 address (kept without its brackets), an IPv4
/// address or a host name.
fn host_value(c: &mut Diagnostics, line: &Line, a: &AddrTok) -> Option<String> {
    let (n, t) = (line.number, line.text.as_str());
    let host_text = &a.host.text;
    if host_text.is_empty() {
        let kind = ErrorKind::MissingHost {
            addr: a.whole.text.clone(),
        };
        c.error_at(n, t, &a.whole, kind);
        return None;
    }
    if let Some(inner) = host_text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        if inner.parse::<Ipv6Addr>().is_err() {
            let kind = ErrorKind::InvalidIpv6 {
                host: inner.to_owned(),
            };
            c.error_at(n, t, &a.host, kind);
            return None;
        }
        return Some(inner.to_owned());
    }
    let chars_ok = host_text
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.' | '_'));
    let looks_numeric = host_text.chars().all(|ch| ch.is_ascii_digit() || ch == '.');
    let bad_ipv4 = looks_numeric && host_text.parse::<Ipv4Addr>().is_err();
    if !chars_ok || bad_ipv4 || host_text.starts_with(['.', '-']) {
        let kind = ErrorKind::InvalidHost {
            host: host_text.clone(),
        };
        c.error_at(n, t, &a.host, kind);
        return None;
    }
    Some(host_text.clone())
}

/// A port from 1 to 65535.
fn port_value(c: &mut Diagnostics, line: &Line, a: &AddrTok, port_tok: &Tok) -> Option<u16> {
    let (n, t) = (line.number, line.text.as_str());
    let p = &port_tok.text;
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        let at = if p.is_empty() { &a.whole } else { port_tok };
        c.error_at(n, t, at, ErrorKind::InvalidPort { port: p.clone() });
        return None;
    }
    match p.parse::<u16>() {
        Ok(v) if v > 0 => Some(v),
        _ => {
            let kind = ErrorKind::PortOutOfRange { port: p.clone() };
            c.error_at(n, t, port_tok, kind);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::{Stmt, parse_lines};

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10us"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("0660"), Some(0o660));
        assert_eq!(parse_mode("800"), None);
        assert_eq!(parse_mode("06600"), None);
    }

    /// The address of `  peer p <addr>`, checked: its value, or the error.
    fn addr(text: &str) -> Result<PeerAddr, ErrorKind> {
        let line = parse_lines(&format!("  peer p {text}")).remove(0).unwrap();
        let Stmt::Peer(peer) = &line.stmt else {
            panic!("not a peer line: {line:?}");
        };
        let mut c = Diagnostics::new("t.cfg");
        let value = parse_addr(&mut c, &line, peer.addr.as_ref().unwrap());
        match c.finish(crate::ast::Global::default(), Vec::new()) {
            Ok(_) => Ok(value.unwrap()),
            Err(e) => {
                assert!(value.is_none(), "{value:?} returned with an error");
                assert_eq!(e.errors.len(), 1, "{e}");
                Err(e.errors[0].kind.clone())
            }
        }
    }

    #[test]
    fn addresses() {
        let ok = |host: &str, port| {
            Ok(PeerAddr {
                host: host.to_owned(),
                port,
            })
        };
        assert_eq!(addr("127.0.0.1:10000"), ok("127.0.0.1", 10000));
        assert_eq!(addr("[::1]:65535"), ok("::1", 65535));
        assert_eq!(addr("aggr-1.example:1"), ok("aggr-1.example", 1));
        let port = |p: &str| Err(ErrorKind::PortOutOfRange { port: p.to_owned() });
        assert_eq!(addr("h:0"), port("0"));
        assert_eq!(addr("h:65536"), port("65536"));
        assert_eq!(addr("h:99999999999"), port("99999999999"));
        assert!(matches!(
            addr("1.2.3.999:5"),
            Err(ErrorKind::InvalidHost { .. })
        ));
        assert!(matches!(
            addr("::1:5"),
            Err(ErrorKind::Ipv6WithoutBrackets { .. })
        ));
        assert!(matches!(addr("h"), Err(ErrorKind::MissingPort { .. })));
    }
}
