//! The server side of a join: a host without a certificate presents a join token's secret and
//! a CSR and gets a host certificate signed by the cluster's CA (if this node holds its key).

use futures::StreamExt;
use tokio::net::TcpStream;

use super::conn::CHANNEL_BYTE_TIMEOUT;
use super::NodeInner;
use crate::clock::now_ms;
use crate::tls::Tls;
use crate::transport::codec::{framing, MAX_JOIN_FRAME};

/// Answers one join request (see [`crate::tls::join`]) on a connection without a certificate.
pub(super) async fn serve_join(
    s: tokio_rustls::server::TlsStream<TcpStream>,
    inner: &NodeInner,
    tls: &Tls,
) {
    use crate::tls::join::{JoinReply, JoinRequest};
    use futures::SinkExt;
    let mut t = framing::<_, JoinRequest, JoinReply>(s, MAX_JOIN_FRAME, MAX_JOIN_FRAME);
    let Ok(Some(Ok(req))) = tokio::time::timeout(CHANNEL_BYTE_TIMEOUT, t.next()).await else {
        return;
    };
    let issued = match join_reply(inner, tls, &req) {
        Ok(x) => use_token(inner, &req, &x.0, &x.1).await.map(|()| x),
        Err(why) => Err(why),
    };
    let reply = match issued {
        Ok((name, cert, ca)) => {
            tracing::info!(host = %name, "issued a host certificate to a join request");
            JoinReply::Issued { cert, ca }
        }
        Err(why) => {
            tracing::warn!("refused a join request: {why}");
            JoinReply::Refused(why)
        }
    };
    let _ = tokio::time::timeout(CHANNEL_BYTE_TIMEOUT, t.send(reply)).await;
}

/// Uses the request's token once through the cluster and records the certificate (from
/// cluster version 2 on: [`allocator_core::Op::IssueJoinCert`], which also refuses a token
/// bound to another name, a revoked or taken name), before the certificate leaves this node.
async fn use_token(
    inner: &NodeInner,
    req: &crate::tls::join::JoinRequest,
    name: &str,
    cert_pem: &str,
) -> Result<(), String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    if inner.sm.read().state.cluster_version() < 2 {
        return Ok(());
    }
    let hash = crate::tls::join::secret_hash(&req.secret);
    let serial = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .ok()
        .and_then(|der| crate::tls::serial_of(&der))
        .ok_or_else(|| "the certificate just signed has no readable serial".to_string())?;
    let op = allocator_core::Op::IssueJoinCert {
        hash,
        name: name.to_string(),
        serial,
    };
    match inner.propose_anywhere(op).await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("the join token could not be used: {e}")),
    }
}

/// The host certificate a join request earns, or why not.
pub(super) fn join_reply(
    inner: &NodeInner,
    tls: &Tls,
    req: &crate::tls::join::JoinRequest,
) -> Result<(String, String, String), String> {
    let hash = crate::tls::join::secret_hash(&req.secret);
    if !inner.sm.read().state.join_token_valid(&hash, now_ms()) {
        return Err("the join token is unknown, expired or revoked (or used up): ask an operator for a new one (`raftipam cert token`)".into());
    }
    let (ca_pem, ca_key) = tls.ca();
    let ca_key = ca_key.ok_or_else(|| {
        format!(
            "node {} holds no CA key (ca-key.pem in its --tls-dir) and cannot sign: join through a node that does",
            inner.id
        )
    })?;
    let (name, cert) =
        crate::tls::join::sign(&ca_pem, &ca_key, &req.csr, crate::tls::certs::CERT_LIFETIME)?;
    if let Some(bound) = inner.sm.read().state.join_token_name(&hash) {
        if bound != name {
            return Err(format!(
                "this join token is for host {bound:?} only, not {name:?}: join with `--host {bound}`, or ask an operator for a token for {name:?} (`raftipam cert token --name {name}`)"
            ));
        }
    }
    if name == tls.identity().name {
        return Err(format!(
            "{name:?} is the name of node {}: a join token gives certificates to new hosts only",
            inner.id
        ));
    }
    if inner.sm.read().state.knows_host(&name) {
        return Err(format!(
            "the cluster already has a host named {name:?}: a join token gives certificates to new hosts only (an operator can `raftipam cert create-host {name}`, or `host forget` the old one)"
        ));
    }
    if allocator_core::is_operator_name(&name) {
        return Err(format!(
            "{name:?} is an operator's name and cannot be a host's: choose another host name"
        ));
    }
    if inner
        .sm
        .read()
        .state
        .revocations()
        .iter()
        .any(|(n, _)| *n == name)
    {
        return Err(format!(
            "the name {name:?} is revoked: a join token does not give it a certificate again (an operator can `raftipam cert create-host {name}` if the host is really back)"
        ));
    }
    Ok((name, cert, ca_pem))
}
