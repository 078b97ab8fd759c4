//! The `peer` lines of one section: each checked on its own and against the peers
//! declared before it (names and addresses unique, one `local`, one role and
//! each option once per line, `group` only with `up`, `shard` a number (its range
//! is checked with the whole section), `addr-check` only where there is an IP to
//! check, the listener's TLS complete). A remote peer's TLS is
//! checked at the end of the section, with the `default-server` line.

use std::collections::BTreeMap;

use super::diag::{Diagnostics, end_of_tok};
use super::tls::{Place, TLS_KEYWORDS, TlsLine, check_local};
use super::tokens::{Count, check_name, number, parse_addr};
use crate::ast::{Peer, PeerAddr, PeerRole};
use crate::error::{ErrorKind, WarningKind};
use crate::syntax::{AddrTok, Line, OptTok, PeerToks, Tok};

/// The peers of one section, with what the later checks point back at.
#[derive(Default)]
pub(super) struct Peers {
    list: Vec<Peer>,
    /// For each peer with an address (by index in `list`), its line.
    addr_lines: Vec<(usize, u32)>,
    /// For each group number, the line and value token that first named it.
    group_lines: BTreeMap<u32, (u32, String, Tok)>,
    /// For each remote peer (by index in `list`), its TLS options and name token,
    /// for the checks that need the section's `default-server`.
    tls_lines: Vec<(usize, TlsLine, Tok)>,
    /// For each peer with a `shard` (by index in `list`), its line and value token.
    shard_lines: Vec<(usize, u32, String, Tok)>,
}

/// The largest `shards` (and so `shard`): far more than any tier of aggregators
/// needs, small enough to be a typo's bound.
pub(super) const MAX_SHARDS: usize = 1024;

const SHARD: Count = Count {
    what: "shard",
    min: 0,
    max: MAX_SHARDS,
    expected: "an integer from 0 (no shard) to 1024",
};

impl Peers {
    pub(super) fn all(&self) -> &[Peer] {
        &self.list
    }

    pub(super) fn into_vec(self) -> Vec<Peer> {
        self.list
    }

    /// Each group number with the line and token that first named it.
    pub(super) fn group_lines(&self) -> impl Iterator<Item = (u32, &(u32, String, Tok))> {
        self.group_lines.iter().map(|(g, at)| (*g, at))
    }

    /// Each remote peer with its line's TLS options and its name token.
    pub(super) fn tls_lines(&self) -> impl Iterator<Item = (&Peer, &TlsLine, &Tok)> {
        self.tls_lines
            .iter()
            .filter_map(|(i, tls, name)| Some((self.list.get(*i)?, tls, name)))
    }

    /// Each peer with a `shard`, with the line and value token of its `shard`.
    pub(super) fn shard_lines(&self) -> impl Iterator<Item = (&Peer, &(usize, u32, String, Tok))> {
        self.shard_lines
            .iter()
            .filter_map(|at| self.list.get(at.0).map(|p| (p, at)))
    }

    /// The section's `local` peer, if one was declared.
    pub(super) fn local(&self) -> Option<&Peer> {
        self.list.iter().find(|p| p.role == PeerRole::Local)
    }

    /// Checks one `peer` line of section `section` and adds the peer, unless its
    /// name or its `local` role is taken. `kw` is the `peer` keyword.
    pub(super) fn add(
        &mut self,
        c: &mut Diagnostics,
        line: &Line,
        kw: &Tok,
        section: &str,
        toks: &PeerToks,
    ) {
        let Some(name) = &toks.name else {
            return c.missing(line, "peer", "a name");
        };
        check_name(c, line, name, "peer name");
        let addr = toks.addr.as_ref().and_then(|a| parse_addr(c, line, a));
        let opts = options(c, line, toks);
        let mut role = role_of(opts.role);
        if let Some(g) = opts.group {
            role = self.group(c, line, role, &g.kw, g.value.as_ref());
        }
        let shard = opts.shard.and_then(|o| shard(c, line, o));
        let addr_check = opts
            .addr_check
            .and_then(|t| addr_check(c, line, t, name, role, toks, addr.as_ref()));
        let place = if role == PeerRole::Local {
            Place::Local
        } else {
            Place::Remote
        };
        let mut tls = TlsLine::new(line);
        for o in &opts.tls {
            tls.option(c, line, o, place);
        }
        if role == PeerRole::Local {
            check_local(c, &tls, &name.text);
        }
        if !self.name_is_new(c, line, name) {
            return;
        }
        if role == PeerRole::Local && !self.local_is_new(c, line, toks, opts.role, name, section) {
            return;
        }
        if let (Some(a), Some(atok)) = (&addr, &toks.addr) {
            self.note_addr(c, line, name, a, atok);
        }
        if role != PeerRole::Local {
            self.tls_lines
                .push((self.list.len(), tls.clone(), name.clone()));
        }
        if let Some((_, tok)) = &shard {
            let at = (self.list.len(), line.number, line.text.clone(), tok.clone());
            self.shard_lines.push(at);
        }
        self.list.push(Peer {
            name: name.text.clone(),
            addr,
            role,
            shard: shard.map_or(0, |(v, _)| v),
            addr_check,
            tls: tls.opts,
            span: c.span(line.number, kw.col),
        });
    }

    /// `group <n>` after the role: the role with its group, if the group is valid
    /// and the role is `up`; the role unchanged otherwise.
    fn group(
        &mut self,
        c: &mut Diagnostics,
        line: &Line,
        role: PeerRole,
        gkw: &Tok,
        gval: Option<&Tok>,
    ) -> PeerRole {
        let (n, t) = (line.number, line.text.as_str());
        if !matches!(role, PeerRole::Up { .. }) {
            let role_word = match role {
                PeerRole::Local => Some("local"),
                PeerRole::Down => Some("down"),
                _ => None,
            };
            c.error_at(n, t, gkw, ErrorKind::GroupWithoutUp { role: role_word });
            return role;
        }
        let Some(v) = gval else {
            let kind = ErrorKind::MissingArgument {
                keyword: "group",
                what: "a group number",
            };
            c.error_at(n, t, &end_of_tok(gkw), kind);
            return role;
        };
        let Ok(g) = v.text.parse::<u32>() else {
            let kind = ErrorKind::InvalidGroup {
                value: v.text.clone(),
            };
            c.error_at(n, t, v, kind);
            return role;
        };
        self.group_lines
            .entry(g)
            .or_insert_with(|| (n, t.to_owned(), v.clone()));
        PeerRole::Up { group: Some(g) }
    }

    /// False, with the error, if a peer of this name was declared before.
    fn name_is_new(&self, c: &mut Diagnostics, line: &Line, name: &Tok) -> bool {
        let Some(first) = self.list.iter().find(|p| p.name == name.text) else {
            return true;
        };
        let note = format!("first declared at line {}", first.span.line);
        let kind = ErrorKind::DuplicatePeer {
            name: name.text.clone(),
        };
        c.error_note(line.number, &line.text, name, kind, Some(note));
        false
    }

    /// False, with the error, if the section already has its `local` peer. A
    /// `local` peer without an address is reported but still counts as the local.
    fn local_is_new(
        &self,
        c: &mut Diagnostics,
        line: &Line,
        toks: &PeerToks,
        role: Option<&Tok>,
        name: &Tok,
        section: &str,
    ) -> bool {
        let (n, t) = (line.number, line.text.as_str());
        if let Some(first) = self.local() {
            let note = format!(
                "`{}` is already `local` at line {}",
                first.name, first.span.line
            );
            let at = role.unwrap_or(name);
            let kind = ErrorKind::TwoLocals {
                name: name.text.clone(),
                section: section.to_owned(),
            };
            c.error_note(n, t, at, kind, Some(note));
            return false;
        }
        if toks.addr.is_none() {
            let kind = ErrorKind::LocalWithoutAddress {
                name: name.text.clone(),
            };
            c.error_at(n, t, name, kind);
        }
        true
    }

    /// Reports an address already used by another peer of the section, or
    /// remembers this one for the peer about to be added.
    fn note_addr(
        &mut self,
        c: &mut Diagnostics,
        line: &Line,
        name: &Tok,
        addr: &PeerAddr,
        atok: &AddrTok,
    ) {
        let key = addr.canonical();
        let dup = self.addr_lines.iter().find(|(i, _)| {
            self.list
                .get(*i)
                .and_then(|p| p.addr.as_ref())
                .is_some_and(|pa| pa.canonical() == key)
        });
        let Some((i, first_line)) = dup else {
            self.addr_lines.push((self.list.len(), line.number));
            return;
        };
        let other = self
            .list
            .get(*i)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let note = format!("first used at line {first_line}");
        let kind = ErrorKind::DuplicateAddress {
            name: name.text.clone(),
            addr: addr.to_string(),
            other,
        };
        c.error_note(line.number, &line.text, &atok.whole, kind, Some(note));
    }
}

/// `addr-check` or `no-addr-check` (`t`) on the line of peer `name`: the setting,
/// unless it is on the `local` peer (an error) or asks for a check without an IP
/// to check against (an error; turning it off there only earns a warning).
fn addr_check(
    c: &mut Diagnostics,
    line: &Line,
    t: &Tok,
    name: &Tok,
    role: PeerRole,
    toks: &PeerToks,
    addr: Option<&PeerAddr>,
) -> Option<bool> {
    let (n, text) = (line.number, line.text.as_str());
    if role == PeerRole::Local {
        let kind = ErrorKind::NotOnLocal {
            keyword: t.text.clone(),
        };
        c.error_at(n, text, t, kind);
        return None;
    }
    let on = t.text == "addr-check";
    // A bad address was reported already: say nothing more about it.
    let unparsed = toks.addr.is_some() && addr.is_none();
    if unparsed || addr.and_then(PeerAddr::source_ip).is_some() {
        return Some(on);
    }
    let (name, addr) = (
        name.text.clone(),
        toks.addr.as_ref().map(|a| a.whole.text.clone()),
    );
    if on {
        c.error_at(n, text, t, ErrorKind::AddrCheckWithoutIp { name, addr });
        return None;
    }
    c.warn_at(n, text, t, WarningKind::NoAddrCheckWithoutIp { name, addr });
    Some(false)
}

/// The options of a peer line, sorted by what they say; each is given once (a
/// repeated or contradicting one is reported and ignored).
struct Options<'a> {
    role: Option<&'a Tok>,
    group: Option<&'a OptTok>,
    shard: Option<&'a OptTok>,
    addr_check: Option<&'a Tok>,
    tls: Vec<&'a OptTok>,
}

fn options<'a>(c: &mut Diagnostics, line: &Line, toks: &'a PeerToks) -> Options<'a> {
    let mut o = Options {
        role: None,
        group: None,
        shard: None,
        addr_check: None,
        tls: Vec::new(),
    };
    for opt in &toks.options {
        let kw = &opt.kw;
        let slot = match kw.text.as_str() {
            "local" | "down" | "up" => &mut o.role,
            "addr-check" | "no-addr-check" => &mut o.addr_check,
            "group" => {
                match o.group {
                    Some(_) => repeated(c, line, kw, kw),
                    None => o.group = Some(opt),
                }
                continue;
            }
            "shard" => {
                match o.shard {
                    Some(_) => repeated(c, line, kw, kw),
                    None => o.shard = Some(opt),
                }
                continue;
            }
            w if TLS_KEYWORDS.contains(&w) => {
                o.tls.push(opt);
                continue;
            }
            // The grammar knows no other option.
            _ => continue,
        };
        match slot {
            Some(first) => repeated(c, line, first, kw),
            None => *slot = Some(kw),
        }
    }
    o
}

/// `kw` after `first` of the same kind on one line: the same word again, or its
/// opposite.
fn repeated(c: &mut Diagnostics, line: &Line, first: &Tok, kw: &Tok) {
    let kind = if first.text == kw.text {
        ErrorKind::RepeatedOption {
            keyword: kw.text.clone(),
        }
    } else {
        ErrorKind::ConflictingOption {
            keyword: kw.text.clone(),
            other: first.text.clone(),
        }
    };
    c.error_at(line.number, &line.text, kw, kind);
}

/// `shard <i>`: its value and token, if it is a number in range.
fn shard(c: &mut Diagnostics, line: &Line, o: &OptTok) -> Option<(u32, Tok)> {
    let Some(v) = &o.value else {
        let kind = ErrorKind::MissingArgument {
            keyword: "shard",
            what: "a shard number",
        };
        c.error_at(line.number, &line.text, &end_of_tok(&o.kw), kind);
        return None;
    };
    let value = number(c, line, v, &SHARD)?;
    Some((u32::try_from(value).ok()?, v.clone()))
}

fn role_of(role: Option<&Tok>) -> PeerRole {
    match role.map(|r| r.text.as_str()) {
        Some("local") => PeerRole::Local,
        Some("down") => PeerRole::Down,
        Some("up") => PeerRole::Up { group: None },
        _ => PeerRole::Node,
    }
}
