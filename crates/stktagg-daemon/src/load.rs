//! From configuration files (or the embedded default) to what the daemon runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use stktagg_config::{Config, LogLevel, StatsSocket};
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

/// The runtime API socket.
#[derive(Debug, Clone)]
pub struct ApiSocket {
    /// Unix socket path.
    pub path: PathBuf,
    /// File mode (default 0600).
    pub mode: u32,
    /// Whether `set`/`clear` commands are allowed (level admin).
    pub admin: bool,
    /// The socket's level, as HAProxy's: `user` reads, `operator` may also
    /// `clear table`, `admin` may do everything.
    pub level: stktagg_config::AccessLevel,
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
    /// The runtime API socket, if any.
    pub stats_socket: Option<ApiSocket>,
    /// The Prometheus listener, if any (and resolvable).
    pub prometheus: Option<SocketAddr>,
    /// Where the configuration came from.
    pub source: String,
}

impl Loaded {
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
    let stats_socket = g.stats_sockets.first().map(api_socket);
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
        stats_socket,
        prometheus,
        source: name.to_owned(),
    })
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn api_socket(s: &StatsSocket) -> ApiSocket {
    ApiSocket {
        path: PathBuf::from(&s.path),
        mode: s.mode.unwrap_or(0o600),
        admin: matches!(s.level, stktagg_config::AccessLevel::Admin),
        level: s.level,
    }
}
