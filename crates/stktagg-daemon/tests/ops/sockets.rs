//! The stats socket keeps its promises: every `stats socket` line is opened, with
//! its `mode`, `user` and `group`, and its `level` decides what its clients may
//! run, as in HAProxy (block 15 of 127.0.77.x).

use crate::rig::{Block, CONVERGE, CliConn, Daemon, REQ_DECL, SECTION, run_bin};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use stktagg_tests::http::http_get;
use stktagg_tests::{Haproxy, HaproxyConfig, HarnessError, RuntimeApi, eventually};

#[test]
fn every_stats_socket_opens_with_its_mode_owner_and_level() {
    stktagg_tests::require_haproxy().unwrap();
    let b = Block(15);
    let (listen, node_peer, node_http) = (b.addr(1), b.addr(4), b.addr(4));
    let cfg = format!(
        "global\n    stats socket {{dir}}/api.sock level admin\n    \
         stats socket {{dir}}/user.sock mode 640 level user user nobody group nogroup\n    \
         stats socket {{dir}}/op.sock mode 0660\n\n\
         aggregations ag\n    peer stktagg {listen} local\n    peer hap1 {node_peer}\n    \
         from .uncombined to .aggr\n"
    );
    let mut agg = Daemon::start("ops_sockets", &cfg, &[]).unwrap();
    let node = Haproxy::start(
        &HaproxyConfig::new()
            .local_peer("hap1")
            .peers_section(SECTION)
            .peer("hap1", node_peer)
            .peer("stktagg", listen)
            .table(&format!("req.uncombined {REQ_DECL}"))
            .table(&format!("req.aggr {REQ_DECL}"))
            .section(&format!(
                "frontend fe\n    bind {node_http}\n    \
                 http-request track-sc0 src table {SECTION}/req.uncombined\n    \
                 http-request sc-inc-gpc0(0)\n    \
                 http-request return status 200 content-type text/plain string ok\n"
            )),
        "ops_sockets_hap1",
    )
    .unwrap();
    let client = b.client(0);
    assert_eq!(http_get(client, node_http, &[]).unwrap(), 200);
    let (admin, user, op) = (
        agg.api.clone(),
        RuntimeApi::new(agg.dir.join("user.sock")),
        RuntimeApi::new(agg.dir.join("op.sock")),
    );
    let key = client.to_string();
    eventually("our req.aggr holds the client", CONVERGE, || {
        let t = admin.command("show table ag/req.aggr")?;
        if t.contains(&format!("key={key} ")) {
            Ok(())
        } else {
            Err(HarnessError::Unexpected(t))
        }
    })
    .unwrap();

    // Every line opened, with its mode and owner.
    let meta = |name: &str| std::fs::metadata(agg.dir.join(name)).unwrap();
    assert_eq!(meta("api.sock").permissions().mode() & 0o777, 0o600);
    assert_eq!(meta("op.sock").permissions().mode() & 0o777, 0o660);
    let u = meta("user.sock");
    assert_eq!(u.permissions().mode() & 0o777, 0o640);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    assert_eq!(
        (u.uid(), u.gid()),
        (nobody.uid.as_raw(), nogroup.gid.as_raw())
    );

    // The level of each socket, and what it may run.
    for (api, level) in [(&admin, "admin"), (&op, "operator"), (&user, "user")] {
        assert_eq!(api.command("show cli level").unwrap().trim(), level);
        for cmd in [
            "show info",
            "show peers",
            "show aggrs",
            "show table",
            "show version",
        ] {
            let out = api.command(cmd).unwrap();
            assert!(!out.contains("Permission denied"), "{level}: {cmd}: {out}");
        }
    }
    let contents = op.command("show table ag/req.aggr").unwrap();
    assert!(contents.contains(&format!("key={key} ")), "{contents}");
    let one = op
        .command(&format!("show table ag/req.aggr key {key} detail"))
        .unwrap();
    assert!(one.contains("from=hap1"), "{one}");
    // `user` gets HAProxy's answers: the header without the contents, and no
    // single entry.
    let header = user.command("show table ag/req.aggr").unwrap();
    assert!(
        header.starts_with("# table: ag/req.aggr, type: ip")
            && header.contains("# contents not dumped due to insufficient privileges")
            && !header.contains(&key),
        "{header}"
    );
    for cmd in [
        format!("show table ag/req.aggr key {key}"),
        "show table ag/req.aggr data.gpc0 gt 0".to_owned(),
    ] {
        assert_eq!(
            user.command(&cmd).unwrap().trim(),
            "Permission denied",
            "{cmd}"
        );
    }
    let help = user.command("help").unwrap();
    assert!(
        help.contains("show peers") && !help.contains("key <key>"),
        "{help}"
    );
    assert!(op.command("help").unwrap().contains("key <key>"));

    // A connection lowers its level, never raises it.
    let mut c = CliConn::connect(&agg.dir.join("op.sock")).unwrap();
    c.send("prompt").unwrap();
    c.read_until("> ").unwrap();
    for (cmd, want) in [
        ("show cli level", "operator"),
        ("user", ""),
        ("show cli level", "user"),
        ("operator", "Permission denied"),
        (
            &format!("show table ag/req.aggr key {key}"),
            "Permission denied",
        ),
    ] {
        c.send(cmd).unwrap();
        let out = c.read_until("> ").unwrap();
        assert!(out.contains(want), "{cmd}: {out:?}");
        if want.is_empty() {
            assert_eq!(out, "> ", "{cmd}");
        }
    }
    c.send("quit").unwrap();
    drop(node);

    // Stopping removes every socket.
    agg.stop();
    for name in ["api.sock", "user.sock", "op.sock"] {
        assert!(!agg.dir.join(name).exists(), "{name} left behind");
    }
}

/// `-c` resolves each socket's `user` and `group` and names an unknown one.
#[test]
fn check_names_an_unknown_socket_owner() {
    let dir = stktagg_tests::ports::scratch_dir("ops_sockets_check").unwrap();
    let file = dir.join("s.cfg");
    let cfg = |owner: &str| {
        format!(
            "global\n    stats socket {}/a.sock\n    stats socket {}/b.sock {owner}\n\n\
             aggregations a\n    peer me 127.0.0.1:1 local\n    peer n 127.0.0.2:1\n    from .in to .out\n",
            dir.display(),
            dir.display()
        )
    };
    let f = file.display().to_string();
    for (owner, want) in [
        ("user no-such-user-x", "unknown user `no-such-user-x`"),
        ("group no-such-group-x", "unknown group `no-such-group-x`"),
    ] {
        std::fs::write(&file, cfg(owner)).unwrap();
        let (code, _, err) = run_bin(&["-c", "-f", &f]);
        assert_eq!(code, Some(2), "{owner}: {err}");
        assert!(
            err.contains(&format!("{f}:3:5: error: `stats socket")),
            "{err}"
        );
        assert!(err.contains(want), "{err}");
    }
    // Numeric ids are taken as they are.
    std::fs::write(&file, cfg("user 4242 group 4243")).unwrap();
    let (code, out, err) = run_bin(&["-c", "-f", &f]);
    assert_eq!(code, Some(0), "{out}{err}");
    stktagg_tests::ports::remove_dir(&dir);
}
