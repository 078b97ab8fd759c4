//! The rules that need a whole section or the whole file: a `local` peer and a
//! rule in every section, suffixes that name one kind of table each, `forward`
//! and `up` going together, a source to aggregate, groups with several members,
//! shards in range and alike within a group, one listener per address, a reconnect range the right way round, and each
//! dialed peer's TLS with the section's `default-server`.

use super::diag::{Diagnostics, header_tok};
use super::peers::Peers;
use super::sections::{SectionBuilder, SuffixUse};
use super::tls::check_dialed;
use crate::ast::{Aggregations, Global, PeerRole};
use crate::error::{ErrorKind, WarningKind};
use crate::syntax::Tok;

/// Runs the whole-section checks and returns the section.
pub(super) fn finish_section(c: &mut Diagnostics, s: SectionBuilder) -> Aggregations {
    required(c, &s);
    suffixes(c, &s.suffixes);
    forwarding(c, &s);
    sources(c, &s);
    groups(c, &s.peers);
    sharding(c, &s);
    for (peer, tls, name) in s.peers.tls_lines() {
        check_dialed(c, tls, s.default_server.as_ref(), name, peer.addr.is_some());
    }
    s.into_aggregations()
}

/// Every section needs its `local` peer and a rule, unless a line that tried to
/// declare one was already reported.
fn required(c: &mut Diagnostics, s: &SectionBuilder) {
    let (n, t) = (s.header_line, s.header_text.as_str());
    let head = header_tok(t);
    if s.peers.local().is_none() && !s.local_attempted {
        let kind = ErrorKind::NoLocal {
            section: s.name.clone(),
        };
        c.error_at(n, t, &head, kind);
    }
    if s.rules.is_empty() && !s.rule_attempted {
        let kind = ErrorKind::NoRule {
            section: s.name.clone(),
        };
        c.error_at(n, t, &head, kind);
    }
}

/// Every suffix names one kind of table: reused or overlapping suffixes would
/// make a table both input and output, or match two rules.
fn suffixes(c: &mut Diagnostics, uses: &[SuffixUse]) {
    for (i, u) in uses.iter().enumerate() {
        let earlier = &uses[..i];
        let kind = if let Some(first) = earlier.iter().find(|e| e.suffix == u.suffix) {
            ErrorKind::SuffixReused {
                suffix: u.suffix.clone(),
                first_use: first.what,
                line: first.line,
            }
        } else if let Some(other) = earlier
            .iter()
            .find(|e| u.suffix.ends_with(&e.suffix) || e.suffix.ends_with(&u.suffix))
        {
            let (long, short) = if u.suffix.len() > other.suffix.len() {
                (&u.suffix, &other.suffix)
            } else {
                (&other.suffix, &u.suffix)
            };
            ErrorKind::SuffixOverlap {
                suffix: long.clone(),
                other: short.clone(),
                line: other.line,
            }
        } else {
            continue;
        };
        c.error_at(u.line, &u.text, &u.tok, kind);
    }
}

/// `forward` relays what `up` peers send: one without the other is a warning.
fn forwarding(c: &mut Diagnostics, s: &SectionBuilder) {
    let up = s
        .peers
        .all()
        .iter()
        .find(|p| matches!(p.role, PeerRole::Up { .. }));
    let Some(up) = up else {
        for f in &s.forwards {
            let tok = keyword_at(f.span.column, "forward");
            let kind = WarningKind::ForwardWithoutUp {
                suffix: f.suffix.clone(),
            };
            c.warn_at(f.span.line, &s.text_of(f.span.line), &tok, kind);
        }
        return;
    };
    if s.forwards.is_empty() {
        let tok = keyword_at(up.span.column, "peer");
        let kind = WarningKind::UpWithoutForward {
            name: up.name.clone(),
        };
        c.warn_at(up.span.line, &s.text_of(up.span.line), &tok, kind);
    }
}

/// A section with no source has nothing to aggregate.
fn sources(c: &mut Diagnostics, s: &SectionBuilder) {
    let has_source = s
        .peers
        .all()
        .iter()
        .any(|p| matches!(p.role, PeerRole::Node | PeerRole::Down));
    if !has_source {
        let kind = WarningKind::NoSource {
            section: s.name.clone(),
        };
        let t = s.header_text.as_str();
        c.warn_at(s.header_line, t, &header_tok(t), kind);
    }
}

/// A group of one member is no different from a plain `up`.
fn groups(c: &mut Diagnostics, peers: &Peers) {
    for (group, (line, text, tok)) in peers.group_lines() {
        let role = PeerRole::Up { group: Some(group) };
        let members = peers.all().iter().filter(|p| p.role == role).count();
        if members == 1 {
            c.warn_at(*line, text, tok, WarningKind::SingleMemberGroup { group });
        }
    }
}

/// `shard` needs `shards` and stays within it; replicas of one group hold the
/// same keys, so they have one shard. Warned: `shards` that nobody uses, `shard`
/// on a source (it would get only that shard's sums), and sharded upstreams that
/// leave a shard without any.
fn sharding(c: &mut Diagnostics, s: &SectionBuilder) {
    let shards = s.shards.as_ref().map_or(0, |(n, ..)| *n);
    for (p, (_, line, text, tok)) in s.peers.shard_lines() {
        let kind = if shards == 0 {
            ErrorKind::ShardWithoutShards {
                name: p.name.clone(),
            }
        } else if p.shard > shards {
            ErrorKind::ShardOutOfRange {
                name: p.name.clone(),
                shard: p.shard,
                shards,
            }
        } else {
            if p.shard > 0 && matches!(p.role, PeerRole::Node | PeerRole::Down) {
                let kind = WarningKind::ShardOnSource {
                    name: p.name.clone(),
                    shard: p.shard,
                };
                c.warn_at(*line, text, tok, kind);
            }
            continue;
        };
        c.error_at(*line, text, tok, kind);
    }
    for (group, _) in s.peers.group_lines() {
        let role = PeerRole::Up { group: Some(group) };
        let mut members = s.peers.all().iter().filter(|p| p.role == role);
        let Some(first) = members.next() else {
            continue;
        };
        if let Some(other) = members.find(|p| p.shard != first.shard) {
            let kind = ErrorKind::GroupShards {
                group,
                name: other.name.clone(),
                shard: other.shard,
                other: first.name.clone(),
                other_shard: first.shard,
            };
            // At its `shard` value if it has one, else at its `peer` keyword.
            let tok = s
                .peers
                .shard_lines()
                .find(|(p, _)| p.name == other.name)
                .map_or_else(
                    || keyword_at(other.span.column, "peer"),
                    |(_, at)| at.3.clone(),
                );
            c.error_at(other.span.line, &s.text_of(other.span.line), &tok, kind);
        }
    }
    let Some((shards, line, text, tok)) = &s.shards else {
        return;
    };
    let peers = s.peers.all();
    if peers.iter().all(|p| p.shard == 0) {
        let kind = WarningKind::ShardsUnused { shards: *shards };
        return c.warn_at(*line, text, tok, kind);
    }
    let ups: Vec<u32> = peers
        .iter()
        .filter(|p| matches!(p.role, PeerRole::Up { .. }))
        .map(|p| p.shard)
        .collect();
    // An upstream without a shard gets every key: no shard is left out then.
    if ups.iter().any(|&sh| sh > 0) && !ups.contains(&0) {
        for shard in (1..=*shards).filter(|sh| !ups.contains(sh)) {
            let kind = WarningKind::ShardWithoutUp {
                shard,
                shards: *shards,
            };
            c.warn_at(*line, text, tok, kind);
        }
    }
}

/// A keyword token at column `col`, for warnings about a line already checked.
fn keyword_at(col: u32, word: &str) -> Tok {
    Tok {
        text: word.to_owned(),
        col,
        width: u32::try_from(word.len()).unwrap_or(u32::MAX),
    }
}

/// Two sections cannot listen on one address.
pub(super) fn listeners(c: &mut Diagnostics, sections: &[SectionBuilder]) {
    let mut seen: Vec<((String, u16), &str)> = Vec::new();
    for s in sections {
        let Some(local) = s.peers.local() else {
            continue;
        };
        let Some(addr) = &local.addr else { continue };
        let key = addr.canonical();
        if let Some((_, other)) = seen.iter().find(|(k, _)| *k == key) {
            let text = s.text_of(local.span.line);
            let location = c.location(local.span.line, &text, local.span.column, 4, None);
            let kind = ErrorKind::DuplicateListener {
                addr: addr.to_string(),
                other: (*other).to_owned(),
            };
            c.error(kind, location);
        } else {
            seen.push((key, &s.name));
        }
    }
}

/// The first redial delay may not exceed the longest; reported on the last
/// `tune.reconnect-*` line.
pub(super) fn reconnect_range(
    c: &mut Diagnostics,
    global: &Global,
    line: Option<&(u32, String, Tok)>,
) {
    if global.reconnect_min > global.reconnect_max
        && let Some((n, t, tok)) = line
    {
        c.error_at(*n, t, tok, ErrorKind::ReconnectRange);
    }
}
