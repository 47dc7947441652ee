//! A small PKI for a lab or a small site: one CA, and certificates for the controller,
//! the agents (name = gateway name) and the administrators (role admin or viewer).
//!
//! Identity rules every certificate follows (read back by `controller::tls`):
//! the subject's common name is the identity (gateway name for agents), and a SAN URI
//! `tiernet:role:<role>` says what it may do.

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// What a certificate lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Controller,
    Agent,
    Admin,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Agent => "agent",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Controller, Role::Agent, Role::Admin, Role::Viewer]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// The SAN URI that carries the role.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }
}

pub const ROLE_URI_PREFIX: &str = "tiernet:role:";

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";

/// Validity: long enough for a lab or a pilot; a site rotates by issuing again.
const VALID_DAYS: i64 = 825;

fn validity(params: &mut CertificateParams) {
    use chrono::Datelike;
    let ymd = |d: chrono::NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let today = chrono::Utc::now().date_naive();
    // Backdated a day so clocks a little apart still agree.
    params.not_before = ymd(today - chrono::Duration::days(1));
    params.not_after = ymd(today + chrono::Duration::days(VALID_DAYS));
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// A certificate name must be usable as a file name and a gateway name.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if !ok {
        bail!(
            "'{name}' is not a valid certificate name (letters, digits, '-', '_', '.'; at most 63)"
        );
    }
    Ok(())
}

/// Creates `ca.pem`/`ca.key` and the controller's `controller.pem`/`controller.key` in `dir`.
/// `hosts` are extra DNS names or IP addresses the controller is reached by (localhost,
/// 127.0.0.1 and ::1 are always included). Refuses to overwrite an existing CA.
pub fn init(dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if dir.join(CA_KEY).exists() {
        bail!(
            "{} already holds a CA; issue certificates with `tiernet pki issue`",
            dir.display()
        );
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "tiernet CA");
    dn.push(DnType::OrganizationName, "tiernet");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params);
    let cert = params.self_signed(&key)?;
    std::fs::write(dir.join(CA_CERT), cert.pem())?;
    write_private(&dir.join(CA_KEY), &key.serialize_pem())?;
    let mut written = vec![dir.join(CA_CERT), dir.join(CA_KEY)];
    let (c, k) = issue(dir, Role::Controller, "controller", hosts)?;
    written.extend([c, k]);
    Ok(written)
}

/// Issues `NAME.pem`/`NAME.key` in `dir`, signed by the CA there.
pub fn issue(dir: &Path, role: Role, name: &str, hosts: &[String]) -> Result<(PathBuf, PathBuf)> {
    check_name(name)?;
    let ca_pem = std::fs::read_to_string(dir.join(CA_CERT)).with_context(|| {
        format!(
            "reading {}/{CA_CERT} (run `tiernet pki init` first)",
            dir.display()
        )
    })?;
    let ca_key_pem = std::fs::read_to_string(dir.join(CA_KEY))
        .with_context(|| format!("reading {}/{CA_KEY}", dir.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("parsing the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("parsing the CA certificate")?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "tiernet");
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
        .subject_alt_names
        .push(SanType::URI(role.uri().try_into()?));
    match role {
        Role::Controller => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
            names.extend(hosts.iter().cloned());
            names.dedup();
            for h in names {
                match h.parse::<IpAddr>() {
                    Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
                    Err(_) => params
                        .subject_alt_names
                        .push(SanType::DnsName(h.as_str().try_into()?)),
                }
            }
        }
        _ => params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
    }
    validity(&mut params);
    let cert = params.signed_by(&key, &issuer)?;
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem())?;
    write_private(&key_path, &key.serialize_pem())?;
    Ok((cert_path, key_path))
}
