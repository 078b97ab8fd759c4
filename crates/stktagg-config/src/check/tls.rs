//! The TLS options of `peer` and `default-server` lines (`ssl`, `no-ssl`, `crt`,
//! `ca-file`, `verify`, `sni`): each option on its own, then what one line needs
//! (a listener needs a certificate, checking needs a CA). Whether a remote peer is
//! dialed over TLS also depends on the section's `default-server`, so that check
//! waits for the end of the section ([`check_dialed`]).
//!
//! The files are only named here: the daemon reads them (this crate does no IO),
//! and points at the option with the [`TlsFile`] location when one is unusable.

use super::diag::{Diagnostics, end_of_tok};
use crate::ast::{TlsFile, TlsOptions, Verify};
use crate::error::{ErrorKind, WarningKind};
use crate::syntax::{Line, OptTok, Tok};

/// The keywords this module handles.
pub(super) const TLS_KEYWORDS: &[&str] = &["ssl", "no-ssl", "crt", "ca-file", "verify", "sni"];

/// Which line the options are on: the checks differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// The `local` peer: our listener.
    Local,
    /// A peer we may dial.
    Remote,
    /// `default-server`: what every dialed peer starts from.
    Default,
}

/// The TLS options of one line, and the tokens that later checks point at.
#[derive(Debug, Clone, Default)]
pub(super) struct TlsLine {
    /// The values.
    pub(super) opts: TlsOptions,
    /// The line number and text.
    pub(super) line: u32,
    pub(super) text: String,
    /// The `ssl` or `no-ssl` keyword.
    pub(super) ssl: Option<Tok>,
    /// The `verify` keyword.
    pub(super) verify: Option<Tok>,
    /// Every TLS keyword but `ssl`/`no-ssl`, in line order.
    pub(super) others: Vec<Tok>,
    /// An option of this line was reported: the checks of the whole line would
    /// only add noise.
    pub(super) reported: bool,
}

impl TlsLine {
    /// An empty set for line `line`.
    pub(super) fn new(line: &Line) -> TlsLine {
        TlsLine {
            line: line.number,
            text: line.text.clone(),
            ..TlsLine::default()
        }
    }

    /// Checks one TLS option and records it. `opt` must be one of
    /// [`TLS_KEYWORDS`].
    pub(super) fn option(&mut self, c: &mut Diagnostics, line: &Line, opt: &OptTok, place: Place) {
        let before = c.error_count();
        self.check_option(c, line, opt, place);
        self.reported |= c.error_count() > before;
    }

    fn check_option(&mut self, c: &mut Diagnostics, line: &Line, opt: &OptTok, place: Place) {
        let (n, t) = (line.number, line.text.as_str());
        let kw = &opt.kw;
        let word = kw.text.as_str();
        if place == Place::Local && matches!(word, "no-ssl" | "sni") {
            let kind = ErrorKind::NotOnLocal {
                keyword: word.to_owned(),
            };
            return c.error_at(n, t, kw, kind);
        }
        if matches!(word, "ssl" | "no-ssl") {
            if let Some(first) = &self.ssl {
                let kind = if first.text == word {
                    ErrorKind::RepeatedOption {
                        keyword: word.to_owned(),
                    }
                } else {
                    ErrorKind::ConflictingOption {
                        keyword: word.to_owned(),
                        other: first.text.clone(),
                    }
                };
                return c.error_at(n, t, kw, kind);
            }
            self.opts.ssl = Some(word == "ssl");
            self.ssl = Some(kw.clone());
            return;
        }
        if self.others.iter().any(|o| o.text == word) {
            let kind = ErrorKind::RepeatedOption {
                keyword: word.to_owned(),
            };
            return c.error_at(n, t, kw, kind);
        }
        let Some(value) = &opt.value else {
            let (keyword, what) = match word {
                "crt" => ("crt", "a PEM file (certificate chain and key)"),
                "ca-file" => ("ca-file", "a PEM file of CA certificates"),
                "verify" => ("verify", "`none`, `optional` or `required`"),
                _ => ("sni", "a server name"),
            };
            let kind = ErrorKind::MissingArgument { keyword, what };
            return c.error_at(n, t, &end_of_tok(kw), kind);
        };
        self.others.push(kw.clone());
        match word {
            "crt" => self.opts.crt = Some(tls_file(c, line, kw, value)),
            "ca-file" => self.opts.ca_file = Some(tls_file(c, line, kw, value)),
            "verify" => {
                self.verify = Some(kw.clone());
                self.opts.verify = verify_value(c, line, value, place);
            }
            _ => self.opts.sni = Some(value.text.clone()),
        }
    }

    /// The first TLS keyword of the line, `ssl` included.
    fn first(&self) -> Option<&Tok> {
        self.ssl
            .iter()
            .chain(self.others.iter())
            .min_by_key(|t| t.col)
    }
}

/// The `crt`/`ca-file` option as a file with its location: keyword through path.
fn tls_file(c: &Diagnostics, line: &Line, kw: &Tok, value: &Tok) -> TlsFile {
    let width = (value.col + value.width).saturating_sub(kw.col);
    TlsFile {
        path: value.text.clone(),
        location: c.location(line.number, &line.text, kw.col, width, None),
    }
}

fn verify_value(c: &mut Diagnostics, line: &Line, value: &Tok, place: Place) -> Option<Verify> {
    let v = match value.text.as_str() {
        "none" => Some(Verify::None),
        "required" => Some(Verify::Required),
        "optional" if place == Place::Local => Some(Verify::Optional),
        _ => None,
    };
    if v.is_none() {
        let expected = if place == Place::Local {
            "`none`, `optional`, `required`"
        } else {
            "`none`, `required`"
        };
        let kind = ErrorKind::InvalidChoice {
            what: "verify mode",
            value: value.text.clone(),
            expected,
        };
        c.error_at(line.number, &line.text, value, kind);
    }
    v
}

/// The `local` peer's line once read: TLS needs `ssl` and a certificate, and
/// checking clients needs a CA.
pub(super) fn check_local(c: &mut Diagnostics, tls: &TlsLine, name: &str) {
    if tls.reported {
        return;
    }
    let (n, t) = (tls.line, tls.text.as_str());
    if tls.opts.ssl != Some(true) {
        if let Some(first) = tls.others.first() {
            let kind = ErrorKind::TlsOptionWithoutSsl {
                keyword: first.text.clone(),
                local: true,
            };
            c.error_at(n, t, first, kind);
        }
        return;
    }
    if tls.opts.crt.is_none()
        && let Some(ssl) = &tls.ssl
    {
        let kind = ErrorKind::SslWithoutCrt {
            name: name.to_owned(),
        };
        c.error_at(n, t, ssl, kind);
    }
    if let (Some(v @ (Verify::Optional | Verify::Required)), None, Some(at)) =
        (tls.opts.verify, &tls.opts.ca_file, &tls.verify)
    {
        let kind = ErrorKind::VerifyWithoutCaFile {
            name: name.to_owned(),
            local: true,
            verify: v.as_str(),
            implicit: false,
        };
        c.error_at(n, t, at, kind);
    }
}

/// A remote peer's line against the section's `default-server` (`default`):
/// options that TLS being off would ignore, a check without a CA, and options on a
/// peer we never dial.
pub(super) fn check_dialed(
    c: &mut Diagnostics,
    tls: &TlsLine,
    default: Option<&TlsLine>,
    name_tok: &Tok,
    has_addr: bool,
) {
    if tls.reported {
        return;
    }
    let name = name_tok.text.as_str();
    let (n, t) = (tls.line, tls.text.as_str());
    let def = default.map(|d| &d.opts);
    let on = tls.opts.ssl.or(def.and_then(|d| d.ssl)) == Some(true);
    if !on {
        // `no-ssl` over a `default-server ssl` is how one peer is dialed plain;
        // its other options then do nothing, which is worth an error too.
        if let Some(first) = tls.others.first() {
            let kind = ErrorKind::TlsOptionWithoutSsl {
                keyword: first.text.clone(),
                local: false,
            };
            c.error_at(n, t, first, kind);
        }
        return;
    }
    if !has_addr {
        if let Some(first) = tls.first() {
            let kind = WarningKind::TlsNeverDialed {
                name: name.to_owned(),
                keyword: first.text.clone(),
            };
            c.warn_at(n, t, first, kind);
        }
        return;
    }
    let verify = tls.opts.verify.or(def.and_then(|d| d.verify));
    let ca = tls.opts.ca_file.is_some() || def.is_some_and(|d| d.ca_file.is_some());
    if verify == Some(Verify::None) || ca {
        return;
    }
    // Point at what turned the check on: this line's `verify` or `ssl`, else the
    // peer's name, with a note naming the `default-server` line.
    let (at, note) = match tls.verify.as_ref().or(tls.ssl.as_ref()) {
        Some(tok) => (tok.clone(), None),
        None => {
            let note = default.map(|d| format!("TLS from `default-server` at line {}", d.line));
            (name_tok.clone(), note)
        }
    };
    let kind = ErrorKind::VerifyWithoutCaFile {
        name: name.to_owned(),
        local: false,
        verify: "required",
        implicit: verify.is_none(),
    };
    c.error_note(n, t, &at, kind, note);
}
