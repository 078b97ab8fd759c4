//! The typed configuration: what `parse_str` returns once every check passed.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::error::{Location, Span, Warning};

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Settings of the `global` section(s), defaults where absent.
    pub global: Global,
    /// The `aggregations` sections, in file order.
    pub sections: Vec<Aggregations>,
    /// Things that are legal but probably not meant. The daemon logs them.
    pub warnings: Vec<Warning>,
}

/// Process-wide settings. Several `global` sections merge into one, as in HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// Where the first `global` header is; `None` when the file has none.
    pub span: Option<Span>,
    /// `stats socket` lines: runtime API listeners. Empty means no runtime API.
    pub stats_sockets: Vec<StatsSocket>,
    /// `prometheus <addr>:<port>`: the metrics listener. Default: none.
    pub prometheus: Option<Listen>,
    /// `log-level`. Default: `info`.
    pub log_level: LogLevel,
    /// `timeout hello`: how long a new session may take to complete the hello
    /// exchange. Default: 5 s (HAProxy's peers `timeout client`).
    pub hello_timeout: Duration,
    /// `timeout connect`: TCP connect timeout when dialling a peer. Default: 1 s
    /// (what HAProxy 2.6.5+ uses for peers).
    pub connect_timeout: Duration,
    /// `timeout idle`: a session that stays silent this long is closed. Default: 5 s
    /// (HAProxy's own liveness window; it heartbeats every 3 s).
    pub idle_timeout: Duration,
    /// `tune.heartbeat`: we send a heartbeat after this long without sending
    /// anything. Default: 2 s, well inside HAProxy's 5 s window.
    pub heartbeat_interval: Duration,
    /// `tune.reconnect-min`: first redial delay after a failure. Default: 500 ms.
    pub reconnect_min: Duration,
    /// `tune.reconnect-max`: the redial delay doubles up to this. Default: 5 s
    /// (HAProxy's `PEER_RECONNECT_TIMEOUT`).
    pub reconnect_max: Duration,
    /// `tune.max-message-size`: largest peers message accepted, in bytes.
    /// Default: 16384.
    pub max_message_size: usize,
}

/// Defaults, named so that the docs and the daemon can quote them.
pub mod defaults {
    use std::time::Duration;

    /// Default `timeout hello`.
    pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default `timeout connect`.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default `timeout idle`.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default `tune.heartbeat`.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
    /// Default `tune.reconnect-min`.
    pub const RECONNECT_MIN: Duration = Duration::from_millis(500);
    /// Default `tune.reconnect-max`.
    pub const RECONNECT_MAX: Duration = Duration::from_secs(5);
    /// Default `tune.max-message-size`.
    pub const MAX_MESSAGE_SIZE: usize = 16384;
    /// Default `size` of a rule's output tables, in entries (16m: about 7 GiB at
    /// the store's ~450 MiB per million keys; size it to the host).
    pub const TABLE_SIZE: usize = 16 << 20;
}

impl Default for Global {
    fn default() -> Self {
        Self {
            span: None,
            stats_sockets: Vec::new(),
            prometheus: None,
            log_level: LogLevel::Info,
            hello_timeout: defaults::HELLO_TIMEOUT,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            reconnect_min: defaults::RECONNECT_MIN,
            reconnect_max: defaults::RECONNECT_MAX,
            max_message_size: defaults::MAX_MESSAGE_SIZE,
        }
    }
}

/// `stats socket <path> [mode <octal>] [level <level>] [user <u>] [group <g>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSocket {
    /// Unix socket path.
    pub path: String,
    /// File permissions, if given (octal in the file).
    pub mode: Option<u32>,
    /// What the socket may do. Default: `operator`, as in HAProxy.
    pub level: AccessLevel,
    /// Owner to set on the socket file.
    pub user: Option<String>,
    /// Group to set on the socket file.
    pub group: Option<String>,
    /// Where the line is.
    pub span: Span,
}

/// A stats socket's access level, HAProxy's three levels, in order: each one may
/// run what the one before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessLevel {
    /// Read only, non-sensitive.
    User,
    /// Read all, harmless changes (HAProxy's default).
    Operator,
    /// Everything.
    Admin,
}

/// `log-level` values, the names `tracing` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// The default.
    Info,
    /// Verbose.
    Debug,
    /// Very verbose.
    Trace,
}

impl LogLevel {
    /// The lower-case name, as written in the configuration and as `tracing`
    /// filters spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// A TCP listener address (`prometheus <addr>:<port>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The address.
    pub addr: PeerAddr,
    /// Where the line is.
    pub span: Span,
}

/// `aggregations <name>`: one independent aggregation domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregations {
    /// The section name.
    pub name: String,
    /// The `peer` lines, in file order (the `local` one among them).
    pub peers: Vec<Peer>,
    /// The `from ... to ...` rules, in file order (at least one).
    pub rules: Vec<Rule>,
    /// The `forward` lines, in file order.
    pub forwards: Vec<Forward>,
    /// Whether a source that asks us for a resync is taught back its own last
    /// known entries (SPEC §5). `option teach-back` / `no option teach-back`.
    /// Default: on.
    pub teach_back: bool,
    /// Whether a session that claims a peer is accepted only from that peer's
    /// address, for peers whose address is a literal IP and that do not say
    /// otherwise themselves. `option addr-check` / `no option addr-check`.
    /// Default: on.
    pub addr_check: bool,
    /// `shards <n>`: the number of shards the keys are split into (HAProxy's
    /// peers-section keyword); 0 when the section has none.
    pub shards: u32,
    /// `default-server`: the TLS options every dialed peer starts from (its own
    /// line's options win). Empty when the section has no such line.
    pub default_server: TlsOptions,
    /// Where the header is.
    pub span: Span,
}

impl Aggregations {
    /// The `local` peer (there is exactly one once the configuration is checked).
    pub fn local(&self) -> Option<&Peer> {
        self.peers.iter().find(|p| p.role == PeerRole::Local)
    }

    /// Our listener's TLS, when the `local` peer says `ssl`. The checks made sure
    /// that it has a `crt`, and a `ca-file` if it verifies clients.
    pub fn listener_tls(&self) -> Option<TlsListen> {
        let tls = &self.local()?.tls;
        if tls.ssl != Some(true) {
            return None;
        }
        let ca_file = tls.ca_file.clone();
        let verify = tls.verify.unwrap_or(if ca_file.is_some() {
            Verify::Required
        } else {
            Verify::None
        });
        Some(TlsListen {
            crt: tls.crt.clone()?,
            ca_file,
            verify,
        })
    }

    /// How we dial `peer` over TLS, if we do: its line's options over the
    /// section's `default-server`, TLS when either says `ssl` and the peer line
    /// does not say `no-ssl`. `verify` defaults to `required`, as in HAProxy.
    /// `None` for a peer we never dial (the `local` one, one without address).
    pub fn dial_tls(&self, peer: &Peer) -> Option<TlsDial> {
        if peer.role == PeerRole::Local || peer.addr.is_none() {
            return None;
        }
        let (own, def) = (&peer.tls, &self.default_server);
        if own.ssl.or(def.ssl) != Some(true) {
            return None;
        }
        Some(TlsDial {
            crt: own.crt.clone().or_else(|| def.crt.clone()),
            ca_file: own.ca_file.clone().or_else(|| def.ca_file.clone()),
            verify: own.verify.or(def.verify).unwrap_or(Verify::Required),
            sni: own.sni.clone().or_else(|| def.sni.clone()),
        })
    }
}

/// How a peer's certificate is checked (HAProxy's `verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Not checked; on our listener, not even asked for.
    None,
    /// Listener only: asked for, and checked if the client sends one.
    Optional,
    /// Required and checked.
    Required,
}

impl Verify {
    /// The keyword, as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

/// A file named by a TLS option (`crt`, `ca-file`), with where the option is, so
/// that the daemon, which reads the file, can point at it when it is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFile {
    /// The path as written (a relative one is relative to the daemon's working
    /// directory).
    pub path: String,
    /// The option, keyword and path, in its line.
    pub location: Location,
}

/// The TLS options written on one `peer` or `default-server` line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    /// `ssl` (`Some(true)`) or `no-ssl` (`Some(false)`).
    pub ssl: Option<bool>,
    /// `crt <pem>`: our certificate chain and its key.
    pub crt: Option<TlsFile>,
    /// `ca-file <pem>`: the CA certificates the other side's must chain to.
    pub ca_file: Option<TlsFile>,
    /// `verify none|optional|required`.
    pub verify: Option<Verify>,
    /// `sni <name>`: the server name to ask for and check (default: the peer's
    /// name).
    pub sni: Option<String>,
}

impl TlsOptions {
    /// Whether the line has any TLS option at all.
    pub fn is_empty(&self) -> bool {
        *self == TlsOptions::default()
    }
}

/// Our listener's TLS (the `local` peer's `ssl crt <pem> [ca-file <pem>]
/// [verify none|optional|required]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListen {
    /// Our certificate chain and key.
    pub crt: TlsFile,
    /// The CA client certificates must chain to.
    pub ca_file: Option<TlsFile>,
    /// Whether clients must present a certificate: `required` when a `ca-file` is
    /// given and `verify` is not, `none` without a `ca-file`.
    pub verify: Verify,
}

/// How we dial one peer over TLS (its line over the section's `default-server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsDial {
    /// Our client certificate, if we present one.
    pub crt: Option<TlsFile>,
    /// The CA the peer's certificate must chain to (present unless `verify none`).
    pub ca_file: Option<TlsFile>,
    /// `none` or `required`.
    pub verify: Verify,
    /// The name to ask for and to check the certificate against, if not the peer's.
    pub sni: Option<String>,
}

/// `peer <name> [<addr>:<port>] [local | down | up [group <n>]] [shard <i>] [addr-check | no-addr-check]
/// [<tls options>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Peer name, as sent in the hello.
    pub name: String,
    /// Where to reach it. `None`: it only dials us, we never dial it.
    pub addr: Option<PeerAddr>,
    /// What it is to us.
    pub role: PeerRole,
    /// `shard <i>`: we send this peer only the entries of shard `i` of the
    /// section's `shards` (on the `local` peer: the shard we serve, for the
    /// record). 0, as in HAProxy, when it has none: it gets every entry.
    pub shard: u32,
    /// `addr-check` (`Some(true)`) or `no-addr-check` (`Some(false)`) on its line;
    /// `None`: the section's `option addr-check` decides. Never set on `local`.
    pub addr_check: Option<bool>,
    /// The TLS options on its line: for `local`, our listener's; for the others,
    /// how we dial them (with the section's `default-server`: see
    /// [`Aggregations::dial_tls`]).
    pub tls: TlsOptions,
    /// Where the line is.
    pub span: Span,
}

impl Peer {
    /// The IP a session claiming this peer must come from, if it is checked: its
    /// address is a literal, non-wildcard IP and neither its line nor the
    /// section (`section_check`) turned the check off.
    pub fn checked_ip(&self, section_check: bool) -> Option<IpAddr> {
        if !self.addr_check.unwrap_or(section_check) {
            return None;
        }
        self.addr.as_ref().and_then(PeerAddr::source_ip)
    }
}

/// A peer's role in its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// Us: the name we answer to and where we listen.
    Local,
    /// A HAProxy node (a leaf source). No role keyword.
    Node,
    /// `down`: a lower-level aggregator (a source).
    Down,
    /// `up`: an upper-level aggregator (a destination).
    Up {
        /// `group <n>`: replicas of one logical upstream.
        group: Option<u32>,
    },
}

/// `<host>:<port>`. The host is kept as written (less IPv6 brackets); the daemon
/// resolves names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    /// IPv4 or IPv6 literal, or a host name. IPv6 without brackets.
    pub host: String,
    /// TCP port, 1..=65535.
    pub port: u16,
}

impl PeerAddr {
    /// The host as an IP address, when it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The host as an address a connection can come from: a literal IP that is
    /// not a wildcard (`0.0.0.0`, `::`).
    pub fn source_ip(&self) -> Option<IpAddr> {
        self.ip().filter(|ip| !ip.is_unspecified())
    }

    /// A key that makes two spellings of one address equal (`::1` and
    /// `0:0:0:0:0:0:0:1`, `Host` and `host`).
    pub(crate) fn canonical(&self) -> (String, u16) {
        match self.ip() {
            Some(ip) => (ip.to_string(), self.port),
            None => (self.host.to_ascii_lowercase(), self.port),
        }
    }
}

/// `host:port`, with brackets around IPv6: what `ToSocketAddrs` and tokio's
/// `lookup_host` accept.
impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `from <suffix> to <suffix>` or `from any to <suffix>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Which incoming tables are aggregated.
    pub from: FromSpec,
    /// The suffix of the output tables (starts with `.`).
    pub to: String,
    /// `size <entries>`: the most entries each of its output tables holds;
    /// `None`: [`defaults::TABLE_SIZE`].
    pub size: Option<usize>,
    /// Where the line is.
    pub span: Span,
}

/// The input side of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromSpec {
    /// Tables named `<base><suffix>` (the suffix starts with `.`).
    Suffix(String),
    /// Every table from a source, whatever its name, except outputs and forwards.
    Any,
}

impl fmt::Display for FromSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Suffix(s) => f.write_str(s),
            Self::Any => f.write_str("any"),
        }
    }
}

/// `forward <suffix>`: tables `<base><suffix>` from up peers are relayed to sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The suffix (starts with `.`).
    pub suffix: String,
    /// Where the line is.
    pub span: Span,
}
