//! The command line: `-c`, `--version`, `--print-default-config`, exit codes, and
//! the stop signals.

use crate::rig::{Block, Daemon, root, run_bin};
use std::net::TcpStream;
use std::time::Duration;
use stktagg_tests::ports::{remove_dir, scratch_dir};
use stktagg_tests::{Haproxy, HaproxyConfig, HarnessError, eventually};

#[test]
fn version_prints_the_crate_version() {
    let (code, out, _) = run_bin(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), format!("stktagg {}", env!("CARGO_PKG_VERSION")));
}

/// `text` with every `crt` and `ca-file` path replaced by a file of a test PKI in
/// `dir` (the golden configurations name files of a real host, which `-c` reads).
fn with_test_pki(text: &str, dir: &std::path::Path) -> String {
    let ca = stktagg_tests::pki::Ca::new("cli test CA").unwrap();
    let ca_path = ca.write(&dir.join("ca.pem")).unwrap();
    let crt = ca.leaf("any").unwrap().write(&dir.join("any.pem")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        for i in 1..words.len() {
            match words[i - 1].as_str() {
                "crt" => words[i] = crt.display().to_string(),
                "ca-file" => words[i] = ca_path.display().to_string(),
                _ => {}
            }
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

#[test]
fn check_accepts_good_files_and_prints_the_plan() {
    let seed = root().join("crates/stktagg-config/tests/data/ok");
    let scratch = scratch_dir("ops_cli_good").unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&seed).unwrap() {
        let mut p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "cfg") {
            let text = std::fs::read_to_string(&p).unwrap();
            if text.contains(" crt ") || text.contains(" ca-file ") {
                let copy = scratch.join(p.file_name().unwrap());
                std::fs::write(&copy, with_test_pki(&text, &scratch)).unwrap();
                p = copy;
            }
            let (code, out, err) = run_bin(&["-c", "-f", p.to_str().unwrap()]);
            assert_eq!(code, Some(0), "{}: {err}", p.display());
            assert!(
                out.ends_with("configuration is valid\n"),
                "{}: {out}",
                p.display()
            );
            assert!(out.contains("section "), "{}: {out}", p.display());
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} files in {}", seed.display());
    remove_dir(&scratch);
}

#[test]
fn check_refuses_bad_files_with_exit_code_2() {
    let dir = scratch_dir("ops_cli_bad").unwrap();
    let bad = dir.join("bad.cfg");
    std::fs::write(
        &bad,
        "aggregations x\n    peer me 127.0.0.1:1 local\n    peer n 127.0.0.1:2\n    frm .a to .b\n",
    )
    .unwrap();
    let (code, out, err) = run_bin(&["-c", "-f", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("bad.cfg:4:5: error"), "{err}");
    assert!(!out.contains("configuration is valid"), "{out}");
    // A missing file is a configuration error too.
    let missing = dir.join("missing.cfg");
    let (code, _, err) = run_bin(&["-c", "-f", missing.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("missing.cfg: error: cannot read"), "{err}");
    // The daemon refuses to start on a bad file, with the same exit code.
    let (code, _, err) = run_bin(&["-f", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    // A bad command line is clap's usage error, exit code 2 as well.
    let (code, _, err) = run_bin(&["--no-such-flag"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("Usage"), "{err}");
    // Two files are read as one: a section defined twice across files is refused.
    let (code, _, err) = run_bin(&[
        "-c",
        "-f",
        bad.to_str().unwrap(),
        "-f",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    remove_dir(&dir);
}

#[test]
fn default_config_round_trips_through_check() {
    let (code, text, _) = run_bin(&["--print-default-config"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("aggregations "), "{text}");
    let dir = scratch_dir("ops_cli_default").unwrap();
    let f = dir.join("default.cfg");
    std::fs::write(&f, &text).unwrap();
    let (code, from_file, err) = run_bin(&["-c", "-f", f.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    // Checking the embedded default (no -f) prints the same plan.
    let (code, embedded, _) = run_bin(&["-c"]);
    assert_eq!(code, Some(0));
    assert_eq!(from_file, embedded);
    remove_dir(&dir);
}

/// A daemon with one HAProxy node attached, ready to be signalled.
fn attached(label: &str, block: Block) -> (Daemon, Haproxy, std::net::SocketAddr) {
    stktagg_tests::require_haproxy().unwrap();
    let listen = block.addr(1);
    let node = block.addr(4);
    let d = Daemon::start(
        label,
        &format!(
            "global\n    stats socket {{dir}}/api.sock\n\naggregations s\n    peer agg {listen} local\n    \
             peer hap1 {node}\n    from .uncombined to .aggr\n"
        ),
        &[],
    )
    .unwrap();
    let h = Haproxy::start(
        &HaproxyConfig::new()
            .local_peer("hap1")
            .peers_section("cl")
            .peer("hap1", node)
            .peer("agg", listen)
            .table("t.uncombined type ip size 1k expire 30s store gpc0")
            .table("t.aggr type ip size 1k expire 30s store gpc0"),
        &format!("{label}_hap1"),
    )
    .unwrap();
    eventually("hap1 attached", Duration::from_secs(8), || {
        let p = d.api.command("show peers")?;
        if p.contains("state=ESTA") {
            Ok(())
        } else {
            Err(HarnessError::Unexpected(p))
        }
    })
    .unwrap();
    h.api()
        .set_table("cl/t.uncombined", "10.0.0.1", &[("gpc0", "7")])
        .unwrap();
    (d, h, listen)
}

fn stops_cleanly_on(signal: &str, block: Block) {
    let (mut d, h, listen) = attached(&format!("ops_cli_{signal}"), block);
    let sock = d.api.path().to_owned();
    assert!(sock.exists());
    let (st, took) = d
        .signal_and_wait(signal, Duration::from_secs(7))
        .unwrap_or_else(|| panic!("still running 7 s after SIG{signal}:\n{}", d.log()));
    assert_eq!(st.code(), Some(0), "{}", d.log());
    // The drain is bounded by a 5 s grace period.
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(!sock.exists(), "the socket survived");
    assert!(TcpStream::connect_timeout(&listen, Duration::from_millis(500)).is_err());
    let log = d.log();
    assert!(log.contains(&format!("SIG{signal} received")), "{log}");
    assert!(log.contains("shutting down"), "{log}");
    // HAProxy saw the session end and goes on.
    let mut h = h;
    h.check_alive().unwrap();
}

#[test]
fn sigterm_stops_within_the_grace_period_and_removes_the_socket() {
    stops_cleanly_on("TERM", Block(10));
}

#[test]
fn sigint_stops_like_sigterm() {
    stops_cleanly_on("INT", Block(11));
}

fn hup(d: &Daemon) {
    let _ = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(d.pid().unwrap().to_string())
        .status();
}

fn wait_for_line(d: &Daemon, what: &str, line: &str) {
    eventually(what, Duration::from_secs(5), || {
        let log = d.log();
        if log.contains(line) {
            Ok(())
        } else {
            Err(HarnessError::Unexpected(log))
        }
    })
    .unwrap();
}

/// `show peers`' `sessions=` of `peer`.
fn sessions_of(d: &Daemon, peer: &str) -> Option<u64> {
    let out = d.api.command("show peers").ok()?;
    let block = out.split(&format!("id={peer}(")).nth(1)?;
    let n = block.split("sessions=").nth(1)?;
    n.split_whitespace().next()?.parse().ok()
}

#[test]
fn sighup_applies_a_valid_file_in_place_and_refuses_a_broken_one() {
    let (mut d, _h, _) = attached("ops_cli_hup", Block(12));
    hup(&d);
    wait_for_line(
        &d,
        "the unchanged line",
        "reload: the configuration is valid and unchanged",
    );
    // A peer added: applied, said by meaning, and hap1's session is untouched.
    let good = std::fs::read_to_string(&d.cfg).unwrap();
    let added = good.replace(
        "    from .uncombined",
        "    peer hap2 127.0.0.1:1\n    from .uncombined",
    );
    std::fs::write(&d.cfg, &added).unwrap();
    hup(&d);
    wait_for_line(
        &d,
        "the added line",
        "reload: section `s`: peer `hap2` added (node, 127.0.0.1:1)",
    );
    assert!(d.api.command("show peers").unwrap().contains("id=hap2("));
    // A broken edit is reported and changes nothing.
    std::fs::write(&d.cfg, format!("{added}    frm .x to .y\n")).unwrap();
    hup(&d);
    wait_for_line(
        &d,
        "the invalid line",
        "reload: the configuration is invalid, nothing changed",
    );
    assert!(
        d.try_wait().is_none(),
        "SIGHUP stopped the daemon:\n{}",
        d.log()
    );
    let peers = d.api.command("show peers").unwrap();
    assert!(peers.contains("state=ESTA"), "{peers}");
    assert!(peers.contains("id=hap2("), "{peers}");
    assert_eq!(sessions_of(&d, "hap1"), Some(1), "{peers}");
}

/// Reads datagrams until one contains `want`, at most 5 s; returns it.
fn datagram_with(sock: &std::os::unix::net::UnixDatagram, want: &str) -> String {
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == want) {
                return msg;
            }
            seen.push(msg);
        }
    }
    panic!("no `{want}` from the daemon; got {seen:?}");
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let dir = scratch_dir("ops_cli_notify").unwrap();
    let path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let listen = Block(14).addr(1);
    let mut d = Daemon::start_with_env(
        "ops_cli_notify_d",
        &format!(
            "global\n    stats socket {{dir}}/api.sock\n\naggregations s\n    peer agg {listen} local\n    \
             peer hap1\n    from .uncombined to .aggr\n"
        ),
        &[],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    )
    .unwrap();
    // READY once every listener is bound: the runtime API answers by then.
    let ready = datagram_with(&sock, "READY=1");
    assert!(ready.contains("STATUS=1 section(s), 1 peer(s)"), "{ready}");
    hup(&d);
    let reloading = datagram_with(&sock, "RELOADING=1");
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(usec.is_some_and(|u| u > 0), "{reloading}");
    let again = datagram_with(&sock, "READY=1");
    assert!(again.contains("last reload: applied"), "{again}");
    let (st, _) = d.signal_and_wait("TERM", Duration::from_secs(7)).unwrap();
    assert_eq!(st.code(), Some(0));
    datagram_with(&sock, "STOPPING=1");
    remove_dir(&dir);
}

#[test]
fn a_listener_that_cannot_bind_exits_1() {
    let dir = scratch_dir("ops_cli_bind").unwrap();
    // Held for the whole run, so the daemon's bind fails.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let f = dir.join("taken.cfg");
    std::fs::write(
        &f,
        format!(
            "aggregations s\n    peer me {addr} local\n    peer n 127.0.0.1:1\n    from .a to .b\n"
        ),
    )
    .unwrap();
    let (code, _, err) = run_bin(&["-f", f.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.starts_with("stktagg: section `s`"), "{err}");
    remove_dir(&dir);
}
