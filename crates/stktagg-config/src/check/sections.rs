//! What is kept about one `aggregations` section while its lines are read: its
//! peers, rules and forwards, every suffix it names, and the text of its lines
//! for diagnostics given once the section is complete. Also the lines that only
//! feed that state: `from`, `forward`, `default-server`, `shards` and
//! `[no] option teach-back|addr-check`.

use std::collections::HashMap;

use super::diag::Diagnostics;
use super::peers::{MAX_SHARDS, Peers};
use super::tls::{Place, TLS_KEYWORDS, TlsLine};
use super::tokens::{Count, number, suffix_ok};
use crate::ast::{Aggregations, Forward, FromSpec, Rule};
use crate::error::{ErrorKind, Span, WarningKind};
use crate::syntax::{FromTok, Line, OptTok, Stmt, Tok};

/// One `aggregations` section being read.
pub(super) struct SectionBuilder {
    pub(super) name: String,
    pub(super) header_line: u32,
    pub(super) header_text: String,
    pub(super) peers: Peers,
    pub(super) rules: Vec<Rule>,
    pub(super) forwards: Vec<Forward>,
    teach_back: bool,
    addr_check: bool,
    /// `shards <n>`, with its line and value token.
    pub(super) shards: Option<(u32, u32, String, Tok)>,
    /// The `default-server` line's TLS options, if the section has one.
    pub(super) default_server: Option<TlsLine>,
    /// Where each `option` was last set, by name.
    option_lines: HashMap<String, u32>,
    /// Every suffix written in the section, for the uniqueness checks.
    pub(super) suffixes: Vec<SuffixUse>,
    /// The text of each line of the section, to quote in late diagnostics.
    texts: HashMap<u32, String>,
    /// A `from` line was written, even if it was wrong: do not also say "no rule".
    pub(super) rule_attempted: bool,
    /// A `local` peer was written, even if its line was wrong.
    pub(super) local_attempted: bool,
    span: Span,
}

/// One suffix written in a section, and where.
pub(super) struct SuffixUse {
    pub(super) suffix: String,
    /// Which kind of suffix, as in "already used as a `to` suffix".
    pub(super) what: &'static str,
    pub(super) line: u32,
    pub(super) text: String,
    pub(super) tok: Tok,
}

impl SectionBuilder {
    /// A section whose header is line `line`, `text`.
    pub(super) fn new(name: String, line: u32, text: &str, span: Span) -> Self {
        Self {
            name,
            header_line: line,
            header_text: text.to_owned(),
            peers: Peers::default(),
            rules: Vec::new(),
            forwards: Vec::new(),
            teach_back: true,
            addr_check: true,
            shards: None,
            default_server: None,
            option_lines: HashMap::new(),
            suffixes: Vec::new(),
            texts: HashMap::new(),
            rule_attempted: false,
            local_attempted: false,
            span,
        }
    }

    /// One line inside the section; `kw` is its keyword.
    pub(super) fn stmt(&mut self, c: &mut Diagnostics, line: &Line, kw: &Tok) {
        self.texts.insert(line.number, line.text.clone());
        self.note_attempt(&line.text);
        match &line.stmt {
            Stmt::Peer(toks) => self.peers.add(c, line, kw, &self.name, toks),
            Stmt::From {
                from,
                to_kw,
                to,
                size,
            } => {
                let Some(from) = from else {
                    return c.missing(line, "from", "a suffix or `any`, then `to <suffix>`");
                };
                if to_kw.is_none() {
                    return c.missing(line, "from", "`to <suffix>`");
                }
                let Some(to) = to else {
                    return c.missing(line, "to", "a suffix");
                };
                let size = match size {
                    None => None,
                    Some((_, None)) => return c.missing(line, "size", "a number of entries"),
                    Some((_, Some(v))) => match super::tokens::table_size(c, line, v) {
                        Some(n) => Some(n),
                        None => return,
                    },
                };
                self.rule(c, line, kw, from, to, size);
            }
            Stmt::Forward { suffix } => {
                let Some(suffix) = suffix else {
                    return c.missing(line, "forward", "a suffix");
                };
                self.forward(c, line, kw, suffix);
            }
            Stmt::Option { name, on } => self.option(c, line, kw, name, *on),
            Stmt::Shards { value } => {
                let Some(value) = value else {
                    return c.missing(line, "shards", "a number of shards");
                };
                self.shards(c, line, value);
            }
            Stmt::DefaultServer { options } => self.default_server(c, line, kw, options),
            _ => {}
        }
    }

    /// Remembers that a line tried to declare a rule or the local peer, so that
    /// a mistake on it is reported once, not again as "no rule" or "no local".
    pub(super) fn note_attempt(&mut self, text: &str) {
        // A comment starts at `#`, inside a word too (as the grammar reads it):
        // `peer a#b local` declares `a`, not a local peer.
        let code = text.split('#').next().unwrap_or_default();
        let mut words = code.split([' ', '\t']).filter(|w| !w.is_empty());
        match words.next() {
            Some("from") => self.rule_attempted = true,
            Some("peer") if words.any(|w| w == "local") => self.local_attempted = true,
            _ => {}
        }
    }

    /// The text of line `line` of the section.
    pub(super) fn text_of(&self, line: u32) -> String {
        self.texts.get(&line).cloned().unwrap_or_default()
    }

    /// `from <suffix>|any to <suffix> [size <entries>]`.
    fn rule(
        &mut self,
        c: &mut Diagnostics,
        line: &Line,
        kw: &Tok,
        from: &FromTok,
        to: &Tok,
        size: Option<usize>,
    ) {
        let (n, t) = (line.number, line.text.as_str());
        let from_tok = match from {
            FromTok::Any(tok) => {
                if self.rules.iter().any(|r| r.from == FromSpec::Any) {
                    return c.error_at(n, t, tok, ErrorKind::TwoFromAny);
                }
                None
            }
            FromTok::Suffix(tok) => {
                if !suffix_ok(c, line, tok) {
                    return;
                }
                Some(tok)
            }
        };
        if !suffix_ok(c, line, to) {
            return;
        }
        let from_spec = match from_tok {
            Some(f) if f.text == to.text => {
                let kind = ErrorKind::FromEqualsTo {
                    suffix: f.text.clone(),
                };
                return c.error_at(n, t, to, kind);
            }
            Some(f) => {
                self.use_suffix(line, f, "a `from` suffix");
                FromSpec::Suffix(f.text.clone())
            }
            None => FromSpec::Any,
        };
        self.use_suffix(line, to, "a `to` suffix");
        self.rules.push(Rule {
            from: from_spec,
            to: to.text.clone(),
            size,
            span: c.span(n, kw.col),
        });
    }

    /// `forward <suffix>`.
    fn forward(&mut self, c: &mut Diagnostics, line: &Line, kw: &Tok, suffix: &Tok) {
        if !suffix_ok(c, line, suffix) {
            return;
        }
        self.use_suffix(line, suffix, "a `forward` suffix");
        self.forwards.push(Forward {
            suffix: suffix.text.clone(),
            span: c.span(line.number, kw.col),
        });
    }

    /// `[no] option <name>`: the last line wins, with a warning.
    fn option(&mut self, c: &mut Diagnostics, line: &Line, kw: &Tok, name: &Tok, on: bool) {
        let option = name.text.clone();
        if let Some(first) = self.option_lines.insert(option.clone(), line.number) {
            let kind = WarningKind::OptionRepeated {
                option: option.clone(),
                line: first,
            };
            c.warn_at(line.number, &line.text, kw, kind);
        }
        match option.as_str() {
            "teach-back" => self.teach_back = on,
            "addr-check" => self.addr_check = on,
            // The grammar knows no other option.
            _ => {}
        }
    }

    /// `shards <n>`, at most once.
    fn shards(&mut self, c: &mut Diagnostics, line: &Line, value: &Tok) {
        const SHARDS: Count = Count {
            what: "number of shards",
            min: 1,
            max: MAX_SHARDS,
            expected: "an integer from 1 to 1024",
        };
        let Some(n) = number(c, line, value, &SHARDS) else {
            return;
        };
        if let Some((_, first, _, _)) = &self.shards {
            let kind = ErrorKind::Duplicate {
                keyword: "shards".to_owned(),
                line: *first,
            };
            return c.error_at(line.number, &line.text, value, kind);
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.shards = Some((n, line.number, line.text.clone(), value.clone()));
    }

    /// `default-server <tls options>`: once per section.
    fn default_server(&mut self, c: &mut Diagnostics, line: &Line, kw: &Tok, options: &[OptTok]) {
        let (n, t) = (line.number, line.text.as_str());
        if let Some(first) = &self.default_server {
            let kind = ErrorKind::Duplicate {
                keyword: "default-server".to_owned(),
                line: first.line,
            };
            return c.error_at(n, t, kw, kind);
        }
        let mut tls = TlsLine::new(line);
        for o in options {
            if TLS_KEYWORDS.contains(&o.kw.text.as_str()) {
                tls.option(c, line, o, Place::Default);
            } else {
                let kind = ErrorKind::NotOnDefaultServer {
                    keyword: o.kw.text.clone(),
                };
                c.error_at(n, t, &o.kw, kind);
            }
        }
        self.default_server = Some(tls);
    }

    fn use_suffix(&mut self, line: &Line, tok: &Tok, what: &'static str) {
        self.suffixes.push(SuffixUse {
            suffix: tok.text.clone(),
            what,
            line: line.number,
            text: line.text.clone(),
            tok: tok.clone(),
        });
    }

    /// The section, once every check has run.
    pub(super) fn into_aggregations(self) -> Aggregations {
        Aggregations {
            name: self.name,
            peers: self.peers.into_vec(),
            rules: self.rules,
            forwards: self.forwards,
            teach_back: self.teach_back,
            addr_check: self.addr_check,
            shards: self.shards.map_or(0, |(n, ..)| n),
            default_server: self.default_server.map(|d| d.opts).unwrap_or_default(),
            span: self.span,
        }
    }
}
