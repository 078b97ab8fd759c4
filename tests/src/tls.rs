//! A blocking TLS client that speaks the first words of the peers protocol: what
//! the tests use to knock on a TLS listener with a chosen certificate (or none),
//! as an impostor or a misconfigured peer would.

use crate::error::{HarnessError, Result};
use crate::pki::Leaf;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stktagg_wire::StatusCode;

/// How long an attempt may take, handshake and status line together.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a TLS attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsAttempt {
    /// No status line: the TLS handshake failed, or the connection was closed
    /// before the server said anything. The reason, as rustls or the socket says.
    Refused(String),
    /// The server answered the hello.
    Status {
        /// The status line, without its LF.
        line: String,
        /// Its code.
        code: StatusCode,
        /// The server closed the connection after it.
        closed: bool,
    },
}

/// ring, as the daemon uses (see its `tls` module for why it is the deprecated
/// one).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts `ca_pem` and presents `client`, if given.
pub fn client_config(ca_pem: &str, client: Option<&Leaf>) -> Result<Arc<ClientConfig>> {
    let bad =
        |what: &str, e: &dyn std::fmt::Display| HarnessError::Unexpected(format!("{what}: {e}"));
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.map_err(|e| bad("reading the CA", &e))?;
        roots.add(c).map_err(|e| bad("adding the CA", &e))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_root_certificates(roots);
    let cfg = match client {
        Some(leaf) => {
            let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad("reading the client certificate", &e))?;
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
                .map_err(|e| bad("reading the client key", &e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad("using the client certificate", &e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// From `source` (or the system's choice), connects to `addr` over TLS with
/// `config`, checking the server's certificate against `server_name`, writes
/// `bytes` (a hello, and whatever the test pipelines behind it) and reads the
/// status line. Then reads on until the server closes, at most a few seconds.
pub fn attempt(
    source: Option<Ipv4Addr>,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
    bytes: &[u8],
) -> Result<TlsAttempt> {
    let tcp = match source {
        Some(src) => crate::http::connect_from(src, addr)?,
        None => TcpStream::connect_timeout(&addr, ATTEMPT_TIMEOUT)
            .map_err(|e| HarnessError::io(format!("connecting to {addr}"), e))?,
    };
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| HarnessError::io("setting a read timeout", e))?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| HarnessError::Unexpected(format!("server name `{server_name}`: {e}")))?;
    let conn = ClientConnection::new(config, name)
        .map_err(|e| HarnessError::Unexpected(format!("a TLS client: {e}")))?;
    let mut s = StreamOwned::new(conn, tcp);
    let deadline = Instant::now() + ATTEMPT_TIMEOUT;
    // With TLS 1.3 the server checks our certificate after our side is done: a
    // refusal shows as an alert on the first read, not here.
    while s.conn.is_handshaking() {
        if let Err(e) = s.conn.complete_io(&mut s.sock) {
            if timed_out(&e) && Instant::now() < deadline {
                continue;
            }
            return Ok(TlsAttempt::Refused(e.to_string()));
        }
    }
    if let Err(e) = s.write_all(bytes).and_then(|()| s.flush()) {
        return Ok(TlsAttempt::Refused(e.to_string()));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut closed = false;
    let mut line = None;
    while Instant::now() < deadline && !closed {
        match s.read(&mut buf) {
            Ok(0) => closed = true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if timed_out(&e) => {}
            Err(e) if line.is_none() => return Ok(TlsAttempt::Refused(e.to_string())),
            Err(_) => closed = true,
        }
        if line.is_none()
            && let Some(pos) = got.iter().position(|b| *b == b'\n')
        {
            line = Some(got[..pos].to_vec());
        }
    }
    Ok(match line {
        Some(l) => TlsAttempt::Status {
            line: String::from_utf8_lossy(&l)
                .trim_end_matches('\r')
                .to_owned(),
            code: StatusCode::from_atoi(&l),
            closed,
        },
        None if closed => TlsAttempt::Refused("closed without a status line".to_owned()),
        None => TlsAttempt::Refused("no status line within the timeout".to_owned()),
    })
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
