//! Peer links over mutual TLS with real HAProxy nodes, and everything that must
//! not get through.
//!
//! The aggregator (`stktagg`, block 14 of 127.0.77.x) listens with `ssl crt ...
//! ca-file ... verify required` and dials with `default-server ssl crt ...
//! ca-file ...`. Node `hap1` dials us (it has no address in our configuration, so
//! the session can only be its own); `hap2` names us at a port where nothing
//! listens, so its session can only be ours, checked by its own `bind ... ssl
//! verify required`. The nodes check our certificate's name (`verifyhost`). The
//! CA, every certificate and key are generated in the test's scratch directory.
//!
//! Then, with both sessions up and sums flowing, each of these knocks on our
//! listener with a hello claiming `hap1` and 1 000 000 requests pipelined behind
//! it: a certificate from another CA, an expired one, `hap2`'s valid certificate,
//! no certificate, and plain text. Each is refused (the TLS handshake fails, or
//! `504` for the certificate of another peer), counted, and harmless: the real
//! sessions stay as they were and every sum stays exact. Last, the certificate
//! files are renewed and re-read on SIGHUP: new handshakes get the new
//! certificate, established sessions are kept; a broken file is refused and the
//! last good certificate stays in use.

use crate::rig::{Block, CONVERGE, Daemon, REQ_DECL, Scrape, peer_block};
use bytes::{Bytes, BytesMut};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use stktagg_tests::http::http_get;
use stktagg_tests::mock_peer::{handshake_raw_from, hello_bytes};
use stktagg_tests::pki::{Ca, Leaf};
use stktagg_tests::tls::{TlsAttempt, attempt, client_config};
use stktagg_tests::{Haproxy, HarnessError, eventually};
use stktagg_wire::{
    DataSpec, DataType, Encoder, Key, KeyType, Message, StatusCode, TableDefinition, Update,
    UpdateKind, Value, Version,
};

/// What an impostor claims to push for its key.
const FAKE: u32 = 1_000_000;

/// The files of the test's PKI.
struct Pki {
    dir: PathBuf,
    ca: Ca,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca = Ca::new("stktagg ops test CA").unwrap();
        ca.write(&dir.join("ca.pem")).unwrap();
        Pki {
            dir: dir.to_owned(),
            ca,
        }
    }

    /// Issues `name`'s certificate into `<dir>/<name>.pem`.
    fn issue(&self, name: &str) -> Leaf {
        let leaf = self.ca.leaf(name).unwrap();
        leaf.write(&self.path(name)).unwrap();
        leaf
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }
}

/// A node's configuration: its peers listener and dialer over mutual TLS, the
/// aggregator at `agg` (checked to be `stktagg` by name), one summed table.
fn node_config(
    name: &str,
    peer: SocketAddr,
    http: SocketAddr,
    agg: SocketAddr,
    pki: &Path,
) -> String {
    let (crt, ca) = (pki.join(format!("{name}.pem")), pki.join("ca.pem"));
    let (crt, ca) = (crt.display(), ca.display());
    format!(
        "global\n    stats socket {{stats_socket}} mode 600 level admin\n    nbthread 1\n    localpeer {name}\n\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\n\
         peers cl\n    bind {peer} ssl crt {crt} ca-file {ca} verify required\n    \
         default-server ssl crt {crt} ca-file {ca} verify required\n    server {name}\n    \
         server stktagg {agg} verifyhost stktagg\n    \
         table req.uncombined {REQ_DECL}\n    table req.aggr {REQ_DECL}\n\n\
         frontend fe\n    bind {http}\n    http-request track-sc0 src table cl/req.uncombined\n    \
         http-request sc-inc-gpc0(0)\n    \
         http-request return status 200 content-type text/plain string ok\n"
    )
}

/// The hello claiming `hap1`, then a definition of `req.uncombined` and an
/// update of `key` at [`FAKE`]: what an impostor pushes before any answer.
fn impostor_bytes(key: Ipv4Addr) -> BytesMut {
    let mut out = hello_bytes(Version::V2_1, "stktagg", "hap1").unwrap();
    let def = TableDefinition {
        table_id: 1,
        name: Bytes::from_static(b"/req.uncombined"),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms: 60_000,
        data: vec![DataSpec::plain(DataType::Gpc0)],
    };
    let update = Update {
        kind: UpdateKind::Full,
        table_id: 1,
        update_id: 1,
        expire_ms: None,
        key: Key::from_ipv4(key),
        values: vec![Value::Uint(FAKE)],
    };
    let mut enc = Encoder::new();
    enc.encode(&Message::TableDefinition(def), &mut out)
        .unwrap();
    enc.encode(&Message::Update(update), &mut out).unwrap();
    out
}

/// `gpc0` of `key` in `table` of a node, 0 without an entry.
fn gpc0(node: &Haproxy, table: &str, key: &str) -> Result<i128, HarnessError> {
    let text = node.api().command(&format!("show table {table}"))?;
    let dump = stktagg_tests::show_table::parse_table_dump(&text)?;
    Ok(dump.entry(key).and_then(|e| e.num("gpc0")).unwrap_or(0))
}

/// Waits until both nodes' `req.aggr` show `want` for `key`, and their inputs sum
/// to it.
fn sums_are(nodes: &[Haproxy], key: &str, want: i128) {
    eventually(
        &format!("req.aggr {key} = {want} on both nodes"),
        CONVERGE,
        || {
            let mut inputs = 0;
            let mut outputs = Vec::new();
            for n in nodes {
                inputs += gpc0(n, "cl/req.uncombined", key)?;
                outputs.push(gpc0(n, "cl/req.aggr", key)?);
            }
            if inputs == want && outputs.iter().all(|o| *o == want) {
                Ok(())
            } else {
                Err(HarnessError::Unexpected(format!(
                    "inputs sum to {inputs}, outputs {outputs:?}"
                )))
            }
        },
    )
    .unwrap();
}

/// `(sessions, coll, cert_refused, xprt)` of `peer` in our `show peers`.
fn session_of(d: &Daemon, peer: &str) -> (String, String, String, String) {
    let peers = d.api.command("show peers").unwrap();
    let block = peer_block(&peers, peer).unwrap_or_default();
    let kv = |k: &str| {
        block
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or("-")
            .to_owned()
    };
    (kv("sessions"), kv("coll"), kv("cert_refused"), kv("xprt"))
}

/// The leaf certificate our listener presents to a new handshake.
fn served_certificate(listen: SocketAddr, ca: &Ca) -> Vec<u8> {
    let cfg = client_config(&ca.cert_pem(), None).unwrap();
    let tcp = std::net::TcpStream::connect_timeout(&listen, Duration::from_secs(3)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("stktagg").unwrap();
    let mut conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut tcp = tcp;
    while conn.is_handshaking() {
        // Our listener asks for a client certificate and will refuse the
        // handshake without one, but only after it has shown its own.
        if conn.complete_io(&mut tcp).is_err() {
            break;
        }
    }
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap()
}

fn der_of(leaf: &Leaf) -> Vec<u8> {
    CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

fn sighup(d: &Daemon) {
    let st = Command::new("kill")
        .arg("-HUP")
        .arg(d.pid().unwrap().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn nodes_dial_us_and_accept_us_over_mtls_and_every_impostor_is_refused() {
    stktagg_tests::require_haproxy().unwrap();
    let b = Block(14);
    let (listen, prometheus) = (b.addr(1), b.addr(1));
    let (hap1_peer, hap2_peer) = (b.addr(4), b.addr(5));
    let (hap1_http, hap2_http) = (b.addr(4), b.addr(5));
    // hap2 names us at a port of ours where nothing listens: our dial is the
    // only way its session comes up.
    let dead = b.addr(1);
    let scratch = stktagg_tests::ports::scratch_dir("ops_tls_pki").unwrap();
    let pki = Pki::new(&scratch);
    let agg_leaf = pki.issue("stktagg");
    pki.issue("hap1");
    let hap2_leaf = pki.issue("hap2");
    let (crt, ca) = (pki.path("stktagg"), pki.path("ca"));
    let (crt, ca) = (crt.display(), ca.display());
    let cfg = format!(
        "global\n    stats socket {{dir}}/api.sock level admin\n    prometheus {prometheus}\n    log-level debug\n\n\
         aggregations ag\n    \
         peer stktagg {listen} local ssl crt {crt} ca-file {ca} verify required\n    \
         default-server ssl crt {crt} ca-file {ca}\n    \
         peer hap1\n    peer hap2 {hap2_peer}\n    from .uncombined to .aggr\n"
    );
    let agg = Daemon::start("ops_tls_agg", &cfg, &[]).unwrap();
    let nodes = vec![
        Haproxy::start_text(
            &node_config("hap1", hap1_peer, hap1_http, listen, &scratch),
            "ops_tls_hap1",
        )
        .unwrap(),
        Haproxy::start_text(
            &node_config("hap2", hap2_peer, hap2_http, dead, &scratch),
            "ops_tls_hap2",
        )
        .unwrap(),
    ];
    eventually("both sessions up over TLS", CONVERGE, || {
        let (a, b) = (session_of(&agg, "hap1"), session_of(&agg, "hap2"));
        if a.3 == "SSL" && b.3 == "SSL" {
            Ok(())
        } else {
            Err(HarnessError::Unexpected(format!(
                "hap1 {a:?}, hap2 {b:?}:\n{}",
                agg.api.command("show peers").unwrap_or_default()
            )))
        }
    })
    .unwrap();
    let client = b.client(0);
    let key = client.to_string();
    for (node, count) in [(hap1_http, 3), (hap2_http, 2)] {
        for _ in 0..count {
            assert_eq!(http_get(client, node, &[]).unwrap(), 200);
        }
    }
    sums_are(&nodes, &key, 5);
    let before = [session_of(&agg, "hap1"), session_of(&agg, "hap2")];
    eprintln!("sessions before the impostors: {before:?}");

    // The impostors, from the client's address (hap1 has none to check).
    let other_ca = Ca::new("another CA").unwrap();
    let ca_pem = pki.ca.cert_pem();
    let bytes = impostor_bytes(client);
    let knock = |who: &str, leaf: Option<&Leaf>| {
        let cfg = client_config(&ca_pem, leaf).unwrap();
        let got = attempt(Some(client), listen, cfg, "stktagg", &bytes).unwrap();
        eprintln!("{who}: {got:?}");
        got
    };
    for (who, leaf) in [
        ("another CA's hap1", Some(other_ca.leaf("hap1").unwrap())),
        (
            "an expired hap1",
            Some(pki.ca.expired_leaf("hap1").unwrap()),
        ),
        ("no certificate", None),
    ] {
        let got = knock(who, leaf.as_ref());
        assert!(matches!(got, TlsAttempt::Refused(_)), "{who}: {got:?}");
    }
    match knock("hap2's certificate claiming hap1", Some(&hap2_leaf)) {
        TlsAttempt::Status { code, closed, .. } => {
            assert_eq!(code, StatusCode::UnknownPeer);
            assert!(closed, "the connection stays open after the refusal");
        }
        other => panic!("hap2's certificate claiming hap1: {other:?}"),
    }
    let plain = handshake_raw_from(Some(client), listen, &bytes);
    assert!(
        matches!(plain, Err(HarnessError::Closed { .. })),
        "plain text on the TLS port: {:?}",
        plain.map(|(_, line, ..)| line)
    );

    // Counted, and harmless.
    let scrape = Scrape::fetch(prometheus).unwrap();
    let failures = scrape.get("stktagg_tls_handshake_failures_total", &[("section", "ag")]);
    assert_eq!(failures, Some(4.0), "{}", scrape.text);
    let wrong = scrape.get(
        "stktagg_hello_wrong_identity_total",
        &[("section", "ag"), ("peer", "hap1")],
    );
    assert_eq!(wrong, Some(1.0), "{}", scrape.text);
    let after = [session_of(&agg, "hap1"), session_of(&agg, "hap2")];
    assert_eq!(after[0].2, "1", "cert_refused for hap1: {after:?}");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (&b.0, &b.1, &b.3),
            (&a.0, &a.1, &a.3),
            "a real session changed"
        );
    }
    let log = agg.log();
    assert!(
        log.contains("does not name the peer it claims") && log.contains("certificate_names=hap2"),
        "no warning naming the certificate's names:\n{log}"
    );
    assert!(
        log.contains("TLS handshake failed on the peers listener"),
        "{log}"
    );
    assert_eq!(http_get(client, hap1_http, &[]).unwrap(), 200);
    sums_are(&nodes, &key, 6);

    // A renewed certificate is read on SIGHUP; the sessions stay.
    let renewed = pki.issue("stktagg");
    assert_ne!(der_of(&renewed), der_of(&agg_leaf));
    assert_eq!(served_certificate(listen, &pki.ca), der_of(&agg_leaf));
    sighup(&agg);
    eventually("the renewed certificate served", CONVERGE, || {
        if served_certificate(listen, &pki.ca) == der_of(&renewed) {
            Ok(())
        } else {
            Err(HarnessError::Unexpected("still the old certificate".into()))
        }
    })
    .unwrap();
    assert!(
        agg.log().contains("TLS certificates and CAs re-read"),
        "{}",
        agg.log()
    );
    // A broken file makes the configuration invalid: the reload is refused and
    // the last good certificate stays.
    std::fs::write(pki.path("stktagg"), "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    sighup(&agg);
    eventually("the broken file refused", CONVERGE, || {
        let log = agg.log();
        if log.contains("the configuration is invalid, nothing changed") && log.contains("crt") {
            Ok(())
        } else {
            Err(HarnessError::Unexpected("no refusal logged".into()))
        }
    })
    .unwrap();
    assert_eq!(served_certificate(listen, &pki.ca), der_of(&renewed));
    let last = [session_of(&agg, "hap1"), session_of(&agg, "hap2")];
    for (b, a) in before.iter().zip(&last) {
        assert_eq!(
            (&b.0, &b.1),
            (&a.0, &a.1),
            "a session was dropped by the reload"
        );
    }
    assert_eq!(http_get(client, hap2_http, &[]).unwrap(), 200);
    sums_are(&nodes, &key, 7);
    drop(nodes);
    drop(agg);
    stktagg_tests::ports::remove_dir(&scratch);
}

/// `-c` reads every `crt` and `ca-file` and says which option names an unusable
/// file, at its line and column.
#[test]
fn check_points_at_each_unusable_tls_file() {
    let dir = stktagg_tests::ports::scratch_dir("ops_tls_check").unwrap();
    let pki = Pki::new(&dir);
    let good = pki.issue("agg");
    let other = pki.ca.leaf("other").unwrap();
    let p = |name: &str| dir.join(name).display().to_string();
    // A certificate with another certificate's key; a certificate without key; a
    // key without certificate; a CA file that holds no certificate.
    std::fs::write(
        p("mismatch.pem"),
        format!("{}{}", good.cert_pem, other.key_pem),
    )
    .unwrap();
    std::fs::write(p("nokey.pem"), &good.cert_pem).unwrap();
    std::fs::write(p("nocert.pem"), &good.key_pem).unwrap();
    std::fs::write(p("badca.pem"), "not a certificate\n").unwrap();
    let cfg = format!(
        "aggregations a\n\
         \x20 peer agg 127.0.0.1:1 local ssl crt {} ca-file {}\n\
         \x20 default-server ssl crt {} ca-file {}\n\
         \x20 peer n1 127.0.0.2:1\n\
         \x20 peer n2 127.0.0.3:1 crt {}\n\
         \x20 peer n3 127.0.0.4:1 crt {}\n\
         \x20 from .in to .out\n",
        p("missing.pem"),
        p("badca.pem"),
        p("mismatch.pem"),
        p("ca.pem"),
        p("nokey.pem"),
        p("nocert.pem"),
    );
    let file = dir.join("bad.cfg");
    std::fs::write(&file, &cfg).unwrap();
    let f = file.display().to_string();
    let (code, _out, err) = crate::rig::run_bin(&["-c", "-f", &f]);
    assert_eq!(code, Some(2), "{err}");
    for want in [
        format!(
            "{f}:2:34: error: cannot use `crt {}`: No such file",
            p("missing.pem")
        ),
        format!(
            "ca-file {}`: the file holds no CA certificate",
            p("badca.pem")
        ),
        format!(
            "{f}:3:22: error: cannot use `crt {}`: the private key is not the certificate's",
            p("mismatch.pem")
        ),
        format!(
            "{f}:5:23: error: cannot use `crt {}`: the file holds no readable private key",
            p("nokey.pem")
        ),
        format!(
            "{f}:6:23: error: cannot use `crt {}`: the file holds no certificate",
            p("nocert.pem")
        ),
        "5 errors in the configuration".to_owned(),
    ] {
        assert!(err.contains(&want), "`{want}` not in:\n{err}");
    }
    // The caret is under the option, keyword to path.
    let carets = format!(
        "{}^{}",
        " ".repeat(20),
        "^".repeat(3 + 1 + p("mismatch.pem").len() - 1)
    );
    assert!(err.contains(&carets), "{err}");
    // The good files pass.
    let ok = cfg
        .replace(&p("missing.pem"), &p("agg.pem"))
        .replace(&p("badca.pem"), &p("ca.pem"))
        .replace(&p("mismatch.pem"), &p("agg.pem"))
        .replace(&p("nokey.pem"), &p("agg.pem"))
        .replace(&p("nocert.pem"), &p("agg.pem"));
    std::fs::write(&file, ok).unwrap();
    let (code, out, err) = crate::rig::run_bin(&["-c", "-f", &f]);
    assert_eq!(code, Some(0), "{out}{err}");
    // The plan says what runs over TLS.
    for want in [
        "section a TLS:\n  listener: TLS only, client certificates required, and must name the peer claimed\n",
        "  dialed over TLS: n1 (verify required, name n1), n2 (verify required, name n2), n3 (verify required, name n3)\n",
    ] {
        assert!(out.contains(want), "`{want}` not in:\n{out}");
    }
    stktagg_tests::ports::remove_dir(&dir);
}
