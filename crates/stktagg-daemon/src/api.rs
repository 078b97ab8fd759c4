//! The runtime API on the `stats socket`, in HAProxy's CLI conventions.
//!
//! One command per line; several on one line separated by `;`; the connection closes
//! after the line unless `prompt` turned on interactive mode, as with HAProxy, so
//! `echo "show table" | socat stdio unix:/tmp/stktagg.sock` works the same way.
//! Output formats follow HAProxy's where HAProxy has the command (`show table`), so
//! scripts written for HAProxy parse ours unchanged.

use crate::clock::Clock;
use crate::load::ApiSocket;
use crate::section::Section;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use stktagg_store::{TableKind, TableSummary, rules};
use stktagg_topology::{Role, SourceKind};
use stktagg_wire::{DataSpec, Key, KeyType, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// Longest command line accepted.
const MAX_LINE: usize = 16 * 1024;

/// What the commands can see.
#[derive(Debug, Clone)]
pub struct ApiContext {
    sections: Vec<Arc<Section>>,
    clock: Clock,
    started: std::time::SystemTime,
}

impl ApiContext {
    /// A context over the running sections.
    pub fn new(sections: Vec<Arc<Section>>, clock: Clock) -> Self {
        ApiContext {
            sections,
            clock,
            started: std::time::SystemTime::now(),
        }
    }
}

/// Binds the unix socket and starts serving it.
pub async fn start(
    sock: &ApiSocket,
    ctx: ApiContext,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: CancellationToken,
) -> Result<()> {
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
    let ctx = Arc::new(ctx);
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _ = serve(ctx, stream).await;
            });
        }
    });
    Ok(())
}

async fn serve(ctx: Arc<ApiContext>, stream: tokio::net::UnixStream) -> std::io::Result<()> {
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
                _ => {}
            }
            let out = execute(&ctx, cmd);
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

/// Runs one command and returns its output.
pub fn execute(ctx: &ApiContext, cmd: &str) -> String {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match words.as_slice() {
        ["help"] => help(),
        ["show", "info"] => show_info(ctx),
        ["show", "peers", rest @ ..] => show_peers(ctx, rest.first().copied()),
        ["show", "aggrs"] => show_aggrs(ctx),
        ["show", "table"] => show_tables(ctx),
        ["show", "table", name, rest @ ..] => show_table(ctx, name, rest),
        _ => format!("Unknown command: '{cmd}'\n\n{}", help()),
    }
}

fn help() -> String {
    "The following commands are valid at this level:\n\
     \x20 help                                    : this message\n\
     \x20 prompt                                  : toggle interactive mode with prompt\n\
     \x20 quit                                    : disconnect\n\
     \x20 show info                               : report information about the running process\n\
     \x20 show peers [<section>]                  : dump peer sessions per section\n\
     \x20 show aggrs                              : dump aggregation rules and the tables they produced\n\
     \x20 show table [<name>]                     : report table usage stats or dump this table's contents\n\
     \x20 show table <name> data.<type> <op> <v>  : dump entries whose value matches (eq ne le ge lt gt)\n\
     \x20 show table <name> key <key> [detail]    : dump one entry [with the contribution of each source]\n"
        .to_owned()
}

fn show_info(ctx: &ApiContext) -> String {
    let mut o = String::new();
    let up = ctx.started.elapsed().unwrap_or_default().as_secs();
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
    let (mut peers, mut peers_up, mut tables, mut entries, mut upd_in, mut upd_out) =
        (0, 0, 0, 0, 0u64, 0u64);
    for s in &ctx.sections {
        for p in &s.peers {
            peers += 1;
            if p.stats.state() == crate::section::SessionState::Established {
                peers_up += 1;
            }
            upd_in += p.stats.updates_in.load(Ordering::Relaxed);
            upd_out += p.stats.updates_out.load(Ordering::Relaxed);
        }
        for t in s.store.table_summaries() {
            tables += 1;
            entries += t.used;
        }
    }
    let _ = writeln!(o, "Sections: {}", ctx.sections.len());
    let _ = writeln!(o, "Peers: {peers}");
    let _ = writeln!(o, "PeersUp: {peers_up}");
    let _ = writeln!(o, "Tables: {tables}");
    let _ = writeln!(o, "Entries: {entries}");
    let _ = writeln!(o, "UpdatesIn: {upd_in}");
    let _ = writeln!(o, "UpdatesOut: {upd_out}");
    o
}

fn ago(now: u64, then: u64) -> String {
    if then == 0 {
        "<NEVER>".to_owned()
    } else {
        format!("{}ms", now.saturating_sub(then))
    }
}

fn show_peers(ctx: &ApiContext, only: Option<&str>) -> String {
    let mut o = String::new();
    let now = ctx.clock.now_ms();
    for s in &ctx.sections {
        if only.is_some_and(|n| n != s.name) {
            continue;
        }
        let _ = writeln!(
            o,
            "section={} local={} listen={}",
            s.name,
            s.local_name,
            s.listen_addr()
        );
        for p in &s.peers {
            let role = match p.role {
                Role::Source(SourceKind::Node) => "node".to_owned(),
                Role::Source(SourceKind::Down) => "down".to_owned(),
                Role::Upstream { group } => {
                    let active = s.active_member(group.0 as u16) == Some(p.id);
                    let number = s
                        .plan
                        .groups
                        .get(group.0)
                        .and_then(|g| g.number)
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".to_owned());
                    format!(
                        "up group={number} {}",
                        if active { "active" } else { "standby" }
                    )
                }
            };
            let addr = p
                .addr
                .as_ref()
                .map(|(h, port)| format!("{h}:{port}"))
                .unwrap_or_else(|| "-".to_owned());
            let st = &p.stats;
            let _ = writeln!(
                o,
                "  peer={} addr={} role=({}) state={} last_hello={} last_rx={} last_heartbeat={} \
                 sessions={} reconnects={} collisions={} resyncs_in={} resyncs_out={} \
                 updates_in={} updates_out={} proto_err={} last_error={}",
                p.name,
                addr,
                role,
                st.state().as_str(),
                ago(now, st.last_hello_ms.load(Ordering::Relaxed)),
                ago(now, st.last_rx_ms.load(Ordering::Relaxed)),
                ago(now, st.last_heartbeat_ms.load(Ordering::Relaxed)),
                st.sessions.load(Ordering::Relaxed),
                st.reconnects.load(Ordering::Relaxed),
                st.collisions.load(Ordering::Relaxed),
                st.resyncs_in.load(Ordering::Relaxed),
                st.resyncs_out.load(Ordering::Relaxed),
                st.updates_in.load(Ordering::Relaxed),
                st.updates_out.load(Ordering::Relaxed),
                st.protocol_errors.load(Ordering::Relaxed),
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
    for s in &ctx.sections {
        let _ = writeln!(o, "section={}", s.name);
        for r in &s.plan.rules {
            let _ = writeln!(o, "  from {} to {}", r.from, r.to);
        }
        for f in &s.plan.forwards {
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
    for s in &ctx.sections {
        for t in s.store.table_summaries() {
            o.push_str(&header(s, &t));
        }
    }
    o
}

fn find_table<'a>(ctx: &'a ApiContext, name: &str) -> Option<(&'a Arc<Section>, TableSummary)> {
    for s in &ctx.sections {
        for t in s.store.table_summaries() {
            let wire = String::from_utf8_lossy(&t.name);
            if table_name(s, &t.name) == name || wire == name {
                return Some((s, t));
            }
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

fn show_table(ctx: &ApiContext, name: &str, args: &[&str]) -> String {
    let Some((s, t)) = find_table(ctx, name) else {
        return "No such table\n".to_owned();
    };
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
    let mut o = header(s, &t);
    let entries = match &key {
        Some(k) => s
            .store
            .read(t.id, k, now)
            .map(|e| vec![(k.clone(), e)])
            .unwrap_or_default(),
        None => s.store.dump(t.id, now),
    };
    for (k, e) in entries {
        let fields = render_fields(&info.definition.data, &e.values, now);
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
        if detail && let Some(contribs) = s.store.detail(t.id, &k, now) {
            for c in contribs {
                let peer = s
                    .peers
                    .get(c.source.0 as usize)
                    .map(|p| p.name.as_str())
                    .unwrap_or("?");
                let _ = write!(
                    o,
                    "    from={} table={} exp={}",
                    peer,
                    String::from_utf8_lossy(&c.input_name),
                    c.expire_ms.unwrap_or(0)
                );
                for (n, v) in render_fields(&info.definition.data, &c.values, now) {
                    let _ = write!(o, " {n}={v}");
                }
                o.push('\n');
            }
        }
    }
    o.push('\n');
    o
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
            Ok(Key(bytes::Bytes::from(v)))
        }
    }
}
