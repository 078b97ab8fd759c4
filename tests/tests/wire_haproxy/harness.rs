//! The harness itself against a real haproxy: process handle, runtime API, parsers.

use std::path::Path;
use std::time::Duration;
use stktagg_tests::haproxy::{BUILD_HINT, CI_BUILD_HINT, CI_HINT, INSTALL_HINT, check_haproxy};
use stktagg_tests::{Haproxy, HaproxyConfig, HarnessError, eventually, ports};

fn table_lab() -> Haproxy {
    let hap = ports::free_addr().unwrap();
    let cfg = HaproxyConfig::new()
        .local_peer("hap1")
        .peers_section("p")
        .peer("hap1", hap)
        .table("ips type ip size 1k expire 30s store gpc0,http_req_cnt,http_req_rate(10s)")
        .table("strs type string len 8 size 1k expire 60s store gpt(2),gpc(3),gpc_rate(2,5s),bytes_in_cnt,http_err_rate(2s)")
        .table("ints type integer size 1k store server_id");
    Haproxy::start(&cfg, "harness").unwrap()
}

#[test]
fn show_table_lists_and_parses_set_values() {
    let h = table_lab();
    let api = h.api();
    let mut names: Vec<_> = api
        .show_tables()
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.key_type))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("p/ints".to_owned(), "integer".to_owned()),
            ("p/ips".to_owned(), "ip".to_owned()),
            ("p/strs".to_owned(), "string".to_owned()),
        ]
    );
    api.set_table(
        "p/ips",
        "10.0.0.1",
        &[
            ("gpc0", "5"),
            ("http_req_rate", "42"),
            ("http_req_cnt", "7"),
        ],
    )
    .unwrap();
    api.set_table(
        "p/strs",
        "a",
        &[
            ("gpt", "7"),
            ("gpc", "3"),
            ("gpc_rate", "9"),
            ("bytes_in_cnt", "5000000000"),
            ("http_err_rate", "8"),
        ],
    )
    .unwrap();
    api.set_table("p/ints", "3000000000", &[("server_id", "-5")])
        .unwrap();

    let ips = api.show_table("p/ips").unwrap();
    assert_eq!(ips.info.used, 1);
    let e = ips.entry("10.0.0.1").unwrap();
    assert_eq!(e.num("gpc0"), Some(5));
    assert_eq!(e.num("http_req_cnt"), Some(7));
    let rate = e.field("http_req_rate").unwrap();
    assert_eq!((rate.period_ms, rate.value.as_str()), (Some(10000), "42"));
    assert!(e.exp_ms > 25_000 && e.exp_ms <= 30_000, "exp={}", e.exp_ms);

    let s = api.show_table("p/strs").unwrap();
    let e = s.entry("a").unwrap();
    let names: Vec<_> = e.fields.iter().map(|f| f.name.as_str()).collect();
    // Data-type id order, arrays expanded with the legacy names.
    assert_eq!(
        names,
        [
            "http_err_rate",
            "bytes_in_cnt",
            "gpt0",
            "gpt1",
            "gpc0",
            "gpc1",
            "gpc2",
            "gpc0_rate",
            "gpc1_rate"
        ]
    );
    assert_eq!(e.num("gpt0"), Some(7));
    assert_eq!(e.num("gpc0"), Some(3));
    assert_eq!(e.num("gpc0_rate"), Some(9));
    assert_eq!(e.field("gpc1_rate").unwrap().period_ms, Some(5000));
    assert_eq!(e.num("bytes_in_cnt"), Some(5_000_000_000));

    let i = api.show_table("p/ints").unwrap();
    assert_eq!(i.entry("3000000000").unwrap().num("server_id"), Some(-5));
}

#[test]
fn cli_errors_are_reported() {
    let h = table_lab();
    let err = h
        .api()
        .set_table("p/ips", "10.0.0.1", &[("gpt0", "1")])
        .unwrap_err();
    assert!(
        matches!(&err, HarnessError::Cli { answer, .. } if answer.contains("not stored")),
        "{err}"
    );
    let err = h.api().show_table("p/nope").unwrap_err();
    assert!(matches!(err, HarnessError::Cli { .. }), "{err}");
}

#[test]
fn drop_stops_the_process_and_removes_its_dir() {
    let h = table_lab();
    let pid = h.pid().unwrap();
    let dir = h.dir().to_owned();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(h);
    // The child was reaped by `stop`, so its /proc entry is gone at once.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(!dir.exists());
}

#[test]
fn bad_config_fails_with_the_log_tail() {
    let err = Haproxy::start(
        &HaproxyConfig::new().section("frontend fe\n    bind 127.0.0.1:notaport\n"),
        "badcfg",
    )
    .unwrap_err();
    match err {
        HarnessError::HaproxyExited { log_tail, .. } => {
            assert!(log_tail.contains("ALERT"), "{log_tail}")
        }
        other => panic!("expected HaproxyExited, got {other}"),
    }
}

#[test]
fn missing_haproxy_fails_with_a_hint() {
    // `haproxy` from PATH is missing: install it.
    let err = check_haproxy("haproxy-that-is-not-there", false).unwrap_err();
    assert!(err.to_string().contains(INSTALL_HINT), "{err}");
    assert!(INSTALL_HINT.contains("install haproxy: apt-get install -y haproxy"));
    let err = check_haproxy("haproxy-that-is-not-there", true).unwrap_err();
    assert!(err.to_string().contains(CI_HINT), "{err}");
    assert!(err.to_string().contains("CI=true"), "{err}");
    // A path (as given by STKTAGG_HAPROXY) is missing: build it.
    let err = check_haproxy("/nonexistent/haproxy", false).unwrap_err();
    assert!(err.to_string().contains(BUILD_HINT), "{err}");
    assert!(BUILD_HINT.contains("cargo xtask haproxy"));
    let err = check_haproxy("/nonexistent/haproxy", true).unwrap_err();
    assert!(err.to_string().contains(CI_BUILD_HINT), "{err}");
    assert!(err.to_string().contains("CI=true"), "{err}");
    assert!(
        check_haproxy("haproxy", false)
            .unwrap()
            .contains("HAProxy version 2.")
    );
}

#[test]
fn eventually_sees_an_entry_expire() {
    let hap = ports::free_addr().unwrap();
    let cfg = HaproxyConfig::new()
        .local_peer("hap1")
        .peer("hap1", hap)
        .table("t type ip size 1k expire 300ms store gpc0");
    let h = Haproxy::start(&cfg, "expire").unwrap();
    h.api()
        .set_table("p/t", "1.1.1.1", &[("gpc0", "1")])
        .unwrap();
    assert_eq!(h.api().show_table("p/t").unwrap().entries.len(), 1);
    eventually("the entry to expire", Duration::from_secs(3), || {
        let d = h.api().show_table("p/t")?;
        if d.entries.is_empty() {
            Ok(())
        } else {
            Err(HarnessError::Unexpected(format!("{d:?}")))
        }
    })
    .unwrap();
}
