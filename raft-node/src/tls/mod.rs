//! Mutual TLS: who is at the other end of a connection, proven by a certificate of the
//! cluster's own CA.
//!
//! Every certificate names one **role** and one **name** in its subject, and nothing else is
//! read: `O=raftipam, OU=<role>, CN=<name>` with exactly one OU and one CN. The roles:
//!
//! - `node`: a Raft voter or learner. May send Raft RPCs and forward calls on behalf of
//!   others; acts as the Docker host `<name>` for its own plugin (a voter is usually a Docker
//!   host too). Node certificates carry their addresses as SANs, and a client accepts a
//!   server only if it presents a node certificate for the address it dialled — a host or
//!   admin certificate can never pose as a node.
//! - `host`: a Docker host's shim. May allocate, release, heartbeat and report only as host
//!   `<name>`, and read.
//! - `admin`: an operator. Everything.
//!
//! Subject alternative names never decide an identity (etcd's CVE-2018-16886 came from
//! mixing the two), and a certificate with two CNs, two OUs, an unknown role or a name a host
//! could not have is refused at the handshake.
//!
//! One crypto provider (ring), TLS 1.3 only. [`Tls::load`] reads `ca.pem`, `cert.pem` and
//! `key.pem` from one directory; [`certs`] makes them.
//!
//! **What this module must never do:** accept a peer whose chain does not end at the cluster
//! CA, or whose certificate has expired; derive an identity from anything but the subject's
//! single OU and CN; log a private key.

pub mod authz;
pub mod certs;
pub mod join;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use thiserror::Error;
use tokio::net::TcpStream;

pub use crate::api::{Identity, Role};

/// The organisation every raftipam certificate names.
pub const ORGANIZATION: &str = "raftipam";

/// How far before its issue a certificate's validity starts (for clocks slightly behind the
/// issuer's): a certificate was issued at `not_before + ISSUE_SLACK`, which revocation
/// compares with the time of the revocation.
pub const ISSUE_SLACK: Duration = Duration::from_secs(300);

/// Longest time a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up, or a certificate was refused.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file is missing or unreadable.
    #[error("cannot read {path}: {why}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The reason.
        why: String,
    },
    /// A file does not hold what it should.
    #[error("{path} is not usable: {why}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// The reason.
        why: String,
    },
    /// A certificate's subject does not name one role and one name.
    #[error("certificate refused: {0}")]
    Identity(String),
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// Checks a name a certificate is issued for (`raftipam cert create-*`, `cert renew`, a
/// join request, before a node signs it): [`allocator_core::check_host_name`], the one rule
/// for names.
pub fn check_cert_name(name: &str) -> Result<(), String> {
    allocator_core::check_host_name(name)
}

/// Checks the CN of a certificate presented at a handshake: no character that could be read
/// as a separator (`/` splits an owner, `,` a list), no control or invisible character. Looser
/// than [`check_cert_name`] so that certificates issued before it keep working.
fn check_presented_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "the name is {} bytes long; at most 253 are allowed",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| {
        c.is_control()
            || c.is_whitespace()
            || matches!(c, '/' | ',' | '\\' | '"')
            || matches!(
                c,
                '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
                    | '\u{2060}'..='\u{2069}' | '\u{feff}'
            )
    }) {
        return Err(format!("the name {name:?} contains {c:?}"));
    }
    Ok(())
}

/// The identity a DER certificate names: exactly one `O=raftipam`, one OU (a role) and one
/// CN (a name). Anything else is refused, with the reason.
pub fn identity_of(der: &[u8]) -> Result<Identity, TlsError> {
    identity_in(&parse(der)?)
}

fn parse(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, TlsError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| TlsError::Identity(format!("not an X.509 certificate: {e}")))
}

/// The identity in a parsed certificate (see [`identity_of`]).
fn identity_in(cert: &x509_parser::certificate::X509Certificate<'_>) -> Result<Identity, TlsError> {
    let bad = |why: String| TlsError::Identity(why);
    let subject = cert.subject();
    let strings = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>,
                   what: &str|
     -> Result<Vec<String>, TlsError> {
        it.map(|a| {
            a.as_str()
                .map(str::to_string)
                .map_err(|_| bad(format!("its {what} is not a UTF-8 string")))
        })
        .collect()
    };
    let orgs = strings(&mut subject.iter_organization(), "O")?;
    let ous = strings(&mut subject.iter_organizational_unit(), "OU")?;
    let cns = strings(&mut subject.iter_common_name(), "CN")?;
    if orgs != [ORGANIZATION] {
        return Err(bad(format!(
            "its subject must name the organisation {ORGANIZATION:?} once, not {orgs:?}"
        )));
    }
    let [ou] = ous.as_slice() else {
        return Err(bad(format!(
            "its subject must name exactly one role (OU), not {ous:?}"
        )));
    };
    let role = Role::parse(ou)
        .ok_or_else(|| bad(format!("its role (OU) {ou:?} is none of node, host, admin")))?;
    let [cn] = cns.as_slice() else {
        return Err(bad(format!(
            "its subject must name exactly one name (CN), not {cns:?}"
        )));
    };
    check_presented_name(cn).map_err(|e| bad(format!("its CN: {e}")))?;
    Ok(Identity {
        role,
        name: cn.clone(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// Reads a private key file (`key.pem`, `ca-key.pem`), refusing one that its group or
/// others may read or write: whoever can read it is this process (or the cluster's CA) for
/// every peer. raftipam writes its keys 0600; a copy made with the wrong mode is named, with
/// the command that fixes it. `None` if the file does not exist.
pub(crate) fn read_secret(path: &Path) -> Result<Option<Vec<u8>>, TlsError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(TlsError::Read {
                path: path.to_path_buf(),
                why: e.to_string(),
            })
        }
    };
    let read_err = |e: io::Error| TlsError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let mode = f.metadata().map_err(read_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(TlsError::Bad {
            path: path.to_path_buf(),
            why: format!(
                "it is a private key that others may read (mode {:04o}): make it readable by its owner only, `chmod 600 {}`",
                mode & 0o7777,
                path.display()
            ),
        });
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(read_err)?;
    Ok(Some(bytes))
}

/// Like [`read_secret`], for a key that must exist.
pub(crate) fn read_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    read_secret(path)?.ok_or_else(|| TlsError::Read {
        path: path.to_path_buf(),
        why: "no such file".into(),
    })
}

/// The PEM certificates in `bytes`, read from `path` (named in errors); at least one.
fn certs_in(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Bad {
            path: path.to_path_buf(),
            why: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Bad {
            path: path.to_path_buf(),
            why: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// This process's TLS: the cluster CA, its own certificate and key, and the identity its
/// certificate names. Cheap to clone; every clone sees a [`Tls::reload`].
#[derive(Clone)]
pub struct Tls {
    identity: Identity,
    dir: PathBuf,
    current: Arc<std::sync::RwLock<Configs>>,
    /// What a node checks of the node it dials beyond the CA's signature (its certificate
    /// revoked, bound to no member): [`Tls::checking_servers`].
    server_check: Option<ServerCheck>,
}

/// A check of a server's certificate: `Err(why)` refuses the connection.
pub type ServerCheck = Arc<dyn Fn(&PeerCert) -> Result<(), String> + Send + Sync>;

/// The rustls configurations made from the files as last loaded.
struct Configs {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    /// The CA certificate (PEM) and, on a node that signs join requests, its key (PEM).
    ca_pem: String,
    ca_key_pem: Option<String>,
    /// When this process's certificate expires (Unix seconds).
    not_after_s: i64,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("identity", &self.identity)
            .field("dir", &self.dir)
            .finish()
    }
}

impl Tls {
    /// Loads `ca.pem`, `cert.pem` and `key.pem` from `dir`: TLS 1.3 only, client certificates
    /// required and verified against the CA on every connection accepted.
    pub fn load(dir: &Path) -> Result<Tls, TlsError> {
        let (identity, configs) = Self::read(dir)?;
        Ok(Tls {
            identity,
            dir: dir.to_path_buf(),
            current: Arc::new(std::sync::RwLock::new(configs)),
            server_check: None,
        })
    }

    /// This TLS, checking every server it connects to with `check` as well (after the CA's
    /// signature and the node role): how a node refuses to talk to a node whose certificate
    /// was revoked or is no member's, when it dials it for Raft or to forward a call.
    pub fn checking_servers(&self, check: ServerCheck) -> Tls {
        Tls {
            server_check: Some(check),
            ..self.clone()
        }
    }

    /// Reads the files again (a renewed certificate, a new CA bundle) and uses them for every
    /// handshake from now on; connections already open keep theirs. The certificate must
    /// still name the same role and name: an identity does not change under a running
    /// process. On any error the files in use stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (identity, configs) = Self::read(&self.dir)?;
        if identity != self.identity {
            return Err(TlsError::Identity(format!(
                "the new certificate in {} names {identity}, not {}: restart the process to change who it is",
                self.dir.display(),
                self.identity
            )));
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = configs;
        Ok(())
    }

    fn server(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .server
            .clone()
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .client
            .clone()
    }

    /// The CA certificate (PEM) and, if this process holds it, the CA key (PEM): a node with
    /// the key signs join requests.
    pub fn ca(&self) -> (String, Option<String>) {
        let c = self.current.read().unwrap_or_else(|e| e.into_inner());
        (c.ca_pem.clone(), c.ca_key_pem.clone())
    }

    fn read(dir: &Path) -> Result<(Identity, Configs), TlsError> {
        let ca_path = dir.join("ca.pem");
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        let ca_bytes = read(&ca_path)?;
        let ca = certs_in(&ca_path, &ca_bytes)?;
        let ca_pem = String::from_utf8_lossy(&ca_bytes).into_owned();
        let ca_key_pem =
            read_secret(&dir.join("ca-key.pem"))?.map(|b| String::from_utf8_lossy(&b).into_owned());
        let chain = certs_in(&cert_path, &read(&cert_path)?)?;
        let key_bytes = read_key(&key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Bad {
            path: key_path.clone(),
            why: format!("not a PEM private key: {e}"),
        })?;
        let identity = identity_of(&chain[0]).map_err(|e| TlsError::Bad {
            path: cert_path.clone(),
            why: e.to_string(),
        })?;
        let not_after_s = parse(&chain[0])
            .map(|c| c.validity().not_after.timestamp())
            .unwrap_or(0);
        let mut roots = RootCertStore::empty();
        // The chain a node presents ends with the CA, so a joiner holding only the CA's
        // fingerprint can check it.
        let mut served = chain.clone();
        served.extend(ca.iter().cloned());
        for c in ca {
            roots.add(c).map_err(|e| TlsError::Bad {
                path: ca_path.clone(),
                why: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let roots = Arc::new(roots);
        let config_err = |e: rustls::Error| TlsError::Config(e.to_string());
        // Connections without a certificate complete the handshake only to ask for one with a
        // join token: the node refuses them everything else.
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(served, key.clone_key())
            .map_err(|e| TlsError::Bad {
                path: key_path.clone(),
                why: format!("does not match {}: {e}", cert_path.display()),
            })?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config_err)?;
        Ok((
            identity,
            Configs {
                server: Arc::new(server),
                client: Arc::new(client),
                ca_pem,
                ca_key_pem,
                not_after_s,
            },
        ))
    }

    /// When this process's certificate (as last loaded) expires, in Unix seconds.
    pub fn expires_at(&self) -> i64 {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .not_after_s
    }

    /// Who this process is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The directory the files were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Completes the server side of a handshake on `tcp` (bounded by [`HANDSHAKE_TIMEOUT`])
    /// and names the client with its certificate's issue time — `None` for a client without
    /// a certificate (which may only ask to join).
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> io::Result<(tokio_rustls::server::TlsStream<TcpStream>, Option<PeerCert>)> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server());
        let s = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let certs = s.get_ref().1.peer_certificates();
        if certs.is_none_or(|c| c.is_empty()) {
            return Ok((s, None));
        }
        let leaf = certs
            .and_then(|c| c.first())
            .map(|c| c.as_ref())
            .unwrap_or_default();
        let peer = PeerCert::of(leaf)
            .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
        Ok((s, Some(peer)))
    }

    /// Completes the client side of a handshake with the node at `addr` (`HOST:PORT`): the
    /// server must present a node certificate for HOST.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: &str,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = server_name(addr)?;
        let connector = tokio_rustls::TlsConnector::from(self.client());
        let s = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake with {addr} timed out"),
                )
            })??;
        let id = peer_identity(s.get_ref().1.peer_certificates())?;
        if let (Some(check), Some(der)) = (
            &self.server_check,
            s.get_ref().1.peer_certificates().and_then(|c| c.first()),
        ) {
            let peer = PeerCert::of(der)
                .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
            check(&peer).map_err(|why| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{addr} presented the certificate of {}: {why}", peer.id),
                )
            })?;
        }
        if id.role != Role::Node {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{addr} presented a {} certificate ({}); only a node certificate may serve the cluster",
                    id.role.as_str(),
                    id.name
                ),
            ));
        }
        Ok(s)
    }
}

/// The certificate a client presented: who it names, when it was issued and its serial
/// number — what revocation is checked against, at the handshake and on every call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    /// Role and name.
    pub id: Identity,
    /// When it was issued (ms since the Unix epoch): its `not_before` plus [`ISSUE_SLACK`].
    pub issued_ms: u64,
    /// [`serial_of`].
    pub serial: String,
    /// A node certificate's Raft id ([`certs::node_id_uri`]); `None` in certificates made
    /// before raftipam 0.2 (see [`PeerCert::raft_id`]).
    pub node_id: Option<u64>,
    /// The addresses it names (SANs), as `HOST` or `[v6]`.
    pub addrs: Vec<String>,
}

impl PeerCert {
    /// The Raft id this node certificate may act as: the one written into it, or — for a
    /// certificate made before raftipam 0.2, which carries none — `node-ID` as its name, or
    /// else the one member of `members` (id, `HOST:PORT`) whose address it names. `None`:
    /// not a node certificate, or one that is no member's.
    pub fn raft_id<'a>(&self, members: impl IntoIterator<Item = (u64, &'a str)>) -> Option<u64> {
        if self.id.role != Role::Node {
            return None;
        }
        if self.node_id.is_some() {
            return self.node_id;
        }
        if let Some(id) = self
            .id
            .name
            .strip_prefix("node-")
            .and_then(|i| i.parse().ok())
        {
            return Some(id);
        }
        let mut found = None;
        for (id, addr) in members {
            let host = match addr.rsplit_once(':') {
                Some((h, port)) if port.parse::<u16>().is_ok() => h,
                _ => addr,
            };
            if self.addrs.iter().any(|a| a == host) {
                if found.is_some_and(|f| f != id) {
                    return None;
                }
                found = Some(id);
            }
        }
        found
    }

    /// Reads a DER certificate once: its identity (refused as [`identity_of`] refuses it),
    /// issue time and serial.
    pub fn of(der: &[u8]) -> Result<PeerCert, TlsError> {
        let cert = parse(der)?;
        let issued_s = u64::try_from(cert.validity().not_before.timestamp()).unwrap_or(0);
        let (addrs, node_id) = certs::sans_in(&cert);
        Ok(PeerCert {
            id: identity_in(&cert)?,
            issued_ms: (issued_s * 1000).saturating_add(ISSUE_SLACK.as_millis() as u64),
            serial: serial_in(&cert).unwrap_or_default(),
            node_id,
            addrs,
        })
    }
}

/// A certificate's serial number, spelled as revocation compares it
/// ([`allocator_core::canonical_serial`]); `None` if it cannot be read.
pub fn serial_of(der: &[u8]) -> Option<String> {
    serial_in(&parse(der).ok()?)
}

fn serial_in(x: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    let hex: String = x
        .tbs_certificate
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    allocator_core::canonical_serial(&hex)
}

fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> io::Result<Identity> {
    let first = certs.and_then(|c| c.first()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the peer presented no certificate",
        )
    })?;
    identity_of(first).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))
}

/// The TLS server name of `HOST:PORT` (`[v6]:port` too): an IP address or a DNS name.
pub fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr}: {host:?} is neither an IP address nor a DNS name: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    /// A self-signed certificate with exactly these subject attributes and SANs.
    fn crafted(subject: &[(DnType, &str)], sans: &[&str]) -> Vec<u8> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for (t, v) in subject {
            dn.push(t.clone(), *v);
        }
        p.distinguished_name = dn;
        p.subject_alt_names = sans
            .iter()
            .map(|s| SanType::DnsName((*s).try_into().expect("dns name")))
            .collect();
        let key = KeyPair::generate().expect("key");
        p.self_signed(&key).expect("certificate").der().to_vec()
    }

    use DnType::{CommonName as CN, OrganizationName as O, OrganizationalUnitName as OU};

    #[test]
    fn the_identity_is_the_one_ou_and_the_one_cn() {
        let id = identity_of(&crafted(&[(O, "raftipam"), (OU, "host"), (CN, "h1")], &[]))
            .expect("a host certificate");
        assert_eq!(
            id,
            Identity {
                role: Role::Host,
                name: "h1".into()
            }
        );
        // SANs never decide: a host certificate with an "admin" SAN is a host.
        let id = identity_of(&crafted(
            &[(O, "raftipam"), (OU, "host"), (CN, "h1")],
            &["admin", "node-1"],
        ))
        .expect("a host certificate");
        assert_eq!(id.role, Role::Host);
        assert_eq!(id.name, "h1");
    }

    #[test]
    fn crafted_subjects_are_refused() {
        let refused = |subject: &[(DnType, &str)], why: &str| {
            let e = identity_of(&crafted(subject, &[])).expect_err("refused");
            assert!(e.to_string().contains(why), "{subject:?}: {e}");
        };
        // rcgen keeps one value per type, so a second CN or OU is written under its OID.
        let cn2 = DnType::CustomDnType(vec![2, 5, 4, 3]);
        let ou2 = DnType::CustomDnType(vec![2, 5, 4, 11]);
        refused(
            &[(O, "raftipam"), (OU, "host"), (CN, "h1"), (cn2, "admin")],
            "exactly one name",
        );
        refused(
            &[(O, "raftipam"), (OU, "host"), (ou2, "admin"), (CN, "h1")],
            "exactly one role",
        );
        refused(
            &[(O, "raftipam"), (OU, "root"), (CN, "h1")],
            "none of node, host, admin",
        );
        refused(
            &[(O, "raftipam"), (OU, "Admin"), (CN, "x")],
            "none of node, host, admin",
        );
        refused(&[(O, "raftipam"), (CN, "h1")], "exactly one role");
        refused(&[(O, "raftipam"), (OU, "admin")], "exactly one name");
        refused(&[(OU, "admin"), (CN, "x")], "organisation");
        refused(&[(O, "other"), (OU, "admin"), (CN, "x")], "organisation");
        refused(
            &[(O, "raftipam"), (OU, "host"), (CN, "h1/web")],
            "contains '/'",
        );
        refused(
            &[(O, "raftipam"), (OU, "host"), (CN, "h1 ")],
            "contains ' '",
        );
        refused(
            &[(O, "raftipam"), (OU, "host"), (CN, "h1\n")],
            "contains '\\n'",
        );
        refused(
            &[(O, "raftipam"), (OU, "host"), (CN, "adm\u{202e}nimda")],
            "contains '\\u{202e}'",
        );
        refused(&[(O, "raftipam"), (OU, "host"), (CN, "")], "empty");
        assert!(identity_of(b"not a certificate").is_err());
    }

    #[test]
    fn server_names_come_from_the_host_part() {
        let ip = |s: &str| match server_name(s).expect("name") {
            ServerName::IpAddress(a) => std::net::IpAddr::from(a).to_string(),
            ServerName::DnsName(d) => d.as_ref().to_string(),
            _ => unreachable!(),
        };
        assert_eq!(ip("127.0.0.1:7379"), "127.0.0.1");
        assert_eq!(ip("[::1]:7379"), "::1");
        assert_eq!(ip("node-1.lan:7379"), "node-1.lan");
        assert!(server_name("bad name:1").is_err());
    }
}
