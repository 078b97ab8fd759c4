//! A private CA and its leaf certificates, generated for a test (rcgen): nothing
//! here is ever committed, every key lives in a test's scratch directory.
//!
//! A leaf for peer `name` carries the name as its subject's common name and as a
//! DNS subject alternative name, with both the server and the client usage, as
//! `docs/security.md`'s recipe makes them: a peer presents the same certificate
//! when it listens and when it dials.

use crate::error::{HarnessError, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

fn pki_err(what: &str, e: rcgen::Error) -> HarnessError {
    HarnessError::Unexpected(format!("{what}: {e}"))
}

/// A certificate authority.
#[derive(Debug)]
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl Ca {
    /// A new CA whose subject is `CN=<name>`.
    pub fn new(name: &str) -> Result<Ca> {
        let key = KeyPair::generate().map_err(|e| pki_err("generating a CA key", e))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| pki_err("CA parameters", e))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, key)
            .map_err(|e| pki_err("self-signing the CA", e))?;
        Ok(Ca { issuer })
    }

    /// The CA certificate (what a `ca-file` holds).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for peer `name`, valid from a day ago for a year.
    pub fn leaf(&self, name: &str) -> Result<Leaf> {
        let now = time_now();
        self.leaf_valid(name, now - DAY, now + 365 * DAY)
    }

    /// A leaf for peer `name` that expired yesterday (valid for a year before).
    pub fn expired_leaf(&self, name: &str) -> Result<Leaf> {
        let now = time_now();
        self.leaf_valid(name, now - 366 * DAY, now - DAY)
    }

    fn leaf_valid(&self, name: &str, from: i64, until: i64) -> Result<Leaf> {
        let key = KeyPair::generate().map_err(|e| pki_err("generating a key", e))?;
        let mut params = CertificateParams::new(vec![name.to_owned()])
            .map_err(|e| pki_err("leaf parameters", e))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let (y, m, d) = ymd(from)?;
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = ymd(until)?;
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| pki_err("signing a leaf", e))?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) -> Result<PathBuf> {
        write(path, &self.cert_pem())
    }
}

impl Leaf {
    /// The certificate then the key: a `crt` file, as HAProxy and stktagg read it.
    pub fn pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    /// Writes [`Leaf::pem`] to `path` (mode 0600: it holds a private key).
    pub fn write(&self, path: &Path) -> Result<PathBuf> {
        let p = write(path, &self.pem())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| HarnessError::io(format!("chmod 600 {}", p.display()), e))?;
        Ok(p)
    }
}

const DAY: i64 = 86_400;

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The UTC date of a Unix time, for rcgen's `date_time_ymd`: a day is all the
/// precision a test needs.
fn ymd(unix: i64) -> Result<(i32, u8, u8)> {
    let (y, m, d) = civil_from_days(unix.div_euclid(DAY));
    let bad = |_| HarnessError::Unexpected(format!("no date for {unix}"));
    Ok((
        i32::try_from(y).map_err(bad)?,
        u8::try_from(m).map_err(bad)?,
        u8::try_from(d).map_err(bad)?,
    ))
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn write(path: &Path, text: &str) -> Result<PathBuf> {
    std::fs::write(path, text)
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn leaves_name_their_peer() {
        let ca = Ca::new("test CA").unwrap();
        let leaf = ca.leaf("hap1").unwrap();
        assert!(leaf.pem().contains("BEGIN CERTIFICATE"));
        assert!(leaf.pem().contains("PRIVATE KEY"));
        assert!(ca.expired_leaf("hap1").is_ok());
    }
}
