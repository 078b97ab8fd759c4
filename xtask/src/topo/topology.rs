//! Topology descriptions: `tests/topologies/<name>/topology.toml`, the aggregator
//! configurations beside it, and the HAProxy node template.
//!
//! A sharded topology says `shards = N` and `shard_section = "<name>"` (the peers
//! section whose tables are sharded, which seeds the key-to-shard function), and
//! gives each aggregator of a sharded tier its `shard`: that aggregator holds the
//! keys of its shard only. A node may push to several aggregators (`aggr` is then a
//! list): a node of a sharded tier pushes to every aggregator of it.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use stktagg_wire::shard::{key_shard, local_id, table_seed};
use stktagg_wire::{Key, KeyType};

/// The `peers` section of the node template; tables are `fleet/<family>.<level>`.
pub const NODE_PEERS_SECTION: &str = "fleet";
/// The port every node's frontend listens on (the template's `bind {ip}:8080`).
pub const NODE_HTTP_PORT: u16 = 8080;
/// The port every node's peers listener uses (the template's `{ip}:44444`).
pub const NODE_PEER_PORT: u16 = 44444;
/// The /24 the topology files use (the seed's 192.168.56.N mapped to loopback).
pub const DEFAULT_NET: &str = "127.0.56";

/// The table families of the node template: IP-keyed and string-keyed.
pub const FAMILIES: [Family; 2] = [Family::Ip, Family::Str];

/// A table family of the node template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `ip.*`, keyed by `req.hdr_ip(x-client-ip)`.
    Ip,
    /// `str.*`, keyed by `req.hdr(x-client)`.
    Str,
}

impl Family {
    /// The table name prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Str => "str",
        }
    }

    /// The table key of client number `k` in this family.
    pub fn key(self, k: u32) -> String {
        match self {
            Family::Ip => client_ip(k),
            Family::Str => client_str(k),
        }
    }
}

impl Family {
    /// Client `k`'s key as HAProxy holds it, with the table's key type.
    pub fn wire_key(self, k: u32) -> (KeyType, Key) {
        match self {
            Family::Ip => {
                let ip = std::net::Ipv4Addr::new(10, 0, ((k >> 8) & 0xff) as u8, (k & 0xff) as u8);
                (KeyType::Ipv4, Key::from_ipv4(ip))
            }
            Family::Str => (KeyType::String, Key::from_str_bytes(client_str(k))),
        }
    }
}

/// The keys a table holds when it is one shard's: those HAProxy's key-to-shard
/// function puts in `shard` of `shards`, with the seed of the table the keys were
/// sharded in (its local id in the peers section that sharded it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSel {
    /// The seed.
    pub seed: u64,
    /// The number of shards.
    pub shards: u32,
    /// The shard.
    pub shard: u32,
    /// Whether the table may hold nothing else (an aggregator of the shard), or
    /// only its keys of the shard are judged (a view of a node's table).
    pub strict: bool,
}

impl ShardSel {
    /// Whether client `k`'s key of `family` is in the shard.
    pub fn holds(&self, family: Family, k: u32) -> bool {
        let (kt, key) = family.wire_key(k);
        key_shard(self.seed, kt, &key, self.shards) == self.shard
    }
}

/// The `x-client-ip` header of client `k` (distinct for every k below 65536).
pub fn client_ip(k: u32) -> String {
    format!("10.0.{}.{}", (k >> 8) & 0xff, k & 0xff)
}

/// The `x-client` header of client `k`.
pub fn client_str(k: u32) -> String {
    format!("client-{k}")
}

/// Which level of the tree an aggregator is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Sums its nodes' `.uncombined` into `.aggr`, relays `.l2` from the top.
    Intermediate,
    /// Sums the intermediates' `.aggr` into `.l2`.
    Top,
}

/// One `[[aggregator]]` of `topology.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregator {
    /// The peer name (also the process name in the run).
    pub name: String,
    /// The configuration file, relative to the topology directory.
    pub config: String,
    /// The `aggregations` section name (the daemon shows tables as `<section>/<table>`).
    pub section: String,
    /// Its level.
    pub level: Level,
    /// The address of its `local` peer: where it listens.
    pub listen: SocketAddr,
    /// Its shard in a sharded tier (0: it holds every key).
    #[serde(default)]
    pub shard: u32,
}

/// One `[[node]]` of `topology.toml`: a HAProxy rendered from `node.cfg.tmpl`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The peer name (`localpeer`).
    pub name: String,
    /// Its loopback address (peers on :44444, HTTP on :8080).
    pub ip: String,
    /// The intermediate aggregator it pushes to, or every aggregator of the
    /// sharded tier it pushes to.
    pub aggr: Aggrs,
}

/// `aggr = "name"` or `aggr = ["a", "b"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Aggrs {
    /// One aggregator.
    One(String),
    /// Several (a sharded tier).
    Many(Vec<String>),
}

impl Node {
    /// The aggregators it pushes to.
    pub fn aggrs(&self) -> Vec<&str> {
        match &self.aggr {
            Aggrs::One(a) => vec![a.as_str()],
            Aggrs::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    description: String,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    shards: u32,
    #[serde(default)]
    shard_section: Option<String>,
    #[serde(default)]
    aggregator: Vec<Aggregator>,
    #[serde(default)]
    node: Vec<Node>,
}

/// A loaded topology.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The directory name under `tests/topologies/`.
    pub name: String,
    /// The directory.
    pub dir: PathBuf,
    /// One line saying what it is.
    pub description: String,
    /// Every link over mutual TLS: the run generates a CA (`{dir}/ca.pem`) and a
    /// certificate per process (`{dir}/<name>.pem`) before anything starts.
    pub tls: bool,
    /// Aggregators in start order (as listed).
    pub aggregators: Vec<Aggregator>,
    /// HAProxy nodes.
    pub nodes: Vec<Node>,
    /// `shards`: the number of shards of the sharded tier, 0 for none.
    pub shards: u32,
    /// The peers section that shards keys: its name seeds the key-to-shard function.
    pub shard_section: String,
    template: String,
    net: String,
}

fn remap(text: &str, net: &str) -> String {
    text.replace(&format!("{DEFAULT_NET}."), &format!("{net}."))
}

impl Topology {
    /// Loads `<root>/<name>/topology.toml` and checks that it is consistent.
    #[cfg(test)]
    pub fn load(root: &Path, name: &str) -> Result<Topology> {
        Topology::load_on(root, name, DEFAULT_NET)
    }

    /// Like `load`, with every `127.0.56.` address of the topology (its file, its
    /// configs, the node template) moved to `<net>.`, another loopback /24: so that
    /// a run does not collide with a topology someone started by hand.
    pub fn load_on(root: &Path, name: &str, net: &str) -> Result<Topology> {
        let probe: std::net::Ipv4Addr = format!("{net}.1")
            .parse()
            .with_context(|| format!("`{net}` is not the first three bytes of an IPv4 address"))?;
        if !probe.is_loopback() {
            bail!("`{net}` is not within 127.0.0.0/8: only loopback may be used");
        }
        let dir = root.join(name);
        let path = dir.join("topology.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let text = remap(&text, net);
        let file: File =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let tmpl_path = dir.join("node.cfg.tmpl");
        let template = std::fs::read_to_string(&tmpl_path)
            .with_context(|| format!("reading {}", tmpl_path.display()))?;
        let template = remap(&template, net);
        let topo = Topology {
            name: name.to_owned(),
            dir,
            description: file.description,
            tls: file.tls,
            aggregators: file.aggregator,
            nodes: file.node,
            shards: file.shards,
            shard_section: file.shard_section.unwrap_or_default(),
            template,
            net: net.to_owned(),
        };
        topo.validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(topo)
    }

    fn validate(&self) -> Result<()> {
        let mut names = BTreeSet::new();
        for n in self
            .aggregators
            .iter()
            .map(|a| &a.name)
            .chain(self.nodes.iter().map(|n| &n.name))
        {
            if !names.insert(n.as_str()) {
                bail!("duplicate name `{n}`");
            }
        }
        for n in &self.nodes {
            for aggr in n.aggrs() {
                match self.aggregator(aggr) {
                    Some(a) if a.level == Level::Intermediate => {}
                    _ => bail!(
                        "node `{}` names `{aggr}`, which is not an intermediate aggregator",
                        n.name,
                    ),
                }
            }
            if n.aggrs().is_empty() {
                bail!("node `{}` pushes to no aggregator", n.name);
            }
            let ip: std::net::Ipv4Addr =
                n.ip.parse()
                    .with_context(|| format!("node `{}`: bad ip `{}`", n.name, n.ip))?;
            // Only loopback may ever be a target of this tool.
            if !ip.is_loopback() {
                bail!("node `{}`: {} is not a loopback address", n.name, n.ip);
            }
        }
        for a in &self.aggregators {
            if !a.listen.ip().is_loopback() {
                bail!("aggregator `{}`: {} is not loopback", a.name, a.listen);
            }
            if a.shard > self.shards {
                bail!(
                    "aggregator `{}` has shard {} but the topology has {} shards",
                    a.name,
                    a.shard,
                    self.shards
                );
            }
        }
        if self.shards > 0 && self.shard_section.is_empty() {
            bail!("`shards` needs `shard_section`, the peers section whose tables are sharded");
        }
        if self.nodes.is_empty() {
            bail!("no nodes");
        }
        Ok(())
    }

    /// The aggregator called `name`.
    pub fn aggregator(&self, name: &str) -> Option<&Aggregator> {
        self.aggregators.iter().find(|a| a.name == name)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The nodes under intermediate `aggr`.
    pub fn nodes_of(&self, aggr: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.aggrs().contains(&aggr))
            .map(|n| n.name.clone())
            .collect()
    }

    /// Every process name: aggregators, then nodes.
    pub fn names(&self) -> Vec<String> {
        self.aggregators
            .iter()
            .map(|a| a.name.clone())
            .chain(self.nodes.iter().map(|n| n.name.clone()))
            .collect()
    }

    /// The nodes whose sums node `n`'s `.aggr` holds: those of its aggregators.
    pub fn neighbours(&self, n: &Node) -> Vec<String> {
        let aggrs = n.aggrs();
        self.nodes
            .iter()
            .filter(|m| m.aggrs().iter().any(|a| aggrs.contains(a)))
            .map(|m| m.name.clone())
            .collect()
    }

    /// Whether the tree has a top level (then every node and intermediate holds
    /// `.l2`).
    pub fn has_top(&self) -> bool {
        self.at_level(Level::Top).next().is_some()
    }

    /// The keys aggregator `a`'s tables of `family` hold, if it serves one shard:
    /// the keys were sharded in the table one level down (`.uncombined` on the
    /// nodes for an intermediate, `.aggr` for a top aggregator).
    pub fn shard_of(&self, a: &Aggregator, family: Family) -> Option<ShardSel> {
        if a.shard == 0 || self.shards == 0 {
            return None;
        }
        let below = match a.level {
            Level::Intermediate => "uncombined",
            Level::Top => "aggr",
        };
        let table = format!("/{}.{below}", family.prefix());
        Some(ShardSel {
            seed: table_seed(&local_id(&self.shard_section, table.as_bytes())),
            shards: self.shards,
            shard: a.shard,
            strict: true,
        })
    }

    /// All node names.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Aggregators at `level`.
    pub fn at_level(&self, level: Level) -> impl Iterator<Item = &Aggregator> {
        self.aggregators.iter().filter(move |a| a.level == level)
    }

    /// The configuration text of aggregator `a`, with `{dir}` replaced by `run_dir`.
    pub fn aggregator_config(&self, a: &Aggregator, run_dir: &Path) -> Result<String> {
        let path = self.dir.join(&a.config);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(remap(&text, &self.net).replace("{dir}", &run_dir.display().to_string()))
    }

    /// The HAProxy configuration of node `n`. `{aggr}` and `{aggr_addr}` are its
    /// (first) aggregator; `{aggr_peers}` is a `peer` line per aggregator, with its
    /// `shard` in a sharded topology.
    pub fn node_config(&self, n: &Node, run_dir: &Path) -> Result<String> {
        let mut aggrs = Vec::new();
        for name in n.aggrs() {
            let a = self
                .aggregator(name)
                .with_context(|| format!("node `{}`: no aggregator `{name}`", n.name))?;
            aggrs.push(a);
        }
        let first = aggrs
            .first()
            .with_context(|| format!("node `{}` pushes to no aggregator", n.name))?;
        let peers: Vec<String> = aggrs
            .iter()
            .map(|a| match a.shard {
                0 => format!("    peer {} {}", a.name, a.listen),
                sh => format!("    peer {} {} shard {sh}", a.name, a.listen),
            })
            .collect();
        Ok(self
            .template
            .replace("{name}", &n.name)
            .replace("{ip}", &n.ip)
            .replace("{aggr_addr}", &first.listen.to_string())
            .replace("{aggr_peers}", &peers.join("\n"))
            .replace("{aggr}", &first.name)
            .replace("{dir}", &run_dir.display().to_string()))
    }

    /// Address `.<last>` of the topology's /24, checked to be no process's: where
    /// an impostor dials from.
    pub fn spare_ip(&self, last: u8) -> Result<std::net::Ipv4Addr> {
        let ip: std::net::Ipv4Addr = format!("{}.{last}", self.net)
            .parse()
            .with_context(|| format!("`{}.{last}` is not an IPv4 address", self.net))?;
        if let Some((name, _)) = self.listen_addrs()?.iter().find(|(_, a)| a.ip() == ip) {
            bail!("{ip} is `{name}`'s address, not a spare one");
        }
        Ok(ip)
    }

    /// Every address some process of this topology listens on.
    pub fn listen_addrs(&self) -> Result<Vec<(String, SocketAddr)>> {
        let mut out: Vec<(String, SocketAddr)> = self
            .aggregators
            .iter()
            .map(|a| (a.name.clone(), a.listen))
            .collect();
        for n in &self.nodes {
            for port in [NODE_PEER_PORT, NODE_HTTP_PORT] {
                let addr = format!("{}:{port}", n.ip)
                    .parse()
                    .with_context(|| format!("node `{}` address", n.name))?;
                out.push((n.name.clone(), addr));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        crate::project_root().join("tests/topologies")
    }

    #[test]
    fn loads_the_seed_topology_and_renders_nodes() {
        let t = Topology::load(&root(), "ha").unwrap();
        assert_eq!(t.aggregators.len(), 4);
        assert_eq!(t.nodes_of("aggr2"), vec!["hapee3", "hapee4"]);
        let hapee3 = t.node("hapee3").unwrap();
        let cfg = t.node_config(hapee3, Path::new("/run/x")).unwrap();
        assert!(cfg.contains("peer hapee3 127.0.56.103:44444"), "{cfg}");
        assert!(cfg.contains("peer aggr2 127.0.56.112:11111"), "{cfg}");
        assert!(cfg.contains("stats socket /run/x/hapee3.sock"), "{cfg}");
        assert!(!cfg.contains('{'), "a placeholder is left: {cfg}");
    }

    #[test]
    fn seed_configs_are_the_seeds_but_for_addresses() {
        // The seed's aggr3 listens on :22222 while the intermediates name it at
        // :11111: the slip must stay, or the `ha` scenario proves nothing.
        let t = Topology::load(&root(), "ha").unwrap();
        let dir = Path::new("/d");
        let aggr1 = t
            .aggregator_config(t.aggregator("aggr1").unwrap(), dir)
            .unwrap();
        assert!(aggr1.contains("  peer aggr3  127.0.56.113:11111 up group 1\n"));
        let aggr4 = t
            .aggregator_config(t.aggregator("aggr4").unwrap(), dir)
            .unwrap();
        assert!(aggr4.contains("  peer aggr4     127.0.56.114:22222 local\n"));
        assert!(aggr4.contains("\n    peer aggr1     127.0.56.111:11111 down\n"));
        assert!(aggr4.contains("stats socket /d/aggr4.sock"));
    }

    #[test]
    fn every_topology_loads() {
        for name in [
            "ha",
            "ha-tls",
            "multi-level",
            "reload",
            "sharded",
            "sharded-upper",
        ] {
            let t = Topology::load(&root(), name).unwrap();
            assert!(t.listen_addrs().unwrap().len() >= t.nodes.len() * 2);
        }
    }

    #[test]
    fn a_sharded_node_names_every_aggregator_with_its_shard() {
        let t = Topology::load(&root(), "sharded").unwrap();
        assert_eq!((t.shards, t.shard_section.as_str()), (2, "fleet"));
        let cfg = t
            .node_config(t.node("hapee2").unwrap(), Path::new("/d"))
            .unwrap();
        assert!(cfg.contains("\n    shards 2\n"), "{cfg}");
        assert!(
            cfg.contains(
                "    peer shard1a 127.0.56.121:11111 shard 1\n    peer shard1b 127.0.56.122:11111 shard 1\n    peer shard2 127.0.56.123:11111 shard 2\n"
            ),
            "{cfg}"
        );
        assert!(!cfg.contains('{'), "a placeholder is left: {cfg}");
        // Every node pushes to the three aggregators: their sums span every node.
        assert_eq!(t.nodes_of("shard2").len(), 4);
        assert_eq!(t.neighbours(t.node("hapee1").unwrap()).len(), 4);
        assert!(!t.has_top());
    }

    #[test]
    fn an_aggregator_of_a_shard_holds_the_keys_of_its_shard() {
        let t = Topology::load(&root(), "sharded-upper").unwrap();
        let top1 = t.aggregator("top1").unwrap();
        let sel = t.shard_of(top1, Family::Str).unwrap();
        // A top's keys were sharded in the intermediates' `.aggr`.
        assert_eq!(sel.seed, table_seed(b"myaggr/str.aggr"));
        assert_eq!((sel.shards, sel.shard, sel.strict), (2, 1, true));
        let ones = (0..200).filter(|&k| sel.holds(Family::Str, k)).count();
        assert!((50..150).contains(&ones), "{ones} of 200 keys in shard 1");
        assert!(
            t.shard_of(t.aggregator("aggr1").unwrap(), Family::Ip)
                .is_none()
        );
        let t = Topology::load(&root(), "sharded").unwrap();
        let sel = t
            .shard_of(t.aggregator("shard2").unwrap(), Family::Ip)
            .unwrap();
        assert_eq!(sel.seed, table_seed(b"fleet/ip.uncombined"));
        // The key HAProxy hashes is the address, not its text.
        let (kt, key) = Family::Ip.wire_key(258);
        assert_eq!((kt, key.as_bytes()), (KeyType::Ipv4, &[10, 0, 1, 2][..]));
    }

    #[test]
    fn moves_to_another_loopback_net() {
        let t = Topology::load_on(&root(), "ha", "127.0.57").unwrap();
        assert_eq!(t.node("hapee2").unwrap().ip, "127.0.57.102");
        let cfg = t
            .aggregator_config(t.aggregator("aggr2").unwrap(), Path::new("/d"))
            .unwrap();
        assert!(cfg.contains("peer hapee4 127.0.57.104:44444"), "{cfg}");
        assert!(!cfg.contains("127.0.56."), "{cfg}");
        assert!(Topology::load_on(&root(), "ha", "10.0.0").is_err());
    }

    #[test]
    fn client_keys_are_distinct() {
        assert_eq!(client_ip(1), "10.0.0.1");
        assert_eq!(client_ip(300), "10.0.1.44");
        assert_ne!(Family::Ip.key(7), Family::Str.key(7));
    }
}
