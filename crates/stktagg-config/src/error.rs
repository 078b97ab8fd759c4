//! Diagnostics: where a problem is, what it is, and how it is shown.
//!
//! Every diagnostic carries a [`Span`] and a copy of the offending line, so that it
//! renders on its own, rustc style:
//!
//! ```text
//! aggr1.cfg:4:8: error: duplicate peer name `aggr1`
//!     |
//!   4 |   peer aggr1  192.168.56.111:11111 down
//!     |        ^^^^^ already declared at line 2
//! ```

use std::fmt;
use std::sync::Arc;

/// A position in a configuration file. Lines and columns count from 1; columns
/// count characters, so a tab is one column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Span {
    /// The file name as given to the parser.
    pub file: Arc<str>,
    /// Line number, from 1. `0` means "the file as a whole".
    pub line: u32,
    /// Column number, from 1.
    pub column: u32,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// What is wrong with a configuration. Each variant is one rule of the language.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be read.
    #[error("cannot read the configuration: {reason}")]
    Read {
        /// The operating system's explanation.
        reason: String,
    },
    /// The file is not UTF-8.
    #[error("the configuration is not valid utf-8")]
    NotUtf8,
    /// The grammar rejected the line.
    #[error("unexpected {found}, expected {expected}")]
    Syntax {
        /// What was found at the position, quoted, or "end of line".
        found: String,
        /// What the grammar would have accepted there.
        expected: String,
    },
    /// A line at column 0 that is not a section header.
    #[error("unknown section `{name}` (sections are `global` and `aggregations <name>`)")]
    UnknownSection {
        /// The first word of the line.
        name: String,
    },
    /// A keyword that starts at column 0: keywords must be indented.
    #[error("`{keyword}` must be indented: only section headers start at column 0")]
    KeywordNotIndented {
        /// The keyword.
        keyword: String,
    },
    /// A section header that is indented.
    #[error("section header `{keyword}` must start at column 0")]
    SectionIndented {
        /// `global` or `aggregations`.
        keyword: String,
    },
    /// An indented keyword that the language does not know.
    #[error("unknown keyword `{keyword}`{}", suggestion_text(.suggestion))]
    UnknownKeyword {
        /// The keyword.
        keyword: String,
        /// A known keyword with a similar spelling.
        suggestion: Option<&'static str>,
    },
    /// A keyword before any section header.
    #[error("`{keyword}` appears before any section (`global` or `aggregations <name>`)")]
    OutsideSection {
        /// The keyword.
        keyword: String,
    },
    /// A keyword that belongs to the other kind of section.
    #[error("`{keyword}` is not allowed in section `{section}`, only in `{allowed}`")]
    WrongSection {
        /// The keyword.
        keyword: String,
        /// The section it appears in.
        section: String,
        /// The section it belongs to.
        allowed: &'static str,
    },
    /// A keyword lacks an argument.
    #[error("`{keyword}` needs {what}")]
    MissingArgument {
        /// The keyword.
        keyword: &'static str,
        /// A description of the missing argument.
        what: &'static str,
    },
    /// `aggregations` without a name.
    #[error("`aggregations` needs a section name")]
    MissingSectionName,
    /// Two `aggregations` sections with one name.
    #[error("duplicate section name `{name}`")]
    DuplicateSection {
        /// The name.
        name: String,
    },
    /// A peer or section name with a character HAProxy would reject.
    #[error(
        "invalid character `{ch}` in {what} `{name}` (allowed: letters, digits, `-`, `_`, `.`, `:`)"
    )]
    InvalidName {
        /// "peer name" or "section name".
        what: &'static str,
        /// The name.
        name: String,
        /// The first bad character.
        ch: char,
    },
    /// Two peers with one name in a section.
    #[error("duplicate peer name `{name}`")]
    DuplicatePeer {
        /// The name.
        name: String,
    },
    /// Two peers with one address in a section.
    #[error("peer `{name}` uses address {addr}, already used by peer `{other}`")]
    DuplicateAddress {
        /// The peer declared second.
        name: String,
        /// The address.
        addr: String,
        /// The peer declared first.
        other: String,
    },
    /// Two sections listen on one address.
    #[error("listener {addr} is already used by section `{other}`")]
    DuplicateListener {
        /// The address.
        addr: String,
        /// The section declared first.
        other: String,
    },
    /// A section has no `local` peer.
    #[error(
        "section `{section}` has no `local` peer (exactly one peer must be `local`: it names us and our listener)"
    )]
    NoLocal {
        /// The section.
        section: String,
    },
    /// A section has two `local` peers.
    #[error(
        "second `local` peer `{name}` in section `{section}` (exactly one peer must be `local`)"
    )]
    TwoLocals {
        /// The second local peer.
        name: String,
        /// The section.
        section: String,
    },
    /// A `local` peer without an address: we would not know where to listen.
    #[error("the `local` peer `{name}` needs an address to listen on")]
    LocalWithoutAddress {
        /// The peer.
        name: String,
    },
    /// `group` on a peer that is not `up`.
    #[error("`group` is only valid after `up`{}", role_text(.role))]
    GroupWithoutUp {
        /// The role the peer has instead, if any.
        role: Option<&'static str>,
    },
    /// An option that only makes sense for a peer we talk to on the `local` peer:
    /// `[no-]addr-check` (nobody claims to be us), `no-ssl` and `sni` (we never
    /// dial ourselves).
    #[error("`{keyword}` is only valid on a remote peer, not on the `local` one")]
    NotOnLocal {
        /// The keyword as written.
        keyword: String,
    },
    /// An option of a `peer` line that `default-server` does not take: it only
    /// sets the TLS options every dialed peer starts from.
    #[error(
        "`{keyword}` is not valid on `default-server`, which only takes `ssl`, `no-ssl`, `crt`, `ca-file`, `verify` and `sni`"
    )]
    NotOnDefaultServer {
        /// The keyword as written.
        keyword: String,
    },
    /// The same option twice on one line.
    #[error("`{keyword}` is given twice on this line")]
    RepeatedOption {
        /// The keyword.
        keyword: String,
    },
    /// Two options on one line that cannot both hold (`up` and `down`, `ssl` and
    /// `no-ssl`, `addr-check` and `no-addr-check`).
    #[error("`{keyword}` contradicts `{other}`, given before on this line")]
    ConflictingOption {
        /// The later keyword.
        keyword: String,
        /// The earlier one.
        other: String,
    },
    /// `ssl` on the `local` peer without `crt`: a TLS listener needs a certificate.
    #[error(
        "the `local` peer `{name}` says `ssl` but has no `crt <pem>`: our listener needs a certificate"
    )]
    SslWithoutCrt {
        /// The local peer.
        name: String,
    },
    /// A TLS option where TLS is not on: it would silently do nothing, so a
    /// listener or a link the operator meant to protect would stay plain.
    #[error("`{keyword}` has no effect without `ssl`{}", ssl_where(*.local))]
    TlsOptionWithoutSsl {
        /// The option.
        keyword: String,
        /// On the `local` peer (else on a remote peer).
        local: bool,
    },
    /// Certificates to check, and nothing to check them against.
    #[error(
        "{} with `verify {verify}`{} but has no `ca-file <pem>` to check certificates against (or say `verify none`)",
        verify_who(.name, *.local),
        implicit_text(*.implicit)
    )]
    VerifyWithoutCaFile {
        /// The peer (ours, or the one we dial).
        name: String,
        /// On the `local` peer: our listener checks client certificates.
        local: bool,
        /// `optional` or `required`.
        verify: &'static str,
        /// `verify` was not written: `required` is the default.
        implicit: bool,
    },
    /// A `crt` or `ca-file` that the daemon could not use (it reads the files;
    /// this crate never does).
    #[error("cannot use `{keyword} {path}`: {reason}")]
    TlsFile {
        /// `crt` or `ca-file`.
        keyword: String,
        /// The path as written.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A server name that TLS cannot carry (`sni`, or the peer name it
    /// defaults to).
    #[error("`{name}` cannot be a TLS server name{}", sni_hint(*.from_peer_name))]
    InvalidServerName {
        /// The name.
        name: String,
        /// It is the peer's name (no `sni` was given).
        from_peer_name: bool,
    },
    /// `addr-check` on a peer whose address is not a literal IP: there is nothing
    /// to compare a session's source address with.
    #[error(
        "`addr-check` needs a literal IP address, and peer `{name}` {}",
        addr_text(.addr)
    )]
    AddrCheckWithoutIp {
        /// The peer.
        name: String,
        /// Its address as written (a host name or a wildcard), if it has one.
        addr: Option<String>,
    },
    /// A group number that is not a number in range.
    #[error("invalid group `{value}` (expected an integer from 0 to 4294967295)")]
    InvalidGroup {
        /// The text found.
        value: String,
    },
    /// An address without a port.
    #[error("missing port in address `{addr}` (expected `<host>:<port>`)")]
    MissingPort {
        /// The address as written.
        addr: String,
    },
    /// An address without a host.
    #[error("missing host in address `{addr}` (expected `<host>:<port>`)")]
    MissingHost {
        /// The address as written.
        addr: String,
    },
    /// An IPv6 address without brackets.
    #[error("ipv6 addresses must be written in brackets, as `[{host}]:<port>`")]
    Ipv6WithoutBrackets {
        /// The address as written, less the port if one was recognised.
        host: String,
    },
    /// A bracketed host that is not an IPv6 address.
    #[error("invalid ipv6 address `{host}`")]
    InvalidIpv6 {
        /// The text between the brackets.
        host: String,
    },
    /// A host name with characters no resolver accepts.
    #[error("invalid host `{host}`")]
    InvalidHost {
        /// The host as written.
        host: String,
    },
    /// A port that is not a number.
    #[error("invalid port `{port}` (expected a number from 1 to 65535)")]
    InvalidPort {
        /// The text found.
        port: String,
    },
    /// A port outside 1..=65535.
    #[error("port {port} out of range (expected 1 to 65535)")]
    PortOutOfRange {
        /// The text found.
        port: String,
    },
    /// A suffix that does not start with `.`.
    #[error("suffix `{suffix}` must start with `.`")]
    SuffixWithoutDot {
        /// The suffix.
        suffix: String,
    },
    /// A suffix that is only a dot.
    #[error("suffix `{suffix}` is empty after the `.`")]
    EmptySuffix {
        /// The suffix.
        suffix: String,
    },
    /// `from X to X`.
    #[error("`from` and `to` are both `{suffix}`: a table would be aggregated into itself")]
    FromEqualsTo {
        /// The suffix.
        suffix: String,
    },
    /// A suffix used twice where it must be unique.
    #[error("suffix `{suffix}` is already used as {first_use} at line {line}")]
    SuffixReused {
        /// The suffix.
        suffix: String,
        /// How it was used first (for example "`to` suffix").
        first_use: &'static str,
        /// Where it was used first.
        line: u32,
    },
    /// One suffix ends with another, so a table name would match both.
    #[error("suffix `{suffix}` ends with `{other}` (line {line}): table names would match both")]
    SuffixOverlap {
        /// The longer suffix.
        suffix: String,
        /// The shorter suffix.
        other: String,
        /// Where the other suffix is used.
        line: u32,
    },
    /// Two `from any` rules in one section.
    #[error("second `from any` rule in this section")]
    TwoFromAny,
    /// A section without any `from ... to ...` rule.
    #[error(
        "section `{section}` has no `from <suffix> to <suffix>` rule: it would aggregate nothing"
    )]
    NoRule {
        /// The section.
        section: String,
    },
    /// A value that is not in the keyword's list.
    #[error("invalid {what} `{value}` (expected one of {expected})")]
    InvalidChoice {
        /// What the value is.
        what: &'static str,
        /// The value found.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
    /// A duration that does not parse.
    #[error(
        "invalid duration `{value}` (expected a number with an optional unit: us, ms, s, m, h, d; no unit means ms)"
    )]
    InvalidDuration {
        /// The text found.
        value: String,
    },
    /// A number that does not parse or is out of range.
    #[error("invalid {what} `{value}` (expected {expected})")]
    InvalidNumber {
        /// What the number is.
        what: &'static str,
        /// The text found.
        value: String,
        /// The accepted range.
        expected: &'static str,
    },
    /// A socket mode that is not octal.
    #[error("invalid mode `{value}` (expected octal permissions such as 600 or 0660)")]
    InvalidMode {
        /// The text found.
        value: String,
    },
    /// A directive that may appear once, appearing again.
    #[error("`{keyword}` is already set at line {line}")]
    Duplicate {
        /// The directive.
        keyword: String,
        /// Where it was set first.
        line: u32,
    },
    /// `tune.reconnect-min` above `tune.reconnect-max`.
    #[error("`tune.reconnect-min` is greater than `tune.reconnect-max`")]
    ReconnectRange,
    /// `shard` on a peer of a section without `shards`.
    #[error("peer `{name}` has a `shard` but the section declares no `shards <n>`")]
    ShardWithoutShards {
        /// The peer.
        name: String,
    },
    /// A `shard` above the section's `shards`.
    #[error(
        "peer `{name}` has `shard {shard}` but the section has `shards {shards}` (shards are numbered from 1 to {shards}; 0 means none)"
    )]
    ShardOutOfRange {
        /// The peer.
        name: String,
        /// Its shard.
        shard: u32,
        /// The section's number of shards.
        shards: u32,
    },
    /// Members of one `up` group with different shards.
    #[error(
        "peer `{name}` has shard {shard} but `{other}`, of the same group {group}, has shard {other_shard}: replicas must hold the same keys"
    )]
    GroupShards {
        /// The group number.
        group: u32,
        /// The member declared later.
        name: String,
        /// Its shard (0: none).
        shard: u32,
        /// The first member.
        other: String,
        /// The first member's shard (0: none).
        other_shard: u32,
    },
}

fn suggestion_text(suggestion: &Option<&'static str>) -> String {
    suggestion.map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"))
}

fn addr_text(addr: &Option<String>) -> String {
    match addr {
        Some(a) => format!("is at `{a}`"),
        None => "has no address".to_owned(),
    }
}

fn ssl_where(local: bool) -> &'static str {
    if local {
        " on this line"
    } else {
        " (on this line or on the section's `default-server`)"
    }
}

fn verify_who(name: &str, local: bool) -> String {
    if local {
        format!("our listener (`local` peer `{name}`) checks client certificates")
    } else {
        format!("peer `{name}` is dialed over TLS")
    }
}

fn implicit_text(implicit: bool) -> &'static str {
    if implicit { " (the default)" } else { "" }
}

fn sni_hint(from_peer_name: bool) -> &'static str {
    if from_peer_name {
        " (it is the peer's name, which the dialer checks the certificate against: give `sni <dns-name>`)"
    } else {
        ""
    }
}

fn role_text(role: &Option<&'static str>) -> String {
    role.map_or_else(String::new, |r| format!(", not on a `{r}` peer"))
}

/// Something legal that an operator probably did not mean.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WarningKind {
    /// `forward` without any `up` peer: nothing sends forwarded tables.
    #[error("`forward {suffix}` has no effect: no peer in this section is `up`")]
    ForwardWithoutUp {
        /// The suffix.
        suffix: String,
    },
    /// `up` peers but no `forward`: their sums are never relayed down.
    #[error("peer `{name}` is `up` but the section has no `forward` rule: its tables are ignored")]
    UpWithoutForward {
        /// The first up peer.
        name: String,
    },
    /// A section with no source: nothing to aggregate.
    #[error("section `{section}` has no source peer (plain or `down`): nothing will be aggregated")]
    NoSource {
        /// The section.
        section: String,
    },
    /// A group with a single member is no different from a plain `up`.
    #[error("group {group} has a single member")]
    SingleMemberGroup {
        /// The group number.
        group: u32,
    },
    /// A section header with nothing in it.
    #[error("section `{section}` is empty")]
    EmptySection {
        /// The section.
        section: String,
    },
    /// A keyword that is still recognised but no longer does anything: the line is
    /// ignored, so that a configuration written for an older version still loads.
    #[error("`{keyword}` is obsolete and ignored: {reason}")]
    ObsoleteKeyword {
        /// The keyword.
        keyword: String,
        /// Why it does nothing, and what to do.
        reason: &'static str,
    },
    /// `[no] option <name>` given twice in a section; the last one wins.
    #[error("{option} is already set at line {line}; this line wins")]
    OptionRepeated {
        /// The option (`teach-back`, `addr-check`).
        option: String,
        /// The earlier line.
        line: u32,
    },
    /// TLS options on a peer we never dial (it has no address): our listener's TLS
    /// is the `local` peer's.
    #[error(
        "peer `{name}` has no address, so we never dial it and its `{keyword}` has no effect (the TLS of the sessions it opens is our listener's, on the `local` line)"
    )]
    TlsNeverDialed {
        /// The peer.
        name: String,
        /// The first TLS option on its line.
        keyword: String,
    },
    /// `no-addr-check` on a peer that is not checked anyway: its address is not a
    /// literal IP.
    #[error(
        "`no-addr-check` has no effect: peer `{name}` {}, so its sessions are accepted from any address",
        addr_text(.addr)
    )]
    NoAddrCheckWithoutIp {
        /// The peer.
        name: String,
        /// Its address as written (a host name or a wildcard), if it has one.
        addr: Option<String>,
    },
    /// `shards` in a section where no peer has a `shard`.
    #[error("`shards {shards}` has no effect: no peer of this section has a `shard`")]
    ShardsUnused {
        /// The number of shards.
        shards: u32,
    },
    /// `shard` on a source: we send it only the sums of that shard.
    #[error(
        "peer `{name}` is a source with `shard {shard}`: it will only get the sums of the keys of shard {shard} (put `shard` on `up` peers to split what we send up, or on the `local` peer to say which shard we serve)"
    )]
    ShardOnSource {
        /// The peer.
        name: String,
        /// Its shard.
        shard: u32,
    },
    /// Sharded `up` peers that leave a shard without any upstream.
    #[error(
        "no `up` peer has `shard {shard}`: the keys of shard {shard} of {shards} are sent to no upstream"
    )]
    ShardWithoutUp {
        /// The shard nobody serves.
        shard: u32,
        /// The number of shards.
        shards: u32,
    },
}

/// Where a diagnostic points and what it quotes. Shared by errors and warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The position of the first character pointed at.
    pub span: Span,
    /// How many characters the caret underlines (at least 1).
    pub width: u32,
    /// The offending line, without its line terminator. Empty when `span.line` is 0.
    pub line_text: String,
    /// A second message printed after the caret, such as "already declared at line 2".
    pub note: Option<String>,
}

/// One configuration error, with its position and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(&self.location, "error", &self.kind.to_string()))]
pub struct ConfigError {
    /// What is wrong.
    pub kind: ErrorKind,
    /// Where.
    pub location: Location,
}

/// One configuration warning, with its position and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(&self.location, "warning", &self.kind.to_string()))]
pub struct Warning {
    /// What is suspicious.
    pub kind: WarningKind,
    /// Where.
    pub location: Location,
}

/// Every error found in a configuration (never empty), and the warnings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigErrors {
    /// The errors, in file order.
    pub errors: Vec<ConfigError>,
    /// The warnings, in file order.
    pub warnings: Vec<Warning>,
}

impl ConfigErrors {
    fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.errors {
            out.push_str(&e.to_string());
            out.push('\n');
        }
        for w in &self.warnings {
            out.push_str(&w.to_string());
            out.push('\n');
        }
        let n = self.errors.len();
        out.push_str(&format!(
            "{n} error{} in the configuration",
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

/// Renders one diagnostic:
/// `file:line:col: <severity>: <message>`, the line, and a caret under the span.
fn render(loc: &Location, severity: &str, message: &str) -> String {
    let mut out = format!("{}: {severity}: {message}", loc.span);
    if loc.span.line == 0 {
        return out;
    }
    let num = loc.span.line.to_string();
    let pad = " ".repeat(num.len());
    // Tabs are shown as one space each so the caret lines up with the column count.
    let shown: String = loc
        .line_text
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .collect();
    let indent = " ".repeat(loc.span.column.saturating_sub(1) as usize);
    let carets = "^".repeat(loc.width.max(1) as usize);
    out.push_str(&format!(
        "\n {pad} |\n {num} | {shown}\n {pad} | {indent}{carets}"
    ));
    if let Some(note) = &loc.note {
        out.push(' ');
        out.push_str(note);
    }
    out
}
