//! From configuration files (or the embedded default) to what the daemon runs.

use crate::tls::{DialTls, ListenerTls, SectionTls};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use stktagg_config::{
    AccessLevel, Config, ConfigError, ErrorKind, LogLevel, StatsSocket, TlsFile, Verify,
};
use stktagg_topology::Plan;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration is invalid; the message holds every error, formatted.
    #[error("{0}")]
    Invalid(String),
}

/// How long after start we may say PARTIAL to a resync request: HAProxy's own
/// `PEER_RESYNC_TIMEOUT` is 5 s; we allow the sources twice that to dial in.
pub const STARTUP_GRACE: Duration = Duration::from_secs(10);

/// The timeouts and limits of the `global` section that the daemon's tasks use (see
/// `stktagg_config::Global` for what each one means), and the start-up grace.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct Tunables {
    pub hello_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub max_message_size: usize,
    /// After start, how long we may answer PARTIAL to resync requests while our
    /// sources have not all resynced to us.
    pub startup_grace: Duration,
}

/// One runtime API socket (a `stats socket` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSocket {
    /// Unix socket path.
    pub path: PathBuf,
    /// File mode (default 0600).
    pub mode: u32,
    /// What its clients may run (`level`; default `operator`, as in HAProxy).
    pub level: AccessLevel,
    /// The socket file's owner (`user`), resolved to its id at load.
    pub uid: Option<u32>,
    /// The socket file's group (`group`), resolved to its id at load.
    pub gid: Option<u32>,
}

/// A loaded, checked and resolved configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The parsed configuration.
    pub config: Config,
    /// The resolved plan.
    pub plan: Plan,
    /// Timeouts and limits.
    pub tunables: Tunables,
    /// The runtime API sockets, one per `stats socket` line.
    pub stats_sockets: Vec<ApiSocket>,
    /// The Prometheus listener, if any (and resolvable).
    pub prometheus: Option<SocketAddr>,
    /// Where the configuration came from.
    pub source: String,
    /// Per section of the plan (same order), its TLS: options and the
    /// configurations built from the files read at load time.
    pub tls: Vec<crate::tls::SectionTls>,
}

impl Loaded {
    /// What `-c` says about TLS, per section that uses it: the listener's
    /// verification and the peers dialed over TLS.
    pub fn tls_summary(&self) -> String {
        let mut o = String::new();
        for (sp, t) in self.plan.sections.iter().zip(&self.tls) {
            let dialed: Vec<String> = sp
                .peers
                .iter()
                .filter_map(|peer| {
                    let (opts, name, _) = t.dialers.get(&peer.name)?;
                    Some(format!(
                        "{} (verify {}, name {})",
                        peer.name,
                        opts.verify.as_str(),
                        name.to_str()
                    ))
                })
                .collect();
            if t.listener.is_none() && dialed.is_empty() {
                continue;
            }
            o.push_str(&format!("section {} TLS:\n", sp.name));
            match &t.listener {
                Some((l, _)) => o.push_str(&format!(
                    "  listener: TLS only, client certificates {}\n",
                    match l.verify {
                        crate::tls::Verify::None => "not asked for",
                        crate::tls::Verify::Optional =>
                            "checked when sent, and must name the peer claimed",
                        crate::tls::Verify::Required => "required, and must name the peer claimed",
                    }
                )),
                None => o.push_str("  listener: plain TCP\n"),
            }
            if !dialed.is_empty() {
                o.push_str(&format!("  dialed over TLS: {}\n", dialed.join(", ")));
            }
        }
        o
    }

    /// The configured log level.
    pub fn log_level(&self) -> &'static str {
        match self.config.global.log_level {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Loads configuration files, in order, as one; with none, the embedded default.
///
/// Each file is parsed on its own, so that errors name the file they are in; their
/// sections are then put together (a section name must be unique across files), and
/// the `global` settings are taken from the last file that has a `global` section,
/// with the `stats socket` lines of all files.
pub fn load(files: &[PathBuf]) -> Result<Loaded, LoadError> {
    if files.is_empty() {
        return load_str(stktagg_config::DEFAULT_CONFIG, "<default>");
    }
    let mut merged: Option<Config> = None;
    let mut errors = String::new();
    for f in files {
        let name = f.display().to_string();
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                errors.push_str(&format!("{name}: error: cannot read: {e}\n"));
                continue;
            }
        };
        match stktagg_config::parse_str(&text, &name) {
            Ok(c) => merged = Some(merge(merged, c, &mut errors)),
            Err(e) => errors.push_str(&e.to_string()),
        }
    }
    match merged {
        Some(config) if errors.is_empty() => finish(config, &names(files)),
        _ => Err(LoadError::Invalid(errors)),
    }
}

fn names(files: &[PathBuf]) -> String {
    let v: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    v.join(", ")
}

fn merge(acc: Option<Config>, mut next: Config, errors: &mut String) -> Config {
    let Some(mut acc) = acc else {
        return next;
    };
    for s in next.sections.drain(..) {
        if acc.sections.iter().any(|o| o.name == s.name) {
            errors.push_str(&format!(
                "{}: error: section `aggregations {}` is already defined in an earlier file\n",
                s.span, s.name
            ));
        } else {
            acc.sections.push(s);
        }
    }
    let mut sockets = std::mem::take(&mut acc.global.stats_sockets);
    if next.global.span.is_some() {
        acc.global = next.global;
    }
    sockets.append(&mut acc.global.stats_sockets);
    acc.global.stats_sockets = sockets;
    acc.warnings.append(&mut next.warnings);
    acc
}

/// Loads a configuration from text; `name` names it in errors.
pub fn load_str(text: &str, name: &str) -> Result<Loaded, LoadError> {
    let config =
        stktagg_config::parse_str(text, name).map_err(|e| LoadError::Invalid(e.to_string()))?;
    finish(config, name)
}

fn finish(config: Config, name: &str) -> Result<Loaded, LoadError> {
    for w in &config.warnings {
        eprintln!("{w}");
    }
    let plan = stktagg_topology::resolve(&config).map_err(|e| LoadError::Invalid(e.to_string()))?;
    let g = &config.global;
    let tunables = Tunables {
        hello_timeout: g.hello_timeout,
        connect_timeout: g.connect_timeout,
        idle_timeout: g.idle_timeout,
        heartbeat_interval: g.heartbeat_interval,
        reconnect_min: g.reconnect_min,
        reconnect_max: g.reconnect_max,
        max_message_size: g.max_message_size,
        startup_grace: STARTUP_GRACE,
    };
    let tls = section_tls(&config, &plan).map_err(LoadError::Invalid)?;
    let stats_sockets = g
        .stats_sockets
        .iter()
        .map(api_socket)
        .collect::<Result<Vec<_>, String>>()
        .map_err(LoadError::Invalid)?;
    let prometheus = match &g.prometheus {
        Some(l) => Some(
            format!("{}:{}", bracket(&l.addr.host), l.addr.port)
                .parse::<SocketAddr>()
                .map_err(|e| {
                    LoadError::Invalid(format!(
                        "{name}: error: prometheus address `{}:{}` must be an IP address and port: {e}\n",
                        l.addr.host, l.addr.port
                    ))
                })?,
        ),
        None => None,
    };
    Ok(Loaded {
        config,
        plan,
        tunables,
        stats_sockets,
        prometheus,
        source: name.to_owned(),
        tls,
    })
}

/// Reads every `crt` and `ca-file` of the configuration and builds each section's
/// TLS. An unusable file is an error at the option that names it, rendered as the
/// configuration's own errors are (file:line:col, the line, a caret under the
/// option); a file named by several peers (through `default-server`) is read once
/// and reported once per option.
fn section_tls(config: &Config, plan: &Plan) -> Result<Vec<SectionTls>, String> {
    let mut files = TlsFiles::default();
    let mut out = Vec::new();
    for sp in &plan.sections {
        let Some(s) = config.sections.iter().find(|s| s.name == sp.name) else {
            out.push(SectionTls::default());
            continue;
        };
        let listener = s.listener_tls().and_then(|l| {
            let certified = files.certified(&l.crt);
            let roots = match (&l.ca_file, l.verify) {
                (Some(ca), Verify::Optional | Verify::Required) => Some(files.roots(ca)?),
                _ => None,
            };
            let (certs, key) = certified?;
            let opts = ListenerTls::from(&l);
            match crate::tls::server_config_with(opts.verify, certs, key, roots) {
                Ok(cfg) => Some((opts, cfg)),
                Err(e) => {
                    files.report(&l.crt, "crt", format!("{e:#}"));
                    None
                }
            }
        });
        let mut dialers = std::collections::BTreeMap::new();
        for p in &sp.peers {
            let dial = s
                .peers
                .iter()
                .find(|c| c.name == p.name)
                .and_then(|peer| Some((peer, s.dial_tls(peer)?)));
            if let Some(d) = dial.and_then(|(peer, d)| files.dialer(peer, &d)) {
                dialers.insert(p.name.clone(), d);
            }
        }
        out.push(SectionTls { listener, dialers });
    }
    if files.errors.is_empty() {
        return Ok(out);
    }
    let n = files.errors.len();
    let mut text = files.errors.concat();
    text.push_str(&format!(
        "{n} error{} in the configuration\n",
        if n == 1 { "" } else { "s" }
    ));
    Err(text)
}

type CertifiedKey = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// A file that is not named (`Some(None)`), was read (`Some(Some)`), or failed
/// (`None`).
fn ok_or_absent<T>(named: Option<Option<T>>) -> Option<Option<T>> {
    match named {
        None => Some(None),
        Some(Some(v)) => Some(Some(v)),
        Some(None) => None,
    }
}

/// The TLS files read so far (each path once), and the errors reported (each
/// option once).
#[derive(Default)]
struct TlsFiles {
    keys: HashMap<String, Result<CertifiedKey, String>>,
    roots: HashMap<String, Result<Arc<RootCertStore>, String>>,
    reported: HashSet<(String, u32, u32)>,
    errors: Vec<String>,
}

impl TlsFiles {
    /// The certificate chain and key of a `crt` option, or its error reported.
    fn certified(&mut self, f: &TlsFile) -> Option<CertifiedKey> {
        let r = self
            .keys
            .entry(f.path.clone())
            .or_insert_with(|| {
                crate::tls::load_certified_key(Path::new(&f.path)).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map(|(c, k)| (c.clone(), k.clone_key()))
            .map_err(Clone::clone);
        r.map_err(|e| self.report(f, "crt", e)).ok()
    }

    /// The CA certificates of a `ca-file` option, or its error reported.
    fn roots(&mut self, f: &TlsFile) -> Option<Arc<RootCertStore>> {
        let r = self
            .roots
            .entry(f.path.clone())
            .or_insert_with(|| {
                crate::tls::load_roots(Path::new(&f.path)).map_err(|e| format!("{e:#}"))
            })
            .clone();
        r.map_err(|e| self.report(f, "ca-file", e)).ok()
    }

    /// How we dial `peer` (`d`, its options over `default-server`), or `None`
    /// with the errors reported.
    fn dialer(
        &mut self,
        peer: &stktagg_config::Peer,
        d: &stktagg_config::TlsDial,
    ) -> Option<(
        DialTls,
        rustls::pki_types::ServerName<'static>,
        Arc<rustls::ClientConfig>,
    )> {
        let certified = d.crt.as_ref().map(|f| self.certified(f));
        let roots = match (&d.ca_file, d.verify) {
            (Some(ca), stktagg_config::Verify::Required) => Some(self.roots(ca)),
            _ => None,
        };
        let opts = DialTls::from(d);
        let name = crate::tls::server_name(&opts, &peer.name)
            .map_err(|e| self.errors.push(format!("{}: error: {e:#}\n", peer.span)))
            .ok();
        // Any file that failed was reported at its option.
        let (Some(certified), Some(roots)) = (ok_or_absent(certified), ok_or_absent(roots)) else {
            return None;
        };
        let cfg = crate::tls::client_config_with(opts.verify, certified, roots)
            .map_err(|e| {
                let msg = format!(
                    "{}: error: dialing `{}` over TLS: {e:#}\n",
                    peer.span, peer.name
                );
                self.errors.push(msg);
            })
            .ok()?;
        Some((opts, name?, cfg))
    }

    /// Reports that `f` cannot be used, once per option.
    fn report(&mut self, f: &TlsFile, keyword: &str, reason: String) {
        let at = &f.location.span;
        if !self
            .reported
            .insert((at.file.to_string(), at.line, at.column))
        {
            return;
        }
        let e = ConfigError {
            kind: ErrorKind::TlsFile {
                keyword: keyword.to_owned(),
                path: f.path.clone(),
                reason,
            },
            location: f.location.clone(),
        };
        self.errors.push(format!("{e}\n"));
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// A `stats socket` line with its `user` and `group` resolved: a name in the
/// system's user and group databases, else a number taken as the id itself.
fn api_socket(s: &StatsSocket) -> Result<ApiSocket, String> {
    let unknown = |what: &str, name: &str, e: Option<nix::Error>| {
        let why = e.map(|e| format!(" ({e})")).unwrap_or_default();
        format!(
            "{}: error: `stats socket {}`: unknown {what} `{name}`{why}\n",
            s.span, s.path
        )
    };
    let uid = match &s.user {
        None => None,
        Some(name) => Some(match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => u.uid.as_raw(),
            Ok(None) => name.parse().map_err(|_| unknown("user", name, None))?,
            Err(e) => return Err(unknown("user", name, Some(e))),
        }),
    };
    let gid = match &s.group {
        None => None,
        Some(name) => Some(match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => g.gid.as_raw(),
            Ok(None) => name.parse().map_err(|_| unknown("group", name, None))?,
            Err(e) => return Err(unknown("group", name, Some(e))),
        }),
    };
    Ok(ApiSocket {
        path: PathBuf::from(&s.path),
        mode: s.mode.unwrap_or(0o600),
        level: s.level,
        uid,
        gid,
    })
}
