//! The human summary of a plan, printed by `stktagg -c -f FILE`.

use std::fmt;

use stktagg_config::FromSpec;

use crate::plan::{GroupPlan, PeerId, PeerPlan, Plan, Role, SectionPlan, SourceKind};

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.sections.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl SectionPlan {
    fn names(&self, ids: impl IntoIterator<Item = PeerId>) -> String {
        let names: Vec<&str> = ids
            .into_iter()
            .filter_map(|id| self.peer(id).map(|p| p.name.as_str()))
            .collect();
        if names.is_empty() {
            "nobody".to_owned()
        } else {
            names.join(", ")
        }
    }

    fn group_label(&self, g: &GroupPlan) -> String {
        match g.number {
            Some(n) => format!("group {n}"),
            None => format!("{} (own group)", self.names(g.members.iter().copied())),
        }
    }
}

impl fmt::Display for SectionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "section {}: we are `{}`, listening on {}",
            self.name, self.local_name, self.listener
        )?;
        if self.shards > 0 {
            match self.local_shard {
                0 => writeln!(f, "  shards: {}", self.shards)?,
                ours => writeln!(
                    f,
                    "  shards: {} (we serve shard {ours}: sharded nodes send us only its keys)",
                    self.shards
                )?,
            }
        }
        writeln!(f, "  peers:")?;
        let width = self.peers.iter().map(|p| p.name.len()).max().unwrap_or(0);
        let addr_width = self
            .peers
            .iter()
            .map(|p| p.addr.as_ref().map_or(0, |a| a.to_string().len()))
            .max()
            .unwrap_or(0)
            .max(11);
        for p in &self.peers {
            let addr = p
                .addr
                .as_ref()
                .map_or_else(|| "(dials in)".to_owned(), ToString::to_string);
            let role = match p.role {
                Role::Source(SourceKind::Node) => "source (haproxy node)".to_owned(),
                Role::Source(SourceKind::Down) => "source (down: lower aggregator)".to_owned(),
                Role::Upstream { group } => match self.group(group) {
                    Some(g) if g.number.is_some() => format!("upstream, {}", self.group_label(g)),
                    _ => "upstream".to_owned(),
                },
            };
            let shard = match self.shard_of(p.id) {
                Some(sh) => format!(", shard {sh}"),
                None => String::new(),
            };
            writeln!(
                f,
                "    #{} {:width$}  {:addr_width$}  {role}{shard}",
                p.id.0, p.name, addr
            )?;
        }
        if self.peers.is_empty() {
            writeln!(f, "    (none)")?;
        }
        if !self.groups.is_empty() {
            writeln!(
                f,
                "  upstream groups (relayed from the first member up and resynced):"
            )?;
            for g in &self.groups {
                if g.number.is_some() {
                    writeln!(
                        f,
                        "    {}: {}",
                        self.group_label(g),
                        self.names(g.members.iter().copied())
                    )?;
                } else {
                    writeln!(f, "    {}", self.group_label(g))?;
                }
            }
        }
        let sources = self.names(self.sources().map(|p| p.id));
        let outputs = self.names(
            self.peers
                .iter()
                .map(|p| p.id)
                .filter(|id| self.receives_output(*id)),
        );
        let relays = self.names(
            self.peers
                .iter()
                .map(|p| p.id)
                .filter(|id| self.receives_relay(*id)),
        );
        writeln!(f, "  routing:")?;
        for r in &self.rules {
            match &r.from {
                FromSpec::Suffix(s) => writeln!(
                    f,
                    "    <base>{s} from {sources} -> <base>{} to {outputs}",
                    r.to
                )?,
                FromSpec::Any => writeln!(
                    f,
                    "    <name> (any other table) from {sources} -> <name>{} to {outputs}",
                    r.to
                )?,
            }
        }
        for w in &self.forwards {
            let from = if self.groups.is_empty() {
                "no upstream".to_owned()
            } else {
                self.groups
                    .iter()
                    .map(|g| match g.number {
                        Some(_) => format!(
                            "{} ({})",
                            self.group_label(g),
                            self.names(g.members.iter().copied())
                        ),
                        None => self.group_label(g),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(f, "    <base>{w} from {from} -> relayed as is to {relays}")?;
        }
        for p in &self.peers {
            if let Some(sh) = self.shard_of(p.id) {
                writeln!(
                    f,
                    "    to {}: only the keys of shard {sh} of {} (HAProxy's key-to-shard function, seeded with `{}/<table>`)",
                    p.name, self.shards, self.name
                )?;
            }
        }
        writeln!(f, "    anything else: ignored")?;
        writeln!(
            f,
            "  teach-back: {}",
            if self.teach_back {
                "on (a source that asks for a resync gets its own last entries back)"
            } else {
                "off"
            }
        )?;
        writeln!(f, "  addr-check: {}", self.addr_check_summary())
    }
}

impl SectionPlan {
    /// Which peers' sessions must come from their address, and which may come
    /// from anywhere.
    fn addr_check_summary(&self) -> String {
        let (on, off): (Vec<&PeerPlan>, Vec<&PeerPlan>) =
            self.peers.iter().partition(|p| p.checked_ip.is_some());
        let names = |v: &[&PeerPlan]| self.names(v.iter().map(|p| p.id));
        match (on.is_empty(), off.is_empty()) {
            (_, true) => "on (a session claiming a peer must come from its address)".to_owned(),
            (true, false) => {
                "off (sessions claiming any peer are accepted from any address)".to_owned()
            }
            (false, false) => format!(
                "on for {}; off for {} (accepted from any address)",
                names(&on),
                names(&off)
            ),
        }
    }
}
