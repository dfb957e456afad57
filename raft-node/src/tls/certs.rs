//! Making the cluster's certificates, all in one place (CockroachDB's `cert create-*`): a CA,
//! then node, host and admin certificates signed by it. PEM files; private keys written with
//! mode 0600 and never overwritten.
//!
//! Keys are ECDSA P-256. Every certificate gets a random 128-bit serial number and an expiry
//! (the CA 10 years by default, the others 1 year); renewal is issuing again.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;

use super::{check_cert_name, Role, TlsError, ORGANIZATION};

/// Default lifetime of the CA.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default lifetime of node, host and admin certificates.
pub const CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// What to put in a leaf certificate.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// Its role.
    pub role: Role,
    /// Its name (the CN).
    pub name: String,
    /// For a node: the host names and IP addresses it is reached at (SANs).
    pub addrs: Vec<String>,
    /// How long it is valid from now.
    pub lifetime: Duration,
    /// For a node: its Raft id, written into the certificate ([`node_id_uri`]) so that it
    /// may send Raft traffic and forward calls only as that member.
    pub node_id: Option<u64>,
}

/// The SAN URI that binds a node certificate to its Raft id: `urn:raftipam:node:ID`.
pub fn node_id_uri(id: u64) -> String {
    format!("{NODE_ID_URN}{id}")
}

const NODE_ID_URN: &str = "urn:raftipam:node:";

/// What a certificate's subject alternative names say: its addresses (`HOST` or `[v6]`, as
/// `raftipam cert create-node --addr` wrote them) and the Raft id of [`node_id_uri`], if any.
pub(crate) fn sans_in(
    x: &x509_parser::certificate::X509Certificate<'_>,
) -> (Vec<String>, Option<u64>) {
    let mut addrs = Vec::new();
    let mut node_id = None;
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => addrs.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        addrs.push(match ip {
                            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                            v4 => v4.to_string(),
                        });
                    }
                }
                x509_parser::extensions::GeneralName::URI(u) => {
                    if let Some(id) = u.strip_prefix(NODE_ID_URN).and_then(|i| i.parse().ok()) {
                        node_id = Some(id);
                    }
                }
                _ => {}
            }
        }
    }
    (addrs, node_id)
}

fn rc(e: rcgen::Error) -> TlsError {
    TlsError::Config(format!("cannot make the certificate: {e}"))
}

fn serial() -> Result<SerialNumber, TlsError> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| TlsError::Config("no randomness for a serial number".into()))?;
    b[0] &= 0x7f; // a positive INTEGER
    Ok(SerialNumber::from_slice(&b))
}

/// A random serial number and validity from now for `lifetime`.
fn stamp(p: &mut CertificateParams, lifetime: Duration) -> Result<(), TlsError> {
    p.serial_number = Some(serial()?);
    validity(p, lifetime)
}

fn validity(p: &mut CertificateParams, lifetime: Duration) -> Result<(), TlsError> {
    let now = time::OffsetDateTime::now_utc();
    // Slack for clocks slightly behind the issuer's; the issue time is not_before + slack.
    p.not_before = now
        - time::Duration::try_from(super::ISSUE_SLACK)
            .map_err(|_| TlsError::Config("slack out of range".into()))?;
    p.not_after = now
        + time::Duration::try_from(lifetime)
            .map_err(|_| TlsError::Config(format!("lifetime {lifetime:?} is too long")))?;
    Ok(())
}

/// Writes `contents` to `path`, refusing to overwrite; keys get mode 0600.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    if secret {
        o.mode(0o600);
    } else {
        o.mode(0o644);
    }
    let mut f = o.open(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        why: if e.kind() == std::io::ErrorKind::AlreadyExists {
            "it already exists; remove it first or write to another directory".into()
        } else {
            e.to_string()
        },
    })?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| TlsError::Read {
            path: path.to_path_buf(),
            why: e.to_string(),
        })
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// Makes a CA in `dir` (created if missing): `ca.pem` and `ca-key.pem` (0600). Refuses to
/// overwrite an existing CA.
pub fn create_ca(dir: &Path, lifetime: Duration) -> Result<(PathBuf, PathBuf), TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| TlsError::Read {
        path: dir.to_path_buf(),
        why: e.to_string(),
    })?;
    let key = KeyPair::generate().map_err(rc)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, "raftipam cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    stamp(&mut p, lifetime)?;
    let cert = p.self_signed(&key).map_err(rc)?;
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    write_new(&ca_key, &key.serialize_pem(), true)?;
    write_new(&ca, &cert.pem(), false)?;
    Ok((ca, ca_key))
}

/// Issues `leaf` with the CA in `ca_dir` (`ca.pem`, `ca-key.pem`) into `out` (created if
/// missing): `cert.pem`, `key.pem` (0600) and a copy of `ca.pem` — what `--tls-dir` reads.
pub fn issue(ca_dir: &Path, leaf: &Leaf, out: &Path) -> Result<(), TlsError> {
    let (cert, key, ca_pem) = make(ca_dir, leaf)?;
    write_dir(out, &cert, &key, &ca_pem)
}

/// Writes a certificate, its key (0600) and the CA into `out` (created if missing), refusing
/// to overwrite any of them.
pub fn write_dir(out: &Path, cert: &str, key: &str, ca: &str) -> Result<(), TlsError> {
    std::fs::create_dir_all(out).map_err(|e| TlsError::Read {
        path: out.to_path_buf(),
        why: e.to_string(),
    })?;
    write_new(&out.join("key.pem"), key, true)?;
    write_new(&out.join("cert.pem"), cert, false)?;
    write_new(&out.join("ca.pem"), ca, false)
}

/// Re-issues the certificate in `dir` (same role, name and addresses, a new key, a new serial,
/// valid `lifetime` from now) with the CA in `ca_dir`, replacing `cert.pem` and `key.pem`
/// (each by an atomic rename). A running process picks it up at SIGHUP. Returns the leaf.
pub fn renew(ca_dir: &Path, dir: &Path, lifetime: Duration) -> Result<Leaf, TlsError> {
    let cert_path = dir.join("cert.pem");
    let der = rustls::pki_types::CertificateDer::from_pem_file(&cert_path).map_err(|e| {
        TlsError::Bad {
            path: cert_path.clone(),
            why: format!("not a PEM certificate: {e}"),
        }
    })?;
    let id = super::identity_of(&der)?;
    let (_, x) = x509_parser::parse_x509_certificate(&der).map_err(|e| TlsError::Bad {
        path: cert_path.clone(),
        why: e.to_string(),
    })?;
    let (addrs, node_id) = sans_in(&x);
    let leaf = Leaf {
        role: id.role,
        name: id.name,
        addrs,
        lifetime,
        node_id,
    };
    let (cert, key, _) = make(ca_dir, &leaf)?;
    replace(&dir.join("key.pem"), &key, true)?;
    replace(&cert_path, &cert, false)?;
    Ok(leaf)
}

/// Writes `contents` next to `path` and renames it over `path`.
fn replace(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    let tmp = path.with_extension("pem.new");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, contents, secret)?;
    std::fs::rename(&tmp, path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// The parameters of `leaf`'s certificate: its subject (O, OU = role, CN = name), usages for
/// its role, its addresses as SANs, a fresh serial and its validity. Both `raftipam cert` and
/// a node signing a join request issue certificates from these.
pub(crate) fn leaf_params(leaf: &Leaf) -> Result<CertificateParams, TlsError> {
    check_cert_name(&leaf.name).map_err(TlsError::Identity)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::OrganizationalUnitName, leaf.role.as_str());
    dn.push(DnType::CommonName, leaf.name.as_str());
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = match leaf.role {
        Role::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Host | Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    for a in &leaf.addrs {
        let host = super::server_name(a).map_err(|e| TlsError::Identity(e.to_string()))?;
        p.subject_alt_names.push(match host {
            rustls::pki_types::ServerName::IpAddress(ip) => {
                SanType::IpAddress(std::net::IpAddr::from(ip))
            }
            rustls::pki_types::ServerName::DnsName(d) => SanType::DnsName(
                d.as_ref()
                    .try_into()
                    .map_err(|e| TlsError::Identity(format!("{a}: {e}")))?,
            ),
            _ => return Err(TlsError::Identity(format!("{a}: not a host name"))),
        });
    }
    if let (Role::Node, Some(id)) = (leaf.role, leaf.node_id) {
        p.subject_alt_names.push(SanType::URI(
            node_id_uri(id)
                .try_into()
                .map_err(|e| TlsError::Identity(format!("node id {id}: {e}")))?,
        ));
    }
    p.use_authority_key_identifier_extension = true;
    stamp(&mut p, leaf.lifetime)?;
    Ok(p)
}

/// The PEM certificate and key of `leaf`, and the CA's PEM.
fn make(ca_dir: &Path, leaf: &Leaf) -> Result<(String, String, String), TlsError> {
    let ca_pem = read_text(&ca_dir.join("ca.pem"))?;
    let ca_key_path = ca_dir.join("ca-key.pem");
    let ca_key_pem = String::from_utf8_lossy(&super::read_key(&ca_key_path)?).into_owned();
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Bad {
        path: ca_key_path.clone(),
        why: format!("not a private key: {e}"),
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| TlsError::Bad {
        path: ca_dir.join("ca.pem"),
        why: format!("not a CA certificate: {e}"),
    })?;
    let key = KeyPair::generate().map_err(rc)?;
    let p = leaf_params(leaf)?;
    let cert = p.signed_by(&key, &issuer).map_err(rc)?;
    Ok((cert.pem(), key.serialize_pem(), ca_pem))
}
