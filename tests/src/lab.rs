//! `PeerLab`: one `haproxy` with a peers section that declares the mock as a peer.
//!
//! The section is called `lab` and has two peers: `hap1`, HAProxy's local peer
//! (it listens there), and `agg`, the mock. In dial mode nothing listens on `agg`'s
//! address, so HAProxy's own connection attempts fail and the mock's session is the
//! only one. In accept mode the lab keeps a listener on `agg`'s address and HAProxy
//! dials it as soon as it starts.

use crate::error::Result;
use crate::haproxy::{Haproxy, HaproxyConfig};
use crate::mock_peer::{Duties, MockPeer};
use crate::ports::{free_addr, listener};
use crate::runtime::RuntimeApi;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use stktagg_wire::hello::Version;

/// HAProxy's local peer name in a lab.
pub const LOCAL_PEER: &str = "hap1";
/// The mock's peer name in a lab.
pub const MOCK_PEER: &str = "agg";
/// The peers section name in a lab.
pub const SECTION: &str = "lab";

/// Builds a `PeerLab`.
#[derive(Debug, Clone)]
pub struct LabBuilder {
    label: String,
    tables: Vec<String>,
    sections: Vec<String>,
    accept: bool,
}

impl LabBuilder {
    /// Adds a peers-section `table` line, without the keyword.
    pub fn table(mut self, decl: &str) -> LabBuilder {
        self.tables.push(decl.to_owned());
        self
    }

    /// Adds a raw section; `{peers}` is replaced by the section name.
    pub fn section(mut self, text: &str) -> LabBuilder {
        self.sections.push(text.replace("{peers}", SECTION));
        self
    }

    /// Makes HAProxy dial the mock instead of the other way round.
    pub fn accept_mode(mut self) -> LabBuilder {
        self.accept = true;
        self
    }

    /// Starts haproxy.
    pub fn start(self) -> Result<PeerLab> {
        let hap_addr = free_addr()?;
        let (mock_addr, listener) = if self.accept {
            let l = listener()?;
            let a = l
                .local_addr()
                .map_err(|e| crate::HarnessError::io("reading the listener's address", e))?;
            (a, Some(l))
        } else {
            (free_addr()?, None)
        };
        let mut cfg = HaproxyConfig::new()
            .local_peer(LOCAL_PEER)
            .peers_section(SECTION)
            .peer(LOCAL_PEER, hap_addr)
            .peer(MOCK_PEER, mock_addr);
        for t in &self.tables {
            cfg = cfg.table(t);
        }
        for s in &self.sections {
            cfg = cfg.section(s);
        }
        let haproxy = Haproxy::start(&cfg, &self.label)?;
        Ok(PeerLab {
            haproxy,
            hap_addr,
            mock_addr,
            listener,
        })
    }
}

/// A running haproxy whose peers section declares the mock.
#[derive(Debug)]
pub struct PeerLab {
    /// The process.
    pub haproxy: Haproxy,
    /// HAProxy's peers address (its local peer `hap1`).
    pub hap_addr: SocketAddr,
    /// The mock's declared address (peer `agg`).
    pub mock_addr: SocketAddr,
    listener: Option<TcpListener>,
}

impl PeerLab {
    /// A builder; `label` names the scratch directory.
    pub fn builder(label: &str) -> LabBuilder {
        LabBuilder {
            label: label.to_owned(),
            tables: Vec::new(),
            sections: Vec::new(),
            accept: false,
        }
    }

    /// The runtime API.
    pub fn api(&self) -> &RuntimeApi {
        self.haproxy.api()
    }

    /// The CLI name of a peers-section table (`lab/<table>`).
    pub fn table(&self, name: &str) -> String {
        format!("{SECTION}/{name}")
    }

    /// Dials HAProxy as `agg` with the default duties.
    pub fn dial(&self) -> Result<MockPeer> {
        MockPeer::dial(self.hap_addr, LOCAL_PEER, MOCK_PEER)
    }

    /// Dials HAProxy as `agg` with a version and duties.
    pub fn dial_with(&self, version: Version, duties: Duties) -> Result<MockPeer> {
        MockPeer::dial_with(self.hap_addr, LOCAL_PEER, MOCK_PEER, version, duties)
    }

    /// Accepts HAProxy's connection (accept mode only) within `timeout`.
    pub fn accept(&self, timeout: Duration) -> Result<MockPeer> {
        let l = self.listener.as_ref().ok_or_else(|| {
            crate::HarnessError::Unexpected("the lab was not built with accept_mode".into())
        })?;
        let (peer, caller) = MockPeer::accept(l, MOCK_PEER, timeout)?;
        if caller != LOCAL_PEER {
            return Err(crate::HarnessError::Unexpected(format!(
                "haproxy introduced itself as `{caller}`"
            )));
        }
        Ok(peer)
    }
}
