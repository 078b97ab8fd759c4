//! The stktagg configuration language: a pest grammar, a typed AST with source
//! positions, and errors that point at the offending line (see
//! `docs/configuration.md` for the language itself).
//!
//! The crate is pure: [`parse_str`] takes text and returns values. [`parse_file`]
//! only adds reading the file. Host names are kept as written; resolving them is
//! the daemon's job.
//!
//! ```
//! let cfg = stktagg_config::parse_str(stktagg_config::DEFAULT_CONFIG, "<default>").unwrap();
//! assert_eq!(cfg.sections[0].name, "default");
//! ```
//!
//! # Layout
//!
//! - `config.pest`: the grammar, one physical line at a time (HAProxy's language is
//!   line-oriented; parsing lines separately lets one run report every syntax error).
//! - `syntax`: runs the grammar and turns each line into a statement of text tokens
//!   with their columns; pest errors become "unexpected X, expected Y".
//! - `check`: gives the tokens meaning (addresses, ports, durations, suffixes),
//!   tracks sections, and runs the rules that span lines (one `local`, unique
//!   names, addresses and suffixes...). Collects every error. One module per
//!   concern, listed in `check/mod.rs`.
//! - `ast`: the typed result ([`Config`], [`Aggregations`], [`Peer`], [`Rule`]...),
//!   every item with its [`Span`].
//! - `error`: [`ErrorKind`], [`WarningKind`], and their rustc-like rendering.

mod ast;
mod check;
mod error;
mod syntax;

use std::path::Path;
use std::sync::Arc;

pub use ast::{
    AccessLevel, Aggregations, Config, Forward, FromSpec, Global, Listen, LogLevel, Peer, PeerAddr,
    PeerRole, Rule, StatsSocket, TlsDial, TlsFile, TlsListen, TlsOptions, Verify, defaults,
};
pub use error::{ConfigError, ConfigErrors, ErrorKind, Location, Span, Warning, WarningKind};

/// The configuration used when the daemon is started without `-f`: a single-level
/// aggregator on loopback for three HAProxy nodes.
pub const DEFAULT_CONFIG: &str = "\
# stktagg built-in configuration: a single-level aggregator on loopback.
global
    stats socket /tmp/stktagg.sock mode 600 level admin
    prometheus 127.0.0.1:10090
    log-level info

aggregations default
    peer stktagg 127.0.0.1:10000 local
    peer hap1    127.0.0.1:10001
    peer hap2    127.0.0.1:10002
    peer hap3    127.0.0.1:10003
    from .uncombined to .aggr
";

/// Parses and checks a configuration. `file` names it in diagnostics.
///
/// On failure every error found is returned, in file order, with the warnings.
/// On success the warnings are in [`Config::warnings`].
pub fn parse_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    check::check(text, file)
}

/// Reads and parses a configuration file.
pub fn parse_file(path: impl AsRef<Path>) -> Result<Config, ConfigErrors> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return Err(file_error(
                &name,
                0,
                0,
                String::new(),
                ErrorKind::Read {
                    reason: e.to_string(),
                },
            ));
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => parse_str(&text, &name),
        Err(e) => {
            // Point at the first byte that is not UTF-8.
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let good = String::from_utf8_lossy(good);
            let line = good.matches('\n').count() + 1;
            let line_start = good.rfind('\n').map_or(0, |i| i + 1);
            let prefix = &good[line_start..];
            let column = prefix.chars().count() + 1;
            Err(file_error(
                &name,
                u32::try_from(line).unwrap_or(u32::MAX),
                u32::try_from(column).unwrap_or(u32::MAX),
                prefix.to_owned(),
                ErrorKind::NotUtf8,
            ))
        }
    }
}

fn file_error(
    name: &str,
    line: u32,
    column: u32,
    line_text: String,
    kind: ErrorKind,
) -> ConfigErrors {
    ConfigErrors {
        errors: vec![ConfigError {
            kind,
            location: Location {
                span: Span {
                    file: Arc::from(name),
                    line,
                    column,
                },
                width: 1,
                line_text,
                note: None,
            },
        }],
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses() {
        let cfg = parse_str(DEFAULT_CONFIG, "<default>").unwrap();
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        let s = &cfg.sections[0];
        assert_eq!(s.name, "default");
        let local = s.local().unwrap();
        assert_eq!(local.name, "stktagg");
        assert_eq!(local.addr.as_ref().unwrap().to_string(), "127.0.0.1:10000");
        assert_eq!(s.peers.len(), 4);
        assert_eq!(cfg.global.stats_sockets[0].path, "/tmp/stktagg.sock");
        assert_eq!(
            cfg.global.prometheus.as_ref().unwrap().addr.to_string(),
            "127.0.0.1:10090"
        );
    }

    #[test]
    fn tls_options_merge_over_default_server() {
        let cfg = parse_str(include_str!("../tests/data/ok/tls.cfg"), "tls.cfg").unwrap();
        let edge = &cfg.sections[0];
        let l = edge.listener_tls().unwrap();
        assert_eq!(l.crt.path, "/etc/stktagg/aggr1.pem");
        assert_eq!(l.verify, Verify::Required);
        // The location covers the option, keyword to path, for the daemon's errors.
        let at = &l.ca_file.as_ref().unwrap().location;
        assert_eq!((at.span.line, at.span.column, at.width), (4, 67, 27));
        let dial = |name: &str| {
            let p = edge.peers.iter().find(|p| p.name == name).unwrap();
            edge.dial_tls(p)
        };
        let hap1 = dial("hap1").unwrap();
        assert_eq!(hap1.crt.unwrap().path, "/etc/stktagg/aggr1.pem");
        assert_eq!(hap1.ca_file.unwrap().path, "/etc/stktagg/ca.pem");
        assert_eq!((hap1.verify, hap1.sni), (Verify::Required, None));
        assert_eq!(dial("hap2").unwrap().sni.as_deref(), Some("hap2.example"));
        assert_eq!(dial("hap3"), None);
        assert_eq!(
            dial("hap4").unwrap().crt.unwrap().path,
            "/etc/stktagg/other.pem"
        );
        assert_eq!(dial("top").unwrap().verify, Verify::None);
        assert_eq!(dial("aggr1"), None);
        let lab = &cfg.sections[1];
        // No `ca-file`: the listener asks for no client certificate.
        assert_eq!(lab.listener_tls().unwrap().verify, Verify::None);
        assert_eq!(lab.dial_tls(&lab.peers[2]), None);
        // `n3 ssl` without address: never dialed, so no TLS to dial it with.
        assert_eq!(lab.peers[3].tls.ssl, Some(true));
        assert_eq!(lab.dial_tls(&lab.peers[3]), None);
        assert_eq!(
            cfg.sections[2].listener_tls().unwrap().verify,
            Verify::Optional
        );
        // A configuration without `ssl` has no TLS anywhere.
        let plain = parse_str(DEFAULT_CONFIG, "<default>").unwrap();
        let s = &plain.sections[0];
        assert!(s.listener_tls().is_none());
        assert!(s.peers.iter().all(|p| s.dial_tls(p).is_none()));
    }

    #[test]
    fn shards_and_shard_are_read_zero_meaning_none() {
        let text = "\
aggregations myaggr
    peer aggr1 10.0.0.1:1 local
    peer hap1  10.0.0.11:1
    peer top1a 10.0.0.31:2 up group 1 shard 1
    peer top1b 10.0.0.32:2 up group 1 shard 1
    peer top2  10.0.0.33:2 up shard 2
    shards 2
    from .uncombined to .aggr
    forward .l2
";
        let cfg = parse_str(text, "t.cfg").unwrap();
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        let s = &cfg.sections[0];
        assert_eq!(s.shards, 2);
        let shards: Vec<(&str, u32)> = s.peers.iter().map(|p| (p.name.as_str(), p.shard)).collect();
        assert_eq!(
            shards,
            [
                ("aggr1", 0),
                ("hap1", 0),
                ("top1a", 1),
                ("top1b", 1),
                ("top2", 2)
            ]
        );
        assert_eq!(
            s.peers[4].role,
            PeerRole::Up { group: None },
            "`shard` after the role leaves it as it is"
        );
        let plain = parse_str(DEFAULT_CONFIG, "<default>").unwrap();
        assert_eq!(plain.sections[0].shards, 0);
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let e = parse_file("/nonexistent/stktagg.cfg").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("/nonexistent/stktagg.cfg: error: cannot read"),
            "{text}"
        );
    }
}
