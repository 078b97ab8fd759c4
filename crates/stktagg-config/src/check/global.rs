//! The lines of `global`: each setting checked, stored, and allowed once.

use std::collections::HashMap;

use super::diag::{Diagnostics, end_of_tok};
use super::keywords::{is_keyword, obsolete, suggest};
use super::tokens::{Count, duration_value, number, parse_addr, parse_mode};
use crate::ast::{AccessLevel, Global, Listen, LogLevel, StatsSocket};
use crate::error::{ErrorKind, WarningKind};
use crate::syntax::{AddrTok, Line, Stmt, Tok};

const MESSAGE_SIZE: Count = Count {
    what: "message size",
    min: 256,
    max: 16 << 20,
    expected: "a size from 256 to 16777216 bytes",
};

/// `global` as read so far. Every `global` section of the file adds to it.
pub(super) struct GlobalBuilder {
    pub(super) global: Global,
    /// The line of each setting already given, by name, for "given twice".
    seen: HashMap<String, u32>,
    /// The last `tune.reconnect-min` or `tune.reconnect-max` line: where a
    /// reversed range is reported.
    pub(super) reconnect_line: Option<(u32, String, Tok)>,
}

impl GlobalBuilder {
    pub(super) fn new() -> Self {
        Self {
            global: Global::default(),
            seen: HashMap::new(),
            reconnect_line: None,
        }
    }

    /// A `global` header: the first one is where the section is said to be.
    pub(super) fn header(&mut self, c: &Diagnostics, line: u32) {
        if self.global.span.is_none() {
            self.global.span = Some(c.span(line, 1));
        }
    }

    /// One line inside `global`; `kw` is its keyword.
    pub(super) fn stmt(&mut self, c: &mut Diagnostics, line: &Line, kw: &Tok) {
        match &line.stmt {
            Stmt::StatsSocket { path, options } => {
                let Some(path) = path else {
                    return c.missing(line, "stats socket", "a socket path");
                };
                self.stats_socket(c, line, kw, path, options);
            }
            Stmt::Prometheus { addr } => {
                let Some(addr) = addr else {
                    return c.missing(line, "prometheus", "a listen address `<host>:<port>`");
                };
                self.prometheus(c, line, kw, addr);
            }
            Stmt::LogLevel { value } => self.log_level(c, line, kw, value.as_ref()),
            Stmt::Timeout { kind, value } => {
                let Some(value) = value else {
                    return c.missing(line, "timeout", "a duration");
                };
                self.timeout(c, line, kw, kind, value);
            }
            Stmt::Tune { value } => self.tune(c, line, kw, value.as_ref()),
            _ => {}
        }
    }

    fn stats_socket(
        &mut self,
        c: &mut Diagnostics,
        line: &Line,
        kw: &Tok,
        path: &Tok,
        options: &[(Tok, Option<Tok>)],
    ) {
        let mut socket = StatsSocket {
            path: path.text.clone(),
            mode: None,
            level: AccessLevel::Operator,
            user: None,
            group: None,
            span: c.span(line.number, kw.col),
        };
        let mut opts_seen = HashMap::new();
        for (opt, value) in options {
            if !once(c, &mut opts_seen, line, opt, &opt.text) {
                continue;
            }
            let Some(value) = value else {
                let kind = ErrorKind::MissingArgument {
                    keyword: option_name(&opt.text),
                    what: "a value",
                };
                c.error_at(line.number, &line.text, &end_of_tok(opt), kind);
                continue;
            };
            socket_option(c, line, &mut socket, opt, value);
        }
        let sockets = &mut self.global.stats_sockets;
        if let Some(first) = sockets.iter().find(|s| s.path == socket.path) {
            let kind = ErrorKind::Duplicate {
                keyword: format!("stats socket {}", socket.path),
                line: first.span.line,
            };
            c.error_at(line.number, &line.text, path, kind);
        } else {
            sockets.push(socket);
        }
    }

    fn prometheus(&mut self, c: &mut Diagnostics, line: &Line, kw: &Tok, addr: &AddrTok) {
        if let Some(a) = parse_addr(c, line, addr)
            && once(c, &mut self.seen, line, kw, "prometheus")
        {
            self.global.prometheus = Some(Listen {
                addr: a,
                span: c.span(line.number, kw.col),
            });
        }
    }

    fn log_level(&mut self, c: &mut Diagnostics, line: &Line, kw: &Tok, value: Option<&Tok>) {
        const LEVELS: &str = "`error`, `warn`, `info`, `debug`, `trace`";
        let Some(value) = value else {
            let what = "a level (`error`, `warn`, `info`, `debug`, `trace`)";
            return c.missing(line, "log-level", what);
        };
        let level = match value.text.as_str() {
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            other => {
                let kind = ErrorKind::InvalidChoice {
                    what: "log level",
                    value: other.to_owned(),
                    expected: LEVELS,
                };
                return c.error_at(line.number, &line.text, value, kind);
            }
        };
        if once(c, &mut self.seen, line, kw, "log-level") {
            self.global.log_level = level;
        }
    }

    fn timeout(&mut self, c: &mut Diagnostics, line: &Line, kw: &Tok, kind: &Tok, value: &Tok) {
        let Some(d) = duration_value(c, line, value) else {
            return;
        };
        let key = format!("timeout {}", kind.text);
        if once(c, &mut self.seen, line, kw, &key) {
            let g = &mut self.global;
            match kind.text.as_str() {
                "hello" => g.hello_timeout = d,
                "connect" => g.connect_timeout = d,
                _ => g.idle_timeout = d,
            }
        }
    }

    fn tune(&mut self, c: &mut Diagnostics, line: &Line, kw: &Tok, value: Option<&Tok>) {
        let name = kw.text.as_str();
        if let Some(reason) = obsolete(name) {
            let kind = WarningKind::ObsoleteKeyword {
                keyword: name.to_owned(),
                reason,
            };
            return c.warn_at(line.number, &line.text, kw, kind);
        }
        if !is_keyword(name) {
            let kind = ErrorKind::UnknownKeyword {
                keyword: name.to_owned(),
                suggestion: suggest(name),
            };
            return c.error_at(line.number, &line.text, kw, kind);
        }
        let Some(value) = value else {
            return c.missing(line, "tune", "a value");
        };
        match name {
            "tune.heartbeat" | "tune.reconnect-min" | "tune.reconnect-max" => {
                self.tune_duration(c, line, kw, value);
            }
            _ => {
                if let Some(v) = number(c, line, value, &MESSAGE_SIZE)
                    && once(c, &mut self.seen, line, kw, name)
                {
                    self.global.max_message_size = v;
                }
            }
        }
    }

    fn tune_duration(&mut self, c: &mut Diagnostics, line: &Line, kw: &Tok, value: &Tok) {
        let Some(d) = duration_value(c, line, value) else {
            return;
        };
        let name = kw.text.as_str();
        if !once(c, &mut self.seen, line, kw, name) {
            return;
        }
        let g = &mut self.global;
        if name == "tune.heartbeat" {
            g.heartbeat_interval = d;
            return;
        }
        if name == "tune.reconnect-min" {
            g.reconnect_min = d;
        } else {
            g.reconnect_max = d;
        }
        self.reconnect_line = Some((line.number, line.text.clone(), value.clone()));
    }
}

/// One `stats socket` option with its value.
fn socket_option(
    c: &mut Diagnostics,
    line: &Line,
    socket: &mut StatsSocket,
    opt: &Tok,
    value: &Tok,
) {
    match opt.text.as_str() {
        "mode" => match parse_mode(&value.text) {
            Some(m) => socket.mode = Some(m),
            None => {
                let kind = ErrorKind::InvalidMode {
                    value: value.text.clone(),
                };
                c.error_at(line.number, &line.text, value, kind);
            }
        },
        "level" => match value.text.as_str() {
            "user" => socket.level = AccessLevel::User,
            "operator" => socket.level = AccessLevel::Operator,
            "admin" => socket.level = AccessLevel::Admin,
            other => {
                let kind = ErrorKind::InvalidChoice {
                    what: "level",
                    value: other.to_owned(),
                    expected: "`user`, `operator`, `admin`",
                };
                c.error_at(line.number, &line.text, value, kind);
            }
        },
        "user" => socket.user = Some(value.text.clone()),
        _ => socket.group = Some(value.text.clone()),
    }
}

/// The grammar's `stats socket` options, as a `&'static str` for diagnostics.
fn option_name(opt: &str) -> &'static str {
    match opt {
        "mode" => "mode",
        "level" => "level",
        "user" => "user",
        _ => "group",
    }
}

/// Records a setting that may be given once; reports the second one.
fn once(
    c: &mut Diagnostics,
    seen: &mut HashMap<String, u32>,
    line: &Line,
    kw: &Tok,
    key: &str,
) -> bool {
    if let Some(first) = seen.get(key) {
        let kind = ErrorKind::Duplicate {
            keyword: key.to_owned(),
            line: *first,
        };
        c.error_at(line.number, &line.text, kw, kind);
        false
    } else {
        seen.insert(key.to_owned(), line.number);
        true
    }
}
