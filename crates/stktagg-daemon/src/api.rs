//! The runtime API on the `stats socket`, in HAProxy's CLI conventions.
//!
//! One command per line; several on one line separated by `;`; the connection closes
//! after the line unless `prompt` turned on interactive mode, as with HAProxy, so
//! `echo "show table" | socat stdio unix:/tmp/stktagg.sock` works the same way.
//! Output formats follow HAProxy's where HAProxy has the command (`show table`), so
//! scripts written for HAProxy parse ours unchanged.
//!
//! Each socket has a level (`level user|operator|admin`), and so each connection:
//! every command states the level it needs ([`needs`]), checked before it runs,
//! and anything below gets HAProxy's `Permission denied`. `user` sees the
//! process, the peers and the tables' sizes; `operator` also the tables' contents
//! (the keys are client addresses) and the commands on entries (HAProxy's
//! `show`/`clear`/`set table` all need `operator`); `admin` everything. A connection
//! may lower its level (`operator`, `user`), never raise it, as in HAProxy.

use crate::clock::Clock;
use crate::load::ApiSocket;
use crate::section::Section;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use stktagg_config::AccessLevel;
use stktagg_store::{TableKind, TableSummary, rules};
use stktagg_topology::{Role, SourceKind};
use stktagg_wire::{DataSpec, Key, KeyType, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// Longest command line accepted.
const MAX_LINE: usize = 16 * 1024;

/// The running sections, as a reload leaves them (shared with the daemon).
pub type SharedSections = Arc<std::sync::RwLock<Vec<Arc<Section>>>>;

/// What the commands can see.
#[derive(Debug, Clone)]
pub struct ApiContext {
    sections: SharedSections,
    clock: Clock,
    started: std::time::SystemTime,
}

impl ApiContext {
    /// A context over these sections.
    pub fn new(sections: Vec<Arc<Section>>, clock: Clock) -> Self {
        ApiContext::shared(Arc::new(std::sync::RwLock::new(sections)), clock)
    }

    /// A context over the sections a reload may replace.
    pub fn shared(sections: SharedSections, clock: Clock) -> Self {
        ApiContext {
            sections,
            clock,
            started: std::time::SystemTime::now(),
        }
    }

    /// The sections now.
    fn sections(&self) -> Vec<Arc<Section>> {
        self.sections
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Binds the unix socket with its mode and owner.
pub fn bind(sock: &ApiSocket) -> Result<UnixListener> {
    // A stale socket from an earlier run would make bind fail; HAProxy replaces it too.
    if sock.path.exists() {
        let _ = std::fs::remove_file(&sock.path);
    }
    let listener = UnixListener::bind(&sock.path)
        .with_context(|| format!("binding {}", sock.path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock.path, std::fs::Permissions::from_mode(sock.mode))
            .with_context(|| format!("setting the mode of {}", sock.path.display()))?;
    }
    if sock.uid.is_some() || sock.gid.is_some() {
        std::os::unix::fs::chown(&sock.path, sock.uid, sock.gid).with_context(|| {
            format!(
                "setting the owner of {} to {}:{}",
                sock.path.display(),
                sock.uid.map_or_else(|| "-".to_owned(), |u| u.to_string()),
                sock.gid.map_or_else(|| "-".to_owned(), |g| g.to_string())
            )
        })?;
    }
    Ok(listener)
}

/// Serves the runtime API on `listener`, for connections at `level`, until `stop`.
pub fn serve(
    listener: UnixListener,
    level: AccessLevel,
    ctx: ApiContext,
    tasks: &mut tokio::task::JoinSet<()>,
    stop: CancellationToken,
) {
    let ctx = Arc::new(ctx);
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _ = serve_one(ctx, stream, level).await;
            });
        }
    });
}

async fn serve_one(
    ctx: Arc<ApiContext>,
    stream: tokio::net::UnixStream,
    mut level: AccessLevel,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut interactive = false;
    let mut line = String::new();
    loop {
        if interactive {
            wr.write_all(b"> ").await?;
        }
        line.clear();
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(if interactive { 300 } else { 10 }),
            tokio::io::AsyncReadExt::take(&mut rd, MAX_LINE as u64).read_line(&mut line),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))??;
        if n == 0 {
            return Ok(());
        }
        let mut quit = false;
        for cmd in line.trim_end_matches(['\r', '\n']).split(';') {
            let cmd = cmd.trim();
            if cmd.is_empty() {
                continue;
            }
            match cmd {
                "prompt" => {
                    interactive = !interactive;
                    continue;
                }
                "quit" => {
                    quit = true;
                    break;
                }
                // Lowers this connection's level, never raises it (HAProxy's).
                "user" | "operator" => {
                    let want = if cmd == "user" {
                        AccessLevel::User
                    } else {
                        AccessLevel::Operator
                    };
                    if want <= level {
                        level = want;
                        continue;
                    }
                    wr.write_all(PERMISSION_DENIED.as_bytes()).await?;
                    wr.write_all(b"\n").await?;
                    continue;
                }
                _ => {}
            }
            let out = execute_at(&ctx, level, cmd);
            wr.write_all(out.as_bytes()).await?;
            if !out.ends_with("\n\n") {
                wr.write_all(b"\n").await?;
            }
        }
        if quit || !interactive {
            wr.shutdown().await?;
            return Ok(());
        }
    }
}

/// What HAProxy answers a command above the connection's level.
pub const PERMISSION_DENIED: &str = "Permission denied\n";

/// The level a command needs, or `None` for a command we do not know. Every
/// command is here: one that is not cannot run at any level.
pub fn needs(words: &[&str]) -> Option<AccessLevel> {
    Some(match words {
        ["help"] | ["show", "version"] | ["show", "info"] | ["show", "cli", "level"] => {
            AccessLevel::User
        }
        ["show", "peers", ..] | ["show", "aggrs"] => AccessLevel::User,
        // The list of tables, and one table's header: its contents are checked
        // in `show_table` (HAProxy prints the header and says why it stops).
        ["show", "table"] | ["show", "table", _] => AccessLevel::User,
        ["show", "table", _, ..] => AccessLevel::Operator,
        // As HAProxy's `clear table`.
        ["clear", "table", _, ..] => AccessLevel::Operator,
        _ => return None,
    })
}

/// Runs one command with every right (`admin`) and returns its output.
pub fn execute(ctx: &ApiContext, cmd: &str) -> String {
    execute_at(ctx, AccessLevel::Admin, cmd)
}

/// Runs one command for a connection at `level` and returns its output.
pub fn execute_at(ctx: &ApiContext, level: AccessLevel, cmd: &str) -> String {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match needs(&words) {
        None => return format!("Unknown command: '{cmd}'\n\n{}", help(level)),
        Some(need) if need > level => return PERMISSION_DENIED.to_owned(),
        Some(_) => {}
    }
    match words.as_slice() {
        ["help"] => help(level),
        ["show", "version"] => format!("{}\n", env!("CARGO_PKG_VERSION")),
        ["show", "info"] => show_info(ctx),
        ["show", "cli", "level"] => format!("{}\n", level_name(level)),
        ["show", "peers", rest @ ..] => show_peers(ctx, rest.first().copied()),
        ["show", "aggrs"] => show_aggrs(ctx),
        ["show", "table"] => show_tables(ctx),
        ["show", "table", name, rest @ ..] => show_table(ctx, level, name, rest),
        ["clear", "table", name, rest @ ..] => clear_table(ctx, name, rest),
        _ => format!("Unknown command: '{cmd}'\n\n{}", help(level)),
    }
}

fn level_name(level: AccessLevel) -> &'static str {
    match level {
        AccessLevel::User => "user",
        AccessLevel::Operator => "operator",
        AccessLevel::Admin => "admin",
    }
}

/// The commands and the level each needs, as `help` lists them.
const HELP: &[(AccessLevel, &str)] = &[
    (
        AccessLevel::User,
        "  help                                    : this message",
    ),
    (
        AccessLevel::User,
        "  prompt                                  : toggle interactive mode with prompt",
    ),
    (
        AccessLevel::User,
        "  quit                                    : disconnect",
    ),
    (
        AccessLevel::User,
        "  operator                                : lower the level of the current CLI session to operator",
    ),
    (
        AccessLevel::User,
        "  user                                    : lower the level of the current CLI session to user",
    ),
    (
        AccessLevel::User,
        "  show cli level                          : display the level of the current CLI session",
    ),
    (
        AccessLevel::User,
        "  show version                            : show this process's version",
    ),
    (
        AccessLevel::User,
        "  show info                               : report information about the running process",
    ),
    (
        AccessLevel::User,
        "  show peers [<section>]                  : dump peer sessions per section",
    ),
    (
        AccessLevel::User,
        "  show aggrs                              : dump aggregation rules and the tables they produced",
    ),
    (
        AccessLevel::User,
        "  show table [<name>]                     : report table usage stats or dump this table's contents",
    ),
    (
        AccessLevel::Operator,
        "  show table <name> data.<type> <op> <v>  : dump entries whose value matches (eq ne le ge lt gt)",
    ),
    (
        AccessLevel::Operator,
        "  show table <name> key <key> [detail]    : dump one entry [with the contribution of each source]",
    ),
    (
        AccessLevel::Operator,
        "  clear table <name> [key <key>]          : remove all entries or one from the aggregator",
    ),
];

fn help(level: AccessLevel) -> String {
    let mut o = "The following commands are valid at this level:\n".to_owned();
    for (need, line) in HELP {
        if *need <= level {
            o.push_str(line);
            o.push('\n');
        }
    }
    o
}

fn show_info(ctx: &ApiContext) -> String {
    let mut o = String::new();
    let up = ctx.started.elapsed().unwrap_or_default().as_secs();
    let started = ctx
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let _ = writeln!(o, "Name: stktagg");
    let _ = writeln!(o, "Version: {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(o, "Pid: {}", std::process::id());
    let _ = writeln!(
        o,
        "Uptime: {}d {}h{:02}m{:02}s",
        up / 86400,
        (up / 3600) % 24,
        (up / 60) % 60,
        up % 60
    );
    let _ = writeln!(o, "Uptime_sec: {up}");
    let _ = writeln!(o, "Start_time_sec: {started}");
    // The process as the kernel sees it: `-` where the platform does not say.
    let p = crate::metrics::ProcessStats::collect();
    let or_dash = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let _ = writeln!(o, "Rss_MB: {}", or_dash(p.rss_bytes.map(|b| b >> 20)));
    let _ = writeln!(o, "Rss_bytes: {}", or_dash(p.rss_bytes));
    let _ = writeln!(
        o,
        "Cpu_sec: {}",
        p.cpu_seconds
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}"))
    );
    let _ = writeln!(o, "Threads: {}", or_dash(p.threads));
    let _ = writeln!(o, "OpenFds: {}", or_dash(p.open_fds));
    let _ = writeln!(o, "Ulimit-n: {}", or_dash(p.max_fds));
    let mut t = Totals::default();
    let sections = ctx.sections();
    for s in &sections {
        let core = s.core();
        for p in core.live_peers() {
            let st = &p.stats;
            t.peers += 1;
            if st.state() == crate::section::SessionState::Established {
                t.peers_up += 1;
            }
            let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            t.sessions += n(&st.sessions);
            t.reconnects += n(&st.reconnects);
            t.collisions += n(&st.collisions);
            t.resyncs_in += n(&st.resyncs_in);
            t.resyncs_out += n(&st.resyncs_out);
            t.updates_in += n(&st.updates_in);
            t.updates_out += n(&st.updates_out);
            t.protocol_errors += n(&st.protocol_errors);
        }
        t.group_switches += core.group_switches.load(Ordering::Relaxed);
        for tbl in s.store.table_summaries() {
            t.tables += 1;
            t.entries += tbl.used as u64;
        }
    }
    for (name, v) in [
        ("Sections", sections.len() as u64),
        ("Peers", t.peers),
        ("PeersUp", t.peers_up),
        ("Tables", t.tables),
        ("Entries", t.entries),
        ("CumSessions", t.sessions),
        ("Reconnects", t.reconnects),
        ("Collisions", t.collisions),
        ("ResyncsIn", t.resyncs_in),
        ("ResyncsOut", t.resyncs_out),
        ("UpdatesIn", t.updates_in),
        ("UpdatesOut", t.updates_out),
        ("ProtocolErrors", t.protocol_errors),
        ("HelloRejected", crate::metrics::hellos_rejected()),
        (
            "TlsHandshakeFailures",
            crate::metrics::tls_handshake_failures(),
        ),
        ("GroupSwitches", t.group_switches),
    ] {
        let _ = writeln!(o, "{name}: {v}");
    }
    o
}

/// The counters `show info` sums over every peer of every section.
#[derive(Debug, Default)]
struct Totals {
    peers: u64,
    peers_up: u64,
    tables: u64,
    entries: u64,
    sessions: u64,
    reconnects: u64,
    collisions: u64,
    resyncs_in: u64,
    resyncs_out: u64,
    updates_in: u64,
    updates_out: u64,
    protocol_errors: u64,
    group_switches: u64,
}

/// A time since an event, in milliseconds, `<NEVER>` if it never happened.
fn ago(now: u64, then: u64) -> String {
    if then == 0 {
        "<NEVER>".to_owned()
    } else {
        format!("{}ms", now.saturating_sub(then))
    }
}

/// A duration in HAProxy's `show peers` style: the first two non-zero units among
/// days, hours, minutes and seconds (`4s`, `1m3s`, `2h5m`, `1d5m`), `0s` for none.
fn human_time(secs: u64) -> String {
    let mut out = String::new();
    let mut shown = 0;
    let mut rest = secs;
    for (size, unit) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
        let n = rest / size;
        rest %= size;
        if n > 0 && shown < 2 {
            let _ = write!(out, "{n}{unit}");
            shown += 1;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// A date in HAProxy's log style, `[04/Dec/2026:23:26:57]`, in UTC (HAProxy prints
/// local time; a daemon under systemd usually runs in UTC anyway).
fn log_date(t: std::time::SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, tod) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "[{d:02}/{}/{y:04}:{:02}:{:02}:{:02}]",
        MONTHS[(m - 1) as usize],
        tod / 3600,
        (tod / 60) % 60,
        tod % 60
    )
}

/// Year, month (1-12) and day (1-31) of a day count since 1970-01-01, in the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A stable stand-in for HAProxy's object pointers in `show peers`, so that scripts
/// that split blocks on `0x…:` read ours.
fn pseudo_ptr_of(parts: &[&str]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    format!("0x{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// The word HAProxy's `last_status` would show for a peer: `ESTA` while a session
/// is established, `CONN` while dialing or in the handshake, `NONE` otherwise (we do
/// not keep the status of a session that ended; `last_error` says why it ended).
fn last_status(state: crate::section::SessionState) -> &'static str {
    match state {
        crate::section::SessionState::Established => "ESTA",
        crate::section::SessionState::Connecting => "CONN",
        crate::section::SessionState::Idle => "NONE",
    }
}

/// The established session's transport addresses (source, destination) as HAProxy
/// shows them (`xprt=RAW src=… addr=…`): ours, then the peer's.
fn session_addrs(peer: &crate::section::PeerInfo) -> Option<(String, String)> {
    crate::section::lock(&peer.stats.addrs).clone()
}

fn show_peers(ctx: &ApiContext, only: Option<&str>) -> String {
    let mut o = String::new();
    let now = ctx.clock.now_ms();
    for s in &ctx.sections() {
        if only.is_some_and(|n| n != s.name) {
            continue;
        }
        let core = s.core();
        let _ = writeln!(
            o,
            "{}: {} id={} disabled=0 local={} listen={} complete={}",
            pseudo_ptr_of(&[&s.name]),
            log_date(ctx.started),
            s.name,
            core.local_name,
            s.listen_addr(),
            u8::from(s.up_to_date()),
        );
        for p in core.live_peers() {
            let role = match p.role {
                Role::Source(SourceKind::Node) => "node".to_owned(),
                Role::Source(SourceKind::Down) => "down".to_owned(),
                Role::Upstream { group } => {
                    let active = core.active_member(group.0 as u16) == Some(p.id);
                    let number = core
                        .plan
                        .group(group)
                        .and_then(|g| g.number)
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".to_owned());
                    let shard = match core.plan.shard_of(p.id) {
                        Some(sh) => format!("shard={sh} "),
                        None => String::new(),
                    };
                    format!(
                        "up group={number} {shard}{}",
                        if active { "active" } else { "standby" }
                    )
                }
            };
            // A sharded source's shard; an upstream's is in its words above.
            let role = match (p.role, core.plan.shard_of(p.id)) {
                (Role::Source(_), Some(sh)) => format!("{role} shard={sh}"),
                _ => role,
            };
            let addr = p
                .addr
                .as_ref()
                .map(|(h, port)| format!("{h}:{port}"))
                .unwrap_or_else(|| "-".to_owned());
            let st = &p.stats;
            let state = st.state();
            let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let last_hello = n(&st.last_hello_ms);
            let _ = writeln!(
                o,
                "  {}: id={}(remote,{}) addr={} last_status={} last_hdshk={}",
                pseudo_ptr_of(&[&s.name, &p.name]),
                p.name,
                if state == crate::section::SessionState::Idle {
                    "inactive"
                } else {
                    "active"
                },
                addr,
                last_status(state),
                if last_hello == 0 {
                    "<NEVER>".to_owned()
                } else {
                    human_time(now.saturating_sub(last_hello) / 1000)
                },
            );
            let _ = writeln!(
                o,
                "        role=({role}) state={} last_hello={} last_rx={} last_heartbeat={}",
                state.as_str(),
                ago(now, last_hello),
                ago(now, n(&st.last_rx_ms)),
                ago(now, n(&st.last_heartbeat_ms)),
            );
            let _ = writeln!(
                o,
                "        sessions={} reconnects={} coll={} proto_err={} addr_refused={} cert_refused={} \
                 resyncs_in={} resyncs_out={} updates_in={} updates_out={}",
                n(&st.sessions),
                n(&st.reconnects),
                n(&st.collisions),
                n(&st.protocol_errors),
                n(&st.addr_refused),
                n(&st.cert_refused),
                n(&st.resyncs_in),
                n(&st.resyncs_out),
                n(&st.updates_in),
                n(&st.updates_out),
            );
            if state == crate::section::SessionState::Established {
                let (src, dst) =
                    session_addrs(p).unwrap_or_else(|| ("-".to_owned(), "-".to_owned()));
                let xprt = if st.tls.load(Ordering::Relaxed) {
                    "SSL"
                } else {
                    "RAW"
                };
                let _ = writeln!(o, "        xprt={xprt} src={src} addr={dst}");
            }
            let _ = writeln!(
                o,
                "        last_error={}",
                crate::section::lock(&st.last_error)
                    .as_deref()
                    .map(|e| format!("\"{e}\""))
                    .unwrap_or_else(|| "-".to_owned()),
            );
        }
    }
    if only.is_some() && o.is_empty() {
        return "No such peers\n".to_owned();
    }
    o
}

fn show_aggrs(ctx: &ApiContext) -> String {
    let mut o = String::new();
    for s in &ctx.sections() {
        let core = s.core();
        let _ = writeln!(o, "section={}", s.name);
        for r in &core.plan.rules {
            let _ = writeln!(o, "  from {} to {}", r.from, r.to);
        }
        for f in &core.plan.forwards {
            let _ = writeln!(o, "  forward {f}");
        }
        for t in s.store.table_summaries() {
            let kind = match t.kind {
                TableKind::Output => "aggregated".to_owned(),
                TableKind::Relay { group } => format!("relayed from group {group}"),
            };
            let _ = writeln!(
                o,
                "  table={} ({kind}) used={}",
                table_name(s, &t.name),
                t.used
            );
        }
    }
    o
}

/// The name a table is shown under: `<section>/<table>` for peers-section tables
/// (whose wire name starts with `/`), as HAProxy shows them, else the wire name.
fn table_name(s: &Section, wire: &[u8]) -> String {
    let n = String::from_utf8_lossy(wire);
    if n.starts_with('/') {
        format!("{}{}", s.name, n)
    } else {
        n.into_owned()
    }
}

fn header(s: &Section, t: &TableSummary) -> String {
    format!(
        "# table: {}, type: {}, size:{}, used:{}\n",
        table_name(s, &t.name),
        t.key_type.name(),
        t.size,
        t.used
    )
}

fn show_tables(ctx: &ApiContext) -> String {
    let mut o = String::new();
    for s in &ctx.sections() {
        for t in s.store.table_summaries() {
            o.push_str(&header(s, &t));
        }
    }
    o
}

/// The tables called `name`: one, except for a name relayed from several `up`
/// groups (the shards of a sharded upper tier), which the store holds once per
/// group and the peers receive as one table; `show table` shows them as one too.
fn find_tables(ctx: &ApiContext, name: &str) -> Option<(Arc<Section>, Vec<TableSummary>)> {
    for s in ctx.sections() {
        let found: Vec<TableSummary> = s
            .store
            .table_summaries()
            .into_iter()
            .filter(|t| table_name(&s, &t.name) == name || String::from_utf8_lossy(&t.name) == name)
            .collect();
        if !found.is_empty() {
            return Some((s, found));
        }
    }
    None
}

/// Most `data.` filters in one command (HAProxy's `STKTABLE_FILTER_LEN`).
const MAX_FILTERS: usize = 4;

/// Whether `name` is an array element as `show table` names it (`gpc3`, `gpt0`,
/// `gpc1_rate`), which HAProxy's filters accept for the legacy single types.
fn is_array_field(name: &str) -> bool {
    let base = name.strip_suffix("_rate").unwrap_or(name);
    ["gpc", "gpt"].iter().any(|p| {
        base.strip_prefix(p)
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()))
    })
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Eq,
    Ne,
    Le,
    Ge,
    Lt,
    Gt,
}

fn show_table(ctx: &ApiContext, level: AccessLevel, name: &str, args: &[&str]) -> String {
    let Some((s, tables)) = find_tables(ctx, name) else {
        return "No such table\n".to_owned();
    };
    let Some(mut t) = tables.first().cloned() else {
        return "No such table\n".to_owned();
    };
    t.used = tables.iter().map(|t| t.used).sum();
    // HAProxy's answer below `operator`: the header, and why nothing follows.
    if level < AccessLevel::Operator {
        return format!(
            "{}# contents not dumped due to insufficient privileges\n\n",
            header(&s, &t)
        );
    }
    let Some(info) = s.store.table_info(t.id) else {
        return "No such table\n".to_owned();
    };
    let now = ctx.clock.now_ms();
    let mut filters: Vec<(String, Op, i64)> = Vec::new();
    let mut key: Option<Key> = None;
    let mut detail = false;
    // HAProxy's grammar and messages: `key <k>` (plus our `detail`), or up to four
    // `data.<type> <op> <value>` filters, or nothing.
    match args.first().copied() {
        None => {}
        Some("key") => {
            let Some(k) = args.get(1) else {
                return "Key value expected\n".to_owned();
            };
            match parse_key(t.key_type, t.key_len, k) {
                Ok(k) => key = Some(k),
                Err(e) => return format!("{e}\n"),
            }
            match args.get(2..) {
                Some(["detail"]) => detail = true,
                Some([]) | None => {}
                Some(_) => {
                    return "Optional argument after the key only supports \"detail\"\n".to_owned();
                }
            }
        }
        Some(a) if a.starts_with("data.") => {
            let mut i = 0;
            while i < args.len() {
                let n = i / 3 + 1;
                if n > MAX_FILTERS {
                    return format!(
                        "Detected extra data in filter, {}th word of input, after '{}'\n",
                        i + 4,
                        args[i - 1]
                    );
                }
                // Like HAProxy, the first five characters of every filter word are taken
                // as `data.` without looking: a stray word is an unknown data type.
                let ty = args[i].get("data.".len()..).unwrap_or("");
                if stktagg_wire::DataType::from_name(ty).is_none() && !is_array_field(ty) {
                    return format!("Filter entry #{n}: Unknown data type\n");
                }
                let stored = info.definition.data.iter().any(|d| {
                    d.data_type.name() == ty
                        || field_names(d)
                            .iter()
                            .any(|f| f.split('(').next() == Some(ty))
                });
                if !stored {
                    return format!("Filter entry #{n}: Data type not stored in this table\n");
                }
                let op = match args.get(i + 1).copied() {
                    Some("eq") => Op::Eq,
                    Some("ne") => Op::Ne,
                    Some("le") => Op::Le,
                    Some("ge") => Op::Ge,
                    Some("lt") => Op::Lt,
                    Some("gt") => Op::Gt,
                    _ => {
                        return format!(
                            "Filter entry #{n}: Require and operator among \"eq\", \"ne\", \"le\", \"ge\", \"lt\", \"gt\"\n"
                        );
                    }
                };
                let Some(Ok(v)) = args.get(i + 2).map(|v| v.parse::<i64>()) else {
                    return format!(
                        "Filter entry #{n}: Require a valid integer value to compare against\n"
                    );
                };
                filters.push((ty.to_owned(), op, v));
                i += 3;
            }
        }
        Some(_) => {
            return "Optional argument only supports \"data.<store_data_type>\" <operator> <value> and key <key>\n".to_owned();
        }
    }
    let mut o = header(&s, &t);
    // A key is in one of the tables (each group relays its own shard's keys); if
    // two ever held it, the first one's entry is shown.
    let mut entries = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for table in &tables {
        let found = match &key {
            Some(k) => s
                .store
                .read(table.id, k, now)
                .map(|e| vec![(k.clone(), e)])
                .unwrap_or_default(),
            None => s.store.dump(table.id, now),
        };
        for (k, e) in found {
            if seen.insert(k.clone()) {
                entries.push((table.id, k, e));
            }
        }
    }
    for (id, k, e) in entries {
        // Each table's values by its own definition (relayed tables of one name
        // come from different upstreams).
        let data = match s.store.table_info(id) {
            Some(i) => i.definition.data,
            None => continue,
        };
        let fields = render_fields(&data, &e.values, now);
        if !filters
            .iter()
            .all(|(ty, op, v)| matches_filter(&fields, ty, *op, *v))
        {
            continue;
        }
        let _ = write!(
            o,
            "{}: key={} use=0 exp={}",
            pseudo_ptr(&k),
            k.display(t.key_type),
            e.expire_ms.unwrap_or(0)
        );
        for (n, v) in &fields {
            let _ = write!(o, " {n}={v}");
        }
        o.push('\n');
        if detail && let Some(contribs) = s.store.detail(id, &k, now) {
            for c in contribs {
                let peer = s
                    .core()
                    .peers
                    .get(c.source.0 as usize)
                    .map(|p| p.name.clone());
                let peer = peer.unwrap_or_else(|| "?".to_owned());
                let _ = write!(
                    o,
                    "    from={} table={} exp={}",
                    peer,
                    String::from_utf8_lossy(&c.input_name),
                    c.expire_ms.unwrap_or(0)
                );
                for (n, v) in render_fields(&data, &c.values, now) {
                    let _ = write!(o, " {n}={v}");
                }
                o.push('\n');
            }
        }
    }
    o.push('\n');
    o
}

/// `clear table <name> [key <key>]`: removes entries from our table, with every
/// source's contribution to them (see `docs/runtime-api.md` for what the nodes
/// see). Level `operator` or `admin` ([`needs`]), as HAProxy's `clear table`. A
/// name relayed from several `up` groups is cleared in each of its tables.
fn clear_table(ctx: &ApiContext, name: &str, args: &[&str]) -> String {
    let Some((s, tables)) = find_tables(ctx, name) else {
        return "No such table\n".to_owned();
    };
    let Some(t) = tables.first() else {
        return "No such table\n".to_owned();
    };
    let key = match args {
        [] => None,
        ["key"] => return "Key value expected\n".to_owned(),
        ["key", k] => match parse_key(t.key_type, t.key_len, k) {
            Ok(k) => Some(k),
            Err(e) => return format!("{e}\n"),
        },
        _ => return "Optional argument only supports key <key>\n".to_owned(),
    };
    let n: usize = tables
        .iter()
        .map(|t| s.store.clear(t.id, key.as_ref()))
        .sum();
    tracing::info!(section = %s.name, table = %table_name(&s, &t.name), entries = n, "cleared by the runtime API");
    "\n".to_owned()
}

fn matches_filter(fields: &[(String, String)], ty: &str, op: Op, v: i64) -> bool {
    let Some((_, val)) = fields
        .iter()
        .find(|(n, _)| n == ty || n.split('(').next() == Some(ty))
    else {
        return false;
    };
    let Ok(x) = val.parse::<i64>() else {
        return false;
    };
    match op {
        Op::Eq => x == v,
        Op::Ne => x != v,
        Op::Le => x <= v,
        Op::Ge => x >= v,
        Op::Lt => x < v,
        Op::Gt => x > v,
    }
}

/// The names a data type's values are printed under (arrays are expanded as
/// HAProxy does: `gpc0 gpc1 …`).
fn field_names(d: &DataSpec) -> Vec<String> {
    use stktagg_wire::DataType as T;
    match d.data_type {
        T::Gpt => (0..d.nbelem).map(|i| format!("gpt{i}")).collect(),
        T::Gpc => (0..d.nbelem).map(|i| format!("gpc{i}")).collect(),
        T::GpcRate => (0..d.nbelem)
            .map(|i| format!("gpc{i}_rate({})", d.period_ms))
            .collect(),
        t if d.period_ms > 0 => vec![format!("{}({})", t.name(), d.period_ms)],
        t => vec![t.name().to_owned()],
    }
}

/// Renders values in HAProxy's `show table` style; rates as their current value.
fn render_fields(data: &[DataSpec], values: &[Value], now: u64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (d, v) in data.iter().zip(values) {
        let names = field_names(d);
        let rendered: Vec<String> = match v {
            Value::Sint(x) => vec![x.to_string()],
            Value::Uint(x) => vec![x.to_string()],
            Value::Ull(x) => vec![x.to_string()],
            Value::Freq(f) => vec![rate_now(*f, d.period_ms, now).to_string()],
            Value::Dict(stktagg_wire::DictValue::Name(n)) => {
                vec![String::from_utf8_lossy(n).into_owned()]
            }
            Value::Dict(stktagg_wire::DictValue::Absent) => vec!["-".to_owned()],
            Value::UintArray(a) => a.iter().map(|x| x.to_string()).collect(),
            Value::FreqArray(a) => a
                .iter()
                .map(|f| rate_now(*f, d.period_ms, now).to_string())
                .collect(),
        };
        out.extend(names.into_iter().zip(rendered));
    }
    out
}

fn rate_now(f: stktagg_wire::FreqCtr, period: u32, now: u64) -> u32 {
    let now = now as u32;
    rules::read_rate(rules::StoredFreq::on_receipt(f, now), period, now)
}

/// A stable stand-in for HAProxy's entry pointer, so that scripts that expect a
/// `0x…:` prefix parse our lines.
fn pseudo_ptr(k: &Key) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    k.hash(&mut h);
    format!("0x{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Parses a key as HAProxy's `show table … key` does for this table's type.
fn parse_key(kt: KeyType, key_len: u32, s: &str) -> Result<Key, String> {
    match kt {
        KeyType::Ipv4 => s
            .parse::<std::net::Ipv4Addr>()
            .map(Key::from_ipv4)
            .map_err(|_| "Invalid key".to_owned()),
        KeyType::Ipv6 => s
            .parse::<std::net::Ipv6Addr>()
            .map(Key::from_ipv6)
            .map_err(|_| "Invalid key".to_owned()),
        KeyType::Sint => s
            .parse::<u32>()
            .or_else(|_| s.parse::<i32>().map(|v| v as u32))
            .map(Key::from_u32)
            .map_err(|_| "Invalid key".to_owned()),
        KeyType::String => {
            let max = key_len.saturating_sub(1) as usize;
            let b = s.as_bytes();
            Ok(Key::from_str_bytes(&b[..b.len().min(max)]))
        }
        KeyType::Binary => {
            if !s.len().is_multiple_of(2) {
                return Err("Invalid key".to_owned());
            }
            let mut v = Vec::with_capacity(key_len as usize);
            for i in (0..s.len()).step_by(2) {
                let byte =
                    u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| "Invalid key".to_owned())?;
                v.push(byte);
            }
            v.resize(key_len as usize, 0);
            Ok(Key::from_bytes(bytes::Bytes::from(v)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_time_shows_two_units_like_haproxy() {
        for (secs, want) in [
            (0, "0s"),
            (4, "4s"),
            (63, "1m3s"),
            (3600, "1h"),
            (7_507, "2h5m"),
            (86_400 + 300, "1d5m"),
            (3 * 86_400 + 4 * 3600 + 59, "3d4h"),
        ] {
            assert_eq!(human_time(secs), want, "{secs}");
        }
    }

    #[test]
    fn log_dates_are_civil_utc() {
        let at = |s: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(log_date(at(0)), "[01/Jan/1970:00:00:00]");
        // 2024-02-29 12:34:56 UTC: a leap day.
        assert_eq!(log_date(at(1_709_210_096)), "[29/Feb/2024:12:34:56]");
        assert_eq!(log_date(at(1_796_426_817)), "[04/Dec/2026:23:26:57]");
    }
}
