//! The pest grammar (`config.pest`) and its output: one [`Line`] per physical line.
//!
//! Each line is parsed on its own so that a syntax error on one line does not hide
//! the errors on the following ones. Values are kept as text tokens with their
//! column here; `check` gives them meaning.

use pest::Parser;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;

use crate::error::ErrorKind;

#[derive(pest_derive::Parser)]
#[grammar = "config.pest"]
struct LineParser;

/// A piece of a line: its text and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tok {
    /// The text.
    pub(crate) text: String,
    /// Column of its first character, from 1.
    pub(crate) col: u32,
    /// Length in characters.
    pub(crate) width: u32,
}

/// `<host>:<port>` as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddrTok {
    /// The whole address.
    pub(crate) whole: Tok,
    /// The part before the first `:` (or the bracketed part).
    pub(crate) host: Tok,
    /// The part after the `:`, if there was a `:`.
    pub(crate) port: Option<Tok>,
}

/// The input side of a `from` rule as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FromTok {
    /// `from any`.
    Any(Tok),
    /// `from <suffix>`.
    Suffix(Tok),
}

/// One option of a `peer` or `default-server` line as written: a flag (`up`,
/// `ssl`...) or a keyword with its value (`group 1`, `crt a.pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OptTok {
    /// The keyword.
    pub(crate) kw: Tok,
    /// Its value, for a keyword that takes one and was given one.
    pub(crate) value: Option<Tok>,
}

/// `peer <name> [<host>:<port>] [<option>...]` as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerToks {
    /// The peer's name.
    pub(crate) name: Option<Tok>,
    /// Its address.
    pub(crate) addr: Option<AddrTok>,
    /// The options, in line order.
    pub(crate) options: Vec<OptTok>,
}

#[cfg(test)]
impl PeerToks {
    /// The first option among `keywords`, if any.
    pub(crate) fn option(&self, keywords: &[&str]) -> Option<&OptTok> {
        self.options
            .iter()
            .find(|o| keywords.contains(&o.kw.text.as_str()))
    }
}

/// What one line says, before any meaning is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stmt {
    /// Blank or comment only.
    Blank,
    /// `global`.
    GlobalHeader,
    /// `aggregations [<name>]`.
    AggregationsHeader { name: Option<Tok> },
    /// A column-0 word that is not a section header.
    UnknownSection,
    /// An indented word that is not a keyword.
    UnknownKeyword,
    /// `stats socket ...`.
    StatsSocket {
        path: Option<Tok>,
        options: Vec<(Tok, Option<Tok>)>,
    },
    /// `prometheus ...`.
    Prometheus { addr: Option<AddrTok> },
    /// `log-level ...`.
    LogLevel { value: Option<Tok> },
    /// `timeout <kind> ...`.
    Timeout { kind: Tok, value: Option<Tok> },
    /// `tune.<name> ...`.
    Tune { value: Option<Tok> },
    /// `peer ...`.
    Peer(PeerToks),
    /// `default-server ...`.
    DefaultServer { options: Vec<OptTok> },
    /// `from ... [to ...]`.
    From {
        from: Option<FromTok>,
        to_kw: Option<Tok>,
        to: Option<Tok>,
        /// `size` and its value, if the keyword is there.
        size: Option<(Tok, Option<Tok>)>,
    },
    /// `forward ...`.
    Forward { suffix: Option<Tok> },
    /// `shards ...`.
    Shards { value: Option<Tok> },
    /// `[no] option <name>`; the name is one the grammar knows.
    Option { name: Tok, on: bool },
}

/// One physical line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// Line number, from 1.
    pub(crate) number: u32,
    /// The text, without its terminator.
    pub(crate) text: String,
    /// The first word (the keyword), if the line has one.
    pub(crate) keyword: Option<Tok>,
    /// What it says.
    pub(crate) stmt: Stmt,
}

/// A syntax error on one line: where, how wide, what, and the keyword's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) number: u32,
    pub(crate) text: String,
    pub(crate) col: u32,
    pub(crate) width: u32,
    pub(crate) kind: ErrorKind,
    pub(crate) usage: Option<&'static str>,
}

/// Splits `text` into lines (LF or CRLF) and parses each one.
pub(crate) fn parse_lines(text: &str) -> Vec<Result<Line, Box<SyntaxError>>> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    // A final terminator does not start one more line.
    if lines.last() == Some(&"") {
        lines.pop();
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
            parse_line(raw, number)
        })
        .collect()
}

fn col_of(text: &str, byte: usize) -> u32 {
    let byte = byte.min(text.len());
    // `byte` comes from pest and is on a char boundary; fall back to the count of
    // whole characters before it if it ever were not.
    let count = text.char_indices().take_while(|(i, _)| *i < byte).count();
    u32::try_from(count + 1).unwrap_or(u32::MAX)
}

fn tok(text: &str, pair: &Pair<'_, Rule>) -> Tok {
    let span = pair.as_span();
    Tok {
        text: span.as_str().to_owned(),
        col: col_of(text, span.start()),
        width: u32::try_from(span.as_str().chars().count()).unwrap_or(u32::MAX),
    }
}

/// The first word of a line and where it is.
fn first_word(text: &str) -> Option<Tok> {
    let start = text.find(|c: char| c != ' ' && c != '\t')?;
    let rest = &text[start..];
    if rest.starts_with('#') {
        return None;
    }
    let end = rest
        .find([' ', '\t', '#'])
        .map_or(text.len(), |e| start + e);
    let word = &text[start..end];
    Some(Tok {
        text: word.to_owned(),
        col: col_of(text, start),
        width: u32::try_from(word.chars().count()).unwrap_or(u32::MAX),
    })
}

fn parse_line(text: &str, number: u32) -> Result<Line, Box<SyntaxError>> {
    let keyword = first_word(text);
    let mut pairs = LineParser::parse(Rule::line, text)
        .map_err(|e| Box::new(syntax_error(text, number, keyword.as_ref(), &e)))?;
    let stmt = match pairs.next() {
        Some(pair) => stmt_of(text, pair),
        None => Stmt::Blank,
    };
    Ok(Line {
        number,
        text: text.to_owned(),
        keyword,
        stmt,
    })
}

fn stmt_of(text: &str, pair: Pair<'_, Rule>) -> Stmt {
    let rule = pair.as_rule();
    let inner: Vec<Pair<'_, Rule>> = pair.into_inner().collect();
    let find = |r: Rule| {
        inner
            .iter()
            .find(|p| p.as_rule() == r)
            .map(|p| tok(text, p))
    };
    match rule {
        Rule::global_header => Stmt::GlobalHeader,
        Rule::aggregations_header => Stmt::AggregationsHeader {
            name: find(Rule::section_name),
        },
        Rule::unknown_section => Stmt::UnknownSection,
        Rule::unknown_keyword => Stmt::UnknownKeyword,
        Rule::stats_socket => {
            let options = inner
                .iter()
                .filter(|p| p.as_rule() == Rule::socket_option)
                .filter_map(|opt| opt.clone().into_inner().next())
                .map(|opt| {
                    let value = opt
                        .clone()
                        .into_inner()
                        .find(|p| p.as_rule() == Rule::option_value)
                        .map(|p| tok(text, &p));
                    let kw = opt.as_str().split([' ', '\t']).next().unwrap_or("");
                    let kw_tok = Tok {
                        text: kw.to_owned(),
                        col: col_of(text, opt.as_span().start()),
                        width: u32::try_from(kw.chars().count()).unwrap_or(u32::MAX),
                    };
                    (kw_tok, value)
                })
                .collect();
            Stmt::StatsSocket {
                path: find(Rule::socket_path),
                options,
            }
        }
        Rule::prometheus => Stmt::Prometheus {
            addr: inner
                .iter()
                .find(|p| p.as_rule() == Rule::address)
                .map(|p| addr_of(text, p)),
        },
        Rule::log_level => Stmt::LogLevel {
            value: find(Rule::log_level_value),
        },
        Rule::timeout => match find(Rule::timeout_kind) {
            Some(kind) => Stmt::Timeout {
                kind,
                value: find(Rule::duration),
            },
            // The grammar requires the kind; keep a harmless fallback anyway.
            None => Stmt::UnknownKeyword,
        },
        Rule::tune => Stmt::Tune {
            value: find(Rule::tune_value),
        },
        Rule::peer => Stmt::Peer(PeerToks {
            name: find(Rule::peer_name),
            addr: inner
                .iter()
                .find(|p| p.as_rule() == Rule::address)
                .map(|p| addr_of(text, p)),
            options: options_of(text, &inner),
        }),
        Rule::default_server => Stmt::DefaultServer {
            options: options_of(text, &inner),
        },
        Rule::from_rule => {
            let from = inner
                .iter()
                .find(|p| p.as_rule() == Rule::from_spec)
                .and_then(|p| p.clone().into_inner().next())
                .map(|p| match p.as_rule() {
                    Rule::from_any => FromTok::Any(tok(text, &p)),
                    _ => FromTok::Suffix(tok(text, &p)),
                });
            Stmt::From {
                from,
                to_kw: find(Rule::to_kw),
                to: find(Rule::suffix),
                size: find(Rule::size_kw).map(|kw| (kw, find(Rule::size_value))),
            }
        }
        Rule::forward => Stmt::Forward {
            suffix: find(Rule::suffix),
        },
        Rule::shards => Stmt::Shards {
            value: find(Rule::shards_value),
        },
        Rule::section_option => match find(Rule::option_name) {
            Some(name) => Stmt::Option {
                name,
                on: find(Rule::no_kw).is_none(),
            },
            // The grammar requires the name; keep a harmless fallback anyway.
            None => Stmt::UnknownKeyword,
        },
        _ => Stmt::Blank,
    }
}

/// The options of a `peer` or `default-server` line, in line order.
fn options_of(text: &str, inner: &[Pair<'_, Rule>]) -> Vec<OptTok> {
    inner
        .iter()
        .filter(|p| p.as_rule() == Rule::peer_option)
        .filter_map(|p| p.clone().into_inner().next())
        .map(|opt| match opt.as_rule() {
            Rule::peer_valued => {
                let mut parts = opt.into_inner();
                let kw = parts.next().map(|k| tok(text, &k));
                let value = parts.next().map(|v| tok(text, &v));
                OptTok {
                    kw: kw.unwrap_or_else(|| Tok {
                        text: String::new(),
                        col: 1,
                        width: 1,
                    }),
                    value,
                }
            }
            _ => OptTok {
                kw: tok(text, &opt),
                value: None,
            },
        })
        .collect()
}

fn addr_of(text: &str, pair: &Pair<'_, Rule>) -> AddrTok {
    let whole = tok(text, pair);
    let mut host = None;
    let mut port = None;
    for p in pair.clone().into_inner() {
        match p.as_rule() {
            Rule::host => host = Some(tok(text, &p)),
            Rule::port => port = Some(tok(text, &p)),
            _ => {}
        }
    }
    let host = host.unwrap_or_else(|| Tok {
        text: String::new(),
        col: whole.col,
        width: 0,
    });
    AddrTok { whole, host, port }
}

/// How a keyword is written, shown under a syntax error.
fn usage(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "stats" => {
            "usage: stats socket <path> [mode <octal>] [level user|operator|admin] [user <name>] [group <name>]"
        }
        "prometheus" => "usage: prometheus <host>:<port>",
        "log-level" => "usage: log-level error|warn|info|debug|trace",
        "timeout" => "usage: timeout hello|connect|idle <duration>",
        "peer" => {
            "usage: peer <name> [<host>:<port>] [local | down | up [group <n>]] [shard <i>] [addr-check | no-addr-check] \
             [ssl | no-ssl] [crt <pem>] [ca-file <pem>] [verify none|optional|required] [sni <name>]"
        }
        "default-server" => {
            "usage: default-server [ssl | no-ssl] [crt <pem>] [ca-file <pem>] [verify none|required] [sni <name>]"
        }
        "from" => "usage: from <suffix>|any to <suffix> [size <entries>]",
        "forward" => "usage: forward <suffix>",
        "shards" => "usage: shards <n>",
        "option" | "no" => "usage: [no] option teach-back|addr-check",
        "global" => "usage: global",
        "aggregations" => "usage: aggregations <name>",
        k if k.starts_with("tune.") => {
            "usage: tune.heartbeat|tune.reconnect-min|tune.reconnect-max <duration>, tune.max-message-size <bytes>"
        }
        _ => return None,
    })
}

/// The options of a `peer` line, as an "expected ..." list names them.
const PEER_OPTIONS: &[&str] = &[
    "`local`",
    "`down`",
    "`up`",
    "`group`",
    "`shard`",
    "`addr-check`",
    "`no-addr-check`",
    "`ssl`",
    "`no-ssl`",
    "`crt`",
    "`ca-file`",
    "`verify`",
    "`sni`",
];

/// What a grammar rule stands for, in an "expected ..." list.
fn describe(rule: Rule) -> &'static [&'static str] {
    match rule {
        Rule::eol | Rule::EOI => &["end of line"],
        Rule::socket_kw => &["`socket`"],
        Rule::socket_path => &["a socket path"],
        Rule::socket_option
        | Rule::socket_mode
        | Rule::socket_level
        | Rule::socket_user
        | Rule::socket_group => &["`mode`", "`level`", "`user`", "`group`"],
        Rule::option_value => &["a value"],
        Rule::timeout_kind => &["`hello`", "`connect`", "`idle`"],
        Rule::tune_value => &["a value"],
        Rule::shards_value => &["a number"],
        Rule::peer_option | Rule::peer_flag | Rule::peer_valued | Rule::peer_value_kw => {
            PEER_OPTIONS
        }
        Rule::address | Rule::host | Rule::port => &["`<host>:<port>`"],
        Rule::peer_name => &["a peer name"],
        Rule::from_spec | Rule::from_any => &["a suffix", "`any`"],
        Rule::suffix => &["a suffix"],
        Rule::to_kw => &["`to`"],
        Rule::option_kw => &["`option`"],
        Rule::option_name => &["`teach-back`", "`addr-check`"],
        Rule::teach_back_kw => &["`teach-back`"],
        Rule::addr_check_kw => &["`addr-check`"],
        Rule::section_name => &["a section name"],
        _ => &["a keyword"],
    }
}

fn syntax_error(
    text: &str,
    number: u32,
    keyword: Option<&Tok>,
    err: &pest::error::Error<Rule>,
) -> SyntaxError {
    let pos = match err.location {
        InputLocation::Pos(p) | InputLocation::Span((p, _)) => p.min(text.len()),
    };
    let mut expected: Vec<&'static str> = Vec::new();
    if let ErrorVariant::ParsingError { positives, .. } = &err.variant {
        for r in positives {
            for d in describe(*r) {
                if !expected.contains(d) {
                    expected.push(d);
                }
            }
        }
    }
    // "end of line" reads best last: "expected `up`, `group` or end of line".
    expected.sort_by_key(|d| *d == "end of line");
    let rest = &text[pos..];
    let found_len = rest.find([' ', '\t', '#']).unwrap_or(rest.len());
    let found_word = &rest[..found_len];
    let (found, width) = if found_word.is_empty() {
        ("end of line".to_owned(), 1)
    } else {
        (
            format!("`{found_word}`"),
            u32::try_from(found_word.chars().count()).unwrap_or(u32::MAX),
        )
    };
    let expected = match expected.as_slice() {
        [] => "something else".to_owned(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    };
    SyntaxError {
        number,
        text: text.to_owned(),
        col: col_of(text, pos),
        width,
        kind: ErrorKind::Syntax { found, expected },
        usage: keyword.and_then(|k| usage(&k.text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(line: &str) -> Stmt {
        parse_line(line, 1).unwrap().stmt
    }

    fn err(line: &str) -> SyntaxError {
        *parse_line(line, 1).unwrap_err()
    }

    #[test]
    fn blank_and_comment_lines() {
        assert_eq!(stmt(""), Stmt::Blank);
        assert_eq!(stmt(" \t "), Stmt::Blank);
        assert_eq!(stmt("# hello"), Stmt::Blank);
        assert_eq!(stmt("   # indented comment"), Stmt::Blank);
    }

    #[test]
    fn headers() {
        assert_eq!(stmt("global"), Stmt::GlobalHeader);
        assert_eq!(stmt("global   # x"), Stmt::GlobalHeader);
        match stmt("aggregations myl2") {
            Stmt::AggregationsHeader { name: Some(n) } => {
                assert_eq!(n.text, "myl2");
                assert_eq!(n.col, 14);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(stmt("frontend x"), Stmt::UnknownSection);
        assert_eq!(stmt("globalx"), Stmt::UnknownSection);
    }

    /// The options of a peer line as `(keyword, value)` texts.
    fn opts(p: &PeerToks) -> Vec<(String, Option<String>)> {
        p.options
            .iter()
            .map(|o| (o.kw.text.clone(), o.value.as_ref().map(|v| v.text.clone())))
            .collect()
    }

    fn own(kw: &str, v: Option<&str>) -> (String, Option<String>) {
        (kw.to_owned(), v.map(str::to_owned))
    }

    #[test]
    fn peer_forms() {
        match stmt("\t peer aggr3  192.168.56.113:11111 up group 1 # c") {
            Stmt::Peer(p) => {
                assert_eq!(p.name.as_ref().unwrap().text, "aggr3");
                let addr = p.addr.as_ref().unwrap();
                assert_eq!(addr.host.text, "192.168.56.113");
                assert_eq!(addr.port.as_ref().unwrap().text, "11111");
                assert_eq!(opts(&p), [own("up", None), own("group", Some("1"))]);
                let group = p.option(&["group"]).unwrap();
                assert_eq!((group.kw.col, group.value.as_ref().unwrap().col), (39, 45));
            }
            other => panic!("{other:?}"),
        }
        match stmt("  peer hap1") {
            Stmt::Peer(p) => {
                assert_eq!(p.name.unwrap().text, "hap1");
                assert!(p.addr.is_none());
                assert!(p.options.is_empty());
            }
            other => panic!("{other:?}"),
        }
        match stmt("  peer x [::1]:10000 local") {
            Stmt::Peer(p) => {
                assert_eq!(p.addr.as_ref().unwrap().host.text, "[::1]");
                assert_eq!(opts(&p), [own("local", None)]);
            }
            other => panic!("{other:?}"),
        }
        match stmt("  peer x 10.0.0.2:10000 down no-addr-check") {
            Stmt::Peer(p) => {
                assert_eq!(p.addr.as_ref().unwrap().host.text, "10.0.0.2");
                let t = &p.option(&["addr-check", "no-addr-check"]).unwrap().kw;
                assert_eq!((t.text.as_str(), t.col), ("no-addr-check", 30));
                assert_eq!(p.option(&["down"]).unwrap().kw.col, 25);
            }
            other => panic!("{other:?}"),
        }
        // Without an address, an option is not taken for a host name.
        for line in ["  peer x addr-check", "  peer x ssl", "  peer x crt a.pem"] {
            match stmt(line) {
                Stmt::Peer(p) => {
                    assert!(p.addr.is_none(), "{line}");
                    assert_eq!(p.options.len(), 1, "{line}");
                }
                other => panic!("{other:?}"),
            }
        }
        // Options in any order, values kept with their columns; a missing value
        // is left for the checker.
        match stmt(
            "  peer n 10.0.0.1:1 ssl verify none crt /etc/k.pem ca-file ca.pem sni n.example crt",
        ) {
            Stmt::Peer(p) => {
                assert_eq!(
                    opts(&p),
                    [
                        own("ssl", None),
                        own("verify", Some("none")),
                        own("crt", Some("/etc/k.pem")),
                        own("ca-file", Some("ca.pem")),
                        own("sni", Some("n.example")),
                        own("crt", None),
                    ]
                );
                let crt = &p.options[2];
                assert_eq!((crt.kw.col, crt.kw.width), (37, 3));
                let v = crt.value.as_ref().unwrap();
                assert_eq!((v.col, v.width), (41, 10));
            }
            other => panic!("{other:?}"),
        }
        match stmt("  default-server ssl ca-file /ca.pem # all") {
            Stmt::DefaultServer { options } => {
                assert_eq!(options.len(), 2);
                assert_eq!(options[1].value.as_ref().unwrap().text, "/ca.pem");
            }
            other => panic!("{other:?}"),
        }
        match stmt("  no option addr-check") {
            Stmt::Option { name, on } => {
                assert_eq!(
                    (name.text.as_str(), name.col, on),
                    ("addr-check", 13, false)
                );
            }
            other => panic!("{other:?}"),
        }
        match stmt("  peer x down") {
            Stmt::Peer(p) => {
                assert!(p.addr.is_none());
                assert_eq!(opts(&p), [own("down", None)]);
            }
            other => panic!("{other:?}"),
        }
        // `shard <i>` in any place among the options; without an address it is
        // not taken for a host name.
        match stmt("  peer t shard 1 up group 2") {
            Stmt::Peer(p) => {
                assert!(p.addr.is_none());
                assert_eq!(
                    opts(&p),
                    [
                        own("shard", Some("1")),
                        own("up", None),
                        own("group", Some("2"))
                    ]
                );
                assert_eq!(p.options[0].kw.col, 10);
            }
            other => panic!("{other:?}"),
        }
        match stmt("  shards 4 # two pairs") {
            Stmt::Shards { value } => assert_eq!(value.unwrap().col, 10),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_errors_point_at_the_word() {
        let e = err("  peer a 1.2.3.4:5 lokal");
        assert_eq!(e.col, 20);
        assert_eq!(e.width, 5);
        match e.kind {
            ErrorKind::Syntax { found, expected } => {
                assert_eq!(found, "`lokal`");
                assert_eq!(
                    expected,
                    "`local`, `down`, `up`, `group`, `shard`, `addr-check`, `no-addr-check`, \
                     `ssl`, `no-ssl`, `crt`, `ca-file`, `verify`, `sni` or end of line"
                );
            }
            other => panic!("{other:?}"),
        }
        let e = err("  timeout foo 5s");
        assert_eq!(e.col, 11);
        assert_eq!(
            e.kind,
            ErrorKind::Syntax {
                found: "`foo`".to_owned(),
                expected: "`hello`, `connect` or `idle`".to_owned()
            }
        );
        // A misspelt sub-keyword is pointed at as a whole word.
        let e = err("  stats sockett /tmp/x");
        assert_eq!((e.col, e.width), (9, 7));
        let e = err("  no option teachback");
        assert_eq!(e.col, 13);
        let e = err("global extra");
        assert_eq!(e.col, 8);
    }
}
