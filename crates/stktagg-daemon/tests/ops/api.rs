//! The runtime API, command by command, against a running aggregator with two real
//! HAProxy nodes; `show table` is compared with what the nodes print for the same
//! entries.

use crate::rig::{AGG_SECTION, Block, CONVERGE, CliConn, Daemon, Fleet, FleetOpts, peer_block};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use stktagg_tests::show_table::{parse_entry, parse_table_dump, parse_table_list};
use stktagg_tests::{Entry, HarnessError, TableDump, eventually};

/// Traffic used by the table tests: (node, client, requests).
const TRAFFIC: [(usize, usize, usize); 4] = [(0, 0, 3), (1, 0, 5), (0, 1, 2), (1, 2, 4)];

fn fleet_with_traffic(label: &str, block: u8) -> Fleet {
    let fleet = Fleet::start(
        label,
        Block(block),
        FleetOpts {
            tops: false,
            rogue: true,
        },
    )
    .unwrap();
    for (n, c, count) in TRAFFIC {
        fleet.hit(n, c, count).unwrap();
    }
    // Client 0: 3 + 5 requests, client 1: 2, client 2: 4, once summed.
    let clients: Vec<String> = (0..3).map(|i| fleet.block.client(i).to_string()).collect();
    // Both nodes: the tests compare either one with the daemon (sessions send on
    // their own, and a daemon that has just started holds its sums back while a
    // configured source, `rogue` here, may still dial in).
    eventually(
        "every node's req.aggr shows every client's sum",
        CONVERGE,
        || {
            for node in &fleet.nodes {
                let d = node.api().show_table(&Fleet::node_table("req.aggr"))?;
                let n: Vec<_> = clients
                    .iter()
                    .map(|c| d.entry(c).and_then(|e| e.num("http_req_cnt")))
                    .collect();
                if d.entries.len() != 3 || n != [Some(8), Some(2), Some(4)] {
                    return Err(HarnessError::Unexpected(format!("{d:?}")));
                }
            }
            Ok(())
        },
    )
    .unwrap();
    fleet
}

/// The comparable part of an entry: key and fields (not the pointer, `use`, `exp`).
fn comparable(e: &Entry) -> (String, Vec<(String, Option<u32>, String)>) {
    (
        e.key.clone(),
        e.fields
            .iter()
            .map(|f| (f.name.clone(), f.period_ms, f.value.clone()))
            .collect(),
    )
}

fn by_key(d: &TableDump) -> BTreeMap<String, Vec<(String, Option<u32>, String)>> {
    d.entries.iter().map(comparable).collect()
}

#[test]
fn show_table_lines_match_haproxys_for_the_same_entries() {
    let fleet = fleet_with_traffic("ops_api_table", 1);
    let ours_name = Fleet::our_table("req.aggr");
    // Both sides are read until they agree: a rate may move between two reads.
    let (ours, theirs) = eventually("our show table equals hap1's", CONVERGE, || {
        let ours = fleet.agg.api.show_table(&ours_name)?;
        let theirs = fleet.nodes[0]
            .api()
            .show_table(&Fleet::node_table("req.aggr"))?;
        if by_key(&ours) == by_key(&theirs) {
            Ok((ours, theirs))
        } else {
            Err(HarnessError::Unexpected(format!(
                "ours {:?}\ntheirs {:?}",
                by_key(&ours),
                by_key(&theirs)
            )))
        }
    })
    .unwrap();
    assert_eq!(ours.entries.len(), 3);
    assert_eq!(ours.info.name, ours_name);
    assert_eq!(ours.info.key_type, theirs.info.key_type);
    assert_eq!(ours.info.used, theirs.info.used);
    // Same field names, periods and order as HAProxy prints them.
    let names = |d: &TableDump| -> Vec<(String, Option<u32>)> {
        d.entries[0]
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.period_ms))
            .collect()
    };
    assert_eq!(names(&ours), names(&theirs));
    let c0 = ours.entry(&fleet.block.client(0).to_string()).unwrap();
    assert_eq!(c0.num("http_req_cnt"), Some(8));
    assert_eq!(c0.num("gpc0"), Some(8));
    // gpt0 is a tag: the maximum over the nodes (hap1 sets 1, hap2 sets 2).
    assert_eq!(c0.num("gpt0"), Some(2));
    assert!(c0.exp_ms > 0 && c0.exp_ms <= 60_000, "{c0:?}");

    // Every entry line starts with a `0x…:` pointer and has `use=` and `exp=`, so
    // scripts written for HAProxy parse it; the raw text ends with a blank line.
    let raw = fleet
        .agg
        .api
        .command(&format!("show table {ours_name}"))
        .unwrap();
    assert!(raw.ends_with("\n\n"), "{raw:?}");
    for line in raw.lines().skip(1).filter(|l| !l.is_empty()) {
        assert!(line.starts_with("0x"), "{line}");
        parse_entry(line).unwrap();
    }

    // The list: one header per table, in HAProxy's format.
    let list = parse_table_list(&fleet.agg.api.command("show table").unwrap()).unwrap();
    let t = list.iter().find(|t| t.name == ours_name).unwrap();
    assert_eq!((t.key_type.as_str(), t.used), ("ip", 3));
}

#[test]
fn data_and_key_filters_select_what_haproxys_select() {
    let fleet = fleet_with_traffic("ops_api_filter", 2);
    let ours = Fleet::our_table("req.aggr");
    let theirs = Fleet::node_table("req.aggr");
    let keys = |text: &str| -> Vec<String> {
        let mut k: Vec<String> = parse_table_dump(text)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.key)
            .collect();
        k.sort();
        k
    };
    for filter in [
        "data.http_req_cnt gt 3",
        "data.http_req_cnt ge 4",
        "data.http_req_cnt lt 4",
        "data.http_req_cnt le 4",
        "data.http_req_cnt eq 8",
        "data.http_req_cnt ne 8",
        "data.gpc0 gt 100",
        "data.gpt0 eq 2",
        "data.http_req_cnt gt 1 data.gpt0 eq 1",
    ] {
        let a = fleet
            .agg
            .api
            .command(&format!("show table {ours} {filter}"))
            .unwrap();
        let b = fleet.nodes[0]
            .api()
            .command(&format!("show table {theirs} {filter}"))
            .unwrap();
        assert_eq!(
            keys(&a),
            keys(&b),
            "filter `{filter}`:\nours {a}\ntheirs {b}"
        );
    }
    // Client 1 has 2 requests, client 2 has 4: `lt 4` keeps only client 1.
    let lt = fleet
        .agg
        .api
        .command(&format!("show table {ours} data.http_req_cnt lt 4"))
        .unwrap();
    assert_eq!(keys(&lt), vec![fleet.block.client(1).to_string()]);

    // `key` selects one entry, the same as HAProxy's.
    let k = fleet.block.client(2).to_string();
    let a = parse_table_dump(
        &fleet
            .agg
            .api
            .command(&format!("show table {ours} key {k}"))
            .unwrap(),
    )
    .unwrap();
    let b = parse_table_dump(
        &fleet.nodes[1]
            .api()
            .command(&format!("show table {theirs} key {k}"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(a.entries.len(), 1);
    assert_eq!(comparable(&a.entries[0]), comparable(&b.entries[0]));
    // A key that is not there: no entry line (HAProxy 2.6 prints nothing at all; we
    // print the header, so that an empty answer always means a dead socket).
    let none = fleet
        .agg
        .api
        .command(&format!("show table {ours} key 127.0.77.250"))
        .unwrap();
    assert!(
        parse_table_dump(&none).unwrap().entries.is_empty(),
        "{none}"
    );
}

#[test]
fn detail_shows_each_sources_contribution() {
    let fleet = fleet_with_traffic("ops_api_detail", 3);
    let k = fleet.block.client(0).to_string();
    let text = fleet
        .agg
        .api
        .command(&format!(
            "show table {} key {k} detail",
            Fleet::our_table("req.aggr")
        ))
        .unwrap();
    let mut lines = text.lines().filter(|l| !l.is_empty());
    assert!(
        lines.next().unwrap().starts_with("# table: ag/req.aggr"),
        "{text}"
    );
    let sum = parse_entry(lines.next().unwrap()).unwrap();
    assert_eq!(sum.num("http_req_cnt"), Some(8), "{text}");
    let mut contributions = BTreeMap::new();
    for line in lines {
        // `    from=<peer> table=<input> exp=<ms> <fields>`: the same fields as an
        // entry line, after the source's name and input table.
        let body = line.trim_start();
        assert!(line.starts_with("    from="), "{line}");
        let (from, rest) = body.split_once(' ').unwrap();
        let parsed = parse_entry(&format!(
            "0x0: key={k} use=0 {}",
            rest.split_once(' ').unwrap().1
        ))
        .unwrap();
        assert!(rest.starts_with("table=/req.uncombined "), "{line}");
        contributions.insert(from.trim_start_matches("from=").to_owned(), parsed);
    }
    assert_eq!(
        contributions.keys().collect::<Vec<_>>(),
        vec!["hap1", "hap2"],
        "{text}"
    );
    // Each contribution is what that node's own input table holds.
    for (i, node) in fleet.nodes.iter().enumerate() {
        let own = node
            .api()
            .show_table(&Fleet::node_table("req.uncombined"))
            .unwrap();
        let own = own.entry(&k).unwrap();
        let c = &contributions[&node.name];
        for f in ["http_req_cnt", "gpc0", "gpt0", "bytes_in_cnt"] {
            assert_eq!(c.num(f), own.num(f), "{} {f}: {text}", node.name);
        }
        assert_eq!(c.num("gpt0"), Some(i as i128 + 1));
    }
    // `detail` on a whole-table dump is not an option.
    let bad = fleet
        .agg
        .api
        .command(&format!(
            "show table {} detail",
            Fleet::our_table("req.aggr")
        ))
        .unwrap();
    assert!(bad.starts_with("Optional argument only supports"), "{bad}");
}

#[test]
fn info_peers_aggrs_and_help() {
    let fleet = fleet_with_traffic("ops_api_show", 4);
    let api = &fleet.agg.api;

    let info = api.command("show info").unwrap();
    let field = |name: &str| -> String {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {info}"))
            .to_owned()
    };
    let num = |name: &str| -> u64 {
        field(name)
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e} in {info}"))
    };
    assert_eq!(field("Name"), "stktagg");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("Pid"), fleet.agg.pid().unwrap().to_string());
    assert_eq!(field("Sections"), "1");
    assert_eq!(field("Peers"), "3");
    assert_eq!(field("PeersUp"), "2");
    assert_eq!(field("Tables"), "1");
    assert_eq!(field("Entries"), "3");
    assert!(num("UpdatesIn") >= 3, "{info}");
    assert!(num("UpdatesOut") >= 3, "{info}");
    assert!(field("Uptime").starts_with("0d 0h"), "{info}");
    let up = num("Uptime_sec");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let started = num("Start_time_sec");
    assert!(started <= now && now - started <= up + 2, "{info}");
    // Memory, CPU and descriptors of the process, as the kernel counts them.
    let rss = num("Rss_bytes");
    assert!(rss > 1 << 20 && rss < 1 << 30, "{info}");
    assert_eq!(num("Rss_MB"), rss >> 20);
    assert!(field("Cpu_sec").parse::<f64>().unwrap() >= 0.0, "{info}");
    assert!(num("Threads") >= 1 && num("OpenFds") >= 3, "{info}");
    num("Ulimit-n");
    // Counters, summed over the peers: each node has one session and a resync.
    assert_eq!(num("CumSessions"), 2, "{info}");
    assert_eq!(num("Reconnects"), 0, "{info}");
    assert!(num("ResyncsIn") >= 2, "{info}");
    for zero in [
        "ProtocolErrors",
        "HelloRejected",
        "GroupSwitches",
        "Collisions",
    ] {
        assert_eq!(num(zero), 0, "{zero}: {info}");
    }
    assert_eq!(
        api.command("show version").unwrap(),
        format!("{}\n\n", env!("CARGO_PKG_VERSION"))
    );

    // `show peers` in HAProxy's layout: a section line, then a block per peer.
    let peers = api.command("show peers").unwrap();
    let head = peers.lines().next().unwrap();
    let (ptr, rest) = head.split_once(": [").unwrap();
    assert!(ptr.starts_with("0x") && ptr.len() == 14, "{head}");
    assert!(
        rest.contains(&format!(
            "] id={AGG_SECTION} disabled=0 local=stktagg listen={} complete=",
            fleet.listen
        )),
        "{head}"
    );
    let hap1 = peer_block(&peers, "hap1").unwrap();
    for want in [
        "id=hap1(remote,active)",
        &format!("addr={} ", fleet.nodes[0].peer),
        "last_status=ESTA",
        "role=(node)",
        "state=ESTA",
        "sessions=1",
        "reconnects=0",
        "coll=0",
        "proto_err=0",
        "xprt=RAW",
        "addr_refused=0",
        "cert_refused=0",
    ] {
        assert!(hap1.contains(want), "`{want}` not in {hap1}");
    }
    let kv = |line: &str, k: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_owned()
    };
    assert!(
        kv(&hap1, "updates_in").parse::<u64>().unwrap() >= 2,
        "{hap1}"
    );
    assert!(
        kv(&hap1, "resyncs_in").parse::<u64>().unwrap() >= 1,
        "{hap1}"
    );
    assert!(kv(&hap1, "last_hello").ends_with("ms"), "{hap1}");
    // HAProxy's human time: whole seconds, at most two units.
    let hdshk = kv(&hap1, "last_hdshk");
    let units = hdshk.chars().filter(|c| "dhms".contains(*c)).count();
    assert!(
        (1..=2).contains(&units)
            && !hdshk.ends_with("ms")
            && hdshk.ends_with(['d', 'h', 'm', 's'])
            && hdshk
                .chars()
                .all(|c| c.is_ascii_digit() || "dhms".contains(c)),
        "{hap1}"
    );
    let rogue = peer_block(&peers, "rogue").unwrap();
    for want in [
        "id=rogue(remote,inactive)",
        "addr=-",
        "last_status=NONE",
        "last_hdshk=<NEVER>",
        "last_hello=<NEVER>",
        "state=IDLE",
        "addr_refused=0",
        "cert_refused=0",
        "last_error=-",
    ] {
        assert!(rogue.contains(want), "`{want}` not in {rogue}");
    }
    assert!(!rogue.contains("xprt="), "{rogue}");
    // The established session's remote address (HAProxy's `xprt=... addr=`): the
    // node dialed us from 127.0.0.1 (its loopback default), or we dialed it.
    let xprt = hap1.lines().find(|l| l.contains("xprt=RAW")).unwrap();
    let remote = kv(xprt, "addr");
    assert!(
        remote.starts_with("127.0.0.1:") || remote == fleet.nodes[0].peer.to_string(),
        "{hap1}"
    );
    // One section only, by name; an unknown one is an error line.
    // (Ages move between the two reads: compare with them blanked.)
    let blank_ages = |t: &str| -> String {
        t.split(' ')
            .map(|w| match w.split_once('=') {
                Some((k, v)) if v.ends_with("ms") || v.ends_with('s') => format!("{k}=_"),
                _ => w.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        blank_ages(&api.command(&format!("show peers {AGG_SECTION}")).unwrap()),
        blank_ages(&peers)
    );
    assert_eq!(
        api.command("show peers nope").unwrap().trim(),
        "No such peers"
    );

    let aggrs = api.command("show aggrs").unwrap();
    assert!(
        aggrs.starts_with(&format!("section={AGG_SECTION}\n")),
        "{aggrs}"
    );
    assert!(aggrs.contains("  from .uncombined to .aggr\n"), "{aggrs}");
    assert!(
        aggrs.contains("  table=ag/req.aggr (aggregated) used=3\n"),
        "{aggrs}"
    );

    let help = api.command("help").unwrap();
    for cmd in [
        "help",
        "prompt",
        "quit",
        "show version",
        "show info",
        "show peers",
        "show aggrs",
        "show table [<name>]",
        "data.<type> <op> <v>",
        "key <key> [detail]",
    ] {
        assert!(help.contains(cmd), "`{cmd}` not in help:\n{help}");
    }
}

/// Answers `cmd` within a bound; the answer must start with `want`.
fn answers(d: &Daemon, cmd: &str, want: &str) {
    let start = Instant::now();
    let out = d.api.command(cmd).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "`{cmd}` took {:?}",
        start.elapsed()
    );
    assert!(out.starts_with(want), "`{cmd}`: want `{want}`, got `{out}`");
}

#[test]
fn errors_get_haproxy_style_text_and_never_hang() {
    let fleet = fleet_with_traffic("ops_api_errors", 5);
    let d = &fleet.agg;
    let t = Fleet::our_table("req.aggr");
    // The texts HAProxy 2.6 prints for the same mistakes: ours are the same.
    let node = fleet.nodes[0].api();
    for args in [
        "key",
        "data.gpc0",
        "data.gpc0 xx 1",
        "data.gpc0 eq x",
        "data.nosuchtype eq 1",
        "data.server_id eq 1",
        "data.gpc0 eq 1 data.http_req_cnt",
        "data.gpc0 eq 1 extra",
        "data.gpc0 eq 1 data.gpc0 eq 1 data.gpc0 eq 1 data.gpc0 eq 1 data.gpc0 eq 1",
        "frob",
    ] {
        let ours = d.api.command(&format!("show table {t} {args}")).unwrap();
        let hap = node
            .command(&format!("show table cl/req.aggr {args}"))
            .unwrap();
        // HAProxy 3.0 added `show table <t> ptr <ptr>` and names it in this text;
        // stktagg has no `ptr` and keeps 2.6's text (docs/compatibility.md).
        let hap = hap.replace(" or key <key> or ptr <ptr>", " and key <key>");
        assert_eq!(ours.trim(), hap.trim(), "`show table <t> {args}`");
    }
    let ours = d.api.command("show table nosuch").unwrap();
    assert_eq!(
        ours.trim(),
        node.command("show table nosuch").unwrap().trim()
    );
    answers(d, "show table nosuch", "No such table\n");
    answers(
        d,
        "bogus",
        "Unknown command: 'bogus'\n\nThe following commands are valid",
    );
    answers(d, "show", "Unknown command: 'show'");
    answers(d, "show info extra", "Unknown command: 'show info extra'");
    answers(d, &format!("show table {t} key not-an-ip"), "Invalid key\n");
    answers(
        d,
        &format!("show table {t} key 10.0.0.1 frob"),
        "Optional argument after the key only supports \"detail\"",
    );
    // A line that is too long, binary junk, and a silent client: answered or closed,
    // never a hang, and the daemon keeps serving.
    let long = format!("show table {}", "x".repeat(20_000));
    let out = d.api.command(&long).unwrap_or_default();
    assert!(!out.contains("# table:"), "{out}");
    answers(d, "\u{1}\u{2}\u{3}", "Unknown command");
    let start = Instant::now();
    let mut idle = CliConn::connect(d.api.path()).unwrap();
    let r = idle.read_to_end();
    // Non-interactive connections close after 10 s of silence; our read gives up
    // after 5 s: either way this returns, and the daemon still answers afterwards.
    assert!(start.elapsed() < Duration::from_secs(12), "{r:?}");
    answers(d, "show info", "Name: stktagg");
}

#[test]
fn semicolons_prompt_and_quit() {
    let fleet = fleet_with_traffic("ops_api_prompt", 6);
    let d = &fleet.agg;
    // Several commands on one line, separated by `;`, answered in order.
    let out = d.api.command("show info; show aggrs ;help").unwrap();
    let a = out.find("Name: stktagg").unwrap();
    let b = out.find("section=ag").unwrap();
    let c = out.find("The following commands are valid").unwrap();
    assert!(a < b && b < c, "{out}");
    // Empty commands are skipped.
    assert_eq!(d.api.command(";;").unwrap(), "");

    // Interactive mode: a `> ` prompt after each answer, the connection stays open.
    let mut cli = CliConn::connect(d.api.path()).unwrap();
    cli.send("prompt").unwrap();
    assert_eq!(cli.read_until("> ").unwrap(), "> ");
    cli.send("show info").unwrap();
    let info = cli.read_until("\n> ").unwrap();
    assert!(info.starts_with("Name: stktagg\n"), "{info}");
    cli.send(&format!("show table {}", Fleet::our_table("req.aggr")))
        .unwrap();
    let t = cli.read_until("\n> ").unwrap();
    assert_eq!(
        parse_table_dump(t.trim_end_matches("> "))
            .unwrap()
            .entries
            .len(),
        3
    );
    cli.send("show peers; show aggrs").unwrap();
    let both = cli.read_until("\n> ").unwrap();
    assert!(
        both.contains("id=hap1(") && both.contains("from .uncombined"),
        "{both}"
    );
    cli.send("quit").unwrap();
    assert_eq!(cli.read_to_end().unwrap(), "");

    // `prompt` toggles: twice on one line is non-interactive again, so the
    // connection closes after the line.
    let mut cli = CliConn::connect(d.api.path()).unwrap();
    cli.send("prompt; prompt; show info").unwrap();
    let out = cli.read_to_end().unwrap();
    assert!(out.starts_with("Name: stktagg"), "{out}");
}

#[test]
fn socket_is_created_0600_unless_configured() {
    let listen = Block(7).addr(1);
    let d = Daemon::start(
        "ops_api_mode",
        &format!(
            "global\n    stats socket {{dir}}/api.sock\n\naggregations s\n    peer me {listen} local\n    \
             peer n1 {}\n    from .a to .b\n",
            Block(7).addr(4)
        ),
        &[],
    )
    .unwrap();
    let mode = std::fs::metadata(d.api.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let listen = Block(7).addr(2);
    let d2 = Daemon::start(
        "ops_api_mode660",
        &format!(
            "global\n    stats socket {{dir}}/api.sock mode 660 level admin\n\naggregations s\n    \
             peer me {listen} local\n    peer n1 {}\n    from .a to .b\n",
            Block(7).addr(5)
        ),
        &[],
    )
    .unwrap();
    let mode = std::fs::metadata(d2.api.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    // No table yet: the list is empty (a blank line ends every answer), not an error.
    assert_eq!(d.api.command("show table").unwrap(), "\n");
    assert_eq!(
        d.api.command("show table s/x.b").unwrap().trim(),
        "No such table"
    );
}
