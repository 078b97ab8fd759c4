//! TLS on peer links, with rustls: the listener's and the dialer's configurations
//! built from HAProxy-style options (`ssl crt <pem> [ca-file <pem>] [verify ...]`),
//! and the identity a peer's certificate carries.
//!
//! A `crt` file holds the certificate chain and its private key, as HAProxy's do.
//! The identity of a certificate is its subject's common name and its DNS subject
//! alternative names: with `verify required` on our listener, a session is accepted
//! only if the client certificate chains to the `ca-file` and one of those names is
//! the peer name the client claims in its hello. When we dial with `verify required`,
//! the peer's server certificate must chain to the `ca-file` and name the peer (or
//! the `sni` given).

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a peer's certificate is checked (HAProxy's `verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// Not checked (and, on our listener, not asked for).
    None,
    /// Checked if the client sends one (listener only; a dialer treats it as
    /// `required`).
    Optional,
    /// Required and checked.
    #[default]
    Required,
}

/// TLS options of our listener (on the `local` peer line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Our certificate chain and key (PEM).
    pub crt: PathBuf,
    /// The CA that client certificates must chain to.
    pub ca_file: Option<PathBuf>,
    /// Whether clients must present a certificate.
    pub verify: Verify,
}

/// TLS options of a peer we dial (on its `peer` line, or the section's
/// `default-server`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DialTls {
    /// Our client certificate chain and key (PEM), if the peer asks for one.
    pub crt: Option<PathBuf>,
    /// The CA the peer's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Whether the peer's certificate is checked.
    pub verify: Verify,
    /// The name to ask for and to check the certificate against (default: the
    /// peer's name).
    pub sni: Option<String>,
}

/// The crypto provider: ring, which builds with the C compiler alone (aws-lc-rs,
/// rustls' recommended provider, needs more of the build machine). rustls marks
/// ring's provider deprecated because it has no post-quantum key exchange; peer
/// links interoperate with HAProxy nodes built against OpenSSL 3.0 (Debian 12),
/// which has none either.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its private key from one PEM file, and checks
/// that the key is the certificate's. Errors do not name the file: callers do.
pub fn load_certified_key(
    path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let pem = std::fs::read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .context("a certificate is not valid PEM")?;
    if certs.is_empty() {
        bail!("the file holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| anyhow::anyhow!("the file holds no readable private key"))?;
    let signer = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .context("unsupported private key")?;
    rustls::sign::CertifiedKey::new(certs.clone(), signer)
        .keys_match()
        .map_err(|e| anyhow::anyhow!("the private key is not the certificate's ({e})"))?;
    Ok((certs, key))
}

/// Reads the CA certificates of a `ca-file`. Errors do not name the file.
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>> {
    let pem = std::fs::read(path)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.context("a certificate is not valid PEM")?;
        roots.add(cert).context("not a usable CA certificate")?;
    }
    if roots.is_empty() {
        bail!("the file holds no CA certificate");
    }
    Ok(Arc::new(roots))
}

fn certified_key_of(path: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    load_certified_key(path).with_context(|| format!("crt {}", path.display()))
}

fn roots_of(path: &Path) -> Result<Arc<RootCertStore>> {
    load_roots(path).with_context(|| format!("ca-file {}", path.display()))
}

/// Our listener's TLS configuration, from its files.
pub fn server_config(opts: &ListenerTls) -> Result<Arc<ServerConfig>> {
    let (certs, key) = certified_key_of(&opts.crt)?;
    let roots = match &opts.ca_file {
        Some(ca) if opts.verify != Verify::None => Some(roots_of(ca)?),
        _ => None,
    };
    server_config_with(opts.verify, certs, key, roots)
}

/// Our listener's TLS configuration, from files already read.
pub fn server_config_with(
    verify: Verify,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Option<Arc<RootCertStore>>,
) -> Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?;
    let builder = match (verify, roots) {
        (Verify::None, _) => builder.with_no_client_auth(),
        (verify, Some(roots)) => {
            let v = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let v = if verify == Verify::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().context("building the client verifier")?)
        }
        (_, None) => bail!("`verify optional|required` needs a `ca-file`"),
    };
    let cfg = builder
        .with_single_cert(certs, key)
        .context("using the certificate")?;
    Ok(Arc::new(cfg))
}

/// The TLS configuration to dial a peer, from its files.
pub fn client_config(opts: &DialTls) -> Result<Arc<ClientConfig>> {
    let roots = match &opts.ca_file {
        Some(ca) if opts.verify != Verify::None => Some(roots_of(ca)?),
        _ => None,
    };
    let certified = opts.crt.as_deref().map(certified_key_of).transpose()?;
    client_config_with(opts.verify, certified, roots)
}

/// The TLS configuration to dial a peer, from files already read.
pub fn client_config_with(
    verify: Verify,
    certified: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    roots: Option<Arc<RootCertStore>>,
) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?;
    let builder = match (verify, roots) {
        (Verify::None, _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider()))),
        (_, Some(roots)) => builder.with_root_certificates(roots),
        (_, None) => bail!("`verify required` needs a `ca-file`"),
    };
    let cfg = match certified {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .context("using the client certificate")?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// The server name to ask for and check when dialing `peer`.
pub fn server_name(opts: &DialTls, peer: &str) -> Result<ServerName<'static>> {
    let name = opts.sni.as_deref().unwrap_or(peer);
    ServerName::try_from(name.to_owned())
        .with_context(|| format!("`{name}` cannot be a TLS server name"))
}

/// The names a certificate carries: its subject's common names and its DNS subject
/// alternative names.
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, x)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = x
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push((*d).to_owned());
            }
        }
    }
    names
}

/// Whether the client certificate (the first of the chain) names `claimed`.
pub fn identity_matches(chain: Option<&[CertificateDer<'_>]>, claimed: &str) -> bool {
    chain
        .and_then(|c| c.first())
        .is_some_and(|leaf| certificate_names(leaf).iter().any(|n| n == claimed))
}

impl Verify {
    /// The keyword, as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Verify::None => "none",
            Verify::Optional => "optional",
            Verify::Required => "required",
        }
    }
}

impl From<stktagg_config::Verify> for Verify {
    fn from(v: stktagg_config::Verify) -> Verify {
        match v {
            stktagg_config::Verify::None => Verify::None,
            stktagg_config::Verify::Optional => Verify::Optional,
            stktagg_config::Verify::Required => Verify::Required,
        }
    }
}

impl From<&stktagg_config::TlsListen> for ListenerTls {
    fn from(t: &stktagg_config::TlsListen) -> ListenerTls {
        ListenerTls {
            crt: PathBuf::from(&t.crt.path),
            ca_file: t.ca_file.as_ref().map(|f| PathBuf::from(&f.path)),
            verify: t.verify.into(),
        }
    }
}

impl From<&stktagg_config::TlsDial> for DialTls {
    fn from(t: &stktagg_config::TlsDial) -> DialTls {
        DialTls {
            crt: t.crt.as_ref().map(|f| PathBuf::from(&f.path)),
            ca_file: t.ca_file.as_ref().map(|f| PathBuf::from(&f.path)),
            verify: t.verify.into(),
            sni: t.sni.clone(),
        }
    }
}

/// A section's TLS as loaded: the options and the configurations built from the
/// files when the configuration was loaded (and checked). [`TlsState`] runs it.
#[derive(Debug, Clone, Default)]
pub struct SectionTls {
    /// Our listener's, if it speaks TLS.
    pub listener: Option<(ListenerTls, Arc<ServerConfig>)>,
    /// Per peer we dial over TLS (by name: ids are the running plan's, names
    /// are what a reload keeps), how we dial it and the server name we check.
    pub dialers: BTreeMap<String, (DialTls, ServerName<'static>, Arc<ClientConfig>)>,
}

/// A section's TLS at run time, as the configuration in force loaded it.
///
/// It is immutable: a reload (which reads every file again, see `reload`)
/// replaces it whole. New handshakes take the state current when they start;
/// established sessions keep the keys they negotiated and are never touched.
#[derive(Debug, Default)]
pub struct TlsState {
    loaded: SectionTls,
}

impl TlsState {
    /// Runs what was loaded.
    pub fn new(loaded: SectionTls) -> TlsState {
        TlsState { loaded }
    }

    /// The acceptor for a new connection, if our listener speaks TLS.
    pub fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        let (_, cfg) = self.loaded.listener.as_ref()?;
        Some(tokio_rustls::TlsAcceptor::from(cfg.clone()))
    }

    /// How our listener checks client certificates, if it speaks TLS.
    pub fn listener_verify(&self) -> Option<Verify> {
        self.loaded.listener.as_ref().map(|(opts, _)| opts.verify)
    }

    /// The connector and server name to dial peer `peer` (by name), if we dial
    /// it over TLS.
    pub fn connector(
        &self,
        peer: &str,
    ) -> Option<(tokio_rustls::TlsConnector, ServerName<'static>)> {
        let (_, name, cfg) = self.loaded.dialers.get(peer)?;
        Some((tokio_rustls::TlsConnector::from(cfg.clone()), name.clone()))
    }

    /// Whether anything in this section speaks TLS.
    pub fn is_used(&self) -> bool {
        self.loaded.listener.is_some() || !self.loaded.dialers.is_empty()
    }

    /// How many configurations it runs (the listener's and one per TLS peer).
    pub fn configurations(&self) -> usize {
        usize::from(self.loaded.listener.is_some()) + self.loaded.dialers.len()
    }
}

/// `verify none` on a dialer: any certificate is accepted (HAProxy's `verify none`).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

    /// A CA, and a leaf for `name` signed by it, written as PEM files in `dir`.
    pub(crate) fn pki(dir: &Path, names: &[&str]) -> (PathBuf, Vec<PathBuf>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "stktagg test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        let mut leaves = Vec::new();
        for name in names {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec![(*name).to_owned()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, *name);
            let cert = p.signed_by(&key, &issuer).unwrap();
            let path = dir.join(format!("{name}.pem"));
            std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
            leaves.push(path);
        }
        (ca_path, leaves)
    }

    fn scratch(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("stktagg-tls-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn names_and_identity_come_from_cn_and_dns_sans() {
        let d = scratch("names");
        let (_, leaves) = pki(&d, &["hap1"]);
        let (certs, _) = load_certified_key(&leaves[0]).unwrap();
        assert_eq!(certificate_names(&certs[0]), vec!["hap1", "hap1"]);
        assert!(identity_matches(Some(&certs), "hap1"));
        assert!(!identity_matches(Some(&certs), "hap2"));
        assert!(!identity_matches(None, "hap1"));
    }

    #[test]
    fn state_dials_by_peer_name_and_serves_its_listener() {
        let d = scratch("state");
        let (ca, leaves) = pki(&d, &["agg", "hap1"]);
        let listener = ListenerTls {
            crt: leaves[0].clone(),
            ca_file: Some(ca.clone()),
            verify: Verify::Required,
        };
        let dial = DialTls {
            crt: Some(leaves[0].clone()),
            ca_file: Some(ca.clone()),
            ..DialTls::default()
        };
        let name = server_name(&dial, "hap1").unwrap();
        let state = TlsState::new(SectionTls {
            listener: Some((listener.clone(), server_config(&listener).unwrap())),
            dialers: [(
                "hap1".to_owned(),
                (dial.clone(), name, client_config(&dial).unwrap()),
            )]
            .into(),
        });
        assert!(state.is_used());
        assert_eq!(state.configurations(), 2);
        assert_eq!(state.listener_verify(), Some(Verify::Required));
        assert!(state.acceptor().is_some());
        assert!(state.connector("hap2").is_none());
        let (_, sni) = state.connector("hap1").expect("hap1 is dialed over TLS");
        assert_eq!(sni.to_str(), "hap1");
        let plain = TlsState::default();
        assert!(!plain.is_used() && plain.acceptor().is_none());
    }

    #[test]
    fn configurations_build_and_bad_files_are_clear_errors() {
        let d = scratch("cfg");
        let (ca, leaves) = pki(&d, &["agg", "hap1"]);
        server_config(&ListenerTls {
            crt: leaves[0].clone(),
            ca_file: Some(ca.clone()),
            verify: Verify::Required,
        })
        .unwrap();
        client_config(&DialTls {
            crt: Some(leaves[1].clone()),
            ca_file: Some(ca.clone()),
            ..DialTls::default()
        })
        .unwrap();
        // A key that is not the certificate's.
        let a = std::fs::read_to_string(&leaves[0]).unwrap();
        let b = std::fs::read_to_string(&leaves[1]).unwrap();
        let cert_a = &a[..a.find("-----BEGIN PRIVATE KEY").unwrap()];
        let key_b = &b[b.find("-----BEGIN PRIVATE KEY").unwrap()..];
        let mixed = d.join("mixed.pem");
        std::fs::write(&mixed, format!("{cert_a}{key_b}")).unwrap();
        let e = load_certified_key(&mixed).unwrap_err().to_string();
        assert!(e.contains("not the certificate's"), "{e}");
        let e = load_certified_key(&d.join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("No such file"), "{e}");
        // The configurations name the file that failed.
        let e = format!(
            "{:#}",
            client_config(&DialTls {
                ca_file: Some(d.join("missing-ca.pem")),
                ..DialTls::default()
            })
            .unwrap_err()
        );
        assert!(e.contains("ca-file") && e.contains("missing-ca.pem"), "{e}");
        let junk = d.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = load_roots(&junk).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("no CA certificate"), "{e}");
        let e = load_certified_key(&junk).unwrap_err().to_string();
        assert!(e.contains("no certificate"), "{e}");
        let e = server_config(&ListenerTls {
            crt: leaves[0].clone(),
            ca_file: None,
            verify: Verify::Required,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("ca-file"), "{e}");
    }
}
