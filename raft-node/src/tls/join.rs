//! Joining without copying keys (Docker Swarm's join tokens): a host makes its own key, sends
//! a certificate request over TLS to any node, and gets back a host certificate.
//!
//! A token is `RIPAM-1-<CA fingerprint>-<secret>`: the SHA-256 of the cluster CA's certificate
//! (hex) and 16 random bytes (hex). `raftipam cert token` makes one and writes only the
//! secret's SHA-256 and an expiry into the replicated state (`Op::AddJoinToken`), so no node
//! stores the secret and every node can check it. The joiner trusts the node it dials only if
//! that node presents a certificate chained to a CA with the token's fingerprint, and sends
//! the secret only after that; the node signs only if the secret's hash is a token that has
//! not expired or been revoked, the name is free (no host of that name in the cluster), and it
//! holds the CA's key (`ca-key.pem` in its `--tls-dir`; a node without it says so).
//!
//! What a token grants: one host certificate per request, for a name the cluster does not
//! know yet. It never grants a node or admin certificate.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, Issuer, KeyPair,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

use super::{check_cert_name, Role, TlsError};

/// The token's prefix and format version.
pub const TOKEN_PREFIX: &str = "RIPAM-1-";

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// SHA-256 of the CA certificate (DER).
    pub ca_fingerprint: [u8; 32],
    /// The secret.
    pub secret: [u8; 16],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("ca_fingerprint", &hex(&self.ca_fingerprint))
            .field("secret", &"<hidden>")
            .finish()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The hash of a token's secret as the cluster stores it (hex).
pub fn secret_hash(secret: &[u8; 16]) -> String {
    hex(&sha256(secret))
}

impl Token {
    /// A new token for the CA whose certificate is `ca_der`.
    pub fn new(ca_der: &[u8]) -> Result<Token, TlsError> {
        let mut secret = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| TlsError::Config("no randomness for a join token".into()))?;
        Ok(Token {
            ca_fingerprint: sha256(ca_der),
            secret,
        })
    }

    /// Parses `RIPAM-1-<64 hex>-<32 hex>`.
    pub fn parse(s: &str) -> Result<Token, TlsError> {
        let bad = || {
            TlsError::Identity(
                "not a raftipam join token (RIPAM-1-<CA fingerprint>-<secret>, from `raftipam cert token`)"
                    .into(),
            )
        };
        let rest = s.trim().strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
        let (fp, secret) = rest.split_once('-').ok_or_else(bad)?;
        Ok(Token {
            ca_fingerprint: unhex(fp).ok_or_else(bad)?,
            secret: unhex(secret).ok_or_else(bad)?,
        })
    }

    /// The hash of its secret, as the cluster stores it.
    pub fn secret_hash(&self) -> String {
        secret_hash(&self.secret)
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}{}-{}",
            hex(&self.ca_fingerprint),
            hex(&self.secret)
        )
    }
}

/// What a joiner sends after the handshake (one postcard frame).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The token's secret.
    pub secret: [u8; 16],
    /// A PKCS#10 certificate request (DER); only its public key and CN are used.
    pub csr: Vec<u8>,
}

/// What the node answers (one postcard frame).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum JoinReply {
    /// The host certificate (PEM) and the CA certificate (PEM).
    Issued {
        /// The certificate.
        cert: String,
        /// The CA's certificate.
        ca: String,
    },
    /// Refused, and why.
    Refused(String),
}

/// Accepts a server whose certificate chains to a CA with the token's fingerprint. The CA
/// travels in the server's chain (nodes send it), so the joiner needs no file but the token.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| sha256(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the node's CA does not have the token's fingerprint: wrong cluster, or someone in between"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a joiner sends and how it connects, made before it dials: its key, its request, and
/// a TLS configuration that trusts only a node chained to the token's CA.
pub struct JoinerSide {
    /// The joiner's new key (PEM), kept by the joiner.
    pub key_pem: String,
    /// The certificate request for `name` (DER), sent with the token's secret.
    pub csr_der: Vec<u8>,
    /// TLS 1.3, no client certificate, the server pinned to the token's CA fingerprint.
    pub config: Arc<rustls::ClientConfig>,
}

/// The joiner's side, before any connection: a key and a request for `name`, and a TLS
/// configuration that sends the token's secret only to a node that proves it belongs to the
/// token's CA. The exchange itself is `crate::client::join::request`.
pub fn joiner_side(token: &Token, name: &str) -> Result<JoinerSide, TlsError> {
    check_cert_name(name).map_err(|e| TlsError::Identity(format!("host name {e}")))?;
    let key = KeyPair::generate().map_err(|e| TlsError::Config(e.to_string()))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    let csr = p
        .serialize_request(&key)
        .map_err(|e| TlsError::Config(format!("cannot make the certificate request: {e}")))?;
    let provider = super::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            fingerprint: token.ca_fingerprint,
            provider,
        }))
        .with_no_client_auth();
    Ok(JoinerSide {
        key_pem: key.serialize_pem(),
        csr_der: csr.der().to_vec(),
        config: Arc::new(config),
    })
}

/// The node's side: a host certificate for the request's CN, signed with the CA key in
/// `ca_key_pem`, valid `lifetime`. The caller has checked the token and the name.
pub fn sign(
    ca_pem: &str,
    ca_key_pem: &str,
    csr_der: &[u8],
    lifetime: Duration,
) -> Result<(String, String), String> {
    let csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
        .map_err(|e| format!("not a certificate request: {e}"))?;
    let name = match csr.params.distinguished_name.get(&DnType::CommonName) {
        Some(rcgen::DnValue::Utf8String(s)) => s.clone(),
        Some(rcgen::DnValue::PrintableString(s)) => s.as_str().to_string(),
        _ => return Err("the request names no host (a UTF-8 CN)".into()),
    };
    let leaf = super::certs::Leaf {
        role: Role::Host,
        name,
        addrs: Vec::new(),
        lifetime,
        node_id: None,
    };
    let p = super::certs::leaf_params(&leaf).map_err(|e| format!("host {e}"))?;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| format!("the CA key: {e}"))?;
    let issuer =
        Issuer::from_ca_cert_pem(ca_pem, ca_key).map_err(|e| format!("the CA certificate: {e}"))?;
    let cert = p
        .signed_by(&csr.public_key, &issuer)
        .map_err(|e| format!("cannot sign: {e}"))?;
    Ok((leaf.name, cert.pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_print_and_parse_and_bad_ones_are_refused() {
        let t = Token::new(b"some CA").expect("token");
        let s = t.to_string();
        assert!(s.starts_with("RIPAM-1-"));
        assert_eq!(Token::parse(&s).expect("parses"), t);
        assert!(
            !format!("{t:?}").contains(&hex(&t.secret)),
            "Debug hides the secret"
        );
        for bad in [
            "",
            "RIPAM-1-",
            "RIPAM-2-00-00",
            &s[..s.len() - 1],
            &format!("{s}0"),
            &s.replace("RIPAM-1-", "SWMTKN-1-"),
        ] {
            assert!(Token::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    /// A joiner that skips its own check (a crafted CSR) asks for a name that reads like
    /// another one (a right-to-left override: "adm\u{202e}nimda" shows as "admadmin"...), or
    /// carries an escape sequence: the node signing joins refuses it and issues nothing. On
    /// commit 4b9aa6a (release 0.1.0) the override was signed.
    #[test]
    fn a_node_refuses_to_sign_a_join_for_a_name_outside_the_charset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, ca_key) =
            super::super::certs::create_ca(dir.path(), Duration::from_secs(3600)).expect("a CA");
        let ca_pem = std::fs::read_to_string(ca).expect("ca.pem");
        let ca_key_pem = std::fs::read_to_string(ca_key).expect("ca-key.pem");
        let csr_for = |name: &str| {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, name);
            p.distinguished_name = dn;
            p.serialize_request(&key).expect("csr").der().to_vec()
        };
        let (name, _) = sign(
            &ca_pem,
            &ca_key_pem,
            &csr_for("h5"),
            Duration::from_secs(60),
        )
        .expect("a good name is signed");
        assert_eq!(name, "h5");
        for bad in [
            "adm\u{202e}nimda",
            "h\u{200b}5",
            "h5\u{1b}[2J",
            "h 5",
            "-h5",
        ] {
            let e =
                sign(&ca_pem, &ca_key_pem, &csr_for(bad), Duration::from_secs(60)).expect_err(bad);
            assert!(e.contains("name"), "{bad:?}: {e}");
        }
    }
}
