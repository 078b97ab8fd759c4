//! Ingest over mutual TLS next to plain TCP, in one process: a daemon, and
//! sources driven by the session engine that stream updates to it as fast as it
//! takes them, once over plain TCP and once with `ssl crt ... ca-file ...
//! verify required` on the listener and a client certificate per source.
//!
//! The load generator (`stktagg-loadgen`) speaks plain TCP only, so this is the
//! measurement `docs/performance.md` reports for TLS. Daemon and sources share
//! the machine's cores (and the sources pay for their own encryption), so the
//! figures are for comparing the two transports, not absolute capacity.
//!
//! `cargo bench -p stktagg-daemon --bench tls_ingest [-- SOURCES UPDATES KEYS]`
//! (defaults: 4 sources, 250000 updates each, 100000 keys).

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use stktagg_daemon::{Daemon, Options, load_str};
use stktagg_session::{
    Feed, NothingToSend, Outbox, PeerSession, Progress, SessionConfig, TableKey,
};
use stktagg_wire::{DataSpec, DataType, Key, KeyType, TableDefinition, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A source's stream of updates: `left` more, over `keys` keys.
struct Stream {
    def: TableDefinition,
    left: u64,
    next: u32,
    keys: u32,
}

impl Feed for Stream {
    fn live(&mut self, out: &mut Outbox<'_>) -> Progress {
        if self.left == 0 {
            return Progress::Done;
        }
        let k = self.next % self.keys;
        self.next = self.next.wrapping_add(1);
        let key = Key::from_ipv4(Ipv4Addr::from(0x0a00_0000 + k));
        let def = self.def.clone();
        let sent = out.send(
            TableKey(1),
            || Some(def),
            &key,
            &[Value::Uint(self.next)],
            None,
        );
        if matches!(sent, Ok(true)) {
            self.left -= 1;
        }
        Progress::More
    }
}

fn definition() -> TableDefinition {
    TableDefinition {
        table_id: 1,
        name: Bytes::from_static(b"/bench.in"),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms: 600_000,
        data: vec![DataSpec::plain(DataType::Gpc0)],
    }
}

/// Handshakes as `name`, then streams `updates` updates; the bytes the daemon
/// sends back (acks, heartbeats) are read and dropped by a task of their own.
async fn source<S>(mut s: S, name: String, updates: u64, keys: u32, seed: u32)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let epoch = Instant::now();
    let now = || epoch.elapsed().as_millis() as u64;
    let mut engine = PeerSession::dial(SessionConfig::new(&name), "agg", 0).unwrap();
    let mut out = BytesMut::new();
    engine.poll_transmit(now(), &mut NothingToSend, &mut out);
    s.write_all(&out).await.unwrap();
    s.flush().await.unwrap();
    while !engine.is_established() {
        assert!(engine.closed_reason().is_none(), "{name} refused");
        let buf = engine.input_buffer();
        buf.reserve(256);
        assert!(
            s.read_buf(buf).await.unwrap() > 0,
            "{name}: closed in the hello"
        );
        engine.input_received(now());
    }
    let (mut rd, mut wr) = tokio::io::split(s);
    tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let mut feed = Stream {
        def: definition(),
        left: updates,
        next: seed,
        keys,
    };
    loop {
        out.clear();
        engine.poll_transmit(now(), &mut feed, &mut out);
        while engine.poll_event().is_some() {}
        if out.is_empty() {
            break;
        }
        wr.write_all(&out).await.unwrap();
    }
    wr.flush().await.unwrap();
    // Kept open until the daemon has counted everything (the caller's timeout).
    tokio::time::sleep(Duration::from_secs(120)).await;
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Writes a CA and a certificate per name into `dir`; returns the CA's PEM.
fn pki(dir: &Path, names: &[String]) -> String {
    let key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    let ca = CertifiedIssuer::self_signed(ca, key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for n in names {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![n.clone()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, n.as_str());
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &ca).unwrap();
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        std::fs::write(dir.join(format!("{n}.pem")), pem).unwrap();
    }
    ca.pem()
}

fn client_config(dir: &Path, name: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let pem = std::fs::read(dir.join(format!("{name}.pem"))).unwrap();
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&pem).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    Arc::new(cfg)
}

/// One run: the time from the first update sent to the last one counted.
async fn run(tls: bool, sources: usize, updates: u64, keys: u32) -> Duration {
    let dir = std::env::temp_dir().join(format!("stktagg-tls-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = (0..sources).map(|i| format!("s{i}")).collect();
    let mut all = names.clone();
    all.push("agg".to_owned());
    pki(&dir, &all);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ssl = if tls {
        format!(
            " ssl crt {0}/agg.pem ca-file {0}/ca.pem verify required",
            dir.display()
        )
    } else {
        String::new()
    };
    let mut cfg = format!("aggregations b\n  peer agg 127.0.0.1:{port} local{ssl}\n");
    for n in &names {
        cfg.push_str(&format!("  peer {n}\n"));
    }
    cfg.push_str("  from .in to .out\n");
    let daemon = Daemon::start(load_str(&cfg, "bench.cfg").unwrap(), Options::default())
        .await
        .unwrap();
    let addr: SocketAddr = daemon.sections[0].listen_addr();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let seed = (i as u32) * 7919;
        if tls {
            let connector = tokio_rustls::TlsConnector::from(client_config(&dir, n));
            let s = connector
                .connect(ServerName::try_from("agg").unwrap(), tcp)
                .await
                .unwrap();
            tasks.push(tokio::spawn(source(s, n.clone(), updates, keys, seed)));
        } else {
            tasks.push(tokio::spawn(source(tcp, n.clone(), updates, keys, seed)));
        }
    }
    let want = updates * sources as u64;
    let section = daemon.sections[0].clone();
    let deadline = Instant::now() + Duration::from_secs(110);
    loop {
        let got: u64 = section
            .core()
            .peers
            .iter()
            .map(|p| p.stats.updates_in.load(Ordering::Relaxed))
            .sum();
        if got >= want {
            break;
        }
        assert!(Instant::now() < deadline, "only {got} of {want} counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    for t in tasks {
        t.abort();
    }
    daemon.stop(Duration::from_secs(2)).await;
    let _ = std::fs::remove_dir_all(&dir);
    took
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (sources, updates, keys) = (arg(0, 4) as usize, arg(1, 250_000), arg(2, 100_000) as u32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{sources} sources x {updates} updates over {keys} keys, one process");
    for tls in [false, true, false, true] {
        let took = rt.block_on(run(tls, sources, updates, keys));
        let rate = (updates * sources as u64) as f64 / took.as_secs_f64();
        println!(
            "{:<10} {:>8.2?}  {:>10.0} updates/s",
            if tls { "mutual TLS" } else { "plain TCP" },
            took,
            rate
        );
    }
}
