//! Mutual TLS for every control-plane connection, and who a peer is.
//!
//! The controller requires a client certificate from the site CA on every connection;
//! the identity is the certificate's common name and its role the SAN URI
//! `tiernet:role:<role>` (see `pki`). Plaintext exists only behind `--insecure`, which
//! binds loopback only.

use crate::pki::{Role, ROLE_URI_PREFIX};
use anyhow::{anyhow, bail, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity, ServerTlsConfig,
};
use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// PEM files of one side of a connection: the CA that signs the other side, and our own
/// certificate and key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn read(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

impl TlsFiles {
    /// From optional command-line paths: all three, or none (then `insecure` must be set).
    pub fn from_args(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        insecure: bool,
    ) -> Result<Option<TlsFiles>> {
        match (ca, cert, key, insecure) {
            (Some(ca), Some(cert), Some(key), false) => Ok(Some(TlsFiles { ca, cert, key })),
            (None, None, None, true) => Ok(None),
            (_, _, _, true) => bail!("--insecure takes no --ca/--cert/--key"),
            _ => bail!("mutual TLS needs --ca, --cert and --key (or --insecure, loopback only)"),
        }
    }

    pub fn server_config(&self) -> Result<ServerTlsConfig> {
        Ok(ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(read(&self.cert)?, read(&self.key)?))
            .client_ca_root(Certificate::from_pem(read(&self.ca)?))
            .client_auth_optional(false)
            .timeout(Duration::from_secs(10)))
    }

    fn client_config(&self, domain: &str) -> Result<ClientTlsConfig> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(TlsIdentity::from_pem(read(&self.cert)?, read(&self.key)?))
            .domain_name(domain))
    }
}

/// A channel to the controller at `url` (`https://HOST:PORT`, or `http://` with no TLS files).
pub async fn connect(url: &str, tls: Option<&TlsFiles>) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("bad controller URL {url}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let uri = endpoint.uri().clone();
    match (uri.scheme_str(), tls) {
        (Some("https"), Some(files)) => {
            let host = uri.host().ok_or_else(|| anyhow!("{url} has no host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            endpoint = endpoint.tls_config(files.client_config(host)?)?;
        }
        (Some("http"), None) => {}
        (Some("http"), Some(_)) => bail!("{url}: use https:// with TLS files"),
        _ => bail!("{url}: use https:// (mutual TLS) or http:// with --insecure"),
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Who is on the other end of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub role: Role,
}

/// Reads the identity from a DER certificate: common name and role URI.
pub fn identity_of(der: &[u8]) -> Result<Peer, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("certificate has no common name")?
        .to_string();
    let mut role = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::URI(uri) = n {
                if let Some(r) = uri.strip_prefix(ROLE_URI_PREFIX) {
                    role = Role::parse(r);
                }
            }
        }
    }
    let role =
        role.ok_or_else(|| format!("certificate '{name}' carries no {ROLE_URI_PREFIX}<role> URI"))?;
    Ok(Peer { name, role })
}

/// The verified peer of a request. With `insecure` there is no certificate: the peer is
/// an anonymous local admin (the listener is loopback only).
pub fn peer<T>(req: &Request<T>, insecure: bool) -> Result<Peer, Status> {
    if insecure {
        return Ok(Peer {
            name: "insecure-local".into(),
            role: Role::Admin,
        });
    }
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    identity_of(leaf.as_ref()).map_err(Status::unauthenticated)
}

/// Admin RPCs: read-only ones take admin or viewer; changes take admin.
pub fn require(peer: &Peer, change: bool) -> Result<(), Status> {
    match (peer.role, change) {
        (Role::Admin, _) | (Role::Viewer, false) => Ok(()),
        (Role::Viewer, true) => Err(Status::permission_denied(format!(
            "'{}' has role viewer: it cannot apply or roll back",
            peer.name
        ))),
        (role, _) => Err(Status::permission_denied(format!(
            "'{}' has role {}: admin RPCs need role admin or viewer",
            peer.name,
            role.as_str()
        ))),
    }
}

/// `--insecure` must not expose plaintext beyond this host.
pub fn check_insecure_listen(addr: &SocketAddr) -> Result<()> {
    if !addr.ip().is_loopback() {
        bail!(
            "--insecure serves plaintext and binds loopback only; {addr} is not a loopback address"
        );
    }
    Ok(())
}
