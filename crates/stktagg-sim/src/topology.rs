//! The simulated topologies: the aggregators' configurations (the real files) and
//! the nodes that talk to them.
//!
//! - `single`: the daemon's built-in configuration, one aggregator and three nodes.
//! - `two-level`: `tests/topologies/multi-level`: two intermediates with two nodes
//!   each, one top aggregator (`up` without a group, `forward .l2`).
//! - `ha`: `tests/topologies/ha`, the product document's highly available setup:
//!   the two intermediates declare both top aggregators `up group 1`. The seed's
//!   own slip is kept: the intermediates name the tops at port 11111 while they
//!   listen on 22222, so only the tops' dials succeed.

use std::fmt;

/// A topology to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topology {
    /// One aggregator, three nodes.
    Single,
    /// Two intermediates, one top.
    TwoLevel,
    /// Two intermediates, two tops in `up group 1`.
    Ha,
}

impl Topology {
    /// Every topology.
    pub const ALL: [Topology; 3] = [Topology::Single, Topology::TwoLevel, Topology::Ha];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Topology::Single => "single",
            Topology::TwoLevel => "two-level",
            Topology::Ha => "ha",
        }
    }

    /// The topology called `name`.
    pub fn from_name(name: &str) -> Option<Topology> {
        Topology::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Its processes.
    pub fn spec(self) -> Spec {
        match self {
            Topology::Single => Spec {
                aggregators: vec![AggSpec {
                    name: "stktagg",
                    config: stktagg_config::DEFAULT_CONFIG.to_owned(),
                }],
                nodes: (1..=3)
                    .map(|i| NodeSpec {
                        name: format!("hap{i}"),
                        ip: "127.0.0.1".to_owned(),
                        port: 10_000 + i,
                        aggr: "stktagg",
                        aggr_addr: "127.0.0.1:10000",
                    })
                    .collect(),
                levels: 1,
            },
            Topology::TwoLevel => Spec {
                aggregators: vec![
                    agg(
                        "aggr1",
                        include_str!("../../../tests/topologies/multi-level/aggr1.cfg"),
                    ),
                    agg(
                        "aggr2",
                        include_str!("../../../tests/topologies/multi-level/aggr2.cfg"),
                    ),
                    agg(
                        "aggr3",
                        include_str!("../../../tests/topologies/multi-level/aggr3.cfg"),
                    ),
                ],
                nodes: seed_nodes(),
                levels: 2,
            },
            Topology::Ha => Spec {
                aggregators: vec![
                    agg(
                        "aggr1",
                        include_str!("../../../tests/topologies/ha/aggr1.cfg"),
                    ),
                    agg(
                        "aggr2",
                        include_str!("../../../tests/topologies/ha/aggr2.cfg"),
                    ),
                    agg(
                        "aggr3",
                        include_str!("../../../tests/topologies/ha/aggr3.cfg"),
                    ),
                    agg(
                        "aggr4",
                        include_str!("../../../tests/topologies/ha/aggr4.cfg"),
                    ),
                ],
                nodes: seed_nodes(),
                levels: 2,
            },
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn agg(name: &'static str, config: &str) -> AggSpec {
    AggSpec {
        name,
        // The stats socket's directory is the topology test's run directory; the
        // simulation opens no socket.
        config: config.replace("{dir}", "/nonexistent"),
    }
}

/// The seed's four HAProxy nodes (`tests/topologies/*/topology.toml`).
fn seed_nodes() -> Vec<NodeSpec> {
    (1..=4)
        .map(|i| NodeSpec {
            name: format!("hapee{i}"),
            ip: format!("127.0.56.{}", 100 + i),
            port: 44444,
            aggr: if i <= 2 { "aggr1" } else { "aggr2" },
            aggr_addr: if i <= 2 {
                "127.0.56.111:11111"
            } else {
                "127.0.56.112:11111"
            },
        })
        .collect()
}

/// An aggregator: its name and configuration text.
#[derive(Debug, Clone)]
pub struct AggSpec {
    /// Its local peer name.
    pub name: &'static str,
    /// Its configuration.
    pub config: String,
}

/// A HAProxy node and the aggregator it pushes to.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Its peer name.
    pub name: String,
    /// Its IP address.
    pub ip: String,
    /// Its peers port.
    pub port: u16,
    /// Its aggregator's name.
    pub aggr: &'static str,
    /// Its aggregator's address, as its configuration names it.
    pub aggr_addr: &'static str,
}

/// A topology's processes.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The aggregators.
    pub aggregators: Vec<AggSpec>,
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
    /// 1: nodes hold `.aggr`; 2: also `.l2`, the fleet's sums.
    pub levels: usize,
}

impl Spec {
    /// The suffixes of a node's tables.
    pub fn node_suffixes(&self) -> Vec<&'static str> {
        if self.levels == 2 {
            vec![".uncombined", ".aggr", ".l2"]
        } else {
            vec![".uncombined", ".aggr"]
        }
    }

    /// The nodes whose counts a table with `suffix` sums: `.aggr` at (or from)
    /// aggregator `aggr`, or `.l2` (everything).
    pub fn coverage(&self, suffix: &str, aggr: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| suffix == ".l2" || self.nodes[n].aggr == aggr)
            .collect()
    }
}
