//! Who may claim to be a peer: the address rules of `addr-check`.
//!
//! Without TLS, the only evidence of a session's identity is the name in its
//! hello, which anyone who reaches the port can write. When a peer's configured
//! address is a literal IP (and neither its line nor the section turns the check
//! off), a session that claims it is accepted only from that IP
//! ([`PeerPlan::accepts_from`]). Our own dialer binds its source address to our
//! `local` peer's IP ([`SectionPlan::dial_source`]), so that another aggregator
//! that checks addresses recognises our sessions.
//!
//! **Loopback labs.** A client that binds no source address reaches any
//! `127.x.y.z` listener from `127.0.0.1` (Linux picks the `lo` route's source),
//! so HAProxy nodes configured on loopback aliases (as in `cargo xtask
//! topo-test`) arrive from `127.0.0.1`. A peer whose configured IP is a loopback
//! address is therefore also accepted from `127.0.0.1`: on one host every
//! process can bind any loopback address anyway, so this admits nobody who could
//! not already pass, while a session from another loopback alias (an impostor
//! that bound its own) is still refused.

use std::net::{IpAddr, Ipv4Addr};

use crate::plan::{PeerPlan, SectionPlan};

/// The source address of an unbound client on loopback.
const LOOPBACK_DEFAULT_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

impl PeerPlan {
    /// Whether a session that claims this peer may come from `remote`: always
    /// when the peer is not checked ([`PeerPlan::checked_ip`] is `None`);
    /// otherwise when `remote` is its IP, or `127.0.0.1` for a loopback IP. An
    /// IPv4-mapped IPv6 address (from a dual-stack listener) counts as the IPv4
    /// address it maps.
    pub fn accepts_from(&self, remote: IpAddr) -> bool {
        let Some(expected) = self.checked_ip else {
            return true;
        };
        let remote = remote.to_canonical();
        let expected = expected.to_canonical();
        remote == expected || (expected.is_loopback() && remote == LOOPBACK_DEFAULT_SOURCE)
    }
}

impl SectionPlan {
    /// The source address our dialer binds to reach `dest`: our `local` peer's
    /// IP, when it is a literal, non-wildcard IP of the same family as `dest`.
    /// Never a loopback source towards an address off this host: that connection
    /// could not be made, and no remote peer could see us at a loopback address.
    pub fn dial_source(&self, dest: IpAddr) -> Option<IpAddr> {
        let local = self.source_ip?;
        let same_family = local.is_ipv4() == dest.is_ipv4();
        let reachable = !local.is_loopback() || dest.is_loopback();
        (same_family && reachable).then_some(local)
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::SectionPlan;
    use std::net::IpAddr;

    fn section(text: &str) -> SectionPlan {
        let cfg = stktagg_config::parse_str(text, "t.cfg").expect("valid config");
        let mut plan = crate::resolve(&cfg).expect("resolves");
        plan.sections.remove(0)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an ip")
    }

    const LAB: &str = "aggregations t
  peer agg 127.0.71.1:11111 local
  peer h1 127.0.71.2:10000
  peer h2 10.0.0.2:10000
  peer h3 10.0.0.3:10000 no-addr-check
  peer h4 myhost:10000
  peer h5
  peer h6 [2001:db8::6]:10000
  from .in to .out
";

    fn accepts(s: &SectionPlan, peer: &str, remote: &str) -> bool {
        let id = s.peer_by_name(peer).expect("a peer");
        s.peer(id).expect("a peer").accepts_from(ip(remote))
    }

    #[test]
    fn a_checked_peer_is_accepted_from_its_ip_only() {
        let s = section(LAB);
        assert!(accepts(&s, "h2", "10.0.0.2"));
        assert!(!accepts(&s, "h2", "10.0.0.9"));
        // Not a loopback peer: 127.0.0.1 is no excuse.
        assert!(!accepts(&s, "h2", "127.0.0.1"));
        assert!(accepts(&s, "h6", "2001:db8::6"));
        assert!(!accepts(&s, "h6", "2001:db8::7"));
        // A dual-stack listener sees IPv4 clients as mapped addresses.
        assert!(accepts(&s, "h2", "::ffff:10.0.0.2"));
        assert!(!accepts(&s, "h2", "::ffff:10.0.0.9"));
    }

    #[test]
    fn a_loopback_peer_is_also_accepted_from_the_default_loopback_source() {
        let s = section(LAB);
        assert!(accepts(&s, "h1", "127.0.71.2"));
        assert!(accepts(&s, "h1", "127.0.0.1"));
        assert!(accepts(&s, "h1", "::ffff:127.0.0.1"));
        // An impostor on another loopback alias is still refused.
        assert!(!accepts(&s, "h1", "127.0.71.9"));
        assert!(!accepts(&s, "h1", "::1"));
    }

    #[test]
    fn unchecked_peers_are_accepted_from_anywhere() {
        let s = section(LAB);
        for peer in ["h3", "h4", "h5"] {
            assert!(accepts(&s, peer, "192.0.2.1"), "{peer}");
            assert!(accepts(&s, peer, "127.0.71.9"), "{peer}");
        }
    }

    #[test]
    fn the_section_option_and_the_peer_keywords_combine() {
        let s = section(
            "aggregations t
  peer agg 10.0.0.1:11111 local
  peer h1 10.0.0.2:10000
  peer h2 10.0.0.3:10000 addr-check
  from .in to .out
  no option addr-check
",
        );
        assert!(accepts(&s, "h1", "10.0.0.9"));
        assert!(!accepts(&s, "h2", "10.0.0.9"));
        assert!(accepts(&s, "h2", "10.0.0.3"));
    }

    #[test]
    fn the_dialer_binds_the_local_ip_where_it_can() {
        let s = section(LAB);
        assert_eq!(s.dial_source(ip("127.0.71.2")), Some(ip("127.0.71.1")));
        // A loopback source cannot reach another host; nor can IPv4 reach IPv6.
        assert_eq!(s.dial_source(ip("10.0.0.2")), None);
        assert_eq!(s.dial_source(ip("::1")), None);
        let s = section(
            "aggregations t\n  peer agg 10.0.0.1:11111 local\n  peer h1 10.0.0.2:1\n  from .in to .out\n",
        );
        assert_eq!(s.dial_source(ip("10.0.0.2")), Some(ip("10.0.0.1")));
        assert_eq!(s.dial_source(ip("127.0.0.2")), Some(ip("10.0.0.1")));
        // A wildcard or a host name gives no source to bind.
        for local in ["0.0.0.0:11111", "[::]:11111", "localhost:11111"] {
            let s = section(&format!(
                "aggregations t\n  peer agg {local} local\n  peer h1 10.0.0.2:1\n  from .in to .out\n"
            ));
            assert_eq!(s.dial_source(ip("10.0.0.2")), None, "{local}");
        }
    }
}
