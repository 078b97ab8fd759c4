//! From parsed lines to a checked [`Config`]: values, sections, and every rule
//! that spans more than one line. All errors are collected, none stops the walk.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::ast::{
    AccessLevel, Aggregations, Config, Forward, FromSpec, Global, Listen, LogLevel, Peer, PeerAddr,
    PeerRole, Rule, StatsSocket,
};
use crate::error::{ConfigError, ConfigErrors, ErrorKind, Location, Span, Warning, WarningKind};
use crate::syntax::{AddrTok, FromTok, Line, Stmt, Tok, parse_lines};

/// Every keyword, for "did you mean" suggestions.
const KEYWORDS: &[&str] = &[
    "global",
    "aggregations",
    "stats",
    "prometheus",
    "log-level",
    "timeout",
    "tune.heartbeat",
    "tune.reconnect-min",
    "tune.reconnect-max",
    "tune.max-message-size",
    "tune.max-pending",
    "peer",
    "from",
    "forward",
    "option",
    "no",
];

/// Which section we are in while walking the lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Current {
    /// Before any header.
    None,
    /// In `global`.
    Global,
    /// In the n-th `aggregations` section.
    Aggr(usize),
    /// In a section we did not recognise; its lines were reported with it.
    Unknown,
}

/// A section being built, with what the checks need to point back at lines.
struct SectionBuilder {
    name: String,
    header_line: u32,
    header_text: String,
    peers: Vec<Peer>,
    rules: Vec<Rule>,
    forwards: Vec<Forward>,
    teach_back: bool,
    teach_back_line: Option<u32>,
    /// Every suffix written in the section, for the uniqueness checks.
    suffixes: Vec<SuffixUse>,
    /// Line and address token of each peer that has an address.
    addr_lines: Vec<(usize, u32, String, Tok)>,
    group_lines: HashMap<u32, (u32, String, Tok)>,
    /// The text of each line of the section, to quote in late diagnostics.
    texts: HashMap<u32, String>,
    /// A `from` line was written, even if it was wrong: do not also say "no rule".
    rule_attempted: bool,
    /// A `local` peer was written, even if its line was wrong.
    local_attempted: bool,
    span: Span,
}

struct SuffixUse {
    suffix: String,
    what: &'static str,
    line: u32,
    text: String,
    tok: Tok,
}

struct Checker {
    file: Arc<str>,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

impl Checker {
    fn location(
        &self,
        line: u32,
        text: &str,
        col: u32,
        width: u32,
        note: Option<String>,
    ) -> Location {
        Location {
            span: Span {
                file: Arc::clone(&self.file),
                line,
                column: col,
            },
            width,
            line_text: text.to_owned(),
            note,
        }
    }

    fn error_at(&mut self, line: u32, text: &str, tok: &Tok, kind: ErrorKind) {
        self.error_note(line, text, tok, kind, None);
    }

    fn error_note(
        &mut self,
        line: u32,
        text: &str,
        tok: &Tok,
        kind: ErrorKind,
        note: Option<String>,
    ) {
        let location = self.location(line, text, tok.col, tok.width, note);
        self.errors.push(ConfigError { kind, location });
    }

    fn warn_at(&mut self, line: u32, text: &str, tok: &Tok, kind: WarningKind) {
        let location = self.location(line, text, tok.col, tok.width, None);
        self.warnings.push(Warning { kind, location });
    }
}

/// The column just after a line's last non-blank character, where a missing
/// argument would go.
fn end_of(text: &str) -> Tok {
    let code = text.split('#').next().unwrap_or("");
    let len = code.trim_end().chars().count();
    Tok {
        text: String::new(),
        col: u32::try_from(len + 2).unwrap_or(u32::MAX),
        width: 1,
    }
}

fn header_tok(text: &str) -> Tok {
    let word = text.split([' ', '\t', '#']).next().unwrap_or("");
    Tok {
        text: word.to_owned(),
        col: 1,
        width: u32::try_from(word.chars().count().max(1)).unwrap_or(u32::MAX),
    }
}

/// Checks `text` and builds the configuration, or returns every error found.
pub(crate) fn check(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut c = Checker {
        file: Arc::from(file),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let mut global = Global::default();
    let mut global_seen: HashMap<String, u32> = HashMap::new();
    let mut reconnect_line: Option<(u32, String, Tok)> = None;
    let mut sections: Vec<SectionBuilder> = Vec::new();
    let mut current = Current::None;

    for parsed in parse_lines(text) {
        let line = match parsed {
            Ok(line) => line,
            Err(e) => {
                if let Current::Aggr(i) = current
                    && let Some(s) = sections.get_mut(i)
                {
                    note_attempt(s, &e.text);
                }
                let location = c.location(
                    e.number,
                    &e.text,
                    e.col,
                    e.width,
                    e.usage.map(str::to_owned),
                );
                c.errors.push(ConfigError {
                    kind: e.kind,
                    location,
                });
                continue;
            }
        };
        let kw = line.keyword.clone().unwrap_or_else(|| end_of(&line.text));
        let (n, t) = (line.number, line.text.as_str());
        match &line.stmt {
            Stmt::Blank => {}
            Stmt::GlobalHeader => {
                current = Current::Global;
                if global.span.is_none() {
                    global.span = Some(c.location(n, t, 1, 6, None).span);
                }
            }
            Stmt::AggregationsHeader { name } => {
                let name = match name {
                    Some(tok) => {
                        check_name(&mut c, &line, tok, "section name");
                        if let Some(first) = sections.iter().find(|s| s.name == tok.text) {
                            let note = format!("first declared at line {}", first.header_line);
                            c.error_note(
                                n,
                                t,
                                tok,
                                ErrorKind::DuplicateSection {
                                    name: tok.text.clone(),
                                },
                                Some(note),
                            );
                        }
                        tok.text.clone()
                    }
                    None => {
                        c.error_at(n, t, &end_of(t), ErrorKind::MissingSectionName);
                        String::new()
                    }
                };
                let span = c.location(n, t, 1, 12, None).span;
                sections.push(SectionBuilder {
                    name,
                    header_line: n,
                    header_text: t.to_owned(),
                    peers: Vec::new(),
                    rules: Vec::new(),
                    forwards: Vec::new(),
                    teach_back: true,
                    teach_back_line: None,
                    suffixes: Vec::new(),
                    addr_lines: Vec::new(),
                    group_lines: HashMap::new(),
                    texts: HashMap::new(),
                    rule_attempted: false,
                    local_attempted: false,
                    span,
                });
                current = Current::Aggr(sections.len() - 1);
            }
            Stmt::UnknownSection => {
                let kind = if KEYWORDS.contains(&kw.text.as_str()) {
                    ErrorKind::KeywordNotIndented {
                        keyword: kw.text.clone(),
                    }
                } else {
                    ErrorKind::UnknownSection {
                        name: kw.text.clone(),
                    }
                };
                c.error_at(n, t, &kw, kind);
                // Its lines would only repeat the same mistake; a misplaced keyword
                // does not end the section it was meant for.
                if !matches!(
                    c.errors.last().map(|e| &e.kind),
                    Some(ErrorKind::KeywordNotIndented { .. })
                ) {
                    current = Current::Unknown;
                }
            }
            Stmt::UnknownKeyword => {
                let kind = if kw.text == "global" || kw.text == "aggregations" {
                    ErrorKind::SectionIndented {
                        keyword: kw.text.clone(),
                    }
                } else {
                    ErrorKind::UnknownKeyword {
                        keyword: kw.text.clone(),
                        suggestion: suggest(&kw.text),
                    }
                };
                if current != Current::Unknown {
                    c.error_at(n, t, &kw, kind);
                }
            }
            stmt => {
                let for_global = matches!(
                    stmt,
                    Stmt::StatsSocket { .. }
                        | Stmt::Prometheus { .. }
                        | Stmt::LogLevel { .. }
                        | Stmt::Timeout { .. }
                        | Stmt::Tune { .. }
                );
                match (current, for_global) {
                    (Current::Unknown, _) => {}
                    (Current::None, _) => c.error_at(
                        n,
                        t,
                        &kw,
                        ErrorKind::OutsideSection {
                            keyword: kw.text.clone(),
                        },
                    ),
                    (Current::Global, false) => c.error_at(
                        n,
                        t,
                        &kw,
                        ErrorKind::WrongSection {
                            keyword: kw.text.clone(),
                            section: "global".to_owned(),
                            allowed: "aggregations",
                        },
                    ),
                    (Current::Aggr(i), true) => {
                        let section = sections.get(i).map(|s| s.name.clone()).unwrap_or_default();
                        c.error_at(
                            n,
                            t,
                            &kw,
                            ErrorKind::WrongSection {
                                keyword: kw.text.clone(),
                                section: format!("aggregations {section}"),
                                allowed: "global",
                            },
                        );
                    }
                    (Current::Global, true) => global_stmt(
                        &mut c,
                        &line,
                        &kw,
                        &mut global,
                        &mut global_seen,
                        &mut reconnect_line,
                    ),
                    (Current::Aggr(i), false) => {
                        if let Some(s) = sections.get_mut(i) {
                            aggr_stmt(&mut c, &line, &kw, s);
                        }
                    }
                }
            }
        }
    }

    if global.reconnect_min > global.reconnect_max
        && let Some((n, t, tok)) = reconnect_line
    {
        c.error_at(n, &t, &tok, ErrorKind::ReconnectRange);
    }

    check_listeners(&mut c, &sections);
    let mut out = Vec::new();
    for s in sections {
        out.push(finish_section(&mut c, s));
    }

    c.errors
        .sort_by_key(|e| (e.location.span.line, e.location.span.column));
    c.warnings
        .sort_by_key(|w| (w.location.span.line, w.location.span.column));
    if c.errors.is_empty() {
        Ok(Config {
            global,
            sections: out,
            warnings: c.warnings,
        })
    } else {
        Err(ConfigErrors {
            errors: c.errors,
            warnings: c.warnings,
        })
    }
}

fn check_name(c: &mut Checker, line: &Line, tok: &Tok, what: &'static str) {
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

/// Records a directive that may appear once; reports the second one.
fn once(
    c: &mut Checker,
    seen: &mut HashMap<String, u32>,
    line: &Line,
    kw: &Tok,
    key: &str,
) -> bool {
    if let Some(first) = seen.get(key) {
        c.error_at(
            line.number,
            &line.text,
            kw,
            ErrorKind::Duplicate {
                keyword: key.to_owned(),
                line: *first,
            },
        );
        false
    } else {
        seen.insert(key.to_owned(), line.number);
        true
    }
}

fn missing(c: &mut Checker, line: &Line, keyword: &'static str, what: &'static str) {
    c.error_at(
        line.number,
        &line.text,
        &end_of(&line.text),
        ErrorKind::MissingArgument { keyword, what },
    );
}

fn global_stmt(
    c: &mut Checker,
    line: &Line,
    kw: &Tok,
    g: &mut Global,
    seen: &mut HashMap<String, u32>,
    reconnect_line: &mut Option<(u32, String, Tok)>,
) {
    let (n, t) = (line.number, line.text.as_str());
    match &line.stmt {
        Stmt::StatsSocket { path, options } => {
            let Some(path) = path else {
                return missing(c, line, "stats socket", "a socket path");
            };
            let mut socket = StatsSocket {
                path: path.text.clone(),
                mode: None,
                level: AccessLevel::Operator,
                user: None,
                group: None,
                span: c.location(n, t, kw.col, kw.width, None).span,
            };
            let mut opts_seen = HashMap::new();
            for (opt, value) in options {
                if !once(c, &mut opts_seen, line, opt, &opt.text) {
                    continue;
                }
                let Some(value) = value else {
                    c.error_at(
                        n,
                        t,
                        &end_of_tok(opt),
                        ErrorKind::MissingArgument {
                            keyword: option_name(&opt.text),
                            what: "a value",
                        },
                    );
                    continue;
                };
                match opt.text.as_str() {
                    "mode" => match parse_mode(&value.text) {
                        Some(m) => socket.mode = Some(m),
                        None => c.error_at(
                            n,
                            t,
                            value,
                            ErrorKind::InvalidMode {
                                value: value.text.clone(),
                            },
                        ),
                    },
                    "level" => match value.text.as_str() {
                        "user" => socket.level = AccessLevel::User,
                        "operator" => socket.level = AccessLevel::Operator,
                        "admin" => socket.level = AccessLevel::Admin,
                        other => c.error_at(
                            n,
                            t,
                            value,
                            ErrorKind::InvalidChoice {
                                what: "level",
                                value: other.to_owned(),
                                expected: "`user`, `operator`, `admin`",
                            },
                        ),
                    },
                    "user" => socket.user = Some(value.text.clone()),
                    _ => socket.group = Some(value.text.clone()),
                }
            }
            if let Some(first) = g.stats_sockets.iter().find(|s| s.path == socket.path) {
                let first_line = first.span.line;
                c.error_at(
                    n,
                    t,
                    path,
                    ErrorKind::Duplicate {
                        keyword: format!("stats socket {}", socket.path),
                        line: first_line,
                    },
                );
            } else {
                g.stats_sockets.push(socket);
            }
        }
        Stmt::Prometheus { addr } => {
            let Some(addr) = addr else {
                return missing(c, line, "prometheus", "a listen address `<host>:<port>`");
            };
            if let Some(a) = parse_addr(c, line, addr)
                && once(c, seen, line, kw, "prometheus")
            {
                g.prometheus = Some(Listen {
                    addr: a,
                    span: c.location(n, t, kw.col, kw.width, None).span,
                });
            }
        }
        Stmt::LogLevel { value } => {
            let Some(value) = value else {
                return missing(
                    c,
                    line,
                    "log-level",
                    "a level (`error`, `warn`, `info`, `debug`, `trace`)",
                );
            };
            let level = match value.text.as_str() {
                "error" => LogLevel::Error,
                "warn" | "warning" => LogLevel::Warn,
                "info" => LogLevel::Info,
                "debug" => LogLevel::Debug,
                "trace" => LogLevel::Trace,
                other => {
                    return c.error_at(
                        n,
                        t,
                        value,
                        ErrorKind::InvalidChoice {
                            what: "log level",
                            value: other.to_owned(),
                            expected: "`error`, `warn`, `info`, `debug`, `trace`",
                        },
                    );
                }
            };
            if once(c, seen, line, kw, "log-level") {
                g.log_level = level;
            }
        }
        Stmt::Timeout { kind, value } => {
            let Some(value) = value else {
                return missing(c, line, "timeout", "a duration");
            };
            let Some(d) = duration_value(c, line, value) else {
                return;
            };
            let key = format!("timeout {}", kind.text);
            if once(c, seen, line, kw, &key) {
                match kind.text.as_str() {
                    "hello" => g.hello_timeout = d,
                    "connect" => g.connect_timeout = d,
                    _ => g.idle_timeout = d,
                }
            }
        }
        Stmt::Tune { value } => {
            let name = kw.text.as_str();
            if !KEYWORDS.contains(&name) {
                return c.error_at(
                    n,
                    t,
                    kw,
                    ErrorKind::UnknownKeyword {
                        keyword: name.to_owned(),
                        suggestion: suggest(name),
                    },
                );
            }
            let Some(value) = value else {
                return missing(c, line, "tune", "a value");
            };
            match name {
                "tune.heartbeat" | "tune.reconnect-min" | "tune.reconnect-max" => {
                    let Some(d) = duration_value(c, line, value) else {
                        return;
                    };
                    if once(c, seen, line, kw, name) {
                        match name {
                            "tune.heartbeat" => g.heartbeat_interval = d,
                            "tune.reconnect-min" => {
                                g.reconnect_min = d;
                                *reconnect_line = Some((n, t.to_owned(), value.clone()));
                            }
                            _ => {
                                g.reconnect_max = d;
                                *reconnect_line = Some((n, t.to_owned(), value.clone()));
                            }
                        }
                    }
                }
                "tune.max-message-size" => {
                    if let Some(v) = number(
                        c,
                        line,
                        value,
                        "message size",
                        256,
                        16 << 20,
                        "a size from 256 to 16777216 bytes",
                    ) && once(c, seen, line, kw, name)
                    {
                        g.max_message_size = v;
                    }
                }
                _ => {
                    if let Some(v) = number(
                        c,
                        line,
                        value,
                        "pending bound",
                        1,
                        100_000_000,
                        "a count from 1 to 100000000",
                    ) && once(c, seen, line, kw, name)
                    {
                        g.max_pending = v;
                    }
                }
            }
        }
        _ => {}
    }
}

fn option_name(opt: &str) -> &'static str {
    match opt {
        "mode" => "mode",
        "level" => "level",
        "user" => "user",
        _ => "group",
    }
}

fn end_of_tok(tok: &Tok) -> Tok {
    Tok {
        text: String::new(),
        col: tok.col + tok.width + 1,
        width: 1,
    }
}

fn parse_mode(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(text, 8).ok()
}

/// `<digits>[us|ms|s|m|h|d]`, no unit meaning milliseconds as in HAProxy.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
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

fn duration_value(c: &mut Checker, line: &Line, value: &Tok) -> Option<Duration> {
    match parse_duration(&value.text) {
        Some(d) if !d.is_zero() => Some(d),
        Some(_) => {
            c.error_at(
                line.number,
                &line.text,
                value,
                ErrorKind::InvalidNumber {
                    what: "duration",
                    value: value.text.clone(),
                    expected: "a duration greater than zero",
                },
            );
            None
        }
        None => {
            c.error_at(
                line.number,
                &line.text,
                value,
                ErrorKind::InvalidDuration {
                    value: value.text.clone(),
                },
            );
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn number(
    c: &mut Checker,
    line: &Line,
    value: &Tok,
    what: &'static str,
    min: usize,
    max: usize,
    expected: &'static str,
) -> Option<usize> {
    match value.text.parse::<usize>() {
        Ok(v) if (min..=max).contains(&v) => Some(v),
        _ => {
            c.error_at(
                line.number,
                &line.text,
                value,
                ErrorKind::InvalidNumber {
                    what,
                    value: value.text.clone(),
                    expected,
                },
            );
            None
        }
    }
}

/// Checks `<host>:<port>` and reports what is wrong with it.
fn parse_addr(c: &mut Checker, line: &Line, a: &AddrTok) -> Option<PeerAddr> {
    let (n, t) = (line.number, line.text.as_str());
    let whole = &a.whole.text;
    let port_tok = match &a.port {
        Some(p) if p.text.contains(':') => {
            // `::1:10000` or `fe80::1`: an IPv6 address without brackets.
            let host = match whole.rsplit_once(':') {
                Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => whole.as_str(),
            };
            c.error_at(
                n,
                t,
                &a.whole,
                ErrorKind::Ipv6WithoutBrackets {
                    host: host.to_owned(),
                },
            );
            return None;
        }
        Some(p) => p,
        None => {
            if a.host.text.starts_with('[') && !a.host.text.ends_with(']') {
                c.error_at(
                    n,
                    t,
                    &a.whole,
                    ErrorKind::InvalidIpv6 {
                        host: a.host.text.trim_start_matches('[').to_owned(),
                    },
                );
            } else {
                c.error_at(
                    n,
                    t,
                    &a.whole,
                    ErrorKind::MissingPort {
                        addr: whole.clone(),
                    },
                );
            }
            return None;
        }
    };
    let host_text = &a.host.text;
    let host = if host_text.is_empty() {
        c.error_at(
            n,
            t,
            &a.whole,
            ErrorKind::MissingHost {
                addr: whole.clone(),
            },
        );
        return None;
    } else if let Some(inner) = host_text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        if inner.parse::<Ipv6Addr>().is_err() {
            c.error_at(
                n,
                t,
                &a.host,
                ErrorKind::InvalidIpv6 {
                    host: inner.to_owned(),
                },
            );
            return None;
        }
        inner.to_owned()
    } else {
        let chars_ok = host_text
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.' | '_'));
        let looks_numeric = host_text.chars().all(|ch| ch.is_ascii_digit() || ch == '.');
        let bad_ipv4 = looks_numeric && host_text.parse::<Ipv4Addr>().is_err();
        if !chars_ok || bad_ipv4 || host_text.starts_with(['.', '-']) {
            c.error_at(
                n,
                t,
                &a.host,
                ErrorKind::InvalidHost {
                    host: host_text.clone(),
                },
            );
            return None;
        }
        host_text.clone()
    };
    let p = &port_tok.text;
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        let at = if p.is_empty() { &a.whole } else { port_tok };
        c.error_at(n, t, at, ErrorKind::InvalidPort { port: p.clone() });
        return None;
    }
    match p.parse::<u32>() {
        Ok(v) if (1..=65535).contains(&v) => Some(PeerAddr {
            host,
            port: u16::try_from(v).unwrap_or(u16::MAX),
        }),
        _ => {
            c.error_at(
                n,
                t,
                port_tok,
                ErrorKind::PortOutOfRange { port: p.clone() },
            );
            None
        }
    }
}

/// Checks a suffix on its own; returns it if it can be used.
fn suffix_ok(c: &mut Checker, line: &Line, tok: &Tok) -> bool {
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

fn aggr_stmt(c: &mut Checker, line: &Line, kw: &Tok, s: &mut SectionBuilder) {
    let (n, t) = (line.number, line.text.as_str());
    s.texts.insert(n, t.to_owned());
    note_attempt(s, t);
    match &line.stmt {
        Stmt::Peer {
            name,
            addr,
            role,
            group,
        } => {
            let Some(name) = name else {
                return missing(c, line, "peer", "a name");
            };
            check_name(c, line, name, "peer name");
            let addr_value = addr.as_ref().and_then(|a| parse_addr(c, line, a));
            let role_kind = match role.as_ref().map(|r| r.text.as_str()) {
                Some("local") => PeerRole::Local,
                Some("down") => PeerRole::Down,
                Some("up") => PeerRole::Up { group: None },
                _ => PeerRole::Node,
            };
            let mut role_kind = role_kind;
            if let Some((gkw, gval)) = group {
                match (role_kind, gval) {
                    (PeerRole::Up { .. }, Some(v)) => match v.text.parse::<u32>() {
                        Ok(g) => {
                            role_kind = PeerRole::Up { group: Some(g) };
                            s.group_lines
                                .entry(g)
                                .or_insert_with(|| (n, t.to_owned(), v.clone()));
                        }
                        Err(_) => c.error_at(
                            n,
                            t,
                            v,
                            ErrorKind::InvalidGroup {
                                value: v.text.clone(),
                            },
                        ),
                    },
                    (PeerRole::Up { .. }, None) => c.error_at(
                        n,
                        t,
                        &end_of_tok(gkw),
                        ErrorKind::MissingArgument {
                            keyword: "group",
                            what: "a group number",
                        },
                    ),
                    (other, _) => {
                        let role = match other {
                            PeerRole::Local => Some("local"),
                            PeerRole::Down => Some("down"),
                            _ => None,
                        };
                        c.error_at(n, t, gkw, ErrorKind::GroupWithoutUp { role });
                    }
                }
            }
            if let Some(first) = s.peers.iter().find(|p| p.name == name.text) {
                let note = format!("first declared at line {}", first.span.line);
                c.error_note(
                    n,
                    t,
                    name,
                    ErrorKind::DuplicatePeer {
                        name: name.text.clone(),
                    },
                    Some(note),
                );
                return;
            }
            if role_kind == PeerRole::Local {
                if let Some(first) = s.peers.iter().find(|p| p.role == PeerRole::Local) {
                    let note = format!(
                        "`{}` is already `local` at line {}",
                        first.name, first.span.line
                    );
                    let r = role.clone().unwrap_or_else(|| name.clone());
                    c.error_note(
                        n,
                        t,
                        &r,
                        ErrorKind::TwoLocals {
                            name: name.text.clone(),
                            section: s.name.clone(),
                        },
                        Some(note),
                    );
                    return;
                }
                if addr.is_none() {
                    c.error_at(
                        n,
                        t,
                        name,
                        ErrorKind::LocalWithoutAddress {
                            name: name.text.clone(),
                        },
                    );
                }
            }
            if let (Some(a), Some(atok)) = (&addr_value, addr) {
                let key = a.canonical();
                let dup = s.addr_lines.iter().find(|(i, _, _, _)| {
                    s.peers
                        .get(*i)
                        .and_then(|p| p.addr.as_ref())
                        .is_some_and(|pa| pa.canonical() == key)
                });
                if let Some((i, first_line, _, _)) = dup {
                    let other = s.peers.get(*i).map(|p| p.name.clone()).unwrap_or_default();
                    let note = format!("first used at line {first_line}");
                    c.error_note(
                        n,
                        t,
                        &atok.whole,
                        ErrorKind::DuplicateAddress {
                            name: name.text.clone(),
                            addr: a.to_string(),
                            other,
                        },
                        Some(note),
                    );
                } else {
                    s.addr_lines
                        .push((s.peers.len(), n, t.to_owned(), atok.whole.clone()));
                }
            }
            s.peers.push(Peer {
                name: name.text.clone(),
                addr: addr_value,
                role: role_kind,
                span: c.location(n, t, kw.col, kw.width, None).span,
            });
        }
        Stmt::From { from, to_kw, to } => {
            let Some(from) = from else {
                return missing(c, line, "from", "a suffix or `any`, then `to <suffix>`");
            };
            if to_kw.is_none() {
                return missing(c, line, "from", "`to <suffix>`");
            }
            let Some(to) = to else {
                return missing(c, line, "to", "a suffix");
            };
            let from_spec = match from {
                FromTok::Any(tok) => {
                    if s.rules.iter().any(|r| r.from == FromSpec::Any) {
                        c.error_at(n, t, tok, ErrorKind::TwoFromAny);
                        return;
                    }
                    FromSpec::Any
                }
                FromTok::Suffix(tok) => {
                    if !suffix_ok(c, line, tok) {
                        return;
                    }
                    FromSpec::Suffix(tok.text.clone())
                }
            };
            if !suffix_ok(c, line, to) {
                return;
            }
            if let (FromSpec::Suffix(f), FromTok::Suffix(ftok)) = (&from_spec, from) {
                if *f == to.text {
                    c.error_at(n, t, to, ErrorKind::FromEqualsTo { suffix: f.clone() });
                    return;
                }
                s.suffixes.push(SuffixUse {
                    suffix: f.clone(),
                    what: "a `from` suffix",
                    line: n,
                    text: t.to_owned(),
                    tok: ftok.clone(),
                });
            }
            s.suffixes.push(SuffixUse {
                suffix: to.text.clone(),
                what: "a `to` suffix",
                line: n,
                text: t.to_owned(),
                tok: to.clone(),
            });
            s.rules.push(Rule {
                from: from_spec,
                to: to.text.clone(),
                span: c.location(n, t, kw.col, kw.width, None).span,
            });
        }
        Stmt::Forward { suffix } => {
            let Some(suffix) = suffix else {
                return missing(c, line, "forward", "a suffix");
            };
            if !suffix_ok(c, line, suffix) {
                return;
            }
            s.suffixes.push(SuffixUse {
                suffix: suffix.text.clone(),
                what: "a `forward` suffix",
                line: n,
                text: t.to_owned(),
                tok: suffix.clone(),
            });
            s.forwards.push(Forward {
                suffix: suffix.text.clone(),
                span: c.location(n, t, kw.col, kw.width, None).span,
            });
        }
        Stmt::TeachBack { on } => {
            if let Some(first) = s.teach_back_line {
                c.warn_at(n, t, kw, WarningKind::TeachBackRepeated { line: first });
            }
            s.teach_back = *on;
            s.teach_back_line = Some(n);
        }
        _ => {}
    }
}

/// Remembers that a line tried to declare a rule or the local peer, so that a
/// mistake on it is reported once, not again as "no rule" or "no local".
fn note_attempt(s: &mut SectionBuilder, text: &str) {
    let mut words = text.split([' ', '\t']).filter(|w| !w.is_empty());
    match words.next() {
        Some("from") => s.rule_attempted = true,
        Some("peer") if words.any(|w| w == "local") => s.local_attempted = true,
        _ => {}
    }
}

/// The checks that need the whole section.
fn finish_section(c: &mut Checker, s: SectionBuilder) -> Aggregations {
    let (n, t) = (s.header_line, s.header_text.clone());
    let head = header_tok(&t);
    if s.local_count() == 0 && !s.local_attempted {
        c.error_at(
            n,
            &t,
            &head,
            ErrorKind::NoLocal {
                section: s.name.clone(),
            },
        );
    }
    if s.rules.is_empty() && !s.rule_attempted {
        c.error_at(
            n,
            &t,
            &head,
            ErrorKind::NoRule {
                section: s.name.clone(),
            },
        );
    }
    // Every suffix names one kind of table: reused or overlapping suffixes would
    // make a table both input and output, or match two rules.
    for (i, u) in s.suffixes.iter().enumerate() {
        let earlier = &s.suffixes[..i];
        if let Some(first) = earlier.iter().find(|e| e.suffix == u.suffix) {
            c.error_at(
                u.line,
                &u.text,
                &u.tok,
                ErrorKind::SuffixReused {
                    suffix: u.suffix.clone(),
                    first_use: first.what,
                    line: first.line,
                },
            );
        } else if let Some(other) = earlier
            .iter()
            .find(|e| u.suffix.ends_with(&e.suffix) || e.suffix.ends_with(&u.suffix))
        {
            let (long, short) = if u.suffix.len() > other.suffix.len() {
                (&u.suffix, &other.suffix)
            } else {
                (&other.suffix, &u.suffix)
            };
            c.error_at(
                u.line,
                &u.text,
                &u.tok,
                ErrorKind::SuffixOverlap {
                    suffix: long.clone(),
                    other: short.clone(),
                    line: other.line,
                },
            );
        }
    }
    let has_up = s
        .peers
        .iter()
        .any(|p| matches!(p.role, PeerRole::Up { .. }));
    if !has_up {
        for f in &s.forwards {
            let tok = Tok {
                text: "forward".to_owned(),
                col: f.span.column,
                width: 7,
            };
            let text = s.texts.get(&f.span.line).cloned().unwrap_or_default();
            c.warn_at(
                f.span.line,
                &text,
                &tok,
                WarningKind::ForwardWithoutUp {
                    suffix: f.suffix.clone(),
                },
            );
        }
    } else if s.forwards.is_empty()
        && let Some(up) = s
            .peers
            .iter()
            .find(|p| matches!(p.role, PeerRole::Up { .. }))
    {
        {
            let tok = Tok {
                text: "peer".to_owned(),
                col: up.span.column,
                width: 4,
            };
            let text = s.texts.get(&up.span.line).cloned().unwrap_or_default();
            c.warn_at(
                up.span.line,
                &text,
                &tok,
                WarningKind::UpWithoutForward {
                    name: up.name.clone(),
                },
            );
        }
    }
    if !s
        .peers
        .iter()
        .any(|p| matches!(p.role, PeerRole::Node | PeerRole::Down))
    {
        c.warn_at(
            n,
            &t,
            &head,
            WarningKind::NoSource {
                section: s.name.clone(),
            },
        );
    }
    for (group, (line, text, tok)) in &s.group_lines {
        let members = s
            .peers
            .iter()
            .filter(|p| {
                p.role
                    == PeerRole::Up {
                        group: Some(*group),
                    }
            })
            .count();
        if members == 1 {
            c.warn_at(
                *line,
                text,
                tok,
                WarningKind::SingleMemberGroup { group: *group },
            );
        }
    }
    Aggregations {
        name: s.name,
        peers: s.peers,
        rules: s.rules,
        forwards: s.forwards,
        teach_back: s.teach_back,
        span: s.span,
    }
}

impl SectionBuilder {
    fn local_count(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| p.role == PeerRole::Local)
            .count()
    }
}

/// Two sections cannot listen on one address.
fn check_listeners(c: &mut Checker, sections: &[SectionBuilder]) {
    let mut seen: Vec<((String, u16), &str)> = Vec::new();
    for s in sections {
        let Some(local) = s.peers.iter().find(|p| p.role == PeerRole::Local) else {
            continue;
        };
        let Some(addr) = &local.addr else { continue };
        let key = addr.canonical();
        if let Some((_, other)) = seen.iter().find(|(k, _)| *k == key) {
            let text = s.texts.get(&local.span.line).cloned().unwrap_or_default();
            let location = c.location(local.span.line, &text, local.span.column, 4, None);
            c.errors.push(ConfigError {
                kind: ErrorKind::DuplicateListener {
                    addr: addr.to_string(),
                    other: (*other).to_owned(),
                },
                location,
            });
        } else {
            seen.push((key, &s.name));
        }
    }
}

/// The known keyword closest to `word`, if it is close enough to be a typo.
fn suggest(word: &str) -> Option<&'static str> {
    KEYWORDS
        .iter()
        .map(|k| (levenshtein(word, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn suggestions() {
        assert_eq!(suggest("pere"), Some("peer"));
        assert_eq!(suggest("froward"), Some("forward"));
        assert_eq!(suggest("zzzzzz"), None);
    }
}
